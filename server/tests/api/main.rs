//! The control plane for real: the server binary, real bubblewrap sandboxes
//! with cgroups, real runners reached through the gateway.

mod common;
mod in_process;
mod orchestration;
mod projects;
mod sandbox;
mod web;
