use thiserror::Error;

/// Errors of sealing, the vault and key material.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CryptoError {
    /// The operating system's random source failed.
    #[error("random source unavailable")]
    Random,
    /// Authentication failed: wrong key, another binding (tenant, credential, base URL), or
    /// tampered data.
    #[error("ciphertext did not authenticate")]
    Unauthentic,
    /// The ciphertext names a key version the keyring does not hold.
    #[error("unknown key version v{0}")]
    UnknownKeyVersion(u32),
    /// A legacy ciphertext, bound to its tenant only: it must be re-encrypted bound to its
    /// credential before it is used.
    #[error("legacy ciphertext bound to its tenant only; not used until bound to its credential")]
    Legacy,
    /// The ciphertext is not in the `bN:base64` (or legacy `vN:base64`) form.
    #[error("malformed ciphertext: {0}")]
    Malformed(&'static str),
    /// Key material in configuration is not usable.
    #[error("invalid key material: {0}")]
    InvalidKey(String),
}
