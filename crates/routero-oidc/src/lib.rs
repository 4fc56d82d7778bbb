//! An OpenID Connect relying party for the control plane's sign-in: discovery (or explicit
//! endpoints, for identity providers without it), the authorization code flow with PKCE
//! (S256), and an ID token checked in full — signature under an algorithm allowlist (never
//! `none`, never HMAC), `iss`, `aud`, `azp`, `exp`, `nbf` and `iat` with a small skew, `nonce`
//! — with groups from a configurable claim or from userinfo. Nothing here stores anything: the
//! caller keeps the pending login (state, nonce, verifier) and binds it to the browser.

mod fetch;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use openidconnect::core::{
    CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKeySet, CoreJwsSigningAlgorithm,
};
use openidconnect::{
    ClaimsVerificationError, ClientId, IssuerUrl, Nonce, PkceCodeChallenge,
    SignatureVerificationError,
};
use routero_core::EgressPolicy;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use fetch::Fetcher;

/// How far the identity provider's clock may be from ours.
const SKEW: i64 = 60;
/// How long discovered endpoints and keys are trusted before they are fetched again.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// The shortest time between two key set fetches for a token naming an unknown key.
const JWKS_REFETCH_EVERY: Duration = Duration::from_secs(5);
/// The most groups read from a token or userinfo, and the longest group name.
const MAX_GROUPS: usize = 1000;
const MAX_GROUP_CHARS: usize = 256;
/// Signature algorithms accepted: asymmetric only, so no token is ever checked with a public
/// key used as an HMAC secret, and `none` is never among them.
const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 9] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// Why a sign-in did not happen.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The identity provider's answer is refused; `reason` is stable (`wrong_audience`,
    /// `expired`, `bad_signature`, `unknown_kid`, `nonce_mismatch`, `unsigned_token`, …).
    #[error("{reason}: {detail}")]
    Refused {
        /// A stable code for the refusal.
        reason: &'static str,
        /// What was wrong, for logs and the audit record.
        detail: String,
    },
    /// The identity provider could not be reached or answered nonsense.
    #[error("identity provider unavailable: {0}")]
    Unavailable(String),
    /// The configuration cannot work.
    #[error("{0}")]
    Settings(String),
}

fn refused(reason: &'static str, detail: impl Into<String>) -> OidcError {
    OidcError::Refused {
        reason,
        detail: detail.into(),
    }
}

/// A tenant's identity provider, without its client secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdpSettings {
    /// The issuer, exactly as the provider's tokens name it.
    pub issuer: String,
    /// This gateway's client id at the provider.
    pub client_id: String,
    /// The claim that lists a person's groups (in the ID token, else in userinfo); none reads
    /// no groups.
    pub groups_claim: Option<String>,
    /// Scopes asked for besides `openid`.
    pub scopes: Vec<String>,
    /// Explicit endpoints, for providers without discovery (all three or none).
    pub authorization_endpoint: Option<String>,
    /// See `authorization_endpoint`.
    pub token_endpoint: Option<String>,
    /// See `authorization_endpoint`.
    pub jwks_uri: Option<String>,
    /// Userinfo, when groups are read from there.
    pub userinfo_endpoint: Option<String>,
}

/// Parses an identity provider URL: `https`, or `http` to a loopback host only; no fragment.
pub fn provider_url(field: &str, text: &str) -> Result<url::Url, OidcError> {
    let bad = |why: &str| OidcError::Settings(format!("{field}: {why}"));
    let url = url::Url::parse(text).map_err(|error| bad(&error.to_string()))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => return Err(bad("no host")),
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => {
            return Err(bad(
                "https is required (plain http only to a loopback host)",
            ));
        }
    }
    if url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(bad("no fragment or credentials in the URL"));
    }
    Ok(url)
}

