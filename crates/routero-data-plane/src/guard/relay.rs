//! A streamed chat completion relayed through the guardrails: each streamed text (a choice's
//! content, refusal, reasoning, audio transcript, and each tool or function call's
//! arguments) through a bounded hold-back of its own, so that a value split across chunks is
//! caught before any of it is sent; `logprobs` dropped, since they spell out the text token by
//! token; and a stream that cannot be read ended with an error rather than passed on.

use std::collections::BTreeMap;

use routero_core::ErrorCode;
use routero_guard::{Policy, Released, StreamScanner};
use serde_json::{Map, Value, json};

use super::{Blocked, Counts, TenantGuard};
use crate::sse::{Event, Frame, data_event};

/// Bytes held back per streamed text: longer than any value a detector must catch.
const HOLD: usize = 1024;

/// Which streamed text of a choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Field {
    Content,
    ErrorCode,
    Reasoning,
    Transcript,
    FunctionCall,
    Tool(u64),
}

impl Field {
    /// Where the field's text is in a choice's delta.
    fn pointer(self) -> &'static str {
        match self {
            Self::Content => "/content",
            Self::ErrorCode => "/refusal",
            Self::Reasoning => "/reasoning_content",
            Self::Transcript => "/audio/transcript",
            Self::FunctionCall => "/function_call/arguments",
            Self::Tool(_) => "/function/arguments",
        }
    }

    /// A delta carrying `text` in this field.
    fn delta(self, text: String) -> Value {
        match self {
            Self::Content => json!({ "content": text }),
            Self::ErrorCode => json!({ "refusal": text }),
            Self::Reasoning => json!({ "reasoning_content": text }),
            Self::Transcript => json!({ "audio": { "transcript": text } }),
            Self::FunctionCall => json!({ "function_call": { "arguments": text } }),
            Self::Tool(index) => {
                json!({ "tool_calls": [{ "index": index, "function": { "arguments": text } }] })
            }
        }
    }
}

/// A streamed text: (choice index, field).
type Part = (u64, Field);

/// What the relay does with one event.
pub(super) enum Step {
    /// Send this and go on.
    Send(String),
    /// Send this and end the stream.
    End(String),
}

/// The state of one relayed stream.
pub(super) struct Relay<'a> {
    policy: &'a Policy,
    guard: &'a TenantGuard,
    scanners: BTreeMap<Part, StreamScanner<'a>>,
    /// Counts of scanners already finished.
    finished: Counts,
    pub(super) blocked: Blocked,
    /// The stream's first chunk, as a template (id, model, ...) for the chunks that release
    /// held-back text.
    template: Option<Map<String, Value>>,
}

impl<'a> Relay<'a> {
    pub(super) fn new(policy: &'a Policy, guard: &'a TenantGuard) -> Self {
        Self {
            policy,
            guard,
            scanners: BTreeMap::new(),
            finished: Counts::new(),
            blocked: None,
            template: None,
        }
    }

    /// One framed event in, what to send out.
    pub(super) fn frame(&mut self, frame: Frame) -> Step {
        let Frame::Event(event) = frame else {
            return self.unreadable();
        };
        let Some(data) = &event.data else {
            return Step::Send(event.with_data(None));
        };
        if data == "[DONE]" {
            let out = self.flush_all();
            return match self.blocked {
                Some(_) => Step::End(out),
                None => Step::End(out + &event.with_data(Some(data))),
            };
        }
        match serde_json::from_str::<Value>(data) {
            Ok(Value::Object(chunk)) => self.chunk(&event, chunk),
            _ => self.unreadable(),
        }
    }

    /// The stream cannot be read while guardrails apply: what is held is dropped and the
    /// stream ends with an error.
    fn unreadable(&mut self) -> Step {
        tracing::warn!("unreadable event in a guarded stream; ended with an error");
        let name = "unreadable_stream";
        *self.finished.entry((name.into(), "block")).or_default() += 1;
        self.blocked.get_or_insert_with(|| name.into());
        Step::End(error_event(ErrorCode::GuardrailUninspectable))
    }

