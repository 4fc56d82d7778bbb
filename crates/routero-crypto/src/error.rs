use thiserror::Error;

/// Errors of sealing, the vault and key material.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CryptoError {
    /// The operating system's random source failed.
    #[error("random source unavailable")]
    Random,
    /// Authentication failed: wrong key, wrong tenant, or tampered data.
    #[error("ciphertext did not authenticate")]
    Unauthentic,
    /// The ciphertext names a key version the keyring does not hold.
    #[error("unknown key version v{0}")]
    UnknownKeyVersion(u32),
    /// The ciphertext is not in the `vN:base64` form.
    #[error("malformed ciphertext: {0}")]
    Malformed(&'static str),
    /// Key material in configuration is not usable.
    #[error("invalid key material: {0}")]
    InvalidKey(String),
}
