//! The event bus: services publish [`AuditEvent`]s, the audit writer consumes them in batches.
//!
//! The bus is a bounded in-process channel. What happens when it is full is configured
//! ([`Overflow`]): wait for room, or refuse so the caller can fail closed. Events are never
//! dropped silently. Every event is bounded ([`AuditEvent::bounded`]) as it is published.
//! Behind the bus, every process keeps its events in an fsynced disk [`Spool`] until they are
//! delivered ([`Spooled`]): to Kafka in split deployments, to the audit writer ([`SpoolSource`])
//! in `routero up`.
#![forbid(unsafe_code)]

pub mod spool;
mod spooled;

pub use spool::{Spool, SpoolError};
pub use spooled::{SpoolSource, Spooled};

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use routero_core::audit::{
    Actor, ActorKind, AuditEvent, EventType, Outcome, Resource, UNATTRIBUTED_TENANT,
};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

/// Errors of publishing.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BusError {
    /// The bus is full and configured to refuse rather than wait.
    #[error("audit bus full")]
    Full,
    /// The consumer is gone.
    #[error("audit bus closed")]
    Closed,
    /// A broker-backed source could not commit its position.
    #[error("commit: {0}")]
    Commit(String),
}

/// Where the audit writer takes events from: the in-process [`EventStream`], or a broker.
pub trait EventSource: Send {
    /// Waits for events and returns up to `max`; `None` when the source has ended. Must be
    /// cancel-safe: the writer selects it against its timers, and an event received by a
    /// dropped call must come back from the next one (never be lost, nor committed unstored).
    fn next_batch(&mut self, max: usize) -> impl Future<Output = Option<Vec<AuditEvent>>> + Send;

    /// Marks every event returned so far as durably stored, so it is not delivered again.
    fn commit(&mut self) -> impl Future<Output = Result<(), BusError>> + Send;

    /// What is already queued, without waiting (drained at shutdown).
    fn drain_now(&mut self, max: usize) -> Vec<AuditEvent>;
}

/// What publishing does when the bus is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Wait for room (back-pressure on the caller).
    Block,
    /// Refuse with [`BusError::Full`], so the caller fails the request closed.
    FailClosed,
}

/// An event on its way, with whom to tell once it is on disk.
#[derive(Debug)]
pub(crate) struct Envelope {
    pub(crate) event: AuditEvent,
    pub(crate) spooled: Option<oneshot::Sender<()>>,
}

/// The publishing side; cheap to clone.
#[derive(Debug, Clone)]
pub struct EventBus {
    sender: mpsc::Sender<Envelope>,
    overflow: Overflow,
    /// Set while what drains the bus cannot take events (a full spool): failing closed then
    /// refuses at once instead of taking work whose record would wait.
    stalled: Arc<AtomicBool>,
    backlog: Arc<Backlog>,
}

/// What waits behind a bus, told by what drains it, for metrics: bytes in the spool, and
/// deliveries to the broker that failed (to be retried from the spool).
#[derive(Debug, Default)]
pub struct Backlog {
    spool_bytes: AtomicU64,
    delivery_failures: AtomicU64,
}

impl Backlog {
    /// Bytes spooled and not yet delivered.
    pub fn spool_bytes(&self) -> u64 {
        self.spool_bytes.load(Ordering::Relaxed)
    }

    /// Deliveries to the broker that failed since start.
    pub fn delivery_failures(&self) -> u64 {
        self.delivery_failures.load(Ordering::Relaxed)
    }

