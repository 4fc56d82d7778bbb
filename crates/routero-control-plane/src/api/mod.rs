//! The admin REST API. Every route but the health probes and the OpenAPI document requires an
//! admin key, and is decided by the policies before it executes (`access`); every handler
//! acts inside the caller's tenant.

mod access;
mod admin_keys_and_roles;
mod audit;
mod budgets;
mod console;
mod cors;
mod credentials_and_models;
mod error;
mod extract;
mod guardrails;
mod keys;
mod provisioning;
mod routes;
mod scim;
mod sessions;
mod sso;
mod times;
mod users_and_teams;

use routero_core::ErrorCode;
use std::sync::Arc;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use routero_bus::EventBus;
use routero_core::audit::{ActorKind, EventType, Outcome, UNATTRIBUTED_TENANT};
use routero_core::{AuthFailures, Verdict};
use routero_crypto::KeyHasher;

pub use error::ApiError;

use crate::snapshot::Publisher;
use crate::store::{AdminPrincipal, Store};
use crate::vault::Vault;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Tenants, keys, routes, credentials and the outbox, in PostgreSQL or SQLite.
    pub(crate) store: Store,
    /// Hashes presented keys under the pepper, so that keys are looked up by hash only.
    pub(crate) hasher: KeyHasher,
    /// Seals and opens provider credentials under the master keyring.
    pub(crate) vault: Vault,
    /// Builds and streams snapshots to data planes; knows which version each applied.
    pub(crate) publisher: Arc<Publisher>,
    /// Where refusals and anonymous failures are recorded (changes go through the outbox).
    pub(crate) audit: Option<EventBus>,
    /// The audit log, for `GET /audit/events`.
    pub(crate) audit_log: Option<routero_audit::AuditStore>,
    /// The policy decision point; `None` when no policies are configured.
    pub(crate) authorizer: Option<Arc<routero_authz::Authorizer>>,
    /// How long clients may take.
    pub(crate) deadlines: routero_http::Deadlines,
    /// Largest request body.
    pub(crate) max_body_bytes: usize,
    /// Failed admin authentications per source address and minute.
    pub(crate) failures: Arc<AuthFailures>,
    /// How long sessions live; how local admins' passwords are kept and locked.
    pub(crate) sessions: crate::config::SessionPolicy,
    /// Which addresses a credential's base URL may resolve to.
    pub(crate) egress: Arc<routero_core::EgressPolicy>,
    /// Signs people in through their tenant's OpenID Connect provider.
    pub(crate) relying_party: Arc<routero_oidc::RelyingParty>,
    /// Where browsers reach this API (redirect URIs); none: each request's `Host`.
    pub(crate) public_url: Option<String>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub(crate) trusted_proxies: Vec<ipnet::IpNet>,
    /// What Prometheus scrapes.
    pub(crate) metrics: Arc<crate::metrics::AdminMetrics>,
    /// The checkpoint public key the trail is verified with, when configured.
    pub(crate) audit_verifier: Option<routero_crypto::CheckpointVerifier>,
    /// Makes sessions' CSRF tokens from their tokens (a key derived from the pepper).
    pub(crate) csrf: routero_crypto::MessageKey,
    /// At most this many trail verifications and exports at once (each reads a whole log).
    pub(crate) whole_log: Arc<tokio::sync::Semaphore>,
}

/// Where an admin request came from, for its audit event.
#[derive(Debug, Clone)]
pub(crate) struct ClientInfo {
    source_ip: Option<String>,
    user_agent: Option<String>,
}

impl ClientInfo {
    /// An actor of `kind` acting from this client.
    pub(crate) fn actor(&self, kind: ActorKind, id: Option<String>) -> routero_core::audit::Actor {
        let mut actor = routero_bus::actor(kind, id);
        actor.source_ip.clone_from(&self.source_ip);
        actor.user_agent.clone_from(&self.user_agent);
        actor
    }

