//! The OpenAI-compatible endpoints. Each request reads the snapshot once, then:
//! authenticate (key hash lookup) → key checks (expiry, CIDR) → bounded body read →
//! model allowlist → route → policy decision → guardrails on the request → provider adapter,
//! relaying the answer as it arrives (through the guardrails for chat completions).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use routero_bus::{EventBus, Reservation};
use routero_core::audit::{ActorKind, AuditEvent, EventType, Outcome, UNATTRIBUTED_TENANT};
use routero_core::{AuthFailures, ErrorCode, KeyPolicy, Resource, Verdict};
use routero_http::{BodyError, Deadlines};
use serde_json::{Map, Value, json};
use tracing::Instrument as _;

use crate::caller::{Caller, authenticate, client_ip};
use crate::guard::{Blocked, Counts};
use crate::live::SnapshotCell;
use crate::provider::{Endpoint, Provider};
use crate::refusal::Refused;

/// What handlers share.
pub struct App {
    /// The snapshot requests are decided from, swapped whole as the control plane sends them.
    pub(crate) snapshots: Arc<SnapshotCell>,
    /// The HTTP client that forwards to providers, within the egress policy.
    pub(crate) provider: Provider,
    /// Peers whose `X-Forwarded-For` names the client (a load balancer, an ingress).
    pub(crate) trusted_proxies: Vec<IpNet>,
    /// Largest request body read, in bytes (413 `body_too_large` beyond).
    pub(crate) max_body_bytes: usize,
    /// Where each request's audit event goes; `None` when auditing is not configured.
    pub(crate) audit: Option<EventBus>,
    /// The policy engine, when configured.
    pub(crate) authorizer: Option<routero_authz::Authorizer>,
    /// How long clients may take.
    pub(crate) deadlines: Deadlines,
    /// Failed authentications per source address and minute.
    pub(crate) failures: Arc<AuthFailures>,
    /// Each deployment's circuit breaker in this replica.
    pub(crate) breakers: Arc<crate::breaker::Breakers>,
    /// The order routes try their deployments in, and their retry budgets, in this replica.
    pub(crate) balancer: crate::routing::Balancer,
    /// Where budgets and rate limits are counted: in this process, or in Redis for every
    /// replica.
    pub(crate) limits: Arc<routero_limits::Limits>,
    /// What Prometheus scrapes.
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// Whether requests make spans (the process exports them).
    pub(crate) traced: bool,
    /// Whether every answer is read for its usage (tokens in metrics and spans), not only
    /// those of priced routes and limited keys.
    pub(crate) observed: bool,
}

/// The id of a request, set by the outermost layer and echoed in `x-request-id`.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub(crate) String);

/// What a request revealed about itself on its way, for its audit events.
struct Seen {
    key: Option<Arc<KeyPolicy>>,
    model: Option<String>,
    /// The tenant's route the model named, once found.
    route: Option<String>,
    /// The policy version that decided the request, when policies are on.
    policy_version: Option<String>,
    /// What the guardrails found, per stage (`request`, `response`).
    guardrails: Vec<(&'static str, Counts, Blocked)>,
    /// Room reserved on the audit bus for the events still to come.
    room: Vec<Reservation>,
    /// The request, for the event recorded if it is abandoned (the client went away).
    abandoned: Option<(Origin, Endpoint)>,
    /// `budget.exceeded`, when a budget refused the request.
    exceeded: Option<AuditEvent>,
    /// The request's span (disabled unless spans are exported).
    span: tracing::Span,
    /// How long the answering provider took to its answer's head, once it answered.
    upstream: Option<f64>,
}

impl Seen {
    /// Nothing seen yet of a request to `endpoint` from `origin`.
    fn for_request(origin: &Origin, endpoint: Endpoint, span: tracing::Span) -> Self {
        Self {
            span,
            upstream: None,
            key: None,
            model: None,
            route: None,
            policy_version: None,
            guardrails: Vec::new(),
            room: Vec::new(),
            abandoned: Some((origin.clone(), endpoint)),
            exceeded: None,
        }
    }
}

impl Drop for Seen {
    /// A request dropped before it was recorded (its client closed the connection or reset
    /// the stream while the provider was working) still leaves its event, in the room it
    /// reserved: `request.failed` with `client_closed`.
    fn drop(&mut self) {
        let (Some((origin, endpoint)), Some(room)) = (self.abandoned.take(), self.room.pop())
        else {
            return;
        };
        let key = self.key.as_deref();
        let mut event = routero_bus::event(
            key.map_or(UNATTRIBUTED_TENANT, |k| k.tenant_id.as_str()),
            EventType::RequestFailed,
            origin.actor(key),
            routero_bus::resource("model", self.model.clone()),
            Outcome::Failure,
        );
        event.reason_code = Some("client_closed".into());
        event.request_id = Some(origin.request_id);
        event.policy_version.clone_from(&self.policy_version);
        event
            .details
            .insert("endpoint".into(), Value::from(endpoint.path()));
        room.publish(event);
    }
}

/// What a request's audit events share: who sent it and which request it is.
#[derive(Clone)]
struct Origin {
    client: IpAddr,
    user_agent: Option<String>,
    request_id: String,
}

impl Origin {
    fn actor(&self, key: Option<&KeyPolicy>) -> routero_core::audit::Actor {
        let mut actor = routero_bus::actor(
            if key.is_some() {
                ActorKind::VirtualKey
            } else {
                ActorKind::Anonymous
            },
            key.map(|k| k.key_id.clone()),
        );
        actor.source_ip = Some(self.client.to_string());
        actor.user_agent.clone_from(&self.user_agent);
        actor
    }

