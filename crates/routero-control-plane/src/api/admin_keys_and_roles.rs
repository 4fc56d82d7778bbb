//! Admin keys and custom roles: who may use the admin API, and with which permissions.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use routero_core::{ErrorCode, Resource};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::Caller;
use super::access::{BUILT_IN_ROLES, check_permissions};
use super::credentials_and_models::check_name;
use super::extract::{Body, Path, Query};
use super::keys::check_roles;
use super::{ApiError, AppState, ClientInfo};
use routero_core::audit::EventType;

use crate::store::{AdminPrincipal, CustomRole};

/// Checks the roles an account is given: at least one, well named, each built in or the
/// tenant's own.
pub(super) async fn require_roles_to_grant(
    state: &AppState,
    tenant_id: &str,
    roles: &[String],
) -> Result<(), ApiError> {
    check_roles(roles)?;
    if roles.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidRoles,
            "name at least one role",
        ));
    }
    require_known_roles(state, tenant_id, roles).await
}

/// Refuses (400 `unknown_role`) a role that is neither built in nor one of the tenant's.
pub(super) async fn require_known_roles(
    state: &AppState,
    tenant_id: &str,
    roles: &[String],
) -> Result<(), ApiError> {
    let custom = state.store.list_roles(tenant_id).await?;
    match roles.iter().find(|role| {
        !BUILT_IN_ROLES.contains(&role.as_str()) && !custom.iter().any(|c| &c.name == *role)
    }) {
        Some(unknown) => Err(ApiError::new(
            ErrorCode::UnknownRole,
            format!("{unknown}: neither a built-in role nor a custom role of this tenant"),
        )),
        None => Ok(()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewAdminKey {
    name: String,
    roles: Vec<String>,
    /// The user the key acts for: the keys it creates may be bound to that user and its teams.
    user_id: Option<String>,
}

/// Issues an admin key with built-in or custom roles, acting for a user when given; the key
/// is in this response only.
pub(super) async fn create_admin_key(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
    Body(body): Body<NewAdminKey>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_name("name", &body.name)?;
    require_roles_to_grant(&state, &principal.tenant_id, &body.roles).await?;
    state
        .allow_issue(
            &principal,
            &client,
            ("admin_key", "*"),
            &body.roles,
            body.user_id.as_deref(),
            None,
        )
        .await?;
    let event = AppState::event(
        &principal,
        &client,
        EventType::AdminKeyCreated,
        ("admin_key", None),
    );
    let (secret, key) = crate::issue_admin_key(
        &state.store,
        &state.hasher,
        &principal.tenant_id,
        (&body.name, &body.roles, body.user_id.as_deref()),
        vec![event],
    )
    .await?;
    let mut body = json!(key);
    if let Some(fields) = body.as_object_mut() {
        fields.insert(
            "key".into(),
            Value::String(secret.expose_secret().to_owned()),
        );
    }
    Ok((StatusCode::CREATED, Json(body)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    #[serde(default)]
    include_revoked: bool,
}

/// The tenant's admin keys (never their secrets).
pub(super) async fn list_admin_keys(
    State(state): State<AppState>,
    Caller { principal, .. }: Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let keys = state
        .store
        .list_admin_keys(&principal.tenant_id, query.include_revoked)
        .await?;
    Ok(Json(json!({ "admin_keys": keys })))
}

/// Revokes an admin key at once (never the tenant's last one with the admin role).
pub(super) async fn revoke_admin_key(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let event = AppState::event(
        &principal,
        &client,
        EventType::AdminKeyRevoked,
        ("admin_key", Some(id.clone())),
    );
    let key = state
        .store
        .revoke_admin_key(&principal.tenant_id, &id, &[event])
        .await?;
    Ok(Json(json!(key)))
}

/// The tenant's custom roles.
pub(super) async fn list_roles(
    State(state): State<AppState>,
    Caller { principal, .. }: Caller,
) -> Result<Json<Value>, ApiError> {
    let roles = state.store.list_roles(&principal.tenant_id).await?;
    Ok(Json(json!({ "roles": roles })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RolePermissions {
    permissions: Vec<String>,
}

/// The tenant's role `name`, if any, once `principal` may manage it: holding `giving` and
/// every permission the role grants now (only `admin` manages a role with rights it lacks).
async fn allow_manage_role(
    state: &AppState,
    principal: &AdminPrincipal,
    client: &ClientInfo,
    name: &str,
    giving: &[String],
) -> Result<Option<CustomRole>, ApiError> {
    let current = state.store.role(&principal.tenant_id, name).await?;
    let touched: Vec<String> = current
        .iter()
        .flat_map(|role| &role.permissions)
        .chain(giving)
        .cloned()
        .collect();
    state
        .allow_held(principal, client, ("role", name), "manage", &[], &touched)
        .await?;
    Ok(current)
}

/// Creates or replaces a custom role: a set of `"<kind>:<action>"` permissions. A caller
/// without `admin` must hold the permissions it gives, and those of the role it replaces.
pub(super) async fn put_role(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
    Path(name): Path<String>,
    Body(body): Body<RolePermissions>,
) -> Result<Json<Value>, ApiError> {
    check_name("name", &name)?;
    if BUILT_IN_ROLES.contains(&name.as_str()) {
        return Err(ApiError::new(
            ErrorCode::ReservedRole,
            format!("{name} is a built-in role"),
        ));
    }
    check_permissions(&body.permissions)?;
    allow_manage_role(&state, &principal, &client, &name, &body.permissions).await?;
    let mut permissions = body.permissions;
    permissions.sort();
    permissions.dedup();
    let role = CustomRole { name, permissions };
    let event = AppState::event(
        &principal,
        &client,
        EventType::RoleUpdated,
        ("role", Some(role.name.clone())),
    );
    state
        .store
        .put_role(&principal.tenant_id, &role, &[event])
        .await?;
    Ok(Json(json!(role)))
}

/// Deletes a custom role (a caller without `admin` only one whose permissions it holds) and
/// takes its name off every key: admin keys lose its permissions at their next request, and
/// a role created later under the name grants nothing to the keys that held this one.
pub(super) async fn delete_role(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    allow_manage_role(&state, &principal, &client, &name, &[])
        .await?
        .ok_or(crate::ControlPlaneError::NotFound(Resource::Role))?;
    let event = AppState::event(
        &principal,
        &client,
        EventType::RoleDeleted,
        ("role", Some(name.clone())),
    );
    state
        .store
        .delete_role(&principal.tenant_id, &name, &[event])
        .await?;
    Ok(Json(json!({ "deleted": name })))
}
