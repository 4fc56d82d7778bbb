//! Rows as the store returns them.

use serde::{Deserialize, Serialize};

/// A caller of the admin API: an admin key, or a sign-in session (`key_id` is then the
/// signed-in local admin's or user's id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminPrincipal {
    /// Admin key id: the principal id policies see (and the owner of keys it creates).
    pub key_id: String,
    /// Tenant the key administers.
    pub tenant_id: String,
    /// Role names, sorted: built-in ones and the tenant's custom ones.
    pub roles: Vec<String>,
    /// `"<kind>:<action>"` permissions of the custom roles among `roles`, sorted.
    pub permissions: Vec<String>,
    /// The user the key acts for, when an admin bound it to one.
    pub user_id: Option<String>,
    /// Teams that user belongs to, sorted (none without a user).
    pub teams: Vec<String>,
    /// The sign-in session the caller acts through (none for an admin key).
    pub session_id: Option<String>,
}

/// An admin key's record; never the key itself.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AdminKey {
    /// Identifier.
    pub id: String,
    /// Label given at creation.
    pub name: String,
    /// Roles the key acts with.
    pub roles: Vec<String>,
    /// The user the key acts for: the keys it creates may be bound to that user and its teams.
    pub user_id: Option<String>,
    /// Unix seconds of creation.
    pub created_at: i64,
    /// Whether the key was revoked.
    pub revoked: bool,
}

/// A tenant's custom role: a named set of permissions.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CustomRole {
    /// Name, unique in the tenant.
    pub name: String,
    /// `"<kind>:<action>"` permissions, sorted.
    pub permissions: Vec<String>,
}

/// A team: a SCIM group.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Team {
    /// Identifier.
    pub id: String,
    /// Unique name within the tenant.
    pub name: String,
    /// Identifier in the IdP, when provisioned by SCIM.
    pub external_id: Option<String>,
}

/// A user: a SCIM user.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct User {
    /// Identifier.
    pub id: String,
    /// Unique login name within the tenant.
    pub user_name: String,
    /// Primary email.
    pub email: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// Identifier in the IdP.
    pub external_id: Option<String>,
    /// Whether the user may act; deprovisioning clears it.
    pub active: bool,
    /// Teams the user belongs to.
    pub team_ids: Vec<String>,
    /// Whether the identity provider owns the user (SCIM); the admin API then cannot change it.
    pub scim_managed: bool,
}

/// A provider credential without its secret.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Credential {
    /// Identifier.
    pub id: String,
    /// Unique name within the tenant.
    pub name: String,
    /// Provider kind.
    pub provider: String,
    /// Base URL of the provider API.
    pub base_url: String,
}

/// A credential row with its ciphertext, for snapshot building and key rotation.
#[derive(Debug, Clone)]
pub struct SealedCredential {
    /// Public part.
    pub credential: Credential,
    /// Tenant.
    pub tenant_id: String,
    /// Vault ciphertext (`bN:...`).
    pub ciphertext: String,
}

impl SealedCredential {
    /// What the row's secret is bound to: its tenant, id and base URL.
    pub fn binding(&self) -> routero_crypto::CredentialBinding<'_> {
        routero_crypto::CredentialBinding {
            tenant: &self.tenant_id,
            credential_id: &self.credential.id,
            base_url: &self.credential.base_url,
        }
    }
}

/// One upstream of a model route, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredDeployment {
    /// Credential id.
    pub credential_id: String,
    /// Upstream model name.
    pub model: String,
    /// Share of a weighted route's requests.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

fn is_one(weight: &u32) -> bool {
    *weight == 1
}

/// A model route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Tenant.
    pub tenant_id: String,
    /// Model name clients use.
    pub name: String,
    /// Upstreams in order.
    pub deployments: Vec<StoredDeployment>,
    /// Labels policies read (`tier`, `env`, ...).
    pub tags: std::collections::BTreeMap<String, String>,
    /// What its tokens cost; none: nothing is charged.
    pub pricing: Option<routero_core::Pricing>,
    /// How requests are spread over its deployments and retried.
    pub routing: routero_core::Routing,
}

/// A virtual key's record; never the key itself.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    /// Public identifier.
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Stored hash.
    pub key_hash: Vec<u8>,
    /// Prefix and last characters, to recognise a key without revealing it.
    pub key_hint: String,
    /// Team scope.
    pub team_id: Option<String>,
    /// User scope.
    pub user_id: Option<String>,
    /// Allowed model names (empty: all of the tenant's).
    pub models: Vec<String>,
    /// Allowed client networks (empty: any).
    pub allowed_cidrs: Vec<String>,
    /// Free-form metadata.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Unix seconds of expiry.
    pub expires_at: Option<i64>,
    /// Unix seconds of creation.
    pub created_at: i64,
    /// Unix seconds of revocation.
    pub revoked_at: Option<i64>,
    /// Roles the key acts with when policies decide.
    pub roles: Vec<String>,
    /// The principal that created the key (an admin key id).
    pub owner: Option<String>,
    /// Its own rate limits and budget.
    pub limits: routero_core::Allowance,
}

/// Fields of a key that an update may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct KeyChanges {
    /// New model allowlist.
    pub models: Option<Vec<String>>,
    /// New CIDR allowlist.
    pub allowed_cidrs: Option<Vec<String>>,
    /// New metadata.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// New expiry (`Some(None)` removes it).
    pub expires_at: Option<Option<i64>>,
    /// New team scope.
    pub team_id: Option<Option<String>>,
    /// New user scope.
    pub user_id: Option<Option<String>>,
    /// New roles.
    pub roles: Option<Vec<String>>,
    /// New rate limits and budget: each part given replaces that part.
    pub limits: routero_core::Allowance,
}

/// The keys changed since a version, read at one later version: what a snapshot is updated
/// with when nothing but keys changed.
#[derive(Debug, Clone)]
pub struct ChangedKeys {
    /// Snapshot version.
    pub version: u64,
    /// Ids of every key changed since.
    pub ids: std::collections::HashSet<String>,
    /// Those of them served now (the others are revoked or no longer served).
    pub keys: Vec<KeyRecord>,
}

/// Everything a snapshot is built from, read at one version.
#[derive(Debug, Clone)]
pub struct StateRows {
    /// Snapshot version.
    pub version: u64,
    /// Active (unrevoked) keys.
    pub keys: Vec<KeyRecord>,
    /// Routes.
    pub routes: Vec<Route>,
    /// Credentials with ciphertexts.
    pub credentials: Vec<SealedCredential>,
    /// `(tenant id, guardrail configuration JSON)`.
    pub guardrails: Vec<(String, String)>,
    /// `(tenant id, the origins its web apps may call from)`.
    pub cors: Vec<(String, Vec<String>)>,
    /// `(tenant id, scope, budget and limits)` of tenants, teams and users.
    pub allowances: Vec<(String, String, routero_core::Allowance)>,
}
