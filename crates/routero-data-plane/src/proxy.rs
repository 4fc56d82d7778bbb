//! The OpenAI-compatible endpoints. Each request reads the snapshot once, then:
//! authenticate (key hash lookup) → key checks (expiry, CIDR) → bounded body read →
//! model allowlist → route → provider adapter, relaying the answer as it arrives.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use routero_core::Refusal;
use serde_json::{Map, Value, json};

use crate::caller::{Caller, authenticate, client_ip};
use crate::live::Gateway;
use crate::provider::{Endpoint, Provider};
use crate::refusal::Refused;

/// What handlers share.
pub struct App {
    pub(crate) gateway: Arc<Gateway>,
    pub(crate) provider: Provider,
    pub(crate) trusted_proxies: Vec<IpNet>,
    pub(crate) max_body_bytes: usize,
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn caller(app: &App, peer: SocketAddr, headers: &HeaderMap) -> Result<Caller, Refusal> {
    let client = client_ip(peer.ip(), headers, &app.trusted_proxies);
    authenticate(&app.gateway, headers, client, now_unix())
}

pub(crate) async fn chat_completions(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    proxy(&app, peer, &headers, body, Endpoint::ChatCompletions)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

pub(crate) async fn embeddings(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    proxy(&app, peer, &headers, body, Endpoint::Embeddings)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Whether a body read failed on the size limit (rather than, say, a dropped connection).
fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

async fn proxy(
    app: &App,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
    endpoint: Endpoint,
) -> Result<Response, Refused> {
    let caller = caller(app, peer, headers)?;
    let bytes = axum::body::to_bytes(body, app.max_body_bytes)
        .await
        .map_err(|e| {
            if is_length_limit(&e) {
                Refused::from(Refusal::BodyTooLarge)
            } else {
                Refused::invalid("the request body could not be read")
            }
        })?;
    let mut request: Map<String, Value> = serde_json::from_slice(&bytes)
        .map_err(|e| Refused::invalid(format!("the body must be a JSON object: {e}")))?;
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| Refused::invalid("model: a string is required"))?;
    if !request.contains_key(endpoint.required_field()) {
        return Err(Refused::invalid(format!(
            "{} is required",
            endpoint.required_field()
        )));
    }
    if !caller.key.allows_model(model) {
        return Err(Refusal::ModelNotAllowed.into());
    }
    let snapshot = &caller.live.snapshot;
    let route = snapshot
        .route(&caller.key.tenant_id, model)
        .ok_or(Refusal::ModelNotFound)?;
    let (deployment, upstream) = route
        .deployments
        .iter()
        .find_map(|d| {
            caller
                .live
                .upstream(&route.tenant_id, &d.credential_id)
                .map(|u| (d, u))
        })
        .ok_or(Refusal::UpstreamUnreachable)?;
    request.insert(
        "model".into(),
        Value::String(deployment.upstream_model.clone()),
    );
    let upstream_body =
        serde_json::to_vec(&request).map_err(|_| Refused::invalid("unserializable body"))?;
    app.provider
        .forward(upstream, endpoint, upstream_body)
        .await
}

fn model_object(name: &str) -> Value {
    json!({ "id": name, "object": "model", "created": 0, "owned_by": "routero" })
}

pub(crate) async fn list_models(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<Value>, Refused> {
    let caller = caller(&app, peer, &headers)?;
    let data: Vec<Value> = caller
        .live
        .snapshot
        .models_for(&caller.key)
        .into_iter()
        .map(model_object)
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

pub(crate) async fn get_model(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(model): Path<String>,
) -> Result<Json<Value>, Refused> {
    let caller = caller(&app, peer, &headers)?;
    let visible = caller.key.allows_model(&model)
        && caller
            .live
            .snapshot
            .route(&caller.key.tenant_id, &model)
            .is_some();
    // A model the key may not use is reported as absent: its existence is not disclosed.
    visible
        .then(|| Json(model_object(&model)))
        .ok_or(Refusal::ModelNotFound.into())
}

pub(crate) async fn ready(State(app): State<Arc<App>>) -> Response {
    match app.gateway.current() {
        Some(live) => Json(json!({
            "status": "ready",
            "version": live.snapshot.version,
            "last_contact_ms": app.gateway.last_contact_ms(),
        }))
        .into_response(),
        None => Refused::from(Refusal::ControlPlaneUnreachable).into_response(),
    }
}

pub(crate) async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": {"message": "No such endpoint.", "type": "invalid_request_error", "param": null, "code": "unknown_url"}})),
    )
        .into_response()
}
