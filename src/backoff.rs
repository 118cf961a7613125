//! Exponential backoff for reconnects and retries; every sleep also listens for shutdown.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Doubling delays between `initial` and `max`, with up to 25% random jitter so that many
/// daemons restarted together do not retry in step.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            next: initial,
            attempt: 0,
        }
    }

    /// Returns the delay before the next attempt and advances the schedule.
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.attempt += 1;
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = base.mul_f64(rand::random::<f64>() * 0.25);

        base + jitter
    }

    /// Number of failed attempts since the last success.
    pub(crate) fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Starts over after a success.
    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
        self.attempt = 0;
    }
}

/// Sleeps for `delay`. Returns `false` at once when shutdown is requested.
pub(crate) async fn sleep_or_shutdown(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = shutdown.cancelled() => false,
    }
}
