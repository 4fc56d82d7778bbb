//! What the ledgers share: sums per hour of chained events, kept in the transaction that
//! chains them, and read back per hour or per day.

use routero_core::audit::AuditEvent;

use crate::AuditError;

/// How finely a report over time is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    /// Per hour (UTC).
    Hour,
    /// Per day (UTC).
    Day,
}

impl Interval {
    /// `hour` or `day`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "hour" => Some(Self::Hour),
            "day" => Some(Self::Day),
            _ => None,
        }
    }

    /// `hour` or `day`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }

    /// The SQL naming a ledger line's period, `YYYY-MM-DDTHH:00:00Z` (the same in PostgreSQL
    /// and SQLite); never text from a request.
    pub(crate) fn period_sql(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "SUBSTR(hour, 1, 10) || 'T00:00:00Z'",
        }
    }
}

/// The hour an event belongs to, `YYYY-MM-DDTHH:00:00Z` (an event's time is
/// `YYYY-MM-DDTHH:MM:SS.sssZ`; its hour is the first 13 characters).
pub(crate) fn hour_of(event: &AuditEvent) -> Result<String, AuditError> {
    event
        .time
        .get(..13)
        .filter(|hour| hour.is_ascii())
        .map(|hour| format!("{hour}:00:00Z"))
        .ok_or(AuditError::Malformed("time"))
}

/// A JSON number from 0 to `most` (0 when absent or not a number): an event is never trusted
/// to keep a ledger's sums from overflowing.
pub(crate) fn bounded(value: Option<&serde_json::Value>, most: i64) -> i64 {
    value
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(0)
        .clamp(0, most)
}

/// A JSON string (`""` when absent or not a string).
pub(crate) fn text(value: Option<&serde_json::Value>) -> &str {
    value
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
}