    pub(crate) fn set_spool_bytes(&self, bytes: u64) {
        self.spool_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Counts a delivery that failed.
    pub fn delivery_failed(&self) {
        self.delivery_failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// Room for one event, taken before the work it records, so that the work is refused when it
/// could not be recorded.
#[derive(Debug)]
pub struct Reservation(mpsc::OwnedPermit<Envelope>);

impl Reservation {
    /// Publishes the event into the reserved room; cannot fail.
    pub fn publish(self, event: AuditEvent) {
        self.0.send(Envelope {
            event: event.bounded(),
            spooled: None,
        });
    }

    /// Publishes the event into the reserved room and waits until the spool behind the bus
    /// has it on disk: what an answer to a client waits for, so that a crash after the answer
    /// loses nothing. (Without a spool, until the consumer has taken it.)
    pub async fn publish_durably(self, event: AuditEvent) {
        let (spooled, on_disk) = oneshot::channel();
        self.0.send(Envelope {
            event: event.bounded(),
            spooled: Some(spooled),
        });
        let _ = on_disk.await;
    }
}

/// The consuming side.
#[derive(Debug)]
pub struct EventStream {
    receiver: mpsc::Receiver<Envelope>,
    stalled: Arc<AtomicBool>,
    backlog: Arc<Backlog>,
}

/// An in-process bus holding up to `capacity` events.
pub fn in_process(capacity: usize, overflow: Overflow) -> (EventBus, EventStream) {
    let (sender, receiver) = mpsc::channel(capacity.max(1));
    let stalled = Arc::new(AtomicBool::new(false));
    let backlog = Arc::new(Backlog::default());
    (
        EventBus {
            sender,
            overflow,
            stalled: Arc::clone(&stalled),
            backlog: Arc::clone(&backlog),
        },
        EventStream {
            receiver,
            stalled,
            backlog,
        },
    )
}

impl EventBus {
    /// Publishes one event, waiting for room or refusing per the overflow policy.
    pub async fn publish(&self, event: AuditEvent) -> Result<(), BusError> {
        self.reserve().await?.publish(event);
        Ok(())
    }

    /// Reserves room for one event, waiting or refusing per the overflow policy.
    pub async fn reserve(&self) -> Result<Reservation, BusError> {
        let sender = self.sender.clone();
        let permit = match self.overflow {
            Overflow::Block => sender.reserve_owned().await.map_err(|_| BusError::Closed)?,
            Overflow::FailClosed if self.stalled.load(Ordering::Acquire) => {
                return Err(BusError::Full);
            }
            Overflow::FailClosed => sender.try_reserve_owned().map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => BusError::Full,
                mpsc::error::TrySendError::Closed(_) => BusError::Closed,
            })?,
        };
        Ok(Reservation(permit))
    }

    /// Events queued or reserved on the bus, not yet taken by what drains it.
    pub fn depth(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }

    /// What waits behind the bus.
    pub fn backlog(&self) -> &Backlog {
        &self.backlog
    }
}

impl EventStream {
    /// Whether every publisher is gone (events may still be queued).
    pub fn is_closed(&self) -> bool {
        self.receiver.is_closed()
    }

    /// Says whether what drains the stream can take events: while it cannot (a full spool),
    /// publishers failing closed are refused at once.
    pub fn set_stalled(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::Release);
    }

    /// What waits behind the bus, for what drains it to tell.
    pub fn backlog(&self) -> Arc<Backlog> {
        Arc::clone(&self.backlog)
    }

    /// Waits for events and returns up to `max` with their receipts; `None` once every
    /// publisher is gone and nothing is queued.
    pub(crate) async fn next_envelopes(&mut self, max: usize) -> Option<Vec<Envelope>> {
        let mut batch = Vec::with_capacity(max.min(1024));
        let received = self.receiver.recv_many(&mut batch, max.max(1)).await;
        (received > 0).then_some(batch)
    }
}

impl EventSource for EventStream {
    async fn next_batch(&mut self, max: usize) -> Option<Vec<AuditEvent>> {
        let batch = self.next_envelopes(max).await?;
        Some(batch.into_iter().map(|envelope| envelope.event).collect())
    }

    /// In process there is nothing to acknowledge.
    async fn commit(&mut self) -> Result<(), BusError> {
        Ok(())
    }

    fn drain_now(&mut self, max: usize) -> Vec<AuditEvent> {
        let mut batch = Vec::new();
        while batch.len() < max {
            match self.receiver.try_recv() {
                Ok(envelope) => batch.push(envelope.event),
                Err(_) => break,
            }
        }
        batch
    }
}

/// Builds events with a fresh UUIDv7 id and the current time.
pub fn event(
    tenant_id: &str,
    action: EventType,
    actor: Actor,
    resource: Resource,
    outcome: Outcome,
) -> AuditEvent {
    AuditEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        tenant_id: tenant_id.to_owned(),
        time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        actor,
        action,
        resource,
        outcome,
        reason_code: None,
        request_id: None,
        policy_version: None,
        details: Map::new(),
    }
}

/// What something that should have been an audit event and cannot be read or delivered
/// becomes: `audit.message_rejected` under the unattributed tenant, with where it was
/// (`place`), why (`reason_code`, `error`), its size and SHA-256, never its bytes. Its id is
/// derived from `place`, so meeting the same thing again does not record it twice.
pub fn rejected(place: &str, payload: &[u8], reason_code: &str, error: &str) -> AuditEvent {
    tracing::error!(
        place,
        error,
        bytes = payload.len(),
        "audit message rejected; recorded by its digest"
    );
    let digest: [u8; 32] = Sha256::digest(place.as_bytes()).into();
    let mut id = [0u8; 16];
    id.iter_mut()
        .zip(digest)
        .for_each(|(byte, from)| *byte = from);
    let mut recorded = event(
        UNATTRIBUTED_TENANT,
        EventType::AuditMessageRejected,
        actor(ActorKind::System, Some("audit-pipeline".into())),
        resource("audit_message", Some(place.to_owned())),
        Outcome::Failure,
    );
    recorded.event_id = uuid::Builder::from_custom_bytes(id).into_uuid().to_string();
    recorded.reason_code = Some(reason_code.to_owned());
    recorded = with_detail(recorded, "error", error);
    recorded = with_detail(recorded, "bytes", payload.len());
    with_detail(recorded, "sha256", hex::encode(Sha256::digest(payload)))
}

