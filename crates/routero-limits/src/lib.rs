//! Budgets and rate limits, counted atomically: in one process (`routero up`, one replica) or in
//! Redis, shared by every data-plane replica, with the same semantics.
//!
//! A request asks, in one step, for everything it falls under: a reservation of its worst-case
//! cost on each budget (key, user, team, tenant), and its share of each rate limit (requests
//! and tokens per minute). Either all of it is granted or none is, naming what refused. After
//! the provider answered, the grant is settled to the actual cost (and tokens): spend exceeds
//! a budget only by what the requests in flight cost beyond their reservations, however many
//! replicas serve concurrently (nothing, when each reservation is a true worst case). Budgets
//! count in micro-dollars within a period (every `n` seconds, or the calendar month in UTC);
//! rate limits are GCRA over a minute, so a limit of 60 lets 60 through at once and then one a
//! second.

mod local;
mod redis;

pub use routero_core::Period;

/// Why the counters could not answer: the caller refuses (fail closed) unless told otherwise.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    /// The shared counter store could not be reached or failed.
    #[error("the counter store is unavailable: {0}")]
    Unavailable(String),
    /// The configuration cannot work (a Redis URL that does not parse).
    #[error("{0}")]
    Settings(String),
}

/// A budget a request falls under, and what the request reserves on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetAsk {
    /// What the budget belongs to, as it is named in refusals (`key:<id>`, `team:<id>`, …).
    pub name: String,
    /// The budget, in micro-dollars per period.
    pub limit_micros: i64,
    /// When it resets.
    pub period: Period,
    /// The request's worst-case cost, in micro-dollars.
    pub reserve_micros: i64,
    /// Percentages of the budget reported once per period when spend reaches them.
    pub thresholds: Vec<u8>,
}

/// Whether a rate limit counts requests or tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateKind {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
}

impl RateKind {
    /// `rpm` or `tpm`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requests => "rpm",
            Self::Tokens => "tpm",
        }
    }
}

/// A rate limit a request falls under, and how much of it the request takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateAsk {
    /// What the limit belongs to (`key:<id>`, …).
    pub name: String,
    /// Requests or tokens.
    pub kind: RateKind,
    /// The limit per minute (at least 1).
    pub per_minute: u64,
    /// What the request takes: 1 request, or its estimated tokens.
    pub cost: u64,
}

/// Everything one request asks of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ask {
    /// The budgets it falls under.
    pub budgets: Vec<BudgetAsk>,
    /// The rate limits it falls under.
    pub rates: Vec<RateAsk>,
}

/// The counters' answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Everything fits: reserved, to settle after the answer.
    Granted(Grant),
    /// A budget has no room for the reservation.
    OverBudget {
        /// The budget's name.
        name: String,
        /// What is spent and reserved on it, in micro-dollars.
        used_micros: i64,
        /// Its limit.
        limit_micros: i64,
        /// When its period ends (Unix seconds), if it has one.
        resets_at: Option<i64>,
    },
    /// A rate limit is reached.
    RateLimited {
        /// The limit's name and kind.
        name: String,
        /// Requests or tokens.
        kind: RateKind,
        /// How long until the request would fit, in milliseconds.
        retry_after_ms: u64,
    },
}

/// A budget reservation to settle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Held {
    /// The counter's key (the budget's name and period).
    pub(crate) key: String,
    pub(crate) name: String,
    pub(crate) reserved: i64,
    pub(crate) limit: i64,
    pub(crate) thresholds: Vec<u8>,
    /// How long the counter lives (to its period's end, and a day), in milliseconds.
    pub(crate) ttl_ms: i64,
}

/// A token rate reservation to settle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeldTokens {
    pub(crate) key: String,
    pub(crate) reserved: u64,
    pub(crate) interval_us: i64,
}

/// What a granted request holds until it is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub(crate) budgets: Vec<Held>,
    pub(crate) tokens: Vec<HeldTokens>,
    /// Each rate limit's name, kind and what is left of it after this request.
    pub remaining: Vec<(String, RateKind, u64)>,
}

/// A threshold a settled request made spend reach, once per period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crossed {
    /// The budget's name.
    pub name: String,
    /// The percentage reached.
    pub percent: u8,
    /// Spend in the period after this request, in micro-dollars.
    pub spent_micros: i64,
}

/// A minute, in microseconds: the window of every rate limit.
const MINUTE_US: i64 = 60_000_000;
/// A day, in milliseconds: how long a counter outlives its period.
const DAY_MS: i64 = 86_400_000;

/// The microseconds between two units of a per-minute limit.
fn interval_us(per_minute: u64) -> i64 {
    MINUTE_US / i64::try_from(per_minute.max(1)).unwrap_or(i64::MAX).max(1)
}

