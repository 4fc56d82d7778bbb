//! The audit writer's consumer-group source.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use routero_bus::{BusError, EventSource, rejected};
use routero_core::audit::AuditEvent;

use crate::{KafkaConfig, KafkaError};

/// How long a batch keeps collecting after its first message.
const BATCH_WINDOW: Duration = Duration::from_millis(20);

/// Consumes the events topic in the writer's consumer group. Offsets are committed by
/// [`EventSource::commit`], which the writer calls only after its database commit; a writer
/// that dies before that gets the events again, and the store skips them by event id.
pub struct KafkaSource {
    consumer: StreamConsumer,
    /// Next offset to commit, per (topic, partition).
    positions: BTreeMap<(String, i32), i64>,
    /// Events received for the batch being gathered. Kept here, not in the future gathering
    /// them, so a `next_batch` dropped mid-way (the writer's loop selects it against its
    /// timers) loses nothing: their offsets are already in `positions`, and the next call
    /// returns them.
    taking: Vec<AuditEvent>,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("positions", &self.positions)
            .finish_non_exhaustive()
    }
}

impl KafkaSource {
    /// Joins the consumer group and subscribes to the events topic.
    pub fn subscribe(config: &KafkaConfig) -> Result<Self, KafkaError> {
        let consumer: StreamConsumer = config
            .client()
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "session.timeout.ms",
                config.session_timeout.as_millis().to_string(),
            )
            .set("isolation.level", "read_committed")
            .create()?;
        consumer.subscribe(&[&config.events_topic])?;
        Ok(Self {
            consumer,
            positions: BTreeMap::new(),
            taking: Vec::new(),
        })
    }
}

/// Notes the message's position for the next commit and returns its event.
fn take(positions: &mut BTreeMap<(String, i32), i64>, message: &BorrowedMessage<'_>) -> AuditEvent {
    let next = message.offset() + 1;
    positions
        .entry((message.topic().to_owned(), message.partition()))
        .and_modify(|at| *at = (*at).max(next))
        .or_insert(next);
    let payload = message.payload().unwrap_or_default();
    match serde_json::from_slice::<AuditEvent>(payload) {
        Ok(event) => event,
        Err(error) => {
            let place = format!(
                "{}/{}/{}",
                message.topic(),
                message.partition(),
                message.offset()
            );
            rejected(&place, payload, "not_an_audit_event", &error.to_string())
        }
    }
}

impl EventSource for KafkaSource {
    /// Cancel-safe: a call dropped at any await keeps what it received for the next one.
    async fn next_batch(&mut self, max: usize) -> Option<Vec<AuditEvent>> {
        while self.taking.is_empty() {
            match self.consumer.recv().await {
                Ok(message) => {
                    let taken = take(&mut self.positions, &message);
                    self.taking.push(taken);
                }
                Err(error) => {
                    tracing::warn!(%error, "kafka consume failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        let window = tokio::time::Instant::now() + BATCH_WINDOW;
        while self.taking.len() < max {
            match tokio::time::timeout_at(window, self.consumer.recv()).await {
                Ok(Ok(message)) => {
                    let taken = take(&mut self.positions, &message);
                    self.taking.push(taken);
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "kafka consume failed");
                    break;
                }
                Err(_) => break,
            }
        }
        Some(std::mem::take(&mut self.taking))
    }

    async fn commit(&mut self) -> Result<(), BusError> {
        if self.positions.is_empty() {
            return Ok(());
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), next) in &self.positions {
            offsets
                .add_partition_offset(topic, *partition, Offset::Offset(*next))
                .map_err(|e| BusError::Commit(e.to_string()))?;
        }
        self.consumer
            .commit(&offsets, CommitMode::Async)
            .map_err(|e| BusError::Commit(e.to_string()))?;
        self.positions.clear();
        Ok(())
    }

    /// What a dropped `next_batch` had received; messages not yet received stay in the broker
    /// for the next start.
    fn drain_now(&mut self, max: usize) -> Vec<AuditEvent> {
        let rest = self.taking.split_off(max.min(self.taking.len()));
        std::mem::replace(&mut self.taking, rest)
    }
}
