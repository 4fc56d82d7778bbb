//! The adapter for OpenAI-compatible providers: pooled keep-alive connections, TCP_NODELAY,
//! timeouts, and responses relayed as they arrive. The client never sees the provider key,
//! and provider authentication failures are not relayed (their bodies can echo key fragments).

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use routero_core::{ProviderCredential, Refusal};
use secrecy::ExposeSecret;

use crate::refusal::Refused;
use crate::{DataPlaneConfig, DataPlaneError};

/// A client for provider APIs, shared by every request.
#[derive(Debug, Clone)]
pub struct Provider {
    client: reqwest::Client,
}

impl Provider {
    /// A client with the configured timeouts.
    pub fn new(config: &DataPlaneConfig) -> Result<Self, DataPlaneError> {
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(config.upstream_connect_timeout)
            .read_timeout(config.upstream_read_timeout)
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| DataPlaneError::Config(format!("http client: {e}")))?;
        Ok(Self { client })
    }

    /// POSTs `body` to `<base_url>/<path>` with the credential and relays the answer.
    pub async fn forward(
        &self,
        credential: &ProviderCredential,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Response, Refused> {
        let url = format!("{}/{path}", credential.base_url);
        let upstream = self
            .client
            .post(url)
            .bearer_auth(credential.api_key.expose_secret())
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|error| {
                tracing::warn!(credential = %credential.id, %error, "provider request failed");
                if error.is_timeout() {
                    Refusal::UpstreamTimeout
                } else if error.is_connect() {
                    Refusal::UpstreamUnreachable
                } else {
                    Refusal::UpstreamError
                }
            })?;
        let status = upstream.status();
        match status.as_u16() {
            401 | 403 => {
                tracing::error!(credential = %credential.id, %status, "provider refused the credential");
                return Err(Refusal::UpstreamAuthFailed.into());
            }
            429 => return Err(Refusal::UpstreamRateLimited.into()),
            500..=599 => {
                tracing::warn!(credential = %credential.id, %status, "provider failed");
                return Err(Refusal::UpstreamError.into());
            }
            _ => {}
        }
        let content_type = upstream
            .headers()
            .get(header::CONTENT_TYPE)
            .cloned()
            .unwrap_or(header::HeaderValue::from_static("application/json"));
        let mut response = Response::new(Body::from_stream(upstream.bytes_stream()));
        *response.status_mut() =
            StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-cache"),
        );
        Ok(response)
    }
}
