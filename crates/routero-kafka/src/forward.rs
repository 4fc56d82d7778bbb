//! Bus → spool → events topic.

use std::borrow::Cow;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, Producer as _};
use rdkafka::types::RDKafkaErrorCode;
use routero_bus::spool::Spooled as Line;
use routero_bus::{EventStream, Spool, Spooled, rejected};
use routero_core::audit::UNATTRIBUTED_TENANT;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::{KafkaConfig, KafkaError, send_in_order};

/// Spooled lines sent to the broker at a time.
const BATCH: usize = 2048;
/// How long shutdown waits for the spool to empty (what is left is sent at the next start).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Forwards events from the bus through `spool` to the events topic until every publisher is
/// gone, then gives delivery a few seconds to empty the spool (what is left is sent at the
/// next start).
pub async fn forward(
    stream: EventStream,
    spool: Spool,
    config: KafkaConfig,
) -> Result<(), KafkaError> {
    let spooled = Spooled::new(spool);
    let deliverer = tokio::spawn(deliver_forever(spooled.clone(), config));
    spooled.fill(stream).await;
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while spooled.pending_bytes() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    deliverer.abort();
    let left = spooled.pending_bytes();
    if left > 0 {
        tracing::warn!(
            bytes = left,
            "audit events left in the spool; they are sent at the next start"
        );
    }
    Ok(())
}

#[derive(Deserialize)]
struct TenantOf<'a> {
    #[serde(borrow)]
    tenant_id: Cow<'a, str>,
}

/// Whether the broker (or the client, before sending) will never take this message, however
/// often it is retried.
fn is_permanent(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidRecord
    )
}

async fn deliver_forever(spooled: Spooled, config: KafkaConfig) {
    let mut producer: Option<FutureProducer> = None;
    let mut backoff = Duration::from_millis(100);
    while let Some(pending) = spooled.pending(BATCH).await {
        let ready = match producer.take() {
            Some(ready) => ready,
            None => match config.producer().create::<FutureProducer>() {
                Ok(created) => created,
                Err(error) => {
                    tracing::error!(%error, "kafka producer not created; retrying");
                    back_off(&mut backoff).await;
                    continue;
                }
            },
        };
        let keys: Vec<Cow<'_, str>> = pending.iter().map(tenant_of).collect();
        let sent = send_in_order(
            &ready,
            &config.events_topic,
            keys.iter()
                .zip(&pending)
                .map(|(key, line)| (key.as_bytes(), line.line.as_slice())),
        )
        .await;
        let mut acknowledged = sent.delivered.checked_sub(1).and_then(|i| pending.get(i));
        let mut replaced = false;
        let refused = pending
            .get(sent.delivered)
            .filter(|_| sent.refused.is_some_and(is_permanent));
        let mut ready = ready;
        if let Some(line) = refused {
            // Never retried forever ahead of the rest: what replaces it is small and says
            // what it was. It goes through a fresh producer: the one that met the refusal may
            // hold what follows while it recovers (an idempotent producer bumps its epoch).
            match config.producer().create::<FutureProducer>() {
                Ok(fresh) => {
                    ready = fresh;
                    replaced = replace(&ready, &config, line, sent.refused).await;
                }
                Err(error) => tracing::error!(%error, "kafka producer not created; retrying"),
            }
            if replaced {
                acknowledged = Some(line);
            }
        }
        if let Some(end) = acknowledged.map(|line| line.end)
            && let Err(error) = spooled.acknowledge(end).await
        {
            tracing::error!(%error, "audit spool acknowledge failed");
        }
        if sent.delivered < pending.len() && !replaced {
            spooled.delivery_failed();
            tracing::warn!(
                delivered = sent.delivered,
                pending = pending.len(),
                "kafka delivery incomplete; retrying from the spool"
            );
            // An idempotent producer that hit a fatal error cannot be used again.
            if ready.client().fatal_error().is_none() {
                producer = Some(ready);
            }
            back_off(&mut backoff).await;
        } else {
            producer = Some(ready);
            backoff = Duration::from_millis(100);
        }
    }
}

/// Sends `audit.message_rejected` (digest and size, never the bytes) in place of a line the
/// broker will never take; true once the broker has it.
async fn replace(
    producer: &FutureProducer,
    config: &KafkaConfig,
    line: &Line,
    code: Option<RDKafkaErrorCode>,
) -> bool {
    let place = format!("spool/{}", hex::encode(Sha256::digest(&line.line)));
    let reason = code.map_or_else(String::new, |c| c.to_string());
    let replacement = rejected(&place, &line.line, "refused_by_broker", &reason);
    let Ok(payload) = serde_json::to_vec(&replacement) else {
        return false;
    };
    let tenant = tenant_of(line);
    send_in_order(
        producer,
        &config.events_topic,
        [(tenant.as_bytes(), payload.as_slice())],
    )
    .await
    .delivered
        == 1
}

/// The line's tenant, the key that keeps each tenant's events in order on one partition.
fn tenant_of(line: &Line) -> Cow<'_, str> {
    serde_json::from_slice::<TenantOf<'_>>(&line.line)
        .map_or(Cow::Borrowed(UNATTRIBUTED_TENANT), |t| t.tenant_id)
}

/// Waits `backoff`, then doubles it up to 10 s.
async fn back_off(backoff: &mut Duration) {
    tokio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(Duration::from_secs(10));
}
