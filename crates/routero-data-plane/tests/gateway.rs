//! The data plane driven through its public HTTP interface in process (see `common`): every
//! refusal with its status, code and audit event; guardrail actions on what the provider
//! sees; a streamed answer; the events a served request leaves.
#![expect(clippy::indexing_slicing)]

mod common;

use std::time::Duration;

use common::Stack;
use routero_core::audit::{EventType, Outcome};
use routero_core::{ErrorCode, Resource};
use routero_testkit::FakeConfig;
use serde_json::{Value, json};

const GITHUB: &str = "ghp_16C7e42F292c6912E7710c838347Ae178B4a";

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// `refusal` answered as the API promises, and recorded with its code after event `skip`.
async fn assert_refused(
    stack: &Stack,
    skip: usize,
    case: &str,
    answer: (u16, Value),
    refusal: ErrorCode,
) {
    let (status, body) = answer;
    assert_eq!(status, refusal.http_status(), "{case}: {body}");
    assert_eq!(body["error"]["code"], refusal.code(), "{case}: {body}");
    assert_eq!(
        body["error"]["type"],
        refusal.error_type(),
        "{case}: {body}"
    );
    let event = stack
        .event(skip, |e| e.reason_code.as_deref() == Some(refusal.code()))
        .await;
    assert!(
        matches!(
            event.action,
            EventType::RequestBlocked
                | EventType::RequestFailed
                | EventType::RequestGuardrailTriggered
        ),
        "{case}: {event:?}"
    );
    assert_ne!(event.outcome, Outcome::Success, "{case}: {event:?}");
}

#[tokio::test]
async fn every_refusal_has_its_status_code_and_audit_event() {
    let stack = Stack::start(|config| {
        config.max_body_bytes = 64 * 1024;
        config.upstream_read_timeout = Duration::from_millis(500);
    })
    .await;
    let open = stack.key(json!({})).await;
    let only_a = stack.key(json!({"models": ["gpt-a"]})).await;
    let elsewhere = stack.key(json!({"allowed_cidrs": ["10.0.0.0/8"]})).await;
    let secret = chat("gpt-a", &format!("deploy with {GITHUB}"));
    stack
        .guardrails(
            json!({"rules": [{"category": "secret", "action": "block"}]}),
            &open,
            secret.clone(),
            |s, _| s == 400,
        )
        .await;
    // A key that works, then expires.
    let issued = std::time::Instant::now();
    let brief = stack.key(json!({"duration": "3s"})).await;
    assert_eq!(stack.chat(&brief, &chat("gpt-a", "hello")).await.0, 200);

    let cases: Vec<(&str, &str, &str, String, ErrorCode)> = vec![
        (
            "no key",
            "",
            "/v1/chat/completions",
            chat("gpt-a", "hi").to_string(),
            ErrorCode::InvalidApiKey,
        ),
        (
            "unknown key",
            "sk-rt-unknown0123456789abcdef",
            "/v1/chat/completions",
            chat("gpt-a", "hi").to_string(),
            ErrorCode::InvalidApiKey,
        ),
        (
            "model outside the key's list",
            &only_a,
            "/v1/chat/completions",
            chat("gpt-b", "hi").to_string(),
            ErrorCode::ModelNotAllowed,
        ),
        (
            "model without a route",
            &open,
            "/v1/chat/completions",
            chat("nope", "hi").to_string(),
            ErrorCode::NotFound(Resource::Model),
        ),
        (
            "malformed JSON",
            &open,
            "/v1/chat/completions",
            "{\"model\": ".into(),
            ErrorCode::InvalidRequest,
        ),
        (
            "body over the limit",
            &open,
            "/v1/chat/completions",
            chat("gpt-a", &"x".repeat(100 * 1024)).to_string(),
            ErrorCode::BodyTooLarge,
        ),
        (
            "address outside the key's CIDRs",
            &elsewhere,
            "/v1/chat/completions",
            chat("gpt-a", "hi").to_string(),
            ErrorCode::IpNotAllowed,
        ),
        (
            "a secret under a block rule",
            &open,
            "/v1/chat/completions",
            secret.to_string(),
            ErrorCode::GuardrailBlocked,
        ),
        (
            "token ids under guardrails",
            &open,
            "/v1/embeddings",
            json!({"model": "gpt-a", "input": [[101, 2023]]}).to_string(),
            ErrorCode::GuardrailUninspectable,
        ),
        (
            "provider unreachable",
            &open,
            "/v1/chat/completions",
            chat("dead", "hi").to_string(),
            ErrorCode::UpstreamUnreachable,
        ),
    ];
    for (case, key, path, body, refusal) in cases {
        let skip = stack.event_count();
        let sent = stack.provider_saw().await.len();
        let answer = stack.post(key, path, body).await;
        assert_refused(&stack, skip, case, answer, refusal).await;
        if refusal != ErrorCode::UpstreamUnreachable {
            assert_eq!(
                stack.provider_saw().await.len(),
                sent,
                "{case}: reached the provider"
            );
        }
    }

    // The provider failing, as injected into the fake: each failure has its own code, and
    // the provider's own message (which may describe the gateway's credentials) is not relayed.
    for (status, latency_ms, refusal) in [
        (Some(500), 0, ErrorCode::UpstreamError),
        (Some(429), 0, ErrorCode::UpstreamRateLimited),
        (Some(401), 0, ErrorCode::UpstreamAuthFailed),
        (None, 2000, ErrorCode::UpstreamTimeout),
    ] {
        stack
            .fake_config(FakeConfig {
                fail_status: status,
                fail_count: 1,
                latency_ms,
                ..FakeConfig::default()
            })
            .await;
        let skip = stack.event_count();
        let answer = stack.chat(&open, &chat("gpt-a", "hi")).await;
        assert!(
            !answer.1.to_string().contains("injected failure"),
            "{refusal:?}: {}",
            answer.1
        );
        assert_refused(&stack, skip, refusal.code(), answer, refusal).await;
    }
    stack.fake_config(FakeConfig::default()).await;

    tokio::time::sleep(Duration::from_millis(3100).saturating_sub(issued.elapsed())).await;
    let skip = stack.event_count();
    let answer = stack.chat(&brief, &chat("gpt-a", "hello")).await;
    assert_refused(&stack, skip, "expired key", answer, ErrorCode::KeyExpired).await;
}

