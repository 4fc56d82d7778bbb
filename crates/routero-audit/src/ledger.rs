//! What the ledgers share: sums per hour of chained events, kept in the transaction that
//! chains them, and read back per hour or per day.

use routero_core::audit::AuditEvent;

use crate::AuditError;

/// The most lines a report over time returns; it asks for one more, to tell that it was cut.
pub const MAX_LINES_OVER_TIME: usize = 20_000;

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
/// `YYYY-MM-DDTHH:MM:SS.sssZ`; its hour is the first 13 characters, digits where digits go).
/// An event whose time is not one is chained as any other (it is evidence) but left out of
/// the ledgers, which are derived from it: it never holds the trail up.
pub(crate) fn hour_of(event: &AuditEvent) -> Option<String> {
    let shape = |hour: &&str| {
        hour.bytes().enumerate().all(|(at, byte)| match at {
            4 | 7 => byte == b'-',
            10 => byte == b'T',
            _ => byte.is_ascii_digit(),
        })
    };
    event
        .time
        .get(..13)
        .filter(shape)
        .map(|hour| format!("{hour}:00:00Z"))
        .or_else(|| {
            tracing::warn!(event_id = %event.event_id, "an event's time is not a time: left out of the ledgers");
            None
        })
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

/// The lines of a ledger of `tenant_id` whose hours start in `[from, to)` (either open), as a
/// report's `WHERE` names them.
pub(crate) const IN_RANGE: &str =
    "tenant_id = $1 AND ($2 IS NULL OR hour >= $2) AND ($3 IS NULL OR hour < $3)";

/// Runs a report `sql` over [`IN_RANGE`] and reads each of its rows with `line`.
pub(crate) async fn report<T>(
    pool: &sqlx::AnyPool,
    sql: String,
    (tenant_id, from, to): (&str, Option<&str>, Option<&str>),
    line: impl Fn(&sqlx::any::AnyRow) -> Result<T, sqlx::Error>,
) -> Result<Vec<T>, AuditError> {
    // Callers splice in SQL of their own (names, numbers), never a request's text.
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant_id)
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|row| line(row).map_err(AuditError::from))
        .collect()
}
