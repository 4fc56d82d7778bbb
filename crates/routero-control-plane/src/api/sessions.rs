//! Sign-in sessions and break-glass local admins.
//!
//! A session is an opaque token in a cookie (`__Host-routero_session`, HttpOnly, Secure and
//! SameSite=Lax; on a loopback host, where browsers and clients will not send a Secure cookie
//! over plain HTTP, `routero_session` without Secure). The admin API takes it as it takes an
//! admin key, deciding with the session's roles through the same policies; a request that
//! changes something with a cookie must carry the session's CSRF token (`X-CSRF-Token`) and,
//! when it says where it comes from, an `Origin` of this host. Local admins are a tenant's
//! accounts for when its identity provider is down: none unless an admin creates them,
//! passwords kept as Argon2id, a lockout after repeated failures, every login audited.

use std::sync::OnceLock;

use axum::Json;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use routero_core::ErrorCode;
use routero_core::audit::{ActorKind, EventType, Outcome};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::access::Caller;
use super::admin_keys_and_roles::require_roles_to_grant;
use super::credentials_and_models::check_name;
use super::extract::{Body, Path};
use super::{ApiError, AppState, ClientInfo};
use crate::store::{LiveSession, NewSession};

/// A cookie's name off loopback (the `__Host-` prefix makes browsers insist on Secure,
/// Path=/ and no Domain) and on a loopback host, over plain HTTP.
#[derive(Debug, Clone, Copy)]
pub(super) struct CookieName {
    secure: &'static str,
    loopback: &'static str,
    /// Sent on cross-site POSTs too (SameSite=None, off loopback): a SAML response arrives
    /// as one.
    cross_site: bool,
}

impl CookieName {
    /// A cookie named `secure` off loopback and `loopback` on it.
    pub(super) const fn new(secure: &'static str, loopback: &'static str) -> Self {
        Self {
            secure,
            loopback,
            cross_site: false,
        }
    }

    /// This cookie, sent on cross-site POSTs too.
    pub(super) const fn cross_site(self) -> Self {
        Self {
            cross_site: true,
            ..self
        }
    }
}

/// The session cookie.
const SESSION_COOKIE: CookieName = CookieName::new("__Host-routero_session", "routero_session");
/// The header carrying a cookie-authenticated request's CSRF token.
const CSRF_HEADER: &str = "x-csrf-token";
/// The shortest local admin password accepted.
const MIN_PASSWORD_CHARS: usize = 12;
/// The longest password read (Argon2 hashes anything; this bounds the work).
const MAX_PASSWORD_BYTES: usize = 1024;

/// Whether the request names a loopback host.
pub(super) fn loopback(headers: &HeaderMap) -> bool {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let name = host.rsplit_once(':').map_or(host, |(name, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) {
            name
        } else {
            host
        }
    });
    matches!(name, "localhost" | "127.0.0.1" | "[::1]")
}

/// The value of cookie `name` in a request: under the one name this host's cookie has, and
/// only if it is there once (a second cookie of that name, tossed in by a sibling domain or
/// over plain HTTP, makes the request carry none).
pub(super) fn read_cookie(headers: &HeaderMap, name: CookieName) -> Option<&str> {
    let wanted = if loopback(headers) {
        name.loopback
    } else {
        name.secure
    };
    let mut found = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == wanted)
        .map(|(_, value)| value);
    match (found.next(), found.next()) {
        (Some(value), None) => Some(value),
        _ => None,
    }
}

/// The session token a request's cookie carries.
pub(super) fn session_token(headers: &HeaderMap) -> Option<&str> {
    read_cookie(headers, SESSION_COOKIE)
}

