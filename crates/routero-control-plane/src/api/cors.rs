//! The origins a tenant's web apps may call both APIs from (CORS): none unless an admin lists
//! some. Preflights are answered for an origin some tenant lists; a response carries
//! `Access-Control-Allow-Origin` only when the caller's own tenant lists the origin.

use axum::Json;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use routero_core::ErrorCode;
use routero_core::audit::EventType;
use routero_http::cors;
use serde::Deserialize;
use serde_json::{Value, json};

use super::access::Caller;
use super::extract::Body;
use super::{ApiError, AppState};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Origins {
    origins: Vec<String>,
}

/// `GET /cors`: the tenant's origins.
pub(super) async fn get(
    State(state): State<AppState>,
    Caller { principal, .. }: Caller,
) -> Result<Json<Value>, ApiError> {
    let origins = state.store.cors_origins(&principal.tenant_id).await?;
    Ok(Json(json!({ "origins": origins })))
}

/// `PUT /cors`: replaces the tenant's origins (an empty list allows none).
pub(super) async fn put(
    State(state): State<AppState>,
    Caller { principal, client }: Caller,
    Body(body): Body<Origins>,
) -> Result<Json<Value>, ApiError> {
    if body.origins.len() > cors::MAX_ORIGINS {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            format!("origins: at most {}", cors::MAX_ORIGINS),
        ));
    }
    let mut origins = body
        .origins
        .iter()
        .map(|o| cors::origin(o))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|detail| ApiError::new(ErrorCode::InvalidField, format!("origins: {detail}")))?;
    origins.sort();
    origins.dedup();
    let mut event = AppState::event(
        &principal,
        &client,
        EventType::CorsUpdated,
        ("tenant", Some(principal.tenant_id.clone())),
    );
    event.details.insert("origins".into(), json!(origins));
    state
        .store
        .put_cors_origins(&principal.tenant_id, &origins, &[event])
        .await?;
    Ok(Json(json!({ "origins": origins })))
}

/// Whether `tenant_id` lists `origin`, as the latest snapshot has it.
pub(super) fn tenant_allows(
    state: &AppState,
    tenant_id: &str,
    origin: &axum::http::HeaderValue,
) -> bool {
    state
        .publisher
        .latest()
        .cors()
        .find(|c| c.tenant_id == tenant_id)
        .is_some_and(|c| cors::allows(c.origins.iter().map(String::as_str), origin))
}

/// Answers preflights (before authentication: browsers send them without credentials).
pub(super) async fn preflight(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if !cors::is_preflight(request.method(), request.headers()) {
        return next.run(request).await;
    }
    let allowed = cors::request_origin(request.headers()).is_some_and(|origin| {
        state
            .publisher
            .latest()
            .cors()
            .any(|c| cors::allows(c.origins.iter().map(String::as_str), origin))
    });
    cors::preflight(request.headers(), allowed)
}
