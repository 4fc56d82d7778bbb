//! The guardrail findings ledger: chained `request.guardrail_triggered` events added up per
//! hour, stage, detector and action as they are chained, and read back over time. Counts
//! only: no event holds the matched text, so no line here does.

use routero_core::audit::AuditEvent;
use serde::Serialize;
use sqlx::Row;

use crate::ledger::{Interval, bounded, hour_of, text};
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

/// The most findings one event adds to a line; the most lines one event touches; the
/// longest name kept (longer ones, which no detector of ours has, are counted as `other`).
const MAX_COUNT: i64 = 1_000_000;
const MAX_LINES_PER_EVENT: usize = 64;
const MAX_NAME: usize = 64;

fn name(value: Option<&serde_json::Value>) -> &str {
    match text(value) {
        "" => "unknown",
        name if name.len() > MAX_NAME => "other",
        name => name,
    }
}

/// Adds a `request.guardrail_triggered` event being chained in `tx` to the ledger.
pub(crate) async fn add_to_ledger(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    event: &AuditEvent,
) -> Result<(), AuditError> {
    let hour = hour_of(event)?;
    let stage = name(event.details.get("stage"));
    let Some(findings) = event.details.get("findings").and_then(|f| f.as_array()) else {
        return Ok(());
    };
    for finding in findings.iter().take(MAX_LINES_PER_EVENT) {
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
        .bind(name(finding.get("detector")))
        .bind(name(finding.get("action")))
        .bind(bounded(finding.get("count"), MAX_COUNT))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl AuditStore {
    /// The tenant's guardrail findings per `interval`, stage, detector and action, over the
    /// hours from `from` (inclusive) to `to` (exclusive), in order of period.
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
             FROM guardrail_findings \
             WHERE tenant_id = $1 AND ($2 IS NULL OR hour >= $2) AND ($3 IS NULL OR hour < $3) \
             GROUP BY {period}, stage, detector, action ORDER BY period, stage, detector, action"
        );
        // The only text spliced in is `Interval`'s SQL, never a request's.
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant_id)
            .bind(from)
            .bind(to)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                Ok(FindingsRow {
                    period: row.try_get("period")?,
                    stage: row.try_get("stage")?,
                    detector: row.try_get("detector")?,
                    action: row.try_get("action")?,
                    findings: row.try_get("findings")?,
                    requests: row.try_get("requests")?,
                })
            })
            .collect()
    }
}
