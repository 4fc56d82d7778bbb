//! The bus's events through the disk spool: [`Spooled::fill`] moves each batch from the bus into
//! the spool (fsynced before the bus forgets it), and whoever delivers them (the Kafka
//! forwarder, or the audit writer of `routero up` through [`SpoolSource`]) reads pending lines
//! and acknowledges what it delivered. A crash at any point loses nothing that was spooled.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use routero_core::audit::AuditEvent;
use sha2::{Digest as _, Sha256};
use tokio::sync::Notify;

use crate::spool::{Position, Spool, SpoolError, Spooled as Line};
use crate::{Backlog, BusError, EventSource, EventStream, rejected};

struct Shared {
    spool: Mutex<Spool>,
    /// Signalled when lines were appended, and when filling ended.
    appended: Notify,
    /// Signalled when lines were acknowledged (room freed).
    freed: Notify,
    /// Every publisher is gone and what they published is spooled.
    filled: AtomicBool,
    /// Told the spool's size as it changes, once filling started.
    backlog: OnceLock<Arc<Backlog>>,
}

/// A spool shared between the task filling it and the one delivering from it.
#[derive(Clone)]
pub struct Spooled(Arc<Shared>);

impl std::fmt::Debug for Spooled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spooled")
            .field("pending_bytes", &self.pending_bytes())
            .finish_non_exhaustive()
    }
}

impl Spooled {
    /// Shares `spool`.
    pub fn new(spool: Spool) -> Self {
        Self(Arc::new(Shared {
            spool: Mutex::new(spool),
            appended: Notify::new(),
            freed: Notify::new(),
            filled: AtomicBool::new(false),
            backlog: OnceLock::new(),
        }))
    }

    /// Tells the bus's backlog the spool's size.
    fn tell_backlog(&self) {
        if let Some(backlog) = self.0.backlog.get() {
            backlog.set_spool_bytes(self.pending_bytes());
        }
    }

    /// Counts a failed delivery in the bus's backlog.
    pub fn delivery_failed(&self) {
        if let Some(backlog) = self.0.backlog.get() {
            backlog.delivery_failed();
        }
    }

