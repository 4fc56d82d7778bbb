//! One scanner for every detector: a `RegexSet` pass decides which detectors can match at
//! all (clean text costs that one pass and no allocation), then only those run to find
//! spans, which their confirmation rules check.

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use crate::GuardError;
use crate::detectors::{BUILTINS, Category, Confirm};
use crate::normalise::Normalised;

/// Largest compiled size of a custom rule's regex.
const CUSTOM_SIZE_LIMIT: usize = 1 << 20;
/// Longest custom regex or keyword, in bytes.
const CUSTOM_MAX_LEN: usize = 1024;

/// A detector of the scanner.
#[derive(Debug)]
pub struct Detector {
    /// Name (`email`, `card_number`, or a custom rule's name).
    pub name: String,
    /// What it detects.
    pub category: Category,
    regex: Regex,
    group: usize,
    confirm: Confirm,
    weight: f32,
}

/// A span of the text that a detector confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    /// Index of the detector in the scanner.
    pub detector: usize,
    /// Byte offset of the start.
    pub start: usize,
    /// Byte offset just past the end.
    pub end: usize,
}

/// A tenant's own rule: a regex, or a list of keywords matched as whole words, ignoring case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomRule {
    /// A regular expression.
    Regex {
        /// Rule name, shown in findings and audit events.
        name: String,
        /// The pattern.
        pattern: String,
    },
    /// Keywords.
    Keywords {
        /// Rule name.
        name: String,
        /// The words.
        words: Vec<String>,
    },
}

/// Every detector, ready to scan.
#[derive(Debug)]
pub struct Scanner {
    set: RegexSet,
    detectors: Vec<Detector>,
    jailbreak_threshold: f32,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl CustomRule {
    /// Validates and compiles the rule; a pattern that does not compile, is too long or would
    /// compile too large is refused with the reason.
    fn compile(&self) -> Result<Detector, GuardError> {
        let (name, pattern) = match self {
            Self::Regex { name, pattern } => (name, pattern.clone()),
            Self::Keywords { name, words } => {
                if words.is_empty() || words.iter().any(|w| w.trim().is_empty()) {
                    return Err(GuardError::InvalidRule {
                        name: name.clone(),
                        reason: "keywords must be non-empty".into(),
                    });
                }
                let alternatives: Vec<String> =
                    words.iter().map(|w| regex::escape(w.trim())).collect();
                (name, format!(r"(?i)\b(?:{})\b", alternatives.join("|")))
            }
        };
        let invalid = |reason: String| GuardError::InvalidRule {
            name: name.clone(),
            reason,
        };
        if !valid_name(name) {
            return Err(invalid(
                "names are 1-64 characters of a-z, 0-9 and _".into(),
            ));
        }
        if pattern.len() > CUSTOM_MAX_LEN {
            return Err(invalid(format!("longer than {CUSTOM_MAX_LEN} bytes")));
        }
        let regex = RegexBuilder::new(&pattern)
            .size_limit(CUSTOM_SIZE_LIMIT)
            .dfa_size_limit(CUSTOM_SIZE_LIMIT)
            .nest_limit(32)
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        if regex.is_match("") {
            return Err(invalid("matches the empty string".into()));
        }
        Ok(Detector {
            name: name.clone(),
            category: Category::Custom,
            regex,
            group: 0,
            confirm: Confirm::Pattern,
            weight: 0.0,
        })
    }
}

impl Scanner {
    /// The built-in detectors, jailbreak threshold 0.7.
    pub fn builtin() -> Result<Self, GuardError> {
        Self::new(&[], 0.7)
    }

