//! How Routero's HTTP listeners serve (the data plane's OpenAI API and the admin API alike).
//!
//! A client gets [`Deadlines`]: its request headers must arrive within `header` (else the
//! connection is closed), its body within `body` ([`read_body`]), and its handling is bounded
//! by `request` (the caller's middleware). So slow or silent clients cannot hold connections,
//! and with them descriptors and memory, for long. [`serve`] drains connections on shutdown
//! and serves HTTPS with [`Https`] (a certificate reloaded when its files change);
//! [`unwinding`] turns a handler's panic into an error the caller answers with a stable
//! code instead of a dropped connection. [`bearer`] and [`user_agent`] read the two headers
//! both APIs read the same way.
#![forbid(unsafe_code)]

pub mod cors;
pub mod metrics;
pub mod tls;

pub use tls::Https;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use futures_util::FutureExt as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower_service::Service as _;

/// How long a client may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// To send a request's headers (and between requests on a kept-alive connection).
    pub header: Duration,
    /// To send a request's body, whole.
    pub body: Duration,
    /// For the request to be handled, up to its response's head.
    pub request: Duration,
}

impl Deadlines {
    /// 10 s for headers, 30 s for a body, and `request` for the whole.
    pub fn with_request(request: Duration) -> Self {
        Self {
            header: Duration::from_secs(10),
            body: Duration::from_secs(30),
            request,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then waits for the open
/// connections to finish (callers bound that wait by their grace period). Every request
/// carries its peer as `ConnectInfo<SocketAddr>`. With `https`, connections are TLS (see
/// [`tls`]) and its files are watched for a renewed certificate while serving.
///
/// HTTP/1.1 only: a connection that sends no complete request headers within
/// `deadlines.header` (from its first byte, and between requests) is closed, as is one whose
/// TLS handshake takes longer. HTTP/2 is not offered: hyper has no deadline for an HTTP/2
/// connection that opens and then idles, so each would hold a descriptor for good.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    deadlines: Deadlines,
    https: Option<Https>,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(deadlines.header);
    let graceful = GracefulShutdown::new();
    let reloading = https.clone().map(|https| tokio::spawn(https.watch()));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, most likely: wait rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small frames (a streamed chunk, a revocation's answer) must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().call(request)
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let acceptor = https.as_ref().map(|https| https.acceptor().clone());
        tokio::spawn(async move {
            let ended = match acceptor {
                None => {
                    watcher
                        .watch(builder.serve_connection(TokioIo::new(stream), service))
                        .await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(deadlines.header, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            watcher
                                .watch(builder.serve_connection(TokioIo::new(stream), service))
                                .await
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%error, %peer, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake not done within the header deadline");
                            return;
                        }
                    }
                }
            };
            if let Err(error) = ended {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if let Some(task) = reloading {
        task.abort();
    }
    graceful.shutdown().await;
}

/// Why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// It is larger than allowed.
    TooLarge,
    /// It did not arrive within the deadline.
    Timeout,
    /// The connection failed while reading it.
    Unreadable,
}

/// Reads a whole body of at most `limit` bytes within `deadline`.
pub async fn read_body(body: Body, limit: usize, deadline: Duration) -> Result<Bytes, BodyError> {
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(BodyError::Timeout),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(error)) if is_length_limit(&error) => Err(BodyError::TooLarge),
        Ok(Err(_)) => Err(BodyError::Unreadable),
    }
}

/// Whether a body read failed on the size limit (rather than, say, a dropped connection).
fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Runs `work`; a panic inside it comes back as its message instead of unwinding further.
pub async fn unwinding<F: Future>(work: F) -> Result<F::Output, String> {
    AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .map_err(|panic| {
            panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned())
        })
}

/// Longest user agent kept (in characters) for logs and audit events.
pub const USER_AGENT_CHARS: usize = 256;

/// The token of an `Authorization: Bearer <token>` header (scheme in any case), if any.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

/// The client's user agent, cut to [`USER_AGENT_CHARS`] characters.
pub fn user_agent(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(USER_AGENT_CHARS).collect())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    async fn echo(body: Body) -> Result<Bytes, String> {
        read_body(body, 1024, Duration::from_millis(300))
            .await
            .map_err(|e| format!("{e:?}"))
    }

    async fn server(deadlines: Deadlines) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|_| unreachable!());
        let addr = listener.local_addr().unwrap_or_else(|_| unreachable!());
        let router = Router::new().route("/", axum::routing::post(echo));
        tokio::spawn(serve(
            listener,
            router,
            deadlines,
            None,
            std::future::pending(),
        ));
        addr
    }

    /// Reads until the server closes; returns what it sent and how long it took.
    async fn until_closed(mut stream: TcpStream) -> (String, Duration) {
        let started = Instant::now();
        let mut seen = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut seen)).await;
        (
            String::from_utf8_lossy(&seen).into_owned(),
            started.elapsed(),
        )
    }

    #[tokio::test]
    async fn silent_and_slow_clients_are_cut_off_at_their_deadlines() {
        let addr = server(Deadlines {
            header: Duration::from_millis(300),
            body: Duration::from_millis(300),
            request: Duration::from_secs(5),
        })
        .await;

        // Connects and says nothing.
        let silent = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|_| unreachable!());
        // Sends half its headers.
        let mut half = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|_| unreachable!());
        let _ = half.write_all(b"POST / HTTP/1.1\r\nHost: x\r\n").await;
        // Sends its headers and never its body.
        let mut bodiless = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|_| unreachable!());
        let _ = bodiless
            .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
            .await;

        // Speaks HTTP/2 with prior knowledge: not offered.
        let mut h2 = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|_| unreachable!());
        let _ = h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;

        for stream in [silent, half] {
            let (_, waited) = until_closed(stream).await;
            assert!(waited < Duration::from_secs(3), "closed after {waited:?}");
        }
        // An HTTP/2 server would answer the preface with a SETTINGS frame (it starts "\0\0").
        let (answer, waited) = until_closed(h2).await;
        assert!(waited < Duration::from_secs(3), "closed after {waited:?}");
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 "),
            "{answer:?}"
        );
        let (answer, waited) = until_closed(bodiless).await;
        assert!(waited < Duration::from_secs(3), "closed after {waited:?}");
        assert!(answer.contains("Timeout"), "{answer}");

        // A client that sends its request is served.
        let mut good = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|_| unreachable!());
        let _ = good
            .write_all(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
            )
            .await;
        let (answer, _) = until_closed(good).await;
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("hi"),
            "{answer}"
        );
    }

    #[tokio::test]
    async fn a_panic_is_caught_with_its_message() {
        let caught = unwinding(async { panic!("boom") }).await;
        assert_eq!(caught, Err("boom".to_owned()));
        assert_eq!(unwinding(async { 7 }).await, Ok(7));
    }
}
