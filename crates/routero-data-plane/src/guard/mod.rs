//! Guardrails on the way in and out. Every text of a request the model is given (see
//! `fields`) is read, with the others, and rewritten, or the request refused, before it
//! reaches the provider; values split across texts are caught, and jailbreaks are scored over
//! the conversation's user and tool text together. Every text of a chat response the client
//! gets is read before it is sent; streamed ones through the `relay`, which reads the event
//! stream strictly (`sse`) and ends it with an error rather than pass on what it cannot read.

mod fields;
mod relay;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use futures_util::StreamExt;
use routero_crypto::{KeyHasher, MessageKey, Purpose};
use routero_guard::{GuardrailConfig, Pipeline, Policy};
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::sse::{Framer, MAX_EVENT};
use fields::Texts;
pub(crate) use fields::Uninspectable;
use relay::{Relay, Step};

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

    /// The route's rules, when it has any (without rules nothing is read).
    fn policy(&self, route: &str) -> Option<&Policy> {
        Some(self.pipeline.policy_for(route)).filter(|policy| !policy.rules.is_empty())
    }

    /// Reads `texts` together and rewrites each under `policy`; returns the blocking
    /// detector, if any.
    fn apply(&self, policy: &Policy, texts: Texts<'_>, counts: &mut Counts) -> Blocked {
        let scanner = &self.pipeline.scanner;
        let read: Vec<&str> = texts.texts.iter().map(|text| text.as_str()).collect();
        let findings = scanner.scan_all(&read, &texts.scored);
        let mut blocked = None;
        for (text, findings) in texts.texts.into_iter().zip(findings) {
            if findings.is_empty() {
                continue;
            }
            let applied = policy.apply_findings(scanner, &self.hash_key, text, &findings);
            for (key, count) in applied.counts {
                *counts.entry(key).or_default() += count;
            }
            blocked = blocked.or(applied.blocked_by);
            if let std::borrow::Cow::Owned(rewritten) = applied.text {
                *text = rewritten;
            }
        }
        blocked
    }

    /// Reads and rewrites a request body in place; token ids instead of text cannot be read
    /// and are refused while the route has rules.
    pub fn request(
        &self,
        route: &str,
        body: &mut Map<String, Value>,
        counts: &mut Counts,
    ) -> Result<Blocked, Uninspectable> {
        let Some(policy) = self.policy(route) else {
            return Ok(None);
        };
        let texts = fields::request(body)?;
        Ok(self.apply(policy, texts, counts))
    }

    /// Reads and rewrites a chat completion (not streamed) in place; `logprobs` are dropped.
    pub fn response(&self, route: &str, body: &mut Value, counts: &mut Counts) -> Blocked {
        let policy = self.policy(route)?;
        fields::drop_logprobs(body);
        let texts = fields::response(body);
        self.apply(policy, texts, counts)
    }

    /// Relays a streamed chat completion through the guardrails; `done` gets the counts and
    /// the blocking detector when the stream ends.
    pub fn stream(
        self: Arc<Self>,
        route: String,
        upstream: Body,
        done: impl FnOnce(Counts, Blocked) + Send + 'static,
    ) -> Body {
        if self.policy(&route).is_none() {
            done(Counts::new(), None);
            return upstream;
        }
        let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
        tokio::spawn(async move {
            let policy = self.pipeline.policy_for(&route);
            let mut relay = Relay::new(policy, &self);
            let mut framer = Framer::new(MAX_EVENT);
            let mut upstream = upstream.into_data_stream();
            let mut ended = false;
            'read: while let Some(chunk) = upstream.next().await {
                let Ok(chunk) = chunk else { break };
                for frame in framer.push(&chunk) {
                    let (out, end) = match relay.frame(frame) {
                        Step::Send(out) => (out, false),
                        Step::End(out) => (out, true),
                    };
                    if !out.is_empty() && tx.send(Ok(Bytes::from(out))).await.is_err() {
                        break 'read;
                    }
                    if end {
                        ended = true;
                        break 'read;
                    }
                }
            }
            if !ended {
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
