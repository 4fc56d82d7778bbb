//! A fake OpenAI-compatible provider for tests and benchmarks: chat completions (plain, and
//! SSE with a configurable chunk count and interval), embeddings (float and base64),
//! configurable latency, failure injection, and a record of what it was sent.
//!
//! Control endpoints: `GET /_fake/requests` lists recorded requests; `POST /_fake/config`
//! replaces the [`FakeConfig`].
// The fake provider of tests and benchmarks (a dev-dependency only): it slices what our own
// gateway sends it in tests, never a client's text in production.
#![allow(clippy::string_slice, clippy::indexing_slicing)]
#![forbid(unsafe_code)]

pub mod databases;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;

const RECORD_LIMIT: usize = 1000;

/// How the fake behaves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FakeConfig {
    /// Bearer token the fake requires, if any.
    pub api_key: Option<String>,
    /// Content chunks in a streamed reply.
    pub chunks: usize,
    /// Pause between streamed chunks, in milliseconds.
    pub chunk_interval_ms: u64,
    /// Pause before answering, in milliseconds.
    pub latency_ms: u64,
    /// Status to answer with instead of success, for the next `fail_count` requests.
    pub fail_status: Option<u16>,
    /// How many requests fail with `fail_status`.
    pub fail_count: u64,
    /// Whether to record requests for `GET /_fake/requests`.
    pub record: bool,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            api_key: None,
            chunks: 5,
            chunk_interval_ms: 0,
            latency_ms: 0,
            fail_status: None,
            fail_count: 0,
            record: true,
        }
    }
}

/// A request as the fake saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    /// Path called.
    pub path: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The JSON body.
    pub body: Value,
}

#[derive(Default)]
struct Shared {
    config: Mutex<FakeConfig>,
    recorded: Mutex<VecDeque<Recorded>>,
}

/// Builds the fake's router.
fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/_fake/requests", get(recorded))
        .route("/_fake/config", post(configure))
        .with_state(shared)
}

/// Serves the fake on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, config: FakeConfig) -> std::io::Result<()> {
    let shared = Arc::new(Shared {
        config: Mutex::new(config),
        recorded: Mutex::default(),
    });
    axum::serve(listener, router(shared)).await
}

/// Starts the fake on a free loopback port in the background; returns its address.
pub async fn spawn(config: FakeConfig) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve(listener, config));
    Ok(addr)
}

fn config(shared: &Shared) -> FakeConfig {
    shared
        .config
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// Authentication, failure injection, latency and recording, common to every call.
async fn admit(
    shared: &Shared,
    path: &str,
    headers: &HeaderMap,
    body: &Value,
) -> Result<FakeConfig, Response> {
    let config = config(shared);
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if config.record {
        let mut recorded = shared
            .recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if recorded.len() == RECORD_LIMIT {
            recorded.pop_front();
        }
        recorded.push_back(Recorded {
            path: path.to_owned(),
            authorization: authorization.clone(),
            body: body.clone(),
        });
    }
    let expected = config.api_key.as_ref().map(|key| format!("Bearer {key}"));
    if expected.is_some() && authorization != expected {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided: sk-fa****",
        ));
    }
    if let Some(status) = config.fail_status {
        let mut live = shared.config.lock().unwrap_or_else(PoisonError::into_inner);
        if live.fail_count > 0 {
            live.fail_count -= 1;
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Err(error(status, "injected failure"));
        }
    }
    if config.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(config.latency_ms)).await;
    }
    Ok(config)
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": "fake_error", "code": status.as_u16()}})),
    )
        .into_response()
}

fn last_user_text(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned()
}

