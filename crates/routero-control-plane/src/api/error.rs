use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::ControlPlaneError;

/// An error as the admin API shows it: `{"error": {"message", "type", "code"}}`.
///
/// Internal detail is logged, never sent.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An error with a stable `code`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// A 400 with a stable code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub(crate) fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_admin_key",
            "A valid admin key is required: Authorization: Bearer <admin key>.",
        )
    }

    pub(crate) fn not_found_route() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "route_not_found",
            "No such endpoint.",
        )
    }
}

impl From<ControlPlaneError> for ApiError {
    fn from(error: ControlPlaneError) -> Self {
        match error {
            ControlPlaneError::NotFound(what) => Self::new(
                StatusCode::NOT_FOUND,
                match what {
                    "key" => "key_not_found",
                    "team" => "team_not_found",
                    "user" => "user_not_found",
                    "credential" => "credential_not_found",
                    "admin key" => "admin_key_not_found",
                    "role" => "role_not_found",
                    "model" => "model_not_found",
                    _ => "not_found",
                },
                format!("No such {what} in this tenant."),
            ),
            ControlPlaneError::Conflict(what) => Self::new(
                StatusCode::CONFLICT,
                "already_exists",
                format!("A {what} with this name already exists."),
            ),
            ControlPlaneError::Invalid { code, message } => Self::bad_request(code, message),
            ControlPlaneError::InUse { code, message } => {
                Self::new(StatusCode::CONFLICT, code, message)
            }
            ControlPlaneError::Database(ref e) => {
                tracing::error!(error = %e, "database error");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "The control plane's database is unavailable.",
                )
            }
            other => {
                tracing::error!(error = %other, "internal error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "Internal error.",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = match self.status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            400..=499 => "invalid_request_error",
            _ => "api_error",
        };
        let body = serde_json::json!({
            "error": { "message": self.message, "type": kind, "code": self.code }
        });
        (self.status, Json(body)).into_response()
    }
}
