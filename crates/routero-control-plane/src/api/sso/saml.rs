//! SAML 2.0: `PUT|GET|DELETE /sso/saml`, `GET /sso/saml/metadata`, `GET /sso/saml/login`,
//! `POST /sso/saml/acs`.
//!
//! Each tenant is its own service provider: entity id `<base>/sso/saml/metadata?tenant=<id>`
//! (the `Audience` its assertions must name) and assertion consumer service
//! `<base>/sso/saml/acs?tenant=<id>` (their `Recipient` and `Destination`), so an assertion for
//! one tenant is refused by every other.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};
use routero_core::ErrorCode;
use routero_core::audit::EventType;
use routero_saml::{Idp, SamlError, Sp};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::super::access::Caller;
use super::super::extract::Body;
use super::super::sessions::{CookieName, set_cookie};
use super::super::{ApiError, AppState, ClientInfo};
use super::{Failure, Keep, Person, SAML, Start, refusal};

/// The cookie binding a login to the browser that began it: the response arrives as a
/// cross-site POST, which only a SameSite=None cookie reaches.
const BROWSER_COOKIE: CookieName =
    CookieName::new("__Host-routero_saml", "routero_saml").cross_site();

/// A tenant's SAML identity provider as stored.
#[derive(Serialize, Deserialize)]
struct SamlSettings {
    /// The provider's metadata (with its signing certificate).
    metadata: String,
    /// The attribute listing a person's groups.
    groups_attribute: Option<String>,
    /// Whether unsolicited (IdP-initiated) responses are taken.
    allow_idp_initiated: bool,
    /// Whether the provider's email address links a person to an existing user (only when the
    /// provider's addresses are its directory's, not ones people choose).
    #[serde(default)]
    link_by_email: bool,
}

/// `PUT /sso/saml`'s body: the provider's metadata, or its entity id, SSO URL and signing
/// certificate.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(in super::super) struct SamlConfig {
    #[serde(default)]
    metadata_xml: Option<String>,
    #[serde(default)]
    entity_id: Option<String>,
    #[serde(default)]
    sso_url: Option<String>,
    #[serde(default)]
    certificate: Option<String>,
    #[serde(default)]
    groups_attribute: Option<String>,
    #[serde(default)]
    jit: bool,
    #[serde(default)]
    allow_idp_initiated: bool,
    #[serde(default)]
    link_by_email: bool,
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidSsoConfig, detail.into())
}

fn settings_error(error: SamlError) -> ApiError {
    match error {
        SamlError::Settings(detail) | SamlError::Refused { detail, .. } => invalid(detail),
    }
}

/// This gateway as tenant `tenant_id`'s service provider.
fn sp(state: &AppState, headers: &HeaderMap, tenant_id: &str) -> Result<Sp, ApiError> {
    let base = super::public_base(state, headers)?;
    Ok(Sp {
        entity_id: format!("{base}/sso/saml/metadata?tenant={tenant_id}"),
        acs_url: format!("{base}/sso/saml/acs?tenant={tenant_id}"),
    })
}

fn view(
    state: &AppState,
    headers: &HeaderMap,
    (tenant_id, settings, idp): (&str, &SamlSettings, &Idp),
    jit: bool,
    version: i64,
) -> Result<Value, ApiError> {
    let sp = sp(state, headers, tenant_id)?;
    let base = super::public_base(state, headers)?;
    Ok(json!({
        "protocol": SAML,
        "idp_entity_id": idp.entity_id(),
        "sso_url": idp.sso_url(),
        "groups_attribute": settings.groups_attribute,
        "allow_idp_initiated": settings.allow_idp_initiated,
        "link_by_email": settings.link_by_email,
        "jit": jit,
        "version": version,
        "sp_entity_id": sp.entity_id,
        "acs_url": sp.acs_url,
        "metadata_url": sp.entity_id,
        "login_url": format!("{base}/sso/saml/login?tenant={tenant_id}"),
    }))
}

