//! The state requests read: one [`Live`] snapshot behind one `ArcSwap`, and the time of the
//! last contact with the control plane.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use routero_core::{
    EgressPolicy, ErrorCode, KeyHash, KeyPolicy, ModelRoute, ProviderCredential, Snapshot,
};
use routero_crypto::{CredentialBinding, KeyHasher, SealingKey};
use routero_proto::{WireState, aad};

use crate::guard::TenantGuard;
use crate::provider::Upstream;
use crate::{DataPlaneError, egress};

/// A snapshot with everything decoded and unsealed, ready for requests.
#[derive(Debug)]
pub struct Live {
    /// Keys, routes and credentials.
    pub snapshot: Snapshot,
    /// Hashes presented keys the way the control plane stored them.
    pub hasher: KeyHasher,
    /// Each credential prepared for requests, by credential id, or the refusal its requests
    /// get when it could not be.
    upstreams: Arc<HashMap<String, Result<Upstream, ErrorCode>>>,
    /// Each tenant's compiled guardrails; `None` when its configuration did not compile here,
    /// which refuses the tenant's requests rather than leaving them unscanned.
    guards: Arc<HashMap<String, Option<Arc<TenantGuard>>>>,
    /// Each tenant's CORS origins (none listed: no browser origin may read its answers).
    cors: Arc<HashMap<String, Vec<String>>>,
}

