//! Every admin request is decided before it executes. Each route names the resource kind and
//! action it asks of the policies where it is declared (`routes`); a handler acts as the
//! [`Caller`] the decision hands it.
//! Virtual keys are decided per key, once the handler has loaded them, because the policies
//! read their owner (a developer acts on the keys it created).
//!
//! With a policy directory, the Cerbos PDP decides, and an unreachable PDP refuses
//! (503 `policy_engine_unavailable`). Without one, only principals with the `admin` role are
//! allowed anything. Past the policies, which do not see the rights a key or role carries, a
//! caller without `admin` grants and acts on only rights it holds (`allow_held`) and binds
//! keys only to its own user and teams (`allow_issue`). Every refusal is audited as
//! `policy.blocked`.

use routero_core::ErrorCode;
use std::collections::BTreeMap;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use routero_authz::{Principal, Target};
use routero_core::audit::{ActorKind, EventType, Outcome};

use super::{ApiError, AppState, ClientInfo};
use crate::ADMIN_ROLE;
use crate::store::{AdminPrincipal, KeyRecord};

/// Role names with a meaning in the policies; custom roles may not take them.
pub(super) const BUILT_IN_ROLES: &[&str] = &[
    ADMIN_ROLE,
    "developer",
    "auditor",
    "finance",
    "manager",
    "qa",
    "member",
];

/// Resource kinds and their actions, as the policies in `policies/resources` name them: what
/// a custom role's permissions may list.
pub(super) const PERMISSIONS: &[(&str, &[&str])] = &[
    ("admin_key", &["create", "list", "revoke"]),
    ("audit_log", &["read", "export", "configure"]),
    ("billing", &["read"]),
    (
        "credential",
        &["create", "read", "list", "update", "delete"],
    ),
    (
        "key",
        &["create", "read", "list", "update", "rotate", "revoke"],
    ),
    ("model", &["create", "read", "list", "update", "delete"]),
    ("policy", &["read", "update"]),
    ("role", &["list", "manage"]),
    ("scim_token", &["create", "list", "revoke"]),
    ("spend_report", &["read"]),
    ("sso_config", &["read", "update"]),
    ("team", &["create", "read", "list", "update", "delete"]),
    ("tenant", &["read", "update"]),
    ("user", &["create", "read", "list", "update", "delete"]),
];

/// What a route asks of the policies (each route's is declared in `routes`).
#[derive(Debug, Clone, Copy)]
pub(super) enum Ask {
    /// `(kind, action)` on the caller's tenant, decided before the handler runs.
    Tenant(&'static str, &'static str),
    /// An action on each virtual key the request names, decided by the handler
    /// ([`AppState::allow_key`]).
    EachKey,
    /// Nothing to decide: the caller asks about itself (`GET /me`, `POST /logout`).
    OwnSelf,
}

/// A virtual key its caller was allowed an action on. Only [`AppState::allow_key`] makes
/// one: the routes that act on keys (`Ask::EachKey`) act on these, so none can skip the
/// per-key decision.
pub(super) struct AllowedKey(KeyRecord);

impl std::ops::Deref for AllowedKey {
    type Target = KeyRecord;

    fn deref(&self) -> &KeyRecord {
        &self.0
    }
}

/// The caller of an admin route, once its route's decision allowed it: what every handler
/// acts as. Only the authorization layer makes one.
#[derive(Clone)]
pub(super) struct Caller {
    /// The admin key's principal.
    pub(super) principal: AdminPrincipal,
    /// Where the request came from.
    pub(super) client: ClientInfo,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Self>()
            .cloned()
            .ok_or_else(|| ApiError::of(ErrorCode::InvalidAdminKey))
    }
}

/// Middleware after authentication, on each route with the route's [`Ask`]: decides
/// tenant-level routes, lets key routes through to their per-key decision, and hands the
/// handler its [`Caller`]. A route without an `Ask` is refused.
pub(super) async fn authorize(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let (Some(principal), Some(client)) = (
        request.extensions().get::<AdminPrincipal>().cloned(),
        request.extensions().get::<ClientInfo>().cloned(),
    ) else {
        return ApiError::of(ErrorCode::InvalidAdminKey).into_response();
    };
    let decided = match request.extensions().get::<Ask>().copied() {
        Some(Ask::EachKey | Ask::OwnSelf) => Ok(()),
        Some(Ask::Tenant(kind, action)) => {
            let target = collection(kind, &principal, &NO_ATTRIBUTES);
            state.allow(&principal, &client, &target, action).await
        }
        None => {
            let path = request.uri().path().to_owned();
            state
                .refuse(&principal, &client, ("admin_api", &path), "unlisted", None)
                .await
        }
    };
    match decided {
        Ok(()) => {
            request
                .extensions_mut()
                .insert(Caller { principal, client });
            next.run(request).await
        }
        Err(refusal) => refusal.into_response(),
    }
}