impl IdpSettings {
    /// Checks the settings could work: URLs well formed, explicit endpoints all or none.
    pub fn check(&self) -> Result<(), OidcError> {
        let issuer = provider_url("issuer", &self.issuer)?;
        if issuer.query().is_some() {
            return Err(OidcError::Settings("issuer: no query".into()));
        }
        if self.client_id.is_empty() || self.client_id.len() > 256 {
            return Err(OidcError::Settings("client_id: 1 to 256 bytes".into()));
        }
        let explicit = [
            ("authorization_endpoint", &self.authorization_endpoint),
            ("token_endpoint", &self.token_endpoint),
            ("jwks_uri", &self.jwks_uri),
        ];
        let given = explicit.iter().filter(|(_, url)| url.is_some()).count();
        if given != 0 && given != explicit.len() {
            return Err(OidcError::Settings(
                "authorization_endpoint, token_endpoint and jwks_uri: all three or none".into(),
            ));
        }
        for (field, url) in explicit
            .into_iter()
            .chain([("userinfo_endpoint", &self.userinfo_endpoint)])
        {
            if let Some(url) = url {
                provider_url(field, url)?;
            }
        }
        // The gateway sends browsers there: only to the provider's own host, never elsewhere.
        if let Some(authorization) = &self.authorization_endpoint
            && provider_url("authorization_endpoint", authorization)?.host_str()
                != issuer.host_str()
        {
            return Err(OidcError::Settings(
                "authorization_endpoint: on the issuer's host".into(),
            ));
        }
        if let Some(claim) = &self.groups_claim
            && (claim.is_empty() || claim.len() > 256)
        {
            return Err(OidcError::Settings("groups_claim: 1 to 256 bytes".into()));
        }
        if self.scopes.len() > 32
            || self
                .scopes
                .iter()
                .any(|s| s.is_empty() || s.len() > 128 || !s.chars().all(|c| c.is_ascii_graphic()))
        {
            return Err(OidcError::Settings(
                "scopes: at most 32, each 1 to 128 visible ASCII characters".into(),
            ));
        }
        Ok(())
    }
}

/// Where a provider's endpoints are.
#[derive(Debug, Clone)]
struct Endpoints {
    authorization: url::Url,
    token: url::Url,
    jwks: url::Url,
    userinfo: Option<url::Url>,
}

/// What is known of one provider: its endpoints and its keys, for the settings it was found
/// with.
struct Provider {
    settings: IdpSettings,
    endpoints: Endpoints,
    found_at: Instant,
    keys: Mutex<(CoreJsonWebKeySet, Instant)>,
}

/// A login just begun: where to send the browser, and what to keep until it comes back.
pub struct Begun {
    /// The provider's authorization URL, with this login's parameters.
    pub url: String,
    /// The `state` parameter: the key of the pending login.
    pub state: String,
    /// The nonce the ID token must carry.
    pub nonce: String,
    /// The PKCE code verifier.
    pub verifier: String,
}

/// What a pending login kept.
#[derive(Clone, Copy)]
pub struct Pending<'a> {
    /// The nonce sent.
    pub nonce: &'a str,
    /// The PKCE code verifier.
    pub verifier: &'a str,
}

/// The person a provider vouched for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// The issuer.
    pub issuer: String,
    /// The subject (`sub`), stable at the provider.
    pub subject: String,
    /// `preferred_username`, when given (a name for a new user; never trusted to link).
    pub username: Option<String>,
    /// The email address, when the provider says it verified it.
    pub verified_email: Option<String>,
    /// The display name, when given.
    pub name: Option<String>,
    /// Group names or ids from the groups claim.
    pub groups: Vec<String>,
}

/// The relying party: each tenant's provider (endpoints and keys) cached under the settings
/// it was found with, one per tenant.
pub struct RelyingParty {
    fetcher: Fetcher,
    providers: Mutex<HashMap<String, Arc<Provider>>>,
}

impl std::fmt::Debug for RelyingParty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelyingParty").finish_non_exhaustive()
    }
}

fn now() -> i64 {
    routero_core::unix_now()
}

impl RelyingParty {
    /// A relying party reaching providers only where `policy` allows.
    pub fn new(policy: EgressPolicy) -> Result<Self, OidcError> {
        Ok(Self {
            fetcher: Fetcher::new(policy)?,
            providers: Mutex::new(HashMap::new()),
        })
    }

