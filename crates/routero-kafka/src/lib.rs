//! Routero's Kafka adapter (rdkafka with its bundled librdkafka).
//!
//! - [`forward`]: a service's in-process audit bus → an ordered, fsynced disk [`Spool`] → the
//!   events topic (idempotent producer, `acks=all`, keyed by tenant so each tenant's events stay
//!   in order on one partition). A broker outage fills the spool; a full spool stops draining
//!   the bus, whose overflow policy then blocks or refuses requests: nothing is dropped.
//! - [`KafkaSource`]: the audit writer's consumer-group source, committing offsets only after
//!   the writer's database commit.
//! - [`republish`]: chained records re-published to the SIEM topic `routero.audit.v1`.
#![forbid(unsafe_code)]

mod forward;
mod republish;
mod source;

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use thiserror::Error;

pub use forward::forward;
pub use republish::SiemTopic;
pub use source::KafkaSource;

/// The topic services publish audit events to.
pub const EVENTS_TOPIC: &str = "routero.audit.events";
/// The topic chained records are re-published to, for SIEMs.
pub const SIEM_TOPIC: &str = "routero.audit.v1";

/// Errors of the Kafka adapter.
#[derive(Debug, Error)]
pub enum KafkaError {
    /// The broker client refused its configuration or an operation.
    #[error("kafka: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    /// A topic could not be created.
    #[error("creating topic {topic}: {code}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// What the broker said.
        code: RDKafkaErrorCode,
    },
    /// The disk spool failed.
    #[error(transparent)]
    Spool(#[from] routero_bus::SpoolError),
    /// An event could not be serialized.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

/// Where the broker is and how the topics are used.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]`.
    pub brokers: String,
    /// Topic services publish events to.
    pub events_topic: String,
    /// Topic chained records are re-published to.
    pub siem_topic: String,
    /// Consumer group of the audit writers.
    pub group_id: String,
    /// Consumer session timeout (a first join takes about half of it).
    pub session_timeout: Duration,
    /// How long the producer retries one message before handing it back to the spool.
    pub delivery_timeout: Duration,
    /// Partitions of topics created when missing.
    pub partitions: i32,
    /// Replication factor of topics created when missing.
    pub replication: i32,
    /// TLS to the brokers; plaintext when absent.
    pub tls: Option<KafkaTls>,
}

/// TLS to the brokers (librdkafka's, on OpenSSL): the broker's name or address is checked
/// against its certificate.
#[derive(Debug, Clone, Default)]
pub struct KafkaTls {
    /// PEM file of the CAs the brokers' certificates chain to; none: the system's.
    pub ca: Option<std::path::PathBuf>,
    /// PEM files of a client certificate and its key, for brokers that require one.
    pub client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl KafkaConfig {
    /// Defaults for `brokers`: the standard topic names, group `routero-audit-writer`.
    pub fn new(brokers: String) -> Self {
        Self {
            brokers,
            events_topic: EVENTS_TOPIC.into(),
            siem_topic: SIEM_TOPIC.into(),
            group_id: "routero-audit-writer".into(),
            session_timeout: Duration::from_secs(10),
            delivery_timeout: Duration::from_secs(30),
            partitions: 12,
            replication: 3,
            tls: None,
        }
    }

    fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "routero");
        if let Some(tls) = &self.tls {
            config
                .set("security.protocol", "ssl")
                .set("ssl.endpoint.identification.algorithm", "https");
            if let Some(ca) = &tls.ca {
                config.set("ssl.ca.location", ca.display().to_string());
            }
            if let Some((cert, key)) = &tls.client {
                config
                    .set("ssl.certificate.location", cert.display().to_string())
                    .set("ssl.key.location", key.display().to_string());
            }
        }
        config
    }

    /// An idempotent producer with `acks=all`, partitioning by key as Java clients do.
    fn producer(&self) -> ClientConfig {
        let mut config = self.client();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .set(
                "message.timeout.ms",
                self.delivery_timeout.as_millis().to_string(),
            );
        config
    }
}

/// Creates the events and SIEM topics if they do not exist.
pub async fn ensure_topics(config: &KafkaConfig) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = config.client().create()?;
    let topics = [&config.events_topic, &config.siem_topic].map(|name| {
        NewTopic::new(
            name,
            config.partitions,
            TopicReplication::Fixed(config.replication),
        )
    });
    // A broker that cannot be reached (or refuses the handshake) fails the start in 20 s
    // rather than librdkafka's default minute.
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(20)));
    for result in admin.create_topics(&topics, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(KafkaError::CreateTopic { topic, code }),
        }
    }
    Ok(())
}

/// What [`send_in_order`] achieved.
#[derive(Debug, Clone, Copy)]
struct Sent {
    /// How many messages, from the first, the broker acknowledged without a gap.
    delivered: usize,
    /// Why the next one was not, when the broker or the client said.
    refused: Option<RDKafkaErrorCode>,
}

/// Sends `(key, payload)` messages and waits for every acknowledgement.
async fn send_in_order<'a>(
    producer: &FutureProducer,
    topic: &str,
    messages: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Sent {
    let mut deliveries = Vec::new();
    let mut refused = None;
    for (key, payload) in messages {
        match producer.send_result(FutureRecord::to(topic).key(key).payload(payload)) {
            Ok(delivery) => deliveries.push(delivery),
            Err((error, _)) => {
                tracing::warn!(%error, "kafka producer queue refused a message");
                refused = error.rdkafka_error_code();
                break;
            }
        }
    }
    let mut delivered = 0;
    for delivery in deliveries {
        match delivery.await {
            Ok(Ok(_)) => delivered += 1,
            Ok(Err((error, _))) => {
                tracing::warn!(%error, "kafka delivery failed");
                return Sent {
                    delivered,
                    refused: error.rdkafka_error_code(),
                };
            }
            Err(_) => {
                return Sent {
                    delivered,
                    refused: None,
                };
            }
        }
    }
    Sent { delivered, refused }
}
