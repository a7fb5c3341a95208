//! `cloudcode-tui sync DIR`: keeps a local folder and a project's sandbox
//! equal. [`reconcile`] decides (pure); [`scan`] and [`remote`] observe the
//! two sides; [`apply`] carries a plan out; [`state`] remembers what both
//! sides last agreed on; [`run`] drives it all, from the command line or
//! the TUI, through [`report`]; [`conflicts`] are what it leaves the user.

pub mod apply;
pub mod beneath;
pub mod conflicts;
pub mod model;
pub mod reconcile;
pub mod remote;
pub mod report;
pub mod rules;
pub mod run;
pub mod scan;
pub mod state;
pub mod task;
