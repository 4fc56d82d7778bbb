//! Streaming: text arrives in chunks (SSE deltas) and is released with a bounded hold-back,
//! so that a value split across chunks is still found before any of it reaches the client.
//!
//! Each push scans what is held plus the new chunk (after up to `hold` bytes of what was
//! already released, as context: a `token=` before a value, a word boundary) and releases
//! everything up to `hold` bytes before the end, moved back to the start of any finding that
//! crosses that point. While no finding and its context are longer than `hold`, the released
//! text is exactly what [`Policy::apply`] makes of the whole text.

use std::collections::BTreeMap;

use crate::action::{Action, Applied, Policy};
use crate::scanner::{Finding, Scanner};

/// What a push or the end of the stream releases.
#[derive(Debug, PartialEq, Eq)]
pub enum Released {
    /// Text safe to send.
    Text(String),
    /// A `block` rule fired: send `text` (what came before), then end the stream with an error.
    Blocked {
        /// The detector that blocked.
        detector: String,
        /// Text before the blocked finding, already processed.
        text: String,
    },
}

/// A stream of text going through a policy.
#[derive(Debug)]
pub struct StreamScanner<'a> {
    scanner: &'a Scanner,
    policy: &'a Policy,
    hash_key: &'a [u8],
    hold: usize,
    /// The tail of what was released, as it was before any rewriting: context for matching.
    context: String,
    held: String,
    counts: BTreeMap<(String, &'static str), u32>,
    /// A block fired: the stream is over and nothing more is released.
    ended: bool,
}

impl<'a> StreamScanner<'a> {
    /// Holds back up to `hold` bytes (longer than any value to be caught, e.g. 1024).
    pub fn new(scanner: &'a Scanner, policy: &'a Policy, hash_key: &'a [u8], hold: usize) -> Self {
        Self {
            scanner,
            policy,
            hash_key,
            hold,
            context: String::new(),
            held: String::new(),
            counts: BTreeMap::new(),
            ended: false,
        }
    }

    /// Takes a chunk; returns what may be sent now. After [`Released::Blocked`] the stream is
    /// over and nothing more is released.
    pub fn push(&mut self, chunk: &str) -> Released {
        if self.ended {
            return Released::Text(String::new());
        }
        self.held.push_str(chunk);
        if self.held.len() <= self.hold {
            return Released::Text(String::new());
        }
        let findings = self.findings();
        let mut cut = self.held.len() - self.hold;
        while !self.held.is_char_boundary(cut) {
            cut -= 1;
        }
        if let Some(crossing) = findings.iter().find(|f| f.start < cut && f.end > cut) {
            cut = crossing.start;
        }
        let before: Vec<Finding> = findings.into_iter().filter(|f| f.end <= cut).collect();
        self.release(cut, &before)
    }

    /// The end of the stream: releases what is held.
    pub fn finish(&mut self) -> Released {
        if self.ended {
            return Released::Text(String::new());
        }
        let findings = self.findings();
        self.release(self.held.len(), &findings)
    }

    /// Findings in what is held, seen with the context before it.
    fn findings(&self) -> Vec<Finding> {
        let offset = self.context.len();
        let mut text = String::with_capacity(offset + self.held.len());
        text.push_str(&self.context);
        text.push_str(&self.held);
        self.scanner
            .scan(&text)
            .into_iter()
            .filter(|f| f.start >= offset)
            .map(|f| Finding {
                start: f.start - offset,
                end: f.end - offset,
                ..f
            })
            .collect()
    }

    /// Counts of (detector, action) so far, for the audit event.
    pub fn counts(&self) -> &BTreeMap<(String, &'static str), u32> {
        &self.counts
    }

    fn release(&mut self, cut: usize, findings: &[Finding]) -> Released {
        // Nothing of a blocked value, nor anything after it, is released.
        let blocking = findings
            .iter()
            .position(|f| self.policy.action_of(self.scanner, f) == Some(Action::Block));
        let (cut, findings, blocked_by) = match blocking.and_then(|i| Some((i, findings.get(i)?))) {
            Some((index, blocking)) => (
                blocking.start,
                findings.get(..index).unwrap_or_default(),
                self.scanner
                    .detector(blocking.detector)
                    .map(|d| d.name.clone()),
            ),
            None => (cut, findings, None),
        };
        let Applied { text, counts, .. } = self.policy.apply_findings(
            self.scanner,
            self.hash_key,
            self.held.get(..cut).unwrap_or_default(),
            findings,
        );
        let text = text.into_owned();
        for (key, count) in counts {
            *self.counts.entry(key).or_default() += count;
        }
        if let Some(detector) = &blocked_by {
            *self.counts.entry((detector.clone(), "block")).or_default() += 1;
        }
        self.context.extend(self.held.drain(..cut));
        let mut excess = self.context.len().saturating_sub(self.hold);
        while !self.context.is_char_boundary(excess) {
            excess += 1;
        }
        self.context.drain(..excess);
        self.ended = blocked_by.is_some();
        match blocked_by {
            Some(detector) => Released::Blocked { detector, text },
            None => Released::Text(text),
        }
    }
}
