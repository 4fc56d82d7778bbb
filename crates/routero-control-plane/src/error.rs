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
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A unique name is already taken.
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// The request is well-formed JSON but not acceptable; `code` is stable.
    #[error("{message}")]
    Invalid {
        /// Stable machine-readable code.
        code: &'static str,
        /// Message for the client.
        message: String,
    },
    /// The target is still used by something else; `code` is stable.
    #[error("{message}")]
    InUse {
        /// Stable machine-readable code.
        code: &'static str,
        /// Message for the client, naming what uses it.
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
    /// Shorthand for an [`ControlPlaneError::Invalid`] error.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            code,
            message: message.into(),
        }
    }
}