impl Live {
    /// Decodes and unseals a wire state, preparing each credential under the egress `policy`.
    /// Entries that do not decode are left out (so they are refused), never guessed at.
    pub fn build(
        state: &WireState,
        key: &SealingKey,
        policy: &EgressPolicy,
    ) -> Result<Self, DataPlaneError> {
        let pepper = key.open(aad::PEPPER, state.sealed_pepper())?;
        let hasher = KeyHasher::new(SealingKey::from_bytes(&pepper)?)?;
        let keys = state.keys().filter_map(key_entry);
        let routes = state.routes().filter_map(|r| ModelRoute::try_from(r).ok());
        let credentials = state.credentials().filter_map(|c| {
            let binding = CredentialBinding {
                tenant: &c.tenant_id,
                credential_id: &c.id,
                base_url: &c.base_url,
            };
            let opened = key
                .open(&aad::credential(&binding), &c.sealed_api_key)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok());
            let Some(api_key) = opened else {
                tracing::error!(credential = %c.id, "credential did not unseal; left out");
                return None;
            };
            Some(ProviderCredential {
                id: c.id.clone(),
                tenant_id: c.tenant_id.clone(),
                provider: c.provider.clone(),
                base_url: c.base_url.clone(),
                api_key: api_key.into(),
            })
        });
        let credentials: Vec<ProviderCredential> = credentials.collect();
        let upstreams = credentials
            .iter()
            .map(|c| {
                let prepared = Upstream::prepare(c, policy).map_err(|error| {
                    tracing::error!(credential = %c.id, %error, "credential unusable; its requests are refused");
                    egress::refusal(&error)
                });
                (c.id.clone(), prepared)
            })
            .collect();
        let guards = state
            .guardrails()
            .map(|g| {
                let guard = TenantGuard::build(&g.config_json, &hasher, &g.tenant_id)
                    .map_err(|error| {
                        tracing::error!(tenant = %g.tenant_id, %error, "guardrails did not compile; the tenant's requests are refused");
                    })
                    .ok()
                    .map(Arc::new);
                (g.tenant_id.clone(), guard)
            })
            .collect();
        Ok(Self {
            snapshot: Snapshot::new(state.version(), keys, routes, credentials)
                .with_policy_version(state.policy_version())
                .with_allowances(state.allowances().filter_map(|a| {
                    let scope = a.scope.as_ref()?;
                    Some((
                        scope.tenant_id.clone(),
                        scope.scope.clone(),
                        a.allowance.as_ref().map(Into::into).unwrap_or_default(),
                    ))
                })),
            hasher,
            upstreams: Arc::new(upstreams),
            guards: Arc::new(guards),
            cors: Arc::new(
                state
                    .cors()
                    .map(|c| (c.tenant_id.clone(), c.origins.clone()))
                    .collect(),
            ),
        })
    }

    /// This snapshot at `version` after a delta that changed keys alone: `removed` gone,
    /// `upserted` replaced by their decoded form (one that does not decode is gone, as
    /// [`Live::build`] leaves it out: refused, never served by its old policy); everything else
    /// (credentials, guardrails) is shared, not prepared again.
    pub fn with_changed_keys(
        &self,
        version: u64,
        removed: &[Vec<u8>],
        upserted: &[routero_proto::v1::VirtualKey],
    ) -> Self {
        Self {
            snapshot: self.snapshot.with_changed_keys(
                version,
                removed
                    .iter()
                    .chain(upserted.iter().map(|k| &k.key_hash))
                    .filter_map(|h| KeyHash::from_slice(h).ok()),
                upserted.iter().filter_map(key_entry),
            ),
            hasher: self.hasher.clone(),
            upstreams: Arc::clone(&self.upstreams),
            guards: Arc::clone(&self.guards),
            cors: Arc::clone(&self.cors),
        }
    }

    /// Whether `tenant` lists `origin` (`None`: whether any tenant does, for a preflight,
    /// which carries no key).
    pub fn cors_allows(&self, tenant: Option<&str>, origin: &axum::http::HeaderValue) -> bool {
        let listed = |origins: &Vec<String>| {
            routero_http::cors::allows(origins.iter().map(String::as_str), origin)
        };
        match tenant {
            Some(tenant) => self.cors.get(tenant).is_some_and(listed),
            None => self.cors.values().any(listed),
        }
    }

    /// The tenant's guardrails: `Ok(None)` when it has none, `Err` when they could not be
    /// loaded (refuse).
    pub fn guard(&self, tenant: &str) -> Result<Option<&Arc<TenantGuard>>, ()> {
        match self.guards.get(tenant) {
            None => Ok(None),
            Some(Some(guard)) => Ok(Some(guard)),
            Some(None) => Err(()),
        }
    }

    /// The prepared upstream for a credential of `tenant`, or the refusal its requests get
    /// (`upstream_unreachable`, or `egress_not_allowed` for an address the policy refuses).
    pub fn upstream(&self, tenant: &str, credential_id: &str) -> Result<&Upstream, ErrorCode> {
        self.snapshot
            .credential(tenant, credential_id)
            .ok_or(ErrorCode::UpstreamUnreachable)?;
        match self.upstreams.get(credential_id) {
            Some(Ok(upstream)) => Ok(upstream),
            Some(Err(refusal)) => Err(*refusal),
            None => Err(ErrorCode::UpstreamUnreachable),
        }
    }
}

/// A wire key decoded, or left out (so it is refused), never guessed at.
fn key_entry(key: &routero_proto::v1::VirtualKey) -> Option<(KeyHash, KeyPolicy)> {
    <(KeyHash, KeyPolicy)>::try_from(key)
        .map_err(|error| {
            tracing::error!(key_id = %key.key_id, %error, "key left out of the snapshot");
        })
        .ok()
}

/// The snapshot the data plane serves from, swapped whole as messages arrive, with how fresh
/// it is and why the last message was refused, if it was: what `/readyz` reports.
#[derive(Debug)]
pub struct SnapshotCell {
    live: ArcSwapOption<Live>,
    last_contact_ms: AtomicI64,
    max_staleness_ms: i64,
    /// Why the last snapshot message was refused, until one is accepted again.
    refusal: std::sync::Mutex<Option<String>>,
}

impl SnapshotCell {
    /// An empty cell: not ready until a snapshot is stored.
    pub fn new(max_staleness: Duration) -> Arc<Self> {
        Arc::new(Self {
            live: ArcSwapOption::empty(),
            last_contact_ms: AtomicI64::new(0),
            max_staleness_ms: i64::try_from(max_staleness.as_millis()).unwrap_or(i64::MAX),
            refusal: std::sync::Mutex::new(None),
        })
    }

