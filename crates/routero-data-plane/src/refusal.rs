//! Refusals as OpenAI-style JSON errors.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use routero_core::ErrorCode;

/// A refusal with an optional, client-safe detail replacing the default message.
#[derive(Debug)]
pub struct Refused {
    /// Why.
    pub refusal: ErrorCode,
    /// Detail for the client; never internal state.
    pub detail: Option<String>,
    /// A failed authentication counted into its source's aggregated record, not recorded
    /// on its own.
    pub counted_only: bool,
    /// Seconds after which the client may try again (`Retry-After`).
    pub retry_after: Option<u64>,
}

impl From<ErrorCode> for Refused {
    fn from(refusal: ErrorCode) -> Self {
        Self {
            refusal,
            detail: None,
            counted_only: false,
            retry_after: None,
        }
    }
}

impl Refused {
    /// An invalid request with a specific message.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self {
            refusal: ErrorCode::InvalidRequest,
            detail: Some(detail.into()),
            counted_only: false,
            retry_after: None,
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let refusal = self.refusal;
        let body = serde_json::json!({
            "error": {
                "message": self.detail.as_deref().unwrap_or(refusal.message()),
                "type": refusal.error_type(),
                "param": null,
                "code": refusal.code(),
            }
        });
        let status = StatusCode::from_u16(refusal.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(body)).into_response();
        if refusal == ErrorCode::InvalidApiKey || refusal == ErrorCode::KeyExpired {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(value) = self
            .retry_after
            .and_then(|seconds| HeaderValue::from_str(&seconds.to_string()).ok())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}
