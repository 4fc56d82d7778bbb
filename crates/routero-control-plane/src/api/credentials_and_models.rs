//! Provider credentials and model routes.

use routero_core::{ErrorCode, Pricing, Routing, Strategy, micros_to_usd, usd_to_micros};
use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::Caller;
use super::extract::{Body, Path};
use super::{ApiError, AppState, ClientInfo};
use routero_core::audit::EventType;
use routero_crypto::CredentialBinding;

use crate::ControlPlaneError;
use crate::store::{AdminPrincipal, Route, StoredDeployment};

/// Providers the data plane has an adapter for.
const PROVIDERS: &[&str] = &["openai", "azure_openai", "anthropic"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewCredential {
    name: String,
    provider: String,
    api_key: SecretString,
    base_url: String,
}

/// Names are what admins and routes refer to: short, printable, no surprises.
pub(super) fn check_name(field: &str, name: &str) -> Result<(), ApiError> {
    if crate::is_valid_name(name) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidName,
            format!("{field}: 1-128 characters of letters, digits and -_.:/@"),
        ))
    }
}

/// Checks a credential's base URL (well-formed, and every address it resolves to allowed by
/// the egress policy) and returns it as stored; a refusal is audited on `(credential, action)`.
pub(super) async fn check_base_url(
    state: &AppState,
    principal: &AdminPrincipal,
    client: &ClientInfo,
    (credential, action): (&str, &str),
    base_url: &str,
) -> Result<String, ApiError> {
    let vetted = crate::egress::vet_base_url(&state.egress, base_url).await;
    if let Err(ControlPlaneError::Rejected { code, .. }) = &vetted {
        let refusal = state.refusal_event(
            principal,
            client,
            ("credential", credential),
            action,
            code.code(),
        );
        state.publish(refusal).await;
    }
    Ok(vetted?)
}

pub(super) async fn create_credential(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
    Body(body): Body<NewCredential>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_name("name", &body.name)?;
    if !PROVIDERS.contains(&body.provider.as_str()) {
        return Err(ApiError::new(
            ErrorCode::UnsupportedProvider,
            format!("provider must be one of: {}", PROVIDERS.join(", ")),
        ));
    }
    let base_url = check_base_url(
        &state,
        &principal,
        &client,
        (&body.name, "create"),
        &body.base_url,
    )
    .await?;
    let api_key = check_api_key(&body.api_key)?;
    let event = AppState::event(
        &principal,
        &client,
        EventType::CredentialCreated,
        ("credential", None),
    );
    let credential = state
        .store
        .create_credential(
            &principal.tenant_id,
            &body.name,
            &body.provider,
            &base_url,
            |id| {
                let binding = CredentialBinding {
                    tenant: &principal.tenant_id,
                    credential_id: id,
                    base_url: &base_url,
                };
                state.vault.encrypt(&binding, api_key)
            },
            vec![event],
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"id": credential.id, "name": credential.name, "provider": credential.provider}),
        ),
    ))
}

