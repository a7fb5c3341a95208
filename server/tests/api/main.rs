//! The control plane for real: the server binary, real bubblewrap sandboxes
//! with cgroups, real runners reached through the gateway.

mod adopt;
mod common;
mod home;
mod in_process;
mod orchestration;
mod projects;
mod sandbox;
mod web;
