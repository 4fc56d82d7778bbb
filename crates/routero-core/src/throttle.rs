//! Failed authentications per source address and window (a minute by default). The first few
//! of a source in a window are recorded one by one; past that they are only counted, and each
//! such source gets one aggregated record when its window is over, so no one can flood the
//! audit log. A source past the limit is throttled until its window ends. A source is an
//! IPv4 address or an IPv6 /64 (one host may hold a whole /64), and sources beyond the
//! tracking bound share one count, throttled as one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// What to do with one failed authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Record it as its own event.
    Record,
    /// Only count it: it is part of its source's aggregated record for the window.
    Count,
    /// Count it, and throttle the source (429) until the window ends.
    Throttle,
}

/// A source's failures in a finished window, past what was recorded one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aggregate {
    /// The source; `None` for sources beyond the tracking bound, counted together.
    pub source: Option<IpAddr>,
    /// Unix second the window began.
    pub window_start: u64,
    /// Failures only counted, not recorded one by one.
    pub counted: u32,
}

/// Limits of [`AuthFailures`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureLimits {
    /// Failures of a source per window recorded one by one.
    pub recorded: u32,
    /// Failures of a source per window before it is throttled.
    pub throttle: u32,
    /// Sources tracked per window; the rest share one count.
    pub sources: usize,
    /// Length of a window in seconds (60).
    pub window_secs: u64,
}

impl Default for FailureLimits {
    /// 10 recorded, throttled past 60, 100,000 sources, windows of a minute.
    fn default() -> Self {
        Self {
            recorded: 10,
            throttle: 60,
            sources: 100_000,
            window_secs: 60,
        }
    }
}

#[derive(Debug, Default)]
struct Minute {
    start: u64,
    counts: HashMap<IpAddr, u32>,
    untracked: u32,
}

/// Failed authentications per source and window (see the module documentation).
#[derive(Debug)]
pub struct AuthFailures {
    limits: FailureLimits,
    state: Mutex<(Minute, Vec<Aggregate>)>,
}

impl AuthFailures {
    /// A tracker with these limits.
    pub fn new(limits: FailureLimits) -> Self {
        Self {
            limits: FailureLimits {
                window_secs: limits.window_secs.max(1),
                ..limits
            },
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
        let start = now_unix - now_unix % self.limits.window_secs;
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
                    window_start: ended.start,
                    counted: count - recorded,
                }),
        );
        if ended.untracked > 0 {
            finished.push(Aggregate {
                source: None,
                window_start: ended.start,
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
        let source = source_of(source);
        self.with_minute(now_unix, |minute| {
            let tracked =
                minute.counts.len() < limits.sources || minute.counts.contains_key(&source);
            if !tracked {
                minute.untracked = minute.untracked.saturating_add(1);
                return if minute.untracked > limits.throttle {
                    Verdict::Throttle
                } else {
                    Verdict::Count
                };
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

    /// The limits in force.
    pub fn limits(&self) -> FailureLimits {
        self.limits
    }

    /// Whether `source` is throttled at `now_unix`, and for how many more seconds.
    pub fn throttled(&self, source: IpAddr, now_unix: u64) -> Option<u64> {
        let limits = self.limits;
        let source = source_of(source);
        self.with_minute(now_unix, |minute| {
            (minute.counts.get(&source).copied().unwrap_or(0) >= limits.throttle)
                .then(|| minute.start + limits.window_secs - now_unix)
        })
    }

    /// The aggregated records of minutes that ended by `now_unix`, each given out once.
    pub fn take_finished(&self, now_unix: u64) -> Vec<Aggregate> {
        let mut state = self.lock();
        self.rotate(&mut state, now_unix);
        std::mem::take(&mut state.1)
    }

    /// Every aggregated record, the current window's too (at shutdown).
    pub fn take_all(&self) -> Vec<Aggregate> {
        let mut state = self.lock();
        let next = state.0.start.saturating_add(self.limits.window_secs);
        self.rotate(&mut state, next);
        std::mem::take(&mut state.1)
    }
}

/// The source a failure counts against: an IPv4 address (or one mapped into IPv6), or the
/// /64 an IPv6 address is in.
fn source_of(ip: IpAddr) -> IpAddr {
    match crate::canonical_ip(ip) {
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
        }
        v4 => v4,
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
            window_secs: 60,
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
                window_start: t,
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
        for _ in 0..4 {
            failures.fail(ip(1), t + 62);
        }
        assert_eq!(
            failures.take_all(),
            [Aggregate {
                source: Some(ip(1)),
                window_start: t + 60,
                counted: 2
            }],
            "at shutdown, the unfinished window too"
        );
    }

    #[test]
    fn an_ipv6_host_is_counted_by_its_64() {
        let failures = AuthFailures::new(FailureLimits {
            recorded: 2,
            throttle: 3,
            sources: 100,
            window_secs: 60,
        });
        let verdicts: Vec<_> = (1..=5u16)
            .map(|host| failures.fail(IpAddr::from([0x2001, 0xdb8, 1, 2, 0, 0, 0, host]), 0))
            .collect();
        use Verdict::*;
        assert_eq!(verdicts, [Record, Record, Count, Throttle, Throttle]);
        assert_eq!(
            failures.fail(IpAddr::from([0x2001, 0xdb8, 1, 3, 0, 0, 0, 1]), 0),
            Record,
            "another /64"
        );
    }

    #[test]
    fn sources_beyond_the_bound_share_one_count() {
        let failures = AuthFailures::new(FailureLimits {
            recorded: 1,
            throttle: 7,
            sources: 2,
            window_secs: 60,
        });
        assert_eq!(failures.fail(ip(1), 0), Verdict::Record);
        assert_eq!(failures.fail(ip(2), 0), Verdict::Record);
        for last in 3..10 {
            assert_eq!(failures.fail(ip(last), 1), Verdict::Count);
        }
        assert_eq!(
            failures.fail(ip(10), 1),
            Verdict::Throttle,
            "throttled as one"
        );
        assert_eq!(
            failures.take_finished(60),
            [Aggregate {
                source: None,
                window_start: 0,
                counted: 8
            }]
        );
    }
}
