//! When a budget resets: never, every fixed number of seconds (windows aligned to the Unix
//! epoch, so every replica agrees without talking), or at the start of each calendar month (UTC).

/// A budget's period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// The budget never resets.
    Never,
    /// Every this many seconds (at least one).
    Every(u64),
    /// At the start of each calendar month, UTC.
    CalendarMonth,
}

impl Period {
    /// Parses a duration as LiteLLM writes `budget_duration`: `30s`, `15m`, `24h`, `30d` (as a
    /// key's lifetime is written: at most ten years), or `1mo` (the calendar month).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim() == "1mo" {
            return Ok(Self::CalendarMonth);
        }
        crate::parse_duration(text.trim())
            .map(|duration| Self::Every(duration.as_secs()))
            .map_err(|_| format!("{text}: a number and s, m, h, d (\"30d\"), or \"1mo\""))
    }

    /// The period holding `now` (Unix seconds): its start, and its end unless it never ends.
    pub fn window(self, now: i64) -> (i64, Option<i64>) {
        match self {
            Self::Never => (0, None),
            Self::Every(seconds) => {
                let length = i64::try_from(seconds).unwrap_or(i64::MAX).max(1);
                let start = now - now.rem_euclid(length);
                (start, Some(start.saturating_add(length)))
            }
            Self::CalendarMonth => {
                let (year, month) = year_month(now);
                let next = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                (month_start(year, month), Some(month_start(next.0, next.1)))
            }
        }
    }
}

/// The UTC year and month (1–12) of a Unix time.
fn year_month(unix: i64) -> (i64, i64) {
    // Howard Hinnant's civil-from-days.
    let days = unix.div_euclid(86_400) + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month)
}

/// The Unix time at the start of a UTC month.
fn month_start(year: i64, month: i64) -> i64 {
    // Howard Hinnant's days-from-civil, for the first day of the month.
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    (era * 146_097 + day_of_era - 719_468) * 86_400
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_litellm_writes_them() {
        assert_eq!(Period::parse("30d").unwrap(), Period::Every(30 * 86_400));
        assert_eq!(Period::parse("24h").unwrap(), Period::Every(86_400));
        assert_eq!(Period::parse("1mo").unwrap(), Period::CalendarMonth);
        for bad in [
            "",
            "0d",
            "d",
            "30",
            "30w",
            "2mo",
            "-1d",
            "99999999999999999999d",
        ] {
            assert!(Period::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn calendar_months_start_on_the_first_in_utc() {
        // 2026-11-30T07:00:00Z
        let now = 1_796_022_000;
        assert_eq!(year_month(now), (2026, 11));
        let (start, end) = Period::CalendarMonth.window(now);
        assert_eq!(start, 1_793_491_200, "2026-11-01T00:00:00Z");
        assert_eq!(end, Some(1_796_083_200), "2026-12-01T00:00:00Z");
        // December rolls into January; February of a leap year has 29 days.
        let (_, end) = Period::CalendarMonth.window(1_796_083_200 + 86_400);
        assert_eq!(end, Some(month_start(2027, 1)));
        assert_eq!(month_start(2028, 3) - month_start(2028, 2), 29 * 86_400);
        assert_eq!(month_start(1970, 1), 0);
    }

    #[test]
    fn fixed_periods_align_to_the_epoch() {
        let (start, end) = Period::Every(3600).window(7_250);
        assert_eq!((start, end), (7_200, Some(10_800)));
        assert_eq!(Period::Never.window(7_250), (0, None));
    }
}
