//! Shared by the guard's test files.
#![expect(dead_code, clippy::unwrap_used)]

use std::sync::OnceLock;

use routero_guard::{Action, Category, Policy, Scanner, Selector};

/// The built-in scanner, built once.
pub fn scanner() -> &'static Scanner {
    static SCANNER: OnceLock<Scanner> = OnceLock::new();
    SCANNER.get_or_init(|| Scanner::builtin().unwrap())
}

/// Emails redacted, cards masked, SSNs hashed, IPv4 addresses logged, secrets given `secrets`.
pub fn policy(secrets: Action) -> Policy {
    Policy {
        rules: vec![
            (Selector::Detector("email".into()), Action::Redact),
            (
                Selector::Detector("card_number".into()),
                Action::Mask { keep: 4 },
            ),
            (Selector::Detector("us_ssn".into()), Action::Hash),
            (Selector::Detector("ipv4".into()), Action::Log),
            (Selector::Category(Category::Secret), secrets),
        ],
    }
}
pub mod quality;