/// A provider secret as given: 1-4096 characters, not blank.
fn check_api_key(api_key: &SecretString) -> Result<&str, ApiError> {
    let api_key = api_key.expose_secret();
    if api_key.trim().is_empty() || api_key.len() > 4096 {
        return Err(ApiError::new(
            ErrorCode::InvalidProviderKey,
            "api_key must be 1-4096 characters",
        ));
    }
    Ok(api_key)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CredentialUpdate {
    api_key: Option<SecretString>,
    base_url: Option<String>,
}

/// Rotates a credential's secret and/or points it at another base URL (checked against the
/// egress policy); the secret is sealed again under the new binding in the same transaction,
/// and data planes use it from the next snapshot. The secret is never returned.
pub(super) async fn update_credential(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
    Path(name): Path<String>,
    Body(body): Body<CredentialUpdate>,
) -> Result<Json<Value>, ApiError> {
    check_name("name", &name)?;
    if body.api_key.is_none() && body.base_url.is_none() {
        return Err(ApiError::new(
            ErrorCode::InvalidUpdate,
            "give api_key, base_url, or both",
        ));
    }
    let new_key = body.api_key.as_ref().map(check_api_key).transpose()?;
    let new_url = match &body.base_url {
        Some(url) => {
            Some(check_base_url(&state, &principal, &client, (&name, "update"), url).await?)
        }
        None => None,
    };
    let mut event = AppState::event(
        &principal,
        &client,
        EventType::CredentialUpdated,
        ("credential", None),
    );
    event
        .details
        .insert("secret_rotated".into(), new_key.is_some().into());
    event
        .details
        .insert("base_url_changed".into(), new_url.is_some().into());
    let vault = &state.vault;
    let credential = state
        .store
        .update_credential(
            &principal.tenant_id,
            &name,
            |row| {
                let base_url = new_url
                    .clone()
                    .unwrap_or_else(|| row.credential.base_url.clone());
                let secret = match new_key {
                    Some(key) => SecretString::from(key.to_owned()),
                    None => vault.decrypt(&row.binding(), &row.ciphertext)?,
                };
                let binding = CredentialBinding {
                    tenant: &row.tenant_id,
                    credential_id: &row.credential.id,
                    base_url: &base_url,
                };
                Ok((
                    base_url.clone(),
                    vault.encrypt(&binding, secret.expose_secret())?,
                ))
            },
            vec![event],
        )
        .await?;
    Ok(Json(json!(credential)))
}

/// Deletes a credential (a leaked provider key removed): refused (409 `credential_in_use`)
/// while a model deploys it; data planes drop it from the next snapshot.
pub(super) async fn delete_credential(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_name("name", &name)?;
    let event = AppState::event(
        &principal,
        &client,
        EventType::CredentialDeleted,
        ("credential", None),
    );
    state
        .store
        .delete_credential(&principal.tenant_id, &name, vec![event])
        .await?;
    Ok(Json(json!({ "deleted": name })))
}

pub(super) async fn list_credentials(
    State(state): State<AppState>,
    Caller { principal, .. }: Caller,
) -> Result<Json<Value>, ApiError> {
    let credentials = state.store.list_credentials(&principal.tenant_id).await?;
    Ok(Json(json!({ "credentials": credentials })))
}

/// `POST /models`: a name and the model's fields (unknown fields refused, as everywhere:
/// serde's `flatten` would let them through).
pub(super) struct NewModel {
    name: String,
    fields: ModelFields,
}

impl<'de> Deserialize<'de> for NewModel {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut body = serde_json::Map::<String, Value>::deserialize(deserializer)?;
        let name = match body.remove("name") {
            Some(Value::String(name)) => name,
            Some(_) => return Err(D::Error::custom("name: a string is required")),
            None => return Err(D::Error::missing_field("name")),
        };
        let fields = ModelFields::deserialize(Value::Object(body)).map_err(D::Error::custom)?;
        Ok(Self { name, fields })
    }
}

/// A model's deployments, tags, pricing and routing, as `POST /models` and `PUT /models/{name}`
/// take them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ModelFields {
    deployments: Vec<NewDeployment>,
    /// Labels policies read, e.g. `{"tier": "premium"}`.
    #[serde(default)]
    tags: BTreeMap<String, String>,
    pricing: Option<PricingFields>,
    /// `priority` (default), `weighted`, `least_latency` or `least_busy`.
    strategy: Option<String>,
    /// Most attempts per request, its first included (1-5).
    max_attempts: Option<u32>,
    /// Retries per 100 requests the route may make (0-100).
    retry_budget_percent: Option<u32>,
    timeouts: Option<TimeoutFields>,
}

/// A route's timeouts, as durations (`30s`, `2m`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeoutFields {
    /// Longest wait for a streamed response's head.
    ttfb: Option<String>,
    /// Longest one attempt may take, head and body.
    total: Option<String>,
}

impl ModelFields {
    /// The routing these fields ask for, checked.
    fn routing(&self) -> Result<Routing, ApiError> {
        let invalid = |detail: String| ApiError::new(ErrorCode::InvalidField, detail);
        let strategy = match &self.strategy {
            None => Strategy::Priority,
            Some(name) => Strategy::named(name).ok_or_else(|| {
                let names: Vec<&str> = Strategy::ALL.iter().map(|s| s.name()).collect();
                invalid(format!("strategy: one of {}", names.join(", ")))
            })?,
        };
        if self.max_attempts.is_some_and(|n| !(1..=5).contains(&n)) {
            return Err(invalid("max_attempts: 1 to 5".into()));
        }
        if self.retry_budget_percent.is_some_and(|n| n > 100) {
            return Err(invalid("retry_budget_percent: 0 to 100".into()));
        }
        let duration = |field: &str, text: Option<&String>, most: u64| {
            text.map(|text| {
                routero_core::parse_duration(text)
                    .ok()
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                    .filter(|ms| (1000..=most).contains(ms))
                    .ok_or_else(|| {
                        invalid(format!(
                            "timeouts.{field}: a duration from 1s to {}s",
                            most / 1000
                        ))
                    })
            })
            .transpose()
        };
        let timeouts = self.timeouts.as_ref();
        Ok(Routing {
            strategy,
            max_attempts: self.max_attempts,
            retry_budget_percent: self.retry_budget_percent,
            ttfb_timeout_ms: duration("ttfb", timeouts.and_then(|t| t.ttfb.as_ref()), 600_000)?,
            timeout_ms: duration("total", timeouts.and_then(|t| t.total.as_ref()), 3_600_000)?,
        })
    }
}

