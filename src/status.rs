//! The daemon's shared state for `/status` and `/metrics`: positions, stage states, the
//! current mode and the Prometheus registry.
//!
//! Capture and apply write here, and the API reads. Nothing here decides what the pipeline
//! does, except the mode, which the apply stage watches.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::{FailedChangePolicy, Mode};

/// Labels of the per-table change counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChangeLabels {
    /// Source table as `schema.table`.
    pub table: String,
    /// `insert`, `update`, `delete` or `truncate`.
    pub operation: String,
}

/// Labels of the apply failure counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// `transient` (an outage, retried soon) or `needs_operator`.
    pub class: String,
}

/// Prometheus metrics. Gauges that derive from positions are set when `/metrics` is read.
pub struct Metrics {
    registry: Registry,
    /// Changes written to the journal.
    pub captured: Family<ChangeLabels, Counter>,
    /// Changes committed to MySQL.
    pub applied: Family<ChangeLabels, Counter>,
    /// Changes moved to the failed-change log.
    pub parked: Family<ChangeLabels, Counter>,
    /// Duration of each MySQL transaction that applied a batch.
    pub batch_duration: Histogram,
    /// Failed apply attempts by class.
    pub failures: Family<FailureLabels, Counter>,
    /// Apply attempts that followed a failure.
    pub retries: Counter,
    backlog_records: Gauge,
    backlog_bytes: Gauge,
    lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    failed_changes: Gauge,
    /// Rows copied by the current or last snapshot of each table.
    pub snapshot_rows: Family<TableLabels, Gauge>,
    /// Rows that differed between PostgreSQL and MySQL in the last verify run of each table.
    pub verify_differences: Family<TableLabels, Gauge>,
    /// Rows compared in the last verify run of each table.
    pub verify_rows: Family<TableLabels, Gauge>,
    /// Time of the last finished verify run, in seconds since the Unix epoch.
    pub verify_last_run: Gauge,
}

/// Labels of the per-table gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    /// Source table as `schema.table`.
    pub table: String,
}

impl Metrics {
    fn new() -> Self {
        let mut metrics = Metrics {
            registry: Registry::with_prefix("pg_to_mysql_sync"),
            captured: Family::default(),
            applied: Family::default(),
            parked: Family::default(),
            // 1 ms to about 33 s.
            batch_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            failures: Family::default(),
            retries: Counter::default(),
            backlog_records: Gauge::default(),
            backlog_bytes: Gauge::default(),
            lag_seconds: Gauge::default(),
            failed_changes: Gauge::default(),
            snapshot_rows: Family::default(),
            verify_differences: Family::default(),
            verify_rows: Family::default(),
            verify_last_run: Gauge::default(),
        };
        let registry = &mut metrics.registry;
        registry.register(
            "changes_captured",
            "Changes written to the journal",
            metrics.captured.clone(),
        );
        registry.register(
            "changes_applied",
            "Changes committed to MySQL",
            metrics.applied.clone(),
        );
        registry.register(
            "changes_parked",
            "Changes moved to the failed-change log",
            metrics.parked.clone(),
        );
        registry.register(
            "apply_batch_duration_seconds",
            "Duration of each MySQL transaction that applied a batch",
            metrics.batch_duration.clone(),
        );
        registry.register(
            "apply_failures",
            "Failed apply attempts, by class",
            metrics.failures.clone(),
        );
        registry.register(
            "apply_retries",
            "Apply attempts that followed a failure",
            metrics.retries.clone(),
        );
        registry.register(
            "backlog_records",
            "Journal records not yet applied to MySQL",
            metrics.backlog_records.clone(),
        );
        registry.register(
            "backlog_bytes",
            "Bytes of journal segments on disk",
            metrics.backlog_bytes.clone(),
        );
        registry.register(
            "lag_seconds",
            "Age of the oldest change not yet applied to MySQL, 0 when none is pending",
            metrics.lag_seconds.clone(),
        );
        registry.register(
            "failed_changes",
            "Entries in the failed-change log, as of the last apply run",
            metrics.failed_changes.clone(),
        );
        registry.register(
            "snapshot_rows_copied",
            "Rows copied by the current or last snapshot of a table",
            metrics.snapshot_rows.clone(),
        );
        registry.register(
            "verify_differences",
            "Rows that differed between PostgreSQL and MySQL in the last verify run of a table",
            metrics.verify_differences.clone(),
        );
        registry.register(
            "verify_rows_compared",
            "Rows compared in the last verify run of a table",
            metrics.verify_rows.clone(),
        );
        registry.register(
            "verify_last_run_timestamp_seconds",
            "Time of the last finished verify run, in seconds since the Unix epoch",
            metrics.verify_last_run.clone(),
        );

        metrics
    }

