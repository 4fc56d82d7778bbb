//! `GET /audit/events`: the caller's tenant's audit trail, newest first, filtered and paged;
//! `POST /audit/verify`: its hash chain and signed checkpoints checked now; `GET /audit/export`:
//! all of it as NDJSON, verifiable with the public key alone.

use routero_core::ErrorCode;

use axum::Json;
use axum::extract::State;
use routero_audit::{AuditError, EventQuery};
use routero_core::audit::{EventType, Outcome};

use axum::response::IntoResponse as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::Caller;
use super::extract::{Body, Query};
use super::times::normalize_time;
use super::{ApiError, AppState};

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Filters {
    since: Option<String>,
    until: Option<String>,
    #[serde(rename = "type")]
    action: Option<EventType>,
    actor: Option<String>,
    outcome: Option<Outcome>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// The audit log, or 503 `audit_not_configured`.
pub(super) fn audit_log(state: &AppState) -> Result<&routero_audit::AuditStore, ApiError> {
    state
        .audit_log
        .as_ref()
        .ok_or_else(|| ApiError::new(ErrorCode::AuditNotConfigured, "No audit log is configured."))
}

pub(super) fn unavailable(error: routero_audit::AuditError) -> ApiError {
    tracing::error!(%error, "audit log failed");
    ApiError::new(ErrorCode::AuditUnavailable, "The audit log is unavailable.")
}

/// The wire name of a serde enum (`key.created`, `denied`).
fn wire_name<T: serde::Serialize>(value: &T) -> Option<String> {
    match serde_json::to_value(value) {
        Ok(Value::String(name)) => Some(name),
        _ => None,
    }
}

pub(super) async fn events(
    State(state): State<AppState>,
    Caller { principal, .. }: Caller,
    Query(filters): Query<Filters>,
) -> Result<Json<Value>, ApiError> {
    let log = state.audit_log.as_ref().ok_or_else(|| {
        ApiError::new(ErrorCode::AuditNotConfigured, "No audit log is configured.")
    })?;
    let limit = filters.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            format!("limit: 1-{MAX_PAGE}"),
        ));
    }
    let before_seq = filters
        .cursor
        .map(|c| {
            c.parse::<u64>().map_err(|_| {
                ApiError::new(
                    ErrorCode::InvalidQuery,
                    "cursor: not a cursor from this API",
                )
            })
        })
        .transpose()?;
    let query = EventQuery {
        since: normalize_time("since", filters.since)?,
        until: normalize_time("until", filters.until)?,
        action: filters.action.as_ref().and_then(wire_name),
        actor_id: filters.actor,
        outcome: filters.outcome.as_ref().and_then(wire_name),
        before_seq,
        limit,
    };
    let records = log
        .query(&principal.tenant_id, &query)
        .await
        .map_err(|error| {
            tracing::error!(%error, "audit query failed");
            ApiError::new(ErrorCode::AuditUnavailable, "The audit log is unavailable.")
        })?;
    let next_cursor = (records.len() == limit as usize)
        .then(|| records.last().map(|r| r.seq.to_string()))
        .flatten();
    Ok(Json(
        json!({ "events": records, "next_cursor": next_cursor }),
    ))
}

/// Verifies the caller's tenant's whole trail (chain, checkpoints, retention anchor) with the
/// configured public key: 200 with `"verified": true` and how far it is signed, or `false`
/// with the first bad sequence number and what is wrong there. The database is checked against
/// itself: a cut tail shows only against a witness (an export or SIEM copy kept elsewhere).
/// Two whole-log reads (verifications and exports) run at once at most; the hashing and
/// signature checks run off the request threads.
pub(super) async fn verify(
    State(state): State<AppState>,
    Caller { principal, .. }: Caller,
) -> Result<Json<Value>, ApiError> {
    let log = audit_log(&state)?;
    let verifier = state.audit_verifier.clone().ok_or_else(|| {
        ApiError::new(
            ErrorCode::AuditNotConfigured,
            "No checkpoint public key is configured (audit_public_key).",
        )
    })?;
    let _turn = whole_log_turn(&state).await?;
    let tenant = log.load(&principal.tenant_id).await.map_err(unavailable)?;
    let first_seq = tenant.anchor.as_ref().map_or(1, |anchor| anchor.seq + 1);
    let tenant_id = principal.tenant_id.clone();
    let verified = tokio::task::spawn_blocking(move || tenant.verify(&tenant_id, &verifier))
        .await
        .map_err(|_| ApiError::of(ErrorCode::InternalError))?;
    Ok(Json(match verified {
        Ok(verified) => json!({
            "verified": true,
            "first_seq": first_seq,
            "records": verified.records,
            "last_seq": verified.last_seq,
            "signed_through": verified.signed_through,
        }),
        Err(violation) => json!({
            "verified": false,
            "seq": violation.seq,
            "violation": violation.kind,
            "message": violation.to_string(),
        }),
    }))
}

