//! A fake OpenAI-compatible provider for tests and benchmarks: chat completions (plain, and
//! SSE with a configurable chunk count and interval), embeddings (float and base64),
//! configurable latency, failure injection, and a record of what it was sent.
//!
//! Besides OpenAI's shape, it answers Azure OpenAI's deployment URLs and Anthropic's Messages
//! API (`POST /v1/messages`, plain and streamed).
//!
//! Control endpoints: `GET /_fake/requests` lists recorded requests; `POST /_fake/config`
//! replaces the [`FakeConfig`]; `POST /_fake/fault` injects a [`Fault`] into one model's
//! requests (an error status, a stall before the first byte, for the next `count` of them);
//! `GET /_fake/cut` names the models of streams whose reader went away before their end.
// The fake provider of tests and benchmarks (a dev-dependency only): it slices what our own
// gateway sends it in tests, never a client's text in production.
#![expect(clippy::string_slice, clippy::indexing_slicing)]
#![forbid(unsafe_code)]

pub mod broker;
pub mod databases;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use futures_util::StreamExt;
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
    /// Faults of requests naming a model, by model: what a test injects for one deployment
    /// without touching the others (`POST /_fake/fault`).
    pub faults: std::collections::BTreeMap<String, Fault>,
    /// Writes of a stream after which its connection is reset (a provider dying mid-stream).
    pub cut_after: Option<usize>,
}

/// A fault injected into the requests that name one model.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fault {
    /// The model whose requests it applies to.
    pub model: String,
    /// Status answered (with an error body) instead of success.
    pub status: Option<u16>,
    /// How many requests it applies to (then the model answers normally again).
    pub count: u64,
    /// Pause before answering, in milliseconds (a provider slow to its first byte).
    pub stall_ms: u64,
    /// Pause between a stream's chunks instead of the configured one (a long stream).
    pub chunk_interval_ms: Option<u64>,
    /// Writes of a stream after which its connection is reset.
    pub cut_after: Option<usize>,
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
            faults: std::collections::BTreeMap::new(),
            cut_after: None,
        }
    }
}

/// A request as the fake saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recorded {
    /// Path called.
    pub path: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The W3C `traceparent` header, if any.
    pub traceparent: Option<String>,
    /// The W3C `tracestate` header, if any.
    pub tracestate: Option<String>,
    /// The JSON body.
    pub body: Value,
}

#[derive(Default)]
struct Shared {
    config: Mutex<FakeConfig>,
    recorded: Mutex<VecDeque<Recorded>>,
    /// Models of streams whose reader went away before their end (`GET /_fake/cut`).
    cut: Mutex<Vec<String>>,
}

/// Notes a stream as cut when it is dropped before its last write.
struct Unfinished {
    shared: Arc<Shared>,
    model: String,
    finished: bool,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if !self.finished {
            self.shared
                .cut
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(std::mem::take(&mut self.model));
        }
    }
}

/// Builds the fake's router.
fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/_fake/requests", get(recorded))
        .route("/_fake/config", post(configure))
        .route("/_fake/fault", post(inject))
        .route("/_fake/cut", get(cut))
        .route("/openai/deployments/{deployment}/{*endpoint}", post(azure))
        .route("/v1/messages", post(anthropic_messages))
        .with_state(shared)
}

/// Serves the fake on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, config: FakeConfig) -> std::io::Result<()> {
    let shared = Arc::new(Shared {
        config: Mutex::new(config),
        recorded: Mutex::default(),
        cut: Mutex::default(),
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
    let mut config = config(shared);
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
            traceparent: header_text(headers, "traceparent"),
            tracestate: header_text(headers, "tracestate"),
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
    if let Some(model) = body["model"].as_str() {
        let fault = {
            let mut live = shared.config.lock().unwrap_or_else(PoisonError::into_inner);
            live.faults
                .get_mut(model)
                .filter(|f| f.count > 0)
                .map(|fault| {
                    fault.count -= 1;
                    fault.clone()
                })
        };
        if let Some(fault) = fault {
            if let Some(interval) = fault.chunk_interval_ms {
                config.chunk_interval_ms = interval;
            }
            config.cut_after = fault.cut_after;
            tokio::time::sleep(Duration::from_millis(fault.stall_ms)).await;
            if let Some(status) = fault.status {
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                return Err(error(status, "injected fault"));
            }
        }
    }
    if config.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(config.latency_ms)).await;
    }
    Ok(config)
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// An error answer; a 429 says when to come back (`Retry-After: 1`), as providers do.
fn error(status: StatusCode, message: &str) -> Response {
    let mut response = (
        status,
        Json(json!({"error": {"message": message, "type": "fake_error", "code": status.as_u16()}})),
    )
        .into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    response
}

