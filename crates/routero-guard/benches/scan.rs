//! Throughput of every detector together with a policy acting on all of them, on clean text
//! and on text with a finding every ~200 bytes, at 1 KiB, 16 KiB and 256 KiB.
#![expect(clippy::unwrap_used, clippy::indexing_slicing)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use routero_guard::{Action, Category, Policy, Scanner, Selector};

const WORDS: &[&str] = &[
    "the",
    "quarterly",
    "report",
    "shows",
    "steady",
    "growth",
    "across",
    "regions",
    "while",
    "costs",
    "remain",
    "flat",
    "and",
    "the",
    "team",
    "plans",
    "another",
    "review",
    "next",
    "month",
    "with",
    "updated",
    "figures",
    "for",
    "each",
    "product",
    "line",
];
const VALUES: &[&str] = &[
    "jane.doe@example.com",
    "4242 4242 4242 4242",
    "123-45-6789",
    "10.20.30.40",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
    "(415) 555-2671",
];

/// `size` bytes of prose; with `dirty`, a value to find about every 200 bytes.
fn text(size: usize, dirty: bool) -> String {
    let mut out = String::with_capacity(size + 64);
    let mut i = 0usize;
    while out.len() < size {
        if dirty && out.len() / 200 > (out.len().saturating_sub(8)) / 200 {
            out.push_str(VALUES[i % VALUES.len()]);
            out.push(' ');
        }
        out.push_str(WORDS[i % WORDS.len()]);
        out.push(if i % 13 == 12 { '.' } else { ' ' });
        i += 1;
    }
    out.truncate(size);
    out
}

fn scan(c: &mut Criterion) {
    let scanner = Scanner::builtin().unwrap();
    let policy = Policy {
        rules: vec![
            (Selector::Category(Category::Secret), Action::Redact),
            (Selector::Category(Category::Pii), Action::Mask { keep: 4 }),
            (Selector::Category(Category::Jailbreak), Action::Log),
        ],
    };
    let mut group = c.benchmark_group("scan");
    for dirty in [false, true] {
        for size in [1024, 16 * 1024, 256 * 1024] {
            let input = text(size, dirty);
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_with_input(
                BenchmarkId::new(if dirty { "dirty" } else { "clean" }, size / 1024),
                &input,
                |b, input| {
                    b.iter(|| policy.apply(&scanner, b"key", input));
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, scan);
criterion_main!(benches);
