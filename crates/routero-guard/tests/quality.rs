//! The detectors meet the project's quality goals on its labelled corpus: at least 0.95 recall
//! for every kind of personal data and secret, 0.90 for jailbreaks, and at most 3% false alarms
//! on look-alikes. `make bench` prints the same figures.
#![expect(clippy::panic)]

mod common;

use common::quality::{corpus, measure, rate};
use common::scanner;

#[test]
fn the_corpus_meets_the_goals() {
    let cases = corpus();
    assert!(cases.len() >= 300, "{} cases", cases.len());
    let (tally, missed) = measure(scanner(), &cases);
    println!("{tally:?}\n{}", missed.join("\n"));
    let mut short = Vec::new();
    for kind in ["card", "email", "ip", "phone", "secret", "ssn"] {
        if rate(&tally, kind) < 0.95 {
            short.push(format!("{kind} {:.3}", rate(&tally, kind)));
        }
    }
    if rate(&tally, "jailbreak") < 0.90 {
        short.push(format!("jailbreak {:.3}", rate(&tally, "jailbreak")));
    }
    if 1.0 - rate(&tally, "benign") > 0.03 {
        short.push(format!("false alarms {:.3}", 1.0 - rate(&tally, "benign")));
    }
    assert!(
        short.is_empty(),
        "below the goals: {short:?}\n{tally:?}\n{}",
        missed.join("\n")
    );
}