/// `Set-Cookie` for cookie `name`: HttpOnly, SameSite=Lax (None for a cross-site cookie off
/// loopback), Secure off loopback.
pub(super) fn set_cookie(
    headers: &HeaderMap,
    name: CookieName,
    value: &str,
    max_age: u64,
) -> Option<HeaderValue> {
    let text = if loopback(headers) {
        format!(
            "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}",
            name.loopback
        )
    } else {
        let same_site = if name.cross_site { "None" } else { "Lax" };
        format!(
            "{}={value}; Path=/; HttpOnly; Secure; SameSite={same_site}; Max-Age={max_age}",
            name.secure
        )
    };
    HeaderValue::from_str(&text).ok()
}

/// Checks a cookie-authenticated request: one that may change something needs the session's
/// CSRF token and, if it sends an `Origin`, this host's; any, a read too, is refused when the
/// browser says another site made it (`Sec-Fetch-Site: cross-site`: a page elsewhere
/// steering a signed-in browser to a download, say).
pub(super) fn check_csrf(
    state: &AppState,
    request: &Request,
    session: &LiveSession,
) -> Result<(), ApiError> {
    let cross_site = request
        .headers()
        .get("sec-fetch-site")
        .is_some_and(|site| site.as_bytes().eq_ignore_ascii_case(b"cross-site"));
    if cross_site {
        return Err(ApiError::new(
            ErrorCode::CsrfFailed,
            "A request made with a session cookie from another site is refused.",
        ));
    }
    if matches!(request.method().as_str(), "GET" | "HEAD" | "OPTIONS") {
        return Ok(());
    }
    let headers = request.headers();
    let presented = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|token| state.hasher.hash(token).0);
    let token_ok =
        presented.is_some_and(|hash| bool::from(hash.as_slice().ct_eq(&session.csrf_hash)));
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_ok = match (
        headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()),
        host,
    ) {
        (None, _) => true,
        (Some(origin), Some(host)) => {
            origin == format!("http://{host}") || origin == format!("https://{host}")
        }
        (Some(_), None) => false,
    };
    if token_ok && origin_ok {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::CsrfFailed,
            "A request made with a session cookie needs the session's X-CSRF-Token header and this host's Origin.",
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Login {
    /// The tenant's id or name.
    tenant: String,
    username: String,
    password: String,
}

/// A PHC string no password matches in practice, verified when the account does not exist so
/// that a wrong name takes as long as a wrong password.
fn decoy(cost: routero_crypto::PasswordCost) -> Option<&'static str> {
    static DECOY: OnceLock<Option<String>> = OnceLock::new();
    DECOY
        .get_or_init(|| routero_crypto::hash_password("routero decoy password", cost).ok())
        .as_deref()
}

/// Password checks running at once: each holds Argon2's memory (19 MiB by default) and a core.
const CONCURRENT_CHECKS: usize = 4;

fn checks() -> &'static tokio::sync::Semaphore {
    static CHECKS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    CHECKS.get_or_init(|| tokio::sync::Semaphore::new(CONCURRENT_CHECKS))
}

