//! Budgets and rate limits of the tenant, its teams and its users (a key's own are set on the
//! key), in LiteLLM's names with money in USD, which data planes count by from the next
//! snapshot; and what was spent, from the spend ledger, for chargeback.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use routero_audit::{SpendGroup, SpendRow};
use routero_core::audit::EventType;
use routero_core::{Allowance, ErrorCode, micros_to_usd, threshold_reached, usd_to_micros};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::collections::hash_map::Entry;

use super::access::Caller;
use super::audit::{audit_log, unavailable};
use super::extract::{Body, Query};
use super::times::{at_most, interval, normalize_time, over_time, unix_rfc3339};
use super::{ApiError, AppState};

/// Budget and limit fields as the API takes them: money in USD.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AllowanceFields {
    pub(super) rpm_limit: Option<u64>,
    pub(super) tpm_limit: Option<u64>,
    pub(super) max_budget: Option<f64>,
    pub(super) budget_duration: Option<String>,
    pub(super) budget_thresholds: Option<Vec<u8>>,
    pub(super) fail_open: Option<bool>,
}

impl AllowanceFields {
    /// The allowance these fields give, checked (400 `invalid_field` naming the field).
    pub(super) fn checked(self) -> Result<Allowance, ApiError> {
        let invalid = |detail: String| ApiError::new(ErrorCode::InvalidField, detail);
        let allowance = Allowance {
            rpm_limit: self.rpm_limit,
            tpm_limit: self.tpm_limit,
            max_budget_micros: self
                .max_budget
                .map(|usd| usd_to_micros("max_budget", usd))
                .transpose()
                .map_err(invalid)?,
            budget_duration: self.budget_duration,
            budget_thresholds: self.budget_thresholds.unwrap_or_default(),
            fail_open: self.fail_open.unwrap_or(false),
        };
        allowance.check().map_err(invalid)?;
        Ok(allowance)
    }
}

/// An allowance as answers show it: money in USD, absent parts as null.
pub(super) fn allowance_json(allowance: &Allowance) -> Value {
    json!({
        "rpm_limit": allowance.rpm_limit,
        "tpm_limit": allowance.tpm_limit,
        "max_budget": allowance.max_budget_micros.map(micros_to_usd),
        "budget_duration": allowance.budget_duration,
        "budget_thresholds": allowance.thresholds(),
        "fail_open": allowance.fail_open,
    })
}

/// Replaces one scope's allowance (an empty body removes every limit) and records it.
async fn put(
    state: &AppState,
    caller: &Caller,
    (kind, id): (&str, Option<String>),
    fields: AllowanceFields,
) -> Result<Json<Value>, ApiError> {
    let Caller { principal, client } = caller;
    let allowance = fields.checked()?;
    if allowance.fail_open && kind != "tenant" {
        return Err(ApiError::new(
            ErrorCode::InvalidField,
            "fail_open: only the tenant's budget has it",
        ));
    }
    let scope = id
        .as_ref()
        .map_or_else(|| kind.to_owned(), |id| format!("{kind}:{id}"));
    let event = AppState::event(principal, client, EventType::BudgetUpdated, (kind, id));
    state
        .store
        .put_allowance(&principal.tenant_id, &scope, &allowance, &[event])
        .await?;
    Ok(Json(
        json!({ "scope": scope, "budget": allowance_json(&allowance) }),
    ))
}

/// `PUT /teams/{id}/budget` (404 for a team of another tenant).
pub(super) async fn put_team(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<AllowanceFields>,
) -> Result<Json<Value>, ApiError> {
    put(&state, &caller, ("team", Some(id)), body).await
}

/// `PUT /users/{id}/budget` (404 for a user of another tenant).
pub(super) async fn put_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<AllowanceFields>,
) -> Result<Json<Value>, ApiError> {
    put(&state, &caller, ("user", Some(id)), body).await
}

/// `PUT /tenant/budget`: the whole tenant's.
pub(super) async fn put_tenant(
    State(state): State<AppState>,
    caller: Caller,
    Body(body): Body<AllowanceFields>,
) -> Result<Json<Value>, ApiError> {
    put(&state, &caller, ("tenant", None), body).await
}

/// The most ledger reads one `GET /budgets` makes: one per kind of scope and period start,
/// and periods are aligned, so a tenant's budgets share few; budgets past it show no spend.
const MAX_LEDGER_READS: usize = 32;

