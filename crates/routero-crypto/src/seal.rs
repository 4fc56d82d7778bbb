use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::SecretString;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::CryptoError;

const NONCE_LEN: usize = 12;

/// Fills an array from the operating system's random source.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|_| CryptoError::Random)?;
    Ok(bytes)
}

/// Raw secret bytes, zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// The bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

/// A 256-bit AES-GCM key. Each seal draws a fresh 96-bit nonce; the output is `nonce ‖ ciphertext ‖ tag`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SealingKey([u8; 32]);

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey([REDACTED])")
    }
}

impl SealingKey {
    /// A new random key.
    pub fn generate() -> Result<Self, CryptoError> {
        random_bytes().map(Self)
    }

    /// Reads a key from standard base64 of 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, CryptoError> {
        let mut bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| CryptoError::InvalidKey("not base64".into()))?;
        let key = <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| CryptoError::InvalidKey(format!("{} bytes, need 32", bytes.len())));
        bytes.zeroize();
        key.map(Self)
    }

    /// The key as base64, for writing it to a secrets file once.
    pub fn to_base64(&self) -> SecretString {
        STANDARD.encode(self.0).into()
    }

    /// Encrypts `plaintext`, binding it to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let nonce_bytes: [u8; NONCE_LEN] = random_bytes()?;
        let nonce = Nonce::from(nonce_bytes);
        let ciphertext = self
            .cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| CryptoError::Unauthentic)?;
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Decrypts what [`SealingKey::seal`] produced under the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(CryptoError::Malformed("too short"));
        }
        let (nonce_bytes, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce_bytes: [u8; NONCE_LEN] = nonce_bytes
            .try_into()
            .map_err(|_| CryptoError::Malformed("nonce"))?;
        self.cipher()
            .decrypt(
                &Nonce::from(nonce_bytes),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| CryptoError::Unauthentic)
    }

    /// Raw key bytes, for keyed constructions inside this crate.
    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Key bytes as they travel sealed to a data plane.
    pub fn to_bytes(&self) -> SecretBytes {
        SecretBytes(self.0.to_vec())
    }

    /// A key from an array.
    pub(crate) fn from_array(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A key from 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        <[u8; 32]>::try_from(bytes)
            .map(Self)
            .map_err(|_| CryptoError::InvalidKey(format!("{} bytes, need 32", bytes.len())))
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.0.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_binds_aad() {
        let key = SealingKey::generate().unwrap();
        let sealed = key.seal(b"tenant-a", b"secret").unwrap();
        assert_eq!(key.open(b"tenant-a", &sealed).unwrap(), b"secret");
        assert_eq!(
            key.open(b"tenant-b", &sealed),
            Err(CryptoError::Unauthentic)
        );
    }

    #[test]
    fn every_seal_uses_a_fresh_nonce() {
        let key = SealingKey::generate().unwrap();
        let a = key.seal(b"", b"same").unwrap();
        let b = key.seal(b"", b"same").unwrap();
        assert_ne!(a[..NONCE_LEN], b[..NONCE_LEN]);
    }

    #[test]
    fn tampering_and_wrong_key_fail() {
        let key = SealingKey::generate().unwrap();
        let mut sealed = key.seal(b"", b"secret").unwrap();
        let other = SealingKey::generate().unwrap();
        assert_eq!(other.open(b"", &sealed), Err(CryptoError::Unauthentic));
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(key.open(b"", &sealed), Err(CryptoError::Unauthentic));
        assert_eq!(
            key.open(b"", &sealed[..10]),
            Err(CryptoError::Malformed("too short"))
        );
    }

    #[test]
    fn debug_redacts() {
        let key = SealingKey::generate().unwrap();
        assert_eq!(format!("{key:?}"), "SealingKey([REDACTED])");
    }

    #[test]
    fn base64_round_trip_and_length_check() {
        let key = SealingKey::generate().unwrap();
        use secrecy::ExposeSecret;
        let again = SealingKey::from_base64(key.to_base64().expose_secret()).unwrap();
        let sealed = key.seal(b"x", b"y").unwrap();
        assert_eq!(again.open(b"x", &sealed).unwrap(), b"y");
        assert!(SealingKey::from_base64("c2hvcnQ=").is_err());
    }
}
