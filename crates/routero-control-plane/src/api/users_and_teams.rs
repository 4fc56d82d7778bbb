//! Teams and users of a tenant as the admin API sees them: the same records SCIM provisions
//! (`scim_managed` says which the identity provider owns).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::Caller;
use super::credentials_and_models::check_name;
use super::extract::Body;
use super::{ApiError, AppState};

use crate::store::User;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewTeam {
    name: String,
    external_id: Option<String>,
}

pub(super) async fn create_team(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
    Body(body): Body<NewTeam>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_name("name", &body.name)?;
    let changer = AppState::changer(&principal, &client);
    let team = state
        .store
        .create_team(&changer, &body.name, body.external_id.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(json!(team))))
}

pub(super) async fn list_teams(
    State(state): State<AppState>,
    Caller { principal, .. }: Caller,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "teams": state.store.list_teams(&principal.tenant_id).await? }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewUser {
    user_name: String,
    email: Option<String>,
    display_name: Option<String>,
    external_id: Option<String>,
    #[serde(default = "active_by_default")]
    active: bool,
    #[serde(default)]
    team_ids: Vec<String>,
}

fn active_by_default() -> bool {
    true
}

pub(super) async fn create_user(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
    Body(body): Body<NewUser>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_name("user_name", &body.user_name)?;
    let user = User {
        id: String::new(),
        user_name: body.user_name,
        email: body.email,
        display_name: body.display_name,
        external_id: body.external_id,
        active: body.active,
        team_ids: body.team_ids,
        scim_managed: false,
    };
    let changer = AppState::changer(&principal, &client);
    let user = state.store.create_user(&changer, &user).await?;
    Ok((StatusCode::CREATED, Json(json!(user))))
}

/// `GET /users`: the tenant's users, each with the roles the tenant's role mapping gives them
/// from their groups (`roles` is absent when the tenant has no mapping).
pub(super) async fn list_users(
    State(state): State<AppState>,
    Caller { principal, .. }: Caller,
) -> Result<Json<Value>, ApiError> {
    let tenant = &principal.tenant_id;
    let users = state.store.list_users(tenant).await?;
    let ids: Vec<&str> = users.iter().map(|user| user.id.as_str()).collect();
    let roles = state.store.mapped_roles(tenant, &ids).await?;
    let mut listed: Vec<Value> = users.iter().map(|user| json!(user)).collect();
    if let Some(roles) = roles {
        for (value, held) in listed.iter_mut().zip(roles) {
            if let Some(fields) = value.as_object_mut() {
                fields.insert("roles".into(), json!(held));
            }
        }
    }
    Ok(Json(json!({ "users": listed })))
}