/// `GET /budgets`: every budget of the tenant (its own, its teams', its users' and its active
/// keys'), each with its current period, what the ledger says was spent in it (from the hour
/// holding its start: `counted_from`) and the thresholds that reached. The ledger counts whole
/// hours and trails the data planes' counters by the audit pipeline's delay: the data planes'
/// counters decide, this shows.
pub(super) async fn list(
    State(state): State<AppState>,
    Caller { principal, .. }: Caller,
) -> Result<Json<Value>, ApiError> {
    let tenant = &principal.tenant_id;
    let mut scopes: Vec<(&'static str, Option<String>, Allowance)> = Vec::new();
    for (scope, allowance) in state.store.list_allowances(tenant).await? {
        let (kind, id) = match scope.split_once(':') {
            Some(("team", id)) => ("team", Some(id.to_owned())),
            Some(("user", id)) => ("user", Some(id.to_owned())),
            _ => ("tenant", None),
        };
        scopes.push((kind, id, allowance));
    }
    for key in state.store.list_keys(tenant, None, false).await? {
        scopes.push(("key", Some(key.id), key.limits));
    }
    let log = audit_log(&state)?;
    let now = routero_core::unix_now();
    // Nothing stamped later than the coming hour is spend yet (a forged or far-off clock's).
    let until = unix_rfc3339(now.saturating_add(3600));
    let mut spent: HashMap<(&str, i64), HashMap<String, i64>> = HashMap::new();
    let mut lines = Vec::new();
    for (kind, id, allowance) in scopes {
        let Some(budget) = allowance.max_budget_micros else {
            continue;
        };
        let (start, end) = allowance.period().window(now);
        let counted_from = unix_rfc3339(start - start.rem_euclid(3600));
        if spent.len() < MAX_LEDGER_READS
            && let Entry::Vacant(slot) = spent.entry((kind, start))
        {
            let sums = log
                .spend_between(tenant, SpendGroup::parse(kind), (&counted_from, &until))
                .await
                .map_err(unavailable)?;
            slot.insert(sums.into_iter().collect());
        }
        let used = spent.get(&(kind, start)).map(|sums| {
            sums.get(id.as_deref().unwrap_or_default())
                .copied()
                .unwrap_or(0)
        });
        let thresholds = allowance.thresholds();
        let reached: Vec<u8> = thresholds
            .iter()
            .copied()
            .filter(|percent| used.is_some_and(|used| threshold_reached(used, budget, *percent)))
            .collect();
        lines.push(json!({
            "kind": kind,
            "id": id,
            "max_budget": micros_to_usd(budget),
            "budget_duration": allowance.budget_duration,
            "period_start": (start > 0).then(|| unix_rfc3339(start)),
            "period_end": end.map(unix_rfc3339),
            "counted_from": counted_from,
            "spent": used.map(micros_to_usd),
            "thresholds": thresholds,
            "reached": reached,
        }));
    }
    Ok(Json(json!({ "budgets": lines })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReportQuery {
    group_by: Option<String>,
    from: Option<String>,
    to: Option<String>,
    /// `hour` or `day`: a line per group and period, in order of period.
    interval: Option<String>,
    /// `csv`: as `Accept: text/csv` (for a download link, which sets no headers).
    format: Option<String>,
}

/// `GET /spend/report?group_by=team|user|key|model&from&to&interval=hour|day`: the tenant's
/// spend from the ledger (over time with an interval, within `over_time`'s range and at
/// most [`routero_audit::MAX_LINES_OVER_TIME`] lines), as JSON or, for `Accept: text/csv` or
/// `format=csv`, as a CSV download for chargeback.
pub(super) async fn report(
    State(state): State<AppState>,
    Caller { principal, .. }: Caller,
    headers: HeaderMap,
    Query(query): Query<ReportQuery>,
) -> Result<Response, ApiError> {
    let name = query.group_by.as_deref().unwrap_or("key");
    let group = SpendGroup::parse(name).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidQuery,
            "group_by: team, user, key or model",
        )
    })?;
    let interval = interval(query.interval.as_deref())?;
    let (from, to) = match interval {
        Some(interval) => {
            let (from, to) = over_time(interval, query.from, query.to)?;
            (Some(from), to)
        }
        None => (
            normalize_time("from", query.from)?,
            normalize_time("to", query.to)?,
        ),
    };
    let (rows, truncated) = at_most(
        audit_log(&state)?
            .spend_report(
                &principal.tenant_id,
                group,
                (from.as_deref(), to.as_deref()),
                interval,
            )
            .await
            .map_err(unavailable)?,
    );
    let csv = match query.format.as_deref() {
        Some("csv") => true,
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("text/csv")),
        Some(_) => {
            return Err(ApiError::new(ErrorCode::InvalidQuery, "format: csv"));
        }
    };
    if csv {
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"routero-spend.csv\"",
                ),
                (header::CACHE_CONTROL, "no-store"),
            ],
            spend_csv(name, interval.is_some(), &rows),
        )
            .into_response());
    }
    let lines: Vec<Value> = rows
        .iter()
        .map(|row| {
            json!({
                "period": row.period,
                name: row.group,
                "requests": row.requests,
                "input_tokens": row.input_tokens,
                "cached_tokens": row.cached_tokens,
                "output_tokens": row.output_tokens,
                "spend": micros_to_usd(row.cost_micros),
            })
        })
        .collect();
    let total: i64 = rows.iter().map(|row| row.cost_micros).sum();
    Ok(Json(json!({
        "group_by": name,
        "interval": interval.map(routero_audit::Interval::name),
        "from": from,
        "to": to,
        "rows": lines,
        "truncated": truncated,
        "total_spend": micros_to_usd(total),
    }))
    .into_response())
}

