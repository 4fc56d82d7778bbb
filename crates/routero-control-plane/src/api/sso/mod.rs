//! Single sign-on through each tenant's identity provider, OpenID Connect (`oidc`) or SAML 2.0
//! (`saml`).
//!
//! An admin sets the provider (`PUT /sso/oidc`, `PUT /sso/saml`). A browser begins at the
//! protocol's login URL: the pending login is kept under the HMAC of its `state` (OIDC) or
//! `RelayState` (SAML) and bound to that browser by a cookie; the provider's answer takes it
//! once. The person is then linked to the tenant's user (the one who signed in as them before;
//! else SCIM's user with their subject as external id, or with their verified email), or
//! created at first login when the tenant turned JIT on; their groups go through the tenant's
//! role mapping, and a session opens. Every refusal is one 401 `sso_login_failed` naming the
//! reason, recorded as `login.failed`.

mod oidc;
mod saml;

pub(super) use oidc::{callback as oidc_callback, delete_oidc, get_oidc, put_oidc};
pub(super) use saml::{
    acs as saml_acs, delete_saml, get_saml, put_saml, sp_metadata as saml_metadata,
};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use routero_core::ErrorCode;
use routero_core::audit::{ActorKind, EventType, Outcome};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::access::Caller;
use super::sessions::{CookieName, Who, open_session, read_cookie, session_token, set_cookie};
use super::{ApiError, AppState, ClientInfo};
use crate::ControlPlaneError;
use crate::store::{Linked, PendingLogin, SsoConfig, TakenLogin, User, Vouched};

/// The protocols' names in the store and in audit records.
const OIDC: &str = "oidc";
const SAML: &str = "saml";
/// How long a login may take at the provider.
const LOGIN_SECONDS: i64 = 600;
/// The most logins of one tenant pending at once (an unauthenticated GET begins one), and of
/// those begun from one address.
const MAX_PENDING: i64 = 10_000;
const MAX_PENDING_PER_SOURCE: i64 = 30;
/// The longest `Host` a redirect URI is built from.
const MAX_HOST_BYTES: usize = 255;

/// Where browsers reach this API: the `public_url` setting, else the request's host.
fn public_base(state: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    if let Some(url) = &state.public_url {
        return Ok(url.clone());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= MAX_HOST_BYTES
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                "The request's Host is not a host name; set public_url.",
            )
        })?;
    let scheme = if super::sessions::loopback(headers) {
        "http"
    } else {
        "https"
    };
    Ok(format!("{scheme}://{host}"))
}

/// A refused sign-in: its stable reason, what was wrong, and the tenant when known.
struct Refusal {
    reason: &'static str,
    detail: String,
    tenant_id: Option<String>,
}

/// Why a sign-in ended without a session.
enum Failure {
    /// Refused (recorded as `login.failed`).
    Refused(Refusal),
    /// The store or the provider failed.
    Error(ApiError),
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Self::Error(error)
    }
}

impl From<ControlPlaneError> for Failure {
    fn from(error: ControlPlaneError) -> Self {
        Self::Error(error.into())
    }
}

/// A refusal of `reason` in `tenant_id` (when known).
fn refusal(reason: &'static str, detail: impl Into<String>, tenant_id: Option<&str>) -> Failure {
    Failure::Refused(Refusal {
        reason,
        detail: detail.into(),
        tenant_id: tenant_id.map(str::to_owned),
    })
}

