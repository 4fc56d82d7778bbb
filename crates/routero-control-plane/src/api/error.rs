use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use routero_core::ErrorCode;

use crate::ControlPlaneError;

/// An error as the admin API shows it: `{"error": {"message", "type", "code"}}`, its status
/// and type those of its [`ErrorCode`].
///
/// Internal detail is logged, never sent.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
}

impl ApiError {
    /// An error with a message saying more than the code's own.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// An error with the code's own message.
    pub fn of(code: ErrorCode) -> Self {
        Self::new(code, code.message())
    }

    /// Its code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }
}

impl From<ControlPlaneError> for ApiError {
    fn from(error: ControlPlaneError) -> Self {
        match error {
            ControlPlaneError::NotFound(resource) => Self::new(
                ErrorCode::NotFound(resource),
                format!("No such {} in this tenant.", resource.name()),
            ),
            ControlPlaneError::Conflict(resource) => Self::new(
                ErrorCode::AlreadyExists(resource),
                format!("A {} with this name already exists.", resource.name()),
            ),
            ControlPlaneError::Rejected { code, message } => Self::new(code, message),
            ControlPlaneError::Database(ref e) => {
                tracing::error!(error = %e, "database error");
                Self::of(ErrorCode::DatabaseUnavailable)
            }
            other => {
                tracing::error!(error = %other, "internal error");
                Self::of(ErrorCode::InternalError)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "message": self.message, "type": self.code.error_type(), "code": self.code.code() }
        });
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(body)).into_response()
    }
}
