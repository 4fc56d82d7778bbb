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
    /// An export line labelled as an anchor is a checkpoint: refused, it would make the records
    /// below it look legitimately pruned.
    #[error("line {line}: a checkpoint (seq {seq}) relabelled as an anchor; refused")]
    CheckpointAsAnchor {
        /// 1-based line number.
        line: usize,
        /// The checkpoint's sequence number.
        seq: u64,
    },
    /// A witness holds a checkpoint whose signature does not verify.
    #[error(
        "witness line {line}: the checkpoint of tenant {tenant_id} at seq {seq} is not signed by this key"
    )]
    UnsignedWitness {
        /// 1-based line number in the witness.
        line: usize,
        /// Its tenant.
        tenant_id: String,
        /// Its sequence number.
        seq: u64,
    },
    /// A tenant's chain did not verify, so it is not pruned.
    #[error("chain does not verify: {0}")]
    Unverified(crate::Violation),
    /// A retention shorter than the operator's minimum was asked for.
    #[error("retention below the minimum of {minimum} days")]
    RetentionTooShort {
        /// The operator's minimum, in days.
        minimum: u32,
    },
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