impl AppState {
    /// Whether `principal` may do `action` on `target`; `Err` only when no decision could
    /// be had.
    async fn decide(
        &self,
        principal: &AdminPrincipal,
        target: &Target<'_>,
        action: &str,
    ) -> Result<bool, routero_authz::AuthzError> {
        let Some(authorizer) = &self.authorizer else {
            return Ok(is_admin(principal));
        };
        let snapshot = self.publisher.latest();
        authorizer
            .is_allowed(
                snapshot.policy_version(),
                &Principal {
                    id: &principal.key_id,
                    roles: &principal.roles,
                    tenant: &principal.tenant_id,
                    teams: &principal.teams,
                    permissions: &principal.permissions,
                },
                target,
                action,
            )
            .await
    }

    /// Which of `asked` (`(kind, action)` on the tenant's collection of that kind) the
    /// policies allow `principal`, as the admin API would decide them: what a user interface
    /// shows. None is refused here (nothing is audited); one without a decision is `None`.
    pub(super) async fn allowed_actions(
        &self,
        principal: &AdminPrincipal,
        asked: &[(&'static str, &'static str)],
    ) -> BTreeMap<String, Option<bool>> {
        let attributes = BTreeMap::new();
        // Asked at once: each goes to the decision cache, or to the next engine connection.
        let decisions = asked.iter().map(|(kind, action)| {
            let attributes = &attributes;
            async move {
                let target = collection(kind, principal, attributes);
                let decided = self.decide(principal, &target, action).await.ok();
                (format!("{kind}:{action}"), decided)
            }
        });
        futures_util::future::join_all(decisions)
            .await
            .into_iter()
            .collect()
    }

    /// `Ok` when allowed; otherwise the refusal (403 `policy_denied`, or 503
    /// `policy_engine_unavailable`), audited.
    pub(super) async fn allow(
        &self,
        principal: &AdminPrincipal,
        client: &ClientInfo,
        target: &Target<'_>,
        action: &str,
    ) -> Result<(), ApiError> {
        let resource = (target.kind, target.id);
        match self.decide(principal, target, action).await {
            Ok(true) => Ok(()),
            Ok(false) => self.refuse(principal, client, resource, action, None).await,
            Err(error) => {
                tracing::error!(%error, "admin request refused: no policy decision");
                self.refuse(principal, client, resource, action, Some(error))
                    .await
            }
        }
    }

    /// May `principal` do `action` on this virtual key? Its owner is what the policies read.
    /// The key comes back as an [`AllowedKey`], what key handlers act on.
    pub(super) async fn allow_key(
        &self,
        principal: &AdminPrincipal,
        client: &ClientInfo,
        action: &str,
        key: KeyRecord,
    ) -> Result<AllowedKey, ApiError> {
        let attributes = key
            .owner
            .iter()
            .map(|owner| ("owner".to_owned(), owner.clone()))
            .collect();
        let target = Target {
            kind: "key",
            id: &key.id,
            tenant: &key.tenant_id,
            attributes: &attributes,
        };
        self.allow(principal, client, &target, action).await?;
        Ok(AllowedKey(key))
    }

    /// Which keys `principal` may list: `None` for all of the tenant's, or the owner they
    /// must have (its own). Refused when it may list neither.
    pub(super) async fn listable_keys(
        &self,
        principal: &AdminPrincipal,
        client: &ClientInfo,
    ) -> Result<Option<String>, ApiError> {
        let all = collection("key", principal, &NO_ATTRIBUTES);
        match self.decide(principal, &all, "list").await {
            Ok(true) => return Ok(None),
            Ok(false) => {}
            Err(error) => {
                return self
                    .refuse(principal, client, ("key", "*"), "list", Some(error))
                    .await;
            }
        }
        let own = BTreeMap::from([("owner".to_owned(), principal.key_id.clone())]);
        self.allow(
            principal,
            client,
            &collection("key", principal, &own),
            "list",
        )
        .await
        .map(|()| Some(principal.key_id.clone()))
    }

    /// Refuses `action` on `resource` unless the caller holds every one of `roles` and
    /// `permissions` itself (only `admin` acts on rights it lacks): what a grant gives, what a
    /// key it rotates or updates acts with, what a role it replaces or deletes grants. No
    /// principal raises its own rights, nor takes over a key or role with more of them.
    pub(super) async fn allow_held(
        &self,
        principal: &AdminPrincipal,
        client: &ClientInfo,
        resource: (&str, &str),
        action: &str,
        roles: &[String],
        permissions: &[String],
    ) -> Result<(), ApiError> {
        let holds = roles.iter().all(|r| principal.roles.contains(r))
            && permissions
                .iter()
                .all(|p| principal.permissions.contains(p));
        if is_admin(principal) || holds {
            return Ok(());
        }
        self.forbid(
            principal,
            client,
            resource,
            action,
            ErrorCode::RoleEscalation,
        )
        .await
    }

