//! Translations between the API dialects Routero speaks. Inside the gateway every request is
//! an OpenAI chat completion: a client speaking another dialect has its request translated
//! in (and its answer translated back), and a provider speaking another dialect is sent a
//! translated request (and its answer translated to a chat completion). Guardrails, budgets
//! and audit therefore read one shape whatever the surface or the provider.
//!
//! - [`anthropic`]: chat completions ↔ Anthropic Messages, both ways (a provider that speaks
//!   Messages, a client that speaks Messages).
//! - [`responses`]: OpenAI Responses → chat completions, and the answers back.
//!
//! Pure functions and stream state machines over `serde_json` values: no I/O. A request that
//! cannot be said in the other dialect is refused ([`Untranslatable`]), never half-translated.

#![forbid(unsafe_code)]

pub mod anthropic;
pub mod responses;
mod text;

use serde_json::{Map, Value};

/// A request that cannot be said in the other dialect; the message names what and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Untranslatable(pub String);

impl Untranslatable {
    fn new(what: impl Into<String>) -> Self {
        Self(what.into())
    }
}

/// One event stream translated into another, event by event.
pub trait StreamTranslator: Send {
    /// Reads one event of the source stream (its `event:` name, if any, and its data) and
    /// appends the translated events, framed, to `out`.
    fn event(&mut self, name: Option<&str>, data: &str, out: &mut String);

    /// The source stream ended (or could not be read further): appends what closes the
    /// translated stream, an error event when the source ended before its own end.
    fn end(&mut self, out: &mut String);
}

/// Most tool calls one translated stream may carry (then it ends with an error).
const MAX_TOOLS: usize = 128;

/// A translation of the gateway's chat completion chunks into another dialect's stream: what
/// each kind of chunk makes (the reading of the chunks is shared: see the `StreamTranslator`
/// implementation below).
trait FromChatChunks: Send {
    /// Whether the translated stream has ended.
    fn done(&self) -> bool;
    /// Opens the translated stream (once), named after the chunks' id.
    fn start(&mut self, out: &mut String, id: Option<&str>);
    /// The usage the stream reported.
    fn usage(&mut self, usage: Usage);
    /// The delta and finish reason of the first choice.
    fn choice(&mut self, out: &mut String, choice: &Value);
    /// The stream is whole (`[DONE]`): closes it.
    fn complete(&mut self, out: &mut String);
    /// Ends the stream with an error: the gateway's code and message.
    fn fail(&mut self, out: &mut String, code: &str, message: &str);
}

impl<T: FromChatChunks> StreamTranslator for T {
    fn event(&mut self, _name: Option<&str>, data: &str, out: &mut String) {
        if self.done() {
            return;
        }
        if data == "[DONE]" {
            return self.complete(out);
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            return self.fail(out, "upstream_error", "the stream could not be read");
        };
        if let Some(error) = chunk.get("error") {
            let text = |field: &str| error.get(field).and_then(Value::as_str);
            let code = text("code").unwrap_or("upstream_error");
            return self.fail(out, code, text("message").unwrap_or("the request failed"));
        }
        self.start(out, chunk.get("id").and_then(Value::as_str));
        if let Some(usage) = Usage::of_chat(&chunk) {
            self.usage(usage);
        }
        let first = chunk
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0);
        for choice in first {
            self.choice(out, choice);
        }
    }

    fn end(&mut self, out: &mut String) {
        if !self.done() {
            self.fail(out, "upstream_error", "the stream ended before its end");
        }
    }
}

/// The tool calls of a chat chunk's delta, each with its index.
fn tool_calls(delta: &Value) -> impl Iterator<Item = (u64, &Value)> {
    delta
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|call| (call.get("index").and_then(Value::as_u64).unwrap_or(0), call))
}

/// A request body, as the translations take and give it.
pub type Body = Map<String, Value>;

/// The `usage` of a chat completion (or of a stream's usage chunk): prompt tokens, of them
/// cached, and completion tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Usage {
    prompt: u64,
    cached: u64,
    completion: u64,
}

impl Usage {
    fn of_chat(value: &Value) -> Option<Self> {
        let usage = value.get("usage")?.as_object()?;
        let number = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
        Some(Self {
            prompt: number(usage.get("prompt_tokens")),
            cached: number(
                usage
                    .get("prompt_tokens_details")
                    .and_then(|d| d.get("cached_tokens")),
            ),
            completion: number(usage.get("completion_tokens")),
        })
    }

    fn to_chat(self) -> Value {
        serde_json::json!({
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt.saturating_add(self.completion),
            "prompt_tokens_details": { "cached_tokens": self.cached },
        })
    }
}

/// One server-sent event: `event: {name}` (when named) and its data on one line.
fn sse(out: &mut String, name: Option<&str>, data: &str) {
    if let Some(name) = name {
        out.push_str("event: ");
        out.push_str(name);
        out.push('\n');
    }
    out.push_str("data: ");
    out.push_str(data);
    out.push_str("\n\n");
}

/// An OpenAI-shaped error chunk, as a stream carries it mid-way.
fn chat_error_event(out: &mut String, kind: &str, code: &str, message: &str) {
    let error = serde_json::json!({
        "error": { "message": message, "type": kind, "param": null, "code": code },
    });
    sse(out, None, &error.to_string());
}

/// Seconds since the Unix epoch, for the `created` of translated answers.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Sets `field` of an object (what `value[field] = to` does, without its panic on a
/// non-object).
fn set(value: &mut Value, field: &str, to: Value) {
    if let Some(object) = value.as_object_mut() {
        object.insert(field.to_owned(), to);
    }
}