    /// `request.guardrail_triggered`: detectors, actions and counts, never the matched text.
    fn guardrail_event(
        &self,
        key: &KeyPolicy,
        model: Option<String>,
        stage: &str,
        counts: &Counts,
        blocked: Option<&str>,
    ) -> AuditEvent {
        let mut event = routero_bus::event(
            &key.tenant_id,
            EventType::RequestGuardrailTriggered,
            self.actor(Some(key)),
            routero_bus::resource("model", model),
            if blocked.is_some() {
                Outcome::Denied
            } else {
                Outcome::Success
            },
        );
        event.reason_code = blocked.map(|_| ErrorCode::GuardrailBlocked.code().to_owned());
        event.request_id = Some(self.request_id.clone());
        event.details.insert("stage".into(), Value::from(stage));
        if let Some(detector) = blocked {
            event
                .details
                .insert("blocked_by".into(), Value::from(detector));
        }
        let findings: Vec<Value> = counts
            .iter()
            .map(|((detector, action), count)| {
                json!({ "detector": detector, "action": action, "count": count })
            })
            .collect();
        event
            .details
            .insert("findings".into(), Value::from(findings));
        event
    }
}

/// The caller of a read-only endpoint; a refusal is recorded (`request.blocked`) like a
/// proxied request's.
async fn caller(
    app: &App,
    peer: SocketAddr,
    headers: &HeaderMap,
    request_id: &RequestId,
    endpoint: &str,
) -> Result<Caller, Refused> {
    let client = client_ip(peer.ip(), headers, &app.trusted_proxies);
    let refused = match app.authenticate(headers, client) {
        Ok(caller) => return Ok(caller),
        Err(refused) => refused,
    };
    if !refused.counted_only {
        let origin = Origin {
            client,
            user_agent: routero_http::user_agent(headers),
            request_id: request_id.0.clone(),
        };
        let mut event = routero_bus::event(
            UNATTRIBUTED_TENANT,
            EventType::RequestBlocked,
            origin.actor(None),
            routero_bus::resource("endpoint", Some(endpoint.to_owned())),
            Outcome::Denied,
        );
        event.reason_code = Some(refused.refusal.code().to_owned());
        event.request_id = Some(origin.request_id);
        app.record_unreserved(event).await;
    }
    Err(refused)
}

/// The handler of every proxied endpoint; the route says which (an `Endpoint` extension).
pub(crate) async fn proxied(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(request_id): Extension<RequestId>,
    Extension(endpoint): Extension<Endpoint>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    audited(&app, peer, &headers, &request_id, body, endpoint).await
}

/// Proxies a request and records it. Room on the audit bus is reserved as soon as the caller
/// is authenticated (so unauthenticated traffic never holds any): one place for the request's
/// event and, when the tenant has guardrails, one per guardrail stage. A request that could not
/// be recorded is refused (or waits, per the bus's overflow policy) rather than served
/// unaudited, and its answer leaves only once its event is in the spool on disk.
async fn audited(
    app: &App,
    peer: SocketAddr,
    headers: &HeaderMap,
    request_id: &RequestId,
    body: Body,
    endpoint: Endpoint,
) -> Response {
    let origin = Origin {
        client: client_ip(peer.ip(), headers, &app.trusted_proxies),
        user_agent: routero_http::user_agent(headers),
        request_id: request_id.0.clone(),
    };
    let span = crate::trace::request(app.traced, headers, endpoint, &origin.request_id);
    let mut seen = Seen::for_request(&origin, endpoint, span.clone());
    let arrived = std::time::Instant::now();
    let handled = tokio::time::timeout(
        app.deadlines.request,
        proxy(app, &origin, headers, body, endpoint, &mut seen).instrument(span.clone()),
    )
    .await;
    let result = handled.unwrap_or_else(|_| Err(ErrorCode::DeadlineExceeded.into()));
    let head = arrived.elapsed().as_secs_f64();
    seen.abandoned = None;
    if let Some(upstream) = seen.upstream.filter(|_| result.is_ok()) {
        app.metrics.gateway(endpoint.path(), head - upstream);
    }
    for (stage, counts, _) in &seen.guardrails {
        app.metrics.findings(stage, counts);
    }
    if let Err(refused) = &result {
        crate::trace::failed(&span, refused);
    }
    app.metrics.request(
        endpoint.path(),
        seen.route.as_deref().unwrap_or("unknown"),
        match &result {
            Ok(response) if response.status().is_success() => "ok",
            Ok(response) if response.status().is_client_error() => "http_4xx",
            Ok(_) => "http_5xx",
            Err(refused) => refused.refusal.code(),
        },
        head,
    );
    let event = request_event(&seen, &origin, endpoint, &result);
    match seen.room.pop() {
        Some(room) => room.publish_durably(event).await,
        // A failed authentication past its source's first few in a minute is only counted,
        // into one record per source and minute.
        None if result.as_ref().is_err_and(|refused| refused.counted_only) => {}
        None => app.record_unreserved(event).await,
    }
    if let Some(exceeded) = seen.exceeded.take() {
        app.record_unreserved(exceeded).await;
    }
    if let Some(key) = &seen.key {
        for (stage, counts, blocked) in &seen.guardrails {
            let event =
                origin.guardrail_event(key, seen.model.clone(), stage, counts, blocked.as_deref());
            match seen.room.pop() {
                Some(room) => room.publish_durably(event).await,
                None => app.record_unreserved(event).await,
            }
        }
    }
    let answer = match result {
        Ok(response) => {
            let model = seen.model.as_deref().unwrap_or_default();
            Ok(crate::dialect::answer(endpoint, model, response).await)
        }
        Err(refused) => Err(crate::dialect::refusal(endpoint, refused)),
    };
    let first_token = app.observed.then(|| crate::trace::FirstToken {
        arrived,
        metrics: Arc::clone(&app.metrics),
        endpoint: endpoint.path(),
        model: seen.route.clone().unwrap_or_else(|| "unknown".into()),
    });
    crate::trace::answered(span, answer, first_token)
}

impl App {
    /// Authenticates the caller. A failure counts against its source address: the first few
    /// a minute are recorded one by one, the rest only counted, and past the limit the source
    /// is answered 429 until the minute ends (valid keys from it still pass: they are 256
    /// random bits, not guessable).
    fn authenticate(&self, headers: &HeaderMap, client: IpAddr) -> Result<Caller, Refused> {
        let now = routero_core::unix_now();
        // Every refusal here counts against its source (an unknown, expired or out-of-range
        // key, or a stale snapshot), so none can flood the audit log.
        let refusal = match authenticate(&self.snapshots, headers, client, now) {
            Ok(caller) => return Ok(caller),
            Err(refusal) => refusal,
        };
        let now = u64::try_from(now).unwrap_or(0);
        let verdict = self.failures.fail(client, now);
        let throttled =
            verdict == Verdict::Throttle && refusal != ErrorCode::ControlPlaneUnreachable;
        let mut refused = Refused::from(if throttled {
            ErrorCode::TooManyAuthFailures
        } else {
            refusal
        });
        refused.counted_only = verdict != Verdict::Record;
        if throttled {
            refused.retry_after = self.failures.throttled(client, now);
        }
        Err(refused)
    }