    /// The provider of `idp` for tenant `key`: cached while the settings are the same, or
    /// discovered now (replacing what the tenant had).
    async fn provider(&self, key: &str, idp: &IdpSettings) -> Result<Arc<Provider>, OidcError> {
        let cached = self
            .providers
            .lock()
            .ok()
            .and_then(|map| map.get(key).cloned());
        if let Some(provider) = cached
            && provider.settings == *idp
            && provider.found_at.elapsed() < DISCOVERY_TTL
        {
            return Ok(provider);
        }
        let endpoints = self.endpoints(idp).await?;
        let keys = self.keys(&endpoints.jwks).await?;
        let provider = Arc::new(Provider {
            settings: idp.clone(),
            endpoints,
            found_at: Instant::now(),
            keys: Mutex::new((keys, Instant::now())),
        });
        if let Ok(mut map) = self.providers.lock() {
            map.insert(key.to_owned(), Arc::clone(&provider));
        }
        Ok(provider)
    }

    async fn endpoints(&self, idp: &IdpSettings) -> Result<Endpoints, OidcError> {
        let userinfo = idp
            .userinfo_endpoint
            .as_deref()
            .map(|url| provider_url("userinfo_endpoint", url))
            .transpose()?;
        if let (Some(authorization), Some(token), Some(jwks)) = (
            &idp.authorization_endpoint,
            &idp.token_endpoint,
            &idp.jwks_uri,
        ) {
            return Ok(Endpoints {
                authorization: provider_url("authorization_endpoint", authorization)?,
                token: provider_url("token_endpoint", token)?,
                jwks: provider_url("jwks_uri", jwks)?,
                userinfo,
            });
        }
        let issuer = idp.issuer.trim_end_matches('/');
        let discovery = provider_url(
            "issuer",
            &format!("{issuer}/.well-known/openid-configuration"),
        )?;
        let document = self.fetcher.get(&discovery).await?;
        let field = |name: &str| {
            document
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| OidcError::Unavailable(format!("discovery: no {name}")))
        };
        if field("issuer")? != idp.issuer {
            return Err(OidcError::Settings(format!(
                "the discovery document names issuer {:?}, not {:?}",
                field("issuer")?,
                idp.issuer
            )));
        }
        let userinfo = match userinfo {
            Some(url) => Some(url),
            None => field("userinfo_endpoint")
                .ok()
                .map(|url| provider_url("userinfo_endpoint", url))
                .transpose()?,
        };
        Ok(Endpoints {
            authorization: provider_url(
                "authorization_endpoint",
                field("authorization_endpoint")?,
            )?,
            token: provider_url("token_endpoint", field("token_endpoint")?)?,
            jwks: provider_url("jwks_uri", field("jwks_uri")?)?,
            userinfo,
        })
    }

    async fn keys(&self, jwks: &url::Url) -> Result<CoreJsonWebKeySet, OidcError> {
        let document = self.fetcher.get(jwks).await?;
        serde_json::from_value(document)
            .map_err(|error| OidcError::Unavailable(format!("{jwks}: not a key set: {error}")))
    }

    /// Reaches the provider of `idp` now (discovery and keys) without caching anything: checks
    /// settings as they are saved.
    pub async fn reach(&self, idp: &IdpSettings) -> Result<(), OidcError> {
        let endpoints = self.endpoints(idp).await?;
        self.keys(&endpoints.jwks).await.map(|_| ())
    }

    /// Begins a login: the URL to send the browser to and what to keep for the callback.
    pub async fn begin(
        &self,
        key: &str,
        idp: &IdpSettings,
        redirect_uri: &str,
    ) -> Result<Begun, OidcError> {
        let provider = self.provider(key, idp).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = random_token();
        let nonce = random_token();
        let mut url = provider.endpoints.authorization.clone();
        let scope = std::iter::once("openid")
            .chain(
                idp.scopes
                    .iter()
                    .map(String::as_str)
                    .filter(|s| *s != "openid"),
            )
            .collect::<Vec<_>>()
            .join(" ");
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &idp.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &scope)
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", challenge.as_str())
            .append_pair("code_challenge_method", "S256");
        Ok(Begun {
            url: url.into(),
            state,
            nonce,
            verifier: verifier.secret().clone(),
        })
    }

    /// Finishes a login: exchanges `code` at the token endpoint, checks the ID token, reads
    /// the groups.
    pub async fn finish(
        &self,
        key: &str,
        idp: &IdpSettings,
        client_secret: &str,
        redirect_uri: &str,
        code: &str,
        pending: Pending<'_>,
    ) -> Result<Identity, OidcError> {
        let provider = self.provider(key, idp).await?;
        let tokens = self
            .exchange(
                &provider.endpoints.token,
                idp,
                client_secret,
                redirect_uri,
                code,
                pending,
            )
            .await?;
        let id_token = tokens
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or_else(|| refused("no_id_token", "the token endpoint answered no id_token"))?;
        let claims = self.verified(&provider, idp, id_token, pending).await?;
        let subject = text(&claims, "sub")
            .ok_or_else(|| refused("invalid_token", "the ID token has no sub"))?;
        let groups = match &idp.groups_claim {
            None => Vec::new(),
            Some(claim) => match claims.get(claim) {
                Some(value) => groups(claim, value)?,
                None => {
                    let access = tokens.get("access_token").and_then(Value::as_str);
                    match (&provider.endpoints.userinfo, access) {
                        (Some(url), Some(access)) => {
                            self.userinfo_groups(url, access, &subject, claim).await?
                        }
                        _ => Vec::new(),
                    }
                }
            },
        };
        let verified = matches!(claims.get("email_verified"), Some(Value::Bool(true)))
            || claims.get("email_verified").and_then(Value::as_str) == Some("true");
        Ok(Identity {
            issuer: idp.issuer.clone(),
            subject,
            username: text(&claims, "preferred_username"),
            verified_email: text(&claims, "email").filter(|_| verified),
            name: text(&claims, "name"),
            groups,
        })
    }

    async fn exchange(
        &self,
        token_url: &url::Url,
        idp: &IdpSettings,
        client_secret: &str,
        redirect_uri: &str,
        code: &str,
        pending: Pending<'_>,
    ) -> Result<Map<String, Value>, OidcError> {
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("code_verifier", pending.verifier)
            .finish();
        // client_secret_basic: each part form-encoded first (RFC 6749 section 2.3.1).
        let encode =
            |part: &str| url::form_urlencoded::byte_serialize(part.as_bytes()).collect::<String>();
        let request = self
            .fetcher
            .client()
            .post(token_url.as_str())
            .basic_auth(encode(&idp.client_id), Some(encode(client_secret)))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(form);
        match self.fetcher.json(token_url, request).await? {
            Ok(Value::Object(tokens)) => Ok(tokens),
            Ok(_) => Err(OidcError::Unavailable(
                "the token endpoint answered no object".into(),
            )),
            Err((status, body)) => {
                let error = body.get("error").and_then(Value::as_str).unwrap_or("");
                Err(refused(
                    "code_exchange_failed",
                    format!("the token endpoint answered {status} {error}"),
                ))
            }
        }
    }

    /// The ID token's claims once everything in it is checked.
    async fn verified(
        &self,
        provider: &Provider,
        idp: &IdpSettings,
        id_token: &str,
        pending: Pending<'_>,
    ) -> Result<Map<String, Value>, OidcError> {
        let token = CoreIdToken::from_str(id_token).map_err(|error| {
            refused(
                "malformed_token",
                format!("the ID token does not parse: {error}"),
            )
        })?;
        let keys = provider
            .keys
            .lock()
            .map(|k| k.0.clone())
            .unwrap_or_default();
        let outcome = check(&token, idp, keys, pending);
        let outcome = match outcome {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                // The provider may have rotated its keys: fetch them again, at most so often.
                let due = provider
                    .keys
                    .lock()
                    .map(|k| k.1.elapsed() >= JWKS_REFETCH_EVERY)
                    .unwrap_or(false);
                if due {
                    let fresh = self.keys(&provider.endpoints.jwks).await?;
                    if let Ok(mut keys) = provider.keys.lock() {
                        *keys = (fresh.clone(), Instant::now());
                    }
                    check(&token, idp, fresh, pending)
                } else {
                    outcome
                }
            }
            other => other,
        };
        outcome.map_err(explain)?;
        let claims = payload(id_token)?;
        let now = now();
        if let Some(nbf) = claims.get("nbf").and_then(Value::as_f64)
            && nbf > (now + SKEW) as f64
        {
            return Err(refused(
                "not_yet_valid",
                format!("the ID token is valid from {nbf}"),
            ));
        }
        let audiences = match claims.get("aud") {
            Some(Value::Array(list)) => list.len(),
            _ => 1,
        };
        match claims.get("azp").map(Value::as_str) {
            Some(Some(azp)) if azp == idp.client_id => {}
            None if audiences == 1 => {}
            _ => {
                return Err(refused(
                    "wrong_authorized_party",
                    "the ID token's azp is not this client",
                ));
            }
        }
        Ok(claims)
    }

    async fn userinfo_groups(
        &self,
        url: &url::Url,
        access_token: &str,
        subject: &str,
        claim: &str,
    ) -> Result<Vec<String>, OidcError> {
        let request = self
            .fetcher
            .client()
            .get(url.as_str())
            .bearer_auth(access_token)
            .header("accept", "application/json");
        let info = self
            .fetcher
            .json(url, request)
            .await?
            .map_err(|(status, _)| OidcError::Unavailable(format!("userinfo answered {status}")))?;
        if info.get("sub").and_then(Value::as_str) != Some(subject) {
            return Err(refused(
                "userinfo_mismatch",
                "userinfo names another subject than the ID token",
            ));
        }
        info.get(claim)
            .map_or(Ok(Vec::new()), |value| groups(claim, value))
    }
}

