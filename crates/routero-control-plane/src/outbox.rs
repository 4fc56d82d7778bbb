//! Forwards the audit outbox to the audit pipeline. Each event is published and on disk in the
//! spool behind the bus before its row is deleted; a crash in between publishes it again, and
//! the audit writer skips it by event id. A full bus (failing closed) leaves the events in the
//! outbox until there is room: the changes are committed and their events are never lost.

use std::time::Duration;

use routero_bus::EventBus;
use tokio::sync::watch;

use crate::store::Store;

/// Events forwarded per round.
const BATCH: u32 = 256;

/// Forwards until `stop` turns true, then forwards what is left and returns.
pub(crate) async fn forward(store: Store, bus: EventBus, mut stop: watch::Receiver<bool>) {
    loop {
        let stopping = *stop.borrow();
        match store.outbox(BATCH).await {
            Ok(batch) if !batch.is_empty() => {
                if forward_batch(&store, &bus, batch).await {
                    continue;
                }
                // No room on the bus: the events wait in the outbox.
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Ok(_) if stopping => return,
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "audit outbox unreadable; retrying"),
        }
        tokio::select! {
            () = store.outbox_filled().notified() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Publishes a batch durably and deletes what was published; false when the bus had no room.
async fn forward_batch(
    store: &Store,
    bus: &EventBus,
    batch: Vec<(i64, routero_core::audit::AuditEvent)>,
) -> bool {
    let mut published = None;
    let mut room_left = true;
    for (seq, event) in batch {
        match bus.reserve().await {
            Ok(room) => {
                room.publish_durably(event).await;
                published = Some(seq);
            }
            Err(error) => {
                tracing::warn!(%error, "audit bus has no room; outbox events wait");
                room_left = false;
                break;
            }
        }
    }
    if let Some(seq) = published
        && let Err(error) = store.forwarded(seq).await
    {
        // Published already: deleting again later is harmless, republishing is skipped by id.
        tracing::error!(%error, "forwarded audit events not deleted from the outbox");
    }
    room_left
}
