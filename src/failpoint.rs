//! Crash points for tests.
//!
//! When the environment variable `PG_TO_MYSQL_SYNC_FAILPOINT` names a point, the process aborts
//! the first time it reaches that point: no destructors run and nothing more is written or
//! synced, as in a crash. This exists for the crash tests only; leave the variable unset in
//! production.

use std::sync::OnceLock;

/// The environment variable that selects a crash point.
pub const FAILPOINT_ENV: &str = "PG_TO_MYSQL_SYNC_FAILPOINT";

/// Every crash point, in pipeline order.
pub const FAILPOINTS: [&str; 6] = [
    "journal-after-write",
    "capture-after-fsync",
    "capture-before-commit",
    "apply-before-checkpoint",
    "apply-before-commit",
    "apply-after-commit",
];

/// Crash points of a snapshot, in order: after the target table was emptied, and before and
/// after the commit of a chunk.
pub const SNAPSHOT_FAILPOINTS: [&str; 3] = [
    "snapshot-after-truncate",
    "snapshot-before-commit",
    "snapshot-after-commit",
];

/// Aborts the process if `name` is the configured crash point.
pub(crate) fn hit(name: &str) {
    static CONFIGURED: OnceLock<Option<String>> = OnceLock::new();
    let configured = CONFIGURED.get_or_init(|| std::env::var(FAILPOINT_ENV).ok());
    if configured.as_deref() == Some(name) {
        eprintln!("failpoint {name} reached, aborting");
        std::process::abort();
    }
}
