//! The guardrail findings ledger: chained `request.guardrail_triggered` events added up per
//! hour, stage, detector and action as they are chained, and read back over time. Counts
//! only: no event holds the matched text, so no line here does.

use std::collections::BTreeMap;

use routero_core::audit::AuditEvent;
use serde::Serialize;
use sqlx::Row;

use crate::ledger::{IN_RANGE, Interval, MAX_LINES_OVER_TIME, bounded, hour_of, report, text};
use crate::{AuditError, AuditStore};

/// One line of a findings report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FindingsRow {
    /// The hour or day it covers (`YYYY-MM-DDTHH:00:00Z`).
    pub period: String,
    /// `request` or `response`.
    pub stage: String,
    /// The detector that found something (`email`, `aws_access_key`, …).
    pub detector: String,
    /// What was done about it (`block`, `redact`, `mask`, `hash`, `log`).
    pub action: String,
    /// Matches found.
    pub findings: i64,
    /// Requests (or responses) they were found in.
    pub requests: i64,
}

/// The most matches one event adds to a line.
const MAX_COUNT: i64 = 1_000_000;
/// The most findings of one event read (so at most this many lines touched).
const MAX_FINDINGS_PER_EVENT: usize = 64;

/// A detector's or action's name as the ledger keeps it: 1 to 64 lowercase letters, digits and
/// `_` (every name of ours), anything else `other`: an event from elsewhere cannot write text
/// of its choosing into the ledger.
fn name(value: Option<&serde_json::Value>) -> &str {
    match text(value) {
        name if !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') =>
        {
            name
        }
        _ => "other",
    }
}

/// An event's findings as ledger lines: `(detector, action)` and matches, the same line once.
fn lines(findings: &[serde_json::Value]) -> BTreeMap<(&str, &str), i64> {
    let mut lines = BTreeMap::new();
    for finding in findings.iter().take(MAX_FINDINGS_PER_EVENT) {
        let count = bounded(finding.get("count"), MAX_COUNT);
        let line = lines
            .entry((name(finding.get("detector")), name(finding.get("action"))))
            .or_insert(0);
        *line = (*line + count).min(MAX_COUNT);
    }
    lines
}

/// Adds a `request.guardrail_triggered` event being chained in `tx` to the ledger.
pub(crate) async fn add_to_ledger(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    event: &AuditEvent,
) -> Result<(), AuditError> {
    let Some(hour) = hour_of(event) else {
        return Ok(());
    };
    let stage = match text(event.details.get("stage")) {
        stage @ ("request" | "response") => stage,
        _ => "other",
    };
    let Some(findings) = event.details.get("findings").and_then(|f| f.as_array()) else {
        return Ok(());
    };
    for ((detector, action), count) in lines(findings) {
        sqlx::query(
            "INSERT INTO guardrail_findings (tenant_id, hour, stage, detector, action, findings, \
             requests) VALUES ($1, $2, $3, $4, $5, $6, 1) \
             ON CONFLICT (tenant_id, hour, stage, detector, action) DO UPDATE SET \
             findings = guardrail_findings.findings + excluded.findings, \
             requests = guardrail_findings.requests + 1",
        )
        .bind(&event.tenant_id)
        .bind(&hour)
        .bind(stage)
        .bind(detector)
        .bind(action)
        .bind(count)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl AuditStore {
    /// The tenant's guardrail findings per `interval`, stage, detector and action, over the
    /// hours from `from` (inclusive) to `to` (exclusive), in order of period, at most
    /// [`MAX_LINES_OVER_TIME`] and one.
    pub async fn guardrail_findings(
        &self,
        tenant_id: &str,
        (from, to): (Option<&str>, Option<&str>),
        interval: Interval,
    ) -> Result<Vec<FindingsRow>, AuditError> {
        let period = interval.period_sql();
        let sql = format!(
            "SELECT {period} AS period, stage, detector, action, \
             CAST(SUM(findings) AS BIGINT) AS findings, CAST(SUM(requests) AS BIGINT) AS requests \
             FROM guardrail_findings WHERE {IN_RANGE} \
             GROUP BY {period}, stage, detector, action ORDER BY period, stage, detector, action \
             LIMIT {}",
            MAX_LINES_OVER_TIME + 1
        );
        report(&self.pool, sql, (tenant_id, from, to), |row| {
            Ok(FindingsRow {
                period: row.try_get("period")?,
                stage: row.try_get("stage")?,
                detector: row.try_get("detector")?,
                action: row.try_get("action")?,
                findings: row.try_get("findings")?,
                requests: row.try_get("requests")?,
            })
        })
        .await
    }
}
