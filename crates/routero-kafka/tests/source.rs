//! The audit writer's Kafka source against a real Kafka-protocol broker (tansu): a batch cut
//! short while it gathers (the writer selects it against its timers) loses nothing.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use routero_bus::{EventSource as _, actor, event, resource};
use routero_core::audit::{ActorKind, EventType, Outcome};
use routero_kafka::{KafkaConfig, KafkaSource, ensure_topics};
use routero_testkit::broker::Tansu;

#[tokio::test]
async fn a_batch_dropped_while_it_gathers_loses_nothing() {
    let broker = Tansu::start().expect("tansu");
    let mut config = KafkaConfig::new(broker.address().to_owned());
    config.partitions = 1;
    config.replication = 1;
    config.session_timeout = Duration::from_secs(6);
    ensure_topics(&config).await.expect("topics");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .create()
        .expect("producer");
    let mut sent = Vec::new();
    for _ in 0..20 {
        let sample = event(
            "tenant-a",
            EventType::RequestRouted,
            actor(ActorKind::VirtualKey, Some("key_1".into())),
            resource("model", Some("gpt-a".into())),
            Outcome::Success,
        );
        let payload = serde_json::to_vec(&sample).expect("json");
        producer
            .send(
                FutureRecord::to(&config.events_topic)
                    .key("tenant-a")
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .expect("delivered");
        sent.push(sample.event_id);
    }
    let mut source = KafkaSource::subscribe(&config).expect("consumer");
    // Calls cut short at 5 ms (inside the 20 ms a batch gathers for once it has its first
    // event), until the source has taken events (its Debug shows the positions it took)...
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut received = Vec::new();
    while !format!("{source:?}").contains(&config.events_topic) {
        assert!(Instant::now() < deadline, "the source never took an event");
        let cut = tokio::time::timeout(Duration::from_millis(5), source.next_batch(100)).await;
        received.extend(cut.into_iter().flatten().flatten().map(|e| e.event_id));
    }
    // ...then calls given time: what the cut ones had taken comes back, once, in order.
    while received.len() < sent.len() && Instant::now() < deadline {
        let whole = tokio::time::timeout(Duration::from_secs(1), source.next_batch(100)).await;
        received.extend(whole.into_iter().flatten().flatten().map(|e| e.event_id));
    }
    assert_eq!(received, sent, "every event, once, in order");
}
