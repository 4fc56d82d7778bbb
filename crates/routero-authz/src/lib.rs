//! Authorization by Cerbos.
//!
//! The caller becomes a [`Principal`] (id, roles, tenant, teams, custom permissions), the
//! target a [`Target`] (kind, id, tenant, attributes), and the Cerbos PDP decides. Deny by
//! default: an action the PDP does not explicitly allow is refused, and a PDP that cannot be
//! reached refuses everything not already decided ([`AuthzError::Unavailable`], which callers
//! turn into 503 `policy_engine_unavailable`). Decisions are cached per policy bundle
//! version ([`bundle_version`]): a cache hit costs no round trip, and a new version empties
//! the cache so no decision of an older policy is served.
#![forbid(unsafe_code)]

mod bundle;
mod cache;
mod pdp;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cerbos::sdk::attr::{ListVal, StrVal};
use cerbos::sdk::model::{Principal as CerbosPrincipal, Resource as CerbosResource, ResourceList};
use cerbos::sdk::{CerbosAsyncClient, CerbosClientOptions, CerbosEndpoint};
use thiserror::Error;
use tokio::sync::Mutex;

pub use bundle::bundle_version;
pub use pdp::{Pdp, find_cerbos};

use crate::cache::DecisionCache;

/// Errors of authorization.
#[derive(Debug, Error)]
pub enum AuthzError {
    /// The PDP could not be asked: decisions fail closed.
    #[error("policy engine unavailable: {0}")]
    Unavailable(String),
    /// The policy bundle could not be read.
    #[error("policy bundle {path}: {source}")]
    Bundle {
        /// The file or directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The Cerbos child process could not be started or did not become ready.
    #[error("cerbos: {0}")]
    Pdp(String),
}

/// Who is asking: a view of the caller's own records, so that asking (and a cache hit above
/// all) copies nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal<'a> {
    /// Stable id (a key id, a user id).
    pub id: &'a str,
    /// Built-in and custom role names.
    pub roles: &'a [String],
    /// The tenant the principal belongs to.
    pub tenant: &'a str,
    /// Teams the principal is in.
    pub teams: &'a [String],
    /// `"<kind>:<action>"` grants of custom roles.
    pub permissions: &'a [String],
}

/// What is acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    /// Resource kind (`key`, `model`, ...), as named in `policies/resources`.
    pub kind: &'a str,
    /// Resource id (`*` for a collection, e.g. listing).
    pub id: &'a str,
    /// The tenant owning it.
    pub tenant: &'a str,
    /// Further attributes the policies read (`owner`, `tier`, `env`, ...).
    pub attributes: &'a BTreeMap<String, String>,
}

/// Where the PDP listens and how long a decision may take.
#[derive(Debug, Clone)]
pub struct AuthzConfig {
    /// Host of the PDP's gRPC listener.
    pub host: String,
    /// Port of the PDP's gRPC listener.
    pub port: u16,
    /// Time allowed per decision.
    pub timeout: Duration,
    /// Decisions kept per policy version before the cache starts over.
    pub cache_capacity: usize,
    /// How long after a policy version is first seen its decisions are not cached (the PDP
    /// may not have reloaded yet).
    pub settle: Duration,
    /// Connections to the PDP; each answers one decision at a time.
    pub connections: usize,
}

/// A policy decision, and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the action is allowed.
    pub allowed: bool,
    /// Whether it was answered from the decision cache rather than asked of the PDP.
    pub cached: bool,
}

impl AuthzConfig {
    /// A plaintext PDP at `host:port` (loopback or a sidecar), 2 s per decision, 10 s to settle
    /// (Cerbos notices a changed policy directory within a few seconds).
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            timeout: Duration::from_secs(2),
            cache_capacity: 100_000,
            settle: Duration::from_secs(10),
            connections: 8,
        }
    }
}

/// Asks the PDP, through the decision cache.
pub struct Authorizer {
    /// The SDK's client takes `&mut self` per call: a few of them, used in turn.
    clients: Vec<Mutex<CerbosAsyncClient>>,
    next: AtomicUsize,
    cache: DecisionCache,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer").finish_non_exhaustive()
    }
}

