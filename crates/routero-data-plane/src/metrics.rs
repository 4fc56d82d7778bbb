//! The data plane's Prometheus metrics, served on a port of their own. Labels are bounded:
//! endpoint, the route a request resolved to (`unknown` when it named none of its tenant's),
//! and the outcome code (`ok`, a refusal's stable code, or `http_4xx`/`http_5xx` for an
//! upstream answer passed on); never keys, users or client text. Past the series bound, new
//! routes count as `other`, endpoint and code kept.

use routero_metrics::{Counter, Exposition, Histogram, LATENCY_BUCKETS};

use crate::live::SnapshotCell;

/// The data plane's metric families.
pub(crate) struct Metrics {
    requests: Counter,
    head: Histogram,
    tokens: Counter,
    cost: Counter,
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
        }
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

    /// Records one proxied request.
    pub(crate) fn request(&self, endpoint: &str, model: &str, code: &str, seconds: f64) {
        self.requests.inc(&[endpoint, model, code]);
        self.head.observe(&[endpoint, code], seconds);
    }

    /// The exposition for one scrape, with the snapshot's version and age.
    pub(crate) fn render(&self, snapshots: &SnapshotCell) -> String {
        let mut text = Exposition::new();
        text.counter(&self.requests)
            .histogram(&self.head)
            .counter(&self.tokens)
            .counter(&self.cost);
        if let Some(version) = snapshots.version() {
            let age_ms = routero_core::unix_now_ms().saturating_sub(snapshots.last_contact_ms());
            #[expect(
                clippy::cast_precision_loss,
                reason = "versions and ages far below 2^52"
            )]
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
