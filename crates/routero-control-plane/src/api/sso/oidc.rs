//! OpenID Connect: `PUT|GET|DELETE /sso/oidc`, `GET /sso/oidc/login`, `GET /sso/oidc/callback`.
//!
//! The client secret is sealed in the vault bound to the tenant and to the provider's whole
//! settings (endpoints included), so a database writer who repoints an endpoint gets a secret
//! that no longer decrypts rather than one sent to their server.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Uri, header};
use axum::response::Response;
use routero_core::ErrorCode;
use routero_core::audit::EventType;
use routero_crypto::CredentialBinding;
use routero_oidc::{IdpSettings, OidcError, Pending};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};

use super::super::access::Caller;
use super::super::extract::Body;
use super::super::sessions::{CookieName, set_cookie};
use super::super::{ApiError, AppState, ClientInfo};
use super::{Failure, Keep, OIDC, Person, Start, refusal};

/// The cookie binding a login to the browser that began it (the callback is a top-level GET,
/// which SameSite=Lax cookies reach).
const BROWSER_COOKIE: CookieName = CookieName::new("__Host-routero_oidc", "routero_oidc");
/// The longest client secret taken.
const MAX_SECRET_BYTES: usize = 4096;

/// `PUT /sso/oidc`'s body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in super::super) struct OidcConfig {
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

/// The vault binding of a tenant's client secret: the tenant and the settings, exactly as
/// stored.
fn binding<'a>(tenant_id: &'a str, settings: &'a str) -> CredentialBinding<'a> {
    CredentialBinding {
        tenant: tenant_id,
        credential_id: "sso:oidc",
        base_url: settings,
    }
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
) -> Result<Value, ApiError> {
    let base = super::public_base(state, headers)?;
    Ok(json!({
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
    }))
}

/// `PUT /sso/oidc`: sets the tenant's OpenID Connect provider. The provider is reached at
/// once (discovery and keys), so a mistake shows now rather than at someone's login.
pub(in super::super) async fn put_oidc(
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
    let settings =
        serde_json::to_string(&idp).map_err(|_| ApiError::of(ErrorCode::InternalError))?;
    let sealed = state
        .vault
        .encrypt(&binding(tenant_id, &settings), &body.client_secret)?;
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
    )?))
}

/// `GET /sso/oidc`: the tenant's OpenID Connect provider, without its secret.
pub(in super::super) async fn get_oidc(
    State(state): State<AppState>,
    Caller { principal, .. }: Caller,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = &principal.tenant_id;
    let Some((idp, config)) = super::config_of::<IdpSettings>(&state, tenant_id, OIDC).await?
    else {
        return Err(ApiError::of(ErrorCode::SsoNotConfigured));
    };
    Ok(Json(view(
        &state,
        &headers,
        (tenant_id, &idp),
        config.jit,
        config.version,
    )?))
}

/// `DELETE /sso/oidc`: removes the tenant's OpenID Connect provider.
pub(in super::super) async fn delete_oidc(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    super::delete_config(&state, caller, OIDC).await
}

/// Begins a login at the tenant's provider (`GET /sso/oidc/login?tenant=<id>`).
pub(super) async fn start(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Start, ApiError> {
    let (tenant_id, idp, _) = super::tenant_config::<IdpSettings>(state, uri, OIDC).await?;
    let redirect_uri = format!("{}/sso/oidc/callback", super::public_base(state, headers)?);
    let begun = state
        .relying_party
        .begin(&tenant_id, &idp, &redirect_uri)
        .await
        .map_err(settings_error)?;
    Ok(Start {
        tenant_id,
        url: begun.url,
        login_state: begun.state,
        keep: Keep {
            protocol: OIDC,
            cookie: BROWSER_COOKIE,
            nonce: begun.nonce,
            verifier: begun.verifier,
            redirect_uri,
        },
    })
}

#[derive(Deserialize)]
struct Callback {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
}

/// `GET /sso/oidc/callback`: finishes a login the provider sent back.
pub(in super::super) async fn callback(
    State(state): State<AppState>,
    request: Request,
) -> Response {
    let client = ClientInfo::of(&request, &state.trusted_proxies);
    if let Some(refused) = super::throttled(&state, &client) {
        return refused;
    }
    let (parts, _) = request.into_parts();
    let outcome = match super::query::<Callback>(&parts.uri) {
        Ok(answer) => finished(&state, &client, &parts.headers, answer).await,
        Err(error) => Err(Failure::Error(error)),
    };
    let response = match outcome {
        Ok(response) => response,
        Err(failure) => super::answer(&state, &client, (parts.uri.path(), OIDC), failure).await,
    };
    let mut response = super::returned(&parts.headers, response);
    // The browser binding is spent either way.
    if let Some(cookie) = set_cookie(&parts.headers, BROWSER_COOKIE, "", 0) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// The sign-in itself.
async fn finished(
    state: &AppState,
    client: &ClientInfo,
    headers: &HeaderMap,
    answer: Callback,
) -> Result<Response, Failure> {
    let Some(login_state) = answer.state.filter(|s| !s.is_empty() && s.len() <= 512) else {
        return Err(refusal(
            "state_missing",
            "the callback carries no state",
            None,
        ));
    };
    let pending =
        super::take_login(state, headers, (&login_state, OIDC, BROWSER_COOKIE), None).await?;
    let tenant_id = pending.tenant_id.as_str();
    let tenant = Some(tenant_id);
    if let Some(error) = answer.error {
        let error: String = error.chars().take(128).collect();
        return Err(refusal(
            "idp_error",
            format!("the provider answered {error}"),
            tenant,
        ));
    }
    let Some(code) = answer.code.filter(|c| !c.is_empty() && c.len() <= 4096) else {
        return Err(refusal(
            "code_missing",
            "the callback carries no code",
            tenant,
        ));
    };
    let Some((idp, config)) = super::config_of::<IdpSettings>(state, tenant_id, OIDC).await? else {
        return Err(refusal(
            "sso_not_configured",
            "the tenant's provider was removed",
            tenant,
        ));
    };
    let sealed = config
        .secret
        .as_deref()
        .ok_or_else(|| ApiError::of(ErrorCode::InternalError))?;
    let secret = state
        .vault
        .decrypt(&binding(tenant_id, &config.settings), sealed)?;
    let identity = match state
        .relying_party
        .finish(
            tenant_id,
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
        Err(OidcError::Refused { reason, detail }) => return Err(refusal(reason, detail, tenant)),
        Err(error) => return Err(refusal("idp_unavailable", error.to_string(), tenant)),
    };
    let person = Person {
        protocol: OIDC,
        issuer: identity.issuer,
        subject: identity.subject,
        username: identity.username,
        verified_email: identity.verified_email,
        name: identity.name,
        groups: idp.groups_claim.is_some().then_some(identity.groups),
    };
    super::sign_in(state, client, headers, (tenant_id, config.jit), person).await
}
