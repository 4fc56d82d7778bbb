//! Which deployments a request tries, in which order, and whether its route may retry: the
//! route's strategy over what this replica has seen of each deployment (time to a response's
//! head, requests in flight), and a retry budget per route, so that a failing provider cannot
//! turn every request into several (no retry storms).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use futures_util::StreamExt;
use routero_core::{DEFAULT_RETRY_BUDGET_PERCENT, ModelRoute, Strategy};

/// What this replica has seen of one deployment.
#[derive(Debug, Default)]
struct Load {
    in_flight: u32,
    /// Moving average of the time to a response's head, in microseconds (none: not yet tried).
    head_micros: Option<f64>,
}

/// Weight of the newest time to a response's head in its moving average.
const ALPHA: f64 = 0.3;

/// The time to a head a failed attempt counts as, at least.
const FAILURE_PENALTY: Duration = Duration::from_secs(5);

/// Most routes' budgets or deployments' loads a replica keeps; past it they start afresh
/// (names come from tenants' routes: a tenant renaming them cannot grow memory for ever).
const MAX_TRACKED: usize = 100_000;

/// A route's requests and retries over the last two windows.
#[derive(Debug)]
struct Budget {
    since: Instant,
    /// (requests, retries) in the current and the previous window.
    current: (u32, u32),
    previous: (u32, u32),
}

/// Length of one of a budget's two windows.
const WINDOW: Duration = Duration::from_secs(5);

/// Retries a route may always make per two windows, however few its requests.
const MIN_RETRIES: u32 = 10;

impl Default for Budget {
    fn default() -> Self {
        Self {
            since: Instant::now(),
            current: (0, 0),
            previous: (0, 0),
        }
    }
}

impl Budget {
    /// Moves the windows on to the one `now` is in (windows keep their boundaries).
    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed < WINDOW {
            return;
        }
        if elapsed < WINDOW * 2 {
            self.previous = self.current;
            self.since += WINDOW;
        } else {
            self.previous = (0, 0);
            let windows = elapsed.as_nanos() / WINDOW.as_nanos();
            self.since += WINDOW * u32::try_from(windows).unwrap_or(u32::MAX);
        }
        self.current = (0, 0);
    }
}

/// Nested by credential then model (deployments) or tenant then route (budgets): looked up by
/// borrowed names.
type Nested<T> = Mutex<HashMap<String, HashMap<String, T>>>;

/// The routing state of this replica.
#[derive(Debug, Default)]
pub(crate) struct Balancer {
    loads: Arc<Nested<Load>>,
    budgets: Nested<Budget>,
    /// State of the generator that shuffles weighted routes.
    seed: AtomicU64,
}

fn locked<T>(map: &Mutex<T>) -> MutexGuard<'_, T> {
    map.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The entry of (outer, inner), made when new (names copied only then); always `Some`.
fn entry<'m, T: Default>(
    map: &'m mut HashMap<String, HashMap<String, T>>,
    (outer, inner): (&str, &str),
) -> Option<&'m mut T> {
    if !map.get(outer).is_some_and(|m| m.contains_key(inner)) {
        if map.values().map(HashMap::len).sum::<usize>() >= MAX_TRACKED {
            map.clear();
        }
        map.entry(outer.to_owned())
            .or_default()
            .insert(inner.to_owned(), T::default());
    }
    map.get_mut(outer).and_then(|m| m.get_mut(inner))
}

