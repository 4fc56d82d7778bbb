//! Single sign-on through each tenant's OpenID Connect provider.
//!
//! An admin sets the provider (`PUT /sso/oidc`; the client secret sealed in the vault, bound
//! to the tenant and the issuer, never shown again). A browser begins at
//! `GET /sso/oidc/login?tenant=<id>`: the pending login is kept under the HMAC of its `state`
//! and bound to that browser by a cookie; `GET /sso/oidc/callback` takes it once, checks the
//! provider's answer in full, links the person to the tenant's user (SCIM's, or created at
//! first login when the tenant turned JIT on), maps their groups to roles and opens a session.
//! Every refusal is one 401 `sso_login_failed` naming the reason, recorded as `login.failed`.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use routero_core::ErrorCode;
use routero_core::audit::{ActorKind, AuditEvent, EventType, Outcome};
use routero_crypto::CredentialBinding;
use routero_oidc::{IdpSettings, OidcError, Pending};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::access::Caller;
use super::extract::Body;
use super::sessions::{CookieName, Who, open_session, read_cookie, set_cookie};
use super::{ApiError, AppState, ClientInfo};
use crate::store::{Linked, PendingLogin, TakenLogin, User, Vouched};

/// The protocol's name in the store and in audit records.
const OIDC: &str = "oidc";
/// The cookie binding a login to the browser that began it.
const BROWSER_COOKIE: CookieName = CookieName::new("__Host-routero_sso", "routero_sso");
/// How long a login may take at the provider.
const LOGIN_SECONDS: i64 = 600;
/// The longest client secret taken.
const MAX_SECRET_BYTES: usize = 4096;

/// `PUT /sso/oidc`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OidcConfig {
    issuer: String,
    client_id: String,
    client_secret: String,
    #[serde(default)]
    groups_claim: Option<String>,
    #[serde(default = "default_scopes")]
    scopes: Vec<String>,
    #[serde(default)]
    jit: bool,
    #[serde(default)]
    authorization_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint: Option<String>,
    #[serde(default)]
    jwks_uri: Option<String>,
    #[serde(default)]
    userinfo_endpoint: Option<String>,
}

fn default_scopes() -> Vec<String> {
    vec!["email".into(), "profile".into()]
}

/// The vault binding of a tenant's OIDC client secret: to the tenant and the issuer, so a row
/// repointed at another issuer no longer decrypts.
fn binding<'a>(tenant_id: &'a str, issuer: &'a str) -> CredentialBinding<'a> {
    CredentialBinding {
        tenant: tenant_id,
        credential_id: "sso:oidc",
        base_url: issuer,
    }
}

