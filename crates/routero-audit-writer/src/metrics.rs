//! What the writer did, for Prometheus: events chained, commits and checkpoints that failed
//! (and were retried), and its lag, the age of the oldest event of the last batch committed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use routero_core::audit::AuditEvent;
use routero_metrics::Exposition;

/// The writer's counters; shared with whatever serves them.
#[derive(Debug, Default)]
pub struct WriterMetrics {
    chained: AtomicU64,
    commit_failures: AtomicU64,
    checkpoints: AtomicU64,
    checkpoint_failures: AtomicU64,
    lag_ms: AtomicU64,
    committed_at_ms: AtomicU64,
}

fn ms_since_epoch(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl WriterMetrics {
    /// A batch committed, `written` of its events new to the chain.
    pub(crate) fn committed(&self, batch: &[AuditEvent], written: usize) {
        let now = SystemTime::now();
        self.chained.fetch_add(written as u64, Ordering::Relaxed);
        self.committed_at_ms
            .store(ms_since_epoch(now), Ordering::Relaxed);
        let oldest = batch
            .iter()
            .filter_map(|event| humantime::parse_rfc3339_weak(&event.time).ok())
            .min();
        if let Some(oldest) = oldest {
            let lag = now.duration_since(oldest).unwrap_or_default();
            self.lag_ms.store(
                u64::try_from(lag.as_millis()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
        }
    }

    pub(crate) fn commit_failed(&self) {
        self.commit_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn signed(&self, checkpoints: usize) {
        self.checkpoints
            .fetch_add(checkpoints as u64, Ordering::Relaxed);
    }

    pub(crate) fn checkpoint_failed(&self) {
        self.checkpoint_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition for one scrape.
    #[expect(
        clippy::cast_precision_loss,
        reason = "counts and times far below 2^52"
    )]
    pub fn render(&self) -> String {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed) as f64;
        let mut text = Exposition::new();
        text.total(
            "routero_audit_events_chained_total",
            "Audit events the writer chained and committed.",
            load(&self.chained),
        )
        .total(
            "routero_audit_commit_failures_total",
            "Batch commits that failed (each retried until stored).",
            load(&self.commit_failures),
        )
        .total(
            "routero_audit_checkpoints_signed_total",
            "Signed checkpoints of tenants' chain heads.",
            load(&self.checkpoints),
        )
        .total(
            "routero_audit_checkpoint_failures_total",
            "Checkpoint rounds that failed (retried at the next tick).",
            load(&self.checkpoint_failures),
        )
        .gauge(
            "routero_audit_writer_lag_seconds",
            "Age of the oldest event of the last batch committed, when it was committed.",
            load(&self.lag_ms) / 1000.0,
        )
        .gauge(
            "routero_audit_last_commit_timestamp_seconds",
            "When the writer last committed a batch (Unix time; 0: not yet).",
            load(&self.committed_at_ms) / 1000.0,
        );
        text.finish()
    }
}
