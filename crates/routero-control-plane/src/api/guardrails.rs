//! The tenant's guardrail pipeline: validated here by compiling it, enforced by data planes
//! from the next snapshot; and what it found, over time, from the findings ledger.

use axum::Json;
use axum::extract::State;
use routero_core::ErrorCode;
use routero_core::audit::EventType;
use routero_guard::{GuardrailConfig, Pipeline};
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::Caller;
use super::audit::{audit_log, unavailable};
use super::extract::{Body, Query};
use super::times::{at_most, interval, over_time};
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FindingsQuery {
    from: Option<String>,
    to: Option<String>,
    interval: Option<String>,
}

/// `GET /guardrails/findings?from&to&interval=hour|day` (a day unless said; the range as
/// `over_time` allows): what the tenant's guardrails found per period, stage, detector and
/// action, from the chained `request.guardrail_triggered` events. Counts only: the matched text
/// is never recorded.
pub(super) async fn findings(
    State(state): State<AppState>,
    Caller { principal, .. }: Caller,
    Query(query): Query<FindingsQuery>,
) -> Result<Json<Value>, ApiError> {
    let interval = interval(query.interval.as_deref())?.unwrap_or(routero_audit::Interval::Day);
    let (from, to) = over_time(interval, query.from, query.to)?;
    let (rows, truncated) = at_most(
        audit_log(&state)?
            .guardrail_findings(&principal.tenant_id, (Some(&from), to.as_deref()), interval)
            .await
            .map_err(unavailable)?,
    );
    Ok(Json(json!({
        "interval": interval.name(),
        "from": from,
        "to": to,
        "rows": rows,
        "truncated": truncated,
    })))
}
