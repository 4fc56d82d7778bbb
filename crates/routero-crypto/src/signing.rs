//! Ed25519 keys that sign audit checkpoints, so anyone holding the public key can verify an
//! exported log without trusting the database it came from.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use secrecy::SecretString;

use crate::{CryptoError, random_bytes};

/// The private half: signs checkpoints. Redacted in Debug output.
#[derive(Clone)]
pub struct CheckpointSigner(SigningKey);

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CheckpointSigner([REDACTED])")
    }
}

impl CheckpointSigner {
    /// A new random key.
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(Self(SigningKey::from_bytes(&random_bytes()?)))
    }

    /// Reads the 32-byte seed from base64.
    pub fn from_base64(text: &str) -> Result<Self, CryptoError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| CryptoError::InvalidKey("signing key is not base64".into()))?;
        let seed: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::InvalidKey("signing key needs 32 bytes".into()))?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// The seed as base64, for a secrets file.
    pub fn to_base64(&self) -> SecretString {
        STANDARD.encode(self.0.to_bytes()).into()
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.0.sign(message).to_bytes().to_vec()
    }

    /// The key that tags the records this writer stored (never in the database), so it signs
    /// only what it wrote.
    pub fn record_key(&self) -> Result<crate::MessageKey, CryptoError> {
        crate::SealingKey::from_bytes(&self.0.to_bytes())?
            .derive(crate::Purpose::AuditRecords)
            .and_then(|key| crate::MessageKey::new(&key))
    }

    /// The public half.
    pub fn verifier(&self) -> CheckpointVerifier {
        CheckpointVerifier(self.0.verifying_key())
    }
}

/// The public half: verifies checkpoint signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointVerifier(VerifyingKey);

impl CheckpointVerifier {
    /// Reads a public key from base64 of its 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, CryptoError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| CryptoError::InvalidKey("public key is not base64".into()))?;
        let raw: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::InvalidKey("public key needs 32 bytes".into()))?;
        VerifyingKey::from_bytes(&raw)
            .map(Self)
            .map_err(|_| CryptoError::InvalidKey("not an Ed25519 public key".into()))
    }

    /// The public key as base64, to publish.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.to_bytes())
    }

    /// Whether `signature` is this key's signature over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
        let signature = Signature::from_slice(signature).map_err(|_| CryptoError::Unauthentic)?;
        self.0
            .verify(message, &signature)
            .map_err(|_| CryptoError::Unauthentic)
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn signatures_verify_only_for_their_message_and_key() {
        let signer = CheckpointSigner::generate().unwrap();
        let signature = signer.sign(b"checkpoint");
        let verifier = signer.verifier();
        assert_eq!(verifier.verify(b"checkpoint", &signature), Ok(()));
        assert_eq!(
            verifier.verify(b"checkpoinT", &signature),
            Err(CryptoError::Unauthentic)
        );
        let other = CheckpointSigner::generate().unwrap().verifier();
        assert_eq!(
            other.verify(b"checkpoint", &signature),
            Err(CryptoError::Unauthentic)
        );
        assert_eq!(
            verifier.verify(b"checkpoint", &signature[..10]),
            Err(CryptoError::Unauthentic)
        );
    }

    #[test]
    fn keys_round_trip_through_base64() {
        let signer = CheckpointSigner::generate().unwrap();
        let again = CheckpointSigner::from_base64(signer.to_base64().expose_secret()).unwrap();
        assert_eq!(again.verifier(), signer.verifier());
        let public = CheckpointVerifier::from_base64(&signer.verifier().to_base64()).unwrap();
        assert_eq!(public.verify(b"m", &signer.sign(b"m")), Ok(()));
        assert!(CheckpointVerifier::from_base64("AAAA").is_err());
        assert_eq!(format!("{signer:?}"), "CheckpointSigner([REDACTED])");
    }
}