async fn verify(password: String, stored: String) -> bool {
    let Ok(_permit) = checks().acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || {
        routero_crypto::verify_password(&password, &stored).unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// `POST /login/local`: a local admin signs in; answers the session (its CSRF token in the
/// body, its token in the cookie). Every failure is the same 401 to the client, and is
/// recorded with its reason.
pub(super) async fn login(State(state): State<AppState>, request: Request) -> Response {
    let client = ClientInfo::of(&request, &state.trusted_proxies);
    let headers = request.headers().clone();
    let path = request.uri().path().to_owned();
    // A source past its failure limit is refused before any password is checked.
    let now = u64::try_from(routero_core::unix_now()).unwrap_or(0);
    let source = client.source();
    if let Some(wait) = state.failures.throttled(source, now) {
        return super::too_many_failures(wait);
    }
    let body = match <Body<Login> as FromRequest<AppState>>::from_request(request, &state).await {
        Ok(Body(body)) => body,
        Err(error) => return error.into_response(),
    };
    match signed_in(&state, &client, &headers, body).await {
        Ok(response) => response,
        Err(Some(reason)) => {
            let failed = super::failed_authentication(
                &state,
                &client,
                &path,
                (EventType::LoginFailed, reason),
            )
            .await;
            tracing::warn!(reason, source_ip = ?client.source_ip, "local admin login failed");
            if let Err(wait) = failed {
                return super::too_many_failures(wait);
            }
            ApiError::new(
                ErrorCode::InvalidCredentials,
                "Unknown user name or wrong password.",
            )
            .into_response()
        }
        Err(None) => ApiError::of(ErrorCode::DatabaseUnavailable).into_response(),
    }
}

/// The login itself: `Err(Some(reason))` for a refused login (recorded), `Err(None)` when the
/// store failed.
async fn signed_in(
    state: &AppState,
    client: &ClientInfo,
    headers: &HeaderMap,
    body: Login,
) -> Result<Response, Option<&'static str>> {
    let cost = state.sessions.password_cost;
    if body.password.len() > MAX_PASSWORD_BYTES {
        return Err(Some("password_too_long"));
    }
    let tenant_id = state
        .store
        .tenant_id(&body.tenant)
        .await
        .map_err(|_| None)?;
    let account = match &tenant_id {
        Some(tenant) => state
            .store
            .local_admin_login(tenant, &body.username)
            .await
            .map_err(|_| None)?,
        None => None,
    };
    let (Some(tenant_id), Some((admin, stored))) = (tenant_id, account) else {
        if let Some(decoy) = decoy(cost) {
            verify(body.password, decoy.to_owned()).await;
        }
        return Err(Some("unknown_account"));
    };
    let record_failure = |reason: &'static str| {
        let mut event = routero_bus::event(
            &tenant_id,
            EventType::LoginFailed,
            client.actor(ActorKind::User, Some(admin.id.clone())),
            routero_bus::resource("local_admin", Some(admin.id.clone())),
            Outcome::Denied,
        );
        event.reason_code = Some(reason.to_owned());
        event
    };
    // The attempt is counted before the password is checked, in one statement: a burst of
    // concurrent guesses gets no more than the limit, and a locked account none.
    let limit = i64::from(state.sessions.lockout_after);
    let lock = i64::try_from(state.sessions.lockout_for.as_secs()).unwrap_or(i64::MAX);
    let attempt = state
        .store
        .local_admin_attempt(&admin.id, limit)
        .await
        .map_err(|_| None)?;
    let Some(failures) = attempt else {
        if let Some(decoy) = decoy(cost) {
            verify(body.password, decoy.to_owned()).await;
        }
        state.publish(record_failure("locked_out")).await;
        return Err(Some("locked_out"));
    };
    if !verify(body.password, stored).await {
        let mut event = record_failure("wrong_password");
        if failures >= limit {
            let until = state
                .store
                .local_admin_lock(&admin.id, lock)
                .await
                .map_err(|_| None)?;
            event.reason_code = Some("locked_out".into());
            event.details.insert("locked_until".into(), json!(until));
        }
        state.publish(event).await;
        return Err(Some("wrong_password"));
    }
    state
        .store
        .local_admin_succeeded(&admin.id)
        .await
        .map_err(|_| None)?;
    let event = routero_bus::event(
        &tenant_id,
        EventType::LoginSuccess,
        client.actor(ActorKind::User, Some(admin.id.clone())),
        routero_bus::resource("session", None),
        Outcome::Success,
    );
    let who = Who::LocalAdmin(&admin.id);
    open_session(
        state,
        client,
        headers,
        (&tenant_id, who),
        &admin.roles,
        vec![event],
    )
    .await
    .map_err(|_| None)
}

/// The CSRF token of the session whose token is `session_token`: made from it with a key
/// derived from the pepper for this alone, so a page served to the session can carry it,
/// while what the database holds (the hashes of both) gives neither.
pub(super) fn csrf_token(key: &routero_crypto::MessageKey, session_token: &str) -> String {
    hex::encode(key.tag(session_token.as_bytes()))
}