async fn chat(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let config = match admit(&shared, "/v1/chat/completions", &headers, &body).await {
        Ok(config) => config,
        Err(response) => return response,
    };
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let text = last_user_text(&body);
    // "say:<text>" answers <text>, "say64:<base64>" answers the decoded text (so a request
    // can ask for what it does not carry), "call:<text>" calls a tool with <text> as its
    // arguments (streamed: split across the chunks); anything else gets an answer naming it.
    let decoded = text
        .strip_prefix("say64:")
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok());
    let scripted = match (
        decoded,
        text.strip_prefix("say:"),
        text.strip_prefix("call:"),
    ) {
        (Some(said), _, _) => Some((said, false)),
        (None, Some(said), _) => Some((said.to_owned(), false)),
        (None, None, Some(arguments)) => Some((arguments.to_owned(), true)),
        (None, None, None) => None,
    };
    let reply = format!("fake reply to: {text}");
    if body["stream"].as_bool() != Some(true) {
        let message = match &scripted {
            Some((arguments, true)) => json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_fake", "type": "function", "function": {"name": "lookup", "arguments": arguments}}]}),
            Some((said, false)) => json!({"role": "assistant", "content": said}),
            None => json!({"role": "assistant", "content": reply}),
        };
        return Json(json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": config.chunks, "total_tokens": config.chunks + 1},
        }))
        .into_response();
    }
    let interval = Duration::from_millis(config.chunk_interval_ms);
    let chunks = config.chunks;
    let stream = futures_util::stream::unfold(0usize, move |i| {
        let model = model.clone();
        let scripted = scripted.clone();
        async move {
            if i > chunks + 1 {
                return None;
            }
            if i > 0 && !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            let event = if i == chunks + 1 {
                "data: [DONE]\n\n".to_owned()
            } else {
                let (delta, finish) = if i == chunks {
                    (json!({}), json!("stop"))
                } else {
                    match &scripted {
                        Some((text, tool)) => {
                            let piece = nth_piece(text, i, chunks);
                            let delta = if *tool {
                                json!({"tool_calls": [{"index": 0, "id": "call_fake", "type": "function",
                                    "function": {"name": "lookup", "arguments": piece}}]})
                            } else {
                                json!({"role": "assistant", "content": piece})
                            };
                            (delta, Value::Null)
                        }
                        None => (
                            json!({"role": "assistant", "content": format!("chunk{i} ")}),
                            Value::Null,
                        ),
                    }
                };
                let chunk = json!({
                    "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                });
                format!("data: {chunk}\n\n")
            };
            Some((
                Ok::<_, std::convert::Infallible>(bytes::Bytes::from(event)),
                i + 1,
            ))
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "response"))
}

/// The `i`th of `n` nearly equal pieces of `text` (split on character boundaries).
fn nth_piece(text: &str, i: usize, n: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    let size = chars.len().div_ceil(n.max(1));
    chars.iter().skip(i * size).take(size).collect()
}

/// A deterministic 8-dimensional vector for a text.
fn vector(text: &str) -> Vec<f32> {
    (0..8u32)
        .map(|i| {
            let sum: u32 = text
                .bytes()
                .map(u32::from)
                .sum::<u32>()
                .wrapping_add(i * 31);
            (sum % 1000) as f32 / 1000.0
        })
        .collect()
}

async fn embeddings(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Err(response) = admit(&shared, "/v1/embeddings", &headers, &body).await {
        return response;
    }
    let inputs: Vec<String> = match &body["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
            .collect(),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "input must be a string or an array",
            );
        }
    };
    let base64 = body["encoding_format"] == "base64";
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let v = vector(text);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Json(json!({
        "object": "list", "data": data, "model": body["model"],
        "usage": {"prompt_tokens": inputs.len(), "total_tokens": inputs.len()},
    }))
    .into_response()
}

async fn models() -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}]}),
    )
}

async fn recorded(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let recorded = shared
        .recorded
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    Json(json!({ "requests": recorded.iter().collect::<Vec<_>>() }))
}

async fn configure(
    State(shared): State<Arc<Shared>>,
    Json(config): Json<FakeConfig>,
) -> StatusCode {
    *shared.config.lock().unwrap_or_else(PoisonError::into_inner) = config;
    StatusCode::NO_CONTENT
}
