//! The audit writer: takes events off the bus in batches, chains and commits them per tenant
//! (idempotent on event id), and signs a checkpoint every `checkpoint_every` events or every
//! `checkpoint_interval`, whichever comes first, and prunes what is past each tenant's
//! retention behind a signed anchor every `prune_interval`. A batch that fails to commit is retried, never
//! dropped; at shutdown what is queued is written before returning.
#![forbid(unsafe_code)]

mod metrics;
mod s3;
mod sink;
mod webhook;

pub use metrics::WriterMetrics;
pub use s3::{S3Config, read_witness_objects, run_s3};
pub use sink::{Batch, Sink, SinkConfig, run_sink};
pub use webhook::{SIGNATURE_HEADER, WebhookConfig, run_webhook};

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use routero_audit::AuditStore;
use routero_bus::EventSource;
use routero_core::audit::AuditEvent;
use routero_crypto::CheckpointSigner;

/// How the writer batches and checkpoints.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Largest batch committed in one transaction.
    pub batch_size: usize,
    /// Sign a checkpoint after this many records.
    pub checkpoint_every: u64,
    /// Sign a checkpoint at least this often while records arrive.
    pub checkpoint_interval: Duration,
    /// First wait before retrying a failed commit (doubles up to 5 s).
    pub retry_backoff: Duration,
    /// How often records past their tenant's retention are pruned (behind a signed anchor).
    pub prune_interval: Duration,
    /// Where what the writer does is counted.
    pub metrics: Arc<WriterMetrics>,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            batch_size: 2048,
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(10),
            retry_backoff: Duration::from_millis(100),
            prune_interval: Duration::from_secs(3600),
            metrics: Arc::default(),
        }
    }
}

struct Writer {
    store: AuditStore,
    signer: CheckpointSigner,
    config: WriterConfig,
    unsigned: BTreeSet<String>,
    since_checkpoint: u64,
    leftovers_signed: bool,
}

impl Writer {
    /// Commits `batch`, retrying until it is stored: a batch is never dropped.
    async fn write(&mut self, batch: &[AuditEvent]) {
        let mut backoff = self.config.retry_backoff;
        loop {
            match self.store.append(batch).await {
                Ok(written) => {
                    self.config.metrics.committed(batch, written.len());
                    self.since_checkpoint += written.len() as u64;
                    self.unsigned
                        .extend(written.into_iter().map(|r| r.tenant_id));
                    if self.since_checkpoint >= self.config.checkpoint_every {
                        self.checkpoint().await;
                    }
                    return;
                }
                Err(error) => {
                    self.config.metrics.commit_failed();
                    tracing::error!(%error, events = batch.len(), retry_in_ms = backoff.as_millis() as u64, "audit batch not committed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Signs the heads of the tenants written since the last checkpoint. A failure is reported
    /// and leaves them pending for the next tick: it never ends the writer.
    async fn checkpoint(&mut self) {
        if self.unsigned.is_empty() {
            return;
        }
        let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        match self
            .store
            .checkpoint(
                &self.signer,
                self.unsigned.iter().map(String::as_str),
                &time,
            )
            .await
        {
            Ok(signed) => {
                self.config.metrics.signed(signed.len());
                tracing::debug!(checkpoints = signed.len(), "audit checkpoints signed");
                self.unsigned.clear();
                self.since_checkpoint = 0;
            }
            Err(error) => {
                self.config.metrics.checkpoint_failed();
                tracing::error!(%error, tenants = self.unsigned.len(), "audit checkpoint failed; retried at the next tick");
            }
        }
    }

    /// At the first tick: a tail a crash left unsigned is signed now, not when new events
    /// arrive (retried at each tick until the store answers).
    async fn sign_leftover_tails(&mut self) {
        match self.store.tenants().await {
            Ok(tenants) => {
                self.unsigned.extend(tenants);
                self.leftovers_signed = true;
            }
            Err(error) => {
                tracing::error!(%error, "audit store unreadable; leftover tails signed at the next tick");
            }
        }
    }
}

/// Runs the writer until `shutdown` completes (or the source ends), then writes what is still
/// queued and signs a final checkpoint. It first signs any tail a crash left unsigned. The
/// source's position is committed only after the database commit, so a crash redelivers (and
/// the store skips duplicates) but never loses. Store and checkpoint failures are retried with
/// backoff and reported; none ends the writer.
pub async fn run(
    store: AuditStore,
    mut stream: impl EventSource,
    signer: CheckpointSigner,
    config: WriterConfig,
    shutdown: impl Future<Output = ()>,
) {
    let mut writer = Writer {
        store,
        signer,
        config: config.clone(),
        unsigned: BTreeSet::new(),
        since_checkpoint: 0,
        leftovers_signed: false,
    };
    // The first tick is at once: leftover tails are signed at start.
    let mut ticker = tokio::time::interval(config.checkpoint_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pruner = tokio::time::interval(config.prune_interval);
    pruner.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            batch = stream.next_batch(config.batch_size) => match batch {
                Some(batch) => {
                    writer.write(&batch).await;
                    // Only now, with the batch in the database, may the source forget it.
                    if let Err(error) = stream.commit().await {
                        tracing::warn!(%error, "source position not committed; events may be redelivered (and skipped as duplicates)");
                    }
                }
                None => break,
            },
            _ = ticker.tick() => {
                if !writer.leftovers_signed {
                    writer.sign_leftover_tails().await;
                }
                writer.checkpoint().await;
            }
            _ = pruner.tick() => {
                match writer.store.prune_expired(&writer.signer, SystemTime::now()).await {
                    Ok(anchors) if !anchors.is_empty() => tracing::info!(tenants = anchors.len(), "audit records past retention pruned behind signed anchors"),
                    Ok(_) => {}
                    Err(error) => tracing::error!(%error, "audit pruning failed; will retry"),
                }
            }
            () = &mut shutdown => break,
        }
    }
    loop {
        let rest = stream.drain_now(config.batch_size);
        if rest.is_empty() {
            break;
        }
        writer.write(&rest).await;
        if let Err(error) = stream.commit().await {
            tracing::warn!(%error, "source position not committed at shutdown");
        }
    }
    writer.checkpoint().await;
}

/// Runs the writer until `stop` turns true (or its source ends), and starts it again, on a
/// fresh source, if it ever stops otherwise (a panic): an audit trail never ends quietly.
pub async fn run_supervised<S, F>(
    store: AuditStore,
    signer: CheckpointSigner,
    config: WriterConfig,
    mut source: F,
    stop: tokio::sync::watch::Receiver<bool>,
) where
    S: EventSource + 'static,
    F: FnMut() -> Result<S, String>,
{
    loop {
        let stream = match source() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::error!(%error, "audit writer source unavailable; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut stopping = stop.clone();
        let shutdown = async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        };
        let writer = tokio::spawn(run(
            store.clone(),
            stream,
            signer.clone(),
            config.clone(),
            shutdown,
        ));
        match writer.await {
            Ok(()) => return,
            Err(error) => {
                tracing::error!(%error, "audit writer stopped unexpectedly; restarting it in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