/// Where browsers reach this API: the `public_url` setting, else the request's host.
fn public_base(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.public_url {
        return url.clone();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if super::sessions::loopback(headers) {
        "http"
    } else {
        "https"
    };
    format!("{scheme}://{host}")
}

fn redirect_uri(state: &AppState, headers: &HeaderMap) -> String {
    format!("{}/sso/oidc/callback", public_base(state, headers))
}

fn settings_error(error: OidcError) -> ApiError {
    match error {
        OidcError::Unavailable(detail) => ApiError::new(ErrorCode::IdpUnavailable, detail),
        OidcError::Settings(detail) | OidcError::Refused { detail, .. } => {
            ApiError::new(ErrorCode::InvalidSsoConfig, detail)
        }
    }
}

/// What an admin sees of the tenant's provider: never the secret.
fn view(
    state: &AppState,
    headers: &HeaderMap,
    (tenant_id, idp): (&str, &IdpSettings),
    jit: bool,
    version: i64,
) -> Value {
    let base = public_base(state, headers);
    json!({
        "protocol": OIDC,
        "issuer": idp.issuer,
        "client_id": idp.client_id,
        "client_secret_set": true,
        "groups_claim": idp.groups_claim,
        "scopes": idp.scopes,
        "jit": jit,
        "authorization_endpoint": idp.authorization_endpoint,
        "token_endpoint": idp.token_endpoint,
        "jwks_uri": idp.jwks_uri,
        "userinfo_endpoint": idp.userinfo_endpoint,
        "version": version,
        "redirect_uri": format!("{base}/sso/oidc/callback"),
        "login_url": format!("{base}/sso/oidc/login?tenant={tenant_id}"),
    })
}

/// `PUT /sso/oidc`: sets the tenant's OpenID Connect provider. The provider is reached at
/// once (discovery and keys), so a mistake shows now rather than at someone's login.
pub(super) async fn put_oidc(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
    headers: HeaderMap,
    Body(body): Body<OidcConfig>,
) -> Result<Json<Value>, ApiError> {
    let idp = IdpSettings {
        issuer: body.issuer,
        client_id: body.client_id,
        groups_claim: body.groups_claim,
        scopes: body.scopes,
        authorization_endpoint: body.authorization_endpoint,
        token_endpoint: body.token_endpoint,
        jwks_uri: body.jwks_uri,
        userinfo_endpoint: body.userinfo_endpoint,
    };
    idp.check().map_err(settings_error)?;
    if body.client_secret.is_empty() || body.client_secret.len() > MAX_SECRET_BYTES {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            format!("client_secret: 1 to {MAX_SECRET_BYTES} bytes"),
        ));
    }
    state
        .relying_party
        .reach(&idp)
        .await
        .map_err(settings_error)?;
    let tenant_id = &principal.tenant_id;
    let sealed = state
        .vault
        .encrypt(&binding(tenant_id, &idp.issuer), &body.client_secret)?;
    let settings =
        serde_json::to_string(&idp).map_err(|_| ApiError::of(ErrorCode::InternalError))?;
    let mut event = AppState::event(
        &principal,
        &client,
        EventType::SsoConfigUpdated,
        ("sso_config", Some(OIDC.to_owned())),
    );
    event.details.insert("issuer".into(), json!(idp.issuer));
    event
        .details
        .insert("client_id".into(), json!(idp.client_id));
    event.details.insert("jit".into(), json!(body.jit));
    let version = state
        .store
        .put_sso_config(
            tenant_id,
            OIDC,
            (&settings, Some(&sealed), body.jit),
            &[event],
        )
        .await?;
    Ok(Json(view(
        &state,
        &headers,
        (tenant_id, &idp),
        body.jit,
        version,
    )))
}

/// `GET /sso/oidc`: the tenant's OpenID Connect provider, without its secret.
pub(super) async fn get_oidc(
    State(state): State<AppState>,
    Caller { principal, .. }: Caller,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = &principal.tenant_id;
    let Some(config) = state.store.sso_config(tenant_id, OIDC).await? else {
        return Err(ApiError::of(ErrorCode::SsoNotConfigured));
    };
    let idp: IdpSettings = serde_json::from_str(&config.settings)
        .map_err(|_| ApiError::of(ErrorCode::InternalError))?;
    Ok(Json(view(
        &state,
        &headers,
        (tenant_id, &idp),
        config.jit,
        config.version,
    )))
}

/// `DELETE /sso/oidc`: removes the tenant's OpenID Connect provider (sessions already open
/// stay until they end).
pub(super) async fn delete_oidc(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
) -> Result<Json<Value>, ApiError> {
    let mut event = AppState::event(
        &principal,
        &client,
        EventType::SsoConfigUpdated,
        ("sso_config", Some(OIDC.to_owned())),
    );
    event.details.insert("removed".into(), json!(true));
    if !state
        .store
        .delete_sso_config(&principal.tenant_id, OIDC, &[event])
        .await?
    {
        return Err(ApiError::of(ErrorCode::SsoNotConfigured));
    }
    Ok(Json(json!({ "protocol": OIDC, "removed": true })))
}

