use routero_crypto::CryptoError;
use routero_proto::ProtoError;
use thiserror::Error;

/// Errors of the data plane's own machinery (request refusals are [`routero_core::ErrorCode`]).
#[derive(Debug, Error)]
pub enum DataPlaneError {
    /// The snapshot stream failed.
    #[error("snapshot stream: {0}")]
    Stream(#[from] tonic::Status),
    /// The control plane could not be reached.
    #[error("connect to control plane: {0}")]
    Connect(#[from] tonic::transport::Error),
    /// A snapshot message could not be applied.
    #[error("snapshot: {0}")]
    Snapshot(#[from] ProtoError),
    /// A snapshot message was replayed, stamped by a far-off clock, or out of step.
    #[error("snapshot refused: {0}")]
    Stale(String),
    /// A sealed secret did not open: most likely a data-plane key mismatch.
    #[error("unseal: {0}")]
    Crypto(#[from] CryptoError),
    /// The persisted snapshot could not be read or written.
    #[error("persisted snapshot: {0}")]
    Persist(String),
    /// Configuration is unusable.
    #[error("config: {0}")]
    Config(String),
    /// The policy engine client could not be set up.
    #[error("policy engine: {0}")]
    Authz(#[from] routero_authz::AuthzError),
    /// A provider base URL, or the address it leads to, is refused (egress policy).
    #[error("provider egress: {0}")]
    Egress(#[from] routero_core::CoreError),
    /// The HTTP server failed.
    #[error("server: {0}")]
    Server(#[from] std::io::Error),
}
