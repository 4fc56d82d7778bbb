//! The spool's bound with no broker reachable: events are kept, never dropped, and once spool
//! and bus are full the bus's overflow policy decides: refuse (fail closed) or wait (block).
#![expect(clippy::expect_used)]

use std::time::Duration;

use routero_bus::{EventBus, Overflow, Spool, actor, event, in_process, resource};
use routero_core::audit::{ActorKind, EventType, Outcome};
use routero_kafka::{KafkaConfig, forward};

/// Nothing listens on port 1.
fn unreachable_broker() -> KafkaConfig {
    let mut config = KafkaConfig::new("127.0.0.1:1".into());
    config.delivery_timeout = Duration::from_secs(1);
    config
}

fn sample() -> routero_core::audit::AuditEvent {
    event(
        "tenant-a",
        EventType::RequestRouted,
        actor(ActorKind::VirtualKey, Some("key_1".into())),
        resource("model", Some("gpt-a".into())),
        Outcome::Success,
    )
}

/// How a full pipeline answered a publisher.
#[derive(Debug, PartialEq, Eq)]
enum Full {
    /// It refused at once.
    Refused,
    /// It made the publisher wait (500 ms, and counting).
    Waited,
}

/// Publishes until the bus refuses or makes the publisher wait; returns how many it took and
/// which of the two stopped it.
async fn fill(bus: &EventBus) -> (usize, Full) {
    let mut accepted = 0;
    loop {
        match tokio::time::timeout(Duration::from_millis(500), bus.reserve()).await {
            Ok(Ok(room)) => {
                room.publish(sample());
                accepted += 1;
                // Let the forwarder move events from the bus into the spool.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok(Err(_)) => return (accepted, Full::Refused),
            Err(_) => return (accepted, Full::Waited),
        }
        assert!(accepted < 10_000, "the bound never applied");
    }
}

async fn spool_bound_applies(overflow: Overflow) {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(dir.path(), 4096).expect("spool");
    let (bus, stream) = in_process(8, overflow);
    let forwarder = tokio::spawn(forward(stream, spool, unreachable_broker()));
    let (accepted, full) = fill(&bus).await;
    assert!(
        accepted > 8,
        "the spool took events beyond the bus ({accepted})"
    );
    match overflow {
        Overflow::FailClosed => {
            assert_eq!(full, Full::Refused, "a full pipeline refuses");
            assert!(bus.reserve().await.is_err(), "and goes on refusing");
        }
        Overflow::Block => assert_eq!(full, Full::Waited, "a full pipeline waits, never refuses"),
    }
    drop(bus);
    forwarder.await.expect("join").expect("forward");

    // Everything accepted is on disk for the next start, in order, none lost.
    let reopened = Spool::open(dir.path(), 4096).expect("reopen");
    let spooled = reopened.read_pending(usize::MAX).expect("read");
    assert_eq!(spooled.len(), accepted);
}

#[tokio::test]
async fn failing_closed_refuses_once_spool_and_bus_are_full() {
    spool_bound_applies(Overflow::FailClosed).await;
}

#[tokio::test]
async fn blocking_waits_once_spool_and_bus_are_full() {
    spool_bound_applies(Overflow::Block).await;
}
