//! Budgets and rate limits of the tenant, its teams and its users (a key's own are set on the
//! key), in LiteLLM's names with money in USD; data planes count by them from the next
//! snapshot.

use axum::Json;
use axum::extract::{Path, State};
use routero_core::audit::EventType;
use routero_core::{Allowance, ErrorCode, micros_to_usd, usd_to_micros};
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::Caller;
use super::extract::Body;
use super::{ApiError, AppState};

/// Budget and limit fields as the API takes them: money in USD.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AllowanceFields {
    pub(super) rpm_limit: Option<u64>,
    pub(super) tpm_limit: Option<u64>,
    pub(super) max_budget: Option<f64>,
    pub(super) budget_duration: Option<String>,
    pub(super) budget_thresholds: Option<Vec<u8>>,
}

impl AllowanceFields {
    /// The allowance these fields give, checked (400 `invalid_field` naming the field).
    pub(super) fn checked(self) -> Result<Allowance, ApiError> {
        let invalid = |detail: String| ApiError::new(ErrorCode::InvalidField, detail);
        let allowance = Allowance {
            rpm_limit: self.rpm_limit,
            tpm_limit: self.tpm_limit,
            max_budget_micros: self
                .max_budget
                .map(|usd| usd_to_micros("max_budget", usd))
                .transpose()
                .map_err(invalid)?,
            budget_duration: self.budget_duration,
            budget_thresholds: self.budget_thresholds.unwrap_or_default(),
        };
        allowance.check().map_err(invalid)?;
        Ok(allowance)
    }
}

/// An allowance as answers show it: money in USD, absent parts as null.
pub(super) fn allowance_json(allowance: &Allowance) -> Value {
    json!({
        "rpm_limit": allowance.rpm_limit,
        "tpm_limit": allowance.tpm_limit,
        "max_budget": allowance.max_budget_micros.map(micros_to_usd),
        "budget_duration": allowance.budget_duration,
        "budget_thresholds": allowance.thresholds(),
    })
}

/// Replaces one scope's allowance (an empty body removes every limit) and records it.
async fn put(
    state: &AppState,
    caller: &Caller,
    (kind, id): (&str, Option<String>),
    fields: AllowanceFields,
) -> Result<Json<Value>, ApiError> {
    let Caller { principal, client } = caller;
    let allowance = fields.checked()?;
    let scope = id
        .as_ref()
        .map_or_else(|| kind.to_owned(), |id| format!("{kind}:{id}"));
    let event = AppState::event(principal, client, EventType::BudgetUpdated, (kind, id));
    state
        .store
        .put_allowance(&principal.tenant_id, &scope, &allowance, &[event])
        .await?;
    Ok(Json(
        json!({ "scope": scope, "budget": allowance_json(&allowance) }),
    ))
}

/// `PUT /teams/{id}/budget` (404 for a team of another tenant).
pub(super) async fn put_team(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<AllowanceFields>,
) -> Result<Json<Value>, ApiError> {
    put(&state, &caller, ("team", Some(id)), body).await
}

/// `PUT /users/{id}/budget` (404 for a user of another tenant).
pub(super) async fn put_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<AllowanceFields>,
) -> Result<Json<Value>, ApiError> {
    put(&state, &caller, ("user", Some(id)), body).await
}

/// `PUT /tenant/budget`: the whole tenant's.
pub(super) async fn put_tenant(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<AllowanceFields>,
) -> Result<Json<Value>, ApiError> {
    put(&state, &caller, ("tenant", None), body).await
}
