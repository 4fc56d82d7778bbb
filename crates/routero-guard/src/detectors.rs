//! The built-in detectors: a pattern that finds candidates and a rule that confirms them.

use std::net::{Ipv4Addr, Ipv6Addr};

use base64::Engine as _;

/// What a detector looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// Personal data.
    Pii,
    /// Credentials and keys.
    Secret,
    /// Prompt injection and jailbreak attempts (scored).
    Jailbreak,
    /// A tenant's own rule.
    Custom,
}

/// How a candidate is confirmed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Confirm {
    /// The pattern is specific enough.
    Pattern,
    /// 13-19 digits of a known brand that pass the Luhn check.
    Card,
    /// Not a never-issued area, group or serial.
    Ssn,
    /// Four octets of at most 255, not part of a longer dotted version string.
    Ipv4,
    /// Parses as an IPv6 address with at least three groups written.
    Ipv6,
    /// A national number whose area code and exchange do not start with 0 or 1.
    Phone,
    /// A JWT whose header decodes to JSON naming an algorithm.
    Jwt,
    /// At least this many bits of entropy per character.
    Entropy(f64),
}

/// A built-in detector's definition.
pub(crate) struct Builtin {
    pub name: &'static str,
    pub category: Category,
    pub pattern: &'static str,
    /// Capture group whose span is the finding (0: the whole match).
    pub group: usize,
    pub confirm: Confirm,
    /// Jailbreak score contributed by a match.
    pub weight: f32,
}

const fn rule(
    name: &'static str,
    category: Category,
    pattern: &'static str,
    confirm: Confirm,
) -> Builtin {
    Builtin {
        name,
        category,
        pattern,
        group: 0,
        confirm,
        weight: 0.0,
    }
}

const fn scored(name: &'static str, pattern: &'static str, weight: f32) -> Builtin {
    Builtin {
        name,
        category: Category::Jailbreak,
        pattern,
        group: 0,
        confirm: Confirm::Pattern,
        weight,
    }
}

/// Every built-in detector. Order matters only for ties between overlapping findings.
pub(crate) const BUILTINS: &[Builtin] = &[
    // --- secrets (before PII, so that a key is named as a key) ---
    rule(
        "pem_private_key",
        Category::Secret,
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----)?",
        Confirm::Pattern,
    ),
    rule(
        "anthropic_key",
        Category::Secret,
        r"\bsk-ant-[a-z]+\d{2}-[A-Za-z0-9_-]{32,}",
        Confirm::Pattern,
    ),
    rule(
        "openai_key",
        Category::Secret,
        r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}",
        Confirm::Entropy(3.0),
    ),
    rule(
        "aws_access_key_id",
        Category::Secret,
        r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b",
        Confirm::Pattern,
    ),
    Builtin {
        name: "aws_secret_key",
        category: Category::Secret,
        pattern: r#"(?i)aws.{0,20}?(?:secret|sk)[a-z_]{0,20}\s*[:=]\s*["']?([A-Za-z0-9/+]{40})\b"#,
        group: 1,
        confirm: Confirm::Entropy(3.5),
        weight: 0.0,
    },
    rule(
        "github_token",
        Category::Secret,
        r"\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{60,})\b",
        Confirm::Pattern,
    ),
    rule(
        "slack_token",
        Category::Secret,
        r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
        Confirm::Pattern,
    ),
    rule(
        "google_api_key",
        Category::Secret,
        r"\bAIza[0-9A-Za-z_-]{35}",
        Confirm::Pattern,
    ),
    rule(
        "stripe_key",
        Category::Secret,
        r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{24,}",
        Confirm::Pattern,
    ),
    rule(
        "jwt",
        Category::Secret,
        r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}",
        Confirm::Jwt,
    ),
    Builtin {
        name: "generic_secret",
        category: Category::Secret,
        pattern: r#"(?i)\b(?:api[_-]?key|secret(?:[_-]?key)?|token|access[_-]?key|auth[_-]?token|password|passwd|pwd)\b["']?\s*[:=]\s*["']?([A-Za-z0-9_\-+/=.]{16,})"#,
        group: 1,
        confirm: Confirm::Entropy(3.5),
        weight: 0.0,
    },
    // --- PII ---
    rule(
        "email",
        Category::Pii,
        r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b",
        Confirm::Pattern,
    ),
    rule(
        "card_number",
        Category::Pii,
        r"\b\d(?:[ -]?\d){12,18}\b",
        Confirm::Card,
    ),
    rule(
        "us_ssn",
        Category::Pii,
        r"\b\d{3}-\d{2}-\d{4}\b",
        Confirm::Ssn,
    ),
    rule(
        "phone_e164",
        Category::Pii,
        r"\+[1-9]\d{7,14}\b",
        Confirm::Pattern,
    ),
    rule(
        "phone_national",
        Category::Pii,
        r"(?:\+1[ .-]?)?(?:\(\d{3}\)\s?|\b\d{3}[-. ])\d{3}[-. ]\d{4}\b",
        Confirm::Phone,
    ),
    rule(
        "ipv4",
        Category::Pii,
        r"\b(?:\d{1,3}\.){3}\d{1,3}\b",
        Confirm::Ipv4,
    ),
    rule(
        "ipv6",
        Category::Pii,
        r"(?i)(?:\b[0-9a-f]{1,4}|::)(?::{1,2}[0-9a-f]{1,4}){2,7}(?:::)?",
        Confirm::Ipv6,
    ),
    // --- jailbreak and prompt injection: scored ---
    scored(
        "instruction_hijacking",
        r"(?i)\b(?:ignore|disregard|forget|override|bypass)\b[^.\n]{0,40}?\b(?:previous|prior|above|earlier|preceding|all|your|the)\b[^.\n]{0,40}?\b(?:instructions?|rules|prompts?|directions|guidelines|guardrails)\b",
        0.7,
    ),
    scored(
        "role_confusion",
        r"(?i)\b(?:you are now|you're now|from now on,? you are|pretend (?:to be|you are)|act as (?:an? )?(?:unrestricted|unfiltered|uncensored|jailbroken)|developer mode|do anything now)\b",
        0.4,
    ),
    scored(
        "context_smuggling",
        r"(?i)\b(?:reveal|print|show|repeat|output|leak|tell me)\b[^.\n]{0,40}?\b(?:system prompt|hidden (?:prompt|instructions)|initial instructions|your instructions)\b",
        0.5,
    ),
    scored(
        "delimiter_injection",
        r"(?i)(?:<\|im_start\|>|<\|im_end\|>|<\|(?:system|assistant)\|>|\[/?INST\]|<</?SYS>>|^\s*#{2,}\s*(?:system|instructions?)\s*:)",
        0.5,
    ),
    scored(
        "restriction_removal",
        r"(?i)\b(?:no|without any|free of)\s+(?:restrictions|limitations|filters|rules|guidelines|censorship)\b",
        0.3,
    ),
];

