//! The counters in this process: one lock over every counter, so a request's reservation is
//! all or nothing as in Redis. Counters of ended periods are dropped as they are passed.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::{Crossed, Grant, MINUTE_US, Plan, Verdict, crossed};

#[derive(Debug, Default)]
struct Budget {
    spent: i64,
    reserved: i64,
    /// Thresholds already reported this period.
    reported: Vec<u8>,
    /// When the counter may be dropped (Unix milliseconds).
    expires_ms: i64,
}

#[derive(Debug, Default)]
struct State {
    budgets: HashMap<String, Budget>,
    /// Each rate's theoretical arrival time (GCRA), in Unix microseconds.
    rates: HashMap<String, i64>,
    /// When expired counters were last dropped.
    swept_ms: i64,
}

/// In-process counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    state: Mutex<State>,
}

impl Counters {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn reserve(&self, plan: &Plan, now_ms: i64) -> Verdict {
        let now_us = now_ms.saturating_mul(1000);
        let mut state = self.state();
        if now_ms - state.swept_ms > 60_000 {
            state.budgets.retain(|_, b| b.expires_ms > now_ms);
            state.rates.retain(|_, tat| *tat > now_us);
            state.swept_ms = now_ms;
        }
        for (held, _, end) in &plan.budgets {
            let used = state
                .budgets
                .get(&held.key)
                .map_or(0, |b| b.spent.saturating_add(b.reserved));
            if used.saturating_add(held.reserved) > held.limit {
                return Verdict::OverBudget {
                    name: held.name.clone(),
                    used_micros: used,
                    limit_micros: held.limit,
                    resets_at: *end,
                };
            }
        }
        let mut arrivals = Vec::with_capacity(plan.rates.len());
        for rate in &plan.rates {
            let tat = state
                .rates
                .get(&rate.key)
                .copied()
                .unwrap_or(now_us)
                .max(now_us);
            let next = tat.saturating_add(rate.cost.saturating_mul(rate.interval_us));
            if next - now_us > MINUTE_US {
                return Verdict::RateLimited {
                    name: rate.name.clone(),
                    kind: rate.kind,
                    retry_after_ms: u64::try_from((next - now_us - MINUTE_US) / 1000 + 1)
                        .unwrap_or(u64::MAX),
                };
            }
            arrivals.push(next);
        }
        for (held, _, _) in &plan.budgets {
            let budget = state.budgets.entry(held.key.clone()).or_default();
            budget.reserved = budget.reserved.saturating_add(held.reserved);
            budget.expires_ms = now_ms.saturating_add(held.ttl_ms);
        }
        let mut left = Vec::with_capacity(plan.rates.len());
        for (rate, next) in plan.rates.iter().zip(arrivals) {
            state.rates.insert(rate.key.clone(), next);
            left.push((MINUTE_US - (next - now_us)) / rate.interval_us.max(1));
        }
        Verdict::Granted(plan.grant(left))
    }

    pub(crate) fn settle(
        &self,
        grant: &Grant,
        actual_micros: i64,
        actual_tokens: u64,
    ) -> Vec<Crossed> {
        let mut state = self.state();
        let mut reached = Vec::new();
        for held in &grant.budgets {
            let budget = state.budgets.entry(held.key.clone()).or_default();
            budget.reserved = budget.reserved.saturating_sub(held.reserved).max(0);
            budget.spent = budget.spent.saturating_add(actual_micros.max(0));
            let spent = budget.spent;
            for percent in crossed(held, spent) {
                if !budget.reported.contains(&percent) {
                    budget.reported.push(percent);
                    reached.push(Crossed {
                        name: held.name.clone(),
                        percent,
                        spent_micros: spent,
                    });
                }
            }
        }
        for held in &grant.tokens {
            // Give back (or take) the difference between the estimate and the actual tokens.
            let difference = i64::try_from(actual_tokens).unwrap_or(i64::MAX)
                - i64::try_from(held.reserved).unwrap_or(i64::MAX);
            if let Some(tat) = state.rates.get_mut(&held.key) {
                *tat = tat.saturating_add(difference.saturating_mul(held.interval_us));
            }
        }
        reached
    }
}
