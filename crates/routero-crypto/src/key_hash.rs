use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use routero_core::KeyHash;
use secrecy::SecretString;
use sha2::Sha256;

use crate::{CryptoError, SealingKey, random_bytes};

/// Generates an API key: `prefix` followed by 256 random bits in URL-safe base64.
pub fn generate_api_key(prefix: &str) -> Result<SecretString, CryptoError> {
    let bytes: [u8; 32] = random_bytes()?;
    Ok(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)).into())
}

/// Hashes API keys with HMAC-SHA256 under a server-side pepper, so a copy of the database
/// alone cannot be used to test guesses.
#[derive(Clone)]
pub struct KeyHasher {
    pepper: SealingKey,
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher([REDACTED])")
    }
}

impl KeyHasher {
    /// A hasher under `pepper`.
    pub fn new(pepper: SealingKey) -> Result<Self, CryptoError> {
        let keyed = <Hmac<Sha256> as Mac>::new_from_slice(pepper.as_bytes())
            .map_err(|_| CryptoError::InvalidKey("pepper".into()))?;
        Ok(Self { pepper, keyed })
    }

    /// The stored form of `key`.
    pub fn hash(&self, key: &str) -> KeyHash {
        let mut mac = self.keyed.clone();
        mac.update(key.as_bytes());
        KeyHash(mac.finalize().into_bytes().into())
    }

    /// The pepper, to be sealed for transport to data planes.
    pub fn pepper(&self) -> &SealingKey {
        &self.pepper
    }
}

/// The signature a webhook receiver checks: hex HMAC-SHA256 under `secret` of
/// `"<unix timestamp>." ‖ body`. Signing the timestamp lets receivers refuse replays.
pub fn webhook_signature(
    secret: &[u8],
    timestamp: i64,
    body: &[u8],
) -> Result<String, CryptoError> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .map_err(|_| CryptoError::InvalidKey("webhook secret".into()))?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(hex_lower(&mac.finalize().into_bytes()))
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn keys_have_prefix_and_256_bits() {
        let key = generate_api_key("sk-rt-").unwrap();
        let body = key.expose_secret().strip_prefix("sk-rt-").unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(body).unwrap().len(), 32);
        assert_ne!(
            key.expose_secret(),
            generate_api_key("sk-rt-").unwrap().expose_secret()
        );
    }

    #[test]
    fn hash_depends_on_pepper_and_key() {
        let a = KeyHasher::new(SealingKey::generate().unwrap()).unwrap();
        let b = KeyHasher::new(SealingKey::generate().unwrap()).unwrap();
        assert_eq!(a.hash("sk-rt-x"), a.hash("sk-rt-x"));
        assert_ne!(a.hash("sk-rt-x"), a.hash("sk-rt-y"));
        assert_ne!(a.hash("sk-rt-x"), b.hash("sk-rt-x"));
    }
}
