//! The adapter for OpenAI-compatible providers: pooled keep-alive connections, TCP_NODELAY,
//! timeouts, every address checked against the egress policy, and responses relayed as they
//! arrive. The client never sees the provider key, and provider authentication failures are
//! not relayed (their bodies can echo key fragments).

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use routero_core::{
    CoreError, EgressPolicy, ErrorCode, ProviderCredential, ProviderHost, ProviderUrl,
};
use routero_proto::ProtoError;
use secrecy::ExposeSecret;

use crate::egress::{self, EgressResolver};
use crate::refusal::Refused;
use crate::{DataPlaneConfig, DataPlaneError};

/// A proxied OpenAI endpoint.
#[derive(Debug, Clone, Copy)]
pub enum Endpoint {
    /// `POST /chat/completions`
    ChatCompletions,
    /// `POST /embeddings`
    Embeddings,
}

impl Endpoint {
    /// The path under the API root, e.g. `chat/completions`.
    pub fn path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat/completions",
            Self::Embeddings => "embeddings",
        }
    }

    /// The body field every request to this endpoint must carry.
    pub fn required_field(self) -> &'static str {
        match self {
            Self::ChatCompletions => "messages",
            Self::Embeddings => "input",
        }
    }
}

/// The API version asked of Azure OpenAI (its generally available one).
const AZURE_API_VERSION: &str = "2024-10-21";

/// How a provider is addressed.
#[derive(Debug)]
enum Shape {
    /// OpenAI and OpenAI-compatible servers (vLLM, Ollama, LM Studio): `{base}/chat/completions`
    /// with `Authorization: Bearer`.
    OpenAi {
        chat_completions: reqwest::Url,
        embeddings: reqwest::Url,
    },
    /// Azure OpenAI: the deployment (the route's upstream model) in the path,
    /// `{base}/openai/deployments/{deployment}/chat/completions?api-version=…`, with `api-key`.
    Azure { base: reqwest::Url },
}

/// A provider credential prepared once per snapshot: its base URL parsed (and an address
/// literal checked against the egress policy) and its key header built (marked sensitive), so
/// requests do neither.
pub struct Upstream {
    shape: Shape,
    /// `Authorization` (OpenAI) or `api-key` (Azure).
    key_header: (header::HeaderName, HeaderValue),
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Prepares a credential: its base URL well-formed and, when its host is an address
    /// literal (which no resolver sees), allowed by `egress`; its key a valid header.
    pub fn prepare(
        credential: &ProviderCredential,
        egress: &EgressPolicy,
    ) -> Result<Self, DataPlaneError> {
        let base = ProviderUrl::parse(&credential.base_url)?;
        if let ProviderHost::Ip(ip) = base.host() {
            egress.check(*ip)?;
        }
        let url = |path: &str| {
            reqwest::Url::parse(&format!("{}/{path}", base.as_str()))
                .map_err(|_| CoreError::InvalidBaseUrl("not a URL"))
        };
        let key = credential.api_key.expose_secret();
        let (shape, name, value) = match credential.provider.as_str() {
            "azure_openai" => (
                Shape::Azure {
                    base: url("openai/deployments")?,
                },
                header::HeaderName::from_static("api-key"),
                key.to_owned(),
            ),
            _ => (
                Shape::OpenAi {
                    chat_completions: url(Endpoint::ChatCompletions.path())?,
                    embeddings: url(Endpoint::Embeddings.path())?,
                },
                header::AUTHORIZATION,
                format!("Bearer {key}"),
            ),
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| ProtoError::Invalid {
            field: "api_key",
            reason: "not usable in a header".into(),
        })?;
        value.set_sensitive(true);
        Ok(Self {
            shape,
            key_header: (name, value),
        })
    }

    /// Where a request for `model` to `endpoint` goes.
    fn url(&self, endpoint: Endpoint, model: &str) -> reqwest::Url {
        match &self.shape {
            Shape::OpenAi {
                chat_completions,
                embeddings,
            } => match endpoint {
                Endpoint::ChatCompletions => chat_completions.clone(),
                Endpoint::Embeddings => embeddings.clone(),
            },
            Shape::Azure { base } => {
                let mut url = base.clone();
                // Each part percent-encoded: a deployment name cannot leave its segment.
                if let Ok(mut path) = url.path_segments_mut() {
                    path.push(model);
                    path.extend(endpoint.path().split('/'));
                }
                url.query_pairs_mut()
                    .append_pair("api-version", AZURE_API_VERSION);
                url
            }
        }
    }
}

