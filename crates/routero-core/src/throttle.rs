//! Failed authentications per source address and minute. The first few of a source in a
//! minute are recorded one by one; past that they are only counted, and each such source gets
//! one aggregated record when its minute is over, so no one can flood the audit log. A source
//! past the limit is throttled until its minute ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// What to do with one failed authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Record it as its own event.
    Record,
    /// Only count it: it is part of its source's aggregated record for the minute.
    Count,
    /// Count it, and throttle the source (429) until the minute ends.
    Throttle,
}

/// A source's failures in a finished minute, past what was recorded one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aggregate {
    /// The source; `None` for sources beyond the tracking bound, counted together.
    pub source: Option<IpAddr>,
    /// Unix second the minute began.
    pub minute_start: u64,
    /// Failures only counted, not recorded one by one.
    pub counted: u32,
}

/// Limits of [`AuthFailures`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureLimits {
    /// Failures of a source per minute recorded one by one.
    pub recorded: u32,
    /// Failures of a source per minute before it is throttled.
    pub throttle: u32,
    /// Sources tracked per minute; the rest share one count.
    pub sources: usize,
}

impl Default for FailureLimits {
    /// 10 recorded, throttled past 60, 100,000 sources.
    fn default() -> Self {
        Self {
            recorded: 10,
            throttle: 60,
            sources: 100_000,
        }
    }
}

#[derive(Debug, Default)]
struct Minute {
    start: u64,
    counts: HashMap<IpAddr, u32>,
    untracked: u32,
}

/// Failed authentications per source and minute (see the module documentation).
#[derive(Debug)]
pub struct AuthFailures {
    limits: FailureLimits,
    state: Mutex<(Minute, Vec<Aggregate>)>,
}

fn minute_of(now_unix: u64) -> u64 {
    now_unix - now_unix % 60
}

impl AuthFailures {
    /// A tracker with these limits.
    pub fn new(limits: FailureLimits) -> Self {
        Self {
            limits,
            state: Mutex::new((Minute::default(), Vec::new())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Minute, Vec<Aggregate>)> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Moves to the minute of `now_unix`; an ended minute leaves its aggregated records.
    fn rotate(&self, (minute, finished): &mut (Minute, Vec<Aggregate>), now_unix: u64) {
        let start = minute_of(now_unix);
        if minute.start == start {
            return;
        }
        let ended = std::mem::replace(
            minute,
            Minute {
                start,
                ..Minute::default()
            },
        );
        let recorded = self.limits.recorded;
        finished.extend(
            ended
                .counts
                .into_iter()
                .filter(|(_, count)| *count > recorded)
                .map(|(source, count)| Aggregate {
                    source: Some(source),
                    minute_start: ended.start,
                    counted: count - recorded,
                }),
        );
        if ended.untracked > 0 {
            finished.push(Aggregate {
                source: None,
                minute_start: ended.start,
                counted: ended.untracked,
            });
        }
    }

    fn with_minute<T>(&self, now_unix: u64, work: impl FnOnce(&mut Minute) -> T) -> T {
        let mut state = self.lock();
        self.rotate(&mut state, now_unix);
        work(&mut state.0)
    }

    /// Counts a failure of `source` at `now_unix` and says what to do with it.
    pub fn fail(&self, source: IpAddr, now_unix: u64) -> Verdict {
        let limits = self.limits;
        self.with_minute(now_unix, |minute| {
            let tracked =
                minute.counts.len() < limits.sources || minute.counts.contains_key(&source);
            if !tracked {
                minute.untracked = minute.untracked.saturating_add(1);
                return Verdict::Count;
            }
            let count = minute.counts.entry(source).or_insert(0);
            *count = count.saturating_add(1);
            if *count > limits.throttle {
                Verdict::Throttle
            } else if *count > limits.recorded {
                Verdict::Count
            } else {
                Verdict::Record
            }
        })
    }

    /// Whether `source` is throttled at `now_unix`, and for how many more seconds.
    pub fn throttled(&self, source: IpAddr, now_unix: u64) -> Option<u64> {
        let limits = self.limits;
        self.with_minute(now_unix, |minute| {
            (minute.counts.get(&source).copied().unwrap_or(0) >= limits.throttle)
                .then(|| minute.start + 60 - now_unix)
        })
    }

    /// The aggregated records of minutes that ended by `now_unix`, each given out once.
    pub fn take_finished(&self, now_unix: u64) -> Vec<Aggregate> {
        let mut state = self.lock();
        self.rotate(&mut state, now_unix);
        std::mem::take(&mut state.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([203, 0, 113, last])
    }

    #[test]
    fn a_flood_is_recorded_a_few_times_then_counted_into_one_record() {
        let failures = AuthFailures::new(FailureLimits {
            recorded: 3,
            throttle: 5,
            sources: 100,
        });
        let t = 6_000;
        let verdicts: Vec<_> = (0..7).map(|i| failures.fail(ip(1), t + i)).collect();
        use Verdict::*;
        assert_eq!(
            verdicts,
            [Record, Record, Record, Count, Count, Throttle, Throttle]
        );
        assert_eq!(failures.throttled(ip(1), t + 10), Some(50));
        assert_eq!(failures.throttled(ip(2), t + 10), None);
        assert_eq!(failures.fail(ip(2), t + 10), Record, "sources are apart");
        assert!(
            failures.take_finished(t + 59).is_empty(),
            "the minute is not over"
        );
        assert_eq!(
            failures.take_finished(t + 60),
            [Aggregate {
                source: Some(ip(1)),
                minute_start: t,
                counted: 4
            }]
        );
        assert!(failures.take_finished(t + 61).is_empty(), "given out once");
        assert_eq!(
            failures.throttled(ip(1), t + 60),
            None,
            "a new minute, a new start"
        );
        assert_eq!(failures.fail(ip(1), t + 61), Record);
    }

    #[test]
    fn sources_beyond_the_bound_share_one_count() {
        let failures = AuthFailures::new(FailureLimits {
            recorded: 1,
            throttle: 100,
            sources: 2,
        });
        assert_eq!(failures.fail(ip(1), 0), Verdict::Record);
        assert_eq!(failures.fail(ip(2), 0), Verdict::Record);
        for last in 3..10 {
            assert_eq!(failures.fail(ip(last), 1), Verdict::Count);
        }
        assert_eq!(
            failures.take_finished(60),
            [Aggregate {
                source: None,
                minute_start: 0,
                counted: 7
            }]
        );
    }
}
