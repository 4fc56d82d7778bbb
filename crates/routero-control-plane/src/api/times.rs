//! Times in the admin API's queries and answers: RFC 3339 in, the stored form out, and the
//! bounded range of a report over time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use routero_audit::Interval;
use routero_core::ErrorCode;

use super::ApiError;

/// RFC 3339 in, the stored form out (UTC, milliseconds), so comparisons are exact.
pub(super) fn normalize_time(
    field: &str,
    text: Option<String>,
) -> Result<Option<String>, ApiError> {
    parse_time(field, text).map(|time| time.map(stored))
}

fn parse_time(field: &str, text: Option<String>) -> Result<Option<SystemTime>, ApiError> {
    text.map(|text| {
        humantime::parse_rfc3339_weak(&text).map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidQuery,
                format!("{field}: an RFC 3339 time is required"),
            )
        })
    })
    .transpose()
}

/// The stored form of a time: `YYYY-MM-DDTHH:MM:SS.sssZ`.
fn stored(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (before 1970: 1970).
pub(super) fn unix_rfc3339(seconds: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
    humantime::format_rfc3339_seconds(time).to_string()
}

/// The `interval` of a report over time (400 `invalid_query` for another).
pub(super) fn interval(name: Option<&str>) -> Result<Option<Interval>, ApiError> {
    name.map(|name| {
        Interval::parse(name)
            .ok_or_else(|| ApiError::new(ErrorCode::InvalidQuery, "interval: hour or day"))
    })
    .transpose()
}

/// The `from` and `to` of a report over time: at most 31 days of hours or 366 of days, `from`
/// that long before `to` (or now) unless given; a wider range is refused (400
/// `invalid_query`). Both in the stored form.
pub(super) fn over_time(
    interval: Interval,
    from: Option<String>,
    to: Option<String>,
) -> Result<(String, Option<String>), ApiError> {
    let (days, name) = match interval {
        Interval::Hour => (31, "31 days per hour"),
        Interval::Day => (366, "366 days per day"),
    };
    let widest = Duration::from_secs(days * 86_400);
    let end = parse_time("to", to)?;
    let last = end.unwrap_or_else(SystemTime::now);
    let start = match parse_time("from", from)? {
        Some(start) => start,
        None => last.checked_sub(widest).unwrap_or(UNIX_EPOCH),
    };
    if last.duration_since(start).is_ok_and(|span| span > widest) {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            format!("from, to: at most {name}"),
        ));
    }
    Ok((stored(start), end.map(stored)))
}

/// Lines of a report over time as answered: `truncated` when the ledger had more.
pub(super) fn at_most<T>(mut lines: Vec<T>) -> (Vec<T>, bool) {
    let truncated = lines.len() > routero_audit::MAX_LINES_OVER_TIME;
    lines.truncate(routero_audit::MAX_LINES_OVER_TIME);
    (lines, truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_over_time_is_bounded() {
        let hours = |from: &str, to: &str| {
            over_time(Interval::Hour, Some(from.into()), Some(to.into())).is_ok()
        };
        assert!(hours("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"));
        assert!(!hours("2026-01-01T00:00:00Z", "2026-02-01T00:00:01Z"));
        let (from, to) =
            over_time(Interval::Day, None, Some("2026-12-31T00:00:00Z".into())).unwrap();
        assert_eq!(from, "2025-12-30T00:00:00.000Z", "366 days before");
        assert_eq!(to.as_deref(), Some("2026-12-31T00:00:00.000Z"));
        assert!(over_time(Interval::Day, Some("yesterday".into()), None).is_err());
    }
}