/// The last user message's text: its content string, or (Anthropic's shape) its last text
/// block.
fn last_user_text(body: &Value) -> String {
    let content = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .map(|m| &m["content"]);
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .rev()
            .find_map(|block| block["text"].as_str())
            .unwrap_or_default()
            .to_owned(),
        _ => String::new(),
    }
}

/// Where a scripted reply puts its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Content,
    ToolCall,
    ErrorCode,
    Reasoning,
    Transcript,
    FunctionCall,
    /// In `content`, and spelled out token by token in the choice's `logprobs`.
    Logprobs,
}

impl Field {
    fn named(name: &str) -> Option<Self> {
        Some(match name {
            "content" => Self::Content,
            "tool_call" => Self::ToolCall,
            "refusal" => Self::ErrorCode,
            "reasoning_content" => Self::Reasoning,
            "audio.transcript" => Self::Transcript,
            "function_call" => Self::FunctionCall,
            "logprobs" => Self::Logprobs,
            _ => return None,
        })
    }

    /// The finish reason of a reply in this field.
    fn finish(self) -> &'static str {
        if self == Self::ToolCall {
            "tool_calls"
        } else {
            "stop"
        }
    }

    /// A choice carrying `text` in this field: its `message`, or streamed its `delta`.
    fn choice(self, text: &str, streamed: bool, finish: Value) -> Value {
        let mut message = json!({"role": "assistant", "content": null});
        let function = json!({"name": "lookup", "arguments": text});
        match self {
            Self::Content | Self::Logprobs => message["content"] = json!(text),
            Self::ToolCall => {
                let mut call = json!({"id": "call_fake", "type": "function", "function": function});
                if streamed {
                    call["index"] = json!(0);
                }
                message["tool_calls"] = json!([call]);
            }
            Self::ErrorCode => message["refusal"] = json!(text),
            Self::Reasoning => message["reasoning_content"] = json!(text),
            Self::Transcript => {
                message["audio"] =
                    json!({"id": "audio_fake", "data": "", "expires_at": 0, "transcript": text});
            }
            Self::FunctionCall => message["function_call"] = function,
        }
        let mut choice = json!({"index": 0, "finish_reason": finish});
        choice[if streamed { "delta" } else { "message" }] = message;
        if self == Self::Logprobs {
            let tokens: Vec<Value> = text
                .chars()
                .map(|c| {
                    let token = c.to_string();
                    json!({"token": token, "bytes": token.as_bytes(), "logprob": -0.5, "top_logprobs": []})
                })
                .collect();
            choice["logprobs"] = json!({"content": tokens, "refusal": null});
        }
        choice
    }
}

/// How a scripted stream is framed on the wire (the default: `data: ` lines ended by LF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Lf,
    /// CRLF line ends, each event's first CRLF split across two writes.
    Crlf,
    /// CR line ends.
    Cr,
    /// `data:` without its space.
    NoSpace,
    /// Each JSON chunk over two `data:` lines.
    Multiline,
    /// A comment event carrying the text first, and a comment line opening each event.
    Comment,
    /// Each event holding a multi-byte character written in two pieces, split inside it
    /// (the pieces arrive apart only with a chunk interval).
    Utf8Split,
    /// `data: {not json` after the first chunk.
    NotJson,
    /// Data that is not UTF-8 after the first chunk.
    NotUtf8,
    /// An event over 1 MiB after the first chunk.
    Oversize,
}

impl Framing {
    fn named(name: &str) -> Option<Self> {
        Some(match name {
            "lf" => Self::Lf,
            "crlf" => Self::Crlf,
            "cr" => Self::Cr,
            "nospace" => Self::NoSpace,
            "multiline" => Self::Multiline,
            "comment" => Self::Comment,
            "utf8split" => Self::Utf8Split,
            "notjson" => Self::NotJson,
            "notutf8" => Self::NotUtf8,
            "oversize" => Self::Oversize,
            _ => return None,
        })
    }