    /// Records an event no room was reserved for (a refusal before the body was in): waits
    /// for room and for the spool to have it, or, failing closed, logs that it could not.
    async fn record_unreserved(&self, event: AuditEvent) {
        if let Some(bus) = &self.audit {
            match bus.reserve().await {
                Ok(room) => room.publish_durably(event).await,
                Err(error) => {
                    tracing::error!(%error, "audit event of a refused request not recorded")
                }
            }
        }
    }

    /// Logs and records a deployment's breaker opening or closing.
    async fn breaker_changed(
        &self,
        tenant: &str,
        (credential, model): crate::breaker::Deployment<'_>,
        change: crate::breaker::Change,
    ) {
        let (action, opened) = match change {
            crate::breaker::Change::Opened => (EventType::DeploymentCircuitOpened, true),
            crate::breaker::Change::Closed => (EventType::DeploymentCircuitClosed, false),
        };
        self.metrics.breaker(opened);
        if opened {
            tracing::error!(%credential, %model, "deployment circuit opened: it gets no requests for a while");
        } else {
            tracing::info!(%credential, %model, "deployment circuit closed: it answered its probe");
        }
        let mut event = routero_bus::event(
            tenant,
            action,
            routero_bus::actor(ActorKind::System, None),
            routero_bus::resource("deployment", Some(format!("{credential}/{model}"))),
            Outcome::Success,
        );
        event
            .details
            .insert("credential_id".into(), Value::from(credential));
        event.details.insert("model".into(), Value::from(model));
        self.record_unreserved(event).await;
    }

