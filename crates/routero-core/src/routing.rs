//! How a model route spreads its requests over its deployments, and how hard it tries.

use serde::{Deserialize, Serialize};

/// The order a route's deployments are tried in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// In the order given: the first healthy one serves, the next ones are fallbacks.
    #[default]
    Priority,
    /// At random, in proportion to each deployment's `weight`.
    Weighted,
    /// The one whose responses began soonest lately (a moving average per replica).
    LeastLatency,
    /// The one with the fewest requests in flight from this replica.
    LeastBusy,
}

impl Strategy {
    /// Every strategy, by its name.
    pub const ALL: [Self; 4] = [
        Self::Priority,
        Self::Weighted,
        Self::LeastLatency,
        Self::LeastBusy,
    ];

    /// Its name, as the API and the snapshot spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Priority => "priority",
            Self::Weighted => "weighted",
            Self::LeastLatency => "least_latency",
            Self::LeastBusy => "least_busy",
        }
    }

    /// The strategy named `name`.
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// A route's routing: its strategy, how many attempts a request makes, how many retries the
/// route may spend, and its timeouts. What is not set is the data plane's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Routing {
    /// The order deployments are tried in.
    pub strategy: Strategy,
    /// Most attempts one request makes, its first included (default 3).
    pub max_attempts: Option<u32>,
    /// Retries the route may make per 100 requests (over the last 10 s in each replica,
    /// beyond a floor of 10), so that failing providers do not double the load (default 20).
    pub retry_budget_percent: Option<u32>,
    /// Longest wait for a streamed response's head, in milliseconds.
    pub ttfb_timeout_ms: Option<u64>,
    /// Longest one attempt may take, head and body, in milliseconds.
    pub timeout_ms: Option<u64>,
}

/// Attempts a request makes when its route does not say.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// Retries per 100 requests a route may make when it does not say.
pub const DEFAULT_RETRY_BUDGET_PERCENT: u32 = 20;
