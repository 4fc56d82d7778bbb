//! Keys for one purpose each, derived from a configured secret: no two purposes ever share
//! key material, so a value computed for one (a guardrail token, a snapshot tag, a watch
//! credential) is never valid for another.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{CryptoError, SealingKey};

/// What a derived key is for. Each has its own label; adding a purpose adds a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Authenticating snapshot messages from the control plane (derived from the data-plane key).
    SnapshotAuthentication,
    /// The credential a data plane presents to watch snapshots (derived from the data-plane key).
    WatchCredential,
    /// The guardrails' `hash` action (derived from the key-hashing pepper, then per tenant).
    GuardrailHashing,
    /// Tags on the audit records the writer stored itself (derived from the checkpoint
    /// signing key): it signs only a chain it wrote.
    AuditRecords,
    /// Tags on the control plane's audit outbox rows (derived from the key-hashing pepper): it
    /// forwards only events it wrote.
    AuditOutbox,
    /// Sessions' CSRF tokens, made from their session tokens (derived from the key-hashing
    /// pepper): a page served to a session can carry its token.
    SessionCsrf,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Self::SnapshotAuthentication => b"routero/derive/v1/snapshot-authentication",
            Self::WatchCredential => b"routero/derive/v1/watch-credential",
            Self::GuardrailHashing => b"routero/derive/v1/guardrail-hashing",
            Self::AuditRecords => b"routero/derive/v1/audit-records",
            Self::AuditOutbox => b"routero/derive/v1/audit-outbox",
            Self::SessionCsrf => b"routero/derive/v1/session-csrf",
        }
    }
}

impl SealingKey {
    /// The key for `purpose`: HMAC-SHA256 under this key of the purpose's label.
    pub fn derive(&self, purpose: Purpose) -> Result<SealingKey, CryptoError> {
        Ok(SealingKey::from_array(
            MessageKey::new(self)?.tag(purpose.label()),
        ))
    }
}

/// Tags messages with HMAC-SHA256 and checks tags in constant time.
#[derive(Clone)]
pub struct MessageKey(Hmac<Sha256>);

impl std::fmt::Debug for MessageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MessageKey([REDACTED])")
    }
}

impl MessageKey {
    /// A key tagging with `key`'s bytes.
    pub fn new(key: &SealingKey) -> Result<Self, CryptoError> {
        <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes())
            .map(Self)
            .map_err(|_| CryptoError::InvalidKey("message key".into()))
    }

    /// The tag of the concatenated `parts`.
    pub fn tag_parts(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.0.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// The tag of `message`.
    pub fn tag(&self, message: &[u8]) -> [u8; 32] {
        self.tag_parts(&[message])
    }

    /// Whether `tag` is the tag of the concatenated `parts`, compared in constant time.
    pub fn verify_parts(&self, parts: &[&[u8]], tag: &[u8]) -> Result<(), CryptoError> {
        let mut mac = self.0.clone();
        for part in parts {
            mac.update(part);
        }
        mac.verify_slice(tag).map_err(|_| CryptoError::Unauthentic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_get_distinct_keys_and_tags_verify_only_their_message() {
        let root = SealingKey::generate().unwrap();
        let purposes = [
            Purpose::SnapshotAuthentication,
            Purpose::WatchCredential,
            Purpose::GuardrailHashing,
            Purpose::AuditRecords,
            Purpose::AuditOutbox,
        ];
        let derived: Vec<[u8; 32]> = purposes
            .iter()
            .map(|p| *root.derive(*p).unwrap().as_bytes())
            .collect();
        for (i, a) in derived.iter().enumerate() {
            assert_ne!(a, root.as_bytes());
            for b in derived.iter().skip(i + 1) {
                assert_ne!(a, b);
            }
        }
        assert_eq!(
            root.derive(Purpose::WatchCredential).unwrap().as_bytes(),
            root.derive(Purpose::WatchCredential).unwrap().as_bytes(),
            "derivation is stable"
        );
        let key = MessageKey::new(&root.derive(Purpose::SnapshotAuthentication).unwrap()).unwrap();
        let tag = key.tag_parts(&[b"a", b"bc"]);
        assert_eq!(key.verify_parts(&[b"ab", b"c"], &tag), Ok(()));
        assert_eq!(
            key.verify_parts(&[b"abd"], &tag),
            Err(CryptoError::Unauthentic)
        );
        assert_eq!(
            key.verify_parts(&[b"abc"], &tag[..16]),
            Err(CryptoError::Unauthentic)
        );
    }
}
