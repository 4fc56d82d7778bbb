//! The wall clock as the stores and messages record it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds now (0 before 1970, saturating far in the future).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Unix milliseconds now, as snapshot messages and watch credentials carry them.
pub fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_read_the_wall_clock() {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let millis = u128::try_from(unix_now_ms()).unwrap_or_default();
        assert!(millis.abs_diff(wall) < 1_000, "{millis} vs {wall}");
        let seconds = u128::try_from(unix_now()).unwrap_or_default();
        assert!(seconds.abs_diff(wall / 1000) <= 1, "{seconds} vs {wall}");
    }
}
