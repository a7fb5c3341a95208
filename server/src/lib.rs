//! cloudcode's control plane: the init service ([`projects`]), the
//! orchestrator ([`orchestrator`]) and the gateway ([`gateway`]), served
//! together on one port by [`api`].

pub mod api;
pub mod config;
pub mod credentials;
pub mod gateway;
pub mod mirror;
pub mod orchestrator;
pub mod projects;
pub mod server;
pub mod session;
pub mod storage_gateway;
pub mod web;
