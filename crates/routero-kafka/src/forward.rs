//! Bus → spool → events topic.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::producer::{FutureProducer, Producer as _};
use routero_bus::{EventSource as _, EventStream};
use routero_core::audit::{AuditEvent, UNATTRIBUTED_TENANT};
use serde::Deserialize;
use tokio::sync::Notify;

use crate::spool::{Spool, Spooled};
use crate::{KafkaConfig, KafkaError, send_in_order};

/// Events taken from the bus, and sent to the broker, at a time.
const BATCH: usize = 512;
/// How long shutdown waits for the spool to empty (what is left is sent at the next start).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

struct Shared {
    spool: Mutex<Spool>,
    /// Signalled when lines were appended.
    appended: Notify,
    /// Signalled when lines were acknowledged (room freed).
    freed: Notify,
}

impl Shared {
    fn spool(&self) -> MutexGuard<'_, Spool> {
        // A panic while holding the lock cannot leave the spool inconsistent: every method
        // updates memory only after its file operation succeeded.
        self.spool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn with_spool<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&mut Spool) -> Result<T, KafkaError> + Send + 'static,
    ) -> Result<T, KafkaError> {
        let shared = Arc::clone(self);
        tokio::task::spawn_blocking(move || work(&mut shared.spool()))
            .await
            .map_err(|_| KafkaError::SpoolCorrupt("spool task stopped"))?
    }
}

/// Forwards events from the bus through `spool` to the events topic until every publisher is
/// gone, then gives delivery a few seconds to empty the spool (what is left is sent at the
/// next start).
pub async fn forward(
    mut stream: EventStream,
    spool: Spool,
    config: KafkaConfig,
) -> Result<(), KafkaError> {
    let shared = Arc::new(Shared {
        spool: Mutex::new(spool),
        appended: Notify::new(),
        freed: Notify::new(),
    });
    let deliverer = tokio::spawn(deliver_forever(Arc::clone(&shared), config));
    while let Some(batch) = stream.next_batch(BATCH).await {
        spool_batch(&shared, &stream, batch).await?;
    }
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while shared.spool().pending_bytes() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    deliverer.abort();
    let left = shared.spool().pending_bytes();
    if left > 0 {
        tracing::warn!(
            bytes = left,
            "audit events left in the spool; they are sent at the next start"
        );
    }
    Ok(())
}

/// Appends a batch to the spool, waiting while it is full and retrying I/O errors: the bus
/// fills meanwhile and its overflow policy decides what requests see. Once every publisher is
/// gone, a full spool takes the batch beyond its bound rather than lose it.
async fn spool_batch(
    shared: &Arc<Shared>,
    stream: &EventStream,
    batch: Vec<AuditEvent>,
) -> Result<(), KafkaError> {
    let lines = Arc::new(serialize(&batch));
    let mut warned = false;
    loop {
        let appending = Arc::clone(&lines);
        match shared
            .with_spool(move |spool| spool.append(&appending))
            .await
        {
            Ok(()) => {
                shared.appended.notify_one();
                return Ok(());
            }
            Err(KafkaError::SpoolFull) if stream.is_closed() => {
                let appending = Arc::clone(&lines);
                shared
                    .with_spool(move |spool| spool.append_beyond_bound(&appending))
                    .await?;
                shared.appended.notify_one();
                return Ok(());
            }
            Err(KafkaError::SpoolFull) => {
                if !warned {
                    tracing::warn!("audit spool full; holding events until the broker takes some");
                    warned = true;
                }
                tokio::select! {
                    () = shared.freed.notified() => {}
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

#[derive(Deserialize)]
struct TenantOf<'a> {
    #[serde(borrow)]
    tenant_id: Cow<'a, str>,
}

async fn deliver_forever(shared: Arc<Shared>, config: KafkaConfig) {
    let mut producer: Option<FutureProducer> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let pending = match shared
            .with_spool(|spool| spool.read_pending(BATCH * 4))
            .await
        {
            Ok(pending) => pending,
            Err(error) => {
                tracing::error!(%error, "audit spool read failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if pending.is_empty() {
            shared.appended.notified().await;
            continue;
        }
        let ready = match producer.take() {
            Some(ready) => ready,
            None => match config.producer().create::<FutureProducer>() {
                Ok(created) => created,
                Err(error) => {
                    tracing::error!(%error, "kafka producer not created; retrying");
                    back_off(&mut backoff).await;
                    continue;
                }
            },
        };
        let messages = keyed(&pending);
        let delivered = send_in_order(
            &ready,
            &config.events_topic,
            messages.iter().map(|(key, line)| (key.as_bytes(), *line)),
        )
        .await;
        if let Some(last) = delivered.checked_sub(1).and_then(|i| pending.get(i)) {
            let end = last.end;
            match shared.with_spool(move |spool| spool.acknowledge(end)).await {
                Ok(()) => shared.freed.notify_one(),
                Err(error) => tracing::error!(%error, "audit spool acknowledge failed"),
            }
        }
        if delivered < pending.len() {
            tracing::warn!(
                delivered,
                pending = pending.len(),
                "kafka delivery incomplete; retrying from the spool"
            );
            // An idempotent producer that hit a fatal error cannot be used again.
            if ready.client().fatal_error().is_none() {
                producer = Some(ready);
            }
            back_off(&mut backoff).await;
        } else {
            producer = Some(ready);
            backoff = Duration::from_millis(100);
        }
    }
}

/// Waits `backoff`, then doubles it up to 10 s.
async fn back_off(backoff: &mut Duration) {
    tokio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(Duration::from_secs(10));
}

/// The lines with their tenant as key.
fn keyed(lines: &[Spooled]) -> Vec<(Cow<'_, str>, &[u8])> {
    lines
        .iter()
        .map(|spooled| {
            let key = serde_json::from_slice::<TenantOf<'_>>(&spooled.line)
                .map_or(Cow::Borrowed(UNATTRIBUTED_TENANT), |t| t.tenant_id);
            (key, spooled.line.as_slice())
        })
        .collect()
}
