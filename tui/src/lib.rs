//! cloudcode-tui: the terminal-native IDE. `app` decides, `view` draws,
//! `remote` talks to the runner, `api` to the control plane; `main.rs`
//! wires them to a real terminal.

pub mod api;
pub mod app;
pub mod editor;
pub mod highlight;
pub mod keymap;
pub mod keys;
pub mod layout;
pub mod remote;
pub mod settings;
pub mod sync;
pub mod term_pane;
pub mod tree;
pub mod view;
