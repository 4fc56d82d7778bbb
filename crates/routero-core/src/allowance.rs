//! What a key, user, team or tenant may send and spend: rate limits and a budget per period,
//! by LiteLLM's names (`rpm_limit`, `tpm_limit`, `max_budget`, `budget_duration`), and what a
//! model route's tokens cost. Money is counted in integer micro-dollars (USD × 10⁶) so every
//! replica adds it up exactly.

use serde::{Deserialize, Serialize};

use crate::Period;

/// Micro-dollars in a dollar.
const MICROS_PER_USD: f64 = 1_000_000.0;
/// The largest amount of money taken anywhere: a billion dollars.
const MAX_USD: f64 = 1_000_000_000.0;
/// The thresholds reported when a budget names none: half, most and all of it.
pub const DEFAULT_THRESHOLDS: [u8; 3] = [50, 80, 100];

/// Whether `spent` (micro-dollars) has reached `percent` of `budget`: the one rule for a
/// threshold, where it is reported (the counters) and where it is shown (the admin API).
pub fn threshold_reached(spent: i64, budget: i64, percent: u8) -> bool {
    i128::from(spent) * 100 >= i128::from(percent) * i128::from(budget)
}

/// USD as micro-dollars: a finite amount from 0 to a billion, rounded to the micro-dollar.
pub fn usd_to_micros(field: &str, usd: f64) -> Result<i64, String> {
    if !usd.is_finite() || !(0.0..=MAX_USD).contains(&usd) {
        return Err(format!(
            "{field}: a number of US dollars from 0 to {MAX_USD}"
        ));
    }
    // In range: at most 10¹⁵, exact in an i64.
    #[expect(clippy::cast_possible_truncation, reason = "bounded above")]
    Ok((usd * MICROS_PER_USD).round() as i64)
}

/// Micro-dollars as USD, for answers and reports.
#[expect(clippy::cast_precision_loss, reason = "amounts stay below 2^53")]
pub fn micros_to_usd(micros: i64) -> f64 {
    micros as f64 / MICROS_PER_USD
}

/// Rate limits and a budget; every part is optional (none: unlimited).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allowance {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm_limit: Option<u64>,
    /// Tokens per minute (prompt and completion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm_limit: Option<u64>,
    /// The budget per period, in micro-dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_budget_micros: Option<i64>,
    /// When the budget resets (`30d`, `24h`, `1mo` for the calendar month); none: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_duration: Option<String>,
    /// Percentages of the budget reported once per period as spend reaches them; empty:
    /// [`DEFAULT_THRESHOLDS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budget_thresholds: Vec<u8>,
    /// The tenant's only: when the counters cannot be reached, serve its requests uncounted
    /// (each one audited as `limits.failed_open`) instead of refusing them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fail_open: bool,
}

impl Allowance {
    /// The largest rate limit taken (ten million a minute: the counters keep a minute in
    /// microseconds, so larger limits would lose their precision).
    pub const MAX_RATE: u64 = 10_000_000;

    /// Checks each part: limits 1 to [`Self::MAX_RATE`], a duration that parses, thresholds
    /// 1 to 100 (at most ten).
    pub fn check(&self) -> Result<(), String> {
        for (name, limit) in [("rpm_limit", self.rpm_limit), ("tpm_limit", self.tpm_limit)] {
            if limit.is_some_and(|l| l == 0 || l > Self::MAX_RATE) {
                return Err(format!("{name}: 1 to {}", Self::MAX_RATE));
            }
        }
        if let Some(duration) = &self.budget_duration {
            Period::parse(duration).map_err(|e| format!("budget_duration: {e}"))?;
        }
        if self.budget_thresholds.len() > 10
            || self
                .budget_thresholds
                .iter()
                .any(|p| !(1..=100).contains(p))
        {
            return Err("budget_thresholds: at most ten percentages, 1 to 100".into());
        }
        Ok(())
    }

    /// Whether nothing is limited (or asked of the counters).
    pub fn is_unlimited(&self) -> bool {
        self.rpm_limit.is_none()
            && self.tpm_limit.is_none()
            && self.max_budget_micros.is_none()
            && !self.fail_open
    }

    /// When the budget resets.
    pub fn period(&self) -> Period {
        self.budget_duration
            .as_deref()
            .and_then(|d| Period::parse(d).ok())
            .unwrap_or(Period::Never)
    }

    /// The thresholds reported, sorted.
    pub fn thresholds(&self) -> Vec<u8> {
        let mut thresholds = if self.budget_thresholds.is_empty() {
            DEFAULT_THRESHOLDS.to_vec()
        } else {
            self.budget_thresholds.clone()
        };
        thresholds.sort_unstable();
        thresholds.dedup();
        thresholds
    }

    /// This allowance with every part `changes` sets replacing its own.
    pub fn merged(&self, changes: &Allowance) -> Allowance {
        Allowance {
            rpm_limit: changes.rpm_limit.or(self.rpm_limit),
            tpm_limit: changes.tpm_limit.or(self.tpm_limit),
            max_budget_micros: changes.max_budget_micros.or(self.max_budget_micros),
            budget_duration: changes
                .budget_duration
                .clone()
                .or_else(|| self.budget_duration.clone()),
            budget_thresholds: if changes.budget_thresholds.is_empty() {
                self.budget_thresholds.clone()
            } else {
                changes.budget_thresholds.clone()
            },
            fail_open: self.fail_open || changes.fail_open,
        }
    }
}

