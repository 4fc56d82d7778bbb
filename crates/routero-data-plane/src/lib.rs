//! Routero's data plane: a stateless OpenAI-compatible proxy. It enforces virtual keys from the
//! snapshot it follows over gRPC, and never touches the control plane's database.
#![forbid(unsafe_code)]

mod breaker;
mod caller;
mod config;
mod dialect;

/// Largest answer (not streamed) the gateway reads whole: to translate it, scan it or read its
/// usage (a larger one is charged its reservation).
const MAX_WHOLE_ANSWER: usize = 32 * 1024 * 1024;
mod egress;
mod error;
mod follow;
mod guard;
mod live;
mod meter;
mod metrics;
mod persist;
mod provider;
mod proxy;
mod refusal;
mod routing;
mod sse;
mod trace;

use std::future::Future;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use routero_bus::{EventBus, FailureReport};
use routero_core::AuthFailures;
use routero_core::audit::EventType;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::trace::TraceLayer;

pub use breaker::BreakerSettings;
pub use config::{ControlPlaneTls, DataPlaneConfig};
pub use error::DataPlaneError;

use crate::follow::Follower;
use crate::live::SnapshotCell;
use crate::provider::{Endpoint, Provider};
use crate::proxy::{App, RequestId};

/// Builds the HTTP stack. Layers, outermost first: a handler's panic contained (500
/// `internal_error`, audited); request id (ours, never the client's: it lands in audit
/// records); a tracing span per request (tower-http); then the routes, each of which authenticates,
/// checks the key, reads a bounded body within its deadline and proxies, within the
/// whole-request deadline.
fn router(app: Arc<App>) -> Router {
    Router::new()
        .route(
            "/v1/chat/completions",
            post(proxy::proxied).layer(Extension(Endpoint::ChatCompletions)),
        )
        .route(
            "/v1/embeddings",
            post(proxy::proxied).layer(Extension(Endpoint::Embeddings)),
        )
        .route(
            "/v1/messages",
            post(proxy::proxied).layer(Extension(Endpoint::Messages)),
        )
        .route(
            "/v1/responses",
            post(proxy::proxied).layer(Extension(Endpoint::Responses)),
        )
        .route("/v1/models", get(proxy::list_models))
        .route("/v1/models/{model}", get(proxy::get_model))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(proxy::ready))
        .fallback(proxy::not_found)
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&app), cors))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(axum::middleware::from_fn(request_id))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            proxy::contain_panics,
        ))
        .with_state(app)
}

/// CORS for browsers' apps: a preflight is answered for an origin some tenant lists; an answer
/// is readable from an origin only when the presented key's tenant lists it.
async fn cors(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let Some(origin) = routero_http::cors::request_origin(request.headers()).cloned() else {
        return next.run(request).await;
    };
    let live = app.snapshots.current();
    if routero_http::cors::is_preflight(request.method(), request.headers()) {
        let allowed = live.is_some_and(|live| live.cors_allows(None, &origin));
        return routero_http::cors::preflight(request.headers(), allowed);
    }
    let allowed = live.is_some_and(|live| {
        caller::presented_key(request.headers())
            .and_then(|key| live.snapshot.key(&live.hasher.hash(key)))
            .is_some_and(|key| live.cors_allows(Some(&key.tenant_id), &origin))
    });
    let mut response = next.run(request).await;
    if allowed {
        routero_http::cors::allow(&mut response, &origin);
    }
    response
}

/// The tracing span of a request: its id, method and path (never its query, headers or body).
fn request_span(request: &Request) -> tracing::Span {
    let id = request
        .extensions()
        .get::<RequestId>()
        .map_or("", |id| id.0.as_str());
    tracing::info_span!("request", id, method = %request.method(), path = request.uri().path())
}