/// `PUT /sso/saml`: sets the tenant's SAML identity provider. One without a signing
/// certificate is refused: its responses could not be verified.
pub(in super::super) async fn put_saml(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
    headers: HeaderMap,
    Body(body): Body<SamlConfig>,
) -> Result<Json<Value>, ApiError> {
    let idp = match (
        &body.metadata_xml,
        &body.entity_id,
        &body.sso_url,
        &body.certificate,
    ) {
        (Some(xml), None, None, None) => Idp::from_metadata(xml),
        (None, Some(entity_id), Some(sso_url), Some(certificate)) => {
            Idp::from_parts(entity_id, sso_url, certificate)
        }
        _ => {
            return Err(invalid(
                "metadata_xml, or entity_id, sso_url and certificate together",
            ));
        }
    }
    .map_err(settings_error)?;
    routero_oidc::provider_url("sso_url", idp.sso_url())
        .map_err(|error| invalid(error.to_string()))?;
    if let Some(name) = &body.groups_attribute
        && (name.is_empty() || name.len() > 256)
    {
        return Err(invalid("groups_attribute: 1 to 256 bytes"));
    }
    let settings = SamlSettings {
        metadata: idp.to_xml().map_err(settings_error)?,
        groups_attribute: body.groups_attribute,
        allow_idp_initiated: body.allow_idp_initiated,
        link_by_email: body.link_by_email,
    };
    let stored =
        serde_json::to_string(&settings).map_err(|_| ApiError::of(ErrorCode::InternalError))?;
    let mut event = AppState::event(
        &principal,
        &client,
        EventType::SsoConfigUpdated,
        ("sso_config", Some(SAML.to_owned())),
    );
    event
        .details
        .insert("idp_entity_id".into(), json!(idp.entity_id()));
    event.details.insert("jit".into(), json!(body.jit));
    event.details.insert(
        "allow_idp_initiated".into(),
        json!(settings.allow_idp_initiated),
    );
    let tenant_id = &principal.tenant_id;
    let seal = state.vault.encrypt(&binding(tenant_id, &stored), SAML)?;
    let version = state
        .store
        .put_sso_config(tenant_id, SAML, (&stored, Some(&seal), body.jit), &[event])
        .await?;
    Ok(Json(view(
        &state,
        &headers,
        (tenant_id, &settings, &idp),
        body.jit,
        version,
    )?))
}

/// The vault binding sealing a tenant's settings: a certificate swapped in the database no
/// longer opens the seal, and the provider is refused.
fn binding<'a>(tenant_id: &'a str, settings: &'a str) -> routero_crypto::CredentialBinding<'a> {
    routero_crypto::CredentialBinding {
        tenant: tenant_id,
        credential_id: "sso:saml",
        base_url: settings,
    }
}

/// The tenant's settings, once the seal over them opens.
async fn sealed_config(
    state: &AppState,
    uri: &Uri,
) -> Result<(String, SamlSettings, crate::store::SsoConfig), ApiError> {
    let (tenant_id, settings, config) =
        super::tenant_config::<SamlSettings>(state, uri, SAML).await?;
    let opened = config.secret.as_deref().map(|seal| {
        state
            .vault
            .decrypt(&binding(&tenant_id, &config.settings), seal)
    });
    if !matches!(opened, Some(Ok(_))) {
        tracing::error!(tenant = %tenant_id, "the tenant's SAML settings do not match their seal; refused");
        return Err(ApiError::of(ErrorCode::InternalError));
    }
    Ok((tenant_id, settings, config))
}

/// SAML verifications running at once (each holds a blocking thread).
const CONCURRENT_VERIFICATIONS: usize = 4;

fn verifications() -> &'static tokio::sync::Semaphore {
    static VERIFICATIONS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    VERIFICATIONS.get_or_init(|| tokio::sync::Semaphore::new(CONCURRENT_VERIFICATIONS))
}

/// The tenant's stored settings and its provider, read back.
fn provider_of(settings: &SamlSettings) -> Result<Idp, ApiError> {
    Idp::from_metadata(&settings.metadata).map_err(|error| {
        tracing::error!(%error, "a stored SAML provider does not read back");
        ApiError::of(ErrorCode::InternalError)
    })
}

/// `GET /sso/saml`: the tenant's SAML identity provider and what to register there.
pub(in super::super) async fn get_saml(
    State(state): State<AppState>,
    Caller { principal, .. }: Caller,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let tenant_id = &principal.tenant_id;
    let Some((settings, config)) =
        super::config_of::<SamlSettings>(&state, tenant_id, SAML).await?
    else {
        return Err(ApiError::of(ErrorCode::SsoNotConfigured));
    };
    let idp = provider_of(&settings)?;
    Ok(Json(view(
        &state,
        &headers,
        (tenant_id, &settings, &idp),
        config.jit,
        config.version,
    )?))
}

/// `DELETE /sso/saml`: removes the tenant's SAML identity provider.
pub(in super::super) async fn delete_saml(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    super::delete_config(&state, caller, SAML).await
}

/// `GET /sso/saml/metadata?tenant=<id>`: this gateway's SP metadata for the tenant.
pub(in super::super) async fn sp_metadata(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let made = async {
        let (tenant_id, _, _) = super::tenant_config::<SamlSettings>(&state, &uri, SAML).await?;
        Ok::<_, ApiError>(sp(&state, &headers, &tenant_id)?.metadata())
    };
    match made.await {
        Ok(xml) => (
            [(header::CONTENT_TYPE, "application/samlmetadata+xml")],
            xml,
        )
            .into_response(),
        Err(error) => error.into_response(),
    }
}

