//! A request's budgets and rate limits, from before it is sent to after its answer.
//!
//! Before: its worst-case cost is reserved on every budget it falls under (its key's, its
//! user's, its team's, its tenant's) and its share taken of every rate limit, in one step, all
//! or nothing (in this process, or in Redis for every replica). A budget without room refuses
//! it with 429 `budget_exceeded` naming the budget, a reached limit with 429 `rate_limited` and
//! `Retry-After`; counters that cannot be reached refuse it with 503 `limits_unavailable`
//! (never served uncounted).
//!
//! After: the answer is read on its way to the client for the provider's `usage` (a stream's
//! last chunk, which the gateway asks for and removes unless the client asked for it too), and
//! the reservation is settled to what the provider reported: the reservation itself when it
//! reported nothing (a client gone mid-stream), nothing when it failed. Each settlement of a
//! priced model is recorded as `spend.debited` (tokens and cost), the spend ledger's source.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, BodyDataStream, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use futures_util::{Stream, StreamExt as _};
use routero_bus::{EventBus, Reservation};
use routero_core::audit::{Actor, AuditEvent, EventType, Outcome};
use routero_core::{
    Allowance, ErrorCode, KeyPolicy, ModelRoute, Pricing, Snapshot, Usage, micros_to_usd,
};
use routero_limits::{Ask, BudgetAsk, Crossed, Grant, Limits, RateAsk, RateKind, Verdict};
use serde_json::{Map, Value, json};

use crate::refusal::Refused;
use crate::sse::{Frame, Framer, MAX_EVENT};

/// The completion a request that names no `max_tokens` is assumed to ask for, unless its
/// route says otherwise.
const DEFAULT_COMPLETION_TOKENS: u64 = 4096;

/// Who a request's spend is charged to, for its events.
pub(crate) struct Payer {
    /// The key's tenant, key, user and team.
    pub(crate) key: Arc<KeyPolicy>,
    /// The route called.
    pub(crate) model: String,
    /// The request.
    pub(crate) request_id: String,
    /// The caller, as its events name it.
    pub(crate) actor: Actor,
    /// Where events go.
    pub(crate) bus: Option<EventBus>,
    /// The request's span, told the tokens used.
    pub(crate) span: tracing::Span,
    /// Where tokens and cost are counted for Prometheus.
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
}

/// Why a request was not counted: the refusal, and the budget that refused it, if one did.
pub(crate) struct NotCounted {
    pub(crate) refused: Refused,
    /// `budget.exceeded`, when a budget refused.
    pub(crate) exceeded: Option<AuditEvent>,
}

impl From<Refused> for NotCounted {
    fn from(refused: Refused) -> Self {
        Self {
            refused,
            exceeded: None,
        }
    }
}

/// A counted request: what is left of its rate limits, and the reservation to settle.
pub(crate) struct Meter {
    left: Vec<(RateKind, u64, u64)>,
    settlement: Option<Settlement>,
}

/// What a granted request holds until its answer says what it cost.
struct Settlement {
    limits: Arc<Limits>,
    /// `None` when no counter needs settling (only spend to record).
    grant: Option<Grant>,
    pricing: Option<Pricing>,
    /// The worst case reserved, charged when the provider reports nothing.
    reserved: Usage,
    /// The tokens the rate limits counted before the answer.
    estimated_tokens: u64,
    payer: Payer,
    /// Room for `spend.debited`, taken before the request was sent.
    room: Option<Reservation>,
    /// Whether anything is charged (a priced route, or counters): else the answer is read
    /// only to observe its usage.
    charged: bool,
}