/// Luhn check over the digits of `text`.
fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(*d);
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn card(text: &str) -> bool {
    let digits: Vec<u8> = text
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    let prefix = |n: usize| {
        digits
            .iter()
            .take(n)
            .fold(0u32, |acc, d| acc * 10 + u32::from(*d))
    };
    let brand = match digits.first() {
        Some(4) => matches!(digits.len(), 13 | 16 | 19),
        Some(5) => (51..=55).contains(&prefix(2)) && digits.len() == 16,
        Some(2) => (2221..=2720).contains(&prefix(4)) && digits.len() == 16,
        Some(3) => {
            (matches!(prefix(2), 34 | 37) && digits.len() == 15)
                || ((3528..=3589).contains(&prefix(4)) && digits.len() == 16)
                || ((matches!(prefix(2), 36 | 38) || (300..=305).contains(&prefix(3)))
                    && digits.len() == 14)
        }
        Some(6) => {
            (prefix(4) == 6011 || prefix(2) == 65 || (644..=649).contains(&prefix(3)))
                && digits.len() == 16
        }
        _ => false,
    };
    // Separators, if any, must be of one kind (4242 4242 4242 4242, not 4242-4242 4242-4242).
    let separators: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_digit()).collect();
    let consistent = separators.windows(2).all(|w| w.first() == w.last());
    brand && consistent && luhn(&digits)
}

fn ssn(text: &str) -> bool {
    let mut parts = text.split('-');
    let (Some(area), Some(group), Some(serial)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let area: u32 = area.parse().unwrap_or(0);
    area != 0 && area != 666 && area < 900 && group != "00" && serial != "0000"
}

fn ipv4(text: &str, before: Option<char>, after: &str) -> bool {
    // v1.2.3.4, 10.0.19041.1.2: part of a longer dotted version, not an address.
    let version_like = before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '.')
        || after
            .strip_prefix('.')
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
    !version_like && text.parse::<Ipv4Addr>().is_ok()
}

fn ipv6(text: &str) -> bool {
    text.split(':').filter(|g| !g.is_empty()).count() >= 3 && text.parse::<Ipv6Addr>().is_ok()
}

fn phone(text: &str) -> bool {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_digit).collect();
    let national = match (digits.len(), digits.split_first()) {
        (10, _) => digits.as_slice(),
        (11, Some((b'1', rest))) => rest,
        _ => return false,
    };
    national.first().is_some_and(|d| *d >= b'2') && national.get(3).is_some_and(|d| *d >= b'2')
}

fn jwt(text: &str) -> bool {
    let header = text.split('.').next().unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|json| json.get("alg").is_some())
}

/// Shannon entropy in bits per character.
pub(crate) fn entropy(text: &str) -> f64 {
    let mut counts = [0u32; 256];
    for byte in text.bytes() {
        if let Some(count) = counts.get_mut(usize::from(byte)) {
            *count += 1;
        }
    }
    let len = text.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / len;
            -p * p.log2()
        })
        .sum()
}

impl Confirm {
    /// Whether the candidate `text` (with its neighbourhood) is a real finding.
    pub(crate) fn holds(self, text: &str, before: Option<char>, after: &str) -> bool {
        match self {
            Self::Pattern => true,
            Self::Card => card(text),
            Self::Ssn => ssn(text),
            Self::Ipv4 => ipv4(text, before, after),
            Self::Ipv6 => ipv6(text),
            Self::Phone => phone(text),
            Self::Jwt => jwt(text),
            Self::Entropy(bits) => entropy(text) >= bits,
        }
    }
}