/// Who a new session signs in.
#[derive(Debug, Clone, Copy)]
pub(super) enum Who<'a> {
    /// A break-glass local admin.
    LocalAdmin(&'a str),
    /// A user, through the tenant's identity provider.
    User(&'a str),
}

/// Opens a session in `tenant_id` for `who` acting with `roles` (a new token, whatever the
/// browser held before), recording `events` with it. Answers the session with its CSRF token
/// in the body, its token in the cookie.
pub(super) async fn open_session(
    state: &AppState,
    client: &ClientInfo,
    headers: &HeaderMap,
    (tenant_id, who): (&str, Who<'_>),
    roles: &[String],
    events: Vec<routero_core::audit::AuditEvent>,
) -> Result<Response, ApiError> {
    let failed = |_| ApiError::of(ErrorCode::InternalError);
    let token = routero_crypto::generate_api_key("rses-").map_err(failed)?;
    let csrf = csrf_token(&state.csrf, token.expose_secret());
    let lifetime = state.sessions.lifetime.as_secs();
    let (user_id, local_admin_id, principal) = match who {
        Who::LocalAdmin(id) => (None, Some(id), id),
        Who::User(id) => (Some(id), None, id),
    };
    let new = NewSession {
        token_hash: &state.hasher.hash(token.expose_secret()).0,
        csrf_hash: &state.hasher.hash(&csrf).0,
        user_id,
        local_admin_id,
        roles,
        source_ip: client.source_ip.as_deref(),
        lifetime: i64::try_from(lifetime).unwrap_or(i64::MAX),
    };
    let session = state.store.create_session(tenant_id, &new, events).await?;
    let mut response = Json(json!({
        "session_id": session.id,
        "csrf_token": csrf,
        "tenant_id": tenant_id,
        "principal": principal,
        "roles": session.roles,
        "expires_at": session.expires_at,
    }))
    .into_response();
    if let Some(cookie) = set_cookie(headers, SESSION_COOKIE, token.expose_secret(), lifetime) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    // The body carries the CSRF token: no cache keeps it.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `POST /logout`: ends the caller's session (a caller with an admin key has none) and clears
/// the cookie.
pub(super) async fn logout(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(session) = principal.session_id.clone() else {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "This caller has no session to end.",
        ));
    };
    let event = AppState::event(
        &principal,
        &client,
        EventType::Logout,
        ("session", Some(session.clone())),
    );
    state
        .store
        .revoke_session(&principal.tenant_id, &session, &[event])
        .await?;
    let mut response = Json(json!({ "session_id": session, "ended": true })).into_response();
    if let Some(cookie) = set_cookie(&headers, SESSION_COOKIE, "", 0) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// What `GET /me` says the caller may do (the console shows what these allow).
const SHOWN_ACTIONS: &[(&str, &str)] = &[
    ("key", "create"),
    ("key", "list"),
    ("audit_log", "read"),
    ("audit_log", "export"),
    ("spend_report", "read"),
    ("user", "list"),
    ("team", "list"),
    ("model", "list"),
    ("credential", "list"),
    ("policy", "read"),
    ("policy", "update"),
    ("admin_key", "list"),
    ("admin_key", "revoke"),
    ("tenant", "read"),
    ("role", "list"),
];

/// `GET /me`: who the caller is (with the name a user goes by), for any caller, and which
/// actions the policies allow it (`can`, as `"<kind>:<action>": bool`, `null` when the policy
/// engine gave no decision; the admin API decides each request again).
pub(super) async fn me(
    State(state): State<AppState>,
    Caller { principal, .. }: Caller,
) -> Json<Value> {
    let can = state.allowed_actions(&principal, SHOWN_ACTIONS).await;
    let name = match &principal.user_id {
        Some(user) => state
            .store
            .user_name(&principal.tenant_id, user)
            .await
            .unwrap_or_else(|error| {
                tracing::error!(%error, "the signed-in user's name could not be read");
                None
            }),
        None => None,
    };
    Json(json!({
        "name": name,
        "tenant_id": principal.tenant_id,
        "principal": principal.key_id,
        "kind": if principal.session_id.is_some() { "session" } else { "admin_key" },
        "session_id": principal.session_id,
        "user_id": principal.user_id,
        "roles": principal.roles,
        "teams": principal.teams,
        "can": can,
    }))
}

/// `GET /sessions`: the tenant's live sessions.
pub(super) async fn list_sessions(
    State(state): State<AppState>,
    Caller { principal, .. }: Caller,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "sessions": state.store.list_sessions(&principal.tenant_id).await? }),
    ))
}