    /// Reserves `count` places on the audit bus, or refuses the request.
    async fn reserve(&self, count: usize) -> Result<Vec<Reservation>, Refused> {
        let Some(bus) = &self.audit else {
            return Ok(Vec::new());
        };
        let mut room = Vec::with_capacity(count);
        for _ in 0..count {
            room.push(bus.reserve().await.map_err(|error| {
                tracing::error!(%error, "audit bus unavailable; refusing the request");
                Refused::from(ErrorCode::AuditUnavailable)
            })?);
        }
        Ok(room)
    }
}

/// The audit event of a proxied request: routed, blocked by the gateway, or failed upstream.
fn request_event(
    seen: &Seen,
    origin: &Origin,
    endpoint: Endpoint,
    result: &Result<Response, Refused>,
) -> AuditEvent {
    let (action, outcome, reason, status) = match result {
        Ok(response) if response.status().is_success() => (
            EventType::RequestRouted,
            Outcome::Success,
            None,
            response.status().as_u16(),
        ),
        Ok(response) => (
            EventType::RequestFailed,
            Outcome::Failure,
            None,
            response.status().as_u16(),
        ),
        Err(refused) => {
            let upstream = matches!(
                refused.refusal,
                ErrorCode::UpstreamUnreachable
                    | ErrorCode::UpstreamTimeout
                    | ErrorCode::UpstreamAuthFailed
                    | ErrorCode::UpstreamError
                    | ErrorCode::UpstreamRateLimited
            );
            let (action, outcome) = if upstream {
                (EventType::RequestFailed, Outcome::Failure)
            } else {
                (EventType::RequestBlocked, Outcome::Denied)
            };
            (
                action,
                outcome,
                Some(refused.refusal.code()),
                refused.refusal.http_status(),
            )
        }
    };
    let key = seen.key.as_deref();
    let tenant = key.map_or(UNATTRIBUTED_TENANT, |k| k.tenant_id.as_str());
    let mut event = routero_bus::event(
        tenant,
        action,
        origin.actor(key),
        routero_bus::resource("model", seen.model.clone()),
        outcome,
    );
    event.reason_code = reason.map(str::to_owned);
    event.request_id = Some(origin.request_id.clone());
    event.policy_version.clone_from(&seen.policy_version);
    event
        .details
        .insert("endpoint".into(), Value::from(endpoint.path()));
    event.details.insert("status".into(), Value::from(status));
    event
}

/// A request's way through the gateway, stage by stage: admit (the caller, its body, room for
/// its events) → read (the body as a request for a model) → route and authorize (the
/// policies) → guard the request → forward (the provider) → relay (guardrails on the answer).
/// Each stage returns what it found; only this function writes it down in `seen`, for the
/// request's audit events (also when a later stage refuses, or the client walks away).
async fn proxy(
    app: &App,
    origin: &Origin,
    headers: &HeaderMap,
    body: Body,
    endpoint: Endpoint,
    seen: &mut Seen,
) -> Result<Response, Refused> {
    let caller = {
        let _stage = crate::trace::stage(&seen.span, "authenticate").entered();
        app.authenticate(headers, origin.client)?
    };
    seen.span
        .record("routero.tenant_id", caller.key.tenant_id.as_str());
    seen.span
        .record("routero.key_id", caller.key.key_id.as_str());
    seen.key = Some(Arc::clone(&caller.key));
    // The tenant's guardrails, looked up once: how much audit room to reserve, and later which
    // pipeline to apply (or, if it could not be compiled, the refusal).
    let guard = caller.live.guard(&caller.key.tenant_id);
    let admitted = admit(app, matches!(guard, Ok(Some(_))), body).await?;
    seen.room = admitted.room;
    let (request, model) = read(&admitted.bytes, endpoint)?;
    seen.model = Some(model.clone());
    let mut request = crate::dialect::request(endpoint, request)?;
    let route = route_of(&caller, &model)?;
    seen.span
        .record("gen_ai.request.model", route.name.as_str());
    seen.route = Some(route.name.clone());
    let snapshot = &caller.live.snapshot;
    if app.authorizer.is_some() || !snapshot.policy_version.is_empty() {
        seen.policy_version = Some(snapshot.policy_version.clone()).filter(|v| !v.is_empty());
        authorize(app, &snapshot.policy_version, &caller.key, route)
            .instrument(crate::trace::stage(&seen.span, "authorize"))
            .await?;
    }
    let guard = guard
        .map_err(|()| ErrorCode::GuardrailUnavailable)?
        .cloned();
    let completes = endpoint.completes();
    let payer = || crate::meter::Payer {
        key: Arc::clone(&caller.key),
        model: route.name.clone(),
        request_id: origin.request_id.clone(),
        actor: origin.actor(Some(&caller.key)),
        bus: app.audit.clone(),
        span: seen.span.clone(),
        metrics: Arc::clone(&app.metrics),
    };
    let meter = crate::meter::count(
        &app.limits,
        snapshot,
        route,
        (&request, completes),
        (admitted.bytes.len(), &caller.key, payer),
        app.observed,
    )
    .await
    .map_err(|not| {
        seen.exceeded = not.exceeded;
        not.refused
    })?;
    if meter.charges() && completes {
        crate::meter::hold_to_reservation(&mut request, route.pricing.as_ref());
    }
    // Only a charged request is changed to ask for its usage; one merely observed is not.
    let asked = crate::meter::asked_for_usage(&request);
    let keep_usage = !meter.charges() || crate::meter::ask_for_usage(&mut request);
    if let Some(guard) = &guard {
        let guarded = {
            let _stage = crate::trace::stage(&seen.span, "guard").entered();
            guard_request(guard, &route.name, &mut request)
        };
        let (counts, blocked) = match guarded {
            Ok(found) => found,
            Err(refused) => {
                meter.release();
                return Err(refused);
            }
        };
        let refuse = blocked.is_some();
        if !counts.is_empty() {
            seen.guardrails.push(("request", counts, blocked));
        }
        if refuse {
            meter.release();
            return Err(ErrorCode::GuardrailBlocked.into());
        }
    }
    let response = match forward(app, &caller, route, endpoint, request, &seen.span).await {
        Ok((response, upstream)) => {
            seen.upstream = Some(upstream);
            meter.tap(response, !keep_usage, asked)
        }
        Err(refused) => {
            if refused.refusal == ErrorCode::UpstreamTimeout {
                // The provider may have worked (and billed) past the deadline: charged the
                // reservation.
                drop(meter);
            } else {
                meter.release();
            }
            return Err(refused);
        }
    };
    let Some(guard) = guard.filter(|_| endpoint.completes()) else {
        return Ok(response);
    };
    let stream_room = seen.room.pop();
    let relayed = relay(
        origin,
        &caller.key,
        seen.model.clone(),
        &route.name,
        guard,
        response,
        (stream_room, Arc::clone(&app.metrics)),
    )
    .await;
    if let Some((counts, blocked)) = relayed.findings.filter(|(counts, _)| !counts.is_empty()) {
        seen.guardrails.push(("response", counts, blocked));
    }
    relayed.answer
}

/// Admission: the caller's body, read whole within its deadline, and room on the audit bus
/// for the request's event (and one per guardrail stage when the tenant has guardrails; the
/// streamed response's stage takes its place with it), reserved once the caller is
/// authenticated and its body is in, held only while needed.
struct Admitted {
    bytes: axum::body::Bytes,
    room: Vec<Reservation>,
}

async fn admit(app: &App, guarded: bool, body: Body) -> Result<Admitted, Refused> {
    let bytes = routero_http::read_body(body, app.max_body_bytes, app.deadlines.body)
        .await
        .map_err(|error| match error {
            BodyError::TooLarge => Refused::from(ErrorCode::BodyTooLarge),
            BodyError::Timeout => Refused::from(ErrorCode::RequestTimeout),
            BodyError::Unreadable => Refused::invalid("the request body could not be read"),
        })?;
    let room = app.reserve(if guarded { 3 } else { 1 }).await?;
    Ok(Admitted { bytes, room })
}

/// The body as a request: a JSON object naming a valid model and carrying the field the
/// endpoint needs. Returns the request and its model.
fn read(bytes: &[u8], endpoint: Endpoint) -> Result<(Map<String, Value>, String), Refused> {
    let request: Map<String, Value> = serde_json::from_slice(bytes)
        .map_err(|e| Refused::invalid(format!("the body must be a JSON object: {e}")))?;
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| Refused::invalid("model: a string is required"))?;
    if !routero_core::is_valid_name(model) {
        return Err(Refused::invalid(
            "model: 1-128 characters of letters, digits and -_.:/@",
        ));
    }
    if !request.contains_key(endpoint.required_field()) {
        return Err(Refused::invalid(format!(
            "{} is required",
            endpoint.required_field()
        )));
    }
    let model = model.to_owned();
    Ok((request, model))
}

