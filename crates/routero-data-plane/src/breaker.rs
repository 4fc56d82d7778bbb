//! A circuit breaker per deployment (credential and upstream model) in this replica: after
//! `failures` failures in a row (no connection, a timeout, a 5xx), or `rate_limits` 429s in a
//! row (counted apart: a provider's rate limit is not an outage; 0 and they never open it), it
//! opens and the deployment gets no requests for `open_for`; then one request probes it
//! (half-open): its answer closes the breaker, its failure opens it again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Failures in a row that open it.
    pub failures: u32,
    /// 429s in a row that open it (0: never).
    pub rate_limits: u32,
    /// How long it stays open before a probe.
    pub open_for: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failures: 5,
            rate_limits: 5,
            open_for: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Requests flow; failures and 429s in a row so far.
    Closed(u32, u32),
    /// No requests until this instant.
    Open(Instant),
    /// One probe is out; if it never reports (its client went away), another may go at
    /// this instant.
    Probing(Instant),
}

/// How an attempt at a deployment went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It answered (whatever the answer).
    Answered,
    /// No connection, no answer in time, or a 5xx.
    Failed,
    /// A 429.
    RateLimited,
}

/// A change of a breaker's state, to log and audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Opened,
    Closed,
}

/// A deployment: its credential id and upstream model.
pub(crate) type Deployment<'a> = (&'a str, &'a str);

/// The breakers of the deployments this replica has seen fail, by credential then model (a
/// deployment never seen failing has none: it is closed). Looked up without allocating.
#[derive(Debug, Default)]
pub(crate) struct Breakers {
    settings: BreakerSettings,
    states: Mutex<HashMap<String, HashMap<String, State>>>,
}

