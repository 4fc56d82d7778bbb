//! The SIEM topic: chained records re-published for SIEMs, keyed by tenant so that each
//! tenant's chain arrives in order, one JSON record per message (the export's record line).

use rdkafka::producer::FutureProducer;
use routero_audit::{ChainedRecord, ExportLine};
use routero_audit_writer::Sink;

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
    async fn deliver(&self, tenant_id: &str, records: &[ChainedRecord]) -> Result<(), String> {
        let lines = records
            .iter()
            .map(|record| serde_json::to_vec(&ExportLine::Record(Box::new(record.clone()))))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let messages = lines
            .iter()
            .map(|line| (tenant_id.as_bytes(), line.as_slice()));
        let delivered = send_in_order(&self.producer, &self.topic, messages).await;
        if delivered == records.len() {
            Ok(())
        } else {
            Err(format!(
                "{delivered} of {} records acknowledged by the broker",
                records.len()
            ))
        }
    }
}
