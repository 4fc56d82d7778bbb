//! The audit pipeline of separate processes, over Kafka: control and data planes publish
//! through a local spool; `routero audit-writer` chains what it consumes and re-publishes it
//! for SIEMs.

use anyhow::{Context, Result};
use routero_audit_writer::SinkConfig;
use routero_bus::{EventBus, Spool};
use routero_crypto::CheckpointSigner;
use routero_kafka::{KafkaSource, SiemTopic};
use tokio::task::JoinHandle;

use crate::export::Sinks;
use crate::settings::{Secret, Settings};
use crate::shutdown_signal;

/// Events a service's in-process bus holds while the spool is being written.
const BUS_CAPACITY: usize = 10_000;

/// A service's audit bus, forwarded to Kafka, when `kafka_brokers` is set. The forwarder ends
/// when the service drops its bus, after giving the spool a few seconds to empty.
///
/// A service without an audit destination does not start, unless the operator set the
/// development switch `allow_unaudited`, which is logged at every start.
pub fn service_bus(settings: &Settings) -> Result<Option<(EventBus, JoinHandle<()>)>> {
    let Some(kafka) = settings.kafka()? else {
        anyhow::ensure!(
            settings.allow_unaudited(),
            "kafka_brokers is required: without it this service would record no audit events \
             (set ROUTERO_KAFKA_BROKERS; for development only, ROUTERO_ALLOW_UNAUDITED=true)"
        );
        tracing::warn!(
            "UNAUDITED: kafka_brokers is not set and allow_unaudited is on; this process records no audit events"
        );
        return Ok(None);
    };
    let (dir, max_bytes) = settings.audit_spool(None)?;
    let spool = Spool::open(&dir, max_bytes)
        .with_context(|| format!("opening the audit spool in {}", dir.display()))?;
    let (bus, stream) = routero_bus::in_process(BUS_CAPACITY, settings.audit_overflow()?);
    let forwarder = tokio::spawn(async move {
        if let Err(error) = routero_kafka::forward(stream, spool, kafka).await {
            tracing::error!(%error, "audit forwarder stopped");
        }
    });
    Ok(Some((bus, forwarder)))
}

/// `routero audit-writer`: consumes the events topic in a consumer group, chains and stores
/// the events, signs checkpoints, and feeds the SIEM topic (and webhook, when configured).
pub async fn audit_writer(settings: Settings) -> Result<()> {
    let kafka = settings
        .kafka()?
        .context("kafka_brokers is required: the audit writer consumes the events topic")?;
    let url = settings
        .audit_database_url
        .as_deref()
        .context("audit_database_url is required (set ROUTERO_AUDIT_DATABASE_URL)")?;
    let seed = settings
        .audit_signing_key
        .as_ref()
        .map(Secret::expose)
        .context("audit_signing_key is required (set ROUTERO_AUDIT_SIGNING_KEY)")?;
    let signer = CheckpointSigner::from_base64(seed).context("audit_signing_key")?;
    routero_kafka::ensure_topics(&kafka)
        .await
        .context("creating the audit topics")?;
    let store = settings
        .audit_store(url)
        .await?
        .with_record_key(signer.record_key()?);
    // Fail at start on a configuration the broker client refuses.
    drop(KafkaSource::subscribe(&kafka)?);
    let siem = SiemTopic::new(&kafka)?;
    tracing::info!(brokers = %kafka.brokers, topic = %kafka.events_topic, siem = %kafka.siem_topic, "audit writer consuming");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut sinks = Sinks::start(&settings, &store, &stop_rx)?;
    let shutdown = sinks.shutdown();
    sinks.spawn(routero_audit_writer::run_sink(
        store.clone(),
        siem,
        SinkConfig::new(&format!("kafka:{}", kafka.siem_topic)),
        shutdown,
    ));
    let config = settings.audit_writer()?;
    // `/metrics` and `/healthz` (the writer has no other listener).
    if let Some(addr) = settings.metrics_addr {
        let metrics = std::sync::Arc::clone(&config.metrics);
        let mut stop = stop_rx.clone();
        routero_http::metrics::serve(
            addr,
            std::sync::Arc::new(move || metrics.render()),
            async move {
                let _ = stop.changed().await;
            },
        )
        .await
        .map_err(anyhow::Error::msg)?;
    }
    let (writer_stop, stopping) = tokio::sync::watch::channel(false);
    let writer = routero_audit_writer::run_supervised(
        store,
        signer,
        config,
        || KafkaSource::subscribe(&kafka).map_err(|e| e.to_string()),
        stopping,
    );
    tokio::pin!(writer);
    tokio::select! {
        () = &mut writer => {}
        () = shutdown_signal() => {
            let _ = writer_stop.send(true);
            writer.await;
        }
    }
    let _ = stop_tx.send(true);
    sinks.join().await
}
