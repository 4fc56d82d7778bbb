//! Routero's cryptography, in one place: sealing (AES-256-GCM with a fresh 96-bit nonce and
//! associated data), the credential vault with a versioned keyring (each secret bound to its
//! tenant, credential and base URL), the peppered HMAC under which virtual and admin keys are
//! stored, the Ed25519 keys that sign audit checkpoints, and keys derived for one purpose each.
#![forbid(unsafe_code)]

mod derive;
mod error;
mod key_hash;
mod password;
mod seal;
mod signing;
mod vault;

pub use derive::{MessageKey, Purpose};
pub use error::CryptoError;
pub use key_hash::{KeyHasher, generate_api_key, webhook_signature};
pub use password::{PasswordCost, hash_password, verify_password};
pub use seal::{SealingKey, SecretBytes, random_bytes};
pub use signing::{CheckpointSigner, CheckpointVerifier};
pub use vault::{CredentialBinding, Keyring};