/// What a model route's tokens cost, in micro-dollars per million tokens (the API speaks USD
/// per million: `input_per_mtok`, `output_per_mtok`, `cached_input_per_mtok`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pricing {
    /// A million prompt tokens.
    pub input_micros_per_mtok: u64,
    /// A million completion tokens.
    pub output_micros_per_mtok: u64,
    /// A million prompt tokens the provider reports as read from its cache; none: the input
    /// price.
    pub cached_input_micros_per_mtok: Option<u64>,
    /// The completion tokens reserved for a request that names no `max_tokens`; none: the
    /// gateway's default.
    pub default_max_tokens: Option<u64>,
}

/// Tokens of one request, as the provider reported them (or as estimated before it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens, cached ones included.
    pub prompt_tokens: u64,
    /// Of the prompt tokens, those read from the provider's cache.
    pub cached_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
}

impl Usage {
    /// Prompt and completion tokens.
    pub fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// The most one request is ever charged, in micro-dollars (a billion dollars): a bound that
/// keeps sums of charges far from overflowing.
pub const MAX_CHARGE_MICROS: i64 = 1_000_000_000_000_000;

impl Pricing {
    /// What `usage` costs, in micro-dollars, rounded up (at most [`MAX_CHARGE_MICROS`]).
    pub fn cost_micros(&self, usage: &Usage) -> i64 {
        let cached = usage.cached_tokens.min(usage.prompt_tokens);
        let parts = [
            (usage.prompt_tokens - cached, self.input_micros_per_mtok),
            (
                cached,
                self.cached_input_micros_per_mtok
                    .unwrap_or(self.input_micros_per_mtok),
            ),
            (usage.completion_tokens, self.output_micros_per_mtok),
        ];
        let total: u128 = parts
            .iter()
            .map(|(tokens, price)| u128::from(*tokens) * u128::from(*price))
            .sum();
        i64::try_from(total.div_ceil(1_000_000))
            .unwrap_or(i64::MAX)
            .min(MAX_CHARGE_MICROS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_threshold_is_reached_at_its_percentage_not_a_micro_dollar_before() {
        assert!(!threshold_reached(499_999, 1_000_000, 50));
        assert!(threshold_reached(500_000, 1_000_000, 50));
        assert!(!threshold_reached(999_999, 1_000_000, 100));
        assert!(threshold_reached(i64::MAX, i64::MAX, 100), "no overflow");
        assert!(threshold_reached(0, 0, 100), "a budget of nothing is spent");
    }

    #[test]
    fn dollars_convert_to_whole_micro_dollars() {
        assert_eq!(usd_to_micros("b", 0.15), Ok(150_000));
        assert_eq!(usd_to_micros("b", 1e9), Ok(1_000_000_000_000_000));
        for bad in [-0.01, f64::NAN, f64::INFINITY, 1e9 + 1.0] {
            assert!(usd_to_micros("b", bad).is_err(), "{bad}");
        }
        assert!((micros_to_usd(150_000) - 0.15).abs() < 1e-12);
    }

    #[test]
    fn costs_round_up_and_price_cached_tokens_apart() {
        let pricing = Pricing {
            input_micros_per_mtok: 150_000,
            output_micros_per_mtok: 600_000,
            cached_input_micros_per_mtok: Some(75_000),
            default_max_tokens: None,
        };
        let usage = Usage {
            prompt_tokens: 1_000,
            cached_tokens: 0,
            completion_tokens: 1_000,
        };
        assert_eq!(pricing.cost_micros(&usage), 150 + 600);
        let cached = Usage {
            cached_tokens: 1_000,
            ..usage
        };
        assert_eq!(pricing.cost_micros(&cached), 75 + 600);
        let one = Usage {
            prompt_tokens: 1,
            ..Usage::default()
        };
        assert_eq!(
            pricing.cost_micros(&one),
            1,
            "a fraction of a micro-dollar is one"
        );
        let absurd = Usage {
            prompt_tokens: u64::MAX,
            cached_tokens: 0,
            completion_tokens: u64::MAX,
        };
        assert_eq!(pricing.cost_micros(&absurd), MAX_CHARGE_MICROS);
    }

    #[test]
    fn allowances_are_checked_and_merged_part_by_part() {
        let mut allowance = Allowance {
            rpm_limit: Some(60),
            budget_duration: Some("30d".into()),
            ..Allowance::default()
        };
        assert_eq!(allowance.check(), Ok(()));
        assert_eq!(allowance.period(), Period::Every(30 * 86_400));
        assert_eq!(allowance.thresholds(), DEFAULT_THRESHOLDS.to_vec());
        let changes = Allowance {
            max_budget_micros: Some(5),
            budget_thresholds: vec![90, 10, 90],
            ..Allowance::default()
        };
        let merged = allowance.merged(&changes);
        assert_eq!(merged.rpm_limit, Some(60));
        assert_eq!(merged.max_budget_micros, Some(5));
        assert_eq!(merged.thresholds(), vec![10, 90]);
        allowance.budget_duration = Some("2mo".into());
        assert!(allowance.check().is_err());
        allowance.budget_duration = None;
        allowance.budget_thresholds = vec![0];
        assert!(allowance.check().is_err());
        allowance.budget_thresholds = Vec::new();
        allowance.tpm_limit = Some(Allowance::MAX_RATE + 1);
        assert!(allowance.check().is_err());
    }
}