    fn spool(&self) -> MutexGuard<'_, Spool> {
        // A panic while holding the lock cannot leave the spool inconsistent: every method
        // updates memory only after its file operation succeeded.
        self.0
            .spool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn with_spool<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Spool) -> Result<T, SpoolError> + Send + 'static,
    ) -> Result<T, SpoolError> {
        let shared = self.clone();
        tokio::task::spawn_blocking(move || work(&mut shared.spool()))
            .await
            .map_err(|_| SpoolError::Corrupt("spool task stopped"))?
    }

    /// Bytes spooled and not yet acknowledged.
    pub fn pending_bytes(&self) -> u64 {
        self.spool().pending_bytes()
    }

    /// Moves the bus's events into the spool until every publisher is gone. A full spool stops
    /// taking from the bus (whose overflow policy then decides what publishers see); once the
    /// publishers are gone it takes the last batches beyond its bound rather than lose them.
    pub async fn fill(&self, mut stream: EventStream) {
        let _ = self.0.backlog.set(stream.backlog());
        self.tell_backlog();
        while let Some(batch) = stream.next_envelopes(BATCH).await {
            let (events, receipts): (Vec<AuditEvent>, Vec<_>) = batch
                .into_iter()
                .map(|envelope| (envelope.event, envelope.spooled))
                .unzip();
            self.append(&stream, &events).await;
            for receipt in receipts.into_iter().flatten() {
                let _ = receipt.send(());
            }
        }
        self.0.filled.store(true, Ordering::Release);
        self.0.appended.notify_waiters();
        self.0.appended.notify_one();
    }

    async fn append(&self, stream: &EventStream, batch: &[AuditEvent]) {
        let lines = Arc::new(serialize(batch));
        let mut warned = false;
        loop {
            let appending = Arc::clone(&lines);
            let beyond = stream.is_closed();
            let appended = self
                .with_spool(move |spool| {
                    if beyond {
                        spool.append_beyond_bound(&appending)
                    } else {
                        spool.append(&appending)
                    }
                })
                .await;
            match appended {
                Ok(()) => {
                    stream.set_stalled(false);
                    self.tell_backlog();
                    self.0.appended.notify_one();
                    return;
                }
                Err(SpoolError::Full) => {
                    stream.set_stalled(true);
                    if !warned {
                        tracing::warn!("audit spool full; holding events until some are delivered");
                        warned = true;
                    }
                    tokio::select! {
                        () = self.0.freed.notified() => {}
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "audit spool append failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Up to `max` pending lines, waiting for some; `None` once filling ended and nothing is
    /// pending. Read errors are retried.
    pub async fn pending(&self, max: usize) -> Option<Vec<Line>> {
        loop {
            let appended = self.0.appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            let filled = self.0.filled.load(Ordering::Acquire);
            match self.with_spool(move |spool| spool.read_pending(max)).await {
                Ok(lines) if !lines.is_empty() => return Some(lines),
                Ok(_) if filled => return None,
                Ok(_) => appended.await,
                Err(error) => {
                    tracing::error!(%error, "audit spool read failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Records that everything up to `end` was delivered; frees its room.
    pub async fn acknowledge(&self, end: Position) -> Result<(), SpoolError> {
        self.with_spool(move |spool| spool.acknowledge(end)).await?;
        self.tell_backlog();
        self.0.freed.notify_one();
        Ok(())
    }
}

/// Events taken from the bus at a time.
const BATCH: usize = 512;

/// One JSON line per event.
fn serialize(batch: &[AuditEvent]) -> Vec<Vec<u8>> {
    batch
        .iter()
        .filter_map(|event| match serde_json::to_vec(event) {
            Ok(line) => Some(line),
            Err(error) => {
                // Unreachable for a derived Serialize of strings and maps; say it loudly.
                tracing::error!(%error, event_id = %event.event_id, "audit event not serializable");
                None
            }
        })
        .collect()
}

/// The audit writer's source in `routero up`: the spooled events, acknowledged once the writer
/// committed them. A line that is not an audit event is recorded as `audit.message_rejected`
/// (its digest, never its bytes), not dropped.
#[derive(Debug)]
pub struct SpoolSource {
    spooled: Spooled,
    /// End of the last line handed out, acknowledged at the next commit.
    taken: Option<Position>,
}

impl SpoolSource {
    /// A source reading `spooled`.
    pub fn new(spooled: Spooled) -> Self {
        Self {
            spooled,
            taken: None,
        }
    }

    fn events(&mut self, lines: Vec<Line>) -> Vec<AuditEvent> {
        lines
            .into_iter()
            .map(|line| {
                self.taken = Some(line.end);
                serde_json::from_slice(&line.line).unwrap_or_else(|error| {
                    let place = format!("spool/{}", hex::encode(Sha256::digest(&line.line)));
                    rejected(&place, &line.line, "not_an_audit_event", &error.to_string())
                })
            })
            .collect()
    }
}

impl EventSource for SpoolSource {
    async fn next_batch(&mut self, max: usize) -> Option<Vec<AuditEvent>> {
        let lines = self.spooled.pending(max).await?;
        Some(self.events(lines))
    }

    async fn commit(&mut self) -> Result<(), BusError> {
        if let Some(end) = self.taken.take() {
            self.spooled
                .acknowledge(end)
                .await
                .map_err(|e| BusError::Commit(e.to_string()))?;
        }
        Ok(())
    }

    /// Pending lines are already on disk: at shutdown they wait for the next start.
    fn drain_now(&mut self, _max: usize) -> Vec<AuditEvent> {
        Vec::new()
    }
}
