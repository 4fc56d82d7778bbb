//! A tenant's guardrail configuration as the admin API takes it (JSON), and the [`Pipeline`]
//! it compiles to: one scanner, the tenant's rules, and per-route overrides.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::GuardError;
use crate::action::{Action, Policy, Selector};
use crate::detectors::Category;
use crate::scanner::{CustomRule, Scanner};

/// Most rules in one list, custom rules, and route overrides.
const MAX_ITEMS: usize = 100;

/// A tenant's guardrails: rules in priority order, custom detectors, the jailbreak threshold,
/// and route overrides (a route's rules replace the tenant's for that model).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailConfig {
    /// Rules in priority order: the first that selects a finding decides its action.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// The tenant's own detectors.
    #[serde(default)]
    pub custom: Vec<CustomRuleConfig>,
    /// Score at which jailbreak findings count (default 0.7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jailbreak_threshold: Option<f32>,
    /// Per model name: rules that replace the tenant's rules for that route.
    #[serde(default)]
    pub routes: BTreeMap<String, Vec<RuleConfig>>,
}

/// One rule: a detector by name or a whole category, and an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// A detector's name (`email`, `aws_secret_key`, a custom rule's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detector: Option<String>,
    /// A category: `pii`, `secret`, `jailbreak`, `custom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// `block`, `redact`, `mask`, `hash` or `log`.
    pub action: String,
    /// For `mask`: characters kept at the end (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<usize>,
}

/// A custom detector: a regex or keywords.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomRuleConfig {
    /// Name, shown in audit events.
    pub name: String,
    /// A regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Keywords matched as whole words, ignoring case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keywords: Option<Vec<String>>,
}

/// A compiled configuration, ready for every request of its tenant.
#[derive(Debug)]
pub struct Pipeline {
    /// Every detector.
    pub scanner: Scanner,
    policy: Policy,
    routes: BTreeMap<String, Policy>,
}

impl Pipeline {
    /// Validates and compiles `config`; every refusal names what is wrong.
    pub fn compile(config: &GuardrailConfig) -> Result<Self, GuardError> {
        let invalid = |reason: String| GuardError::InvalidConfig(reason);
        if config.rules.len() > MAX_ITEMS
            || config.custom.len() > MAX_ITEMS
            || config.routes.len() > MAX_ITEMS
            || config.routes.values().any(|rules| rules.len() > MAX_ITEMS)
        {
            return Err(invalid(format!(
                "at most {MAX_ITEMS} rules, custom rules and routes"
            )));
        }
        let threshold = config.jailbreak_threshold.unwrap_or(0.7);
        if !(threshold > 0.0 && threshold <= 100.0) {
            return Err(invalid("jailbreak_threshold: above 0, at most 100".into()));
        }
        let custom = config
            .custom
            .iter()
            .map(|rule| match (&rule.regex, &rule.keywords) {
                (Some(pattern), None) => Ok(CustomRule::Regex {
                    name: rule.name.clone(),
                    pattern: pattern.clone(),
                }),
                (None, Some(words)) => Ok(CustomRule::Keywords {
                    name: rule.name.clone(),
                    words: words.clone(),
                }),
                _ => Err(invalid(format!(
                    "custom rule {:?}: give either regex or keywords",
                    rule.name
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let scanner = Scanner::new(&custom, threshold)?;
        let policy = compile_rules(&scanner, &config.rules)?;
        let routes = config
            .routes
            .iter()
            .map(|(route, rules)| Ok((route.clone(), compile_rules(&scanner, rules)?)))
            .collect::<Result<_, GuardError>>()?;
        Ok(Self {
            scanner,
            policy,
            routes,
        })
    }

    /// The rules for requests to `route`: its override, else the tenant's.
    pub fn policy_for(&self, route: &str) -> &Policy {
        self.routes.get(route).unwrap_or(&self.policy)
    }
}

fn compile_rules(scanner: &Scanner, rules: &[RuleConfig]) -> Result<Policy, GuardError> {
    let invalid = |reason: String| GuardError::InvalidConfig(reason);
    let rules = rules
        .iter()
        .map(|rule| {
            let selector = match (&rule.detector, rule.category.as_deref()) {
                (Some(name), None) if scanner.has_detector(name) => {
                    Selector::Detector(name.clone())
                }
                (Some(name), None) => return Err(invalid(format!("no detector named {name:.64}"))),
                (None, Some("pii")) => Selector::Category(Category::Pii),
                (None, Some("secret")) => Selector::Category(Category::Secret),
                (None, Some("jailbreak")) => Selector::Category(Category::Jailbreak),
                (None, Some("custom")) => Selector::Category(Category::Custom),
                (None, Some(other)) => {
                    return Err(invalid(format!(
                        "category {other:.64}: one of pii, secret, jailbreak, custom"
                    )));
                }
                _ => {
                    return Err(invalid(
                        "a rule names either a detector or a category".into(),
                    ));
                }
            };
            let action = match (rule.action.as_str(), rule.keep) {
                ("block", None) => Action::Block,
                ("redact", None) => Action::Redact,
                ("mask", keep) => Action::Mask {
                    keep: keep.unwrap_or(4).min(64),
                },
                ("hash", None) => Action::Hash,
                ("log", None) => Action::Log,
                (_, Some(_)) => return Err(invalid("keep applies to mask only".into())),
                (other, None) => {
                    return Err(invalid(format!(
                        "action {other:.64}: one of block, redact, mask, hash, log"
                    )));
                }
            };
            Ok((selector, action))
        })
        .collect::<Result<_, _>>()?;
    Ok(Policy { rules })
}
