//! Virtual keys: generated here, shown once, stored only as a peppered hash.

use routero_core::{ErrorCode, Resource};

use axum::Json;
use axum::extract::State;
use routero_core::{KEY_PREFIX, parse_cidrs, parse_duration};
use routero_crypto::generate_api_key;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::access::{AllowedKey, Caller};
use super::budgets::{AllowanceFields, allowance_json, key_spend};
use super::credentials_and_models::check_name;
use super::extract::{Body, Query};
use super::times::unix_rfc3339;
use super::{ApiError, AppState, ClientInfo};
use routero_core::audit::EventType;

use crate::store::{AdminPrincipal, KeyChanges, KeyRecord};

const MAX_LIST: usize = 1000;
const MAX_METADATA_BYTES: usize = 16 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GenerateKey {
    models: Option<Vec<String>>,
    duration: Option<String>,
    allowed_cidrs: Option<Vec<String>>,
    team_id: Option<String>,
    user_id: Option<String>,
    metadata: Option<Map<String, Value>>,
    roles: Option<Vec<String>>,
    rpm_limit: Option<u64>,
    tpm_limit: Option<u64>,
    max_budget: Option<f64>,
    budget_duration: Option<String>,
    budget_thresholds: Option<Vec<u8>>,
}

/// A key's rate limits and budget as a request gives them, checked.
fn key_allowance(
    (rpm_limit, tpm_limit): (Option<u64>, Option<u64>),
    (max_budget, budget_duration, budget_thresholds): (
        Option<f64>,
        Option<String>,
        Option<Vec<u8>>,
    ),
) -> Result<routero_core::Allowance, ApiError> {
    AllowanceFields {
        rpm_limit,
        tpm_limit,
        max_budget,
        budget_duration,
        budget_thresholds,
        fail_open: None,
    }
    .checked()
}

/// Role names: at most 16, names like other names.
pub(super) fn check_roles(roles: &[String]) -> Result<(), ApiError> {
    if roles.len() > 16 {
        return Err(ApiError::new(ErrorCode::InvalidRoles, "at most 16 roles"));
    }
    roles.iter().try_for_each(|r| check_name("roles", r))
}

fn check_models(models: &[String]) -> Result<(), ApiError> {
    if models.len() > MAX_LIST {
        return Err(ApiError::new(
            ErrorCode::InvalidModels,
            "at most 1000 models",
        ));
    }
    models.iter().try_for_each(|m| check_name("models", m))
}

/// Parses and normalizes a CIDR allowlist (`10.1.2.3/8` becomes `10.0.0.0/8`).
fn normalize_cidrs(cidrs: &[String]) -> Result<Vec<String>, ApiError> {
    if cidrs.len() > MAX_LIST {
        return Err(ApiError::new(ErrorCode::InvalidCidr, "at most 1000 CIDRs"));
    }
    parse_cidrs(cidrs)
        .map(|nets| nets.iter().map(ToString::to_string).collect())
        .map_err(|e| ApiError::new(ErrorCode::InvalidCidr, e.to_string()))
}

fn check_metadata(metadata: &Map<String, Value>) -> Result<(), ApiError> {
    let size = serde_json::to_string(metadata).map_or(usize::MAX, |s| s.len());
    if size > MAX_METADATA_BYTES {
        return Err(ApiError::new(
            ErrorCode::InvalidMetadata,
            "metadata is limited to 16 KiB",
        ));
    }
    Ok(())
}

/// Unix seconds `duration` from now.
fn expiry(duration: &str) -> Result<i64, ApiError> {
    let duration = parse_duration(duration)
        .map_err(|e| ApiError::new(ErrorCode::InvalidDuration, e.to_string()))?;
    Ok(routero_core::unix_now()
        .saturating_add(i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)))
}

fn rfc3339(unix: Option<i64>) -> Value {
    unix.filter(|secs| *secs >= 0)
        .map_or(Value::Null, |secs| Value::String(unix_rfc3339(secs)))
}

/// A new secret and the parts of it that may be stored: hash and hint.
struct NewSecret {
    key: SecretString,
    hash: Vec<u8>,
    hint: String,
}

fn new_secret(state: &AppState) -> Result<NewSecret, ApiError> {
    let key = generate_api_key(KEY_PREFIX).map_err(crate::ControlPlaneError::from)?;
    let text = key.expose_secret();
    let body = text.strip_prefix(KEY_PREFIX).unwrap_or(text);
    let head: String = body.chars().take(4).collect();
    let tail: String = body
        .chars()
        .skip(body.chars().count().saturating_sub(4))
        .collect();
    let hint = format!("{KEY_PREFIX}{head}...{tail}");
    let hash = state.hasher.hash(text).0.to_vec();
    Ok(NewSecret { key, hash, hint })
}

