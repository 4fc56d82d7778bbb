use thiserror::Error;

/// Errors raised by the domain rules of this crate.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CoreError {
    /// A duration string such as `30d` did not parse.
    #[error("invalid duration {0:?}: use a positive whole number followed by s, m, h or d")]
    InvalidDuration(String),
    /// A CIDR allowlist entry did not parse.
    #[error("invalid CIDR {0:?}")]
    InvalidCidr(String),
    /// A key hash did not have 32 bytes.
    #[error("key hash must be 32 bytes, got {0}")]
    InvalidKeyHash(usize),
}
