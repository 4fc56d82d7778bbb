//! [`WireState`]: the snapshot in wire form. The control plane diffs two states into a delta;
//! a data plane applies full snapshots and deltas to its copy, refusing regressions.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use crate::ProtoError;
use crate::v1::{self, snapshot_message::Body};

type RouteKey = (String, String);

/// The full snapshot state at one version, indexed for diffing and applying.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WireState {
    version: u64,
    sealed_pepper: Vec<u8>,
    policy_version: String,
    /// Shared, so a state derived from another (a few keys changed) costs no deep copy and
    /// diffing two such states compares pointers first.
    keys: BTreeMap<Vec<u8>, Arc<v1::VirtualKey>>,
    routes: BTreeMap<RouteKey, v1::ModelRoute>,
    credentials: BTreeMap<String, v1::Credential>,
    guardrails: BTreeMap<String, v1::TenantGuardrails>,
    cors: BTreeMap<String, v1::TenantCors>,
    allowances: BTreeMap<RouteKey, v1::ScopedAllowance>,
}

/// What applying a message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The state moved to a new version.
    NewVersion(u64),
    /// A heartbeat: contact, no change.
    Heartbeat,
}

/// What a delta message changes when it changes keys alone: the hashes removed and the keys
/// added or replaced. `None` for anything else (a full snapshot, a heartbeat, a delta touching
/// routes, credentials, guardrails, CORS, allowances or the policy version).
pub fn key_changes(message: &v1::SnapshotMessage) -> Option<(&[Vec<u8>], &[v1::VirtualKey])> {
    let Some(Body::Delta(delta)) = &message.body else {
        return None;
    };
    touches_keys_only(delta).then_some((&delta.removed_key_hashes, &delta.upsert_keys))
}

/// Whether a delta leaves everything but keys as it was.
fn touches_keys_only(delta: &v1::Delta) -> bool {
    delta.upsert_routes.is_empty()
        && delta.removed_routes.is_empty()
        && delta.upsert_credentials.is_empty()
        && delta.removed_credentials.is_empty()
        && delta.policy_version.is_none()
        && delta.upsert_guardrails.is_empty()
        && delta.removed_guardrails.is_empty()
        && delta.upsert_cors.is_empty()
        && delta.removed_cors.is_empty()
        && delta.upsert_allowances.is_empty()
        && delta.removed_allowances.is_empty()
}

fn scope_key(scope: Option<&v1::AllowanceScope>) -> RouteKey {
    scope
        .map(|s| (s.tenant_id.clone(), s.scope.clone()))
        .unwrap_or_default()
}

fn route_key(route: &v1::ModelRoute) -> RouteKey {
    route
        .name
        .as_ref()
        .map(|n| (n.tenant_id.clone(), n.name.clone()))
        .unwrap_or_default()
}

impl WireState {
    /// A state from its parts.
    pub fn new(
        version: u64,
        sealed_pepper: Vec<u8>,
        keys: impl IntoIterator<Item = v1::VirtualKey>,
        routes: impl IntoIterator<Item = v1::ModelRoute>,
        credentials: impl IntoIterator<Item = v1::Credential>,
    ) -> Self {
        Self {
            version,
            sealed_pepper,
            policy_version: String::new(),
            keys: keys
                .into_iter()
                .map(|k| (k.key_hash.clone(), Arc::new(k)))
                .collect(),
            routes: routes.into_iter().map(|r| (route_key(&r), r)).collect(),
            credentials: credentials.into_iter().map(|c| (c.id.clone(), c)).collect(),
            guardrails: BTreeMap::new(),
            cors: BTreeMap::new(),
            allowances: BTreeMap::new(),
        }
    }

    /// The same state with these budgets and limits of tenants, teams and users.
    pub fn with_allowances(
        mut self,
        allowances: impl IntoIterator<Item = v1::ScopedAllowance>,
    ) -> Self {
        self.allowances = allowances
            .into_iter()
            .map(|a| (scope_key(a.scope.as_ref()), a))
            .collect();
        self
    }