/// The report as CSV: a header line, then one line per group (and period, over time). A cell a spreadsheet would
/// run as a formula (`=`, `+`, `-`, `@`, or a tab or carriage return before one) is prefixed
/// with `'`; cells are quoted as needed.
fn spend_csv(group: &str, over_time: bool, rows: &[SpendRow]) -> String {
    let cell = |text: &str| {
        let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            format!("'{text}")
        } else {
            text.to_owned()
        };
        if text.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", text.replace('"', "\"\""))
        } else {
            text
        }
    };
    let period = if over_time { "period," } else { "" };
    let mut out =
        format!("{period}{group},requests,input_tokens,cached_tokens,output_tokens,spend_usd\n");
    for row in rows {
        if over_time {
            out.push_str(row.period.as_deref().unwrap_or_default());
            out.push(',');
        }
        out.push_str(&format!(
            "{},{},{},{},{},{:.6}\n",
            cell(&row.group),
            row.requests,
            row.input_tokens,
            row.cached_tokens,
            row.output_tokens,
            micros_to_usd(row.cost_micros)
        ));
    }
    out
}

/// What a key has been charged, in USD, when the audit log (the ledger's home) is here.
pub(super) async fn key_spend(state: &AppState, tenant_id: &str, key_id: &str) -> Option<f64> {
    let log = state.audit_log.as_ref()?;
    match log.key_spend(tenant_id, key_id).await {
        Ok(micros) => Some(micros_to_usd(micros)),
        Err(error) => {
            tracing::error!(%error, "spend ledger unavailable");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_over_time_leads_with_its_period() {
        let row = SpendRow {
            period: Some("2026-11-30T00:00:00Z".into()),
            group: "team-a".into(),
            requests: 2,
            input_tokens: 3,
            cached_tokens: 1,
            output_tokens: 4,
            cost_micros: 250_000,
        };
        assert_eq!(
            spend_csv("team", true, &[row]),
            "period,team,requests,input_tokens,cached_tokens,output_tokens,spend_usd\n\
             2026-11-30T00:00:00Z,team-a,2,3,1,4,0.250000\n"
        );
    }

    #[test]
    fn csv_cells_are_quoted_and_never_run_as_formulas() {
        let row = |group: &str| SpendRow {
            period: None,
            group: group.into(),
            requests: 1,
            input_tokens: 2,
            cached_tokens: 0,
            output_tokens: 3,
            cost_micros: 1_500_000,
        };
        let csv = spend_csv(
            "model",
            false,
            &[row("=cmd|x"), row("a,\"b\""), row("\t=1+1"), row("\r@x")],
        );
        assert_eq!(
            csv,
            "model,requests,input_tokens,cached_tokens,output_tokens,spend_usd\n\
             '=cmd|x,1,2,0,3,1.500000\n\
             \"a,\"\"b\"\"\",1,2,0,3,1.500000\n\
             '\t=1+1,1,2,0,3,1.500000\n\
             \"'\r@x\",1,2,0,3,1.500000\n"
        );
    }
}
