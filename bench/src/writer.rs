//! The audit writer's throughput, whole: events published on the in-process bus, moved into
//! the fsynced spool, read back by the writer, chained, committed and checkpointed — the path
//! an event takes in `routero up` — on SQLite and (when reachable) PostgreSQL.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use routero_audit_writer::WriterConfig;
use routero_bus::{Overflow, Spool, SpoolSource, Spooled};
use routero_core::audit::{ActorKind, AuditEvent, EventType, Outcome};
use routero_crypto::CheckpointSigner;
use serde_json::Value;

/// Tenants the events are spread over (each its own chain).
const TENANTS: usize = 8;

/// An event shaped as the data plane's `request.routed`.
fn routed(i: usize) -> AuditEvent {
    let mut event = routero_bus::event(
        &format!("tenant-{}", i % TENANTS),
        EventType::RequestRouted,
        routero_bus::actor(ActorKind::VirtualKey, Some(format!("key_{:08}", i % 1000))),
        routero_bus::resource("model", Some("bench".into())),
        Outcome::Success,
    );
    event.request_id = Some(format!("req_{i:016x}"));
    event.policy_version = Some("v42".into());
    event
        .details
        .insert("endpoint".into(), Value::from("/v1/chat/completions"));
    event.details.insert("status".into(), Value::from(200));
    event
}

/// A PostgreSQL database for the run, dropped when this is.
struct Scratch {
    server: String,
    name: String,
}

impl Scratch {
    fn create() -> Option<Self> {
        let server = std::env::var("ROUTERO_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let name = format!("routero_bench_{}", std::process::id());
        let created = Command::new("psql")
            .args([
                &format!("{server}/postgres"),
                "-qc",
                &format!("CREATE DATABASE {name}"),
            ])
            .status()
            .is_ok_and(|s| s.success());
        created.then_some(Self { server, name })
    }

    fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                &format!("{}/postgres", self.server),
                "-qc",
                &format!("DROP DATABASE {} WITH (FORCE)", self.name),
            ])
            .status();
    }
}

/// Seconds from the first event published to the writer's last checkpoint, for `events`
/// events through bus → spool → chain → store → checkpoint on the store at `url`.
async fn whole_writer(url: &str, spool_dir: &std::path::Path, events: usize) -> Result<Duration> {
    let signer = CheckpointSigner::generate()?;
    let store = routero_audit::AuditStore::connect(url)
        .await?
        .with_record_key(signer.record_key()?);
    let batch: Vec<AuditEvent> = (0..events).map(routed).collect();
    let (bus, stream) = routero_bus::in_process(4096, Overflow::Block);
    let spooled = Spooled::new(Spool::open(spool_dir, 256 << 20)?);
    let start = Instant::now();
    let filling = tokio::spawn({
        let spooled = spooled.clone();
        async move { spooled.fill(stream).await }
    });
    let writer = tokio::spawn(routero_audit_writer::run(
        store.clone(),
        SpoolSource::new(spooled),
        signer,
        WriterConfig::default(),
        std::future::pending(),
    ));
    for event in batch {
        bus.publish(event).await?;
    }
    drop(bus);
    filling.await?;
    writer.await?;
    let elapsed = start.elapsed();
    // What was measured is what was written: every event, every tenant's head signed.
    let (mut records, tenants) = (0, store.tenants().await?);
    anyhow::ensure!(
        tenants.len() == TENANTS,
        "{} chains written of {TENANTS}",
        tenants.len()
    );
    for tenant in tenants {
        let log = store.load(&tenant).await?;
        let head = log.records.last().map(|r| r.seq);
        anyhow::ensure!(
            log.checkpoints.last().map(|c| c.seq) == head,
            "{tenant}'s head is not checkpointed"
        );
        records += log.records.len();
    }
    anyhow::ensure!(records == events, "{records} records written of {events}");
    Ok(elapsed)
}

/// One line for the README: events per second of the whole writer, per database.
pub async fn throughput(events: usize) -> Result<String> {
    let dir = std::env::temp_dir().join(format!("routero-bench-audit-{}", std::process::id()));
    let scratch = Scratch::create();
    let mut targets = vec![(
        "SQLite",
        format!("sqlite://{}", dir.join("audit.db").display()),
    )];
    if let Some(scratch) = &scratch {
        targets.push(("PostgreSQL", scratch.url()));
    }
    let mut line = format!(
        "\nAudit writer throughput, whole ({events} events over {TENANTS} tenants published on the bus, \
         spooled with fsync, chained, committed and checkpointed):"
    );
    for (label, url) in targets {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let elapsed = whole_writer(&url, &dir.join("spool"), events)
            .await
            .with_context(|| format!("audit writer on {label}"))?;
        let rate = events as f64 / elapsed.as_secs_f64();
        line.push_str(&format!(" {label} {rate:.0} events/s;"));
    }
    let _ = std::fs::remove_dir_all(&dir);
    line.pop();
    line.push_str(".\n");
    Ok(line)
}