/// The route of `model`, which the key must be allowed to use.
fn route_of<'c>(caller: &'c Caller, model: &str) -> Result<&'c routero_core::ModelRoute, Refused> {
    if !caller.key.allows_model(model) {
        return Err(ErrorCode::ModelNotAllowed.into());
    }
    Ok(caller
        .live
        .snapshot
        .route(&caller.key.tenant_id, model)
        .ok_or(ErrorCode::NotFound(Resource::Model))?)
}

/// The request's guardrails: rewrites `request` and returns what they found, and the
/// detector that blocks it, if any.
fn guard_request(
    guard: &crate::guard::TenantGuard,
    route: &str,
    request: &mut Map<String, Value>,
) -> Result<(Counts, Blocked), Refused> {
    let mut counts = Counts::new();
    let blocked = guard
        .request(route, request, &mut counts)
        .map_err(|crate::guard::Uninspectable| ErrorCode::GuardrailUninspectable)?;
    Ok((counts, blocked))
}

/// Whether an attempt failed in a way another deployment may not (no connection, no response
/// head in time, a 5xx, a 429): what breakers count and fallbacks follow. A provider's
/// refusal of the request itself (a context window, a content filter: a 4xx) is the
/// client's answer and is not retried.
fn deployment_failed(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::UpstreamUnreachable
            | ErrorCode::UpstreamTimeout
            | ErrorCode::UpstreamError
            | ErrorCode::UpstreamRateLimited
    )
}

