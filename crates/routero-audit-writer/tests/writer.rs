//! The writer through the bus: batches chained, duplicates written once, checkpoints signed
//! every N events and at shutdown, and the result verifies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use routero_audit::{AuditStore, verify_chain};
use routero_audit_writer::{WriterConfig, run};
use routero_bus::{Overflow, actor, event, in_process, resource};
use routero_core::audit::{ActorKind, EventType, Outcome};
use routero_crypto::CheckpointSigner;

#[tokio::test]
async fn events_are_chained_checkpointed_and_drained_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let store = AuditStore::connect(&routero_testkit::databases::sqlite_in(dir.path()))
        .await
        .unwrap();
    let signer = CheckpointSigner::generate().unwrap();
    let (bus, stream) = in_process(64, Overflow::Block);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = WriterConfig {
        batch_size: 2,
        checkpoint_every: 3,
        checkpoint_interval: Duration::from_secs(3600),
        ..WriterConfig::default()
    };
    let writer = tokio::spawn(run(store.clone(), stream, signer.clone(), config, async {
        let _ = stopped.await;
    }));

    let mut sent = Vec::new();
    for i in 0..7 {
        let tenant = if i % 2 == 0 { "a" } else { "b" };
        let e = event(
            tenant,
            EventType::KeyCreated,
            actor(ActorKind::System, None),
            resource("key", Some(format!("k{i}"))),
            Outcome::Success,
        );
        sent.push(e.clone());
        bus.publish(e).await.unwrap();
    }
    bus.publish(sent[0].clone()).await.unwrap(); // redelivered
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.send(()).unwrap();
    writer.await.unwrap().unwrap();

    let a = store.load("a").await.unwrap();
    let b = store.load("b").await.unwrap();
    assert_eq!(
        (a.records.len(), b.records.len()),
        (4, 3),
        "every event once"
    );
    assert!(
        a.checkpoints.len() >= 2,
        "a checkpoint every 3 records plus one at shutdown"
    );
    assert_eq!(
        a.checkpoints.last().unwrap().seq,
        4,
        "shutdown signs the head"
    );
    for (tenant, log) in [("a", &a), ("b", &b)] {
        let verified = verify_chain(
            tenant,
            &log.records,
            &log.checkpoints,
            None,
            &signer.verifier(),
        )
        .unwrap();
        assert_eq!(verified.signed_through, verified.last_seq);
    }
    assert_eq!(a.records[0].event, sent[0]);
}
