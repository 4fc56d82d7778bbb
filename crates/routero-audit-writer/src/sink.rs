//! Export sinks: chained records and the signed checkpoints over them, delivered in order per
//! tenant from cursors in the audit database, moved only after a delivery succeeded, so a
//! restart never skips a record (and re-sends at most the batch in flight). Failures are
//! retried with exponential backoff and dead-lettered after `max_attempts`.
//!
//! Every sink is also a witness: the checkpoints it receives are signed chain heads kept
//! outside the audit database, against which `routero audit verify --witness` detects a cut
//! tail.

use std::future::Future;
use std::time::Duration;

use routero_audit::{AuditError, AuditStore, ChainedRecord, Checkpoint, ExportLine};

/// One delivery: a tenant's next records, and the checkpoints signed over records delivered
/// so far (a checkpoint goes out once its record has).
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// The tenant.
    pub tenant_id: &'a str,
    /// Records, in order.
    pub records: &'a [ChainedRecord],
    /// Checkpoints, in order.
    pub checkpoints: &'a [Checkpoint],
}

impl Batch<'_> {
    /// The batch as export lines, in chain order: each checkpoint after the record it pins.
    pub fn lines(&self) -> Vec<ExportLine> {
        let mut lines = Vec::with_capacity(self.records.len() + self.checkpoints.len());
        let mut checkpoints = self.checkpoints.iter().peekable();
        for record in self.records {
            while let Some(checkpoint) = checkpoints.next_if(|c| c.seq < record.seq) {
                lines.push(ExportLine::Checkpoint(checkpoint.clone()));
            }
            lines.push(ExportLine::Record(Box::new(record.clone())));
        }
        lines.extend(checkpoints.cloned().map(ExportLine::Checkpoint));
        lines
    }
}

/// A destination for chained records and checkpoints.
pub trait Sink: Send + Sync {
    /// Delivers one batch, in order; `Err` says what went wrong, for the log and the dead
    /// letter.
    fn deliver(&self, batch: Batch<'_>) -> impl Future<Output = Result<(), String>> + Send;
}

/// Sends an HTTP request; a non-2xx status is an error.
pub(crate) async fn send(request: reqwest::RequestBuilder) -> Result<(), String> {
    let response = request.send().await.map_err(|e| format!("request: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("status {}", response.status()))
    }
}

/// How a sink is driven.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Name of this sink in cursors and dead letters.
    pub name: String,
    /// Attempts per batch before it is dead-lettered.
    pub max_attempts: u32,
    /// Wait after the first failure; doubles per attempt up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// Records per delivery.
    pub batch: u32,
    /// Pause between scans when everything is delivered.
    pub poll_interval: Duration,
}

impl SinkConfig {
    /// Defaults: 8 attempts from 500 ms to 60 s, 100 records a delivery, scans every second.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            max_attempts: 8,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            batch: 100,
            poll_interval: Duration::from_secs(1),
        }
    }
}

struct Driver<S> {
    store: AuditStore,
    sink: S,
    config: SinkConfig,
}

/// The cursor of a sink's checkpoints, beside its records' cursor.
fn checkpoint_cursor(sink: &str) -> String {
    format!("{sink}#checkpoints")
}

impl<S: Sink> Driver<S> {
    /// Moves the cursors past a delivered (or given up) batch.
    async fn advance(
        &self,
        batch: Batch<'_>,
        dead: Option<(&[u64], u32, &str)>,
    ) -> Result<(), AuditError> {
        let name = &self.config.name;
        if let Some(last) = batch.records.last() {
            self.store
                .advance_export(name, batch.tenant_id, last.seq, dead)
                .await?;
        }
        if let Some(last) = batch.checkpoints.last() {
            self.store
                .advance_export(&checkpoint_cursor(name), batch.tenant_id, last.seq, None)
                .await?;
        }
        Ok(())
    }

    /// Delivers one batch with retries; returns false if `stop` fired meanwhile.
    async fn deliver(
        &self,
        batch: Batch<'_>,
        stop: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<bool, AuditError> {
        let tenant_id = batch.tenant_id;
        let name = &self.config.name;
        let mut backoff = self.config.initial_backoff;
        let mut error = String::new();
        for attempt in 1..=self.config.max_attempts {
            match self.sink.deliver(batch).await {
                Ok(()) => {
                    self.advance(batch, None).await?;
                    return Ok(true);
                }
                Err(e) => error = e,
            }
            tracing::warn!(sink = %name, tenant = tenant_id, attempt, %error, "audit export delivery failed");
            if attempt < self.config.max_attempts {
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = &mut *stop => return Ok(false),
                }
                backoff = (backoff * 2).min(self.config.max_backoff);
            }
        }
        let seqs: Vec<u64> = batch.records.iter().map(|r| r.seq).collect();
        tracing::error!(sink = %name, tenant = tenant_id, records = ?seqs.first().zip(seqs.last()), checkpoints = batch.checkpoints.len(), %error, "audit export gave up; dead-lettered");
        self.advance(batch, Some((&seqs, self.config.max_attempts, &error)))
            .await?;
        Ok(true)
    }

    /// Delivers everything pending once; returns whether anything was sent and whether to go on.
    async fn scan(
        &self,
        stop: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<(bool, bool), AuditError> {
        let mut sent = false;
        let name = &self.config.name;
        for tenant in self.store.tenants().await? {
            let cursor = self.store.export_cursor(name, &tenant).await?;
            let records = self
                .store
                .records_after(&tenant, cursor, self.config.batch)
                .await?;
            let through = records.last().map_or(cursor, |r| r.seq);
            let signed = self
                .store
                .export_cursor(&checkpoint_cursor(name), &tenant)
                .await?;
            let checkpoints = self
                .store
                .checkpoints_between(&tenant, signed, through)
                .await?;
            if records.is_empty() && checkpoints.is_empty() {
                continue;
            }
            sent = true;
            let batch = Batch {
                tenant_id: &tenant,
                records: &records,
                checkpoints: &checkpoints,
            };
            if !self.deliver(batch, stop).await? {
                return Ok((sent, false));
            }
        }
        Ok((sent, true))
    }
}

/// Runs a sink until `shutdown` completes.
pub async fn run_sink(
    store: AuditStore,
    sink: impl Sink,
    config: SinkConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AuditError> {
    let driver = Driver {
        store,
        sink,
        config,
    };
    let mut stop = std::pin::pin!(shutdown);
    loop {
        let (sent, go_on) = match driver.scan(&mut stop).await {
            Ok(progress) => progress,
            Err(error) => {
                tracing::error!(sink = %driver.config.name, %error, "audit export scan failed; will retry");
                (false, true)
            }
        };
        if !go_on {
            return Ok(());
        }
        if !sent {
            tokio::select! {
                () = tokio::time::sleep(driver.config.poll_interval) => {}
                () = &mut stop => return Ok(()),
            }
        }
    }
}