/// `DELETE /sessions/{id}`: ends a session of the tenant at once.
pub(super) async fn revoke_session(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let event = AppState::event(
        &principal,
        &client,
        EventType::SessionRevoked,
        ("session", Some(id.clone())),
    );
    state
        .store
        .revoke_session(&principal.tenant_id, &id, &[event])
        .await?;
    Ok(Json(json!({ "id": id, "revoked": true })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewLocalAdmin {
    username: String,
    password: String,
    #[serde(default = "admin_role")]
    roles: Vec<String>,
}

fn admin_role() -> Vec<String> {
    vec![crate::ADMIN_ROLE.to_owned()]
}

/// `POST /local-admins`: creates a break-glass account (only a caller with `admin`).
pub(super) async fn create_local_admin(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
    Body(body): Body<NewLocalAdmin>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if !state.sessions.break_glass {
        return Err(ApiError::of(ErrorCode::BreakGlassDisabled));
    }
    check_name("username", &body.username)?;
    require_roles_to_grant(&state, &principal.tenant_id, &body.roles).await?;
    let admin = admin_role();
    state
        .allow_held(
            &principal,
            &client,
            ("local_admin", "*"),
            "create",
            &admin,
            &[],
        )
        .await?;
    let chars = body.password.chars().count();
    if chars < MIN_PASSWORD_CHARS || body.password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            format!("password: {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    let cost = state.sessions.password_cost;
    let password = body.password;
    let hash = tokio::task::spawn_blocking(move || routero_crypto::hash_password(&password, cost))
        .await
        .map_err(|_| ApiError::of(ErrorCode::InternalError))?
        .map_err(|_| ApiError::of(ErrorCode::InternalError))?;
    let event = AppState::event(
        &principal,
        &client,
        EventType::LocalAdminCreated,
        ("local_admin", None),
    );
    let created = state
        .store
        .create_local_admin(
            &principal.tenant_id,
            &body.username,
            &hash,
            &body.roles,
            vec![event],
        )
        .await?;
    Ok((StatusCode::CREATED, Json(json!(created))))
}

/// `GET /local-admins`: the tenant's break-glass accounts (never a password).
pub(super) async fn list_local_admins(
    State(state): State<AppState>,
    Caller { principal, .. }: Caller,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "local_admins": state.store.list_local_admins(&principal.tenant_id).await? }),
    ))
}

/// `DELETE /local-admins/{id}`: deletes a break-glass account and ends its sessions.
pub(super) async fn delete_local_admin(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let admin = admin_role();
    state
        .allow_held(
            &principal,
            &client,
            ("local_admin", &id),
            "delete",
            &admin,
            &[],
        )
        .await?;
    let event = AppState::event(
        &principal,
        &client,
        EventType::LocalAdminDeleted,
        ("local_admin", Some(id.clone())),
    );
    let changer = AppState::changer(&principal, &client);
    state
        .store
        .delete_local_admin(&changer, &id, vec![event])
        .await?;
    Ok(Json(json!({ "id": id, "deleted": true })))
}