/// How a service records the failed authentications it only counted.
#[derive(Debug, Clone, Copy)]
pub struct FailureReport {
    /// The event type (`request.blocked`, `login.failed`).
    pub action: EventType,
    /// The resource kind the attempts were made on.
    pub resource: &'static str,
    /// The refusal's reason code.
    pub reason_code: &'static str,
}

/// Records each source's failed authentications of the windows that ended, past what was
/// recorded one by one, as one aggregated event (`details.aggregated`, `count`, `window`),
/// looking every quarter window (at most 10 s), until `stop` turns true.
pub async fn report_auth_failures(
    failures: std::sync::Arc<routero_core::AuthFailures>,
    bus: Option<EventBus>,
    report: FailureReport,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Some(bus) = bus else {
        return;
    };
    let every = std::time::Duration::from_secs((failures.limits().window_secs / 4).clamp(1, 10));
    loop {
        let stopping = tokio::select! {
            () = tokio::time::sleep(every) => false,
            _ = stop.wait_for(|stop| *stop) => true,
        };
        let aggregates = if stopping {
            failures.take_all()
        } else {
            let now = u64::try_from(routero_core::unix_now()).unwrap_or(0);
            failures.take_finished(now)
        };
        for aggregate in aggregates {
            if let Err(error) = bus.publish(aggregated(&aggregate, report)).await {
                tracing::error!(%error, "aggregated authentication failures not recorded");
            }
        }
        if stopping {
            return;
        }
    }
}

/// The event of one source's counted failures in one window.
fn aggregated(aggregate: &routero_core::Aggregate, report: FailureReport) -> AuditEvent {
    let mut source = actor(ActorKind::Anonymous, None);
    source.source_ip = aggregate.source.map(|ip| ip.to_string());
    let mut recorded = event(
        UNATTRIBUTED_TENANT,
        report.action,
        source,
        resource(report.resource, None),
        Outcome::Denied,
    );
    recorded.reason_code = Some(report.reason_code.to_owned());
    let window = std::time::UNIX_EPOCH + std::time::Duration::from_secs(aggregate.window_start);
    recorded = with_detail(recorded, "aggregated", true);
    recorded = with_detail(recorded, "count", aggregate.counted);
    with_detail(
        recorded,
        "window",
        humantime::format_rfc3339_seconds(window).to_string(),
    )
}

/// An actor of the given kind and id, with no network details.
pub fn actor(kind: ActorKind, id: Option<String>) -> Actor {
    Actor {
        kind,
        id,
        source_ip: None,
        user_agent: None,
    }
}

/// A resource of `kind` with `id`.
pub fn resource(kind: &str, id: Option<String>) -> Resource {
    Resource {
        kind: kind.to_owned(),
        id,
    }
}

/// Adds one detail to an event.
pub fn with_detail(mut event: AuditEvent, key: &str, value: impl Into<Value>) -> AuditEvent {
    event.details.insert(key.to_owned(), value.into());
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(i: u64) -> AuditEvent {
        with_detail(
            event(
                "t",
                EventType::KeyCreated,
                actor(ActorKind::System, None),
                resource("key", None),
                Outcome::Success,
            ),
            "i",
            i,
        )
    }

    #[tokio::test]
    async fn batches_arrive_in_order() {
        let (bus, mut stream) = in_process(16, Overflow::Block);
        for i in 0..5 {
            bus.publish(sample(i)).await.unwrap();
        }
        let batch = stream.next_batch(3).await.unwrap();
        assert_eq!(
            batch
                .iter()
                .map(|e| e.details["i"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert_eq!(stream.drain_now(10).len(), 2);
        let ids: std::collections::HashSet<_> = batch.iter().map(|e| e.event_id.clone()).collect();
        assert_eq!(ids.len(), 3, "event ids are unique");
        drop(bus);
        assert!(stream.next_batch(3).await.is_none());
    }

    #[tokio::test]
    async fn a_full_bus_refuses_when_failing_closed_and_waits_when_blocking() {
        let (bus, mut stream) = in_process(1, Overflow::FailClosed);
        bus.publish(sample(1)).await.unwrap();
        assert_eq!(bus.publish(sample(2)).await, Err(BusError::Full));
        stream.next_batch(1).await.unwrap();
        bus.publish(sample(3)).await.unwrap();

        let (bus, mut stream) = in_process(1, Overflow::FailClosed);
        let room = bus.reserve().await.unwrap();
        assert_eq!(
            bus.reserve().await.unwrap_err(),
            BusError::Full,
            "reserved room counts as taken"
        );
        room.publish(sample(0));
        assert_eq!(stream.next_batch(1).await.unwrap().len(), 1);

        let (bus, mut stream) = in_process(1, Overflow::Block);
        bus.publish(sample(1)).await.unwrap();
        let waiting = tokio::spawn(async move { bus.publish(sample(2)).await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "blocks while full");
        assert_eq!(stream.next_batch(1).await.unwrap().len(), 1);
        assert_eq!(waiting.await.unwrap(), Ok(()));
    }
}