/// How an attempt went, for its deployment's breaker: `None` when it says nothing of the
/// deployment's health (a refusal of the request, or of the credential).
fn outcome(code: Option<ErrorCode>) -> Option<crate::breaker::Outcome> {
    use crate::breaker::Outcome;
    match code {
        None => Some(Outcome::Answered),
        Some(ErrorCode::UpstreamRateLimited) => Some(Outcome::RateLimited),
        Some(code) if deployment_failed(code) => Some(Outcome::Failed),
        Some(_) => None,
    }
}

/// Sends the request to the route's deployments in the order its strategy gives, skipping any
/// whose provider cannot be used here or whose breaker is open, and falling back to the next
/// when an attempt fails before anything reached the client: at most the route's attempts,
/// each retry within the route's retry budget; a stream whose head was relayed is never
/// retried. Names each deployment's model.
async fn forward(
    app: &App,
    caller: &Caller,
    route: &routero_core::ModelRoute,
    endpoint: Endpoint,
    mut request: Map<String, Value>,
    span: &tracing::Span,
) -> Result<(Response, f64), Refused> {
    let mut refusal: Option<Refused> = None;
    let mut timed_out = None;
    let mut attempts = 0;
    // Within the API's bounds whatever the snapshot says.
    let max_attempts = route
        .routing
        .max_attempts
        .unwrap_or(routero_core::DEFAULT_MAX_ATTEMPTS)
        .clamp(1, 5);
    let strategy = route.routing.strategy;
    let tracked = matches!(
        strategy,
        routero_core::Strategy::LeastLatency | routero_core::Strategy::LeastBusy
    );
    if route.deployments.len() > 1 {
        app.balancer.count_request(route, std::time::Instant::now());
    }
    for index in app.balancer.order(route) {
        let Some(deployment) = route.deployments.get(index) else {
            continue;
        };
        if attempts == max_attempts {
            break;
        }
        let upstream = match caller
            .live
            .upstream(&route.tenant_id, &deployment.credential_id)
        {
            Ok(upstream) => upstream,
            Err(why) => {
                refusal.get_or_insert(why.into());
                continue;
            }
        };
        request.insert(
            "model".into(),
            Value::String(deployment.upstream_model.clone()),
        );
        // A request this deployment cannot be sent (its dialect cannot say it) may suit the
        // next one.
        let outgoing = match upstream.request(endpoint, &deployment.upstream_model, &request) {
            Ok(outgoing) => outgoing.within(&route.routing),
            Err(refused) => {
                refusal.get_or_insert(refused);
                continue;
            }
        };
        let id = (
            deployment.credential_id.as_str(),
            deployment.upstream_model.as_str(),
        );
        // The budget is asked before the breaker: an open breaker's probe, once admitted, is
        // sent.
        let now = std::time::Instant::now();
        if attempts > 0 && !app.balancer.may_retry(route, now) {
            tracing::warn!(route = %route.name, "retry budget spent; not falling back");
            break;
        }
        if !app.breakers.admit(id, now) {
            refusal.get_or_insert(ErrorCode::UpstreamUnreachable.into());
            continue;
        }
        if attempts > 0 {
            app.balancer.retried(route, now);
        }
        attempts += 1;
        let in_flight = tracked.then(|| app.balancer.start(id));
        let attempt = crate::trace::upstream(span, upstream.provider_name(), id.1);
        let sent = std::time::Instant::now();
        let answer = app
            .provider
            .forward(upstream, outgoing.traced(&attempt))
            .instrument(attempt.clone())
            .await;
        let took = sent.elapsed().as_secs_f64();
        match &answer {
            Ok(_) => {
                span.record("gen_ai.provider.name", upstream.provider_name());
                app.metrics.upstream(upstream.provider_name(), "ok", took);
            }
            Err(refused) => {
                crate::trace::failed(&attempt, refused);
                app.metrics
                    .upstream(upstream.provider_name(), refused.refusal.code(), took);
            }
        }
        let code = answer.as_ref().err().map(|refused| refused.refusal);
        if let Some(outcome) = outcome(code)
            && let Some(change) = app.breakers.record(id, outcome, std::time::Instant::now())
        {
            app.breaker_changed(&route.tenant_id, id, change).await;
        }
        match answer {
            Err(refused)
                if code.is_some_and(deployment_failed)
                    || refused.refusal == ErrorCode::UpstreamAuthFailed =>
            {
                if let Some(in_flight) = in_flight {
                    in_flight.failed();
                }
                tracing::warn!(credential = %id.0, model = %id.1, code = refused.refusal.code(), "deployment failed; trying the next");
                if refused.refusal == ErrorCode::UpstreamTimeout {
                    timed_out = Some(ErrorCode::UpstreamTimeout.into());
                }
                refusal = Some(refused);
            }
            Ok(response) => {
                let response = match in_flight {
                    Some(in_flight) => in_flight.answered(response),
                    None => response,
                };
                return Ok((response, took));
            }
            Err(refused) => return Err(refused),
        }
    }
    // A provider that timed out may have worked (and billed): that is what the request failed
    // with, so the meter charges its reservation.
    Err(timed_out
        .or(refusal)
        .unwrap_or_else(|| ErrorCode::UpstreamUnreachable.into()))
}

