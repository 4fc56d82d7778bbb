use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use secrecy::SecretString;

use crate::{KeyHash, KeyPolicy};

/// One upstream a model name can be served by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// Credential used to call the provider.
    pub credential_id: String,
    /// Model name the provider knows.
    pub upstream_model: String,
    /// Its share of a `weighted` route's requests, relative to the others' (at least 1).
    pub weight: u32,
}

/// A model name clients call, and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRoute {
    /// Tenant that owns the route.
    pub tenant_id: String,
    /// Name clients put in `model`.
    pub name: String,
    /// Upstreams, in order of preference.
    pub deployments: Vec<Deployment>,
    /// Labels policies read (`tier: premium`, `env: staging`).
    pub tags: BTreeMap<String, String>,
    /// What its tokens cost; none: nothing is charged for it.
    pub pricing: Option<crate::Pricing>,
    /// How requests are spread over its deployments and retried.
    pub routing: crate::Routing,
}

/// A provider credential, decrypted, as a data plane holds it in memory.
#[derive(Debug, Clone)]
pub struct ProviderCredential {
    /// Identifier routes refer to.
    pub id: String,
    /// Tenant the credential belongs to.
    pub tenant_id: String,
    /// Provider kind, e.g. `openai`.
    pub provider: String,
    /// Base URL of the provider's API, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// The provider API key; redacted in Debug output.
    pub api_key: SecretString,
}

/// Everything a data plane needs to decide and route a request, at one version.
///
/// Immutable once built: a new version is built beside the old one and swapped in whole.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Monotonic version assigned by the control plane.
    pub version: u64,
    /// Version of the policy bundle that decides requests; empty when policies are off.
    pub policy_version: String,
    keys: HashMap<KeyHash, Arc<KeyPolicy>>,
    routes: HashMap<String, HashMap<String, ModelRoute>>,
    credentials: HashMap<String, ProviderCredential>,
    /// Budgets and limits of tenants, teams and users, by tenant then scope.
    allowances: HashMap<String, HashMap<String, crate::Allowance>>,
}

impl Snapshot {
    /// Builds the indexes of a snapshot.
    pub fn new(
        version: u64,
        keys: impl IntoIterator<Item = (KeyHash, KeyPolicy)>,
        routes: impl IntoIterator<Item = ModelRoute>,
        credentials: impl IntoIterator<Item = ProviderCredential>,
    ) -> Self {
        let mut by_tenant: HashMap<String, HashMap<String, ModelRoute>> = HashMap::new();
        for route in routes {
            by_tenant
                .entry(route.tenant_id.clone())
                .or_default()
                .insert(route.name.clone(), route);
        }
        Self {
            version,
            policy_version: String::new(),
            keys: keys.into_iter().map(|(h, p)| (h, Arc::new(p))).collect(),
            routes: by_tenant,
            credentials: credentials.into_iter().map(|c| (c.id.clone(), c)).collect(),
            allowances: HashMap::new(),
        }
    }

    /// The same snapshot with these `(tenant, scope, allowance)` budgets and limits.
    pub fn with_allowances(
        mut self,
        allowances: impl IntoIterator<Item = (String, String, crate::Allowance)>,
    ) -> Self {
        for (tenant, scope, allowance) in allowances {
            self.allowances
                .entry(tenant)
                .or_default()
                .insert(scope, allowance);
        }
        self
    }

    /// Whether any tenant, team or user of `tenant` has a budget or limits.
    pub fn has_allowances(&self, tenant: &str) -> bool {
        self.allowances.contains_key(tenant)
    }

    /// The budget and limits of `scope` in `tenant`: `tenant` (the whole tenant), `team:<id>`
    /// or `user:<id>`.
    pub fn allowance(&self, tenant: &str, scope: &str) -> Option<&crate::Allowance> {
        self.allowances.get(tenant)?.get(scope)
    }

    /// The same snapshot decided by the policy bundle `version`.
    pub fn with_policy_version(mut self, version: &str) -> Self {
        version.clone_into(&mut self.policy_version);
        self
    }

    /// This snapshot at `version` with the keys `removed` gone and `upserted` added or
    /// replaced; keys left alone are shared with `self`.
    #[must_use]
    pub fn with_changed_keys(
        &self,
        version: u64,
        removed: impl IntoIterator<Item = KeyHash>,
        upserted: impl IntoIterator<Item = (KeyHash, KeyPolicy)>,
    ) -> Self {
        let mut next = self.clone();
        next.version = version;
        for hash in removed {
            next.keys.remove(&hash);
        }
        next.keys
            .extend(upserted.into_iter().map(|(h, p)| (h, Arc::new(p))));
        next
    }

    /// The key with this hash, if it is active.
    pub fn key(&self, hash: &KeyHash) -> Option<&Arc<KeyPolicy>> {
        self.keys.get(hash)
    }

    /// The route named `model` in `tenant`.
    pub fn route(&self, tenant: &str, model: &str) -> Option<&ModelRoute> {
        self.routes.get(tenant)?.get(model)
    }

    /// A credential by id, only if it belongs to `tenant`.
    pub fn credential(&self, tenant: &str, id: &str) -> Option<&ProviderCredential> {
        self.credentials.get(id).filter(|c| c.tenant_id == tenant)
    }

    /// Model names of `tenant` that `key` may call, sorted.
    pub fn models_for(&self, key: &KeyPolicy) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .routes
            .get(&key.tenant_id)
            .into_iter()
            .flat_map(HashMap::keys)
            .map(String::as_str)
            .filter(|name| key.allows_model(name))
            .collect();
        names.sort_unstable();
        names
    }

    /// Number of active keys.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }
}
