use std::time::Duration;

use crate::CoreError;

/// Longest duration a key may be given: ten years.
const MAX_SECONDS: u64 = 10 * 365 * 86_400;

/// Parses a key lifetime such as `15m`, `12h` or `30d` (also `45s`).
///
/// Strict on purpose: no spaces, no fractions, no zero, no compound forms, at most ten years.
pub fn parse_duration(text: &str) -> Result<Duration, CoreError> {
    let invalid = || CoreError::InvalidDuration(text.chars().take(64).collect());
    // The unit is the last character, whatever its width (a byte index could fall inside it).
    let mut chars = text.chars();
    let unit = chars.next_back().ok_or_else(invalid)?;
    let digits = chars.as_str();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let count: u64 = digits.parse().map_err(|_| invalid())?;
    let unit_seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return Err(invalid()),
    };
    let seconds = count.checked_mul(unit_seconds).ok_or_else(invalid)?;
    if seconds == 0 || seconds > MAX_SECONDS {
        return Err(invalid());
    }
    Ok(Duration::from_secs(seconds))
}

/// Formats whole seconds back into the largest exact unit (`86400` → `1d`).
pub fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if seconds.is_multiple_of(size) && seconds >= size {
            return format!("{}{unit}", seconds / size);
        }
    }
    format!("{seconds}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(2_592_000)));
    }

    #[test]
    fn a_multibyte_last_character_is_refused_not_a_panic() {
        for text in ["5é", "é", "5€", "12h\u{1F600}", "\u{1F600}"] {
            assert!(parse_duration(text).is_err(), "{text}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_or_is_refused(text in "\\PC{0,24}") {
            let _ = parse_duration(&text);
        }

        #[test]
        fn valid_durations_round_trip(count in 1u64..=3650, unit in proptest::sample::select(vec!['s', 'm', 'h', 'd'])) {
            let text = format!("{count}{unit}");
            let parsed = parse_duration(&text).unwrap();
            proptest::prop_assert_eq!(parse_duration(&format_duration(parsed)).unwrap(), parsed);
        }
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for bad in [
            "",
            "d",
            "0d",
            "-1d",
            "1.5h",
            "1 d",
            "1w",
            "1D",
            "+3h",
            "10years",
            "99999999999999999999d",
            "4000d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn formats_round_trip() {
        for text in ["45s", "15m", "12h", "30d"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }
}
