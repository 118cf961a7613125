//! pg-to-mysql-sync keeps MySQL and MariaDB tables in step with PostgreSQL tables.
//!
//! The data path has three stages, one module each:
//!
//! ```text
//! PostgreSQL ──capture──▶ journal (local files) ──apply──▶ MySQL / MariaDB
//! ```
//!
//! - [`capture`] installs triggers that write every change of a synced table to a change-log
//!   table, and drains that table into the journal.
//! - [`journal`] is the durable local buffer: append-only JSON-lines segments with checksums.
//! - [`apply`] reads the journal in sequence order and applies it to MySQL in transactions that
//!   also store the last applied sequence number, so a replay after a crash changes nothing.
//!
//! [`daemon`] runs capture and apply side by side; [`config`] loads and validates settings;
//! [`schema`] reads table definitions from the PostgreSQL catalog.

#![forbid(unsafe_code)]
#![deny(clippy::await_holding_lock)]
#![warn(missing_docs, unreachable_pub, clippy::dbg_macro, clippy::todo)]

pub mod api;
pub mod apply;
mod backoff;
pub mod capture;
pub mod check;
pub mod config;
pub mod create;
pub mod daemon;
pub mod failpoint;
pub mod jobs;
pub mod journal;
pub mod mapping;
pub mod schema;
pub mod snapshot;
pub mod status;
pub mod telemetry;
pub mod verify;