/// Checks signature and the standard claims.
fn check(
    token: &CoreIdToken,
    idp: &IdpSettings,
    keys: CoreJsonWebKeySet,
    pending: Pending<'_>,
) -> Result<(), ClaimsVerificationError> {
    let issuer = IssuerUrl::new(idp.issuer.clone())
        .map_err(|error| ClaimsVerificationError::Other(error.to_string()))?;
    let verifier =
        CoreIdTokenVerifier::new_public_client(ClientId::new(idp.client_id.clone()), issuer, keys)
            .set_allowed_algs(ALLOWED_ALGS)
            .set_time_fn(|| at(now() - SKEW))
            .set_issue_time_verifier_fn(|issued| {
                if issued.timestamp() > now() + SKEW {
                    Err(format!("issued in the future ({issued})"))
                } else {
                    Ok(())
                }
            });
    let nonce = Nonce::new(pending.nonce.to_owned());
    token.claims(&verifier, &nonce).map(|_| ())
}

/// A Unix time as the verifier's clock type.
fn at(seconds: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(seconds, 0).unwrap_or_default()
}

/// The stable reason for a verification failure.
fn explain(error: ClaimsVerificationError) -> OidcError {
    let reason = match &error {
        ClaimsVerificationError::Expired(_) => "expired",
        ClaimsVerificationError::InvalidAudience(_) => "wrong_audience",
        ClaimsVerificationError::InvalidIssuer(_) => "wrong_issuer",
        ClaimsVerificationError::InvalidNonce(_) => "nonce_mismatch",
        ClaimsVerificationError::SignatureVerification(signature) => match signature {
            SignatureVerificationError::NoMatchingKey => "unknown_kid",
            SignatureVerificationError::NoSignature => "unsigned_token",
            SignatureVerificationError::DisallowedAlg(_)
            | SignatureVerificationError::UnsupportedAlg(_) => "disallowed_algorithm",
            _ => "bad_signature",
        },
        _ => "invalid_token",
    };
    refused(reason, error.to_string())
}