    fn refusal_slot(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.refusal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records why a snapshot message was refused (shown by `/readyz`).
    pub fn refused(&self, reason: String) {
        *self.refusal_slot() = Some(reason);
    }

    /// A snapshot message was accepted: no refusal stands.
    pub fn accepted(&self) {
        self.refusal_slot().take();
    }

    /// Why the data plane cannot serve, when it cannot: no snapshot yet, or none applied within
    /// the staleness bound, with the last refusal if there was one.
    pub fn not_ready_reason(&self) -> String {
        let why = if self.live.load().is_none() {
            "no snapshot applied yet".to_owned()
        } else {
            format!(
                "no snapshot applied for longer than max_staleness (last at {} ms)",
                self.last_contact_ms()
            )
        };
        match self.refusal_slot().as_deref() {
            Some(refusal) => format!("{why}; last from the snapshot channel: {refusal}"),
            None => why,
        }
    }

    /// The snapshot to serve from, if there is one and the control plane was heard from
    /// within the staleness bound.
    pub fn current(&self) -> Option<Arc<Live>> {
        let stale = routero_core::unix_now_ms()
            .saturating_sub(self.last_contact_ms.load(Ordering::Relaxed))
            > self.max_staleness_ms;
        if stale {
            return None;
        }
        self.live.load_full()
    }

    /// The version of the snapshot held, fresh or not.
    pub fn version(&self) -> Option<u64> {
        self.live.load().as_ref().map(|live| live.snapshot.version)
    }

    /// Swaps in a new snapshot.
    pub fn store(&self, live: Live) {
        self.live.store(Some(Arc::new(live)));
    }

    /// Records contact with the control plane at `at_ms`.
    pub fn touch(&self, at_ms: i64) {
        self.last_contact_ms.fetch_max(at_ms, Ordering::Relaxed);
    }

    /// Unix milliseconds of the last contact.
    pub fn last_contact_ms(&self) -> i64 {
        self.last_contact_ms.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use routero_proto::v1;

    use super::*;

    fn key(hash: u8, cidrs: &[&str]) -> v1::VirtualKey {
        v1::VirtualKey {
            key_hash: vec![hash; 32],
            key_id: format!("k{hash}"),
            tenant_id: "t".into(),
            allowed_cidrs: cidrs.iter().map(|c| (*c).to_owned()).collect(),
            ..Default::default()
        }
    }

    /// A key updated to something this data plane cannot decode is refused, as a fresh build
    /// would leave it out, never served by its old policy.
    #[test]
    fn an_updated_key_that_does_not_decode_is_gone_not_kept_as_it_was() {
        let sealing = SealingKey::generate().unwrap();
        let pepper = SealingKey::generate().unwrap();
        let sealed_pepper = sealing
            .seal(aad::PEPPER, pepper.to_bytes().expose())
            .unwrap();
        let state = WireState::new(1, sealed_pepper, [key(1, &[]), key(2, &[])], [], []);
        let live = Live::build(&state, &sealing, &EgressPolicy::default()).unwrap();
        let hash = |n| KeyHash::from_slice(&[n; 32]).unwrap();
        assert!(live.snapshot.key(&hash(1)).is_some());

        let updated =
            live.with_changed_keys(2, &[vec![2; 32]], &[key(1, &["not a range"]), key(3, &[])]);
        assert_eq!(updated.snapshot.version, 2);
        assert!(
            updated.snapshot.key(&hash(1)).is_none(),
            "undecodable update"
        );
        assert!(updated.snapshot.key(&hash(2)).is_none(), "removed");
        assert!(updated.snapshot.key(&hash(3)).is_some(), "added");
        assert!(
            live.snapshot.key(&hash(1)).is_some(),
            "the serving snapshot is untouched"
        );
    }
}