#[tokio::test]
async fn guardrail_actions_rewrite_what_the_provider_sees_and_are_recorded_without_the_text() {
    let stack = Stack::start(|_| {}).await;
    let key = stack.key(json!({})).await;
    let pipeline = json!({
        "rules": [
            {"detector": "email", "action": "redact"},
            {"detector": "card_number", "action": "mask", "keep": 4},
            {"detector": "us_ssn", "action": "hash"},
            {"detector": "falcon", "action": "log"},
        ],
        "custom": [{"name": "falcon", "keywords": ["project falcon"]}],
    });
    let probe = chat("gpt-a", "say:write to jane.doe@example.com");
    stack
        .guardrails(pipeline, &key, probe, |s, b| {
            s == 200 && b.to_string().contains("[REDACTED:EMAIL]")
        })
        .await;
    let text =
        "Project Falcon: bill jane.doe@example.com, card 4242 4242 4242 4242, SSN 123-45-6789.";
    let skip = stack.event_count();
    let (status, _) = stack.chat(&key, &chat("gpt-a", text)).await;
    assert_eq!(status, 200);
    let seen = stack.provider_saw().await.pop().unwrap();
    let sent = seen.body["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        sent.starts_with(
            "Project Falcon: bill [REDACTED:EMAIL], card ************4242, SSN [HASH:US_SSN:"
        ),
        "{sent}"
    );
    for leak in ["jane.doe", "4242 4242", "123-45-6789"] {
        assert!(!sent.contains(leak), "{leak} reached the provider: {sent}");
    }
    // The same value always hashes to the same token.
    stack.chat(&key, &chat("gpt-a", text)).await;
    let again = stack.provider_saw().await.pop().unwrap();
    assert_eq!(again.body["messages"][0]["content"].as_str().unwrap(), sent);

    let event = stack
        .event(skip, |e| {
            e.action == EventType::RequestGuardrailTriggered && e.details["stage"] == "request"
        })
        .await;
    let findings = event.details["findings"].as_array().unwrap();
    for (detector, action) in [
        ("email", "redact"),
        ("card_number", "mask"),
        ("us_ssn", "hash"),
        ("falcon", "log"),
    ] {
        let expected = json!({"detector": detector, "action": action, "count": 1});
        assert!(
            findings.contains(&expected),
            "{expected} not in {findings:?}"
        );
    }
    let recorded = serde_json::to_string(&event).unwrap();
    for leak in ["jane.doe", "4242", "123-45-6789", "Falcon"] {
        assert!(
            !recorded.contains(leak),
            "{leak} in the audit event: {recorded}"
        );
    }
}

#[tokio::test]
async fn a_streamed_answer_is_masked_across_chunks_and_a_served_request_is_recorded() {
    let stack = Stack::start(|_| {}).await;
    let key = stack.key(json!({})).await;
    let pipeline = json!({"rules": [{"detector": "card_number", "action": "mask", "keep": 4}]});
    let probe = chat("gpt-a", "say:card 4242 4242 4242 4242");
    stack
        .guardrails(pipeline, &key, probe.clone(), |s, b| {
            s == 200 && b.to_string().contains("************4242")
        })
        .await;
    let skip = stack.event_count();
    let raw = stack.stream(&key, &probe).await;
    let mut said = String::new();
    for line in raw.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            continue;
        }
        let chunk: Value = serde_json::from_str(data).unwrap();
        said.push_str(
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or_default(),
        );
    }
    assert_eq!(said, "card ************4242", "{raw}");
    assert!(raw.trim_end().ends_with("data: [DONE]"), "{raw}");
    for piece in ["4242 4242", "4242 42"] {
        assert!(!raw.contains(piece), "{piece} reached the client: {raw}");
    }
    let routed = stack
        .event(skip, |e| e.action == EventType::RequestRouted)
        .await;
    assert_eq!(routed.outcome, Outcome::Success);
    assert_eq!(routed.resource.id.as_deref(), Some("gpt-a"), "{routed:?}");
    assert!(
        routed.actor.id.as_deref().is_some_and(|id| !id.is_empty()),
        "{routed:?}"
    );
    assert!(routed.request_id.is_some(), "{routed:?}");
}
