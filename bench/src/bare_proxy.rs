//! The baseline: a bare hyper pass-through proxy with a pooled client, no checks at all.

use std::convert::Infallible;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type Body = http_body_util::combinators::BoxBody<bytes::Bytes, hyper::Error>;

/// Proxies every request on `listener` to `upstream` (`http://host:port`) until killed.
pub async fn serve(listener: TcpListener, upstream: String) -> anyhow::Result<()> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build(connector);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let client = client.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let service = service_fn(move |mut request: Request<Incoming>| {
                let client = client.clone();
                let upstream = upstream.clone();
                async move {
                    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
                    let response: Response<Body> = match format!("{upstream}{path}").parse::<Uri>()
                    {
                        Ok(uri) => {
                            *request.uri_mut() = uri;
                            match client.request(request).await {
                                Ok(answer) => answer.map(http_body_util::BodyExt::boxed),
                                Err(_) => bad_gateway(),
                            }
                        }
                        Err(_) => bad_gateway(),
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn bad_gateway() -> Response<Body> {
    let mut response = Response::new(http_body_util::BodyExt::boxed(
        http_body_util::Empty::<bytes::Bytes>::new().map_err(|never| match never {}),
    ));
    *response.status_mut() = hyper::StatusCode::BAD_GATEWAY;
    response
}

use http_body_util::BodyExt as _;