    /// The built-in detectors and `custom` rules; jailbreak findings count once their scores
    /// add up to `jailbreak_threshold`.
    pub fn new(custom: &[CustomRule], jailbreak_threshold: f32) -> Result<Self, GuardError> {
        let mut detectors = Vec::with_capacity(BUILTINS.len() + custom.len());
        for builtin in BUILTINS {
            detectors.push(Detector {
                name: builtin.name.to_owned(),
                category: builtin.category,
                regex: Regex::new(builtin.pattern)
                    .map_err(|e| GuardError::Builtin(e.to_string()))?,
                group: builtin.group,
                confirm: builtin.confirm,
                weight: builtin.weight,
            });
        }
        for rule in custom {
            let detector = rule.compile()?;
            if detectors.iter().any(|d| d.name == detector.name) {
                return Err(GuardError::InvalidRule {
                    name: detector.name,
                    reason: "a detector of that name exists".into(),
                });
            }
            detectors.push(detector);
        }
        let set = RegexSetBuilder::new(detectors.iter().map(|d| d.regex.as_str()))
            .size_limit(64 << 20)
            .build()
            .map_err(|e| GuardError::Builtin(e.to_string()))?;
        Ok(Self {
            set,
            detectors,
            jailbreak_threshold,
        })
    }

    /// Whether a detector of this name exists.
    pub fn has_detector(&self, name: &str) -> bool {
        self.detectors.iter().any(|d| d.name == name)
    }

    /// The detector a finding names.
    pub fn detector(&self, index: usize) -> Option<&Detector> {
        self.detectors.get(index)
    }

    /// Confirmed findings in `text` as the detectors read it (see the `normalise` module),
    /// with spans in `text` itself, ordered by start, without overlaps (a secret wins over
    /// what it overlaps, then the earlier, then the longer finding). No allocation for clean
    /// ASCII text.
    pub fn scan(&self, text: &str) -> Vec<Finding> {
        let mut raw = self.raw(text);
        if raw.score >= self.jailbreak_threshold {
            raw.findings.append(&mut raw.jailbreak);
        }
        self.without_overlaps(raw.findings)
    }

    /// Findings in the texts of one request, one list per text: each text's own; values split
    /// across neighbouring texts (a piece in each); and jailbreak phrases scored over all the
    /// texts `scored` selects together (a conversation's user and tool text), the others'
    /// scored one by one.
    pub fn scan_all(&self, texts: &[&str], scored: &[bool]) -> Vec<Vec<Finding>> {
        let is_scored = |i: usize| scored.get(i).copied().unwrap_or(false);
        let mut found: Vec<Vec<Finding>> = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            let mut raw = self.raw(text);
            if !is_scored(i) && raw.score >= self.jailbreak_threshold {
                raw.findings.append(&mut raw.jailbreak);
            }
            found.push(raw.findings);
        }
        if texts.len() > 1 {
            // Values split across texts: findings in the texts end to end that cross a seam
            // and are not merely a text's own finding read on into its neighbour.
            let joined = Joined::of(texts.iter().copied().enumerate(), "");
            for finding in self.raw(&joined.text).findings {
                if joined.crosses_a_seam(&finding) && !joined.overlaps_any(&finding, &found) {
                    joined.split(finding, &mut found);
                }
            }
        }
        // Jailbreaks scored over the conversation (read with a space between texts).
        let conversation = Joined::of(
            texts
                .iter()
                .copied()
                .enumerate()
                .filter(|(i, _)| is_scored(*i)),
            " ",
        );
        if !conversation.text.is_empty() {
            let raw = self.raw(&conversation.text);
            if raw.score >= self.jailbreak_threshold {
                for finding in raw.jailbreak {
                    conversation.split(finding, &mut found);
                }
            }
        }
        found
            .into_iter()
            .map(|findings| self.without_overlaps(findings))
            .collect()
    }

    /// Every confirmed finding in `text`, mapped to its spans, jailbreak phrases apart.
    fn raw(&self, text: &str) -> Raw {
        let normalised = Normalised::of(text);
        let mut raw = self.raw_read(normalised.text());
        for finding in raw.findings.iter_mut().chain(raw.jailbreak.iter_mut()) {
            (finding.start, finding.end) = normalised.original(finding.start, finding.end);
        }
        raw
    }