    /// Budgets and limits of tenants, teams and users.
    pub fn allowances(&self) -> impl Iterator<Item = &v1::ScopedAllowance> {
        self.allowances.values()
    }

    /// The same state with these tenants' guardrail pipelines.
    pub fn with_guardrails(
        mut self,
        guardrails: impl IntoIterator<Item = v1::TenantGuardrails>,
    ) -> Self {
        self.guardrails = guardrails
            .into_iter()
            .map(|g| (g.tenant_id.clone(), g))
            .collect();
        self
    }

    /// The same state with these tenants' CORS allowlists.
    pub fn with_cors(mut self, cors: impl IntoIterator<Item = v1::TenantCors>) -> Self {
        self.cors = cors.into_iter().map(|c| (c.tenant_id.clone(), c)).collect();
        self
    }

    /// Tenants' CORS allowlists.
    pub fn cors(&self) -> impl Iterator<Item = &v1::TenantCors> {
        self.cors.values()
    }

    /// Tenants' guardrail pipelines.
    pub fn guardrails(&self) -> impl Iterator<Item = &v1::TenantGuardrails> {
        self.guardrails.values()
    }

    /// The version of this state.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The same state deciding requests under the policy bundle `version` ("" when off).
    pub fn with_policy_version(mut self, version: String) -> Self {
        self.policy_version = version;
        self
    }

    /// The policy bundle version.
    pub fn policy_version(&self) -> &str {
        &self.policy_version
    }

    /// The sealed key-hashing pepper.
    pub fn sealed_pepper(&self) -> &[u8] {
        &self.sealed_pepper
    }

    /// Active keys.
    pub fn keys(&self) -> impl Iterator<Item = &v1::VirtualKey> {
        self.keys.values().map(AsRef::as_ref)
    }

    /// This state at `version` with the keys whose ids are in `changed` replaced by `fresh`
    /// (a changed key absent from `fresh` is gone: revoked, or no longer served). Everything
    /// else is shared with `self`.
    pub fn with_changed_keys(
        &self,
        version: u64,
        changed: &HashSet<String>,
        fresh: impl IntoIterator<Item = v1::VirtualKey>,
    ) -> Self {
        let mut next = self.clone();
        next.version = version;
        next.keys.retain(|_, key| !changed.contains(&key.key_id));
        next.keys
            .extend(fresh.into_iter().map(|k| (k.key_hash.clone(), Arc::new(k))));
        next
    }

    /// Model routes.
    pub fn routes(&self) -> impl Iterator<Item = &v1::ModelRoute> {
        self.routes.values()
    }

    /// Sealed provider credentials.
    pub fn credentials(&self) -> impl Iterator<Item = &v1::Credential> {
        self.credentials.values()
    }

    /// This state as one full snapshot message.
    pub fn to_full_message(&self) -> v1::SnapshotMessage {
        v1::SnapshotMessage {
            version: self.version,
            sent_at_ms: 0,
            mac: Vec::new(),
            body: Some(Body::Full(v1::Full {
                keys: self
                    .keys
                    .values()
                    .map(|k| v1::VirtualKey::clone(k))
                    .collect(),
                routes: self.routes.values().cloned().collect(),
                credentials: self.credentials.values().cloned().collect(),
                sealed_pepper: self.sealed_pepper.clone(),
                policy_version: self.policy_version.clone(),
                guardrails: self.guardrails.values().cloned().collect(),
                cors: self.cors.values().cloned().collect(),
                allowances: self.allowances.values().cloned().collect(),
            })),
        }
    }