/// Gives each request an id (a request extension for handlers and audit events) and echoes it
/// in `x-request-id`.
async fn request_id(mut request: Request, next: Next) -> Response {
    let mut buffer = uuid::Uuid::encode_buffer();
    let id = uuid::Uuid::now_v7()
        .simple()
        .encode_lower(&mut buffer)
        .to_owned();
    let header = HeaderValue::from_str(&id).ok();
    request.extensions_mut().insert(RequestId(id));
    let mut response = next.run(request).await;
    if let Some(value) = header {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// Serves the data plane on `listener` until `shutdown` completes, then drains in-flight
/// requests for at most the configured grace period. With `audit`, every proxied request is
/// recorded there.
pub async fn run(
    config: DataPlaneConfig,
    listener: TcpListener,
    audit: Option<EventBus>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DataPlaneError> {
    let authorizer = match &config.authz {
        Some(authz) => Some(routero_authz::Authorizer::connect(authz).await?),
        None => None,
    };
    let snapshots = SnapshotCell::new(config.max_staleness);
    let breakers = Arc::new(crate::breaker::Breakers::new(config.breaker));
    let follower = Follower::new(
        Arc::clone(&snapshots),
        Arc::clone(&breakers),
        config.clone(),
    )?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let following = tokio::spawn(follower.run(stop_rx.clone()));
    let failures = Arc::new(AuthFailures::new(config.failure_limits));
    let reporting = tokio::spawn(routero_bus::report_auth_failures(
        Arc::clone(&failures),
        audit.clone(),
        FailureReport {
            action: EventType::RequestBlocked,
            resource: "data_plane",
            reason_code: "authentication_refused",
        },
        stop_rx.clone(),
    ));
    let app = Arc::new(App {
        snapshots,
        provider: Provider::new(&config)?,
        trusted_proxies: config.trusted_proxies.clone(),
        max_body_bytes: config.max_body_bytes,
        audit,
        authorizer,
        deadlines: config.deadlines,
        failures,
        breakers,
        balancer: crate::routing::Balancer::new(uuid::Uuid::new_v4().as_u64_pair().0),
        limits: Arc::new(match &config.redis_url {
            Some(url) => routero_limits::Limits::redis(secrecy::ExposeSecret::expose_secret(url))
                .map_err(|error| DataPlaneError::Config(error.to_string()))?,
            None => routero_limits::Limits::in_process(),
        }),
        metrics: Arc::new(crate::metrics::Metrics::new()),
        traced: config.traced,
        observed: config.traced || config.metrics_addr.is_some(),
    });
    let metrics = match config.metrics_addr {
        Some(addr) => {
            let scraped = Arc::clone(&app);
            let mut stop = stop_rx.clone();
            Some(
                routero_http::metrics::serve(
                    addr,
                    Arc::new(move || {
                        scraped
                            .metrics
                            .render(&scraped.snapshots, scraped.audit.as_ref())
                    }),
                    async move {
                        let _ = stop.changed().await;
                    },
                )
                .await
                .map_err(DataPlaneError::Config)?,
            )
        }
        None => None,
    };
    let mut server_stop = stop_rx.clone();
    let server = routero_http::serve(
        listener,
        router(app),
        config.deadlines,
        config.https.clone(),
        async move {
            let _ = server_stop.changed().await;
        },
    );
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut grace_stop = stop_rx;
    let grace = config.shutdown_grace;
    tokio::select! {
        () = server => {}
        () = async move {
            let _ = grace_stop.changed().await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!("shutdown grace period over; dropping remaining requests"),
    }
    let _ = following.await;
    let _ = reporting.await;
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use routero_bus::{EventSource as _, Overflow, in_process};
    use routero_core::audit::EventType;

    use super::*;

    async fn boom() -> &'static str {
        panic!("a bug")
    }

    /// A handler that panics behind the real containment layer, served over HTTP: the client
    /// gets 500 `internal_error` (not a dropped connection), the panic is recorded, and the
    /// server goes on serving.
    #[tokio::test]
    async fn a_handler_panic_becomes_a_recorded_500() {
        let config = DataPlaneConfig::new(
            "http://127.0.0.1:1".into(),
            routero_crypto::SealingKey::generate().unwrap(),
        );
        let (bus, mut events) = in_process(8, Overflow::Block);
        let app = Arc::new(App {
            snapshots: SnapshotCell::new(Duration::from_secs(1)),
            provider: Provider::new(&config).unwrap(),
            trusted_proxies: Vec::new(),
            max_body_bytes: 1024,
            audit: Some(bus),
            authorizer: None,
            deadlines: config.deadlines,
            failures: Arc::new(AuthFailures::new(config.failure_limits)),
            breakers: Arc::default(),
            balancer: crate::routing::Balancer::default(),
            limits: Arc::new(routero_limits::Limits::in_process()),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            traced: false,
            observed: false,
        });
        let router = Router::new()
            .route("/boom", get(boom))
            .route("/fine", get(|| async { "fine" }))
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&app),
                proxy::contain_panics,
            ))
            .with_state(app);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(routero_http::serve(
            listener,
            router,
            config.deadlines,
            None,
            std::future::pending(),
        ));
        let client = reqwest::Client::new();
        // The 500 waits until its event is taken off the bus (it is published durably).
        let boom = tokio::spawn(client.get(format!("{base}/boom")).send());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!boom.is_finished(), "answered before its event was taken");
        let recorded = events.next_batch(1).await.unwrap();
        assert_eq!(recorded[0].action, EventType::RequestFailed);
        assert_eq!(recorded[0].reason_code.as_deref(), Some("internal_error"));
        let boom = boom.await.unwrap().unwrap();
        assert_eq!(boom.status().as_u16(), 500);
        let body: serde_json::Value = serde_json::from_slice(&boom.bytes().await.unwrap()).unwrap();
        assert_eq!(body["error"]["code"], "internal_error");
        assert!(
            !body.to_string().contains("a bug"),
            "the panic's text stays in the log"
        );
        let fine = client.get(format!("{base}/fine")).send().await.unwrap();
        assert_eq!(fine.status().as_u16(), 200, "the server goes on serving");
    }
}