    /// The address failures are counted against (unspecified when unknown).
    pub(crate) fn source(&self) -> std::net::IpAddr {
        self.source_ip
            .as_deref()
            .and_then(|ip| ip.parse().ok())
            .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]))
    }

    /// The client of `request`: its peer, or behind a trusted proxy the address it vouches for.
    fn of(request: &Request, trusted_proxies: &[ipnet::IpNet]) -> Self {
        let forwarded = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok());
        Self {
            source_ip: request.extensions().get::<ConnectInfo<SocketAddr>>().map(
                |ConnectInfo(peer)| {
                    routero_core::client_ip(peer.ip(), forwarded, trusted_proxies).to_string()
                },
            ),
            user_agent: routero_http::user_agent(request.headers()),
        }
    }
}

impl AppState {
    /// The event recording an admin action of `principal` on `resource`; handed to the store
    /// with the mutation, so both commit together. A resource without an id is given the id
    /// of the row the mutation creates.
    pub(crate) fn event(
        principal: &AdminPrincipal,
        client: &ClientInfo,
        action: EventType,
        resource: (&str, Option<String>),
    ) -> routero_core::audit::AuditEvent {
        let actor = Self::changer(principal, client).actor;
        routero_bus::event(
            &principal.tenant_id,
            action,
            actor,
            routero_bus::resource(resource.0, resource.1),
            Outcome::Success,
        )
    }

    /// `principal` as the changer of people and groups (the store writes its events).
    pub(crate) fn changer(
        principal: &AdminPrincipal,
        client: &ClientInfo,
    ) -> crate::store::Changer {
        // A session acts as the person signed in; an admin key as itself.
        let kind = if principal.session_id.is_some() {
            ActorKind::User
        } else {
            ActorKind::AdminKey
        };
        let actor = client.actor(kind, Some(principal.key_id.clone()));
        crate::store::Changer {
            tenant_id: principal.tenant_id.clone(),
            actor,
            scim: false,
        }
    }

    async fn publish(&self, event: routero_core::audit::AuditEvent) {
        if let Some(bus) = &self.audit
            && let Err(error) = bus.publish(event).await
        {
            tracing::error!(%error, "audit event not recorded");
        }
    }
}

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Builds the admin router.
pub fn router(state: AppState) -> Router {
    let max_body_bytes = state.max_body_bytes;
    let mut admin = Router::new();
    for route in routes::routes() {
        tracing::debug!(method = %route.method, path = route.path, ask = ?route.ask, "admin route");
        // Per route, outermost first: its question, the decision, then its body is read.
        let handler = route
            .handler
            .route_layer(middleware::from_fn_with_state(state.clone(), read_body))
            .route_layer(middleware::from_fn_with_state(
                state.clone(),
                access::authorize,
            ))
            .route_layer(Extension(route.ask));
        admin = admin.route(route.path, handler);
    }
    let admin = admin.route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    // Password sign-in exists only where break-glass accounts are configured on.
    let login = if state.sessions.break_glass {
        Router::new().route(
            "/login/local",
            axum::routing::post(sessions::login)
                .route_layer(middleware::from_fn_with_state(state.clone(), read_body)),
        )
    } else {
        Router::new()
    };
    // Single sign-on's browser legs: public, as the provider sends people back unauthenticated.
    let sso = Router::new()
        .route("/sso/oidc/login", get(sso::begin_oidc))
        .route("/sso/oidc/callback", get(sso::oidc_callback))
        .route("/sso/saml/metadata", get(sso::saml_metadata))
        .route("/sso/saml/login", get(sso::begin_saml))
        .route("/sso/saml/acs", axum::routing::post(sso::saml_acs));
    Router::new()
        .merge(admin)
        .merge(login)
        .merge(sso)
        .nest("/scim/v2", scim::router(state.clone()))
        .route("/openapi.json", get(openapi))
        .route("/console", get(console::page))
        .route("/console/assets/{name}", get(console::asset))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .fallback(|| async { ApiError::of(ErrorCode::RouteNotFound) })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            cors::preflight,
        ))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), contain))
        .with_state(state)
}