    /// The delta message that takes `self` to `next`, or `None` when nothing differs.
    pub fn delta_to(&self, next: &WireState) -> Option<v1::SnapshotMessage> {
        let delta = v1::Delta {
            base_version: self.version,
            upsert_keys: changed(&self.keys, &next.keys, same_key)
                .into_iter()
                .map(|k| v1::VirtualKey::clone(&k))
                .collect(),
            removed_key_hashes: removed(&self.keys, &next.keys),
            upsert_routes: changed(&self.routes, &next.routes, PartialEq::eq),
            removed_routes: removed(&self.routes, &next.routes)
                .into_iter()
                .map(|(tenant_id, name)| v1::RouteName { tenant_id, name })
                .collect(),
            upsert_credentials: changed(&self.credentials, &next.credentials, PartialEq::eq),
            removed_credentials: removed(&self.credentials, &next.credentials),
            policy_version: (next.policy_version != self.policy_version)
                .then(|| next.policy_version.clone()),
            upsert_guardrails: changed(&self.guardrails, &next.guardrails, PartialEq::eq),
            removed_guardrails: removed(&self.guardrails, &next.guardrails),
            upsert_cors: changed(&self.cors, &next.cors, PartialEq::eq),
            removed_cors: removed(&self.cors, &next.cors),
            upsert_allowances: changed(&self.allowances, &next.allowances, PartialEq::eq),
            removed_allowances: removed(&self.allowances, &next.allowances)
                .into_iter()
                .map(|(tenant_id, scope)| v1::AllowanceScope { tenant_id, scope })
                .collect(),
        };
        let empty = delta.upsert_keys.is_empty()
            && delta.removed_key_hashes.is_empty()
            && touches_keys_only(&delta);
        (!empty || next.version != self.version).then_some(v1::SnapshotMessage {
            version: next.version,
            body: Some(Body::Delta(delta)),
            sent_at_ms: 0,
            mac: Vec::new(),
        })
    }

    /// Applies a message. Full snapshots replace the state; deltas must start at the applied
    /// version; neither may lower the version. On error the state is unchanged.
    pub fn apply(&mut self, message: v1::SnapshotMessage) -> Result<Applied, ProtoError> {
        let body = message.body.ok_or(ProtoError::EmptyMessage)?;
        if matches!(body, Body::Heartbeat(_)) {
            return Ok(Applied::Heartbeat);
        }
        // A full snapshot may repeat the applied version (a reconnect with nothing new);
        // a delta must move forward.
        let regression = match body {
            Body::Full(_) => message.version < self.version,
            _ => message.version <= self.version,
        };
        if regression {
            return Err(ProtoError::VersionRegression {
                have: self.version,
                got: message.version,
            });
        }
        match body {
            Body::Full(full) => {
                *self = Self::new(
                    message.version,
                    full.sealed_pepper,
                    full.keys,
                    full.routes,
                    full.credentials,
                )
                .with_policy_version(full.policy_version)
                .with_guardrails(full.guardrails)
                .with_cors(full.cors)
                .with_allowances(full.allowances);
            }
            Body::Delta(delta) => {
                if delta.base_version != self.version {
                    return Err(ProtoError::DeltaBaseMismatch {
                        have: self.version,
                        base: delta.base_version,
                    });
                }
                for hash in delta.removed_key_hashes {
                    self.keys.remove(&hash);
                }
                for key in delta.upsert_keys {
                    self.keys.insert(key.key_hash.clone(), Arc::new(key));
                }
                for name in delta.removed_routes {
                    self.routes.remove(&(name.tenant_id, name.name));
                }
                for route in delta.upsert_routes {
                    self.routes.insert(route_key(&route), route);
                }
                for id in delta.removed_credentials {
                    self.credentials.remove(&id);
                }
                for credential in delta.upsert_credentials {
                    self.credentials.insert(credential.id.clone(), credential);
                }
                for tenant in delta.removed_guardrails {
                    self.guardrails.remove(&tenant);
                }
                for guardrails in delta.upsert_guardrails {
                    self.guardrails
                        .insert(guardrails.tenant_id.clone(), guardrails);
                }
                for tenant in delta.removed_cors {
                    self.cors.remove(&tenant);
                }
                for cors in delta.upsert_cors {
                    self.cors.insert(cors.tenant_id.clone(), cors);
                }
                for scope in delta.removed_allowances {
                    self.allowances.remove(&scope_key(Some(&scope)));
                }
                for allowance in delta.upsert_allowances {
                    self.allowances
                        .insert(scope_key(allowance.scope.as_ref()), allowance);
                }
                if let Some(policy_version) = delta.policy_version {
                    self.policy_version = policy_version;
                }
                self.version = message.version;
            }
            Body::Heartbeat(_) => {}
        }
        Ok(Applied::NewVersion(self.version))
    }
}

