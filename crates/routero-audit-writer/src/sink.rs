//! Export sinks: chained records delivered in order per tenant from a cursor in the audit
//! database, moved only after a delivery succeeded, so a restart never skips a record (and
//! re-sends at most the batch in flight). Failures are retried with exponential backoff and
//! dead-lettered after `max_attempts`.

use std::future::Future;
use std::time::Duration;

use routero_audit::{AuditError, AuditStore, ChainedRecord};

/// A destination for chained records.
pub trait Sink: Send + Sync {
    /// Delivers one batch of a tenant's records, in order; `Err` says what went wrong, for the
    /// log and the dead letter.
    fn deliver(
        &self,
        tenant_id: &str,
        records: &[ChainedRecord],
    ) -> impl Future<Output = Result<(), String>> + Send;
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

impl<S: Sink> Driver<S> {
    /// Delivers one batch with retries; returns false if `stop` fired meanwhile.
    async fn deliver(
        &self,
        tenant_id: &str,
        records: &[ChainedRecord],
        stop: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<bool, AuditError> {
        let Some(last) = records.last().map(|r| r.seq) else {
            return Ok(true);
        };
        let name = &self.config.name;
        let mut backoff = self.config.initial_backoff;
        let mut error = String::new();
        for attempt in 1..=self.config.max_attempts {
            match self.sink.deliver(tenant_id, records).await {
                Ok(()) => {
                    self.store
                        .advance_export(name, tenant_id, last, None)
                        .await?;
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
        let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        tracing::error!(sink = %name, tenant = tenant_id, first = seqs[0], last, %error, "audit export gave up; records dead-lettered");
        self.store
            .advance_export(
                name,
                tenant_id,
                last,
                Some((&seqs, self.config.max_attempts, &error)),
            )
            .await?;
        Ok(true)
    }

    /// Delivers everything pending once; returns whether anything was sent and whether to go on.
    async fn scan(
        &self,
        stop: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<(bool, bool), AuditError> {
        let mut sent = false;
        for tenant in self.store.tenants().await? {
            let cursor = self.store.export_cursor(&self.config.name, &tenant).await?;
            let records = self
                .store
                .records_after(&tenant, cursor, self.config.batch)
                .await?;
            if records.is_empty() {
                continue;
            }
            sent = true;
            if !self.deliver(&tenant, &records, stop).await? {
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
