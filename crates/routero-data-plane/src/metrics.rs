//! The data plane's Prometheus metrics, served on a port of their own. Labels are bounded:
//! endpoint, the route a request resolved to (`unknown` when it named none of its tenant's),
//! the provider kind, the outcome code (`ok`, a refusal's stable code, or `http_4xx`/`http_5xx`
//! for an upstream answer passed on), guardrail detectors and actions; never keys, users or
//! client text. Past the series bound, new routes (and detectors) count as `other`.

use std::sync::atomic::{AtomicI64, Ordering};

use routero_metrics::{Counter, Exposition, Histogram, LATENCY_BUCKETS};

use crate::live::SnapshotCell;

/// The data plane's metric families.
pub(crate) struct Metrics {
    requests: Counter,
    head: Histogram,
    upstream: Histogram,
    gateway: Histogram,
    first_token: Histogram,
    tokens: Counter,
    cost: Counter,
    findings: Counter,
    decisions: Counter,
    breaker_changes: Counter,
    breakers_open: AtomicI64,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        Self {
            requests: Counter::new(
                "routero_requests_total",
                "Proxied requests by endpoint, model route and outcome code.",
                &["endpoint", "model", "code"],
            )
            .collapsing("model"),
            head: Histogram::new(
                "routero_response_head_seconds",
                "Time from a proxied request's arrival to its answer's head (for a stream: its start), by endpoint and outcome code.",
                &["endpoint", "code"],
                LATENCY_BUCKETS,
            ),
            upstream: Histogram::new(
                "routero_upstream_seconds",
                "Time from sending an attempt to its provider's answer head, by provider and outcome code.",
                &["provider", "code"],
                LATENCY_BUCKETS,
            ),
            gateway: Histogram::new(
                "routero_gateway_seconds",
                "Time the gateway added to a provider-answered request's head (its time less the answering attempt's), by endpoint.",
                &["endpoint"],
                LATENCY_BUCKETS,
            ),
            first_token: Histogram::new(
                "routero_first_token_seconds",
                "Time from a streamed request's arrival to its first event reaching the client, by endpoint and model route.",
                &["endpoint", "model"],
                LATENCY_BUCKETS,
            )
            .collapsing("model"),
            tokens: Counter::new(
                "routero_tokens_total",
                "Tokens providers reported, by model route and type (input, cached input, output).",
                &["model", "type"],
            )
            .collapsing("model"),
            cost: Counter::new(
                "routero_cost_usd_total",
                "Spend charged on priced model routes, in US dollars.",
                &["model"],
            )
            .collapsing("model"),
            findings: Counter::new(
                "routero_guardrail_findings_total",
                "Guardrail findings by detector, action taken and stage (request, response).",
                &["detector", "action", "stage"],
            )
            .collapsing("detector"),
            decisions: Counter::new(
                "routero_authz_decisions_total",
                "Policy decisions on proxied requests: allow, deny or unavailable, from the cache or the policy engine.",
                &["decision", "source"],
            ),
            breaker_changes: Counter::new(
                "routero_breaker_transitions_total",
                "Deployment circuit breakers opening and closing in this replica.",
                &["to"],
            ),
            breakers_open: AtomicI64::new(0),
        }
    }

    /// Records one proxied request.
    pub(crate) fn request(&self, endpoint: &str, model: &str, code: &str, seconds: f64) {
        self.requests.inc(&[endpoint, model, code]);
        self.head.observe(&[endpoint, code], seconds);
    }

    /// Records one attempt at a provider.
    pub(crate) fn upstream(&self, provider: &str, code: &str, seconds: f64) {
        self.upstream.observe(&[provider, code], seconds);
    }

    /// Records what the gateway added to a provider-answered request.
    pub(crate) fn gateway(&self, endpoint: &str, seconds: f64) {
        self.gateway.observe(&[endpoint], seconds.max(0.0));
    }

    /// Records a stream's time to its first event.
    pub(crate) fn first_token(&self, endpoint: &str, model: &str, seconds: f64) {
        self.first_token.observe(&[endpoint, model], seconds);
    }

    /// Records the tokens a provider reported for a request to `model`.
    #[expect(clippy::cast_precision_loss, reason = "token counts far below 2^52")]
    pub(crate) fn tokens(&self, model: &str, usage: &routero_core::Usage) {
        for (kind, count) in [
            ("input", usage.prompt_tokens),
            ("cached_input", usage.cached_tokens),
            ("output", usage.completion_tokens),
        ] {
            if count > 0 {
                self.tokens.add(&[model, kind], count as f64);
            }
        }
    }

    /// Records what a request to `model` was charged.
    #[expect(
        clippy::cast_precision_loss,
        reason = "micro-dollar amounts far below 2^52"
    )]
    pub(crate) fn cost(&self, model: &str, micros: i64) {
        self.cost.add(&[model], micros as f64 / 1_000_000.0);
    }

    /// Records a stage's guardrail findings.
    pub(crate) fn findings(&self, stage: &str, counts: &crate::guard::Counts) {
        for ((detector, action), count) in counts {
            self.findings
                .add(&[detector, action, stage], f64::from(*count));
        }
    }

    /// Records a policy decision (`None`: none could be had).
    pub(crate) fn decision(&self, decision: Option<routero_authz::Decision>) {
        let (outcome, source) = match decision {
            Some(d) => (
                if d.allowed { "allow" } else { "deny" },
                if d.cached { "cache" } else { "engine" },
            ),
            None => ("unavailable", "engine"),
        };
        self.decisions.inc(&[outcome, source]);
    }

    /// Records a breaker opening (`true`) or closing.
    pub(crate) fn breaker(&self, opened: bool) {
        self.breaker_changes
            .inc(&[if opened { "open" } else { "closed" }]);
        self.breakers_open
            .fetch_add(if opened { 1 } else { -1 }, Ordering::Relaxed);
    }

    /// The exposition for one scrape, with the snapshot's version and age and the audit bus's
    /// backlog.
    #[expect(
        clippy::cast_precision_loss,
        reason = "versions, ages, counts and sizes far below 2^52"
    )]
    pub(crate) fn render(
        &self,
        snapshots: &SnapshotCell,
        audit: Option<&routero_bus::EventBus>,
    ) -> String {
        let mut text = Exposition::new();
        text.counter(&self.requests)
            .histogram(&self.head)
            .histogram(&self.upstream)
            .histogram(&self.gateway)
            .histogram(&self.first_token)
            .counter(&self.tokens)
            .counter(&self.cost)
            .counter(&self.findings)
            .counter(&self.decisions)
            .counter(&self.breaker_changes)
            .gauge(
                "routero_breakers_open",
                "Deployment circuit breakers open in this replica.",
                self.breakers_open.load(Ordering::Relaxed).max(0) as f64,
            );
        if let Some(bus) = audit {
            let backlog = bus.backlog();
            text.gauge(
                "routero_audit_bus_depth",
                "Audit events queued or reserved on the in-process bus.",
                bus.depth() as f64,
            )
            .gauge(
                "routero_audit_spool_bytes",
                "Bytes of audit events in the disk spool, not yet delivered to the broker.",
                backlog.spool_bytes() as f64,
            )
            .total(
                "routero_audit_delivery_failures_total",
                "Deliveries of spooled audit events to the broker that failed since start (retried from the spool).",
                backlog.delivery_failures() as f64,
            );
        }
        if let Some(version) = snapshots.version() {
            let age_ms = routero_core::unix_now_ms().saturating_sub(snapshots.last_contact_ms());
            text.gauge(
                "routero_snapshot_version",
                "Version of the snapshot this data plane serves from.",
                version as f64,
            )
            .gauge(
                "routero_snapshot_age_seconds",
                "Seconds since this data plane last heard from the control plane.",
                age_ms as f64 / 1000.0,
            );
        }
        text.finish()
    }
}