/// What a route's tokens cost as the API takes it: USD per million tokens.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PricingFields {
    input_per_mtok: f64,
    output_per_mtok: f64,
    cached_input_per_mtok: Option<f64>,
    /// The completion reserved for a request that names no `max_tokens`.
    default_max_tokens: Option<u64>,
}

/// The most a million tokens may cost, in USD (prices are checked, not trusted).
const MAX_PRICE_PER_MTOK: f64 = 100_000.0;

impl PricingFields {
    fn checked(&self) -> Result<Pricing, ApiError> {
        let price = |field: &str, usd: f64| {
            if !(0.0..=MAX_PRICE_PER_MTOK).contains(&usd) {
                return Err(ApiError::new(
                    ErrorCode::InvalidField,
                    format!("pricing.{field}: 0 to {MAX_PRICE_PER_MTOK} USD per million tokens"),
                ));
            }
            usd_to_micros(field, usd)
                .map(i64::unsigned_abs)
                .map_err(|detail| ApiError::new(ErrorCode::InvalidField, detail))
        };
        if self
            .default_max_tokens
            .is_some_and(|n| n == 0 || n > MAX_DEFAULT_MAX_TOKENS)
        {
            return Err(ApiError::new(
                ErrorCode::InvalidField,
                format!("pricing.default_max_tokens: 1 to {MAX_DEFAULT_MAX_TOKENS}"),
            ));
        }
        Ok(Pricing {
            input_micros_per_mtok: price("input_per_mtok", self.input_per_mtok)?,
            output_micros_per_mtok: price("output_per_mtok", self.output_per_mtok)?,
            cached_input_micros_per_mtok: self
                .cached_input_per_mtok
                .map(|usd| price("cached_input_per_mtok", usd))
                .transpose()?,
            default_max_tokens: self.default_max_tokens,
        })
    }
}

/// The largest completion a route may reserve by default.
const MAX_DEFAULT_MAX_TOKENS: u64 = 10_000_000;

/// A route's pricing as answers show it: USD per million tokens.
fn pricing_json(pricing: &Pricing) -> Value {
    let usd = |micros: u64| micros_to_usd(i64::try_from(micros).unwrap_or(i64::MAX));
    json!({
        "input_per_mtok": usd(pricing.input_micros_per_mtok),
        "output_per_mtok": usd(pricing.output_micros_per_mtok),
        "cached_input_per_mtok": pricing.cached_input_micros_per_mtok.map(usd),
        "default_max_tokens": pricing.default_max_tokens,
    })
}

/// Attributes the policies give every resource themselves: a tag of that name would stand
/// in for the resource's own.
const RESERVED_TAGS: &[&str] = &["tenant", "owner"];

/// Tags the policies decide on, with the values they know. A spelling their rules do not
/// read (`"Premium"`) would leave a model open to every key, so names and values are
/// normalised (trimmed, lowercase) and any other value is refused.
const POLICY_TAGS: &[(&str, &[&str])] = &[
    ("tier", &["standard", "premium"]),
    ("env", &["production", "staging"]),
];

/// Checks and normalises tags: at most 16, names like other names, values of at most 128
/// printable characters; names the policies reserve are refused, and the tags they decide
/// on normalised to a value they know.
fn normalize_tags(tags: BTreeMap<String, String>) -> Result<BTreeMap<String, String>, ApiError> {
    if tags.len() > 16 {
        return Err(ApiError::new(ErrorCode::InvalidTags, "at most 16 tags"));
    }
    let mut normalized = BTreeMap::new();
    for (name, value) in tags {
        check_name("tags", &name)?;
        if value.is_empty() || value.len() > 128 || value.chars().any(char::is_control) {
            return Err(ApiError::new(
                ErrorCode::InvalidTags,
                format!("tags.{name}: 1-128 printable characters"),
            ));
        }
        if let Some(reserved) = RESERVED_TAGS.iter().find(|r| r.eq_ignore_ascii_case(&name)) {
            return Err(ApiError::new(
                ErrorCode::ReservedTag,
                format!("tags.{reserved}: the policies set this attribute themselves"),
            ));
        }
        let (name, value) = match POLICY_TAGS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(&name))
        {
            Some((policy_tag, known)) => {
                let value = value.trim().to_ascii_lowercase();
                if !known.contains(&value.as_str()) {
                    return Err(ApiError::new(
                        ErrorCode::InvalidTags,
                        format!("tags.{policy_tag}: one of {}", known.join(", ")),
                    ));
                }
                ((*policy_tag).to_owned(), value)
            }
            None => (name, value),
        };
        if normalized.contains_key(&name) {
            return Err(ApiError::new(
                ErrorCode::InvalidTags,
                format!("tags.{name}: given twice"),
            ));
        }
        normalized.insert(name, value);
    }
    Ok(normalized)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDeployment {
    credential: String,
    model: String,
    /// Share of a weighted route's requests (1-1000, default 1).
    weight: Option<u32>,
}