/// The role of a principal that has none (Cerbos needs at least one): a plain member of its
/// tenant, which the policies grant only what they grant every member.
pub const DEFAULT_ROLE: &str = "member";

fn cerbos_principal(principal: &Principal<'_>) -> CerbosPrincipal {
    let list = |items: &[String]| -> ListVal<StrVal<String>, Vec<StrVal<String>>> {
        ListVal(items.iter().map(|s| StrVal(s.clone())).collect())
    };
    let roles = if principal.roles.is_empty() {
        vec![DEFAULT_ROLE.to_owned()]
    } else {
        principal.roles.to_vec()
    };
    CerbosPrincipal::new(principal.id.to_owned(), roles)
        .add_attr("tenant", StrVal(principal.tenant))
        .add_attr("teams", list(principal.teams))
        .add_attr("permissions", list(principal.permissions))
}

/// The resource with its attributes; `tenant` is set last, so that no attribute of the same
/// name can move a resource into another tenant.
fn cerbos_resource(target: &Target<'_>) -> CerbosResource {
    target
        .attributes
        .iter()
        .fold(
            CerbosResource::new(target.id, target.kind),
            |resource, (name, value)| resource.add_attr(name.clone(), StrVal(value.clone())),
        )
        .add_attr("tenant", StrVal(target.tenant))
}

impl Authorizer {
    /// Clients for the PDP; they connect on first use and reconnect by themselves.
    pub async fn connect(config: &AuthzConfig) -> Result<Self, AuthzError> {
        let mut clients = Vec::with_capacity(config.connections.max(1));
        for _ in 0..config.connections.max(1) {
            let options = CerbosClientOptions::new(CerbosEndpoint::HostPort(
                config.host.clone(),
                config.port,
            ))
            .with_plaintext()
            .with_timeout(config.timeout);
            let client = CerbosAsyncClient::new(options)
                .await
                .map_err(|e| AuthzError::Unavailable(e.to_string()))?;
            clients.push(Mutex::new(client));
        }
        Ok(Self {
            clients,
            next: AtomicUsize::new(0),
            cache: DecisionCache::new(config.cache_capacity, config.settle),
        })
    }

    /// Whether `principal` may do `action` on `target` under the policy bundle
    /// `policy_version`. `Err` means no decision could be had: refuse.
    pub async fn is_allowed(
        &self,
        policy_version: &str,
        principal: &Principal<'_>,
        target: &Target<'_>,
        action: &str,
    ) -> Result<bool, AuthzError> {
        self.decide(policy_version, principal, target, action)
            .await
            .map(|decision| decision.allowed)
    }

    /// [`Authorizer::is_allowed`], saying whether the decision came from the cache.
    pub async fn decide(
        &self,
        policy_version: &str,
        principal: &Principal<'_>,
        target: &Target<'_>,
        action: &str,
    ) -> Result<Decision, AuthzError> {
        let key = cache::key(principal, target, action);
        if let Some(allowed) = self.cache.get(policy_version, &key) {
            return Ok(Decision {
                allowed,
                cached: true,
            });
        }
        let turn = self
            .next
            .fetch_add(1, Ordering::Relaxed)
            .checked_rem(self.clients.len())
            .and_then(|turn| self.clients.get(turn))
            .ok_or_else(|| AuthzError::Unavailable("no policy engine client".into()))?;
        let response = turn
            .lock()
            .await
            .check_resources(
                cerbos_principal(principal),
                ResourceList::new().add(cerbos_resource(target), [action]),
                None,
            )
            .await
            .map_err(|e| AuthzError::Unavailable(format!("{e:#}")))?;
        let allowed = response
            .find(target.id)
            .is_some_and(|result| result.is_allowed(action));
        self.cache.put(policy_version, key, allowed);
        Ok(Decision {
            allowed,
            cached: false,
        })
    }

    /// Decisions cached for the current policy version.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}