impl Balancer {
    /// A balancer whose weighted draws start from `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            seed: AtomicU64::new(seed),
            ..Self::default()
        }
    }

    /// A number in (0, 1], from a SplitMix64 sequence (draws need spread, not secrecy).
    fn draw(&self) -> f64 {
        let mut z = self
            .seed
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// The order in which a request tries the route's deployments (their indices): as
    /// listed for `priority` (nothing computed), else ranked by the strategy's key.
    pub(crate) fn order(&self, route: &ModelRoute) -> Order {
        let strategy = route.routing.strategy;
        let mut keyed: Vec<(f64, usize)> = match strategy {
            Strategy::Priority => return Order::Listed(0..route.deployments.len()),
            // Efraimidis–Spirakis: each deployment's key is u^(1/weight), the highest first.
            Strategy::Weighted => route
                .deployments
                .iter()
                .enumerate()
                .map(|(i, d)| (-self.draw().powf(1.0 / f64::from(d.weight.max(1))), i))
                .collect(),
            Strategy::LeastLatency | Strategy::LeastBusy => {
                let loads = locked(&self.loads);
                route
                    .deployments
                    .iter()
                    .enumerate()
                    .map(|(i, d)| {
                        let load = loads
                            .get(&d.credential_id)
                            .and_then(|m| m.get(&d.upstream_model));
                        let key = if strategy == Strategy::LeastBusy {
                            load.map_or(0.0, |load| f64::from(load.in_flight))
                        } else {
                            // Not yet tried: first, so that each is measured.
                            load.and_then(|load| load.head_micros).unwrap_or(0.0)
                        };
                        (key, i)
                    })
                    .collect()
            }
        };
        // Stable: ties keep the listed order.
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
        let ranked: Vec<usize> = keyed.into_iter().map(|(_, i)| i).collect();
        Order::Ranked(ranked.into_iter())
    }

    /// Counts a request of a route that could retry (more than one deployment).
    pub(crate) fn count_request(&self, route: &ModelRoute, now: Instant) {
        let mut budgets = locked(&self.budgets);
        if let Some(budget) = entry(&mut budgets, (&route.tenant_id, &route.name)) {
            budget.roll(now);
            budget.current.0 = budget.current.0.saturating_add(1);
        }
    }

    /// Whether the route may retry now: its retries over the last two windows below its
    /// percentage of its requests, or below a small floor.
    pub(crate) fn may_retry(&self, route: &ModelRoute, now: Instant) -> bool {
        let percent = route
            .routing
            .retry_budget_percent
            .unwrap_or(DEFAULT_RETRY_BUDGET_PERCENT);
        let mut budgets = locked(&self.budgets);
        let Some(budget) = entry(&mut budgets, (&route.tenant_id, &route.name)) else {
            return false;
        };
        budget.roll(now);
        let requests = u64::from(budget.current.0) + u64::from(budget.previous.0);
        let retries = u64::from(budget.current.1) + u64::from(budget.previous.1);
        retries < (requests * u64::from(percent) / 100).max(u64::from(MIN_RETRIES))
    }

    /// Counts a retry of the route.
    pub(crate) fn retried(&self, route: &ModelRoute, now: Instant) {
        let mut budgets = locked(&self.budgets);
        if let Some(budget) = entry(&mut budgets, (&route.tenant_id, &route.name)) {
            budget.roll(now);
            budget.current.1 = budget.current.1.saturating_add(1);
        }
    }

    /// Notes an attempt starting at a deployment of a route whose strategy reads loads; the
    /// guard it returns ends it.
    pub(crate) fn start(&self, (credential, model): (&str, &str)) -> InFlight {
        if let Some(load) = entry(&mut locked(&self.loads), (credential, model)) {
            load.in_flight += 1;
        }
        InFlight {
            loads: Arc::clone(&self.loads),
            deployment: (credential.to_owned(), model.to_owned()),
            started: Instant::now(),
        }
    }
}

/// The order a request tries a route's deployments in.
#[derive(Debug)]
pub(crate) enum Order {
    /// As listed.
    Listed(std::ops::Range<usize>),
    /// As the strategy ranked them.
    Ranked(std::vec::IntoIter<usize>),
}

impl Iterator for Order {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        match self {
            Self::Listed(listed) => listed.next(),
            Self::Ranked(ranked) => ranked.next(),
        }
    }
}

/// An attempt in flight at a deployment: its answer's head time recorded when it comes, and
/// the attempt counted until the guard is dropped (with the answer's body, once attached).
#[derive(Debug)]
pub(crate) struct InFlight {
    loads: Arc<Nested<Load>>,
    deployment: (String, String),
    started: Instant,
}