/// A turn at reading a whole log, waited for (the request's deadline bounds the wait).
async fn whole_log_turn(state: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    std::sync::Arc::clone(&state.whole_log)
        .acquire_owned()
        .await
        .map_err(|_| ApiError::of(ErrorCode::InternalError))
}

/// The caller's tenant's trail as NDJSON (anchor, records, checkpoints), a download; recorded
/// as `audit.exported` (who, and how many records).
pub(super) async fn export(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
) -> Result<axum::response::Response, ApiError> {
    let log = audit_log(&state)?;
    let _turn = whole_log_turn(&state).await?;
    let tenant = log.load(&principal.tenant_id).await.map_err(unavailable)?;
    let records = tenant.records.len();
    let body = tokio::task::spawn_blocking(move || {
        let mut body = Vec::new();
        for line in tenant.into_export() {
            serde_json::to_writer(&mut body, &line)?;
            body.push(b'\n');
        }
        Ok::<_, serde_json::Error>(body)
    })
    .await
    .map_err(|_| ApiError::of(ErrorCode::InternalError))?
    .map_err(|_| ApiError::of(ErrorCode::InternalError))?;
    let mut event = AppState::event(
        &principal,
        &client,
        EventType::AuditExported,
        ("audit_log", None),
    );
    event.details.insert("records".into(), records.into());
    state.store.record_events(&[event]).await?;
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/x-ndjson"),
            (
                axum::http::header::CONTENT_DISPOSITION,
                "attachment; filename=\"routero-audit.ndjson\"",
            ),
            (axum::http::header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Retention {
    days: u32,
}

/// Longest retention accepted: ten years.
const MAX_RETENTION_DAYS: u32 = 3650;

pub(super) async fn get_retention(
    State(state): State<AppState>,
    Caller { principal, .. }: Caller,
) -> Result<Json<Value>, ApiError> {
    let days = audit_log(&state)?
        .retention(&principal.tenant_id)
        .await
        .map_err(unavailable)?;
    Ok(Json(json!({ "days": days })))
}

pub(super) async fn set_retention(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
    Body(body): Body<Retention>,
) -> Result<Json<Value>, ApiError> {
    if body.days == 0 || body.days > MAX_RETENTION_DAYS {
        return Err(ApiError::new(
            ErrorCode::InvalidRetention,
            format!("days: 1-{MAX_RETENTION_DAYS}"),
        ));
    }
    let checked = audit_log(&state)?.check_retention(body.days);
    if let Err(AuditError::RetentionTooShort { minimum }) = checked {
        let days = body.days.to_string();
        let refusal = state.refusal_event(
            &principal,
            &client,
            ("audit_retention", &days),
            "update",
            "retention_too_short",
        );
        state.publish(refusal).await;
        return Err(ApiError::new(
            ErrorCode::RetentionTooShort,
            format!("days: at least {minimum}, the operator's minimum"),
        ));
    }
    // The retention lives in the tenant's chain: this event is the change (the writer prunes by
    // the chain, never by a table someone with the database could edit).
    if state.audit.is_none() {
        return Err(ApiError::new(
            ErrorCode::AuditUnavailable,
            "Retention is set in the audit trail, and this control plane has no audit pipeline.",
        ));
    }
    let mut event = AppState::event(
        &principal,
        &client,
        EventType::AuditRetentionChanged,
        ("audit_retention", Some(body.days.to_string())),
    );
    event.details.insert("days".into(), body.days.into());
    state.store.record_events(&[event]).await?;
    Ok(Json(json!({ "days": body.days })))
}