    /// [`Scanner::raw`] of a text already normalised.
    fn raw_read(&self, text: &str) -> Raw {
        let mut raw = Raw::default();
        if !self.set.is_match(text) {
            return raw;
        }
        for index in self.set.matches(text).iter() {
            let Some(detector) = self.detectors.get(index) else {
                continue;
            };
            for captures in detector.regex.captures_iter(text) {
                let Some(span) = captures.get(detector.group) else {
                    continue;
                };
                // A match's offsets are character boundaries.
                let head = text.get(..span.start()).unwrap_or_default();
                let after = text.get(span.end()..).unwrap_or_default();
                if !detector.confirm.holds(span.as_str(), head, after) {
                    continue;
                }
                let finding = Finding {
                    detector: index,
                    start: span.start(),
                    end: span.end(),
                };
                if detector.category == Category::Jailbreak {
                    raw.score += detector.weight;
                    raw.jailbreak.push(finding);
                } else {
                    raw.findings.push(finding);
                }
            }
        }
        raw
    }

    /// `findings` ordered by start, without overlaps: secrets first (a token in a URL is a
    /// secret, not an email), then the earlier, then the longer.
    fn without_overlaps(&self, mut findings: Vec<Finding>) -> Vec<Finding> {
        if findings.len() < 2 {
            return findings;
        }
        let rank = |f: &Finding| {
            self.detector(f.detector)
                .map_or(1, |d| u8::from(d.category != Category::Secret))
        };
        findings.sort_by_key(|f| (rank(f), f.start, std::cmp::Reverse(f.end), f.detector));
        let mut kept: Vec<Finding> = Vec::with_capacity(findings.len());
        for finding in findings {
            let at = kept.partition_point(|k| k.start < finding.start);
            let clear_before = at
                .checked_sub(1)
                .and_then(|i| kept.get(i))
                .is_none_or(|k| k.end <= finding.start);
            let clear_after = kept.get(at).is_none_or(|k| k.start >= finding.end);
            if clear_before && clear_after {
                kept.insert(at, finding);
            }
        }
        kept
    }
}

/// Findings of one scan, jailbreak phrases apart with their score.
#[derive(Debug, Default)]
struct Raw {
    findings: Vec<Finding>,
    jailbreak: Vec<Finding>,
    score: f32,
}

/// Several texts end to end, and where each starts.
struct Joined {
    text: String,
    /// (index of the text, its start in `text`, its length), in order.
    spans: Vec<(usize, usize, usize)>,
}

impl Joined {
    fn of<'t>(texts: impl Iterator<Item = (usize, &'t str)>, separator: &str) -> Self {
        let mut joined = Self {
            text: String::new(),
            spans: Vec::new(),
        };
        for (index, text) in texts {
            if !joined.spans.is_empty() {
                joined.text.push_str(separator);
            }
            joined.spans.push((index, joined.text.len(), text.len()));
            joined.text.push_str(text);
        }
        joined
    }

    /// Whether `finding` starts in one text and ends in another.
    fn crosses_a_seam(&self, finding: &Finding) -> bool {
        self.spans
            .iter()
            .any(|(_, start, _)| finding.start < *start && *start < finding.end)
    }

    /// Whether `finding` overlaps any of the texts' own findings (`found`, one list a text).
    fn overlaps_any(&self, finding: &Finding, found: &[Vec<Finding>]) -> bool {
        self.spans.iter().any(|(index, start, _)| {
            found.get(*index).is_some_and(|own| {
                own.iter()
                    .any(|f| start + f.start < finding.end && finding.start < start + f.end)
            })
        })
    }

    /// Adds the pieces of `finding` that lie in each text to that text's findings.
    fn split(&self, finding: Finding, found: &mut [Vec<Finding>]) {
        for (index, start, len) in &self.spans {
            let from = finding.start.max(*start);
            let to = finding.end.min(start + len);
            if from < to
                && let Some(list) = found.get_mut(*index)
            {
                list.push(Finding {
                    start: from - start,
                    end: to - start,
                    ..finding
                });
            }
        }
    }
}
