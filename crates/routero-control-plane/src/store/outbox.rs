//! The audit outbox: the events recording an admin mutation are written in the mutation's own
//! transaction, so no change commits unrecorded and no record exists for a change that did
//! not commit. [`crate::outbox`] forwards them to the audit pipeline and deletes them.

use routero_core::audit::AuditEvent;
use sqlx::{Any, Row, Transaction};

use super::{Result, Store, now_unix};
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
        if !self.outbox {
            return Ok(());
        }
        for event in events {
            let text = serde_json::to_string(event)
                .map_err(|e| ControlPlaneError::Corrupt(format!("audit event: {e}")))?;
            sqlx::query("INSERT INTO audit_outbox (event, created_at) VALUES ($1, $2)")
                .bind(text)
                .bind(now_unix())
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

    /// Raised after events were written to the outbox.
    pub fn outbox_filled(&self) -> &tokio::sync::Notify {
        &self.outbox_filled
    }

    /// The oldest events waiting in the outbox, with their places, at most `limit`.
    pub async fn outbox(&self, limit: u32) -> Result<Vec<(i64, AuditEvent)>> {
        sqlx::query("SELECT seq, event FROM audit_outbox ORDER BY seq LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                let event: String = row.try_get("event")?;
                let event = serde_json::from_str(&event)
                    .map_err(|e| ControlPlaneError::Corrupt(format!("outbox event: {e}")))?;
                Ok((row.try_get("seq")?, event))
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

    /// From now on, mutations write the events recording them into the outbox.
    pub fn with_outbox(mut self) -> Self {
        self.outbox = true;
        self
    }
}
