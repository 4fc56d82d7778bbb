//! The control plane's Prometheus metrics: admin API requests by method and status (never
//! paths, ids or who asked), how long they took, the snapshot version published and how many
//! data planes reported the version they apply.

use routero_metrics::{Counter, Exposition, Histogram, LATENCY_BUCKETS};

use crate::snapshot::Publisher;

/// The control plane's metric families.
pub(crate) struct AdminMetrics {
    requests: Counter,
    seconds: Histogram,
}

impl AdminMetrics {
    pub(crate) fn new() -> Self {
        Self {
            requests: Counter::new(
                "routero_admin_requests_total",
                "Admin API requests (SCIM and sign-in included) by method and status code.",
                &["method", "status"],
            ),
            seconds: Histogram::new(
                "routero_admin_request_seconds",
                "Time to answer an admin API request, by method.",
                &["method"],
                LATENCY_BUCKETS,
            ),
        }
    }

    /// Records one admin request.
    pub(crate) fn request(&self, method: &axum::http::Method, status: u16, seconds: f64) {
        // Methods a client made up count as one.
        let method = match *method {
            axum::http::Method::GET => "GET",
            axum::http::Method::POST => "POST",
            axum::http::Method::PUT => "PUT",
            axum::http::Method::PATCH => "PATCH",
            axum::http::Method::DELETE => "DELETE",
            axum::http::Method::OPTIONS => "OPTIONS",
            _ => "other",
        };
        self.requests.inc(&[method, &status.to_string()]);
        self.seconds.observe(&[method], seconds);
    }

    /// The exposition for one scrape.
    #[expect(
        clippy::cast_precision_loss,
        reason = "versions and counts far below 2^52"
    )]
    pub(crate) fn render(&self, publisher: &Publisher) -> String {
        let mut text = Exposition::new();
        text.counter(&self.requests)
            .histogram(&self.seconds)
            .gauge(
                "routero_snapshot_version",
                "Version of the snapshot this control plane publishes.",
                publisher.latest().version() as f64,
            )
            .gauge(
                "routero_data_planes_reporting",
                "Data planes that reported the snapshot version they apply.",
                publisher.applied_versions().len() as f64,
            );
        text.finish()
    }
}
