//! A proxied request's spans, made only when the process exports them: the request span,
//! named and attributed after OpenTelemetry's GenAI conventions (`chat`, `gen_ai.*`),
//! continuing the client's W3C trace context; under it one span per stage: `authenticate`,
//! `authorize`, `guard`, `upstream` (one per attempt, its context passed to the provider) and
//! `relay` (the answer's body, to its end). Attributes are identifiers, routes, codes and
//! counts: never prompt or response text, never a key. The answer's body is also where a
//! stream's time to its first event is taken, for the metrics.

use std::sync::Arc;
use std::time::Instant;

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, HttpBody};
use axum::http::HeaderMap;
use axum::response::Response;
use tracing::Span;
use tracing::field::Empty;

use crate::provider::Endpoint;
use crate::refusal::Refused;

/// The span of a request to `endpoint` (a disabled one when `traced` is off).
pub(crate) fn request(traced: bool, headers: &HeaderMap, endpoint: Endpoint, id: &str) -> Span {
    if !traced {
        return Span::none();
    }
    let operation = match endpoint {
        Endpoint::Embeddings => "embeddings",
        Endpoint::ChatCompletions | Endpoint::Messages | Endpoint::Responses => "chat",
    };
    let span = tracing::info_span!(
        target: routero_telemetry::TARGET,
        "request",
        otel.name = operation,
        otel.kind = "server",
        otel.status_code = Empty,
        gen_ai.operation.name = operation,
        gen_ai.request.model = Empty,
        gen_ai.provider.name = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        http.request.method = "POST",
        http.route = endpoint.path(),
        http.response.status_code = Empty,
        error.type = Empty,
        routero.request_id = id,
        routero.tenant_id = Empty,
        routero.key_id = Empty,
        trace_id = Empty,
    );
    routero_telemetry::continue_trace(&span, headers);
    span
}

/// A stage's span under `request` (disabled when `request` is).
pub(crate) fn stage(request: &Span, name: &'static str) -> Span {
    if request.is_none() {
        return Span::none();
    }
    tracing::info_span!(
        target: routero_telemetry::TARGET,
        parent: request,
        "stage",
        otel.name = name,
        otel.status_code = Empty,
        error.type = Empty,
    )
}

/// An attempt's span under `request`: the provider kind and the model it is asked for.
pub(crate) fn upstream(request: &Span, provider: &'static str, model: &str) -> Span {
    if request.is_none() {
        return Span::none();
    }
    tracing::info_span!(
        target: routero_telemetry::TARGET,
        parent: request,
        "upstream",
        otel.name = "upstream",
        otel.kind = "client",
        otel.status_code = Empty,
        gen_ai.provider.name = provider,
        gen_ai.request.model = model,
        error.type = Empty,
    )
}

/// Marks `span` failed with a refusal's stable code.
pub(crate) fn failed(span: &Span, refused: &Refused) {
    span.record("otel.status_code", "ERROR");
    span.record("error.type", refused.refusal.code());
}

/// A streamed answer's first event, to be timed from the request's arrival.
pub(crate) struct FirstToken {
    pub(crate) arrived: Instant,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    pub(crate) endpoint: &'static str,
    pub(crate) model: String,
}

/// Records a request's outcome on its span, and, when it is answered, makes the answer's body
/// carry the `relay` span (and with it the request span) to its end, and time its first event
/// when `first_token` is given and the answer is a stream.
pub(crate) fn answered(
    span: Span,
    result: Result<Response, Response>,
    first_token: Option<FirstToken>,
) -> Response {
    let response = result.unwrap_or_else(|refusal| refusal);
    let status = response.status();
    let first_token = first_token
        .filter(|_| status.is_success() && crate::sse::is_event_stream(response.headers()));
    if span.is_none() && first_token.is_none() {
        return response;
    }
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() || status.is_client_error() {
        span.record("otel.status_code", "ERROR");
    }
    let relay = stage(&span, "relay");
    let (parts, body) = response.into_parts();
    Response::from_parts(
        parts,
        Body::new(Relayed {
            body,
            relay,
            request: span,
            first_token,
        }),
    )
}

/// An answer's body on its way to the client, polled inside its `relay` span (inside the
/// request's); the spans end with it.
struct Relayed {
    body: Body,
    relay: Span,
    request: Span,
    first_token: Option<FirstToken>,
}

impl HttpBody for Relayed {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        // A span ends when it is last exited: both are entered, the request around the relay.
        let polled = this.request.in_scope(|| {
            this.relay
                .in_scope(|| Pin::new(&mut this.body).poll_frame(cx))
        });
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && frame.data_ref().is_some_and(|data| !data.is_empty())
            && let Some(first) = this.first_token.take()
        {
            let seconds = first.arrived.elapsed().as_secs_f64();
            first
                .metrics
                .first_token(first.endpoint, &first.model, seconds);
        }
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            // The answer is over: the relay ends, then the request.
            this.relay = Span::none();
            this.request = Span::none();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