/// What relaying an answer gave: the answer (or its refusal), and what the guardrails found
/// in it when it was read whole (a stream's findings leave with its own event).
struct Relayed {
    answer: Result<Response, Refused>,
    findings: Option<(Counts, Blocked)>,
}

/// Relays a chat completion through the guardrails before the client sees it: whole, or
/// streamed through the hold-back, its event leaving in `stream_room` (and its findings
/// counted in `metrics`) when the stream ends.
async fn relay(
    origin: &Origin,
    key: &Arc<KeyPolicy>,
    model: Option<String>,
    route: &str,
    guard: Arc<crate::guard::TenantGuard>,
    response: Response,
    (stream_room, metrics): (Option<Reservation>, Arc<crate::metrics::Metrics>),
) -> Relayed {
    let (mut parts, body) = response.into_parts();
    let streamed = crate::sse::is_event_stream(&parts.headers);
    parts.headers.remove(header::CONTENT_LENGTH);
    if streamed {
        let (origin, key) = (origin.clone(), Arc::clone(key));
        let body = guard.stream(route.to_owned(), body, move |counts, blocked| {
            metrics.findings("response", &counts);
            if let Some(room) = stream_room.filter(|_| !counts.is_empty()) {
                room.publish(origin.guardrail_event(
                    &key,
                    model,
                    "response",
                    &counts,
                    blocked.as_deref(),
                ));
            }
        });
        return Relayed {
            answer: Ok(Response::from_parts(parts, body)),
            findings: None,
        };
    }
    let unreadable = |_| Refused::from(ErrorCode::UpstreamError);
    let read = async {
        let bytes = axum::body::to_bytes(body, crate::MAX_WHOLE_ANSWER)
            .await
            .map_err(unreadable)?;
        // What cannot be read cannot be scanned: refused rather than relayed unscanned.
        serde_json::from_slice::<Value>(&bytes).map_err(|_| Refused::from(ErrorCode::UpstreamError))
    };
    let mut completion = match read.await {
        Ok(completion) => completion,
        Err(refused) => {
            return Relayed {
                answer: Err(refused),
                findings: None,
            };
        }
    };
    let mut counts = Counts::new();
    let blocked = guard.response(route, &mut completion, &mut counts);
    let answer = if blocked.is_some() {
        Err(ErrorCode::GuardrailBlocked.into())
    } else {
        serde_json::to_vec(&completion)
            .map(|body| Response::from_parts(parts, Body::from(body)))
            .map_err(|_| ErrorCode::UpstreamError.into())
    };
    Relayed {
        answer,
        findings: Some((counts, blocked)),
    }
}