impl Breakers {
    pub(crate) fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            states: Mutex::default(),
        }
    }

    fn states(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, State>>> {
        self.states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The deployments whose breaker is not closed, as `(credential, model, "open" |
    /// "probing")`, at most `most` of them.
    pub(crate) fn not_closed(&self, most: usize) -> Vec<(String, String, &'static str)> {
        let states = self.states();
        states
            .iter()
            .flat_map(|(credential, models)| {
                models.iter().filter_map(move |(model, state)| {
                    let shown = match state {
                        State::Closed(..) => return None,
                        State::Open(_) => "open",
                        State::Probing(_) => "probing",
                    };
                    Some((credential.clone(), model.clone(), shown))
                })
            })
            .take(most)
            .collect()
    }

    /// Whether a request may go to `deployment` now (an open breaker whose time is up lets
    /// this one request through as its probe).
    pub(crate) fn admit(&self, (credential, model): Deployment<'_>, now: Instant) -> bool {
        let mut states = self.states();
        let Some(state) = states.get_mut(credential).and_then(|m| m.get_mut(model)) else {
            return true;
        };
        match *state {
            State::Closed(..) => true,
            State::Open(until) | State::Probing(until) if now >= until => {
                *state = State::Probing(now + self.settings.open_for);
                true
            }
            State::Open(_) | State::Probing(_) => false,
        }
    }

    /// Records how a request to `deployment` went; returns the change it made, if any.
    pub(crate) fn record(
        &self,
        (credential, model): Deployment<'_>,
        outcome: Outcome,
        now: Instant,
    ) -> Option<Change> {
        let mut states = self.states();
        let state = states
            .get(credential)
            .and_then(|m| m.get(model))
            .copied()
            .unwrap_or(State::Closed(0, 0));
        let open = (
            State::Open(now + self.settings.open_for),
            Some(Change::Opened),
        );
        // With `rate_limits` 0 a 429 is an answer like any other: the deployment is up.
        let outcome = match outcome {
            Outcome::RateLimited if self.settings.rate_limits == 0 => Outcome::Answered,
            outcome => outcome,
        };
        let (next, change) = match (state, outcome) {
            // The common case, a healthy deployment answering: nothing to write.
            (State::Closed(0, 0), Outcome::Answered) => return None,
            (State::Closed(..), Outcome::Answered) => (State::Closed(0, 0), None),
            (State::Probing(_) | State::Open(_), Outcome::Answered) => {
                (State::Closed(0, 0), Some(Change::Closed))
            }
            // A request admitted before the breaker opened: it stays open as it is.
            (State::Open(until), _) => (State::Open(until), None),
            (State::Probing(_), _) => open,
            // Failures and 429s each counted in a row: one of the other kind ends the run.
            (State::Closed(failed, _), Outcome::Failed) => {
                if failed + 1 < self.settings.failures {
                    (State::Closed(failed + 1, 0), None)
                } else {
                    open
                }
            }
            (State::Closed(_, limited), Outcome::RateLimited) => {
                if limited + 1 < self.settings.rate_limits {
                    (State::Closed(0, limited + 1), None)
                } else {
                    open
                }
            }
        };
        states
            .entry(credential.to_owned())
            .or_default()
            .insert(model.to_owned(), next);
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_breakers_that_are_not_closed_are_named_at_most_so_many() {
        let breakers = Breakers::new(BreakerSettings {
            failures: 1,
            rate_limits: 0,
            open_for: Duration::from_secs(10),
        });
        let t0 = Instant::now();
        assert_eq!(
            breakers.record(("c1", "open"), Outcome::Failed, t0),
            Some(Change::Opened)
        );
        breakers.record(("c1", "probing"), Outcome::Failed, t0);
        assert!(breakers.admit(("c1", "probing"), t0 + Duration::from_secs(10)));
        // Failed once then answered: closed again, not named.
        breakers.record(("c2", "healed"), Outcome::Failed, t0);
        breakers.record(("c2", "healed"), Outcome::Answered, t0);
        let mut named = breakers.not_closed(10);
        named.sort();
        assert_eq!(
            named,
            [
                ("c1".to_owned(), "open".to_owned(), "open"),
                ("c1".to_owned(), "probing".to_owned(), "probing"),
            ]
        );
        assert_eq!(breakers.not_closed(1).len(), 1);
    }

    #[test]
    fn failures_in_a_row_open_it_and_one_probe_decides() {
        let breakers = Breakers::new(BreakerSettings {
            failures: 3,
            rate_limits: 0,
            open_for: Duration::from_secs(10),
        });
        let d = ("cred", "model");
        let t0 = Instant::now();
        assert_eq!(breakers.record(d, Outcome::Failed, t0), None);
        assert_eq!(
            breakers.record(d, Outcome::Answered, t0),
            None,
            "a success resets the count"
        );
        assert_eq!(breakers.record(d, Outcome::Failed, t0), None);
        assert_eq!(breakers.record(d, Outcome::Failed, t0), None);
        assert_eq!(
            breakers.record(d, Outcome::Failed, t0),
            Some(Change::Opened)
        );
        assert!(!breakers.admit(d, t0 + Duration::from_secs(9)));
        let later = t0 + Duration::from_secs(10);
        assert!(breakers.admit(d, later), "the probe");
        assert!(!breakers.admit(d, later), "one probe at a time");
        // A probe that never reports lets another go after the open period.
        assert!(breakers.admit(d, later + Duration::from_secs(10)));
        assert_eq!(
            breakers.record(d, Outcome::Failed, later),
            Some(Change::Opened)
        );
        assert!(!breakers.admit(d, later + Duration::from_secs(9)));
        let again = later + Duration::from_secs(10);
        assert!(breakers.admit(d, again));
        assert_eq!(
            breakers.record(d, Outcome::Answered, again),
            Some(Change::Closed)
        );
        assert!(breakers.admit(d, again));
        // 429s are counted apart: with `rate_limits` 0 they never open it, nor add to failures.
        for _ in 0..10 {
            assert_eq!(breakers.record(d, Outcome::RateLimited, again), None);
        }
        assert_eq!(breakers.record(d, Outcome::Failed, again), None);
        assert_eq!(breakers.record(d, Outcome::Failed, again), None);
        assert_eq!(
            breakers.record(d, Outcome::Failed, again),
            Some(Change::Opened)
        );
        // ...and a probe answered 429 closes it: the deployment is up.
        let probe = again + Duration::from_secs(10);
        assert!(breakers.admit(d, probe));
        assert_eq!(
            breakers.record(d, Outcome::RateLimited, probe),
            Some(Change::Closed)
        );
    }

    #[test]
    fn rate_limits_open_it_at_their_own_count() {
        let breakers = Breakers::new(BreakerSettings {
            failures: 5,
            rate_limits: 2,
            open_for: Duration::from_secs(10),
        });
        let (d, t0) = (("cred", "model"), Instant::now());
        assert_eq!(breakers.record(d, Outcome::Failed, t0), None);
        assert_eq!(breakers.record(d, Outcome::RateLimited, t0), None);
        // A failure between them ends the 429s' run.
        assert_eq!(breakers.record(d, Outcome::Failed, t0), None);
        assert_eq!(breakers.record(d, Outcome::RateLimited, t0), None);
        assert_eq!(
            breakers.record(d, Outcome::RateLimited, t0),
            Some(Change::Opened)
        );
    }
}