/// Answers a failed sign-in: a refusal is 401 `sso_login_failed` naming the reason, recorded
/// as `login.failed` under the tenant when it is known, and counted against the source.
async fn answer(
    state: &AppState,
    client: &ClientInfo,
    (path, protocol): (&str, &str),
    failure: Failure,
) -> Response {
    let refusal = match failure {
        Failure::Refused(refusal) => refusal,
        Failure::Error(error) => return error.into_response(),
    };
    tracing::warn!(reason = refusal.reason, detail = %refusal.detail, protocol, source_ip = ?client.source_ip, "single sign-on refused");
    let counted = match &refusal.tenant_id {
        None => {
            super::failed_authentication(
                state,
                client,
                path,
                (EventType::LoginFailed, refusal.reason),
            )
            .await
        }
        Some(tenant_id) => {
            let mut event = routero_bus::event(
                tenant_id,
                EventType::LoginFailed,
                client.actor(ActorKind::Anonymous, None),
                routero_bus::resource("sso", Some(protocol.to_owned())),
                Outcome::Denied,
            );
            event.reason_code = Some(refusal.reason.to_owned());
            event.details.insert("protocol".into(), json!(protocol));
            let detail: String = refusal.detail.chars().take(300).collect();
            event.details.insert("detail".into(), json!(detail));
            state.publish(event).await;
            count_failure(state, client)
        }
    };
    if let Err(wait) = counted {
        return super::too_many_failures(wait);
    }
    ApiError::new(
        ErrorCode::SsoLoginFailed,
        format!("Single sign-on refused: {}.", refusal.reason),
    )
    .into_response()
}

fn now_seconds() -> u64 {
    u64::try_from(routero_core::unix_now()).unwrap_or(0)
}

/// Counts a failure against the source: `Err(wait)` once it is past the limit.
fn count_failure(state: &AppState, client: &ClientInfo) -> Result<(), u64> {
    let now = now_seconds();
    match state.failures.fail(client.source(), now) {
        routero_core::Verdict::Throttle => {
            Err(state.failures.throttled(client.source(), now).unwrap_or(1))
        }
        _ => Ok(()),
    }
}

/// A source past its failure limit: answered 429 before anything else is done.
fn throttled(state: &AppState, client: &ClientInfo) -> Option<Response> {
    state
        .failures
        .throttled(client.source(), now_seconds())
        .map(super::too_many_failures)
}

fn query<T: DeserializeOwned>(uri: &Uri) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(uri)
        .map(|axum::extract::Query(value)| value)
        .map_err(|e| ApiError::new(ErrorCode::InvalidQuery, e.body_text()))
}

/// `?tenant=<id or name>` of a login URL, and `return=console` to land in the console.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantQuery {
    tenant: String,
    #[serde(default, rename = "return")]
    return_to: Option<ReturnTo>,
}

/// Where a browser goes once signed in (instead of the session's JSON).
#[derive(serde::Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum ReturnTo {
    /// `/console`.
    Console,
}

/// Remembers, for the browser that began a login, that it returns to the console (sent with
/// a SAML provider's cross-site POST too).
const RETURN_COOKIE: CookieName =
    CookieName::new("__Host-routero_return", "routero_return").cross_site();