/// The outermost layer: a request is handled within the whole-request deadline (504
/// `deadline_exceeded`), and a handler's panic becomes 500 `internal_error`, recorded,
/// instead of a dropped connection.
async fn contain(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let client = ClientInfo::of(&request, &state.trusted_proxies);
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let arrived = std::time::Instant::now();
    let handled = tokio::time::timeout(
        state.deadlines.request,
        routero_http::unwinding(next.run(request)),
    )
    .await;
    let response = match handled {
        Ok(Ok(response)) => response,
        Ok(Err(panic)) => {
            tracing::error!(%panic, %path, "admin handler panicked; answered 500 internal_error");
            state
                .publish(anonymous_event(
                    &client,
                    EventType::PolicyBlocked,
                    &path,
                    "internal_error",
                    Outcome::Failure,
                ))
                .await;
            ApiError::new(
                ErrorCode::InternalError,
                "The control plane failed; nothing was changed by this request.",
            )
            .into_response()
        }
        Err(_) => ApiError::new(
            ErrorCode::DeadlineExceeded,
            "The request took longer than the control plane allows.",
        )
        .into_response(),
    };
    state.metrics.request(
        &method,
        response.status().as_u16(),
        arrived.elapsed().as_secs_f64(),
    );
    response
}

/// Reads an authorized request's body, whole, within the body deadline (408
/// `request_timeout`), so no handler waits on a slow client.
async fn read_body(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    match routero_http::read_body(body, state.max_body_bytes, state.deadlines.body).await {
        Ok(bytes) => next.run(Request::from_parts(parts, bytes.into())).await,
        Err(routero_http::BodyError::TooLarge) => {
            ApiError::new(ErrorCode::BodyTooLarge, "The request body is too large.").into_response()
        }
        Err(routero_http::BodyError::Timeout) => ApiError::new(
            ErrorCode::RequestTimeout,
            "The request body was not received in time.",
        )
        .into_response(),
        Err(routero_http::BodyError::Unreadable) => ApiError::new(
            ErrorCode::InvalidBody,
            "The request body could not be read.",
        )
        .into_response(),
    }
}

/// An event of a caller not (or not yet) known: no tenant, the source address.
fn anonymous_event(
    client: &ClientInfo,
    action: EventType,
    path: &str,
    reason_code: &str,
    outcome: Outcome,
) -> routero_core::audit::AuditEvent {
    let actor = client.actor(ActorKind::Anonymous, None);
    let mut event = routero_bus::event(
        UNATTRIBUTED_TENANT,
        action,
        actor,
        routero_bus::resource(
            if action == EventType::ScimAuthFailed {
                "scim"
            } else {
                "admin_api"
            },
            Some(path.to_owned()),
        ),
        outcome,
    );
    event.reason_code = Some(reason_code.to_owned());
    event
}

