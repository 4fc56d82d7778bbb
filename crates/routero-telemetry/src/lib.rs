//! Routero's logs and traces, set up once per process by [`init`]: logs on stderr (text, or
//! JSON lines), and, when an OTLP endpoint is configured, OpenTelemetry spans exported over
//! gRPC. Only spans of the [`TARGET`] target are exported, never log lines: what a span
//! carries is chosen where it is made (identifiers, model routes, numbers; never prompt or
//! response text, nor secrets).
//!
//! [`continue_trace`] makes a request's span continue its client's W3C trace context
//! (`traceparent`, `tracestate`) and records its trace id, so log lines inside it carry it;
//! [`inject`] passes the current span's context on to a provider.
#![forbid(unsafe_code)]

use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The target of the spans that are exported (`tracing::info_span!(target: TARGET, …)`).
pub const TARGET: &str = "routero::trace";

/// How a process logs and traces.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// Log lines as JSON objects (with the current span's fields, its trace id among them)
    /// instead of text.
    pub json_logs: bool,
    /// Where spans are exported (`http://collector:4317`, or `https://` with `ca_pem`); none:
    /// no spans are made.
    pub otlp_endpoint: Option<String>,
    /// PEM CA of an `https://` collector.
    pub ca_pem: Option<Vec<u8>>,
    /// `service.name` of the spans (`routero-data-plane`, …).
    pub service_name: &'static str,
    /// Share of traces kept (`1.0`: all), decided by trace id: the same for every span of a
    /// trace, and not up to a client's sampled flag (which could otherwise force every
    /// request into the collector, or keep its own out).
    pub sample_ratio: f64,
}

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("otlp_endpoint: {0}")]
pub struct TelemetryError(String);

/// The process's telemetry; [`Telemetry::shutdown`] sends the spans still held.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported (requests then make them).
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still held (at most a few seconds), then stops exporting.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown_with_timeout(Duration::from_secs(5))
        {
            tracing::warn!(%error, "spans not all exported at shutdown");
        }
    }
}

/// Installs the process's subscriber: logs filtered by `RUST_LOG` (default `info`), and the
/// span exporter when `config.otlp_endpoint` is set. Call it inside the Tokio runtime (the
/// exporter's gRPC channel lives there).
pub fn init(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = if config.json_logs {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    };
    let provider = config
        .otlp_endpoint
        .as_deref()
        .map(|endpoint| provider(config, endpoint))
        .transpose()?;
    let spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("routero"))
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target(TARGET, tracing::Level::INFO),
            )
    });
    tracing_subscriber::registry().with(logs).with(spans).init();
    Ok(Telemetry { provider })
}

fn provider(config: &TelemetryConfig, endpoint: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(5));
    if endpoint.starts_with("https://") {
        let ca = config
            .ca_pem
            .as_ref()
            .ok_or_else(|| TelemetryError("https:// needs otlp_ca".into()))?;
        exporter = exporter.with_tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca)),
        );
    }
    let exporter = exporter
        .build()
        .map_err(|e| TelemetryError(e.to_string()))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(config.service_name)
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::TraceIdRatioBased(config.sample_ratio))
        .with_resource(resource)
        .build())
}

/// Makes `span` continue the trace its client sent in `headers` (W3C `traceparent`; an absent
/// or malformed one starts a new trace), and records its trace id in the span's `trace_id`
/// field (declared empty by the caller) for log lines inside it. The client's `tracestate`
/// (vendor data, up to kilobytes) is not carried: not into every span, not to providers.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    let extracted = TraceContextPropagator::new().extract(&Headers(headers));
    let remote = extracted.span().span_context().clone();
    if remote.is_valid() {
        // Only a valid parent: a malformed header is no reason to drop the span.
        let parent = opentelemetry::trace::SpanContext::new(
            remote.trace_id(),
            remote.span_id(),
            remote.trace_flags(),
            true,
            opentelemetry::trace::TraceState::default(),
        );
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
    }
    let trace_id = span.context().span().span_context().trace_id();
    if trace_id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
}

/// Writes `span`'s context into `headers` (`traceparent`), for the provider a request goes to.
pub fn inject(span: &tracing::Span, headers: &mut http::HeaderMap) {
    let context = span.context();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut HeadersMut(headers));
    }
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut http::HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        // An empty `tracestate` says nothing: not sent.
        if value.is_empty() {
            return;
        }
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::try_from(key),
            http::HeaderValue::try_from(value),
        ) {
            self.0.insert(name, value);
        }
    }
}