fn record_json(key: &KeyRecord) -> Value {
    json!({
        "key_id": key.id,
        "key_hint": key.key_hint,
        "team_id": key.team_id,
        "user_id": key.user_id,
        "models": key.models,
        "allowed_cidrs": key.allowed_cidrs,
        "metadata": key.metadata,
        "expires": rfc3339(key.expires_at),
        "created_at": rfc3339(Some(key.created_at)),
        "revoked": key.revoked_at.is_some(),
        "roles": key.roles,
    })
}

/// A key as answers show it: its record, budget and limits.
fn key_json(key: &KeyRecord) -> Value {
    let mut body = record_json(key);
    if let (Value::Object(map), Value::Object(limits)) = (&mut body, allowance_json(&key.limits)) {
        map.extend(limits);
    }
    body
}

/// The one response that carries a key: generation and regeneration.
fn issued_json(secret: &NewSecret, key: &KeyRecord) -> Value {
    let mut body = key_json(key);
    if let Value::Object(map) = &mut body {
        map.insert(
            "key".into(),
            Value::String(secret.key.expose_secret().to_owned()),
        );
    }
    body
}

pub(super) async fn generate(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
    Body(body): Body<GenerateKey>,
) -> Result<Json<Value>, ApiError> {
    let models = body.models.unwrap_or_default();
    check_models(&models)?;
    let allowed_cidrs = normalize_cidrs(&body.allowed_cidrs.unwrap_or_default())?;
    let metadata = body.metadata.unwrap_or_default();
    check_metadata(&metadata)?;
    let expires_at = body.duration.as_deref().map(expiry).transpose()?;
    let roles = body.roles.unwrap_or_default();
    check_roles(&roles)?;
    let limits = key_allowance(
        (body.rpm_limit, body.tpm_limit),
        (
            body.max_budget,
            body.budget_duration,
            body.budget_thresholds,
        ),
    )?;
    // A person signed in mints personal keys: bound to them unless they name another user
    // (which the policies decide), so the keys die with the person.
    let user_id = body
        .user_id
        .or_else(|| principal.session_id.as_ref().and(principal.user_id.clone()));
    state
        .allow_issue(
            &principal,
            &client,
            ("key", "*"),
            &roles,
            user_id.as_deref(),
            body.team_id.as_deref(),
        )
        .await?;
    let secret = new_secret(&state)?;
    let record = KeyRecord {
        id: format!("key_{}", uuid::Uuid::now_v7().simple()),
        tenant_id: principal.tenant_id.clone(),
        key_hash: secret.hash.clone(),
        key_hint: secret.hint.clone(),
        team_id: body.team_id,
        user_id,
        models,
        allowed_cidrs,
        metadata,
        expires_at,
        created_at: routero_core::unix_now(),
        revoked_at: None,
        roles,
        owner: Some(principal.key_id.clone()),
        limits,
    };
    let event = AppState::event(
        &principal,
        &client,
        EventType::KeyCreated,
        ("key", Some(record.id.clone())),
    );
    state.store.insert_key(&record, &[event]).await?;
    Ok(Json(issued_json(&secret, &record)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeleteKeys {
    #[serde(default)]
    keys: Vec<SecretString>,
    #[serde(default)]
    key_ids: Vec<String>,
}

pub(super) async fn delete(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
    Body(body): Body<DeleteKeys>,
) -> Result<Json<Value>, ApiError> {
    let count = body.keys.len() + body.key_ids.len();
    if count == 0 || count > MAX_LIST {
        return Err(ApiError::new(
            ErrorCode::InvalidKeys,
            "name 1-1000 keys in keys or key_ids",
        ));
    }
    let hashes: Vec<Vec<u8>> = body
        .keys
        .iter()
        .map(|k| state.hasher.hash(k.expose_secret()).0.to_vec())
        .collect();
    let keys = state
        .store
        .active_keys(&principal.tenant_id, &body.key_ids, &hashes)
        .await?;
    let mut ids = Vec::with_capacity(keys.len());
    for key in keys {
        ids.push(
            state
                .allow_key(&principal, &client, "revoke", key)
                .await?
                .id
                .clone(),
        );
    }
    let events: Vec<_> = ids
        .iter()
        .map(|id| {
            AppState::event(
                &principal,
                &client,
                EventType::KeyRevoked,
                ("key", Some(id.clone())),
            )
        })
        .collect();
    let revoked = state
        .store
        .revoke_keys(&principal.tenant_id, &ids, &events)
        .await?;
    Ok(Json(json!({ "deleted_keys": revoked })))
}

/// The active key `key_id` of the tenant, once `principal` is allowed `action` on it: by the
/// policies, and by holding every role the key acts with (only `admin` acts on a key with
/// rights it lacks), so that rotating or updating a key never hands over more rights.
async fn active_key_allowed(
    state: &AppState,
    principal: &AdminPrincipal,
    client: &ClientInfo,
    action: &str,
    key_id: &str,
) -> Result<AllowedKey, ApiError> {
    let key = state
        .store
        .active_keys(&principal.tenant_id, &[key_id.to_owned()], &[])
        .await?
        .pop()
        .ok_or(crate::ControlPlaneError::NotFound(Resource::Key))?;
    let key = state.allow_key(principal, client, action, key).await?;
    state
        .allow_held(principal, client, ("key", &key.id), action, &key.roles, &[])
        .await?;
    Ok(key)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyIdQuery {
    key_id: String,
}

pub(super) async fn info(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
    Query(query): Query<KeyIdQuery>,
) -> Result<Json<Value>, ApiError> {
    let key = state
        .store
        .get_key(&principal.tenant_id, &query.key_id)
        .await?;
    let key = state.allow_key(&principal, &client, "read", key).await?;
    let mut info = key_json(&key);
    if let Value::Object(map) = &mut info {
        let spend = key_spend(&state, &principal.tenant_id, &key.id).await;
        map.insert("spend".into(), json!(spend));
    }
    Ok(Json(json!({ "key_id": key.id, "info": info })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    #[serde(default)]
    include_revoked: bool,
}

pub(super) async fn list(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let owner = state.listable_keys(&principal, &client).await?;
    let keys = state
        .store
        .list_keys(
            &principal.tenant_id,
            owner.as_deref(),
            query.include_revoked,
        )
        .await?;
    Ok(Json(
        json!({ "keys": keys.iter().map(key_json).collect::<Vec<_>>() }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Regenerate {
    key_id: String,
    duration: Option<String>,
}

pub(super) async fn regenerate(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
    Body(body): Body<Regenerate>,
) -> Result<Json<Value>, ApiError> {
    let expires_at = body.duration.as_deref().map(expiry).transpose()?.map(Some);
    let key = active_key_allowed(&state, &principal, &client, "rotate", &body.key_id).await?;
    let secret = new_secret(&state)?;
    let event = AppState::event(
        &principal,
        &client,
        EventType::KeyRotated,
        ("key", Some(key.id.clone())),
    );
    let record = state
        .store
        .replace_key_secret(
            &principal.tenant_id,
            &key.id,
            (&secret.hash, &secret.hint),
            expires_at,
            &[event],
        )
        .await?;
    Ok(Json(issued_json(&secret, &record)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateKey {
    key_id: String,
    models: Option<Vec<String>>,
    duration: Option<String>,
    allowed_cidrs: Option<Vec<String>>,
    metadata: Option<Map<String, Value>>,
    team_id: Option<String>,
    user_id: Option<String>,
    roles: Option<Vec<String>>,
    rpm_limit: Option<u64>,
    tpm_limit: Option<u64>,
    max_budget: Option<f64>,
    budget_duration: Option<String>,
    budget_thresholds: Option<Vec<u8>>,
}

pub(super) async fn update(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
    Body(body): Body<UpdateKey>,
) -> Result<Json<Value>, ApiError> {
    if let Some(models) = &body.models {
        check_models(models)?;
    }
    if let Some(metadata) = &body.metadata {
        check_metadata(metadata)?;
    }
    if let Some(roles) = &body.roles {
        check_roles(roles)?;
    }
    // A limit given replaces that limit; one not given stays as it is.
    let new_limits = key_allowance(
        (body.rpm_limit, body.tpm_limit),
        (
            body.max_budget,
            body.budget_duration,
            body.budget_thresholds,
        ),
    )?;
    let key = active_key_allowed(&state, &principal, &client, "update", &body.key_id).await?;
    state
        .allow_issue(
            &principal,
            &client,
            ("key", &key.id),
            body.roles.as_deref().unwrap_or_default(),
            body.user_id.as_deref(),
            body.team_id.as_deref(),
        )
        .await?;
    let changes = KeyChanges {
        models: body.models,
        allowed_cidrs: body
            .allowed_cidrs
            .as_deref()
            .map(normalize_cidrs)
            .transpose()?,
        metadata: body.metadata,
        expires_at: body.duration.as_deref().map(expiry).transpose()?.map(Some),
        team_id: body.team_id.map(Some),
        user_id: body.user_id.map(Some),
        roles: body.roles,
        limits: new_limits,
    };
    let event = AppState::event(
        &principal,
        &client,
        EventType::KeyUpdated,
        ("key", Some(key.id.clone())),
    );
    let key = state
        .store
        .update_key(&principal.tenant_id, &key.id, &changes, &[event])
        .await?;
    Ok(Json(json!({ "key_id": key.id, "info": key_json(&key) })))
}
