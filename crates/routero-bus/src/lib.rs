//! The event bus: services publish [`AuditEvent`]s, the audit writer consumes them in batches.
//!
//! This crate holds the in-process adapter used by `routero up`: a bounded channel. What
//! happens when it is full is configured ([`Overflow`]): wait for room, or refuse so the caller
//! can fail closed. Events are never dropped silently.
#![forbid(unsafe_code)]

use std::future::Future;
use std::time::SystemTime;

use routero_core::audit::{Actor, ActorKind, AuditEvent, EventType, Outcome, Resource};
use serde_json::{Map, Value};
use thiserror::Error;
use tokio::sync::mpsc;

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
    /// Waits for events and returns up to `max`; `None` when the source has ended.
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

/// The publishing side; cheap to clone.
#[derive(Debug, Clone)]
pub struct EventBus {
    sender: mpsc::Sender<AuditEvent>,
    overflow: Overflow,
}

/// Room for one event, taken before the work it records, so that the work is refused when it
/// could not be recorded.
#[derive(Debug)]
pub struct Reservation(mpsc::OwnedPermit<AuditEvent>);

impl Reservation {
    /// Publishes the event into the reserved room; cannot fail.
    pub fn publish(self, event: AuditEvent) {
        self.0.send(event);
    }
}

/// The consuming side.
#[derive(Debug)]
pub struct EventStream {
    receiver: mpsc::Receiver<AuditEvent>,
}

/// An in-process bus holding up to `capacity` events.
pub fn in_process(capacity: usize, overflow: Overflow) -> (EventBus, EventStream) {
    let (sender, receiver) = mpsc::channel(capacity.max(1));
    (EventBus { sender, overflow }, EventStream { receiver })
}

impl EventBus {
    /// Publishes one event.
    pub async fn publish(&self, event: AuditEvent) -> Result<(), BusError> {
        match self.overflow {
            Overflow::Block => self.sender.send(event).await.map_err(|_| BusError::Closed),
            Overflow::FailClosed => self.sender.try_send(event).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => BusError::Full,
                mpsc::error::TrySendError::Closed(_) => BusError::Closed,
            }),
        }
    }
}

impl EventBus {
    /// Reserves room for one event, waiting or refusing per the overflow policy.
    pub async fn reserve(&self) -> Result<Reservation, BusError> {
        let sender = self.sender.clone();
        let permit = match self.overflow {
            Overflow::Block => sender.reserve_owned().await.map_err(|_| BusError::Closed)?,
            Overflow::FailClosed => sender.try_reserve_owned().map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => BusError::Full,
                mpsc::error::TrySendError::Closed(_) => BusError::Closed,
            })?,
        };
        Ok(Reservation(permit))
    }
}

impl EventStream {
    /// Whether every publisher is gone (events may still be queued).
    pub fn is_closed(&self) -> bool {
        self.receiver.is_closed()
    }
}

impl EventSource for EventStream {
    async fn next_batch(&mut self, max: usize) -> Option<Vec<AuditEvent>> {
        let mut batch = Vec::with_capacity(max.min(1024));
        let received = self.receiver.recv_many(&mut batch, max.max(1)).await;
        (received > 0).then_some(batch)
    }

    /// In process there is nothing to acknowledge.
    async fn commit(&mut self) -> Result<(), BusError> {
        Ok(())
    }

    fn drain_now(&mut self, max: usize) -> Vec<AuditEvent> {
        let mut batch = Vec::new();
        while batch.len() < max {
            match self.receiver.try_recv() {
                Ok(event) => batch.push(event),
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