/// Asks the policies whether the key may invoke the route's model. Fails closed: policies in
/// the snapshot but no engine here, an engine here but no policy version in the snapshot (a
/// control plane without policies), or no answer, all refuse.
async fn authorize(
    app: &App,
    policy_version: &str,
    key: &KeyPolicy,
    route: &routero_core::ModelRoute,
) -> Result<(), Refused> {
    let Some(authorizer) = app
        .authorizer
        .as_ref()
        .filter(|_| !policy_version.is_empty())
    else {
        tracing::error!(
            engine = app.authorizer.is_some(),
            policy_version,
            "policy engine and snapshot disagree on whether policies decide; refusing"
        );
        return Err(ErrorCode::PolicyEngineUnavailable.into());
    };
    let principal = routero_authz::Principal {
        id: &key.key_id,
        roles: &key.roles,
        tenant: &key.tenant_id,
        teams: key.team_id.as_slice(),
        permissions: &[],
    };
    let target = routero_authz::Target {
        kind: "model",
        id: &route.name,
        tenant: &route.tenant_id,
        attributes: &route.tags,
    };
    let decided = authorizer
        .decide(policy_version, &principal, &target, "invoke")
        .await;
    app.metrics.decision(decided.as_ref().ok().copied());
    match decided.map(|decision| decision.allowed) {
        Ok(true) => Ok(()),
        Ok(false) => Err(ErrorCode::PolicyDenied.into()),
        Err(error) => {
            tracing::error!(%error, "policy engine unavailable; refusing");
            Err(ErrorCode::PolicyEngineUnavailable.into())
        }
    }
}

fn model_object(name: &str) -> Value {
    json!({ "id": name, "object": "model", "created": 0, "owned_by": "routero" })
}

pub(crate) async fn list_models(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
) -> Result<Json<Value>, Refused> {
    let caller = caller(&app, peer, &headers, &request_id, "/v1/models").await?;
    let data: Vec<Value> = caller
        .live
        .snapshot
        .models_for(&caller.key)
        .into_iter()
        .map(model_object)
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

pub(crate) async fn get_model(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    Path(model): Path<String>,
) -> Result<Json<Value>, Refused> {
    let caller = caller(&app, peer, &headers, &request_id, "/v1/models/{model}").await?;
    let visible = caller.key.allows_model(&model)
        && caller
            .live
            .snapshot
            .route(&caller.key.tenant_id, &model)
            .is_some();
    // A model the key may not use is reported as absent: its existence is not disclosed.
    visible
        .then(|| Json(model_object(&model)))
        .ok_or(ErrorCode::NotFound(Resource::Model).into())
}

pub(crate) async fn ready(State(app): State<Arc<App>>) -> Response {
    match app.snapshots.current() {
        Some(live) => Json(json!({
            "status": "ready",
            "version": live.snapshot.version,
            "last_contact_ms": app.snapshots.last_contact_ms(),
        }))
        .into_response(),
        None => Refused {
            detail: Some(app.snapshots.not_ready_reason()),
            ..Refused::from(ErrorCode::ControlPlaneUnreachable)
        }
        .into_response(),
    }
}

/// Contains a handler's panic: the client gets 500 `internal_error` instead of a dropped
/// connection, and the panic is recorded (`request.failed`, under no tenant: the caller is
/// not known out here; the panic's text stays in the log, it may hold client data).
pub(crate) async fn contain_panics(
    State(app): State<Arc<App>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip().to_string());
    match routero_http::unwinding(next.run(request)).await {
        Ok(response) => response,
        Err(panic) => {
            tracing::error!(%panic, %path, "handler panicked; answered 500 internal_error");
            let mut actor = routero_bus::actor(ActorKind::Anonymous, None);
            actor.source_ip = peer;
            let mut event = routero_bus::event(
                UNATTRIBUTED_TENANT,
                EventType::RequestFailed,
                actor,
                routero_bus::resource("endpoint", Some(path)),
                Outcome::Failure,
            );
            event.reason_code = Some(ErrorCode::InternalError.code().to_owned());
            app.record_unreserved(event).await;
            Refused::from(ErrorCode::InternalError).into_response()
        }
    }
}

pub(crate) async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": {"message": "No such endpoint.", "type": "invalid_request_error", "param": null, "code": "unknown_url"}})),
    )
        .into_response()
}