/// The JSON payload of a compact JWS (already verified).
fn payload(token: &str) -> Result<Map<String, Value>, OidcError> {
    let part = token
        .split('.')
        .nth(1)
        .ok_or_else(|| refused("malformed_token", "not a compact JWS"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| refused("malformed_token", "payload is not base64url"))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(claims)) => Ok(claims),
        _ => Err(refused("malformed_token", "payload is not a JSON object")),
    }
}

fn text(claims: &Map<String, Value>, name: &str) -> Option<String> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Groups from a claim: a list of names (or one name), bounded.
fn groups(claim: &str, value: &Value) -> Result<Vec<String>, OidcError> {
    let too_many = || {
        refused(
            "invalid_groups",
            format!("{claim}: at most {MAX_GROUPS} groups of at most {MAX_GROUP_CHARS} characters"),
        )
    };
    let names: Vec<&Value> = match value {
        Value::Array(list) => list.iter().collect(),
        Value::String(_) => vec![value],
        _ => {
            return Err(refused(
                "invalid_groups",
                format!("{claim}: not a list of names"),
            ));
        }
    };
    if names.len() > MAX_GROUPS {
        return Err(too_many());
    }
    names
        .into_iter()
        .map(|name| match name.as_str() {
            Some(name) if name.chars().count() <= MAX_GROUP_CHARS => Ok(name.to_owned()),
            Some(_) => Err(too_many()),
            None => Err(refused(
                "invalid_groups",
                format!("{claim}: not a list of names"),
            )),
        })
        .collect()
}