    /// The writes that send one event whose data is `data`.
    fn event(self, data: &str) -> Vec<Vec<u8>> {
        let eol = match self {
            Self::Crlf => "\r\n",
            Self::Cr => "\r",
            _ => "\n",
        };
        let prefix = if self == Self::NoSpace {
            "data:"
        } else {
            "data: "
        };
        let lines = match self {
            // After the object's opening brace: JSON may break there, a string may not.
            Self::Multiline if data.starts_with('{') => vec![&data[..1], &data[1..]],
            _ => vec![data],
        };
        let mut text = String::new();
        if self == Self::Comment {
            text = format!(": ping{eol}");
        }
        for line in lines {
            text += &format!("{prefix}{line}{eol}");
        }
        text += eol;
        let mut bytes = text.into_bytes();
        let cut = match self {
            Self::Crlf => bytes.iter().position(|b| *b == b'\r'),
            Self::Utf8Split => bytes.iter().position(|b| *b >= 0x80),
            _ => None,
        };
        match cut {
            Some(at) => {
                let tail = bytes.split_off(at + 1);
                vec![bytes, tail]
            }
            None => vec![bytes],
        }
    }

    /// What this framing sends before any event.
    fn opening(self, text: &str) -> Option<Vec<u8>> {
        (self == Self::Comment)
            .then(|| format!(": {}\n\n", text.replace(['\r', '\n'], " ")).into_bytes())
    }

    /// The unreadable event this framing sends after the first chunk, if any.
    fn unreadable(self) -> Option<Vec<u8>> {
        match self {
            Self::NotJson => Some(b"data: {not json\n\n".to_vec()),
            Self::NotUtf8 => Some(b"data: {\"x\": \"\xff\xfe\"}\n\n".to_vec()),
            Self::Oversize => {
                Some(format!("data: {{\"pad\": \"{}\"}}\n\n", "x".repeat(1 << 20)).into_bytes())
            }
            _ => None,
        }
    }
}

/// A scripted reply: its text, the field it sits in, and how a stream of it is framed.
#[derive(Debug, Clone)]
struct Script {
    text: String,
    field: Field,
    framing: Framing,
}

/// The reply the last user text asks for (see [`chat`]).
fn script(text: &str) -> Option<Script> {
    let decode = |b64: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
    };
    let (text, field, framing) = if let Some(b64) = text.strip_prefix("say64:") {
        (decode(b64)?, Field::Content, Framing::Lf)
    } else if let Some(said) = text.strip_prefix("say:") {
        (said.to_owned(), Field::Content, Framing::Lf)
    } else if let Some(arguments) = text.strip_prefix("call:") {
        (arguments.to_owned(), Field::ToolCall, Framing::Lf)
    } else if let Some((name, b64)) = text.strip_prefix("field:").and_then(|s| s.split_once(':')) {
        (decode(b64)?, Field::named(name)?, Framing::Lf)
    } else if let Some((name, b64)) = text.strip_prefix("frame:").and_then(|s| s.split_once(':')) {
        (decode(b64)?, Field::Content, Framing::named(name)?)
    } else {
        return None;
    };
    Some(Script {
        text,
        field,
        framing,
    })
}

/// Chat completions, scripted by the last user message's text:
/// - `say:<text>` answers `<text>`; `say64:<base64>` the decoded text (so a request can ask
///   for what it does not carry); `call:<text>` calls a tool with `<text>` as its arguments;
/// - `field:<field>:<base64>` puts the decoded text in `<field>` instead of `content`:
///   `content`, `tool_call`, `refusal`, `reasoning_content`, `audio.transcript`,
///   `function_call` (legacy, its `arguments`), or `logprobs` (in `content`, and spelled out
///   token by token, `token` and `bytes`, in the choice's `logprobs`);
/// - `frame:<framing>:<base64>` answers the decoded text, streamed framed as asked: `lf`,
///   `crlf`, `cr`, `nospace`, `multiline`, `comment`, `utf8split`, or with an unreadable
///   event after the first chunk: `notjson`, `notutf8`, `oversize` (see [`Framing`]);
/// - anything else gets an answer naming it.
///
/// Streamed, the text is split across the configured number of chunks, and a last chunk
/// carries the usage when `stream_options.include_usage` asks for it. Usage is one prompt
/// token and a completion token per chunk.
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
    let scripted = script(&text);
    if body["stream"].as_bool() != Some(true) {
        let choice = match &scripted {
            Some(script) => script
                .field
                .choice(&script.text, false, json!(script.field.finish())),
            None => Field::Content.choice(&format!("fake reply to: {text}"), false, json!("stop")),
        };
        return Json(json!({
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [choice],
            "usage": {"prompt_tokens": 1, "completion_tokens": config.chunks, "total_tokens": config.chunks + 1},
        }))
        .into_response();
    }
    let chunks = config.chunks;
    let (field, framing) = scripted
        .as_ref()
        .map_or((Field::Content, Framing::Lf), |s| (s.field, s.framing));
    let mut writes: Vec<Vec<u8>> = scripted
        .as_ref()
        .and_then(|s| framing.opening(&s.text))
        .into_iter()
        .collect();
    for i in 0..=chunks {
        let choice = if i == chunks {
            json!({"index": 0, "delta": {}, "finish_reason": field.finish()})
        } else {
            let piece = match &scripted {
                Some(script) => nth_piece(&script.text, i, chunks),
                None => format!("chunk{i} "),
            };
            field.choice(&piece, true, Value::Null)
        };
        let chunk = json!({
            "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [choice],
        });
        writes.extend(framing.event(&chunk.to_string()));
        if i == 0 {
            writes.extend(framing.unreadable());
        }
    }
    if body["stream_options"]["include_usage"].as_bool() == Some(true) {
        let usage = json!({
            "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [],
            "usage": {"prompt_tokens": 1, "completion_tokens": chunks, "total_tokens": chunks + 1},
        });
        writes.extend(framing.event(&usage.to_string()));
    }
    writes.extend(framing.event("[DONE]"));
    event_stream(&shared, model, writes, &config)
}