impl InFlight {
    /// Folds `micros` into the deployment's moving average of the time to a response's head.
    fn record(&self, micros: f64) {
        let mut loads = locked(&self.loads);
        if let Some(load) = entry(&mut loads, (&self.deployment.0, &self.deployment.1)) {
            load.head_micros = Some(
                load.head_micros
                    .map_or(micros, |m| m + ALPHA * (micros - m)),
            );
        }
    }

    /// The attempt failed: counted as slow (at least [`FAILURE_PENALTY`]), so that a failing
    /// deployment is not the quickest.
    pub(crate) fn failed(self) {
        let elapsed = self.started.elapsed().max(FAILURE_PENALTY);
        self.record(elapsed.as_secs_f64() * 1e6);
    }

    /// Records the time to the answer's head and keeps the attempt counted until its body
    /// ends (or is dropped).
    pub(crate) fn answered(self, response: Response) -> Response {
        self.record(self.started.elapsed().as_secs_f64() * 1e6);
        let (parts, body) = response.into_parts();
        let body = body.into_data_stream().map(move |chunk| {
            let _held = &self;
            chunk
        });
        Response::from_parts(parts, Body::from_stream(body))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut loads = locked(&self.loads);
        if let Some(load) = entry(&mut loads, (&self.deployment.0, &self.deployment.1)) {
            load.in_flight = load.in_flight.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use routero_core::{Deployment, Routing};

    use super::*;

    fn route(strategy: Strategy, weights: &[u32]) -> ModelRoute {
        ModelRoute {
            tenant_id: "t".into(),
            name: "r".into(),
            deployments: weights
                .iter()
                .enumerate()
                .map(|(i, w)| Deployment {
                    credential_id: "c".into(),
                    upstream_model: format!("m{i}"),
                    weight: *w,
                })
                .collect(),
            tags: Default::default(),
            pricing: None,
            routing: Routing {
                strategy,
                ..Routing::default()
            },
        }
    }

    #[test]
    fn weighted_draws_follow_the_weights() {
        let balancer = Balancer::new(7);
        let route = route(Strategy::Weighted, &[1, 3]);
        let firsts = (0..4000)
            .filter(|_| balancer.order(&route).next() == Some(1))
            .count();
        assert!(
            (2800..3200).contains(&firsts),
            "{firsts} of 4000, expected ~3000"
        );
    }

    #[test]
    fn the_least_busy_and_the_quickest_go_first() {
        let balancer = Balancer::new(1);
        let busy = route(Strategy::LeastBusy, &[1, 1]);
        assert_eq!(balancer.order(&busy).collect::<Vec<_>>(), [0, 1]);
        let held = balancer.start(("c", "m0"));
        assert_eq!(balancer.order(&busy).collect::<Vec<_>>(), [1, 0]);
        drop(held);
        assert_eq!(balancer.order(&busy).collect::<Vec<_>>(), [0, 1]);

        let quick = route(Strategy::LeastLatency, &[1, 1]);
        // Untried deployments go first; then the quicker.
        for (model, wait) in [("m0", 30), ("m1", 1)] {
            let attempt = balancer.start(("c", model));
            std::thread::sleep(Duration::from_millis(wait));
            drop(attempt.answered(Response::new(Body::empty())));
        }
        assert_eq!(balancer.order(&quick).collect::<Vec<_>>(), [1, 0]);
    }

    #[test]
    fn retries_stay_within_the_budget() {
        let balancer = Balancer::new(1);
        let mut route = route(Strategy::Priority, &[1, 1]);
        route.routing.retry_budget_percent = Some(20);
        let t0 = Instant::now();
        for _ in 0..100 {
            balancer.count_request(&route, t0);
        }
        let allowed = (0..100)
            .filter(|_| {
                let may = balancer.may_retry(&route, t0);
                if may {
                    balancer.retried(&route, t0);
                }
                may
            })
            .count();
        assert_eq!(allowed, 20, "20 % of 100 requests");
        // The floor lets a quiet route retry a few times; the budget refills as windows pass.
        assert!(!balancer.may_retry(&route, t0 + WINDOW));
        assert!(balancer.may_retry(&route, t0 + WINDOW * 3));
    }
}