/// 128 random bits, base64url: a login's `state` or `nonce`.
fn random_token() -> String {
    openidconnect::CsrfToken::new_random().secret().clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> IdpSettings {
        IdpSettings {
            issuer: "https://idp.example.com".into(),
            client_id: "gateway".into(),
            groups_claim: Some("groups".into()),
            scopes: vec!["email".into()],
            authorization_endpoint: None,
            token_endpoint: None,
            jwks_uri: None,
            userinfo_endpoint: None,
        }
    }

    #[test]
    fn provider_urls_are_https_or_loopback_http() {
        assert!(provider_url("issuer", "https://idp.example.com/realms/a").is_ok());
        assert!(provider_url("issuer", "http://127.0.0.1:9090").is_ok());
        assert!(provider_url("issuer", "http://[::1]:9090").is_ok());
        for bad in [
            "http://idp.example.com",
            "ftp://idp.example.com",
            "https://user:pw@idp.example.com",
            "https://idp.example.com/#x",
            "not a url",
        ] {
            assert!(provider_url("issuer", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn explicit_endpoints_come_all_three_or_none() {
        assert!(settings().check().is_ok());
        let partial = IdpSettings {
            token_endpoint: Some("https://idp.example.com/token".into()),
            ..settings()
        };
        assert!(partial.check().is_err());
        let all = IdpSettings {
            authorization_endpoint: Some("https://idp.example.com/auth".into()),
            token_endpoint: Some("https://idp.example.com/token".into()),
            jwks_uri: Some("https://idp.example.com/jwks".into()),
            ..settings()
        };
        assert!(all.check().is_ok());
        let spaced = IdpSettings {
            scopes: vec!["two words".into()],
            ..settings()
        };
        assert!(spaced.check().is_err());
    }

    #[test]
    fn groups_are_names_and_bounded() {
        let one = groups("groups", &serde_json::json!("admins")).unwrap();
        assert_eq!(one, vec!["admins"]);
        let many: Vec<String> = (0..MAX_GROUPS + 1).map(|i| format!("g{i}")).collect();
        assert!(groups("groups", &serde_json::json!(many)).is_err());
        assert!(groups("groups", &serde_json::json!([1, 2])).is_err());
        assert!(groups("groups", &serde_json::json!({"a": 1})).is_err());
        let long = "é".repeat(MAX_GROUP_CHARS + 1);
        assert!(groups("groups", &serde_json::json!([long])).is_err());
    }

    #[test]
    fn payloads_are_read_only_from_compact_tokens() {
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"a"}"#);
        assert_eq!(payload(&format!("h.{claims}.s")).unwrap()["sub"], "a");
        assert!(payload("no-dots").is_err());
        assert!(payload("h.!!!.s").is_err());
        let array = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b"[1]");
        assert!(payload(&format!("h.{array}.s")).is_err());
    }
}