    /// Counts one apply failure of the given class.
    pub fn count_failure(&self, transient: bool) {
        let class = if transient {
            "transient"
        } else {
            "needs_operator"
        };
        self.failures
            .get_or_create(&FailureLabels {
                class: class.to_string(),
            })
            .inc();
    }
}

/// Adds `count` changes of one table and operation to a per-table counter.
pub fn count_change(
    family: &Family<ChangeLabels, Counter>,
    table: &str,
    operation: &str,
    count: u64,
) {
    family
        .get_or_create(&ChangeLabels {
            table: table.to_string(),
            operation: operation.to_string(),
        })
        .inc_by(count);
}

/// State of the apply stage, as shown by `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyPhase {
    /// Not connected and not applying; the mode decides when the next run starts.
    Idle,
    /// Applying, or connected and waiting for changes.
    Running,
    /// MySQL cannot be reached; apply retries.
    Unavailable,
    /// MySQL rejected a change, or the target is not ready; apply waits for an operator.
    Halted,
}

/// Result of one apply run, as shown by `/status` and the sync routes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    /// Journal records committed to MySQL.
    pub applied: u64,
    /// Records moved to the failed-change log.
    pub parked: u64,
    /// Last applied journal sequence number after the run.
    pub applied_seq: u64,
    /// Duration of the run in milliseconds.
    pub duration_ms: u64,
}

#[derive(Debug)]
struct State {
    capture_connected: bool,
    capture_error: Option<String>,
    durable_seq: u64,
    applied_seq: u64,
    /// Last sequence number and journal time of each batch not fully applied, oldest first.
    pending_batches: VecDeque<(u64, SystemTime)>,
    apply_phase: ApplyPhase,
    apply_error: Option<String>,
    last_applied_at: Option<SystemTime>,
    last_run: Option<RunReport>,
    failed_changes: Option<u64>,
    snapshots: std::collections::BTreeMap<String, SnapshotStatus>,
    drift: Option<DriftStatus>,
}

impl State {
    /// Moves the applied position and forgets the batches it covers.
    fn set_applied(&mut self, applied_seq: u64) {
        self.applied_seq = applied_seq;
        while self
            .pending_batches
            .front()
            .is_some_and(|&(last_seq, _)| last_seq <= applied_seq)
        {
            self.pending_batches.pop_front();
        }
    }
}

/// Shared daemon state.
pub struct Board {
    started: Instant,
    mode: watch::Sender<Mode>,
    policy: FailedChangePolicy,
    state: Mutex<State>,
    /// Prometheus metrics.
    pub metrics: Metrics,
}

