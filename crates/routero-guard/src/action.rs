//! What happens to findings: block, redact, mask, hash, or only log.

use std::borrow::Cow;
use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::detectors::Category;
use crate::normalise::Normalised;
use crate::scanner::{Finding, Scanner};

/// An action on a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Refuse the request (or end the stream) with `guardrail_blocked`.
    Block,
    /// Replace with `[REDACTED:<DETECTOR>]`.
    Redact,
    /// Keep the last `keep` letters and digits, star the others (`************4242`).
    Mask {
        /// Characters kept at the end.
        keep: usize,
    },
    /// Replace with `[HASH:<DETECTOR>:<16 hex>]`, an HMAC-SHA256 under the tenant's key: the
    /// same value always gives the same token.
    Hash,
    /// Detect and report only.
    Log,
}

impl Action {
    /// The action's name in configuration and audit events.
    pub fn name(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::Redact => "redact",
            Self::Mask { .. } => "mask",
            Self::Hash => "hash",
            Self::Log => "log",
        }
    }
}

/// Which findings a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// One detector, by name.
    Detector(String),
    /// Every detector of a category.
    Category(Category),
}

/// A tenant's pipeline: rules in priority order; the first that selects a finding decides its
/// action. Findings no rule selects are left alone.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// `(selector, action)`, first match wins.
    pub rules: Vec<(Selector, Action)>,
}

/// The result of applying a policy to a text.
#[derive(Debug, PartialEq, Eq)]
pub struct Applied<'a> {
    /// The text after redaction, masking and hashing (borrowed when unchanged).
    pub text: Cow<'a, str>,
    /// The detector that blocked it, if any.
    pub blocked_by: Option<String>,
    /// How many findings each (detector, action) had: what audit events report, never the
    /// matched text.
    pub counts: BTreeMap<(String, &'static str), u32>,
}

impl Policy {
    fn action_for(&self, name: &str, category: Category) -> Option<Action> {
        self.rules
            .iter()
            .find(|(selector, _)| match selector {
                Selector::Detector(wanted) => wanted == name,
                Selector::Category(wanted) => *wanted == category,
            })
            .map(|(_, action)| *action)
    }

    /// The action a finding gets, if any rule selects it.
    pub(crate) fn action_of(&self, scanner: &Scanner, finding: &Finding) -> Option<Action> {
        let detector = scanner.detector(finding.detector)?;
        self.action_for(&detector.name, detector.category)
    }

    /// Scans `text` and applies the rules; `hash_key` is the tenant's HMAC key.
    pub fn apply<'a>(&self, scanner: &Scanner, hash_key: &[u8], text: &'a str) -> Applied<'a> {
        let findings = scanner.scan(text);
        self.apply_findings(scanner, hash_key, text, &findings)
    }

    /// Applies the rules to findings already made on `text`.
    pub fn apply_findings<'a>(
        &self,
        scanner: &Scanner,
        hash_key: &[u8],
        text: &'a str,
        findings: &[Finding],
    ) -> Applied<'a> {
        let mut applied = Applied {
            text: Cow::Borrowed(text),
            blocked_by: None,
            counts: BTreeMap::new(),
        };
        let mut out = String::new();
        let mut copied = 0;
        for finding in findings {
            let Some(detector) = scanner.detector(finding.detector) else {
                continue;
            };
            let Some(action) = self.action_for(&detector.name, detector.category) else {
                continue;
            };
            *applied
                .counts
                .entry((detector.name.clone(), action.name()))
                .or_default() += 1;
            // Findings come from regex matches: their offsets are character boundaries.
            let Some(value) = text.get(finding.start..finding.end) else {
                continue;
            };
            // Masks and tokens are of the value as read: `４２４２` masks and hashes as `4242`.
            let read = Normalised::of(value);
            let value = read.text();
            let replacement = match action {
                Action::Block => {
                    applied
                        .blocked_by
                        .get_or_insert_with(|| detector.name.clone());
                    continue;
                }
                Action::Log => continue,
                Action::Redact => format!("[REDACTED:{}]", detector.name.to_ascii_uppercase()),
                Action::Mask { keep } => mask(value, keep),
                Action::Hash => format!(
                    "[HASH:{}:{}]",
                    detector.name.to_ascii_uppercase(),
                    token(hash_key, value)
                ),
            };
            out.push_str(text.get(copied..finding.start).unwrap_or_default());
            out.push_str(&replacement);
            copied = finding.end;
        }
        if copied > 0 {
            out.push_str(text.get(copied..).unwrap_or_default());
            applied.text = Cow::Owned(out);
        }
        applied
    }
}

fn mask(value: &str, keep: usize) -> String {
    let kept: Vec<char> = value.chars().filter(char::is_ascii_alphanumeric).collect();
    let shown = keep.min(kept.len() / 2);
    let mut masked = "*".repeat(kept.len() - shown);
    masked.extend(kept.iter().skip(kept.len() - shown));
    masked
}

fn token(key: &[u8], value: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail; an empty token would still hide
    // the value.
    Hmac::<Sha256>::new_from_slice(key).map_or_else(
        |_| String::new(),
        |mut mac| {
            mac.update(value.as_bytes());
            hex::encode(mac.finalize().into_bytes().get(..8).unwrap_or_default())
        },
    )
}
