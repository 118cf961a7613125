//! Capture: the PostgreSQL side of the pipeline.
//!
//! [`install`] puts a change-log table and statement-level triggers into PostgreSQL (the
//! `setup` command), and [`Drainer`] moves captured changes from that table into the journal.

mod connection;
mod drain;
mod install;

pub use connection::{ConnectError, PG_SSL_ROOT_CERT_ENV, PgConnection, connect_pg};
pub use drain::{CaptureError, CaptureHandle, DrainSettings, Drainer};
pub use install::{
    CAPTURE_SCHEMA, InstallError, InstallReport, NOTIFY_CHANNEL, count_pending, install, uninstall,
    verify,
};
pub(crate) use install::{captured_value_expression, postgis_schema};
