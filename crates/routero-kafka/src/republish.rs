//! The SIEM topic: chained records and the checkpoints over them re-published for SIEMs, keyed
//! by tenant so that each tenant's chain arrives in order, one export line per message.

use rdkafka::producer::FutureProducer;
use routero_audit_writer::{Batch, Sink};

use crate::{KafkaConfig, KafkaError, send_in_order};

/// A [`Sink`] producing to the SIEM topic.
pub struct SiemTopic {
    producer: FutureProducer,
    topic: String,
}

impl SiemTopic {
    /// An idempotent producer for `config.siem_topic`.
    pub fn new(config: &KafkaConfig) -> Result<Self, KafkaError> {
        Ok(Self {
            producer: config.producer().create()?,
            topic: config.siem_topic.clone(),
        })
    }
}

impl Sink for SiemTopic {
    async fn deliver(&self, batch: Batch<'_>) -> Result<(), String> {
        let lines = batch
            .lines()
            .iter()
            .map(serde_json::to_vec)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let messages = lines
            .iter()
            .map(|line| (batch.tenant_id.as_bytes(), line.as_slice()));
        let sent = send_in_order(&self.producer, &self.topic, messages).await;
        if sent.delivered == lines.len() {
            Ok(())
        } else {
            Err(format!(
                "{} of {} lines acknowledged by the broker",
                sent.delivered,
                lines.len()
            ))
        }
    }
}