/// Resolves the admin key to a principal, or refuses with `invalid_admin_key` (recorded as
/// `login.failed` with the source address: one by one for a source's first few failures in a
/// minute, then counted into one record); a source past the limit has its failures answered
/// 429 `too_many_auth_failures` until the window ends. Valid keys always pass, so no one can
/// lock admins out by failing from their address (admin keys are 256 random bits, or an
/// operator's 32+ characters).
async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let client = ClientInfo::of(&request, &state.trusted_proxies);
    let principal = match (
        routero_http::bearer(request.headers()),
        sessions::session_token(request.headers()),
    ) {
        (Some(presented), _) => {
            state
                .store
                .find_admin_key(&state.hasher.hash(presented).0)
                .await
        }
        // A session cookie, when no admin key is presented: a change needs its CSRF token.
        (None, Some(token)) => {
            let idle = i64::try_from(state.sessions.idle.as_secs()).unwrap_or(i64::MAX);
            match state
                .store
                .find_session(&state.hasher.hash(token).0, idle)
                .await
            {
                Ok(Some(live)) => match sessions::check_csrf(&state, &request, &live) {
                    Ok(()) => Ok(Some(live.principal)),
                    Err(refusal) => {
                        let path = request.uri().path().to_owned();
                        let _ = state
                            .refuse::<()>(
                                &live.principal,
                                &client,
                                ("admin_api", &path),
                                "csrf_failed",
                                None,
                            )
                            .await;
                        return refusal.into_response();
                    }
                },
                Ok(None) => Ok(None),
                Err(error) => Err(error),
            }
        }
        (None, None) => Ok(None),
    };
    match principal {
        Ok(Some(principal)) => {
            let origin = routero_http::cors::request_origin(request.headers())
                .filter(|origin| cors::tenant_allows(&state, &principal.tenant_id, origin))
                .cloned();
            request.extensions_mut().insert(principal);
            request.extensions_mut().insert(client);
            let mut response = next.run(request).await;
            if let Some(origin) = origin {
                routero_http::cors::allow(&mut response, &origin);
            }
            response
        }
        Ok(None) => {
            let path = request.uri().path().to_owned();
            if let Err(wait) = failed_authentication(
                &state,
                &client,
                &path,
                (EventType::LoginFailed, "invalid_admin_key"),
            )
            .await
            {
                return too_many_failures(wait);
            }
            ApiError::of(ErrorCode::InvalidAdminKey).into_response()
        }
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// Counts a failed authentication from `client` and records it as `action` (one by one for a
/// source's first few failures in a minute, then counted into one record). `Err(wait)` once
/// the source is past the limit: its failures are answered 429 for `wait` seconds.
async fn failed_authentication(
    state: &AppState,
    client: &ClientInfo,
    path: &str,
    (action, reason): (EventType, &str),
) -> Result<(), u64> {
    let now = u64::try_from(routero_core::unix_now()).unwrap_or(0);
    let source = client.source();
    match state.failures.fail(source, now) {
        Verdict::Record => {
            tracing::warn!(%path, source_ip = ?client.source_ip, reason, "authentication failed");
            let event = anonymous_event(client, action, path, reason, Outcome::Denied);
            state.publish(event).await;
            Ok(())
        }
        Verdict::Count => Ok(()),
        Verdict::Throttle => Err(state.failures.throttled(source, now).unwrap_or(1)),
    }
}

/// 429 `too_many_auth_failures`, to retry after `wait` seconds.
fn too_many_failures(wait: u64) -> Response {
    let mut response = ApiError::new(
        ErrorCode::TooManyAuthFailures,
        "Too many failed authentications from this address; retry after the time given.",
    )
    .into_response();
    if let Ok(value) = header::HeaderValue::from_str(&wait.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn ready(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => "ready".into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// `GET /data-planes`: the version this control plane publishes and, per data plane that
/// reported to it, the version it applied and when, when it last reported, and which of this
/// tenant's deployments (credential and model) have a breaker that is not closed there (the
/// credential's name too for a caller the policies let list credentials).
async fn data_planes(
    State(state): State<AppState>,
    access::Caller { principal, .. }: access::Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let named = state
        .allowed_actions(&principal, &[("credential", "list")])
        .await
        .values()
        .all(|allowed| *allowed == Some(true));
    let names: std::collections::HashMap<String, Option<String>> = state
        .store
        .list_credentials(&principal.tenant_id)
        .await?
        .into_iter()
        .map(|credential| (credential.id, named.then_some(credential.name)))
        .collect();
    let planes: Vec<serde_json::Value> = state
        .publisher
        .applied_versions()
        .into_iter()
        .map(|plane| {
            // Another tenant's deployments are never named here.
            let breakers: Vec<serde_json::Value> = plane
                .breakers
                .iter()
                .filter_map(|breaker| {
                    let name = names.get(&breaker.credential_id)?;
                    Some(serde_json::json!({
                        "credential_id": breaker.credential_id,
                        "credential": name,
                        "model": breaker.model,
                        "state": breaker.state,
                    }))
                })
                .collect();
            serde_json::json!({
                "node_id": plane.node_id,
                "version": plane.version,
                "applied_at": plane.applied_at,
                "reported_at": plane.reported_at,
                "breakers": breakers,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "version": state.publisher.latest().version(),
        "now": routero_core::unix_now(),
        "data_planes": planes,
    })))
}
