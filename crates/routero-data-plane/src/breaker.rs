//! A circuit breaker per deployment (credential and upstream model) in this replica: after
//! `failures` failures in a row (no connection, a timeout, a 5xx, a 429) it opens and the
//! deployment gets no requests for `open_for`; then one request probes it (half-open): its
//! success closes the breaker, its failure opens it again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Failures in a row that open it.
    pub failures: u32,
    /// How long it stays open before a probe.
    pub open_for: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failures: 5,
            open_for: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Requests flow; failures in a row so far.
    Closed(u32),
    /// No requests until this instant.
    Open(Instant),
    /// One probe is out; if it never reports (its client went away), another may go at
    /// this instant.
    Probing(Instant),
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

    /// Whether a request may go to `deployment` now (an open breaker whose time is up lets
    /// this one request through as its probe).
    pub(crate) fn admit(&self, (credential, model): Deployment<'_>, now: Instant) -> bool {
        let mut states = self.states();
        let Some(state) = states.get_mut(credential).and_then(|m| m.get_mut(model)) else {
            return true;
        };
        match *state {
            State::Closed(_) => true,
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
        succeeded: bool,
        now: Instant,
    ) -> Option<Change> {
        let mut states = self.states();
        let state = states
            .get(credential)
            .and_then(|m| m.get(model))
            .copied()
            .unwrap_or(State::Closed(0));
        let (next, change) = match (state, succeeded) {
            // The common case, a healthy deployment answering: nothing to write.
            (State::Closed(0), true) => return None,
            (State::Closed(_), true) => (State::Closed(0), None),
            (State::Probing(_) | State::Open(_), true) => (State::Closed(0), Some(Change::Closed)),
            (State::Closed(failed), false) if failed + 1 < self.settings.failures => {
                (State::Closed(failed + 1), None)
            }
            (State::Closed(_) | State::Probing(_), false) => (
                State::Open(now + self.settings.open_for),
                Some(Change::Opened),
            ),
            // A request admitted before the breaker opened: it stays open as it is.
            (State::Open(until), false) => (State::Open(until), None),
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
    fn failures_in_a_row_open_it_and_one_probe_decides() {
        let breakers = Breakers::new(BreakerSettings {
            failures: 3,
            open_for: Duration::from_secs(10),
        });
        let d = ("cred", "model");
        let t0 = Instant::now();
        assert_eq!(breakers.record(d, false, t0), None);
        assert_eq!(
            breakers.record(d, true, t0),
            None,
            "a success resets the count"
        );
        assert_eq!(breakers.record(d, false, t0), None);
        assert_eq!(breakers.record(d, false, t0), None);
        assert_eq!(breakers.record(d, false, t0), Some(Change::Opened));
        assert!(!breakers.admit(d, t0 + Duration::from_secs(9)));
        let later = t0 + Duration::from_secs(10);
        assert!(breakers.admit(d, later), "the probe");
        assert!(!breakers.admit(d, later), "one probe at a time");
        // A probe that never reports lets another go after the open period.
        assert!(breakers.admit(d, later + Duration::from_secs(10)));
        assert_eq!(breakers.record(d, false, later), Some(Change::Opened));
        assert!(!breakers.admit(d, later + Duration::from_secs(9)));
        let again = later + Duration::from_secs(10);
        assert!(breakers.admit(d, again));
        assert_eq!(breakers.record(d, true, again), Some(Change::Closed));
        assert!(breakers.admit(d, again));
    }
}