    /// Refuses giving a key (virtual or admin) `roles` the caller does not hold, or binding it
    /// to a user or team other than the caller's own (both only `admin` may).
    pub(super) async fn allow_issue(
        &self,
        principal: &AdminPrincipal,
        client: &ClientInfo,
        resource: (&str, &str),
        roles: &[String],
        user_id: Option<&str>,
        team_id: Option<&str>,
    ) -> Result<(), ApiError> {
        self.allow_held(principal, client, resource, "grant", roles, &[])
            .await?;
        self.allow_scope(principal, client, resource, user_id, team_id)
            .await
    }

    /// Refuses binding a key to a user or team other than the caller's own (its user and the
    /// teams that user belongs to; only `admin` binds any of the tenant's): spend, audit and
    /// team rules follow the binding. A caller acting for no user binds to neither.
    async fn allow_scope(
        &self,
        principal: &AdminPrincipal,
        client: &ClientInfo,
        resource: (&str, &str),
        user_id: Option<&str>,
        team_id: Option<&str>,
    ) -> Result<(), ApiError> {
        let own = user_id.is_none_or(|user| principal.user_id.as_deref() == Some(user))
            && team_id.is_none_or(|team| principal.teams.iter().any(|t| t == team));
        if is_admin(principal) || own {
            return Ok(());
        }
        self.forbid(
            principal,
            client,
            resource,
            "bind",
            ErrorCode::ScopeNotAllowed,
        )
        .await
    }

    /// Audits a refusal with `code` on `(resource, action)` and returns it.
    async fn forbid(
        &self,
        principal: &AdminPrincipal,
        client: &ClientInfo,
        resource: (&str, &str),
        action: &str,
        code: ErrorCode,
    ) -> Result<(), ApiError> {
        self.publish(self.refusal_event(principal, client, resource, action, code.code()))
            .await;
        Err(ApiError::of(code))
    }

    /// Audits a refusal and returns it: the PDP's refusal, or its absence when `unavailable`.
    pub(super) async fn refuse<T>(
        &self,
        principal: &AdminPrincipal,
        client: &ClientInfo,
        resource: (&str, &str),
        action: &str,
        unavailable: Option<routero_authz::AuthzError>,
    ) -> Result<T, ApiError> {
        let error = match unavailable {
            None => ApiError::new(
                ErrorCode::PolicyDenied,
                format!("Your roles do not allow {action} on {}.", resource.0),
            ),
            Some(_) => ApiError::new(
                ErrorCode::PolicyEngineUnavailable,
                "The policy engine is unavailable; nothing is allowed until it is back.",
            ),
        };
        self.publish(self.refusal_event(principal, client, resource, action, error.code().code()))
            .await;
        Err(error)
    }

    /// A refusal's audit event (`policy.blocked` with the reason code).
    pub(super) fn refusal_event(
        &self,
        principal: &AdminPrincipal,
        client: &ClientInfo,
        resource: (&str, &str),
        action: &str,
        code: &str,
    ) -> routero_core::audit::AuditEvent {
        let actor = client.actor(ActorKind::AdminKey, Some(principal.key_id.clone()));
        let mut event = routero_bus::event(
            &principal.tenant_id,
            EventType::PolicyBlocked,
            actor,
            routero_bus::resource(resource.0, Some(resource.1.to_owned())),
            Outcome::Denied,
        );
        event.reason_code = Some(code.to_owned());
        event.details.insert("action".into(), action.into());
        if self.authorizer.is_some() {
            event.policy_version = Some(self.publisher.latest().policy_version().to_owned())
                .filter(|version| !version.is_empty());
        }
        event
    }
}

static NO_ATTRIBUTES: BTreeMap<String, String> = BTreeMap::new();

/// Whether the principal has the built-in `admin` role.
fn is_admin(principal: &AdminPrincipal) -> bool {
    principal.roles.iter().any(|role| role == ADMIN_ROLE)
}

/// The principal's tenant's collection of `kind` (id `*`).
fn collection<'a>(
    kind: &'a str,
    principal: &'a AdminPrincipal,
    attributes: &'a BTreeMap<String, String>,
) -> Target<'a> {
    Target {
        kind,
        id: "*",
        tenant: &principal.tenant_id,
        attributes,
    }
}

/// Checks a custom role's permissions: 1-100 of `"<kind>:<action>"` the policies know.
pub(super) fn check_permissions(permissions: &[String]) -> Result<(), ApiError> {
    if permissions.is_empty() || permissions.len() > 100 {
        return Err(ApiError::new(
            ErrorCode::InvalidPermissions,
            "list 1-100 permissions",
        ));
    }
    for permission in permissions {
        let known = permission.split_once(':').is_some_and(|(kind, action)| {
            PERMISSIONS
                .iter()
                .any(|(k, actions)| *k == kind && actions.contains(&action))
        });
        if !known {
            return Err(ApiError::new(
                ErrorCode::InvalidPermissions,
                format!("{permission:.64}: not a <kind>:<action> the policies know"),
            ));
        }
    }
    Ok(())
}