/// Everything a request counts against, named as refusals name it.
fn scopes<'a>(snapshot: &'a Snapshot, key: &'a KeyPolicy) -> Vec<(String, &'a Allowance)> {
    let tenant = key.tenant_id.as_str();
    let scoped = |kind: &str, id: Option<&str>| {
        let scope = id.map_or_else(|| kind.to_owned(), |id| format!("{kind}:{id}"));
        let name = id.map_or_else(|| format!("{kind}:{tenant}"), |_| scope.clone());
        snapshot
            .allowance(tenant, &scope)
            .map(|allowance| (name, allowance))
    };
    [
        Some((format!("key:{}", key.key_id), &key.limits)),
        scoped("user", key.user_id.as_deref()).filter(|_| key.user_id.is_some()),
        scoped("team", key.team_id.as_deref()).filter(|_| key.team_id.is_some()),
        scoped("tenant", None),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Counts a request to `route` against everything it falls under (`completes`: whether it
/// asks for a completion, which its estimate then includes). With `observe`, an answer with
/// nothing to charge is still read for its usage (for metrics and spans).
pub(crate) async fn count(
    limits: &Arc<Limits>,
    snapshot: &Snapshot,
    route: &ModelRoute,
    (request, completes): (&Map<String, Value>, bool),
    (body_bytes, key, payer): (usize, &KeyPolicy, impl FnOnce() -> Payer),
    observe: bool,
) -> Result<Meter, NotCounted> {
    // Most requests have nothing to count or charge: nothing more is built for them.
    if route.pricing.is_none()
        && key.limits.is_unlimited()
        && !snapshot.has_allowances(&key.tenant_id)
    {
        return Ok(Meter::observing(observe.then(payer), limits));
    }
    let payer = payer();
    let scopes = scopes(snapshot, &payer.key);
    let own = format!("key:{}", payer.key.key_id);
    let worst = worst_case(request, completes, body_bytes, route.pricing.as_ref());
    let worst_cost = route.pricing.map_or(0, |p| p.cost_micros(&worst));
    let estimated_tokens = estimated_tokens(&worst, body_bytes);
    let mut ask = Ask::default();
    for (name, allowance) in &scopes {
        if let Some(limit_micros) = allowance.max_budget_micros {
            ask.budgets.push(BudgetAsk {
                name: name.clone(),
                limit_micros,
                period: allowance.period(),
                reserve_micros: worst_cost,
                thresholds: allowance.thresholds(),
            });
        }
        let rates = [
            (RateKind::Requests, allowance.rpm_limit, 1),
            (RateKind::Tokens, allowance.tpm_limit, estimated_tokens),
        ];
        for (kind, limit, cost) in rates {
            if let Some(per_minute) = limit {
                ask.rates.push(RateAsk {
                    name: name.clone(),
                    kind,
                    per_minute,
                    cost,
                });
            }
        }
    }
    let counted = !ask.budgets.is_empty() || !ask.rates.is_empty();
    if !counted && route.pricing.is_none() {
        return Ok(Meter::observing(observe.then_some(payer), limits));
    }
    let (grant, left) = if counted {
        let fail_open = snapshot
            .allowance(&payer.key.tenant_id, "tenant")
            .is_some_and(|tenant| tenant.fail_open);
        // Served uncounted (fail_open), its spend is still recorded.
        let grant = reserve(limits, &ask, &payer, fail_open).await?;
        let left = grant.iter().flat_map(|grant| {
            ask.rates
                .iter()
                .zip(&grant.remaining)
                .filter(|(rate, _)| rate.name == own)
                .map(|(rate, (_, _, left))| (rate.kind, rate.per_minute, *left))
        });
        let left = left.collect();
        (grant, left)
    } else {
        (None, Vec::new())
    };
    let room = match (&payer.bus, route.pricing) {
        (Some(bus), Some(_)) => Some(bus.reserve().await.map_err(|error| {
            tracing::error!(%error, "audit bus unavailable; refusing the request");
            Refused::from(ErrorCode::AuditUnavailable)
        })?),
        _ => None,
    };
    Ok(Meter {
        left,
        settlement: Some(Settlement {
            limits: Arc::clone(limits),
            grant,
            pricing: route.pricing,
            reserved: worst,
            estimated_tokens,
            payer,
            room,
            charged: true,
        }),
    })
}

/// Reserves `ask`, or says why not; `None` when the counters cannot be reached and the
/// tenant chose to `fail_open` (the request is then served uncounted, and audited).
async fn reserve(
    limits: &Limits,
    ask: &Ask,
    payer: &Payer,
    fail_open: bool,
) -> Result<Option<Grant>, NotCounted> {
    match limits.reserve(ask, routero_core::unix_now_ms()).await {
        Ok(Verdict::Granted(grant)) => Ok(Some(grant)),
        Ok(Verdict::RateLimited {
            name,
            kind,
            retry_after_ms,
        }) => {
            let limit = match kind {
                RateKind::Requests => "rpm_limit",
                RateKind::Tokens => "tpm_limit",
            };
            let mut refused = Refused::from(ErrorCode::RateLimited);
            refused.detail = Some(format!(
                "The {limit} of {name} is reached; retry after the time given."
            ));
            refused.retry_after = Some(retry_after_ms.div_ceil(1000).max(1));
            Err(refused.into())
        }
        Ok(Verdict::OverBudget {
            name,
            used_micros,
            limit_micros,
            resets_at,
        }) => {
            let reserve = ask.budgets.first().map_or(0, |b| b.reserve_micros);
            let mut refused = Refused::from(ErrorCode::BudgetExceeded);
            refused.detail = Some(format!(
                "The budget of {name} (USD {}) has USD {} spent or reserved and no room for this \
                 request's worst case (USD {}){}.",
                micros_to_usd(limit_micros),
                micros_to_usd(used_micros),
                micros_to_usd(reserve),
                resets_at.map_or_else(String::new, |at| format!("; it resets at Unix time {at}"))
            ));
            if let Some(at) = resets_at {
                let wait = at.saturating_sub(routero_core::unix_now()).max(1);
                refused.retry_after = u64::try_from(wait).ok();
            }
            let mut event = payer.event(EventType::BudgetExceeded, Outcome::Denied);
            event.reason_code = Some(ErrorCode::BudgetExceeded.code().to_owned());
            event.details.extend(
                json!({
                    "budget": name,
                    "limit_usd": micros_to_usd(limit_micros),
                    "used_usd": micros_to_usd(used_micros),
                    "reserve_usd": micros_to_usd(reserve),
                })
                .as_object()
                .cloned()
                .unwrap_or_default(),
            );
            Err(NotCounted {
                refused,
                exceeded: Some(event),
            })
        }
        Err(error) if fail_open => {
            tracing::warn!(%error, tenant = %payer.key.tenant_id, "limits cannot be counted; served uncounted (fail_open)");
            let mut event = payer.event(EventType::LimitsFailedOpen, Outcome::Success);
            event.reason_code = Some(ErrorCode::LimitsUnavailable.code().to_owned());
            // Served only once the event has its room: an uncounted request is never unaudited.
            if let Some(bus) = &payer.bus {
                bus.reserve()
                    .await
                    .map_err(|_| Refused::from(ErrorCode::AuditUnavailable))?
                    .publish(event);
            }
            Ok(None)
        }
        Err(error) => {
            tracing::error!(%error, "limits cannot be counted; the request is refused");
            Err(Refused::from(ErrorCode::LimitsUnavailable).into())
        }
    }
}

impl Payer {
    /// An event about this request's spend.
    fn event(&self, action: EventType, outcome: Outcome) -> AuditEvent {
        let mut event = routero_bus::event(
            &self.key.tenant_id,
            action,
            self.actor.clone(),
            routero_bus::resource("model", Some(self.model.clone())),
            outcome,
        );
        event.request_id = Some(self.request_id.clone());
        event
    }

    /// Tells the request's span and the metrics the tokens the provider reported.
    fn observe(&self, usage: &Usage) {
        // As integers (OpenTelemetry has no unsigned ones).
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.span
            .record("gen_ai.usage.input_tokens", int(usage.prompt_tokens));
        self.span
            .record("gen_ai.usage.output_tokens", int(usage.completion_tokens));
        self.metrics.tokens(&self.model, usage);
    }
}

/// The most a request may use: its prompt at a token per byte (no tokenizer makes more), and
/// for a completion the most it allows (the larger of `max_completion_tokens` and
/// `max_tokens`, a fraction rounded up; else the route's default), times its `n` choices.
fn worst_case(
    request: &Map<String, Value>,
    completes: bool,
    body_bytes: usize,
    pricing: Option<&Pricing>,
) -> Usage {
    let prompt_tokens = u64::try_from(body_bytes).unwrap_or(u64::MAX);
    if !completes {
        return Usage {
            prompt_tokens,
            ..Usage::default()
        };
    }
    // Zero or less is no limit to some servers (llama.cpp, Ollama): read as not given.
    let number = |field: &str| {
        request
            .get(field)
            .and_then(Value::as_f64)
            .filter(|n| n.is_finite() && *n > 0.0)
            .map(f64::ceil)
    };
    let allowed = ["max_completion_tokens", "max_tokens"]
        .into_iter()
        .filter_map(number)
        .fold(None, |most: Option<f64>, n| {
            Some(most.map_or(n, |m| m.max(n)))
        });
    let default = pricing
        .and_then(|p| p.default_max_tokens)
        .unwrap_or(DEFAULT_COMPLETION_TOKENS);
    // `as` saturates a float beyond u64 to u64::MAX.
    let completion = allowed.map_or(default, |n| n as u64);
    let choices = number("n").map_or(1, |n| (n as u64).max(1));
    Usage {
        prompt_tokens,
        cached_tokens: 0,
        completion_tokens: completion.saturating_mul(choices),
    }
}

/// The tokens a rate limit counts before the answer: the prompt at a token per four bytes
/// (settled to the provider's count after), and the completion allowed.
fn estimated_tokens(worst: &Usage, body_bytes: usize) -> u64 {
    u64::try_from(body_bytes / 4)
        .unwrap_or(u64::MAX)
        .saturating_add(worst.completion_tokens)
}

/// Makes a completion that names no limit ask for the one its reservation assumed (the route's
/// default), so that a provider cannot complete past what was reserved.
pub(crate) fn hold_to_reservation(request: &mut Map<String, Value>, pricing: Option<&Pricing>) {
    let limited = ["max_completion_tokens", "max_tokens"]
        .into_iter()
        .any(|field| {
            request
                .get(field)
                .and_then(Value::as_f64)
                .is_some_and(|n| n.is_finite() && n > 0.0)
        });
    if !limited {
        let default = pricing
            .and_then(|p| p.default_max_tokens)
            .unwrap_or(DEFAULT_COMPLETION_TOKENS);
        request.insert("max_completion_tokens".into(), Value::from(default));
    }
}

/// Whether the client asked for the answer's usage itself: always for a whole answer; for a
/// stream, with `stream_options.include_usage`.
pub(crate) fn asked_for_usage(request: &Map<String, Value>) -> bool {
    request.get("stream").and_then(Value::as_bool) != Some(true)
        || request
            .get("stream_options")
            .and_then(|options| options.get("include_usage"))
            .and_then(Value::as_bool)
            == Some(true)
}

/// Makes a streamed request ask the provider for its usage; returns whether the client asked
/// for it itself (then it keeps the usage chunk).
pub(crate) fn ask_for_usage(request: &mut Map<String, Value>) -> bool {
    if request.get("stream").and_then(Value::as_bool) != Some(true) {
        return true;
    }
    let options = request
        .entry("stream_options")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(options) = options.as_object_mut() else {
        return true;
    };
    let asked = options.get("include_usage").and_then(Value::as_bool) == Some(true);
    options.insert("include_usage".into(), Value::Bool(true));
    asked
}

impl Meter {
    /// A request with nothing to count or charge; with a payer, its answer is still read for
    /// its usage.
    fn observing(payer: Option<Payer>, limits: &Arc<Limits>) -> Self {
        Self {
            left: Vec::new(),
            settlement: payer.map(|payer| Settlement {
                limits: Arc::clone(limits),
                grant: None,
                pricing: None,
                reserved: Usage::default(),
                estimated_tokens: 0,
                payer,
                room: None,
                charged: false,
            }),
        }
    }

    /// Whether the request is charged (a priced route, or counters to settle).
    pub(crate) fn charges(&self) -> bool {
        self.settlement.as_ref().is_some_and(|s| s.charged)
    }

    /// Gives the reservation back: the request was not sent, or the provider failed. Nothing
    /// was spent, so nothing is recorded.
    pub(crate) fn release(mut self) {
        if let Some(mut settlement) = self.settlement.take() {
            settlement.room = None;
            settlement.settle(Some(Usage::default()));
        }
    }

    /// Reads the answer for its usage on its way to the client (removing a stream's usage
    /// chunk when `strip_usage`), settling when it ends or the client goes. A meter that only
    /// observes reads a stream only when the client asked for its usage (`asked`) and keeps at
    /// most [`OBSERVED_WHOLE`] of a whole answer: observing changes nothing the client gets.
    pub(crate) fn tap(mut self, response: Response, strip_usage: bool, asked: bool) -> Response {
        let Some(settlement) = self.settlement.take() else {
            return self.tell(response);
        };
        let streamed = crate::sse::is_event_stream(response.headers());
        if !settlement.charged && streamed && !asked {
            return self.tell(response);
        }
        if !response.status().is_success() {
            self.settlement = Some(settlement);
            self.release();
            return response;
        }
        let (mut parts, body) = response.into_parts();
        let mode = if streamed {
            parts.headers.remove(header::CONTENT_LENGTH);
            Mode::Events {
                framer: Framer::new(MAX_EVENT),
                strip_usage,
            }
        } else {
            Mode::Whole {
                kept: Some(Vec::new()),
                limit: if settlement.charged {
                    crate::MAX_WHOLE_ANSWER
                } else {
                    OBSERVED_WHOLE
                },
            }
        };
        let tapped = Tapped {
            upstream: body.into_data_stream(),
            mode,
            usage: None,
            settlement: Some(settlement),
        };
        self.tell(Response::from_parts(parts, Body::from_stream(tapped)))
    }

    /// Adds `x-ratelimit-limit-*` and `x-ratelimit-remaining-*` (the key's own limits) to a
    /// served answer.
    pub(crate) fn tell(&self, mut response: Response) -> Response {
        for (kind, limit, left) in &self.left {
            let unit = match kind {
                RateKind::Requests => "requests",
                RateKind::Tokens => "tokens",
            };
            let headers = response.headers_mut();
            for (name, value) in [("limit", limit), ("remaining", left)] {
                if let (Ok(header), Ok(value)) = (
                    axum::http::HeaderName::try_from(format!("x-ratelimit-{name}-{unit}")),
                    HeaderValue::try_from(value.to_string()),
                ) {
                    headers.insert(header, value);
                }
            }
        }
        response
    }
}

impl Drop for Meter {
    /// A request dropped before its answer (its client went away while the provider was
    /// working) is charged its reservation.
    fn drop(&mut self) {
        if let Some(settlement) = self.settlement.take() {
            settlement.settle(None);
        }
    }
}

impl Settlement {
    /// Settles to `usage` (`None`: the provider reported nothing, so the reservation is
    /// charged), in the background; records the spend and the thresholds it reached.
    fn settle(mut self, usage: Option<Usage>) {
        if let Some(reported) = usage.as_ref().filter(|u| u.total() > 0) {
            self.payer.observe(reported);
        }
        // The request's span ends with its answer, not with this settlement.
        self.payer.span = tracing::Span::none();
        if !self.charged {
            return;
        }
        let estimated = usage.is_none();
        let tokens = usage.map_or(self.estimated_tokens, |u| u.total());
        let usage = usage.unwrap_or(self.reserved);
        let cost = self.pricing.map_or(0, |p| p.cost_micros(&usage));
        if self.pricing.is_some() {
            self.payer.metrics.cost(&self.payer.model, cost);
        }
        tokio::spawn(async move {
            let crossed = match &self.grant {
                Some(grant) => match self.limits.settle(grant, cost, tokens).await {
                    Ok(crossed) => crossed,
                    Err(error) => {
                        // The reservation stays counted until its period ends: spend is
                        // overstated, never understated.
                        tracing::error!(%error, "settlement failed; the reservation stays counted");
                        Vec::new()
                    }
                },
                None => Vec::new(),
            };
            if let Some(room) = self.room {
                let mut event = self.payer.event(EventType::SpendDebited, Outcome::Success);
                let key = &self.payer.key;
                event.details.extend(
                    json!({
                        "user_id": key.user_id,
                        "team_id": key.team_id,
                        "input_tokens": usage.prompt_tokens,
                        "cached_tokens": usage.cached_tokens,
                        "output_tokens": usage.completion_tokens,
                        "cost_micros": cost,
                        "cost_usd": micros_to_usd(cost),
                        "estimated": estimated,
                    })
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
                );
                room.publish(event);
            }
            for reached in crossed {
                threshold_event(&self.payer, &reached).await;
            }
        });
    }
}

/// Records `budget.threshold_reached` (once per budget, threshold and period).
async fn threshold_event(payer: &Payer, reached: &Crossed) {
    let Some(bus) = &payer.bus else { return };
    let mut event = payer.event(EventType::BudgetThresholdReached, Outcome::Success);
    event.details.extend(
        json!({
            "budget": reached.name,
            "percent": reached.percent,
            "spent_usd": micros_to_usd(reached.spent_micros),
        })
        .as_object()
        .cloned()
        .unwrap_or_default(),
    );
    match bus.reserve().await {
        Ok(room) => room.publish(event),
        Err(error) => tracing::error!(%error, "budget threshold event not recorded"),
    }
}

/// Most of a whole answer kept to read its usage when nothing is charged (metrics and spans
/// only): larger ones are relayed without it.
const OBSERVED_WHOLE: usize = 1024 * 1024;

/// How an answer is read for its usage.
enum Mode {
    /// A JSON answer, kept (up to `limit` bytes) to read its `usage` at the end; `None` once
    /// past the limit.
    Whole { kept: Option<Vec<u8>>, limit: usize },
    /// An event stream, read event by event; the usage chunk is dropped when `strip_usage`.
    Events { framer: Framer, strip_usage: bool },
}

/// An answer on its way to the client, read for its usage; settles when it ends or is
/// dropped.
struct Tapped {
    upstream: BodyDataStream,
    mode: Mode,
    usage: Option<Usage>,
    settlement: Option<Settlement>,
}

/// The usage object of a completion or chunk, if it carries one.
/// `None` when it names neither prompt nor completion tokens (nothing reported: the
/// reservation is charged). Counts are bounded (a trillion tokens), whatever a provider says.
fn usage_of(value: &Value) -> Option<Usage> {
    const MAX_TOKENS: u64 = 1_000_000_000_000;
    let usage = value.get("usage")?.as_object()?;
    let tokens = |value: Option<&Value>| value.and_then(Value::as_u64).map(|n| n.min(MAX_TOKENS));
    let prompt = tokens(usage.get("prompt_tokens"));
    let completion = tokens(usage.get("completion_tokens"));
    if prompt.is_none() && completion.is_none() {
        return None;
    }
    Some(Usage {
        prompt_tokens: prompt.unwrap_or(0),
        cached_tokens: tokens(
            usage
                .get("prompt_tokens_details")
                .and_then(|d| d.get("cached_tokens")),
        )
        .unwrap_or(0),
        completion_tokens: completion.unwrap_or(0),
    })
}

impl Tapped {
    /// The bytes of `chunk` to relay: as they came for a whole answer; event by event for a
    /// stream, without the usage chunk when it is to be stripped. `Err` for a stream that
    /// cannot be read.
    fn relay(&mut self, chunk: Bytes) -> Result<Bytes, std::io::Error> {
        match &mut self.mode {
            Mode::Whole { kept, limit } => {
                match kept {
                    Some(bytes) if bytes.len() + chunk.len() <= *limit => {
                        bytes.extend_from_slice(&chunk);
                    }
                    _ => *kept = None,
                }
                Ok(chunk)
            }
            Mode::Events {
                framer,
                strip_usage,
            } => {
                let mut out = String::new();
                for frame in framer.push(&chunk) {
                    let Frame::Event(event) = frame else {
                        return Err(std::io::Error::other("an event stream that cannot be read"));
                    };
                    let read = event
                        .data
                        .as_deref()
                        .filter(|data| data.contains("\"usage\""))
                        .and_then(|data| serde_json::from_str::<Value>(data).ok());
                    if let Some(chunk) = &read
                        && let Some(usage) = usage_of(chunk)
                    {
                        self.usage = Some(usage);
                        let only_usage = chunk
                            .get("choices")
                            .and_then(Value::as_array)
                            .is_some_and(Vec::is_empty);
                        if *strip_usage && only_usage {
                            continue;
                        }
                    }
                    out.push_str(&event.with_data(event.data.as_deref()));
                }
                Ok(Bytes::from(out))
            }
        }
    }

    /// The answer ended, or was dropped (the server stops reading an answer of known length
    /// at its end, or the client went): read a whole answer's usage, and settle to it, or to
    /// the reservation when the provider's usage was not seen.
    fn finish(&mut self) {
        if self.settlement.is_none() {
            return;
        }
        if let Mode::Whole {
            kept: Some(kept), ..
        } = &self.mode
        {
            self.usage = serde_json::from_slice::<Value>(kept)
                .ok()
                .as_ref()
                .and_then(usage_of);
        }
        if let Some(settlement) = self.settlement.take() {
            settlement.settle(self.usage);
        }
    }
}

impl Stream for Tapped {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let Some(polled) = std::task::ready!(this.upstream.poll_next_unpin(cx)) else {
                this.finish();
                return Poll::Ready(None);
            };
            let relayed = polled
                .map_err(std::io::Error::other)
                .and_then(|chunk| this.relay(chunk));
            match relayed {
                Ok(bytes) if bytes.is_empty() => {}
                other => return Poll::Ready(Some(other)),
            }
        }
    }
}

impl Drop for Tapped {
    /// An answer not read to its end (the client went, or it broke off) is charged what the
    /// provider reported so far, else the reservation.
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_case_counts_every_byte_and_the_completion_allowed() {
        let mut request = Map::new();
        let worst = worst_case(&request, true, 400, None);
        assert_eq!(
            (worst.prompt_tokens, worst.completion_tokens),
            (400, DEFAULT_COMPLETION_TOKENS)
        );
        assert_eq!(
            estimated_tokens(&worst, 400),
            100 + DEFAULT_COMPLETION_TOKENS
        );
        let embedding = worst_case(&request, false, 400, None);
        assert_eq!(
            embedding.completion_tokens, 0,
            "embeddings complete nothing"
        );
        let route_default = Pricing {
            default_max_tokens: Some(64),
            ..Pricing::default()
        };
        assert_eq!(
            worst_case(&request, true, 0, Some(&route_default)).completion_tokens,
            64
        );
        request.insert("max_tokens".into(), Value::from(50));
        assert_eq!(worst_case(&request, true, 400, None).completion_tokens, 50);
        // The larger of the two fields counts: a provider may read either.
        request.insert("max_completion_tokens".into(), Value::from(20));
        assert_eq!(worst_case(&request, true, 400, None).completion_tokens, 50);
        request.insert("max_tokens".into(), Value::from(4096.5));
        request.insert("n".into(), Value::from(128));
        assert_eq!(
            worst_case(&request, true, 0, None).completion_tokens,
            4097 * 128
        );
        request.insert("max_tokens".into(), Value::from(-5));
        request.insert("max_completion_tokens".into(), Value::from(1e300));
        assert_eq!(
            worst_case(&request, true, 0, None).completion_tokens,
            u64::MAX
        );
    }

    #[test]
    fn usage_is_read_with_its_cached_tokens() {
        let chunk = json!({"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 4}}});
        assert_eq!(
            usage_of(&chunk),
            Some(Usage {
                prompt_tokens: 10,
                cached_tokens: 4,
                completion_tokens: 5
            })
        );
        assert_eq!(usage_of(&json!({"usage": null})), None);
        assert_eq!(usage_of(&json!({"usage": {}})), None, "nothing reported");
        let huge = usage_of(&json!({"usage": {"prompt_tokens": u64::MAX}})).unwrap();
        assert_eq!(huge.prompt_tokens, 1_000_000_000_000);
    }

    fn tapped(strip_usage: bool) -> Tapped {
        Tapped {
            upstream: Body::empty().into_data_stream(),
            mode: Mode::Events {
                framer: Framer::new(MAX_EVENT),
                strip_usage,
            },
            usage: None,
            settlement: None,
        }
    }

    const STREAM: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\r\n\r\n\
        data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n\
        data: [DONE]\n\n";

    #[test]
    fn a_streams_usage_chunk_is_read_and_removed_unless_the_client_asked() {
        let (head, tail) = STREAM.split_at(30);
        let mut stripped = tapped(true);
        let mut out = stripped.relay(Bytes::from(head)).unwrap().to_vec();
        out.extend_from_slice(&stripped.relay(Bytes::from(tail)).unwrap());
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("\"hi\"") && out.contains("[DONE]"), "{out}");
        assert!(!out.contains("prompt_tokens"), "{out}");
        let read = Usage {
            prompt_tokens: 3,
            cached_tokens: 0,
            completion_tokens: 2,
        };
        assert_eq!(stripped.usage, Some(read));
        let mut kept = tapped(false);
        let out = kept.relay(Bytes::from(STREAM)).unwrap();
        assert!(String::from_utf8_lossy(&out).contains("prompt_tokens"));
        assert_eq!(kept.usage, Some(read));
        let mut broken = tapped(true);
        assert!(broken.relay(Bytes::from(&b"data: \xff\n\n"[..])).is_err());
    }

    #[test]
    fn a_stream_is_made_to_ask_for_its_usage() {
        let mut request = Map::new();
        assert!(
            ask_for_usage(&mut request),
            "not a stream: nothing to strip"
        );
        request.insert("stream".into(), Value::Bool(true));
        assert!(!ask_for_usage(&mut request));
        assert_eq!(request["stream_options"]["include_usage"], true);
        assert!(
            ask_for_usage(&mut request),
            "asked now, as the client would have"
        );
    }

    #[test]
    fn a_completion_without_a_limit_is_held_to_its_reservation() {
        let pricing = Pricing {
            default_max_tokens: Some(256),
            ..Pricing::default()
        };
        for given in [None, Some(json!(0)), Some(json!(-3)), Some(json!("many"))] {
            let mut request = Map::new();
            if let Some(given) = given {
                request.insert("max_tokens".into(), given);
            }
            hold_to_reservation(&mut request, Some(&pricing));
            assert_eq!(request["max_completion_tokens"], 256);
        }
        let mut limited: Map<String, Value> = [("max_tokens".to_owned(), json!(0.5))]
            .into_iter()
            .collect();
        hold_to_reservation(&mut limited, None);
        assert!(
            !limited.contains_key("max_completion_tokens"),
            "its own limit stands"
        );
    }
}
