//! Integration tests: the real runner binary, real WebSockets, real PTYs,
//! real storage (a directory, and s3s-fs for S3).

mod auth;
mod bad_input;
mod common;
mod files;
mod home;
mod persistence;
mod restore;
mod s3;
mod terminals;
