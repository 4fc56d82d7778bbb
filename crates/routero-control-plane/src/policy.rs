//! The policy bundle's version: computed from the policy directory, published in snapshots
//! so that data planes key their decision caches by it, and audited when it changes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use routero_bus::EventBus;
use routero_core::audit::{ActorKind, EventType, Outcome};
use tokio::sync::watch;

use crate::ControlPlaneError;
use crate::snapshot::Publisher;

/// Publishes the bundle's version now, then every `poll` while it changes, recording each
/// change as `policy.changed` (old and new version) on `audit`.
pub(crate) async fn watch_bundle(
    publisher: Arc<Publisher>,
    dir: PathBuf,
    poll: Duration,
    audit: Option<EventBus>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        match publish(&publisher, &dir).await {
            Ok(Some((old, new))) => {
                tracing::info!(%old, %new, "policy bundle changed");
                if let Some(bus) = &audit {
                    let mut event = routero_bus::event(
                        routero_core::audit::UNATTRIBUTED_TENANT,
                        EventType::PolicyChanged,
                        routero_bus::actor(ActorKind::System, Some("control-plane".into())),
                        routero_bus::resource("policy_bundle", Some(dir.display().to_string())),
                        Outcome::Success,
                    );
                    event.policy_version = Some(new.clone());
                    event = routero_bus::with_detail(event, "old_version", old);
                    event = routero_bus::with_detail(event, "new_version", new);
                    if let Err(error) = bus.publish(event).await {
                        tracing::error!(%error, "policy.changed not recorded");
                    }
                }
            }
            Ok(None) => {}
            Err(error) => {
                tracing::error!(%error, "policy bundle unreadable; keeping the last version")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn publish(
    publisher: &Publisher,
    dir: &std::path::Path,
) -> Result<Option<(String, String)>, ControlPlaneError> {
    let version =
        routero_authz::bundle_version(dir).map_err(|e| ControlPlaneError::Config(e.to_string()))?;
    Ok(publisher
        .set_policy_version(&version)
        .await?
        .map(|old| (old, version)))
}
