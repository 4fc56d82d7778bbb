//! A service's metrics listener: `GET /metrics` (Prometheus's text format, rendered at each
//! scrape) and `GET /healthz`, on a port of its own, never the API's.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::Deadlines;

/// Renders the exposition of one scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Binds `addr` (its error names it) and serves the metrics there until `shutdown`.
pub async fn serve(
    addr: std::net::SocketAddr,
    render: Render,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("metrics_addr {addr}: {e}"))?;
    if let Ok(bound) = listener.local_addr() {
        tracing::info!(addr = %bound, "metrics listening");
    }
    let routes = Router::new()
        .route(
            "/metrics",
            get(move || {
                let render = Arc::clone(&render);
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            routero_metrics::CONTENT_TYPE,
                        )],
                        render(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    let deadlines = Deadlines::with_request(std::time::Duration::from_secs(10));
    Ok(tokio::spawn(crate::serve(
        listener, routes, deadlines, None, shutdown,
    )))
}
