//! Guardrails on the way in and out. Every text a request carries (message contents and
//! their text parts, tool-call and function-call arguments, embeddings input, prompts) is
//! scanned and rewritten, or the request refused, before it reaches the provider. Chat
//! responses are scanned before the client sees them; streamed ones through a bounded
//! hold-back per choice and per tool call, so a value split across chunks is caught before any
//! of it is sent, and a `block` ends the stream with an error event.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use futures_util::StreamExt;
use routero_crypto::{KeyHasher, MessageKey, Purpose};
use routero_guard::{GuardrailConfig, Pipeline, Policy, Released, StreamScanner};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

/// Bytes held back per streamed text: longer than any value a detector must catch.
const HOLD: usize = 1024;

/// (detector, action) → findings, what the audit event reports (never the matched text).
pub type Counts = BTreeMap<(String, &'static str), u32>;

/// A tenant's compiled guardrails and the key its `hash` action uses.
pub struct TenantGuard {
    pipeline: Pipeline,
    hash_key: Vec<u8>,
}

impl std::fmt::Debug for TenantGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantGuard")
            .field("pipeline", &self.pipeline)
            .field("hash_key", &routero_core::REDACTED)
            .finish()
    }
}

/// The outcome of scanning: the blocking detector, if a `block` rule fired.
pub type Blocked = Option<String>;

impl TenantGuard {
    /// Compiles a tenant's stored configuration; the hash key is the tenant's tag under a key
    /// derived from the key-hashing pepper for this purpose alone, so tokens are stable per
    /// tenant, differ between tenants, and are never a key hash.
    pub fn build(config_json: &str, hasher: &KeyHasher, tenant: &str) -> Result<Self, String> {
        let config: GuardrailConfig =
            serde_json::from_str(config_json).map_err(|e| e.to_string())?;
        let pipeline = Pipeline::compile(&config).map_err(|e| e.to_string())?;
        let hash_key = hasher
            .pepper()
            .derive(Purpose::GuardrailHashing)
            .and_then(|key| MessageKey::new(&key))
            .map_err(|e| e.to_string())?
            .tag(tenant.as_bytes())
            .to_vec();
        Ok(Self { pipeline, hash_key })
    }

    /// Rewrites one text under `policy`; returns the blocking detector, if any.
    fn text(&self, policy: &Policy, text: &mut String, counts: &mut Counts) -> Blocked {
        let applied = policy.apply(&self.pipeline.scanner, &self.hash_key, text);
        for (key, count) in applied.counts {
            *counts.entry(key).or_default() += count;
        }
        let blocked = applied.blocked_by;
        if let std::borrow::Cow::Owned(rewritten) = applied.text {
            *text = rewritten;
        }
        blocked
    }

    /// Runs `walk` with a visitor that rewrites each text it is given under the route's rules.
    fn scan(
        &self,
        route: &str,
        counts: &mut Counts,
        walk: impl FnOnce(&mut dyn FnMut(&mut String)),
    ) -> Blocked {
        let policy = self.pipeline.policy_for(route);
        let mut blocked = None;
        walk(&mut |text: &mut String| {
            let found = self.text(policy, text, counts);
            blocked = blocked.take().or(found);
        });
        blocked
    }

    /// Scans every text of a request body in place.
    pub fn request(
        &self,
        route: &str,
        body: &mut Map<String, Value>,
        counts: &mut Counts,
    ) -> Blocked {
        self.scan(route, counts, |visit| {
            if let Some(Value::Array(messages)) = body.get_mut("messages") {
                for message in messages {
                    message_texts(message, visit);
                }
            }
            for field in ["input", "prompt"] {
                if let Some(value) = body.get_mut(field) {
                    strings(value, visit);
                }
            }
        })
    }

    /// Scans a chat completion (not streamed) in place.
    pub fn response(&self, route: &str, body: &mut Value, counts: &mut Counts) -> Blocked {
        self.scan(route, counts, |visit| {
            if let Some(Value::Array(choices)) = body.get_mut("choices") {
                for message in choices.iter_mut().filter_map(|c| c.get_mut("message")) {
                    message_texts(message, visit);
                }
            }
        })
    }

    /// Relays a streamed chat completion through the guardrails; `done` gets the counts and
    /// the blocking detector when the stream ends.
    pub fn stream(
        self: Arc<Self>,
        route: String,
        upstream: Body,
        done: impl FnOnce(Counts, Blocked) + Send + 'static,
    ) -> Body {
        let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
        tokio::spawn(async move {
            let mut relay = Relay::new(self.pipeline.policy_for(&route), &self);
            let mut upstream = upstream.into_data_stream();
            let mut pending = String::new();
            'read: while let Some(chunk) = upstream.next().await {
                let Ok(chunk) = chunk else { break };
                pending.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = pending.find("\n\n") {
                    let event: String = pending.drain(..end + 2).collect();
                    let out = relay.event(&event);
                    if !out.is_empty() && tx.send(Ok(Bytes::from(out))).await.is_err() {
                        break 'read;
                    }
                    if relay.blocked.is_some() {
                        break 'read;
                    }
                }
            }
            if relay.blocked.is_none() {
                let out = relay.flush_all();
                if !out.is_empty() {
                    let _ = tx.send(Ok(Bytes::from(out))).await;
                }
            }
            done(relay.counts(), relay.blocked.clone());
        });
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}