/// A refused sign-in: its stable reason, what was wrong, and the tenant when known.
struct Refusal {
    reason: &'static str,
    detail: String,
    tenant_id: Option<String>,
}

impl Refusal {
    fn new(reason: &'static str, detail: impl Into<String>, tenant_id: Option<&str>) -> Self {
        Self {
            reason,
            detail: detail.into(),
            tenant_id: tenant_id.map(str::to_owned),
        }
    }
}

/// Answers a refused sign-in (401 `sso_login_failed` naming the reason) and records it as
/// `login.failed`, under the tenant when it is known; counts it against the source address.
async fn refuse(state: &AppState, client: &ClientInfo, path: &str, refusal: Refusal) -> Response {
    tracing::warn!(reason = refusal.reason, detail = %refusal.detail, source_ip = ?client.source_ip, "single sign-on refused");
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
                routero_bus::resource("sso", Some(OIDC.to_owned())),
                Outcome::Denied,
            );
            event.reason_code = Some(refusal.reason.to_owned());
            event.details.insert("protocol".into(), json!(OIDC));
            event.details.insert("detail".into(), json!(refusal.detail));
            state.publish(event).await;
            let now = u64::try_from(routero_core::unix_now()).unwrap_or(0);
            match state.failures.fail(source(client), now) {
                routero_core::Verdict::Throttle => {
                    Err(state.failures.throttled(source(client), now).unwrap_or(1))
                }
                _ => Ok(()),
            }
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

fn source(client: &ClientInfo) -> std::net::IpAddr {
    client
        .source_ip
        .as_deref()
        .and_then(|ip| ip.parse().ok())
        .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]))
}

