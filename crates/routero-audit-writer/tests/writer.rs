//! The writer through the bus: batches chained, duplicates written once, checkpoints signed
//! every N events and at shutdown, and the result verifies.

use std::time::Duration;

use routero_audit::{AuditStore, verify_chain};
use routero_audit_writer::{WriterConfig, run, run_supervised};
use routero_bus::{Overflow, Spool, SpoolSource, Spooled, actor, event, in_process, resource};
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
    writer.await.unwrap();

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

fn key_created(tenant: &str, i: usize) -> routero_core::audit::AuditEvent {
    event(
        tenant,
        EventType::KeyCreated,
        actor(ActorKind::System, None),
        resource("key", Some(format!("k{i}"))),
        Outcome::Success,
    )
}

#[tokio::test]
async fn a_tail_a_crash_left_unsigned_is_signed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = AuditStore::connect(&routero_testkit::databases::sqlite_in(dir.path()))
        .await
        .unwrap();
    let signer = CheckpointSigner::generate().unwrap();
    // A writer died after committing these and before signing them.
    let events: Vec<_> = (0..5).map(|i| key_created("a", i)).collect();
    store.append(&events).await.unwrap();
    assert!(store.load("a").await.unwrap().checkpoints.is_empty());

    let (bus, stream) = in_process(8, Overflow::Block);
    let writer = tokio::spawn(run(
        store.clone(),
        stream,
        signer.clone(),
        WriterConfig {
            checkpoint_interval: Duration::from_secs(3600),
            ..WriterConfig::default()
        },
        std::future::pending(),
    ));
    // No new event arrives, and the next timed checkpoint is an hour away.
    let mut signed = 0;
    for _ in 0..100 {
        signed = store
            .load("a")
            .await
            .unwrap()
            .checkpoints
            .last()
            .map_or(0, |c| c.seq);
        if signed == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(signed, 5, "the leftover tail is signed at start");
    drop(bus);
    writer.await.unwrap();
}

#[tokio::test]
async fn spooled_events_survive_a_writer_that_dies_before_committing() {
    let dir = tempfile::tempdir().unwrap();
    let store = AuditStore::connect(&routero_testkit::databases::sqlite_in(dir.path()))
        .await
        .unwrap();
    let signer = CheckpointSigner::generate().unwrap();
    let spool_dir = dir.path().join("spool");

    // The events reach the spool (each publisher waits until they are on disk); nothing
    // consumes them: the process is gone before its writer ran.
    {
        let (bus, stream) = in_process(8, Overflow::Block);
        let spooled = Spooled::new(Spool::open(&spool_dir, 1 << 20).unwrap());
        let filling = tokio::spawn({
            let spooled = spooled.clone();
            async move { spooled.fill(stream).await }
        });
        for i in 0..20 {
            bus.reserve()
                .await
                .unwrap()
                .publish_durably(key_created("a", i))
                .await;
        }
        drop(bus);
        filling.await.unwrap();
    }

    // The next start delivers them once; the supervised writer ends when the spool is empty
    // and its publishers are gone.
    let (bus, stream) = in_process(8, Overflow::Block);
    let spooled = Spooled::new(Spool::open(&spool_dir, 1 << 20).unwrap());
    let filling = tokio::spawn({
        let spooled = spooled.clone();
        async move { spooled.fill(stream).await }
    });
    drop(bus);
    let (_stop, stopping) = tokio::sync::watch::channel(false);
    run_supervised(
        store.clone(),
        signer.clone(),
        WriterConfig::default(),
        move || Ok(SpoolSource::new(spooled.clone())),
        stopping,
    )
    .await;
    filling.await.unwrap();
    let log = store.load("a").await.unwrap();
    assert_eq!(log.records.len(), 20);
    let verified = log.verify("a", &signer.verifier()).unwrap();
    assert_eq!(verified.signed_through, 20);
    assert_eq!(
        Spool::open(&spool_dir, 1 << 20)
            .unwrap()
            .read_pending(usize::MAX)
            .unwrap()
            .len(),
        0,
        "delivered events leave the spool"
    );
}