/// A finished sign-in's answer: the session's JSON, or, for a browser that began it from the
/// console, 303 to `/console` with the same cookies (the console derives the CSRF token from
/// the session itself). The return cookie is spent either way.
fn returned(headers: &HeaderMap, signed_in: Response) -> Response {
    let mut response = if read_cookie(headers, RETURN_COOKIE) == Some("console")
        && signed_in.status().is_success()
    {
        let mut to_console =
            (StatusCode::SEE_OTHER, [(header::LOCATION, "/console")]).into_response();
        for cookie in signed_in.headers().get_all(header::SET_COOKIE) {
            to_console
                .headers_mut()
                .append(header::SET_COOKIE, cookie.clone());
        }
        to_console
    } else {
        signed_in
    };
    if read_cookie(headers, RETURN_COOKIE).is_some()
        && let Some(cookie) = set_cookie(headers, RETURN_COOKIE, "", 0)
    {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// The tenant a public SSO URL names, with its settings for `protocol`; 404
/// `sso_not_configured` when either is missing.
async fn tenant_config<T: DeserializeOwned>(
    state: &AppState,
    uri: &Uri,
    protocol: &str,
) -> Result<(String, T, SsoConfig), ApiError> {
    let TenantQuery { tenant, .. } = query(uri)?;
    let Some(tenant_id) = state.store.tenant_id(&tenant).await? else {
        return Err(ApiError::of(ErrorCode::SsoNotConfigured));
    };
    let Some((settings, config)) = config_of(state, &tenant_id, protocol).await? else {
        return Err(ApiError::of(ErrorCode::SsoNotConfigured));
    };
    Ok((tenant_id, settings, config))
}

/// The tenant's settings for `protocol`.
async fn config_of<T: DeserializeOwned>(
    state: &AppState,
    tenant_id: &str,
    protocol: &str,
) -> Result<Option<(T, SsoConfig)>, ApiError> {
    let Some(config) = state.store.sso_config(tenant_id, protocol).await? else {
        return Ok(None);
    };
    let settings = serde_json::from_str(&config.settings)
        .map_err(|_| ApiError::of(ErrorCode::InternalError))?;
    Ok(Some((settings, config)))
}

/// `DELETE /sso/<protocol>`: removes the tenant's provider (sessions already open stay until
/// they end; the groups it named at past sign-ins are forgotten).
async fn delete_config(
    state: &AppState,
    Caller { principal, client }: Caller,
    protocol: &str,
) -> Result<Json<Value>, ApiError> {
    let mut event = AppState::event(
        &principal,
        &client,
        EventType::SsoConfigUpdated,
        ("sso_config", Some(protocol.to_owned())),
    );
    event.details.insert("removed".into(), json!(true));
    if !state
        .store
        .delete_sso_config(&principal.tenant_id, protocol, &[event])
        .await?
    {
        return Err(ApiError::of(ErrorCode::SsoNotConfigured));
    }
    Ok(Json(json!({ "protocol": protocol, "removed": true })))
}

/// What a login keeps while the browser is at the provider.
struct Keep {
    protocol: &'static str,
    /// The cookie binding it to the browser.
    cookie: CookieName,
    nonce: String,
    verifier: String,
    redirect_uri: String,
}

/// A login a protocol began: where to send the browser, and what to keep until it comes back
/// under `login_state` (OIDC's `state`, SAML's `RelayState`).
struct Start {
    tenant_id: String,
    url: String,
    login_state: String,
    keep: Keep,
}

/// `GET /sso/oidc/login?tenant=<id>`: sends the browser to the tenant's OpenID provider.
pub(super) async fn begin_oidc(State(state): State<AppState>, request: Request) -> Response {
    begin(&state, request, OIDC).await
}

/// `GET /sso/saml/login?tenant=<id>`: sends the browser to the tenant's SAML provider.
pub(super) async fn begin_saml(State(state): State<AppState>, request: Request) -> Response {
    begin(&state, request, SAML).await
}

/// Begins a login of `protocol`: 303 to the provider, with the cookie binding the login to
/// this browser; a source past its failure limit is answered 429 first.
async fn begin(state: &AppState, request: Request, protocol: &str) -> Response {
    let client = ClientInfo::of(&request, &state.trusted_proxies);
    if let Some(refused) = throttled(state, &client) {
        return refused;
    }
    let (parts, _) = request.into_parts();
    let started = if protocol == OIDC {
        oidc::start(state, &parts.headers, &parts.uri).await
    } else {
        saml::start(state, &parts.headers, &parts.uri).await
    };
    let redirected = match started {
        Ok(start) => redirect(state, (&client, &parts.headers), start).await,
        Err(error) => Err(error),
    };
    // Only the console's own sign-in form sends a browser back to it: a login another site
    // starts (into a tenant of its choosing) ends on the session's JSON, not in a console.
    let same_origin = parts
        .headers
        .get("sec-fetch-site")
        .is_some_and(|site| site.as_bytes() == b"same-origin");
    let console = same_origin
        && query::<TenantQuery>(&parts.uri).is_ok_and(|q| q.return_to == Some(ReturnTo::Console));
    let mut response = redirected.unwrap_or_else(IntoResponse::into_response);
    if console
        && response.status() == StatusCode::SEE_OTHER
        && let Some(cookie) = set_cookie(&parts.headers, RETURN_COOKIE, "console", 600)
    {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// Keeps `start`'s login and sends the browser to the provider.
async fn redirect(
    state: &AppState,
    (client, headers): (&ClientInfo, &HeaderMap),
    start: Start,
) -> Result<Response, ApiError> {
    let cookie = keep_login(
        state,
        (client, headers),
        (&start.tenant_id, &start.login_state),
        start.keep,
    )
    .await?;
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, start.url)]).into_response();
    if let Some(cookie) = cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Keeps a login begun in `tenant_id` under the HMAC of `login_state`, and binds it to the
/// browser: the cookie to set on the response that sends the browser away.
async fn keep_login(
    state: &AppState,
    (client, headers): (&ClientInfo, &HeaderMap),
    (tenant_id, login_state): (&str, &str),
    keep: Keep,
) -> Result<Option<HeaderValue>, ApiError> {
    let source_ip = client.source_ip.as_deref();
    let (pending, mine) = state.store.pending_sso_logins(tenant_id, source_ip).await?;
    if pending >= MAX_PENDING || mine >= MAX_PENDING_PER_SOURCE {
        return Err(ApiError::new(
            ErrorCode::TooManyAuthFailures,
            "Too many sign-ins of this tenant are under way; retry in a few minutes.",
        ));
    }
    let browser =
        routero_crypto::generate_api_key("").map_err(|_| ApiError::of(ErrorCode::InternalError))?;
    let pending = PendingLogin {
        tenant_id: tenant_id.to_owned(),
        protocol: keep.protocol.to_owned(),
        browser_hash: state.hasher.hash(browser.expose_secret()).0.to_vec(),
        nonce: keep.nonce,
        verifier: keep.verifier,
        redirect_uri: keep.redirect_uri,
        source_ip: client.source_ip.clone(),
        expires_at: routero_core::unix_now() + LOGIN_SECONDS,
    };
    state
        .store
        .begin_sso_login(&state.hasher.hash(login_state).0, &pending)
        .await?;
    let max_age = u64::try_from(LOGIN_SECONDS).unwrap_or(600);
    Ok(set_cookie(
        headers,
        keep.cookie,
        browser.expose_secret(),
        max_age,
    ))
}

/// Takes the login `login_state` keeps, once: refused when it was used before (a replay),
/// never begun, of another protocol or tenant, too old, or begun in another browser.
async fn take_login(
    state: &AppState,
    headers: &HeaderMap,
    (login_state, protocol, cookie): (&str, &str, CookieName),
    tenant_id: Option<&str>,
) -> Result<PendingLogin, Failure> {
    let pending = match state
        .store
        .take_sso_login(&state.hasher.hash(login_state).0)
        .await?
    {
        TakenLogin::Fresh(pending) => pending,
        TakenLogin::Used(tenant) => {
            return Err(refusal(
                "state_replayed",
                "this login was already finished",
                Some(&tenant),
            ));
        }
        TakenLogin::Unknown => {
            return Err(refusal(
                "state_unknown",
                "no login began with this state",
                tenant_id,
            ));
        }
    };
    let tenant = Some(pending.tenant_id.as_str());
    if pending.protocol != protocol || tenant_id.is_some_and(|t| t != pending.tenant_id) {
        return Err(refusal(
            "state_unknown",
            "the state is another protocol's or tenant's",
            tenant,
        ));
    }
    if pending.expires_at <= routero_core::unix_now() {
        return Err(refusal(
            "login_expired",
            "the login took too long at the provider",
            tenant,
        ));
    }
    let browser_ok = read_cookie(headers, cookie)
        .map(|value| state.hasher.hash(value).0)
        .is_some_and(|hash| bool::from(hash.as_slice().ct_eq(&pending.browser_hash)));
    if !browser_ok {
        return Err(refusal(
            "browser_mismatch",
            "the login was begun in another browser",
            tenant,
        ));
    }
    Ok(pending)
}

/// The person a provider vouched for.
struct Person {
    protocol: &'static str,
    issuer: String,
    subject: String,
    /// A name for a new user (never used to link).
    username: Option<String>,
    verified_email: Option<String>,
    name: Option<String>,
    /// The groups it named; `None` when the tenant reads none.
    groups: Option<Vec<String>>,
}

/// Signs `person` into `tenant_id`: links them to the tenant's user (or creates one, with
/// `jit`), refuses a user SCIM deactivated or one the role mapping gives no role, and opens a
/// session with their roles.
async fn sign_in(
    state: &AppState,
    client: &ClientInfo,
    headers: &HeaderMap,
    (tenant_id, jit): (&str, bool),
    person: Person,
) -> Result<Response, Failure> {
    let tenant = Some(tenant_id);
    // A browser signed in elsewhere is not silently moved into this tenant (a page could have
    // sent it through another tenant's provider).
    if let Some(token) = session_token(headers) {
        let idle = i64::try_from(state.sessions.idle.as_secs()).unwrap_or(i64::MAX);
        if let Some(live) = state
            .store
            .find_session(&state.hasher.hash(token).0, idle)
            .await?
            && live.principal.tenant_id != tenant_id
        {
            return Err(refusal(
                "signed_in_elsewhere",
                "this browser is signed in to another tenant; sign out first",
                tenant,
            ));
        }
    }
    let vouched = Vouched {
        issuer: &person.issuer,
        subject: &person.subject,
        verified_email: person.verified_email.as_deref(),
    };
    let user_id = match state.store.sso_user(tenant_id, vouched).await? {
        Linked::User { id, active: true } => id,
        Linked::User { active: false, .. } => {
            return Err(refusal("user_inactive", "the user is deactivated", tenant));
        }
        Linked::Ambiguous => {
            return Err(refusal(
                "user_ambiguous",
                "more than one user has this email address",
                tenant,
            ));
        }
        Linked::Unknown if jit => just_in_time(state, client, tenant_id, &person).await?,
        Linked::Unknown => {
            return Err(refusal(
                "user_unknown",
                "no user of the tenant is this person, and JIT provisioning is off",
                tenant,
            ));
        }
    };
    state
        .store
        .link_sso_user(tenant_id, &user_id, vouched)
        .await?;
    if let Some(groups) = &person.groups {
        state
            .store
            .record_sso_groups(tenant_id, &user_id, groups)
            .await?;
    }
    let roles = state.store.sso_roles(tenant_id, &user_id).await?;
    if roles.is_empty() {
        return Err(refusal(
            "no_roles",
            "the tenant's role mapping gives this person no role",
            tenant,
        ));
    }
    let mut event = routero_bus::event(
        tenant_id,
        EventType::LoginSuccess,
        client.actor(ActorKind::User, Some(user_id.clone())),
        routero_bus::resource("session", None),
        Outcome::Success,
    );
    event
        .details
        .insert("protocol".into(), json!(person.protocol));
    event.details.insert("issuer".into(), json!(person.issuer));
    event
        .details
        .insert("subject".into(), json!(person.subject));
    Ok(open_session(
        state,
        client,
        headers,
        (tenant_id, Who::User(&user_id)),
        &roles,
        vec![event],
    )
    .await?)
}

/// Creates the user a provider vouched for, at their first login (`user.provisioned`); a
/// name another user holds is refused.
async fn just_in_time(
    state: &AppState,
    client: &ClientInfo,
    tenant_id: &str,
    person: &Person,
) -> Result<String, Failure> {
    let user_name = person
        .verified_email
        .clone()
        .or_else(|| person.username.clone())
        .unwrap_or_else(|| person.subject.clone());
    let changer = crate::store::Changer {
        tenant_id: tenant_id.to_owned(),
        actor: client.actor(ActorKind::System, Some(format!("sso:{}", person.protocol))),
        scim: false,
    };
    let user = User {
        id: String::new(),
        user_name,
        email: person.verified_email.clone(),
        display_name: person.name.clone(),
        external_id: Some(person.subject.clone()),
        active: true,
        team_ids: Vec::new(),
        scim_managed: false,
    };
    match state.store.create_user(&changer, &user).await {
        Ok(created) => Ok(created.id),
        Err(ControlPlaneError::Conflict(_)) => Err(refusal(
            "user_name_taken",
            "another user of the tenant has this person's name",
            Some(tenant_id),
        )),
        Err(error) => Err(error.into()),
    }
}
