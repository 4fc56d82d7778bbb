//! The streaming scanner against the whole-text one, for any split into chunks.
#![expect(clippy::panic, clippy::string_slice, clippy::indexing_slicing)]

use std::collections::BTreeMap;

use proptest::prelude::*;
mod common;

use common::{policy, scanner};
use routero_guard::{Action, Category, Policy, Released, Scanner, StreamScanner};

const HOLD: usize = 64;
const KEY: &[u8] = b"tenant-key";
const AWS_ID: &str = "AKIAIOSFODNN7EXAMPLE";

/// Pieces a text is made of: values of several detectors and filler, some not ASCII, each
/// starting with a separator so that no two values run into one (a card after a space would
/// continue the digits of a card before it).
const PIECES: &[&str] = &[
    " alice@example.com",
    "; 4242 4242 4242 4242",
    " 123-45-6789",
    " 192.168.1.20",
    " AKIAIOSFODNN7EXAMPLE",
    " token=Zx8QpL2mV7nR4tY9wK3s",
    " hello",
    " world",
    " café",
    " 💳",
    ", ",
    ".",
    "\n",
    " 42",
];

fn rewriting() -> Policy {
    policy(Action::Redact)
}

fn blocking() -> Policy {
    policy(Action::Block)
}

/// Splits `text` at the given fractions (moved to character boundaries).
fn chunks(text: &str, cuts: &[usize]) -> Vec<String> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| {
            let mut at = c % (text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            at
        })
        .collect();
    points.push(0);
    points.push(text.len());
    points.sort_unstable();
    points.dedup();
    points
        .windows(2)
        .map(|w| text[w[0]..w[1]].to_owned())
        .collect()
}

/// What streaming released: the text, the blocking detector if any, and the finding counts.
struct Streamed {
    text: String,
    blocked: Option<String>,
    counts: BTreeMap<(String, &'static str), u32>,
}

/// Streams the chunks through a policy.
fn stream(scanner: &Scanner, policy: &Policy, parts: &[String]) -> Streamed {
    let mut streamer = StreamScanner::new(scanner, policy, KEY, HOLD);
    let mut out = String::new();
    let mut blocked = None;
    let mut released: Vec<Released> = parts.iter().map(|p| streamer.push(p)).collect();
    released.push(streamer.finish());
    for piece in released {
        match piece {
            Released::Text(text) => out.push_str(&text),
            Released::Blocked { detector, text } => {
                out.push_str(&text);
                blocked.get_or_insert(detector);
            }
        }
    }
    Streamed {
        text: out,
        blocked,
        counts: streamer.counts().clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_split_releases_what_the_whole_text_gives(
        pieces in prop::collection::vec(prop::sample::select(PIECES), 0..40),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let scanner = scanner();
        let text: String = pieces.concat();
        let policy = rewriting();
        let whole = policy.apply(scanner, KEY, &text);
        let streamed = stream(scanner, &policy, &chunks(&text, &cuts));
        prop_assert_eq!(streamed.blocked, None);
        prop_assert_eq!(streamed.text.as_str(), whole.text.as_ref());
        prop_assert_eq!(&streamed.counts, &whole.counts, "the audit counts agree too");
        prop_assert!(!streamed.text.contains(AWS_ID) && !streamed.text.contains("alice@"));
    }

    #[test]
    fn text_without_findings_is_held_back_at_most_the_hold(
        pieces in prop::collection::vec(prop::sample::select(&PIECES[6..]), 0..60),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let scanner = scanner();
        let text: String = pieces.concat();
        prop_assume!(scanner.scan(&text).is_empty());
        let policy = rewriting();
        let mut streamer = StreamScanner::new(scanner, &policy, KEY, HOLD);
        let (mut pushed, mut released) = (0, String::new());
        for part in chunks(&text, &cuts) {
            pushed += part.len();
            match streamer.push(&part) {
                Released::Text(out) => released.push_str(&out),
                Released::Blocked { .. } => prop_assert!(false, "nothing to block"),
            }
            // Whatever is more than `hold` bytes old (to a character boundary) is out.
            prop_assert!(pushed - released.len() < HOLD + 4, "{} of {} bytes held", pushed - released.len(), pushed);
            prop_assert!(text.starts_with(&released));
        }
        if let Released::Text(out) = streamer.finish() {
            released.push_str(&out);
        }
        prop_assert_eq!(released, text);
    }

    #[test]
    fn a_block_releases_nothing_of_the_value_nor_after_it(
        pieces in prop::collection::vec(prop::sample::select(PIECES), 0..40),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let scanner = scanner();
        let text: String = pieces.concat();
        let policy = blocking();
        let streamed = stream(scanner, &policy, &chunks(&text, &cuts));
        let first_secret = scanner
            .scan(&text)
            .into_iter()
            .find(|f| scanner.detector(f.detector).unwrap().category == Category::Secret);
        match first_secret {
            Some(finding) => {
                prop_assert_eq!(streamed.blocked.as_deref(), scanner.detector(finding.detector).map(|d| d.name.as_str()));
                let before = policy.apply(scanner, KEY, &text[..finding.start]).text.into_owned();
                prop_assert_eq!(&streamed.text, &before);
            }
            None => prop_assert_eq!(streamed.blocked, None),
        }
    }
}