impl Board {
    /// Creates the board for a daemon started in `mode`.
    pub fn new(mode: Mode, policy: FailedChangePolicy) -> Self {
        Board {
            started: Instant::now(),
            mode: watch::Sender::new(mode),
            policy,
            state: Mutex::new(State {
                capture_connected: false,
                capture_error: None,
                durable_seq: 0,
                applied_seq: 0,
                pending_batches: VecDeque::new(),
                apply_phase: ApplyPhase::Idle,
                apply_error: None,
                last_applied_at: None,
                last_run: None,
                failed_changes: None,
                snapshots: std::collections::BTreeMap::new(),
                drift: None,
            }),
            metrics: Metrics::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain numbers behind, which stay usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Returns the current mode.
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Changes the mode; the apply stage picks it up at once. Returns the previous mode.
    pub fn set_mode(&self, mode: Mode) -> Mode {
        self.mode.send_replace(mode)
    }

    /// Returns a receiver of every mode change.
    pub fn watch_mode(&self) -> watch::Receiver<Mode> {
        self.mode.subscribe()
    }

    /// Returns the failed-change policy.
    pub fn policy(&self) -> FailedChangePolicy {
        self.policy
    }

    /// Records the journal position found at start, and when its unapplied part was written,
    /// as far as known.
    pub fn journal_opened(&self, durable_seq: u64, written_at: SystemTime) {
        let mut state = self.state();
        state.durable_seq = durable_seq;
        if durable_seq > 0 {
            state.pending_batches.push_back((durable_seq, written_at));
        }
    }

    /// Records the capture connection state.
    pub fn capture_state(&self, connected: bool, error: Option<String>) {
        let mut state = self.state();
        state.capture_connected = connected;
        state.capture_error = error;
    }

    /// Records a durable journal batch.
    pub fn batch_journaled(&self, last_seq: u64) {
        let mut state = self.state();
        state.durable_seq = last_seq;
        state
            .pending_batches
            .push_back((last_seq, SystemTime::now()));
    }

    /// Records the apply stage's phase and the error that caused it, if any.
    pub fn apply_phase(&self, phase: ApplyPhase, error: Option<String>) {
        let mut state = self.state();
        state.apply_phase = phase;
        state.apply_error = error;
    }

    /// Records that the apply stage is idle between runs. A halted or unavailable
    /// phase and its error stay until a later run succeeds.
    pub fn apply_idle(&self) {
        let mut state = self.state();
        if state.apply_phase == ApplyPhase::Running {
            state.apply_phase = ApplyPhase::Idle;
        }
    }

    /// Records a MySQL commit up to `applied_seq`.
    pub fn applied(&self, applied_seq: u64) {
        let mut state = self.state();
        state.last_applied_at = Some(SystemTime::now());
        state.set_applied(applied_seq);
    }

    /// Records the checkpoint read from MySQL, which can be ahead of what this process applied.
    pub fn checkpoint_read(&self, applied_seq: u64) {
        self.state().set_applied(applied_seq);
    }

    /// Records the result of an apply run and the size of the failed-change log.
    pub fn run_finished(&self, report: RunReport, failed_changes: u64) {
        let mut state = self.state();
        state.last_run = Some(report);
        state.failed_changes = Some(failed_changes);
    }

    /// Records the size of the failed-change log after a retry or a delete, which are not
    /// apply runs.
    pub fn failed_changes(&self, count: u64) {
        self.state().failed_changes = Some(count);
    }

    /// Records the progress of a table's snapshot.
    pub fn snapshot_progress(&self, progress: SnapshotStatus) {
        self.metrics
            .snapshot_rows
            .get_or_create(&TableLabels {
                table: progress.table.clone(),
            })
            .set(progress.rows_copied as i64);
        self.state()
            .snapshots
            .insert(progress.table.clone(), progress);
    }

    /// Returns the snapshots this process ran or runs.
    pub fn snapshots(&self) -> Vec<SnapshotStatus> {
        self.state().snapshots.values().cloned().collect()
    }

    /// Records the result of a verify run.
    pub fn verify_finished(&self, drift: DriftStatus) {
        for table in &drift.tables {
            let labels = TableLabels {
                table: table.table.clone(),
            };
            self.metrics
                .verify_differences
                .get_or_create(&labels)
                .set(table.differences as i64);
            self.metrics
                .verify_rows
                .get_or_create(&labels)
                .set(table.rows_compared as i64);
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        self.metrics.verify_last_run.set(now.as_secs() as i64);
        self.state().drift = Some(drift);
    }

    /// Takes a consistent snapshot for `/status`; `backlog_bytes` is measured by the caller.
    pub fn snapshot(&self, backlog_bytes: u64) -> StatusSnapshot {
        let state = self.state();
        let oldest_pending_age = state
            .pending_batches
            .front()
            .filter(|_| state.durable_seq > state.applied_seq)
            .map(|&(_, written)| written.elapsed().unwrap_or(Duration::ZERO));
        let snapshot = StatusSnapshot {
            mode: self.mode(),
            failed_change_policy: self.policy,
            capture: CaptureStatus {
                connected: state.capture_connected,
                last_error: state.capture_error.clone(),
            },
            journal: JournalStatus {
                durable_seq: state.durable_seq,
                backlog_records: state.durable_seq.saturating_sub(state.applied_seq),
                backlog_bytes,
                oldest_pending_age_seconds: oldest_pending_age.map(|age| age.as_secs_f64()),
            },
            apply: ApplyStatus {
                state: state.apply_phase,
                applied_seq: state.applied_seq,
                last_applied_at: state.last_applied_at.map(rfc3339),
                last_run: state.last_run.clone(),
                last_error: state.apply_error.clone(),
            },
            lag_seconds: oldest_pending_age.map_or(0.0, |age| age.as_secs_f64()),
            failed_changes: state.failed_changes,
            snapshots: state.snapshots.values().cloned().collect(),
            drift: state.drift.clone(),
            uptime_seconds: self.started.elapsed().as_secs(),
        };
        drop(state);

        self.metrics
            .backlog_records
            .set(snapshot.journal.backlog_records as i64);
        self.metrics.backlog_bytes.set(backlog_bytes as i64);
        self.metrics.lag_seconds.set(snapshot.lag_seconds);
        if let Some(count) = snapshot.failed_changes {
            self.metrics.failed_changes.set(count as i64);
        }
        snapshot
    }

    /// Encodes the metrics in the Prometheus text format, after refreshing the gauges.
    pub fn encode_metrics(&self, backlog_bytes: u64) -> String {
        self.snapshot(backlog_bytes);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.metrics.registry)
            .expect("writing to a String does not fail");
        text
    }
}

fn rfc3339(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The daemon's state as `/status` returns it.
#[derive(Debug, Clone, Serialize)]
pub struct StatusSnapshot {
    /// Current mode.
    pub mode: Mode,
    /// Handling of a change that MySQL rejects.
    pub failed_change_policy: FailedChangePolicy,
    /// Capture stage.
    pub capture: CaptureStatus,
    /// Journal positions and backlog.
    pub journal: JournalStatus,
    /// Apply stage.
    pub apply: ApplyStatus,
    /// Age of the oldest change not yet in MySQL, 0 when none is pending.
    pub lag_seconds: f64,
    /// Entries in the failed-change log as of the last apply run; unknown before the first.
    pub failed_changes: Option<u64>,
    /// Snapshots this daemon ran or runs.
    pub snapshots: Vec<SnapshotStatus>,
    /// Result of the last verify run, if one finished since the daemon started.
    pub drift: Option<DriftStatus>,
    /// Seconds since the daemon started.
    pub uptime_seconds: u64,
}

/// Progress of one table's snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotStatus {
    /// Source table as `schema.table`.
    pub table: String,
    /// `copying`, `done` or `failed`.
    pub state: String,
    /// Rows copied so far.
    pub rows_copied: u64,
    /// PostgreSQL's estimate of the table's rows, when it has one.
    pub rows_estimate: Option<u64>,
    /// Rows that this run left alone because live changes had already written them.
    pub skipped_rows: u64,
    /// Duration of the finished run in seconds; `None` until it is done.
    pub seconds: Option<f64>,
    /// The reason the snapshot stopped, without row values.
    pub error: Option<String>,
}

/// Result of a verify run, per table.
#[derive(Debug, Clone, Serialize)]
pub struct DriftStatus {
    /// When the run finished, RFC 3339 UTC.
    pub finished_at: String,
    /// One entry per table.
    pub tables: Vec<TableDrift>,
}

/// Result of a verify run for one table.
#[derive(Debug, Clone, Serialize)]
pub struct TableDrift {
    /// Source table as `schema.table`.
    pub table: String,
    /// Rows compared.
    pub rows_compared: u64,
    /// Rows that differ: changed, missing and extra together.
    pub differences: u64,
    /// The reason the table could not be compared, if it could not.
    pub error: Option<String>,
}

/// Capture part of the status.
#[derive(Debug, Clone, Serialize)]
pub struct CaptureStatus {
    /// Whether the drain session is connected to PostgreSQL.
    pub connected: bool,
    /// Last capture error, without row values.
    pub last_error: Option<String>,
}

/// Journal part of the status.
#[derive(Debug, Clone, Serialize)]
pub struct JournalStatus {
    /// Last durable journal sequence number.
    pub durable_seq: u64,
    /// Records journaled but not yet applied.
    pub backlog_records: u64,
    /// Bytes of journal segments on disk, applied ones not yet deleted included.
    pub backlog_bytes: u64,
    /// Age of the oldest pending change. After a restart the age of older records is
    /// approximate: it counts from the last write of the oldest journal segment.
    pub oldest_pending_age_seconds: Option<f64>,
}

/// Apply part of the status.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyStatus {
    /// Phase.
    pub state: ApplyPhase,
    /// Last journal sequence number committed to MySQL.
    pub applied_seq: u64,
    /// Time of the last commit by this process, RFC 3339 UTC.
    pub last_applied_at: Option<String>,
    /// Result of the last apply run.
    pub last_run: Option<RunReport>,
    /// Error that halted apply or made MySQL unavailable, without server text or row values.
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_and_lag_follow_positions() {
        let board = Board::new(Mode::Manual, FailedChangePolicy::Halt);
        let before = SystemTime::now() - Duration::from_secs(60);
        board.journal_opened(10, before);
        board.checkpoint_read(4);
        let status = board.snapshot(0);
        assert_eq!(status.journal.backlog_records, 6);
        assert!(status.lag_seconds >= 59.0, "{}", status.lag_seconds);

        board.batch_journaled(12);
        board.applied(10);
        let status = board.snapshot(0);
        assert_eq!(status.journal.backlog_records, 2);
        assert!(status.lag_seconds < 59.0, "{}", status.lag_seconds);

        board.applied(12);
        let status = board.snapshot(0);
        assert_eq!(status.journal.backlog_records, 0);
        assert_eq!(status.lag_seconds, 0.0);
        assert_eq!(status.journal.oldest_pending_age_seconds, None);
    }

    #[test]
    fn metrics_encode_with_prefix() {
        let board = Board::new(Mode::Automatic, FailedChangePolicy::Park);
        count_change(&board.metrics.captured, "public.items", "insert", 1);
        board.metrics.batch_duration.observe(0.01);
        let text = board.encode_metrics(123);
        assert!(
            text.contains(
                "pg_to_mysql_sync_changes_captured_total{table=\"public.items\",operation=\"insert\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("pg_to_mysql_sync_backlog_bytes 123"),
            "{text}"
        );
        assert!(
            text.contains("pg_to_mysql_sync_apply_batch_duration_seconds_bucket"),
            "{text}"
        );
    }

    #[test]
    fn mode_changes_reach_watchers() {
        let board = Board::new(Mode::Manual, FailedChangePolicy::Halt);
        let mut watcher = board.watch_mode();
        assert_eq!(board.set_mode(Mode::Automatic), Mode::Manual);
        assert!(watcher.has_changed().unwrap());
        assert_eq!(*watcher.borrow_and_update(), Mode::Automatic);
    }
}
