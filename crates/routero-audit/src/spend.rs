//! The spend ledger: chained `spend.debited` events added up per hour, key, user, team and
//! model as they are chained, and read back for a key's spend and for chargeback reports.

use routero_core::MAX_CHARGE_MICROS;
use routero_core::audit::AuditEvent;
use serde::Serialize;
use sqlx::Row;

use crate::ledger::{IN_RANGE, Interval, MAX_LINES_OVER_TIME, bounded, hour_of, report};
use crate::{AuditError, AuditStore};

/// What a spend report adds up by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpendGroup {
    /// Per team (`""`: keys of no team).
    Team,
    /// Per user (`""`: keys of no user).
    User,
    /// Per key.
    Key,
    /// Per model.
    Model,
}

impl SpendGroup {
    /// `team`, `user`, `key` or `model`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "team" => Some(Self::Team),
            "user" => Some(Self::User),
            "key" => Some(Self::Key),
            "model" => Some(Self::Model),
            _ => None,
        }
    }

    /// The ledger column; never text from a request.
    fn column(self) -> &'static str {
        match self {
            Self::Team => "team_id",
            Self::User => "user_id",
            Self::Key => "key_id",
            Self::Model => "model",
        }
    }
}

/// One line of a spend report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpendRow {
    /// The hour or day it covers (`YYYY-MM-DDTHH:00:00Z`), when the report is over time.
    pub period: Option<String>,
    /// The team, user, key or model (`""`: none).
    pub group: String,
    /// Requests charged.
    pub requests: i64,
    /// Prompt tokens, cached ones included.
    pub input_tokens: i64,
    /// Prompt tokens read from the provider's cache.
    pub cached_tokens: i64,
    /// Completion tokens.
    pub output_tokens: i64,
    /// What they cost, in micro-dollars.
    pub cost_micros: i64,
}

/// A detail of a `spend.debited` event as a number from 0 to `most`.
fn number(event: &AuditEvent, field: &str, most: i64) -> i64 {
    bounded(event.details.get(field), most)
}

/// The most a ledger line adds up to, in micro-dollars (a thousandth of what an i64 holds).
const MAX_LINE_MICROS: i64 = i64::MAX / 1000;

/// The most tokens one event adds to a ledger line.
const MAX_TOKENS: i64 = 1_000_000_000_000;

/// A detail of a `spend.debited` event as text (`""` when absent).
fn text<'a>(event: &'a AuditEvent, field: &str) -> &'a str {
    crate::ledger::text(event.details.get(field))
}