/// An event stream of `writes`, the configured interval apart, noted as cut (`GET /_fake/cut`)
/// when its reader goes away before the last; reset after `cut_after` writes when set.
fn event_stream(
    shared: &Arc<Shared>,
    model: String,
    mut writes: Vec<Vec<u8>>,
    config: &FakeConfig,
) -> Response {
    let interval = Duration::from_millis(config.chunk_interval_ms);
    let reset = config.cut_after.filter(|n| *n < writes.len());
    if let Some(kept) = reset {
        writes.truncate(kept);
    }
    let last = writes.len().saturating_sub(1);
    let unfinished = Arc::new(Mutex::new(Unfinished {
        shared: Arc::clone(shared),
        model,
        finished: false,
    }));
    let stream = futures_util::stream::iter(writes.into_iter().enumerate())
        .then(move |(i, write)| {
            let unfinished = Arc::clone(&unfinished);
            async move {
                if i > 0 && !interval.is_zero() {
                    tokio::time::sleep(interval).await;
                }
                if i == last {
                    unfinished
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .finished = true;
                }
                Ok::<_, std::io::Error>(bytes::Bytes::from(write))
            }
        })
        .chain(futures_util::stream::iter(reset.map(|_| {
            Err(std::io::Error::other("connection reset mid-stream"))
        })));
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

/// `POST /_fake/fault`: sets (or, with `count` 0, clears) the fault of one model.
async fn inject(State(shared): State<Arc<Shared>>, Json(fault): Json<Fault>) -> StatusCode {
    shared
        .config
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .faults
        .insert(fault.model.clone(), fault);
    StatusCode::NO_CONTENT
}

/// The headers with the key sent in `field` as `Authorization: Bearer`, as the OpenAI-shaped
/// handlers read it.
fn key_as_bearer(headers: &HeaderMap, field: &str) -> HeaderMap {
    let mut as_openai = headers.clone();
    if let Some(key) = headers
        .get(field)
        .and_then(|v| v.to_str().ok())
        .and_then(|key| header::HeaderValue::from_str(&format!("Bearer {key}")).ok())
    {
        as_openai.insert(header::AUTHORIZATION, key);
    }
    as_openai
}

/// Azure OpenAI's shape: the deployment in the path, `api-version` in the query (404 without
/// it, as Azure answers), the key in `api-key`. Returns the request as OpenAI's handlers take
/// it, for a model named like the deployment.
fn from_azure(
    deployment: String,
    query: &std::collections::HashMap<String, String>,
    headers: &HeaderMap,
    mut body: Value,
) -> Result<(HeaderMap, Json<Value>), (StatusCode, &'static str)> {
    if !query.contains_key("api-version") {
        return Err((StatusCode::NOT_FOUND, "Resource not found"));
    }
    if headers.contains_key(header::AUTHORIZATION) {
        return Err((StatusCode::UNAUTHORIZED, "Azure takes its key in api-key"));
    }
    body["model"] = Value::String(deployment);
    Ok((key_as_bearer(headers, "api-key"), Json(body)))
}

/// Azure OpenAI's chat completions and embeddings, answered as [`chat`] and [`embeddings`]
/// answer.
async fn azure(
    State(shared): State<Arc<Shared>>,
    Path((deployment, endpoint)): Path<(String, String)>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let (headers, body) = match from_azure(deployment, &query, &headers, body) {
        Ok(request) => request,
        Err((status, message)) => return error(status, message),
    };
    match endpoint.as_str() {
        "chat/completions" => chat(State(shared), headers, body).await,
        "embeddings" => embeddings(State(shared), headers, body).await,
        _ => error(StatusCode::NOT_FOUND, "Resource not found"),
    }
}

/// `GET /_fake/cut`: the models of streams whose reader went away before their end.
async fn cut(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let cut = shared.cut.lock().unwrap_or_else(PoisonError::into_inner);
    Json(json!({ "models": *cut }))
}

/// Anthropic's Messages API (`POST /v1/messages`): the key in `x-api-key`,
/// `anthropic-version` required, errors in Anthropic's shape; scripted like [`chat`]
/// (`say:`, `say64:`, `call:` whose text, a JSON object, is the tool's input), streamed as
/// Anthropic streams are (message_start, content_block_start/delta/stop, message_delta,
/// message_stop, with pings), the text or the input's JSON split over the configured chunks.
async fn anthropic_messages(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let refuse = |status: StatusCode, message: &str| {
        let kind = if status == StatusCode::UNAUTHORIZED {
            "authentication_error"
        } else {
            "api_error"
        };
        (
            status,
            Json(json!({"type": "error", "error": {"type": kind, "message": message}})),
        )
            .into_response()
    };
    if !headers.contains_key("anthropic-version") {
        return refuse(
            StatusCode::BAD_REQUEST,
            "anthropic-version: header is required",
        );
    }
    if headers.contains_key(header::AUTHORIZATION) || body["max_tokens"].as_u64().is_none() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "x-api-key and max_tokens are required; Authorization is not Anthropic's",
        );
    }
    let as_openai = key_as_bearer(&headers, "x-api-key");
    let config = match admit(&shared, "/v1/messages", &as_openai, &body).await {
        Ok(config) => config,
        Err(refused) => return refuse(refused.status(), "refused"),
    };
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let text = last_user_text(&body);
    let scripted = script(&text);
    let (said, calls) = match &scripted {
        Some(script) if script.field == Field::ToolCall => (script.text.clone(), true),
        Some(script) => (script.text.clone(), false),
        None => (format!("fake reply to: {text}"), false),
    };
    let input: Value = serde_json::from_str(&said).unwrap_or_else(|_| json!({"value": said}));
    let stop_reason = if calls { "tool_use" } else { "end_turn" };
    let chunks = config.chunks;
    let usage = json!({"input_tokens": 1, "output_tokens": chunks, "cache_read_input_tokens": 0});
    if body["stream"].as_bool() != Some(true) {
        let block = if calls {
            json!({"type": "tool_use", "id": "toolu_fake", "name": "lookup", "input": input})
        } else {
            json!({"type": "text", "text": said})
        };
        return Json(json!({
            "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
            "content": [block], "stop_reason": stop_reason, "stop_sequence": null, "usage": usage,
        }))
        .into_response();
    }
    let event = |data: Value| {
        format!(
            "event: {}\ndata: {data}\n\n",
            data["type"].as_str().unwrap_or("")
        )
        .into_bytes()
    };
    let mut writes = vec![
        event(json!({"type": "message_start", "message": {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 1, "output_tokens": 0},
        }})),
        event(
            json!({"type": "content_block_start", "index": 0, "content_block": if calls {
                json!({"type": "tool_use", "id": "toolu_fake", "name": "lookup", "input": {}})
            } else {
                json!({"type": "text", "text": ""})
            }}),
        ),
        event(json!({"type": "ping"})),
    ];
    let streamed = if calls { input.to_string() } else { said };
    for i in 0..chunks {
        let piece = nth_piece(&streamed, i, chunks);
        let delta = if calls {
            json!({"type": "input_json_delta", "partial_json": piece})
        } else {
            json!({"type": "text_delta", "text": piece})
        };
        writes.push(event(
            json!({"type": "content_block_delta", "index": 0, "delta": delta}),
        ));
    }
    writes.push(event(json!({"type": "content_block_stop", "index": 0})));
    writes.push(event(json!({"type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": {"output_tokens": chunks}})));
    writes.push(event(json!({"type": "message_stop"})));
    event_stream(&shared, model, writes, &config)
}
