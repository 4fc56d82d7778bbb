//! The audit outbox: the events recording an admin mutation are written in the mutation's own
//! transaction, so no change commits unrecorded and no record exists for a change that did
//! not commit. [`crate::outbox`] forwards them to the audit pipeline and deletes them.

use routero_core::audit::AuditEvent;
use routero_crypto::MessageKey;
use sqlx::{Any, Row, Transaction};

use super::{Result, Store};
use crate::ControlPlaneError;

/// The events recording a change; those naming no resource are given the id of the row the
/// change created.
pub(crate) fn naming(mut events: Vec<AuditEvent>, id: &str) -> Vec<AuditEvent> {
    for event in &mut events {
        event.resource.id.get_or_insert_with(|| id.to_owned());
    }
    events
}

impl Store {
    /// Writes `events` into the outbox inside `tx` (nothing when auditing is off).
    pub(crate) async fn record(
        &self,
        tx: &mut Transaction<'_, Any>,
        events: &[AuditEvent],
    ) -> Result<()> {
        let Some(key) = &self.outbox else {
            return Ok(());
        };
        for event in events {
            let text = serde_json::to_string(event)
                .map_err(|e| ControlPlaneError::Corrupt(format!("audit event: {e}")))?;
            let mac = hex::encode(key.tag(text.as_bytes()));
            sqlx::query("INSERT INTO audit_outbox (event, mac, created_at) VALUES ($1, $2, $3)")
                .bind(text)
                .bind(mac)
                .bind(routero_core::unix_now())
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Commits a change that data planes do not see, with the events recording it.
    pub(crate) async fn commit_recorded(
        &self,
        mut tx: Transaction<'_, Any>,
        events: &[AuditEvent],
    ) -> Result<()> {
        self.record(&mut tx, events).await?;
        tx.commit().await?;
        self.outbox_filled.notify_one();
        Ok(())
    }

    /// Commits events recording a change that lives in the audit trail itself (a tenant's
    /// retention): the outbox is the change.
    pub async fn record_events(&self, events: &[AuditEvent]) -> Result<()> {
        let tx = self.pool.begin().await?;
        self.commit_recorded(tx, events).await
    }

    /// Raised after events were written to the outbox.
    pub fn outbox_filled(&self) -> &tokio::sync::Notify {
        &self.outbox_filled
    }

    /// The oldest rows waiting in the outbox, at most `limit`: each event this control plane
    /// wrote, or, for a row it did not write (its tag does not verify) or cannot read, what
    /// records it instead (`audit.message_rejected`, its digest, never its bytes).
    pub async fn outbox(&self, limit: u32) -> Result<Vec<(i64, AuditEvent)>> {
        let key = self.outbox.as_ref();
        sqlx::query("SELECT seq, event, mac FROM audit_outbox ORDER BY seq LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                let seq: i64 = row.try_get("seq")?;
                let text: String = row.try_get("event")?;
                let mac: String = row.try_get("mac")?;
                let tagged = key.is_some_and(|key| {
                    hex::decode(&mac).is_ok_and(|mac: Vec<u8>| {
                        key.verify_parts(&[text.as_bytes()], &mac).is_ok()
                    })
                });
                let place = format!("outbox/{seq}");
                let event = match serde_json::from_str::<AuditEvent>(&text) {
                    Ok(event) if tagged => event,
                    Ok(_) => routero_bus::rejected(
                        &place,
                        text.as_bytes(),
                        "not_written_here",
                        "the row's tag does not verify",
                    ),
                    Err(error) => routero_bus::rejected(
                        &place,
                        text.as_bytes(),
                        "not_an_audit_event",
                        &error.to_string(),
                    ),
                };
                Ok((seq, event))
            })
            .collect()
    }

    /// Deletes the outbox's events through `seq`: they are in the audit pipeline.
    pub async fn forwarded(&self, seq: i64) -> Result<()> {
        sqlx::query("DELETE FROM audit_outbox WHERE seq <= $1")
            .bind(seq)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// From now on, mutations write the events recording them into the outbox, tagged with
    /// `key` (derived from the pepper, which the database never holds).
    pub fn with_outbox(mut self, key: MessageKey) -> Self {
        self.outbox = Some(key);
        self
    }
}
