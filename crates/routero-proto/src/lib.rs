//! The snapshot protocol between control plane and data planes: the generated gRPC types,
//! conversions to domain types, and [`WireState`], the state both sides diff and apply.
#![forbid(unsafe_code)]

mod auth;
mod convert;
mod state;

/// Types generated from `proto/routero/v1/snapshot.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("routero.v1");
}

pub use auth::{CREDENTIAL_METADATA, ChannelAuth, MAX_CLOCK_SKEW_MS};
pub use state::{Applied, WireState};

/// Associated data under which secrets are sealed for data planes, so a sealed value cannot
/// be replayed in another field, for another tenant, credential or base URL.
pub mod aad {
    use routero_crypto::CredentialBinding;

    /// The key-hashing pepper.
    pub const PEPPER: &[u8] = b"routero:dp-pepper";
    /// A data plane's snapshot file on disk.
    pub const PERSISTED_SNAPSHOT: &[u8] = b"routero:dp-persisted-snapshot";

    /// A provider API key, bound to its tenant, credential and base URL.
    pub fn credential(binding: &CredentialBinding<'_>) -> Vec<u8> {
        binding.associated_data(b"routero:dp-credential-bound")
    }
}

use thiserror::Error;

/// Errors of decoding and applying snapshot messages.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ProtoError {
    /// A message or credential did not authenticate: forged, altered, or another key's.
    #[error("{0} did not authenticate")]
    Unauthentic(&'static str),
    /// A message carried a version lower than or equal to the one applied.
    #[error("version regression: have {have}, got {got}")]
    VersionRegression {
        /// Version applied.
        have: u64,
        /// Version received.
        got: u64,
    },
    /// A delta was computed against a version other than the one applied.
    #[error("delta base {base} does not match applied version {have}")]
    DeltaBaseMismatch {
        /// Version applied.
        have: u64,
        /// Version the delta expects.
        base: u64,
    },
    /// A message had no body.
    #[error("snapshot message without a body")]
    EmptyMessage,
    /// A field did not convert to its domain type.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Field name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}
