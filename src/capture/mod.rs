//! Capture: the PostgreSQL side of the pipeline.
//!
//! [`install`] puts a change-log table and statement-level triggers into PostgreSQL (the
//! `setup` command), and [`Drainer`] moves captured changes from that table into the journal.

mod drain;
mod install;

pub use drain::{CaptureError, DrainSettings, Drainer};
pub use install::{
    CAPTURE_SCHEMA, InstallError, InstallReport, NOTIFY_CHANNEL, install, uninstall, verify,
};