/// Adds a `spend.debited` event being chained in `tx` to the ledger.
pub(crate) async fn add_to_ledger(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    event: &AuditEvent,
) -> Result<(), AuditError> {
    let Some(hour) = hour_of(event) else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO spend_ledger (tenant_id, hour, key_id, user_id, team_id, model, requests, \
         input_tokens, cached_tokens, output_tokens, cost_micros) \
         VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8, $9, $10) \
         ON CONFLICT (tenant_id, hour, key_id, user_id, team_id, model) DO UPDATE SET \
         requests = spend_ledger.requests + 1, \
         input_tokens = spend_ledger.input_tokens + excluded.input_tokens, \
         cached_tokens = spend_ledger.cached_tokens + excluded.cached_tokens, \
         output_tokens = spend_ledger.output_tokens + excluded.output_tokens, \
         cost_micros = CASE WHEN spend_ledger.cost_micros > $11 - excluded.cost_micros THEN $11 \
         ELSE spend_ledger.cost_micros + excluded.cost_micros END",
    )
    .bind(&event.tenant_id)
    .bind(hour)
    .bind(event.actor.id.as_deref().unwrap_or_default())
    .bind(text(event, "user_id"))
    .bind(text(event, "team_id"))
    .bind(event.resource.id.as_deref().unwrap_or_default())
    .bind(number(event, "input_tokens", MAX_TOKENS))
    .bind(number(event, "cached_tokens", MAX_TOKENS))
    .bind(number(event, "output_tokens", MAX_TOKENS))
    .bind(number(event, "cost_micros", MAX_CHARGE_MICROS))
    // A line's cost stops at the largest sum that cannot overflow a report over many lines.
    .bind(MAX_LINE_MICROS)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl AuditStore {
    /// Everything `key_id` of `tenant_id` has been charged, in micro-dollars.
    pub async fn key_spend(&self, tenant_id: &str, key_id: &str) -> Result<i64, AuditError> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) AS spent FROM spend_ledger \
             WHERE tenant_id = $1 AND key_id = $2",
        )
        .bind(tenant_id)
        .bind(key_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>("spent")?)
    }

    /// The tenant's spend grouped by `group` and, with an `interval`, by hour or day, over
    /// the hours from `from` (inclusive) to `to` (exclusive), both `YYYY-MM-DDTHH:MM:SS…Z` (an
    /// hour is counted when it starts in the range): most costly first, or over time in
    /// order of period, then most costly first, at most [`MAX_LINES_OVER_TIME`] and one.
    pub async fn spend_report(
        &self,
        tenant_id: &str,
        group: SpendGroup,
        (from, to): (Option<&str>, Option<&str>),
        interval: Option<Interval>,
    ) -> Result<Vec<SpendRow>, AuditError> {
        let column = group.column();
        let period = interval.map_or("NULL", Interval::period_sql);
        let (group_by, order, limit) = match interval {
            Some(_) => (
                format!("{period}, {column}"),
                "period, ",
                format!(" LIMIT {}", MAX_LINES_OVER_TIME + 1),
            ),
            None => (column.to_owned(), "", String::new()),
        };
        let sql = format!(
            "SELECT {period} AS period, {column} AS grp, CAST(SUM(requests) AS BIGINT) AS requests, \
             CAST(SUM(input_tokens) AS BIGINT) AS input_tokens, \
             CAST(SUM(cached_tokens) AS BIGINT) AS cached_tokens, \
             CAST(SUM(output_tokens) AS BIGINT) AS output_tokens, \
             CAST(SUM(cost_micros) AS BIGINT) AS cost_micros FROM spend_ledger WHERE {IN_RANGE} \
             GROUP BY {group_by} ORDER BY {order}SUM(cost_micros) DESC, {column}{limit}"
        );
        report(&self.pool, sql, (tenant_id, from, to), |row| {
            Ok(SpendRow {
                period: row.try_get("period")?,
                group: row.try_get("grp")?,
                requests: row.try_get("requests")?,
                input_tokens: row.try_get("input_tokens")?,
                cached_tokens: row.try_get("cached_tokens")?,
                output_tokens: row.try_get("output_tokens")?,
                cost_micros: row.try_get("cost_micros")?,
            })
        })
        .await
    }

    /// What the tenant spent in the hours that start from `since` up to `until` (both
    /// `YYYY-MM-DDTHH:…Z`, `until` excluded), in micro-dollars: in all (`group` `None`), or
    /// per team, user or key.
    pub async fn spend_between(
        &self,
        tenant_id: &str,
        group: Option<SpendGroup>,
        (since, until): (&str, &str),
    ) -> Result<Vec<(String, i64)>, AuditError> {
        let column = group.map_or("''", SpendGroup::column);
        let grouped = group.map_or_else(String::new, |g| format!(" GROUP BY {}", g.column()));
        let sql = format!(
            "SELECT {column} AS grp, CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) AS cost_micros \
             FROM spend_ledger WHERE tenant_id = $1 AND hour >= $2 AND hour < $3{grouped}"
        );
        // The only text spliced in is a column name of `SpendGroup`'s, never a request's.
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant_id)
            .bind(since)
            .bind(until)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| Ok((row.try_get("grp")?, row.try_get("cost_micros")?)))
            .collect()
    }
}
