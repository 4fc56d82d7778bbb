//! Guardrail configurations are client text (`PUT /guardrails`): whatever arrives parses and
//! compiles, or is refused with an error, and what compiles scans any text without panicking.

use proptest::prelude::*;
use routero_guard::{GuardrailConfig, Pipeline};

fn rule() -> impl Strategy<Value = serde_json::Value> {
    (
        prop::option::of(prop::sample::select(vec!["email", "card_number", "ssn", "nope", "", "é"])),
        prop::option::of(prop::sample::select(vec!["pii", "secret", "jailbreak", "custom", "x"])),
        prop::sample::select(vec!["block", "redact", "mask", "hash", "log", "explode"]),
        prop::option::of(any::<usize>()),
    )
        .prop_map(|(detector, category, action, keep)| {
            serde_json::json!({"detector": detector, "category": category, "action": action, "keep": keep})
        })
}

fn custom() -> impl Strategy<Value = serde_json::Value> {
    (
        "\\PC{0,12}",
        prop::option::of("\\PC{0,24}"),
        prop::option::of(prop::collection::vec("\\PC{0,8}", 0..4)),
    )
        .prop_map(|(name, regex, keywords)| serde_json::json!({"name": name, "regex": regex, "keywords": keywords}))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_text_is_refused_or_compiles(text in "\\PC{0,200}") {
        if let Ok(config) = serde_json::from_str::<GuardrailConfig>(&text) {
            let _ = Pipeline::compile(&config);
        }
    }

    #[test]
    fn any_shaped_config_compiles_or_is_refused_and_then_scans_anything(
        rules in prop::collection::vec(rule(), 0..6),
        custom in prop::collection::vec(custom(), 0..3),
        threshold in prop::option::of(-2.0f32..3.0),
        text in "\\PC{0,300}",
    ) {
        let json = serde_json::json!({"rules": rules, "custom": custom, "jailbreak_threshold": threshold});
        let Ok(config) = serde_json::from_value::<GuardrailConfig>(json) else { return Ok(()) };
        if let Ok(pipeline) = Pipeline::compile(&config) {
            let applied = pipeline.policy_for("gpt").apply(&pipeline.scanner, b"key", &text);
            prop_assert!(applied.blocked_by.is_some() || !applied.text.is_empty() || text.is_empty() || !applied.counts.is_empty());
        }
    }
}
