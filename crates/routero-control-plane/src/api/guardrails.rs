//! The tenant's guardrail pipeline: validated here by compiling it, enforced by data planes
//! from the next snapshot.

use axum::Json;
use axum::extract::State;
use routero_core::ErrorCode;
use routero_core::audit::EventType;
use routero_guard::{GuardrailConfig, Pipeline};
use serde_json::{Value, json};

use super::access::Caller;
use super::extract::Body;
use super::{ApiError, AppState};
use crate::ControlPlaneError;

/// The tenant's pipeline (empty when none is set: nothing is scanned).
pub(super) async fn get(
    State(state): State<AppState>,
    Caller { principal, .. }: Caller,
) -> Result<Json<Value>, ApiError> {
    let config: GuardrailConfig = match state.store.guardrails(&principal.tenant_id).await? {
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| ControlPlaneError::Corrupt(format!("guardrails: {e}")))?,
        None => GuardrailConfig::default(),
    };
    Ok(Json(json!(config)))
}

/// Replaces the tenant's pipeline; a configuration that does not compile (unknown detector,
/// a custom regex that is invalid or could run away) is refused whole.
pub(super) async fn put(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
    Body(config): Body<GuardrailConfig>,
) -> Result<Json<Value>, ApiError> {
    Pipeline::compile(&config)
        .map_err(|e| ApiError::new(ErrorCode::InvalidGuardrails, e.to_string()))?;
    let text = serde_json::to_string(&config)
        .map_err(|e| ControlPlaneError::Corrupt(format!("guardrails: {e}")))?;
    let event = AppState::event(
        &principal,
        &client,
        EventType::GuardrailsUpdated,
        ("guardrails", Some(principal.tenant_id.clone())),
    );
    state
        .store
        .put_guardrails(&principal.tenant_id, &text, &[event])
        .await?;
    Ok(Json(json!(config)))
}
