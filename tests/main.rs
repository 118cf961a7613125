//! Integration tests against real PostgreSQL and MariaDB servers started by `scripts/test.sh`.

mod support;

mod api;
mod check;
mod cli;
mod durability;
mod geometry;
mod keyless;
mod mapping;
mod modes;
mod service;
mod snapshot;
mod sync;
mod types;
mod unique;
mod values;