fn query<T: serde::de::DeserializeOwned>(uri: &Uri) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(uri)
        .map(|axum::extract::Query(value)| value)
        .map_err(|e| ApiError::new(ErrorCode::InvalidQuery, e.body_text()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Begin {
    tenant: String,
}

/// The tenant's OIDC settings and version.
async fn tenant_idp(
    state: &AppState,
    tenant_id: &str,
) -> Result<Option<(IdpSettings, crate::store::SsoConfig)>, ApiError> {
    let Some(config) = state.store.sso_config(tenant_id, OIDC).await? else {
        return Ok(None);
    };
    let idp = serde_json::from_str(&config.settings)
        .map_err(|_| ApiError::of(ErrorCode::InternalError))?;
    Ok(Some((idp, config)))
}

/// `GET /sso/oidc/login?tenant=<id>`: sends the browser to the tenant's provider.
pub(super) async fn begin(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    match begun(&state, &headers, &uri).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn begun(state: &AppState, headers: &HeaderMap, uri: &Uri) -> Result<Response, ApiError> {
    let Begin { tenant } = query(uri)?;
    let tenant_id = state.store.tenant_id(&tenant).await?;
    let Some(tenant_id) = tenant_id else {
        return Err(ApiError::of(ErrorCode::SsoNotConfigured));
    };
    let Some((idp, config)) = tenant_idp(state, &tenant_id).await? else {
        return Err(ApiError::of(ErrorCode::SsoNotConfigured));
    };
    let redirect_uri = redirect_uri(state, headers);
    let cache_key = format!("{tenant_id}:{}", config.version);
    let begun = state
        .relying_party
        .begin(&cache_key, &idp, &redirect_uri)
        .await
        .map_err(settings_error)?;
    let browser =
        routero_crypto::generate_api_key("").map_err(|_| ApiError::of(ErrorCode::InternalError))?;
    let pending = PendingLogin {
        tenant_id,
        protocol: OIDC.to_owned(),
        browser_hash: state.hasher.hash(browser.expose_secret()).0.to_vec(),
        nonce: begun.nonce,
        verifier: begun.verifier,
        redirect_uri,
        expires_at: routero_core::unix_now() + LOGIN_SECONDS,
    };
    state
        .store
        .begin_sso_login(&state.hasher.hash(&begun.state).0, &pending)
        .await?;
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, begun.url)]).into_response();
    let max_age = u64::try_from(LOGIN_SECONDS).unwrap_or(600);
    if let Some(cookie) = set_cookie(headers, BROWSER_COOKIE, browser.expose_secret(), max_age) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

#[derive(Deserialize)]
struct Callback {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
}

/// `GET /sso/oidc/callback`: finishes a login the provider sent back.
pub(super) async fn callback(State(state): State<AppState>, request: Request) -> Response {
    let client = ClientInfo::of(&request, &state.trusted_proxies);
    let (parts, _) = request.into_parts();
    let path = parts.uri.path().to_owned();
    if let Some(wait) = state.failures.throttled(
        source(&client),
        u64::try_from(routero_core::unix_now()).unwrap_or(0),
    ) {
        return super::too_many_failures(wait);
    }
    let outcome = match query::<Callback>(&parts.uri) {
        Ok(answer) => finished(&state, &client, &parts.headers, answer).await,
        Err(error) => return error.into_response(),
    };
    let mut response = match outcome {
        Ok(response) => response,
        Err(Ok(refusal)) => refuse(&state, &client, &path, refusal).await,
        Err(Err(error)) => error.into_response(),
    };
    // The browser binding is used up either way.
    if let Some(cookie) = set_cookie(&parts.headers, BROWSER_COOKIE, "", 0) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// The sign-in itself: `Err(Ok(refusal))` for a refused one (recorded), `Err(Err(error))`
/// when the store or the provider failed.
async fn finished(
    state: &AppState,
    client: &ClientInfo,
    headers: &HeaderMap,
    answer: Callback,
) -> Result<Response, Result<Refusal, ApiError>> {
    let Some(login_state) = answer.state.filter(|s| !s.is_empty() && s.len() <= 512) else {
        return Err(Ok(Refusal::new(
            "state_missing",
            "the callback carries no state",
            None,
        )));
    };
    let pending = match state
        .store
        .take_sso_login(&state.hasher.hash(&login_state).0)
        .await
        .map_err(|e| Err(e.into()))?
    {
        TakenLogin::Fresh(pending) => pending,
        TakenLogin::Used(tenant_id) => {
            return Err(Ok(Refusal::new(
                "state_replayed",
                "this login was already finished",
                Some(&tenant_id),
            )));
        }
        TakenLogin::Unknown => {
            return Err(Ok(Refusal::new(
                "state_unknown",
                "no login began with this state",
                None,
            )));
        }
    };
    let tenant = Some(pending.tenant_id.as_str());
    let refused = |reason, detail: &str| Err(Ok(Refusal::new(reason, detail, tenant)));
    if pending.protocol != OIDC {
        return refused(
            "state_unknown",
            "the state is not an OpenID Connect login's",
        );
    }
    if pending.expires_at <= routero_core::unix_now() {
        return refused("login_expired", "the login took too long at the provider");
    }
    let browser_ok = read_cookie(headers, BROWSER_COOKIE)
        .map(|cookie| state.hasher.hash(cookie).0)
        .is_some_and(|hash| bool::from(hash.as_slice().ct_eq(&pending.browser_hash)));
    if !browser_ok {
        return refused("browser_mismatch", "the login was begun in another browser");
    }
    if let Some(error) = answer.error {
        let error: String = error.chars().take(128).collect();
        return refused("idp_error", &format!("the provider answered {error}"));
    }
    let Some(code) = answer.code.filter(|c| !c.is_empty() && c.len() <= 4096) else {
        return refused("code_missing", "the callback carries no code");
    };
    let Some((idp, config)) = tenant_idp(state, &pending.tenant_id).await.map_err(Err)? else {
        return refused("sso_not_configured", "the tenant's provider was removed");
    };
    let secret = config
        .secret
        .as_deref()
        .ok_or_else(|| Err(ApiError::of(ErrorCode::InternalError)))
        .and_then(|sealed| {
            state
                .vault
                .decrypt(&binding(&pending.tenant_id, &idp.issuer), sealed)
                .map_err(|e| Err(e.into()))
        })?;
    let cache_key = format!("{}:{}", pending.tenant_id, config.version);
    let identity = match state
        .relying_party
        .finish(
            &cache_key,
            &idp,
            secret.expose_secret(),
            &pending.redirect_uri,
            &code,
            Pending {
                nonce: &pending.nonce,
                verifier: &pending.verifier,
            },
        )
        .await
    {
        Ok(identity) => identity,
        Err(OidcError::Refused { reason, detail }) => return refused(reason, &detail),
        Err(error) => return refused("idp_unavailable", &error.to_string()),
    };
    let person = Vouched {
        subject: &identity.subject,
        username: identity.username.as_deref(),
        email: identity.email.as_deref(),
    };
    let tenant_id = pending.tenant_id.as_str();
    let mut events: Vec<AuditEvent> = Vec::new();
    let user_id = match state
        .store
        .sso_user(tenant_id, person)
        .await
        .map_err(|e| Err(e.into()))?
    {
        Linked::User { id, active: true } => id,
        Linked::User { active: false, .. } => {
            return refused("user_inactive", "the user is deactivated");
        }
        Linked::Ambiguous => {
            return refused(
                "user_ambiguous",
                "more than one user has this email address",
            );
        }
        Linked::Unknown if config.jit => {
            let created = just_in_time(state, client, tenant_id, &identity)
                .await
                .map_err(Err)?;
            created.id
        }
        Linked::Unknown => {
            return refused(
                "user_unknown",
                "no user of the tenant is this person, and JIT provisioning is off",
            );
        }
    };
    if idp.groups_claim.is_some() {
        state
            .store
            .record_sso_groups(tenant_id, &user_id, &identity.groups)
            .await
            .map_err(|e| Err(e.into()))?;
    }
    let roles = state
        .store
        .sso_roles(tenant_id, &user_id)
        .await
        .map_err(|e| Err(e.into()))?;
    if roles.is_empty() {
        return refused(
            "no_roles",
            "the tenant's role mapping gives this person no role",
        );
    }
    let mut event = routero_bus::event(
        tenant_id,
        EventType::LoginSuccess,
        client.actor(ActorKind::User, Some(user_id.clone())),
        routero_bus::resource("session", None),
        Outcome::Success,
    );
    event.details.insert("protocol".into(), json!(OIDC));
    event
        .details
        .insert("issuer".into(), json!(identity.issuer));
    event
        .details
        .insert("subject".into(), json!(identity.subject));
    events.push(event);
    open_session(
        state,
        client,
        headers,
        (tenant_id, Who::User(&user_id)),
        &roles,
        events,
    )
    .await
    .map_err(Err)
}

/// Creates the user a provider vouched for, at their first login (`user.provisioned`).
async fn just_in_time(
    state: &AppState,
    client: &ClientInfo,
    tenant_id: &str,
    identity: &routero_oidc::Identity,
) -> Result<User, ApiError> {
    let user_name = identity
        .username
        .clone()
        .or_else(|| identity.email.clone())
        .unwrap_or_else(|| identity.subject.clone());
    let changer = crate::store::Changer {
        tenant_id: tenant_id.to_owned(),
        actor: client.actor(ActorKind::System, Some(format!("sso:{OIDC}"))),
        scim: false,
    };
    let user = User {
        id: String::new(),
        user_name,
        email: identity.email.clone(),
        display_name: identity.name.clone(),
        external_id: Some(identity.subject.clone()),
        active: true,
        team_ids: Vec::new(),
        scim_managed: false,
    };
    Ok(state.store.create_user(&changer, &user).await?)
}