/// Values of `new` that `old` lacks or holds differently (`same` tells).
fn changed<K: Ord, V: Clone>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
    same: impl Fn(&V, &V) -> bool,
) -> Vec<V> {
    new.iter()
        .filter(|(k, v)| !old.get(k).is_some_and(|o| same(o, v)))
        .map(|(_, v)| v.clone())
        .collect()
}

/// Shared keys are equal without a look inside.
fn same_key(a: &Arc<v1::VirtualKey>, b: &Arc<v1::VirtualKey>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

fn removed<K: Ord + Clone, V>(old: &BTreeMap<K, V>, new: &BTreeMap<K, V>) -> Vec<K> {
    old.keys()
        .filter(|k| !new.contains_key(k))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8, models: &[&str]) -> v1::VirtualKey {
        v1::VirtualKey {
            key_hash: vec![n; 32],
            key_id: format!("k{n}"),
            tenant_id: "t".into(),
            models: models.iter().map(|m| m.to_string()).collect(),
            ..Default::default()
        }
    }

    fn route(name: &str, model: &str) -> v1::ModelRoute {
        v1::ModelRoute {
            name: Some(v1::RouteName {
                tenant_id: "t".into(),
                name: name.into(),
            }),
            deployments: vec![v1::Deployment {
                credential_id: "c".into(),
                model: model.into(),
                weight: 1,
            }],
            tags: [("tier".to_owned(), format!("tier-of-{model}"))].into(),
            pricing: None,
            routing: None,
        }
    }

    fn cred(id: &str, sealed: u8) -> v1::Credential {
        v1::Credential {
            id: id.into(),
            tenant_id: "t".into(),
            provider: "openai".into(),
            base_url: "http://x".into(),
            sealed_api_key: vec![sealed; 4],
        }
    }

    #[test]
    fn delta_applied_to_old_state_yields_new_state() {
        let old = WireState::new(
            3,
            vec![1],
            [key(1, &["a"]), key(2, &[]), key(3, &[])],
            [route("a", "up-a"), route("b", "up-b")],
            [cred("c", 1), cred("d", 1)],
        );
        let new = WireState::new(
            4,
            vec![1],
            [key(1, &["a", "b"]), key(3, &[]), key(4, &[])],
            [route("a", "up-a2"), route("c", "up-c")],
            [cred("c", 2)],
        );
        let delta = old.delta_to(&new).unwrap();
        let Some(Body::Delta(d)) = &delta.body else {
            panic!("not a delta")
        };
        assert_eq!(d.upsert_keys.len(), 2, "changed k1 and new k4 only");
        assert_eq!(d.removed_key_hashes, vec![vec![2u8; 32]]);
        let mut applied = old.clone();
        assert_eq!(applied.apply(delta).unwrap(), Applied::NewVersion(4));
        assert_eq!(applied, new);
    }

    #[test]
    fn a_new_policy_version_travels_in_deltas_and_full_snapshots() {
        let old = WireState::new(3, vec![], [key(1, &[])], [], []).with_policy_version("p1".into());
        let new = WireState::new(4, vec![], [key(1, &[])], [], []).with_policy_version("p2".into());
        let delta = old.delta_to(&new).unwrap();
        let mut applied = old.clone();
        applied.apply(delta).unwrap();
        assert_eq!(applied.policy_version(), "p2");
        let mut fresh = WireState::default();
        fresh.apply(new.to_full_message()).unwrap();
        assert_eq!(fresh, new);
        let same =
            WireState::new(4, vec![], [key(1, &[])], [], []).with_policy_version("p2".into());
        assert!(new.delta_to(&same).is_none(), "no change, no delta");
    }

    #[test]
    fn guardrails_travel_in_deltas_and_full_snapshots() {
        let rails = |tenant: &str, json: &str| v1::TenantGuardrails {
            tenant_id: tenant.into(),
            config_json: json.into(),
        };
        let old = WireState::new(3, vec![], [], [], [])
            .with_guardrails([rails("a", "{}"), rails("b", "{}")]);
        let new = WireState::new(4, vec![], [], [], [])
            .with_guardrails([rails("a", r#"{"rules":[]}"#), rails("c", "{}")]);
        let delta = old.delta_to(&new).unwrap();
        let Some(Body::Delta(d)) = &delta.body else {
            panic!("not a delta")
        };
        assert_eq!(d.upsert_guardrails.len(), 2, "changed a and new c only");
        assert_eq!(d.removed_guardrails, vec!["b".to_owned()]);
        let mut applied = old.clone();
        applied.apply(delta).unwrap();
        assert_eq!(applied, new);
        let mut fresh = WireState::default();
        fresh.apply(new.to_full_message()).unwrap();
        assert_eq!(fresh, new);
    }

    #[test]
    fn budgets_of_teams_and_users_travel_in_deltas_and_full_snapshots() {
        let allowance = |scope: &str, rpm: u64| v1::ScopedAllowance {
            scope: Some(v1::AllowanceScope {
                tenant_id: "t".into(),
                scope: scope.into(),
            }),
            allowance: Some(v1::Allowance {
                rpm_limit: Some(rpm),
                ..v1::Allowance::default()
            }),
        };
        let old = WireState::new(3, vec![], [], [], [])
            .with_allowances([allowance("team:a", 1), allowance("user:b", 1)]);
        let new = WireState::new(4, vec![], [], [], [])
            .with_allowances([allowance("team:a", 2), allowance("tenant", 1)]);
        let delta = old.delta_to(&new).unwrap();
        let Some(Body::Delta(d)) = &delta.body else {
            panic!("not a delta")
        };
        assert_eq!(
            d.upsert_allowances.len(),
            2,
            "changed team:a and new tenant only"
        );
        assert_eq!(d.removed_allowances.len(), 1);
        let mut applied = old.clone();
        applied.apply(delta).unwrap();
        assert_eq!(applied, new);
        let mut fresh = WireState::default();
        fresh.apply(new.to_full_message()).unwrap();
        assert_eq!(fresh, new);
    }

    #[test]
    fn no_change_no_delta() {
        let state = WireState::new(5, vec![], [key(1, &[])], [], []);
        assert!(state.delta_to(&state.clone()).is_none());
    }

    #[test]
    fn regressions_and_mismatched_bases_are_refused_without_change() {
        let mut state = WireState::new(5, vec![], [key(1, &[])], [], []);
        let before = state.clone();
        let older = WireState::new(4, vec![], [], [], []).to_full_message();
        assert_eq!(
            state.apply(older),
            Err(ProtoError::VersionRegression { have: 5, got: 4 })
        );
        let a = WireState::new(6, vec![], [], [], []);
        let b = WireState::new(7, vec![], [key(9, &[])], [], []);
        assert_eq!(
            state.apply(a.delta_to(&b).unwrap()),
            Err(ProtoError::DeltaBaseMismatch { have: 5, base: 6 })
        );
        assert_eq!(state, before);
        assert_eq!(
            state.apply(v1::SnapshotMessage {
                version: 0,
                body: Some(Body::Heartbeat(v1::Heartbeat {})),
                ..v1::SnapshotMessage::default()
            }),
            Ok(Applied::Heartbeat)
        );
    }

    #[test]
    fn a_full_snapshot_may_repeat_the_applied_version() {
        let mut state = WireState::new(5, vec![], [key(1, &[])], [], []);
        let same = WireState::new(5, vec![], [key(2, &[])], [], []);
        assert_eq!(
            state.apply(same.to_full_message()),
            Ok(Applied::NewVersion(5))
        );
        assert_eq!(state, same);
    }

    #[test]
    fn full_message_round_trips() {
        let state = WireState::new(
            2,
            vec![7],
            [key(1, &["a"])],
            [route("a", "x")],
            [cred("c", 1)],
        );
        let mut copy = WireState::default();
        copy.apply(state.to_full_message()).unwrap();
        assert_eq!(copy, state);
    }
}
