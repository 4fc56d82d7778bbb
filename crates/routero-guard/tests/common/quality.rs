//! Detection quality on the labelled corpus (`corpus/cases.jsonl`): recall per kind, and
//! false alarms on look-alikes, through a policy that redacts all personal data and secrets
//! and blocks jailbreaks, as a tenant would configure it.

use std::collections::BTreeMap;

use routero_guard::{Action, Category, Policy, Scanner, Selector};
use serde::Deserialize;

/// One labelled text.
#[derive(Debug, Deserialize)]
pub struct Case {
    /// `card`, `email`, `ip`, `phone`, `secret`, `ssn`, `jailbreak`, or `benign`.
    pub kind: String,
    /// The text as sent.
    pub text: String,
    /// The value that must not reach the provider (value kinds only).
    pub expect: Option<String>,
}

/// The corpus, read from the crate.
pub fn corpus() -> Vec<Case> {
    let text = include_str!("../../corpus/cases.jsonl");
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// Per kind: (cases caught, cases), where a benign case is "caught" when nothing fired.
pub type Tally = BTreeMap<String, (usize, usize)>;

/// Runs every case; returns the tally and the cases missed (or falsely alarmed).
pub fn measure(scanner: &Scanner, cases: &[Case]) -> (Tally, Vec<String>) {
    let policy = Policy {
        rules: vec![
            (Selector::Category(Category::Pii), Action::Redact),
            (Selector::Category(Category::Secret), Action::Redact),
            (Selector::Category(Category::Jailbreak), Action::Block),
        ],
    };
    let mut tally = Tally::new();
    let mut missed = Vec::new();
    for case in cases {
        let applied = policy.apply(scanner, b"quality", &case.text);
        let ok = match (case.kind.as_str(), &case.expect) {
            ("jailbreak", _) => applied.blocked_by.is_some(),
            ("benign", _) => applied.blocked_by.is_none() && applied.text == case.text,
            (_, Some(value)) => {
                applied.blocked_by.is_none() && !applied.text.contains(value.as_str())
            }
            (_, None) => false,
        };
        let entry = tally.entry(case.kind.clone()).or_default();
        entry.1 += 1;
        if ok {
            entry.0 += 1;
        } else {
            missed.push(format!(
                "{}: {:?} -> {:?}",
                case.kind, case.text, applied.text
            ));
        }
    }
    (tally, missed)
}

/// The share caught of a kind (for `benign`, the share with no false alarm).
pub fn rate(tally: &Tally, kind: &str) -> f64 {
    tally
        .get(kind)
        .map_or(0.0, |(caught, all)| *caught as f64 / (*all).max(1) as f64)
}
