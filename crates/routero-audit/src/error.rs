use thiserror::Error;

/// Errors of building, reading and checking audit records (tampering found by verification is
/// a [`crate::Violation`], not an error).
#[derive(Debug, Error)]
pub enum AuditError {
    /// A record or line is not valid JSON of the expected shape.
    #[error("line {line}: {source}")]
    Json {
        /// 1-based line number (0 when not read from a file).
        line: usize,
        /// What serde said.
        source: serde_json::Error,
    },
    /// A hash or signature field is not valid hex/base64 of the right length.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// An event was appended to another tenant's chain.
    #[error("event of tenant {event} appended to the chain of tenant {chain}")]
    WrongTenant {
        /// The chain's tenant.
        chain: String,
        /// The event's tenant.
        event: String,
    },
    /// The audit database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Opening or migrating the audit database failed.
    #[error("database: {0}")]
    Open(#[from] routero_sql::SqlError),
    /// Reading an export failed.
    #[error("read: {0}")]
    Io(#[from] std::io::Error),
}