/// A route of the caller's tenant from its deployments, tags, pricing and routing, checked.
async fn route_of(
    state: &AppState,
    principal: &AdminPrincipal,
    name: String,
    fields: ModelFields,
) -> Result<Route, ApiError> {
    let routing = fields.routing()?;
    let tags = normalize_tags(fields.tags)?;
    let pricing = fields
        .pricing
        .as_ref()
        .map(PricingFields::checked)
        .transpose()?;
    let deployments = &fields.deployments;
    if deployments.is_empty() || deployments.len() > 32 {
        return Err(ApiError::new(
            ErrorCode::InvalidDeployments,
            "a model needs 1-32 deployments",
        ));
    }
    let mut stored = Vec::with_capacity(deployments.len());
    for deployment in deployments {
        check_name("deployments.model", &deployment.model)?;
        let credential_id = state
            .store
            .credential_id_by_name(&principal.tenant_id, &deployment.credential)
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::UnknownCredential,
                    format!(
                        "no credential named {:?} in this tenant",
                        deployment.credential
                    ),
                )
            })?;
        let weight = match deployment.weight {
            None => 1,
            Some(weight) if !(1..=1000).contains(&weight) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidDeployments,
                    "deployments.weight: 1 to 1000",
                ));
            }
            Some(_) if routing.strategy != Strategy::Weighted => {
                return Err(ApiError::new(
                    ErrorCode::InvalidDeployments,
                    "deployments.weight: only a weighted route's deployments have weights",
                ));
            }
            Some(weight) => weight,
        };
        stored.push(StoredDeployment {
            credential_id,
            model: deployment.model.clone(),
            weight,
        });
    }
    Ok(Route {
        tenant_id: principal.tenant_id.clone(),
        name,
        deployments: stored,
        tags,
        pricing,
        routing,
    })
}

pub(super) async fn create_model(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
    Body(body): Body<NewModel>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_name("name", &body.name)?;
    let route = route_of(&state, &principal, body.name, body.fields).await?;
    let event = AppState::event(
        &principal,
        &client,
        EventType::ModelCreated,
        ("model", Some(route.name.clone())),
    );
    state.store.create_route(&route, &[event]).await?;
    Ok((StatusCode::CREATED, Json(route_json(&route))))
}

/// Replaces a model's deployments, tags, pricing and routing; data planes route by them from
/// the next snapshot.
pub(super) async fn update_model(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
    Path(name): Path<String>,
    Body(fields): Body<ModelFields>,
) -> Result<Json<Value>, ApiError> {
    check_name("name", &name)?;
    let route = route_of(&state, &principal, name, fields).await?;
    let event = AppState::event(
        &principal,
        &client,
        EventType::ModelUpdated,
        ("model", Some(route.name.clone())),
    );
    state.store.replace_route(&route, &[event]).await?;
    Ok(Json(route_json(&route)))
}

/// Deletes a model: data planes refuse it (404 `model_not_found`) from the next snapshot.
pub(super) async fn delete_model(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_name("name", &name)?;
    let event = AppState::event(
        &principal,
        &client,
        EventType::ModelDeleted,
        ("model", Some(name.clone())),
    );
    state
        .store
        .delete_route(&principal.tenant_id, &name, &[event])
        .await?;
    Ok(Json(json!({ "deleted": name })))
}

fn route_json(route: &Route) -> Value {
    json!({
        "name": route.name,
        "deployments": route.deployments,
        "tags": route.tags,
        "pricing": route.pricing.as_ref().map(pricing_json),
        "strategy": route.routing.strategy.name(),
        "max_attempts": route.routing.max_attempts,
        "retry_budget_percent": route.routing.retry_budget_percent,
        "timeouts": {
            "ttfb": route.routing.ttfb_timeout_ms.map(|ms| routero_core::format_duration(std::time::Duration::from_millis(ms))),
            "total": route.routing.timeout_ms.map(|ms| routero_core::format_duration(std::time::Duration::from_millis(ms))),
        },
    })
}

pub(super) async fn list_models(
    State(state): State<AppState>,
    Caller { principal, .. }: Caller,
) -> Result<Json<Value>, ApiError> {
    let routes = state.store.list_routes(Some(&principal.tenant_id)).await?;
    Ok(Json(
        json!({ "models": routes.iter().map(route_json).collect::<Vec<_>>() }),
    ))
}
