//! The provider adapters: OpenAI and OpenAI-compatible servers, Azure OpenAI deployments, and
//! Anthropic (its Messages API, spoken through `routero_translate`: a chat completion request
//! in, a chat completion or its chunks out). One client for all: pooled keep-alive
//! connections, TCP_NODELAY, timeouts, every address checked against the egress policy, and
//! responses relayed as they arrive. The client never sees the provider key, and provider
//! authentication failures are not relayed (their bodies can echo key fragments).

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use routero_core::{
    CoreError, EgressPolicy, ErrorCode, ProviderCredential, ProviderHost, ProviderUrl,
};
use routero_proto::ProtoError;
use routero_translate::anthropic;
use secrecy::ExposeSecret;
use serde_json::{Map, Value};

use crate::egress::{self, EgressResolver};
use crate::refusal::Refused;
use crate::{DataPlaneConfig, DataPlaneError};

/// A proxied endpoint. Messages and Responses requests are chat completions inside the
/// gateway (see `dialect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`
    ChatCompletions,
    /// `POST /v1/embeddings`
    Embeddings,
    /// `POST /v1/messages` (Anthropic's Messages API)
    Messages,
    /// `POST /v1/responses` (OpenAI's Responses API)
    Responses,
}

impl Endpoint {
    /// The path under the API root, e.g. `chat/completions`.
    pub fn path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat/completions",
            Self::Embeddings => "embeddings",
            Self::Messages => "messages",
            Self::Responses => "responses",
        }
    }

    /// The body field every request to this endpoint must carry.
    pub fn required_field(self) -> &'static str {
        match self {
            Self::ChatCompletions | Self::Messages => "messages",
            Self::Embeddings | Self::Responses => "input",
        }
    }

    /// Whether the endpoint completes (a chat completion inside the gateway), rather than
    /// embeds.
    pub fn completes(self) -> bool {
        self != Self::Embeddings
    }

    /// The endpoint a provider is asked: a chat completion for every completing endpoint.
    fn upstream(self) -> Self {
        if self.completes() {
            Self::ChatCompletions
        } else {
            Self::Embeddings
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
    /// Anthropic's Messages API: `{base}/v1/messages` (or `{base}/messages` when the base
    /// ends in `/v1`), with `x-api-key` and `anthropic-version`; chat completions only.
    Anthropic { messages: reqwest::Url },
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
    /// The provider's name in OpenTelemetry's GenAI conventions (`gen_ai.provider.name`).
    pub fn provider_name(&self) -> &'static str {
        match self.shape {
            Shape::OpenAi { .. } => "openai",
            Shape::Azure { .. } => "azure.ai.openai",
            Shape::Anthropic { .. } => "anthropic",
        }
    }

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
            "anthropic" => (
                Shape::Anthropic {
                    messages: url(if base.as_str().ends_with("/v1") {
                        "messages"
                    } else {
                        "v1/messages"
                    })?,
                },
                header::HeaderName::from_static("x-api-key"),
                key.to_owned(),
            ),
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

    /// The request for `model` to `endpoint`, ready to send: where it goes and the body,
    /// the chat request as it is or translated for a provider that speaks another dialect.
    pub fn request(
        &self,
        endpoint: Endpoint,
        model: &str,
        request: &Map<String, Value>,
    ) -> Result<Outgoing, Refused> {
        let endpoint = endpoint.upstream();
        let unserializable = |_| Refused::invalid("unserializable body");
        let streamed = request.get("stream").and_then(Value::as_bool) == Some(true);
        let body = if matches!(self.shape, Shape::Anthropic { .. }) {
            if endpoint != Endpoint::ChatCompletions {
                return Err(Refused::invalid(
                    "an Anthropic deployment serves chat completions only",
                ));
            }
            let translated = anthropic::messages_request(request)
                .map_err(|untranslatable| Refused::invalid(untranslatable.0))?;
            serde_json::to_vec(&translated).map_err(unserializable)?
        } else {
            serde_json::to_vec(request).map_err(unserializable)?
        };
        let url = self.url(endpoint, model);
        let include_usage = request
            .get("stream_options")
            .and_then(|options| options.get("include_usage"))
            .and_then(Value::as_bool)
            == Some(true);
        Ok(Outgoing {
            url,
            body,
            streamed,
            include_usage,
            ttfb: None,
            total: None,
            trace: header::HeaderMap::new(),
        })
    }

    /// Where a request for `model` to `endpoint` goes.
    fn url(&self, endpoint: Endpoint, model: &str) -> reqwest::Url {
        match &self.shape {
            Shape::OpenAi {
                chat_completions,
                embeddings,
            } => match endpoint {
                Endpoint::Embeddings => embeddings.clone(),
                _ => chat_completions.clone(),
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
            Shape::Anthropic { messages } => messages.clone(),
        }
    }
}

/// A request ready for one upstream.
#[derive(Debug)]
pub struct Outgoing {
    url: reqwest::Url,
    body: Vec<u8>,
    /// Whether the answer is a stream (its head must come within the time to first byte).
    streamed: bool,
    /// Whether a translated stream ends with a usage chunk.
    include_usage: bool,
    /// The route's own wait for a stream's head, instead of the data plane's.
    ttfb: Option<std::time::Duration>,
    /// The route's limit on the whole attempt, head and body.
    total: Option<std::time::Duration>,
    /// The attempt's W3C trace context, when spans are made.
    trace: header::HeaderMap,
}

impl Outgoing {
    /// The request within the route's own timeouts.
    pub fn within(mut self, routing: &routero_core::Routing) -> Self {
        self.ttfb = routing
            .ttfb_timeout_ms
            .map(std::time::Duration::from_millis);
        self.total = routing.timeout_ms.map(std::time::Duration::from_millis);
        self
    }

    /// The request carrying `attempt`'s trace context (nothing when spans are not made).
    pub(crate) fn traced(mut self, attempt: &tracing::Span) -> Self {
        if !attempt.is_none() {
            routero_telemetry::inject(attempt, &mut self.trace);
        }
        self
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

    /// Sends a request prepared for `upstream` and relays the answer, as a chat completion
    /// (or its chunks) whatever the provider's dialect. A streamed request's response must
    /// begin within the time-to-first-byte timeout; a whole completion's head comes when it
    /// is written, so only the read timeout bounds it.
    pub async fn forward(
        &self,
        upstream: &Upstream,
        outgoing: Outgoing,
    ) -> Result<Response, Refused> {
        let Outgoing {
            url,
            body,
            streamed,
            include_usage,
            ttfb,
            total,
            trace,
        } = outgoing;
        let mut sent = self
            .client
            .post(url.clone())
            .header(upstream.key_header.0.clone(), upstream.key_header.1.clone())
            .header(header::CONTENT_TYPE, "application/json");
        if matches!(upstream.shape, Shape::Anthropic { .. }) {
            sent = sent.header("anthropic-version", anthropic::API_VERSION);
        }
        // The attempt's trace context (when spans are made), for the provider's own traces.
        if !trace.is_empty() {
            sent = sent.headers(trace);
        }
        if let Some(total) = total {
            sent = sent.timeout(total);
        }
        let sent = sent.body(body).send();
        let ttfb = if streamed {
            ttfb.unwrap_or(self.ttfb)
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
            429 => {
                // When to come back, as the provider said it (bounded), for the client.
                let retry_after = upstream_response
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|seconds| seconds.min(3600));
                return Err(Refused {
                    retry_after,
                    ..Refused::from(ErrorCode::UpstreamRateLimited)
                });
            }
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
        if matches!(upstream.shape, Shape::Anthropic { .. }) {
            return from_messages(response, include_usage).await;
        }
        Ok(response)
    }
}

/// A Messages provider's answer as a chat completion: a stream through the translation, a
/// whole answer (or an error body) read and translated.
async fn from_messages(response: Response, include_usage: bool) -> Result<Response, Refused> {
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    if crate::sse::is_event_stream(&parts.headers) {
        let body = crate::sse::translated(body, anthropic::ToChat::new(include_usage));
        return Ok(Response::from_parts(parts, body));
    }
    let bytes = axum::body::to_bytes(body, crate::MAX_WHOLE_ANSWER)
        .await
        .map_err(|_| Refused::from(ErrorCode::UpstreamError))?;
    let answer: Value =
        serde_json::from_slice(&bytes).map_err(|_| Refused::from(ErrorCode::UpstreamError))?;
    let translated = if parts.status.is_success() {
        anthropic::chat_completion(&answer).map_err(|untranslatable| {
            tracing::warn!(%untranslatable, "provider answer refused");
            Refused::from(ErrorCode::UpstreamError)
        })?
    } else {
        anthropic::chat_error(&answer)
    };
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(Response::from_parts(
        parts,
        Body::from(translated.to_string()),
    ))
}

/// Whether a request failed because the egress policy refused every address of its host.
fn egress_refused(error: &reqwest::Error) -> bool {
    std::iter::successors(Some(error as &(dyn std::error::Error + 'static)), |error| {
        error.source()
    })
    .filter_map(|error| error.downcast_ref::<DataPlaneError>())
    .any(|error| egress::refusal(error) == ErrorCode::EgressNotAllowed)
}
