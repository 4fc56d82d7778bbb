//! Guardrails: detectors of personal data, secrets and jailbreak attempts, run together in one
//! scanner, and a per-tenant [`Policy`] that blocks, redacts, masks, hashes or only logs what
//! they find. Audit events carry detector names, actions and counts, never the matched text.
#![forbid(unsafe_code)]

mod action;
mod config;
mod detectors;
mod normalise;
mod scanner;
mod stream;

use thiserror::Error;

pub use action::{Action, Applied, Policy, Selector};
pub use config::{CustomRuleConfig, GuardrailConfig, Pipeline, RuleConfig};
pub use detectors::Category;
pub use scanner::{CustomRule, Detector, Finding, Scanner};
pub use stream::{Released, StreamScanner};

/// Errors of building a scanner.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum GuardError {
    /// A custom rule was refused.
    #[error("rule {name:?}: {reason}")]
    InvalidRule {
        /// The rule's name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A guardrail configuration was refused.
    #[error("{0}")]
    InvalidConfig(String),
    /// A built-in pattern failed to compile (a bug).
    #[error("built-in detector: {0}")]
    Builtin(String),
}