    fn chunk(&mut self, event: &Event, mut chunk: Map<String, Value>) -> Step {
        let mut finishing = Vec::new();
        if let Some(Value::Array(choices)) = chunk.get_mut("choices") {
            for choice in choices.iter_mut() {
                let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
                if let Some(choice) = choice.as_object_mut() {
                    choice.remove("logprobs");
                }
                let Some(delta) = choice.get_mut("delta") else {
                    continue;
                };
                for field in [
                    Field::Content,
                    Field::ErrorCode,
                    Field::Reasoning,
                    Field::Transcript,
                    Field::FunctionCall,
                ] {
                    if let Some(Value::String(text)) = delta.pointer_mut(field.pointer()) {
                        *text = self.push((index, field), text);
                    }
                }
                if let Some(Value::Array(calls)) = delta.get_mut("tool_calls") {
                    for call in calls.iter_mut() {
                        let tool =
                            Field::Tool(call.get("index").and_then(Value::as_u64).unwrap_or(0));
                        if let Some(Value::String(args)) = call.pointer_mut(tool.pointer()) {
                            *args = self.push((index, tool), args);
                        }
                    }
                }
                if choice.get("finish_reason").is_some_and(|f| !f.is_null()) {
                    finishing.push(index);
                }
            }
        }
        if self.template.is_none() {
            self.template = Some(chunk.clone());
        }
        let this = event.with_data(Some(&json_text(&chunk)));
        if self.blocked.is_some() {
            return Step::End(this + &error_event(ErrorCode::GuardrailBlocked));
        }
        let mut out = String::new();
        for index in finishing {
            out += &self.flush(|(choice, _)| *choice == index);
        }
        if self.blocked.is_some() {
            return Step::End(out + &error_event(ErrorCode::GuardrailBlocked));
        }
        Step::Send(out + &this)
    }

    /// Pushes streamed text through its scanner; returns what may be sent now.
    fn push(&mut self, part: Part, text: &str) -> String {
        if self.blocked.is_some() {
            return String::new();
        }
        let (policy, guard) = (self.policy, self.guard);
        let scanner = self.scanners.entry(part).or_insert_with(|| {
            StreamScanner::new(&guard.pipeline.scanner, policy, &guard.hash_key, HOLD)
        });
        match scanner.push(text) {
            Released::Text(text) => text,
            Released::Blocked { detector, text } => {
                self.blocked = Some(detector);
                text
            }
        }
    }

    /// Releases what the selected scanners hold, as chunks of their own.
    fn flush(&mut self, selected: impl Fn(&Part) -> bool) -> String {
        let parts: Vec<Part> = self
            .scanners
            .keys()
            .filter(|p| selected(p))
            .copied()
            .collect();
        let mut out = String::new();
        for part in parts {
            let Some(mut scanner) = self.scanners.remove(&part) else {
                continue;
            };
            let text = match scanner.finish() {
                Released::Text(text) => text,
                Released::Blocked { detector, text } => {
                    self.blocked = Some(detector);
                    text
                }
            };
            for (key, count) in scanner.counts() {
                *self.finished.entry(key.clone()).or_default() += count;
            }
            if !text.is_empty() {
                out += &self.release_event(part, text);
            }
            if self.blocked.is_some() {
                break;
            }
        }
        out
    }

    /// Releases everything held (the stream ended); an error event after it if a `block`
    /// fired.
    pub(super) fn flush_all(&mut self) -> String {
        let out = self.flush(|_| true);
        if self.blocked.is_some() {
            return out + &error_event(ErrorCode::GuardrailBlocked);
        }
        out
    }

    /// A chunk carrying released text of one part, shaped like the stream's own chunks.
    fn release_event(&self, (choice, field): Part, text: String) -> String {
        let mut chunk = self.template.clone().unwrap_or_default();
        chunk.insert(
            "choices".into(),
            json!([{ "index": choice, "delta": field.delta(text), "finish_reason": null }]),
        );
        data_event(&json_text(&chunk))
    }

    /// Counts of every scanner, finished or not.
    pub(super) fn counts(&self) -> Counts {
        let mut counts = self.finished.clone();
        for scanner in self.scanners.values() {
            for (key, count) in scanner.counts() {
                *counts.entry(key.clone()).or_default() += count;
            }
        }
        counts
    }
}

fn json_text(chunk: &Map<String, Value>) -> String {
    serde_json::to_string(chunk).unwrap_or_default()
}

/// The error event that ends a stream.
fn error_event(refusal: ErrorCode) -> String {
    let error = json!({ "error": {
        "message": refusal.message(),
        "type": refusal.error_type(),
        "code": refusal.code(),
    }});
    data_event(&error.to_string())
}
