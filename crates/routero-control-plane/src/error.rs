use routero_core::{ErrorCode, Resource};
use routero_crypto::CryptoError;
use thiserror::Error;

/// Errors of the control plane; mapped to HTTP and gRPC statuses at the edge.
#[derive(Debug, Error)]
pub enum ControlPlaneError {
    /// The database failed or is unreachable.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Opening or migrating the database failed.
    #[error("database: {0}")]
    Open(#[from] routero_sql::SqlError),
    /// A cryptographic operation failed.
    #[error("crypto: {0}")]
    Crypto(#[from] CryptoError),
    /// The caller asked for something that does not exist in its tenant.
    #[error("{} not found", .0.name())]
    NotFound(Resource),
    /// A unique name is already taken.
    #[error("{} already exists", .0.name())]
    Conflict(Resource),
    /// The request is refused for a reason its `code` names (an invalid value, a resource
    /// still in use).
    #[error("{message}")]
    Rejected {
        /// Why.
        code: ErrorCode,
        /// Message for the client.
        message: String,
    },
    /// Stored data could not be read back.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// Configuration is unusable.
    #[error("config: {0}")]
    Config(String),
    /// The audit log could not be opened.
    #[error("audit log: {0}")]
    Audit(#[from] routero_audit::AuditError),
    /// The policy engine could not be reached when starting.
    #[error("authorization: {0}")]
    Authz(#[from] routero_authz::AuthzError),
    /// A listener or server failed.
    #[error("server: {0}")]
    Server(String),
}

impl ControlPlaneError {
    /// Shorthand for a [`ControlPlaneError::Rejected`] error.
    pub fn rejected(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Rejected {
            code,
            message: message.into(),
        }
    }
}