/// A request's plan, as both backends execute it.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) budgets: Vec<(Held, i64, Option<i64>)>,
    pub(crate) rates: Vec<PlannedRate>,
}

#[derive(Debug, Clone)]
pub(crate) struct PlannedRate {
    pub(crate) key: String,
    pub(crate) name: String,
    pub(crate) kind: RateKind,
    pub(crate) interval_us: i64,
    pub(crate) cost: i64,
}

impl Plan {
    /// The grant of this plan, given what is left of each rate after it.
    pub(crate) fn grant(&self, left: impl IntoIterator<Item = i64>) -> Grant {
        Grant {
            budgets: self
                .budgets
                .iter()
                .map(|(held, _, _)| held.clone())
                .collect(),
            tokens: self
                .rates
                .iter()
                .filter(|rate| rate.kind == RateKind::Tokens)
                .map(|rate| HeldTokens {
                    key: rate.key.clone(),
                    reserved: u64::try_from(rate.cost).unwrap_or(0),
                    interval_us: rate.interval_us,
                })
                .collect(),
            remaining: self
                .rates
                .iter()
                .zip(left)
                .map(|(rate, left)| {
                    (
                        rate.name.clone(),
                        rate.kind,
                        u64::try_from(left).unwrap_or(0),
                    )
                })
                .collect(),
        }
    }
}

impl Ask {
    /// The counters this ask touches at `now_ms`: each budget's key for its current period
    /// (with the period's end), each rate's key and interval.
    pub(crate) fn plan(&self, now_ms: i64) -> Plan {
        let now_s = now_ms.div_euclid(1000);
        let budgets = self
            .budgets
            .iter()
            .map(|b| {
                let (start, end) = b.period.window(now_s);
                let ttl_ms = end.map_or(400 * DAY_MS, |end| (end - now_s) * 1000 + DAY_MS);
                (
                    Held {
                        key: format!("budget:{}:{start}", b.name),
                        name: b.name.clone(),
                        reserved: b.reserve_micros.max(0),
                        limit: b.limit_micros,
                        thresholds: b.thresholds.clone(),
                        ttl_ms,
                    },
                    start,
                    end,
                )
            })
            .collect();
        let rates = self
            .rates
            .iter()
            .map(|r| PlannedRate {
                key: format!("rate:{}:{}", r.name, r.kind.as_str()),
                name: r.name.clone(),
                kind: r.kind,
                interval_us: interval_us(r.per_minute),
                cost: i64::try_from(r.cost).unwrap_or(i64::MAX),
            })
            .collect();
        Plan { budgets, rates }
    }
}

/// The counters: in this process, or in Redis.
pub struct Limits {
    backend: Backend,
}

enum Backend {
    Local(local::Counters),
    Redis(redis::Counters),
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.backend {
            Backend::Local(_) => "in process",
            Backend::Redis(_) => "redis",
        };
        f.debug_struct("Limits").field("backend", &kind).finish()
    }
}

impl Limits {
    /// Counters in this process (one replica).
    pub fn in_process() -> Self {
        Self {
            backend: Backend::Local(local::Counters::default()),
        }
    }

    /// Counters in the Redis at `url`, shared by every replica using it.
    pub fn redis(url: &str) -> Result<Self, LimitsError> {
        Ok(Self {
            backend: Backend::Redis(redis::Counters::connect(url)?),
        })
    }

    /// Reserves everything `ask` needs at `now_ms` (Unix milliseconds), or nothing.
    pub async fn reserve(&self, ask: &Ask, now_ms: i64) -> Result<Verdict, LimitsError> {
        let plan = ask.plan(now_ms);
        match &self.backend {
            Backend::Local(counters) => Ok(counters.reserve(&plan, now_ms)),
            Backend::Redis(counters) => counters.reserve(&plan, now_ms).await,
        }
    }

    /// Settles a grant to the request's actual cost (micro-dollars, on every budget) and
    /// tokens (on every token limit); returns the thresholds this made spend reach.
    pub async fn settle(
        &self,
        grant: &Grant,
        actual_micros: i64,
        actual_tokens: u64,
    ) -> Result<Vec<Crossed>, LimitsError> {
        match &self.backend {
            Backend::Local(counters) => Ok(counters.settle(grant, actual_micros, actual_tokens)),
            Backend::Redis(counters) => counters.settle(grant, actual_micros, actual_tokens).await,
        }
    }
}

/// The thresholds of `held` that spend `after` has reached (each is reported once per period
/// by the caller).
pub(crate) fn crossed(held: &Held, after: i64) -> impl Iterator<Item = u8> + '_ {
    held.thresholds
        .iter()
        .copied()
        .filter(move |percent| routero_core::threshold_reached(after, held.limit, *percent))
}

#[cfg(test)]
mod tests;
