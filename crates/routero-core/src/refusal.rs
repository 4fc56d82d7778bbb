/// Why the gateway refused a request: each has a stable code and an HTTP status.
///
/// The codes are part of the public API; clients match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No key, or a key the snapshot does not know.
    InvalidApiKey,
    /// The key's expiry has passed.
    KeyExpired,
    /// The client address is outside the key's CIDR allowlist.
    IpNotAllowed,
    /// The key may not use the requested model.
    ModelNotAllowed,
    /// The authorization policies do not allow the key to use the requested model.
    PolicyDenied,
    /// The policy engine could not decide; refused rather than allowed.
    PolicyEngineUnavailable,
    /// A guardrail's `block` rule fired on the request or the response.
    GuardrailBlocked,
    /// The tenant's guardrails could not be loaded; refused rather than unscanned.
    GuardrailUnavailable,
    /// Input the guardrails cannot read (token ids instead of text) while they apply.
    GuardrailUninspectable,
    /// No route exists for the requested model.
    ModelNotFound,
    /// The request body is not what the endpoint takes.
    InvalidRequest,
    /// The request body exceeds the configured limit.
    BodyTooLarge,
    /// The data plane has no snapshot fresh enough to decide.
    ControlPlaneUnreachable,
    /// The request could not be recorded in the audit log, so it is not served.
    AuditUnavailable,
    /// The provider could not be reached.
    UpstreamUnreachable,
    /// The provider's address is one the operator's egress policy does not allow.
    EgressNotAllowed,
    /// The provider did not answer in time.
    UpstreamTimeout,
    /// The provider refused the gateway's own credentials.
    UpstreamAuthFailed,
    /// The provider failed.
    UpstreamError,
    /// The provider is rate limiting the gateway.
    UpstreamRateLimited,
    /// The source address failed authentication too often this minute.
    TooManyAuthFailures,
    /// The client did not send its request (headers, body) within the deadline.
    RequestTimeout,
    /// Handling the request took longer than the gateway allows.
    DeadlineExceeded,
    /// The gateway failed unexpectedly; nothing was served.
    InternalError,
}

impl Refusal {
    /// The stable machine-readable code.
    pub fn code(self) -> &'static str {
        match self {
            Self::InvalidApiKey => "invalid_api_key",
            Self::KeyExpired => "key_expired",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::ModelNotAllowed => "model_not_allowed",
            Self::PolicyDenied => "policy_denied",
            Self::PolicyEngineUnavailable => "policy_engine_unavailable",
            Self::GuardrailBlocked => "guardrail_blocked",
            Self::GuardrailUnavailable => "guardrail_unavailable",
            Self::GuardrailUninspectable => "guardrail_uninspectable",
            Self::ModelNotFound => "model_not_found",
            Self::InvalidRequest => "invalid_request",
            Self::BodyTooLarge => "body_too_large",
            Self::ControlPlaneUnreachable => "control_plane_unreachable",
            Self::AuditUnavailable => "audit_unavailable",
            Self::UpstreamUnreachable => "upstream_unreachable",
            Self::EgressNotAllowed => "egress_not_allowed",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamAuthFailed => "upstream_auth_failed",
            Self::UpstreamError => "upstream_error",
            Self::UpstreamRateLimited => "upstream_rate_limited",
            Self::TooManyAuthFailures => "too_many_auth_failures",
            Self::RequestTimeout => "request_timeout",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::InternalError => "internal_error",
        }
    }

    /// The HTTP status that carries it.
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidApiKey | Self::KeyExpired => 401,
            Self::IpNotAllowed | Self::ModelNotAllowed | Self::PolicyDenied => 403,
            Self::GuardrailBlocked | Self::GuardrailUninspectable => 400,
            Self::ModelNotFound => 404,
            Self::InvalidRequest => 400,
            Self::BodyTooLarge => 413,
            Self::ControlPlaneUnreachable
            | Self::AuditUnavailable
            | Self::PolicyEngineUnavailable
            | Self::GuardrailUnavailable => 503,
            Self::UpstreamUnreachable
            | Self::EgressNotAllowed
            | Self::UpstreamAuthFailed
            | Self::UpstreamError => 502,
            Self::UpstreamTimeout | Self::DeadlineExceeded => 504,
            Self::UpstreamRateLimited | Self::TooManyAuthFailures => 429,
            Self::RequestTimeout => 408,
            Self::InternalError => 500,
        }
    }

    /// The OpenAI error `type` this refusal belongs to.
    pub fn error_type(self) -> &'static str {
        match self {
            Self::InvalidApiKey | Self::KeyExpired | Self::TooManyAuthFailures => {
                "authentication_error"
            }
            Self::RequestTimeout => "invalid_request_error",
            Self::IpNotAllowed | Self::ModelNotAllowed | Self::PolicyDenied => "permission_error",
            Self::ModelNotFound
            | Self::InvalidRequest
            | Self::BodyTooLarge
            | Self::GuardrailBlocked
            | Self::GuardrailUninspectable => "invalid_request_error",
            Self::ControlPlaneUnreachable
            | Self::AuditUnavailable
            | Self::PolicyEngineUnavailable
            | Self::GuardrailUnavailable
            | Self::UpstreamUnreachable
            | Self::EgressNotAllowed
            | Self::UpstreamTimeout
            | Self::UpstreamAuthFailed
            | Self::UpstreamError
            | Self::UpstreamRateLimited
            | Self::DeadlineExceeded
            | Self::InternalError => "api_error",
        }
    }

    /// A message safe to show the client: it never carries internal detail.
    pub fn message(self) -> &'static str {
        match self {
            Self::InvalidApiKey => "The API key is missing or not valid.",
            Self::KeyExpired => "The API key has expired.",
            Self::IpNotAllowed => "Requests with this key are not allowed from this address.",
            Self::ModelNotAllowed => "This key may not use the requested model.",
            Self::PolicyDenied => {
                "The gateway's policies do not allow this key to use the requested model."
            }
            Self::PolicyEngineUnavailable => {
                "The gateway cannot check its policies right now and refuses the request."
            }
            Self::GuardrailBlocked => {
                "The gateway's guardrails blocked this request: it carries content the tenant's policy does not allow."
            }
            Self::GuardrailUninspectable => {
                "The gateway's guardrails cannot read this input (token ids, not text): send text instead."
            }
            Self::GuardrailUnavailable => {
                "The gateway cannot apply its guardrails right now and refuses the request."
            }
            Self::ModelNotFound => "The requested model does not exist.",
            Self::InvalidRequest => "The request body is not valid.",
            Self::BodyTooLarge => "The request body is too large.",
            Self::ControlPlaneUnreachable => {
                "The gateway has no current configuration and refuses requests until it does."
            }
            Self::AuditUnavailable => {
                "The request cannot be recorded in the audit log right now and is refused."
            }
            Self::UpstreamUnreachable => "The model provider could not be reached.",
            Self::EgressNotAllowed => {
                "The gateway's egress policy does not allow the model provider's address."
            }
            Self::UpstreamTimeout => "The model provider did not answer in time.",
            Self::UpstreamAuthFailed => "The gateway's provider credential was refused.",
            Self::UpstreamError => "The model provider failed.",
            Self::UpstreamRateLimited => {
                "The model provider is rate limiting requests; retry later."
            }
            Self::TooManyAuthFailures => {
                "Too many failed authentications from this address; retry after the time given."
            }
            Self::RequestTimeout => "The request was not received in time.",
            Self::DeadlineExceeded => "The request took longer than the gateway allows.",
            Self::InternalError => "The gateway failed; the request was not served.",
        }
    }
}