/// Calls `visit` on every text of a chat message: its content (or text parts), and its
/// tool-call and function-call arguments.
fn message_texts(message: &mut Value, visit: &mut dyn FnMut(&mut String)) {
    match message.get_mut("content") {
        Some(Value::String(text)) => visit(text),
        Some(Value::Array(parts)) => {
            for part in parts {
                if let Some(Value::String(text)) = part.get_mut("text") {
                    visit(text);
                }
            }
        }
        _ => {}
    }
    if let Some(Value::Array(calls)) = message.get_mut("tool_calls") {
        for call in calls {
            if let Some(Value::String(arguments)) = call.pointer_mut("/function/arguments") {
                visit(arguments);
            }
        }
    }
    if let Some(Value::String(arguments)) = message.pointer_mut("/function_call/arguments") {
        visit(arguments);
    }
}

/// Calls `visit` on a string or each string of an array (token arrays are not text).
fn strings(value: &mut Value, visit: &mut dyn FnMut(&mut String)) {
    match value {
        Value::String(text) => visit(text),
        Value::Array(items) => items.iter_mut().for_each(|item| strings(item, visit)),
        _ => {}
    }
}

/// Which streamed text a scanner follows: a choice's content, or one of its tool calls.
type Part = (u64, Option<u64>);

/// The state of one relayed stream.
struct Relay<'a> {
    policy: &'a Policy,
    guard: &'a TenantGuard,
    scanners: BTreeMap<Part, StreamScanner<'a>>,
    /// Counts of scanners already finished.
    finished: Counts,
    blocked: Blocked,
    /// The stream's first chunk, as a template (id, model, ...) for the chunks that release
    /// held-back text.
    template: Option<Map<String, Value>>,
}

impl<'a> Relay<'a> {
    fn new(policy: &'a Policy, guard: &'a TenantGuard) -> Self {
        Self {
            policy,
            guard,
            scanners: BTreeMap::new(),
            finished: Counts::new(),
            blocked: None,
            template: None,
        }
    }

    fn scanner(&mut self, part: Part) -> &mut StreamScanner<'a> {
        let (policy, guard) = (self.policy, self.guard);
        self.scanners.entry(part).or_insert_with(|| {
            StreamScanner::new(&guard.pipeline.scanner, policy, &guard.hash_key, HOLD)
        })
    }

    /// One SSE event in, what to send out.
    fn event(&mut self, event: &str) -> String {
        let Some(data) = event.trim_end().strip_prefix("data: ") else {
            return event.to_owned();
        };
        if data == "[DONE]" {
            return self.flush_all() + event;
        }
        let Ok(Value::Object(mut chunk)) = serde_json::from_str::<Value>(data) else {
            return event.to_owned();
        };
        let mut out = String::new();
        let mut finishing = Vec::new();
        if let Some(Value::Array(choices)) = chunk.get_mut("choices") {
            for choice in choices.iter_mut() {
                let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
                if let Some(Value::String(text)) = choice.pointer_mut("/delta/content") {
                    *text = self.push((index, None), text);
                }
                if let Some(Value::Array(calls)) = choice.pointer_mut("/delta/tool_calls") {
                    for call in calls.iter_mut() {
                        let tool = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                        if let Some(Value::String(args)) = call.pointer_mut("/function/arguments") {
                            *args = self.push((index, Some(tool)), args);
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
        if self.blocked.is_some() {
            return out + &self.chunk_event(&chunk) + &self.error_event();
        }
        for index in finishing {
            out += &self.flush(|(choice, _)| *choice == index);
        }
        if self.blocked.is_some() {
            return out + &self.error_event();
        }
        out + &self.chunk_event(&chunk)
    }

    /// Pushes streamed text through its scanner; returns what may be sent now.
    fn push(&mut self, part: Part, text: &str) -> String {
        if self.blocked.is_some() {
            return String::new();
        }
        match self.scanner(part).push(text) {
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

    fn flush_all(&mut self) -> String {
        let out = self.flush(|_| true);
        if self.blocked.is_some() {
            return out + &self.error_event();
        }
        out
    }

    /// A chunk carrying released text of one part, shaped like the stream's own chunks.
    fn release_event(&self, (choice, tool): Part, text: String) -> String {
        let delta = match tool {
            None => json!({ "content": text }),
            Some(index) => {
                json!({ "tool_calls": [{ "index": index, "function": { "arguments": text } }] })
            }
        };
        let mut chunk = self.template.clone().unwrap_or_default();
        chunk.insert(
            "choices".into(),
            json!([{ "index": choice, "delta": delta, "finish_reason": null }]),
        );
        self.chunk_event(&chunk)
    }

    fn chunk_event(&self, chunk: &Map<String, Value>) -> String {
        format!(
            "data: {}\n\n",
            serde_json::to_string(chunk).unwrap_or_default()
        )
    }

    fn error_event(&self) -> String {
        let error = json!({ "error": {
            "message": routero_core::Refusal::GuardrailBlocked.message(),
            "type": "invalid_request_error",
            "code": "guardrail_blocked",
        }});
        format!("data: {error}\n\n")
    }

    /// Counts of every scanner, finished or not.
    fn counts(&self) -> Counts {
        let mut counts = self.finished.clone();
        for scanner in self.scanners.values() {
            for (key, count) in scanner.counts() {
                *counts.entry(key.clone()).or_default() += count;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use routero_crypto::SealingKey;

    use super::*;

    #[test]
    fn debug_output_shows_no_hash_key() {
        let hasher = KeyHasher::new(SealingKey::generate().unwrap()).unwrap();
        let guard = TenantGuard::build(r#"{"rules": []}"#, &hasher, "t").unwrap();
        let shown = format!("{guard:?}");
        assert!(shown.contains("[REDACTED]"), "{shown}");
        assert!(!shown.contains(&format!("{:?}", guard.hash_key)), "{shown}");
        assert!(!shown.contains(&hex_of(&guard.hash_key)), "{shown}");
    }

    fn hex_of(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
