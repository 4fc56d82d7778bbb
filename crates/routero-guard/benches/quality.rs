//! Detection quality on the labelled corpus (`corpus/cases.jsonl`): recall per kind of value
//! and for jailbreaks, and the false-alarm rate on look-alikes, as a markdown table for
//! `bench/README.md` (`make bench` writes it there).
#![expect(clippy::unwrap_used, clippy::panic, clippy::print_stdout)]

#[path = "../tests/common/quality.rs"]
mod quality;

use routero_guard::Scanner;

fn main() {
    let cases = quality::corpus();
    let (tally, _) = quality::measure(&Scanner::builtin().unwrap(), &cases);
    println!("| kind | cases | measure |");
    println!("|---|---|---|");
    for (kind, (caught, all)) in &tally {
        let measure = if kind == "benign" {
            format!(
                "false alarms {:.1}%",
                100.0 * (1.0 - quality::rate(&tally, kind))
            )
        } else {
            format!(
                "recall {:.2} ({caught} of {all})",
                quality::rate(&tally, kind)
            )
        };
        println!("| {kind} | {all} | {measure} |");
    }
}