/// A client for provider APIs, shared by every request.
#[derive(Debug, Clone)]
pub struct Provider {
    client: reqwest::Client,
    /// Longest wait for a response's head.
    ttfb: std::time::Duration,
}

impl Provider {
    /// A client with the configured timeouts, resolving provider names with the system
    /// resolver under the egress policy.
    pub fn new(config: &DataPlaneConfig) -> Result<Self, DataPlaneError> {
        Self::with_lookup(config, egress::system_lookup())
    }

    /// A client resolving provider names with `lookup` under the egress policy. Proxies from
    /// the environment are not used: the gateway itself connects, to addresses it checked.
    pub(crate) fn with_lookup(
        config: &DataPlaneConfig,
        lookup: egress::Lookup,
    ) -> Result<Self, DataPlaneError> {
        let client = reqwest::Client::builder()
            .dns_resolver(EgressResolver::new(config.egress.clone(), lookup))
            .no_proxy()
            .tcp_nodelay(true)
            .connect_timeout(config.upstream_connect_timeout)
            .read_timeout(config.upstream_read_timeout)
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| DataPlaneError::Config(format!("http client: {e}")))?;
        Ok(Self {
            client,
            ttfb: config.upstream_ttfb_timeout,
        })
    }

    /// POSTs `body` to the upstream's endpoint and relays the answer. A `streamed` request's
    /// response must begin within the time-to-first-byte timeout; a whole completion's head
    /// comes when it is written, so only the read timeout bounds it.
    pub async fn forward(
        &self,
        upstream: &Upstream,
        (endpoint, model): (Endpoint, &str),
        body: Vec<u8>,
        streamed: bool,
    ) -> Result<Response, Refused> {
        let url = upstream.url(endpoint, model);
        let sent = self
            .client
            .post(url.clone())
            .header(upstream.key_header.0.clone(), upstream.key_header.1.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .send();
        let ttfb = if streamed {
            self.ttfb
        } else {
            std::time::Duration::MAX
        };
        let upstream_response = tokio::time::timeout(ttfb, sent)
            .await
            .map_err(|_| {
                tracing::warn!(url = %url, "provider answered nothing in time");
                Refused::from(ErrorCode::UpstreamTimeout)
            })?
            .map_err(|error| {
                tracing::warn!(%error, "provider request failed");
                if egress_refused(&error) {
                    ErrorCode::EgressNotAllowed
                } else if error.is_timeout() {
                    ErrorCode::UpstreamTimeout
                } else if error.is_connect() {
                    ErrorCode::UpstreamUnreachable
                } else {
                    ErrorCode::UpstreamError
                }
            })?;
        let status = upstream_response.status();
        match status.as_u16() {
            401 | 403 => {
                tracing::error!(url = %url, %status, "provider refused the credential");
                return Err(ErrorCode::UpstreamAuthFailed.into());
            }
            429 => return Err(ErrorCode::UpstreamRateLimited.into()),
            500..=599 => {
                tracing::warn!(url = %url, %status, "provider failed");
                return Err(ErrorCode::UpstreamError.into());
            }
            _ => {}
        }
        let content_type = upstream_response
            .headers()
            .get(header::CONTENT_TYPE)
            .cloned()
            .unwrap_or(header::HeaderValue::from_static("application/json"));
        let content_length = upstream_response
            .headers()
            .get(header::CONTENT_LENGTH)
            .cloned();
        let mut response = Response::new(Body::from_stream(upstream_response.bytes_stream()));
        if let Some(length) = content_length {
            // Known length: relayed as is instead of re-chunked.
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, length);
        }
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

/// Whether a request failed because the egress policy refused every address of its host.
fn egress_refused(error: &reqwest::Error) -> bool {
    std::iter::successors(Some(error as &(dyn std::error::Error + 'static)), |error| {
        error.source()
    })
    .filter_map(|error| error.downcast_ref::<DataPlaneError>())
    .any(|error| egress::refusal(error) == ErrorCode::EgressNotAllowed)
}