/// Begins a login at the tenant's provider with an AuthnRequest, HTTP-Redirect
/// (`GET /sso/saml/login?tenant=<id>`).
pub(super) async fn start(
    state: &AppState,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Start, ApiError> {
    let (tenant_id, settings, _) = sealed_config(state, uri).await?;
    let idp = provider_of(&settings)?;
    let sp = sp(state, headers, &tenant_id)?;
    let relay_state =
        routero_crypto::generate_api_key("").map_err(|_| ApiError::of(ErrorCode::InternalError))?;
    let relay_state = secrecy::ExposeSecret::expose_secret(&relay_state).to_owned();
    let (url, request_id) = sp
        .authn_request(&idp, &relay_state)
        .map_err(settings_error)?;
    Ok(Start {
        tenant_id,
        url,
        login_state: relay_state,
        keep: Keep {
            protocol: SAML,
            cookie: BROWSER_COOKIE,
            nonce: request_id,
            verifier: String::new(),
            redirect_uri: sp.acs_url,
        },
    })
}

/// `POST /sso/saml/acs?tenant=<id>`: takes the provider's response (HTTP-POST binding).
pub(in super::super) async fn acs(State(state): State<AppState>, request: Request) -> Response {
    let client = ClientInfo::of(&request, &state.trusted_proxies);
    if let Some(refused) = super::throttled(&state, &client) {
        return refused;
    }
    let (parts, body) = request.into_parts();
    let form = match routero_http::read_body(
        body,
        routero_saml::MAX_RESPONSE_BYTES * 2,
        state.deadlines.body,
    )
    .await
    {
        Ok(bytes) => url::form_urlencoded::parse(&bytes)
            .into_owned()
            .collect::<Vec<(String, String)>>(),
        Err(_) => {
            return ApiError::new(ErrorCode::BodyTooLarge, "The SAML response is too large.")
                .into_response();
        }
    };
    let field = |name: &str| {
        form.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let outcome = consumed(
        &state,
        &client,
        (&parts.headers, &parts.uri),
        (field("SAMLResponse"), field("RelayState")),
    )
    .await;
    let response = match outcome {
        Ok(response) => response,
        Err(failure) => super::answer(&state, &client, (parts.uri.path(), SAML), failure).await,
    };
    let mut response = super::returned(&parts.headers, response);
    if let Some(cookie) = set_cookie(&parts.headers, BROWSER_COOKIE, "", 0) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

async fn consumed(
    state: &AppState,
    client: &ClientInfo,
    (headers, uri): (&HeaderMap, &Uri),
    (saml_response, relay_state): (Option<String>, Option<String>),
) -> Result<Response, Failure> {
    let (tenant_id, settings, config) = sealed_config(state, uri).await?;
    let tenant = Some(tenant_id.as_str());
    let Some(saml_response) = saml_response.filter(|r| !r.is_empty()) else {
        return Err(refusal(
            "response_missing",
            "no SAMLResponse was posted",
            tenant,
        ));
    };
    // A RelayState of ours ties the response to the login this browser began; without one
    // (or with one the provider chose) the response is unsolicited.
    let request_id = match relay_state.filter(|r| !r.is_empty() && r.len() <= 512) {
        Some(relay) => {
            match super::take_login(state, headers, (&relay, SAML, BROWSER_COOKIE), tenant).await {
                Ok(pending) => Some(pending.nonce),
                Err(Failure::Refused(refused))
                    if refused.reason == "state_unknown" && settings.allow_idp_initiated =>
                {
                    None
                }
                Err(failure) => return Err(failure),
            }
        }
        None => None,
    };
    let idp = provider_of(&settings)?;
    let sp = sp(state, headers, &tenant_id)?;
    let policy = (
        settings.allow_idp_initiated,
        settings.groups_attribute.clone(),
    );
    let _permit = verifications()
        .acquire()
        .await
        .map_err(|_| ApiError::of(ErrorCode::InternalError))?;
    let verified = tokio::task::spawn_blocking(move || {
        sp.verify(
            &idp,
            &saml_response,
            request_id.as_deref(),
            (policy.0, policy.1.as_deref()),
        )
    })
    .await
    .map_err(|_| ApiError::of(ErrorCode::InternalError))?;
    let identity = match verified {
        Ok(identity) => identity,
        Err(SamlError::Refused { reason, detail }) => return Err(refusal(reason, detail, tenant)),
        Err(SamlError::Settings(detail)) => {
            return Err(refusal("malformed_response", detail, tenant));
        }
    };
    if !state
        .store
        .remember_assertion(&tenant_id, &identity.assertion_id, identity.valid_until)
        .await?
    {
        return Err(refusal(
            "assertion_replayed",
            "this assertion was already used",
            tenant,
        ));
    }
    let person = Person {
        protocol: SAML,
        issuer: identity.issuer,
        username: Some(identity.name_id.clone()),
        subject: identity.name_id,
        // The address links to existing users only when the tenant says its provider's
        // addresses are its directory's (people cannot choose them).
        verified_email: identity.email.filter(|_| settings.link_by_email),
        name: identity.name,
        groups: settings
            .groups_attribute
            .is_some()
            .then_some(identity.groups),
    };
    super::sign_in(state, client, headers, (&tenant_id, config.jit), person).await
}
