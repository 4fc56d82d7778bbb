//! What a tenant's admins set up for provisioning: SCIM tokens for the identity provider
//! (shown once, stored hashed), and the role mapping from its groups to Routero roles.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use routero_core::ErrorCode;
use routero_core::audit::EventType;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::Caller;
use super::admin_keys_and_roles::require_known_roles;
use super::credentials_and_models::check_name;
use super::extract::{Body, Path};
use super::keys::check_roles;
use super::{ApiError, AppState};
use crate::role_mapping::RoleMapping;

/// The most rules a role mapping holds.
const MAX_RULES: usize = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewScimToken {
    name: String,
}

/// A SCIM token holds the identity provider's power over every person and group of the
/// tenant (and so over the roles the mapping gives them): only a caller with the `admin` role
/// creates or revokes one, whatever the policies let others do (403 `role_escalation`).
async fn require_admin(
    state: &AppState,
    principal: &crate::store::AdminPrincipal,
    client: &super::ClientInfo,
    action: &str,
) -> Result<(), ApiError> {
    let admin = [crate::ADMIN_ROLE.to_owned()];
    state
        .allow_held(principal, client, ("scim_token", "*"), action, &admin, &[])
        .await
}

/// Issues a SCIM token; the token is in this response only.
pub(super) async fn create_token(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
    Body(body): Body<NewScimToken>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_name("name", &body.name)?;
    require_admin(&state, &principal, &client, "create").await?;
    let token = routero_crypto::generate_api_key("rscim-")
        .map_err(|_| ApiError::of(ErrorCode::InternalError))?;
    let hash = state.hasher.hash(token.expose_secret());
    let event = AppState::event(
        &principal,
        &client,
        EventType::ScimTokenCreated,
        ("scim_token", None),
    );
    let record = state
        .store
        .create_scim_token(&principal.tenant_id, &body.name, &hash.0, vec![event])
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": record.id,
            "name": record.name,
            "token": token.expose_secret(),
            "created_at": record.created_at,
        })),
    ))
}

/// The tenant's SCIM tokens, never the tokens themselves.
pub(super) async fn list_tokens(
    State(state): State<AppState>,
    Caller { principal, .. }: Caller,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "tokens": state.store.list_scim_tokens(&principal.tenant_id).await? }),
    ))
}

/// Revokes a SCIM token: the identity provider's next request with it is refused.
pub(super) async fn revoke_token(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&state, &principal, &client, "revoke").await?;
    let event = AppState::event(
        &principal,
        &client,
        EventType::ScimTokenRevoked,
        ("scim_token", Some(id.clone())),
    );
    state
        .store
        .revoke_scim_token(&principal.tenant_id, &id, &[event])
        .await?;
    Ok(Json(json!({ "id": id, "revoked": true })))
}

/// The tenant's role mapping (no rules and no default roles when it has none).
pub(super) async fn get_role_mapping(
    State(state): State<AppState>,
    Caller { principal, .. }: Caller,
) -> Result<Json<Value>, ApiError> {
    let mapping = state
        .store
        .role_mapping(&principal.tenant_id)
        .await?
        .unwrap_or_default();
    Ok(Json(json!(mapping)))
}

/// Replaces the tenant's role mapping. Every role must exist, and a caller without `admin`
/// maps groups only to roles it holds itself.
pub(super) async fn put_role_mapping(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
    Body(mapping): Body<RoleMapping>,
) -> Result<Json<Value>, ApiError> {
    if mapping.rules.len() > MAX_RULES {
        return Err(ApiError::new(
            ErrorCode::InvalidRoles,
            format!("at most {MAX_RULES} rules"),
        ));
    }
    let mut granted: Vec<String> = mapping.default_roles.clone();
    for rule in &mapping.rules {
        check_name("group", &rule.group)?;
        if rule.roles.is_empty() {
            return Err(ApiError::new(
                ErrorCode::InvalidRoles,
                "each rule names at least one role",
            ));
        }
        granted.extend(rule.roles.iter().cloned());
    }
    granted.sort();
    granted.dedup();
    check_roles(&mapping.default_roles)?;
    granted.iter().try_for_each(|r| check_name("roles", r))?;
    require_known_roles(&state, &principal.tenant_id, &granted).await?;
    state
        .allow_held(
            &principal,
            &client,
            ("role_mapping", "*"),
            "manage",
            &granted,
            &[],
        )
        .await?;
    let event = AppState::event(
        &principal,
        &client,
        EventType::RoleMappingUpdated,
        ("role_mapping", Some(principal.tenant_id.clone())),
    );
    state
        .store
        .put_role_mapping(&principal.tenant_id, &mapping, &[event])
        .await?;
    Ok(Json(json!(mapping)))
}
