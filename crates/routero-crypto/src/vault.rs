use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};

use crate::{CryptoError, SealingKey};

/// Master keys for provider credentials, by version. New encryptions use the highest version;
/// every version held stays decryptable, so a rotation can re-encrypt while traffic continues.
///
/// Ciphertexts read `v<version>:<base64(nonce ‖ ciphertext ‖ tag)>` and are bound to their
/// tenant: the tenant id is the associated data, so a ciphertext copied to another tenant's
/// row does not decrypt.
#[derive(Clone, Debug)]
pub struct Keyring {
    keys: BTreeMap<u32, SealingKey>,
}

impl Keyring {
    /// A keyring from `(version, key)` pairs; versions start at 1.
    pub fn new(keys: impl IntoIterator<Item = (u32, SealingKey)>) -> Result<Self, CryptoError> {
        let keys: BTreeMap<u32, SealingKey> = keys.into_iter().collect();
        if keys.is_empty() || keys.contains_key(&0) {
            return Err(CryptoError::InvalidKey(
                "a keyring needs at least one key, with versions from 1".into(),
            ));
        }
        Ok(Self { keys })
    }

    /// A keyring of one fresh key, version 1.
    pub fn generate() -> Result<Self, CryptoError> {
        Self::new([(1, SealingKey::generate()?)])
    }

    /// Parses `1:<base64>,2:<base64>` as written by [`Keyring::to_spec`].
    pub fn parse(spec: &str) -> Result<Self, CryptoError> {
        let entries = spec
            .split(',')
            .filter(|entry| !entry.trim().is_empty())
            .map(|entry| {
                let (version, key) = entry.trim().split_once(':').ok_or_else(|| {
                    CryptoError::InvalidKey("keyring entries read <version>:<base64 key>".into())
                })?;
                let version = version
                    .parse::<u32>()
                    .map_err(|_| CryptoError::InvalidKey(format!("bad version {version:?}")))?;
                Ok((version, SealingKey::from_base64(key)?))
            })
            .collect::<Result<Vec<_>, CryptoError>>()?;
        Self::new(entries)
    }

    /// The keyring in the form [`Keyring::parse`] reads.
    pub fn to_spec(&self) -> SecretString {
        self.keys
            .iter()
            .map(|(version, key)| format!("{version}:{}", key.to_base64().expose_secret()))
            .collect::<Vec<_>>()
            .join(",")
            .into()
    }

    /// The version new encryptions use.
    pub fn current_version(&self) -> u32 {
        self.keys.keys().next_back().copied().unwrap_or(1)
    }

    /// This keyring plus a fresh key one version above the current one.
    pub fn with_new_version(&self) -> Result<Self, CryptoError> {
        let mut keys = self.keys.clone();
        keys.insert(self.current_version() + 1, SealingKey::generate()?);
        Ok(Self { keys })
    }

    /// Encrypts a credential for `tenant` under the current key.
    pub fn encrypt(&self, tenant: &str, plaintext: &str) -> Result<String, CryptoError> {
        let version = self.current_version();
        let key = self
            .keys
            .get(&version)
            .ok_or(CryptoError::UnknownKeyVersion(version))?;
        let sealed = key.seal(&aad(tenant), plaintext.as_bytes())?;
        Ok(format!("v{version}:{}", STANDARD.encode(sealed)))
    }

    /// Decrypts a credential of `tenant`, whatever version it was encrypted under.
    pub fn decrypt(&self, tenant: &str, ciphertext: &str) -> Result<SecretString, CryptoError> {
        let (version, body) = split_version(ciphertext)?;
        let key = self
            .keys
            .get(&version)
            .ok_or(CryptoError::UnknownKeyVersion(version))?;
        let sealed = STANDARD
            .decode(body)
            .map_err(|_| CryptoError::Malformed("not base64"))?;
        let plaintext = key.open(&aad(tenant), &sealed)?;
        String::from_utf8(plaintext)
            .map(SecretString::from)
            .map_err(|_| CryptoError::Malformed("not UTF-8"))
    }

    /// The key version a ciphertext was encrypted under.
    pub fn version_of(ciphertext: &str) -> Result<u32, CryptoError> {
        split_version(ciphertext).map(|(version, _)| version)
    }
}

fn aad(tenant: &str) -> Vec<u8> {
    [b"routero:credential:".as_slice(), tenant.as_bytes()].concat()
}

fn split_version(ciphertext: &str) -> Result<(u32, &str), CryptoError> {
    let rest = ciphertext
        .strip_prefix('v')
        .ok_or(CryptoError::Malformed("missing version prefix"))?;
    let (version, body) = rest
        .split_once(':')
        .ok_or(CryptoError::Malformed("missing version prefix"))?;
    let version = version
        .parse()
        .map_err(|_| CryptoError::Malformed("bad version"))?;
    Ok((version, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ciphertext_is_prefixed_and_round_trips() {
        let ring = Keyring::generate().unwrap();
        let ct = ring.encrypt("tenant-a", "sk-provider").unwrap();
        assert!(ct.starts_with("v1:"), "{ct}");
        assert!(!ct.contains("sk-provider"));
        assert_eq!(
            ring.decrypt("tenant-a", &ct).unwrap().expose_secret(),
            "sk-provider"
        );
    }

    #[test]
    fn wrong_tenant_does_not_decrypt() {
        let ring = Keyring::generate().unwrap();
        let ct = ring.encrypt("tenant-a", "sk-provider").unwrap();
        assert_eq!(
            ring.decrypt("tenant-b", &ct).unwrap_err(),
            CryptoError::Unauthentic
        );
    }

    #[test]
    fn tampered_ciphertext_does_not_decrypt() {
        let ring = Keyring::generate().unwrap();
        let ct = ring.encrypt("t", "sk-provider").unwrap();
        let mut raw = STANDARD.decode(ct.strip_prefix("v1:").unwrap()).unwrap();
        raw[14] ^= 0x40;
        let tampered = format!("v1:{}", STANDARD.encode(raw));
        assert_eq!(
            ring.decrypt("t", &tampered).unwrap_err(),
            CryptoError::Unauthentic
        );
        assert_eq!(
            ring.decrypt("t", "v1:!!!").unwrap_err(),
            CryptoError::Malformed("not base64")
        );
        assert_eq!(
            ring.decrypt("t", "plain").unwrap_err(),
            CryptoError::Malformed("missing version prefix")
        );
    }

    #[test]
    fn unknown_version_is_named() {
        let ring = Keyring::generate().unwrap();
        let ct = ring.encrypt("t", "x").unwrap().replacen("v1:", "v7:", 1);
        assert_eq!(
            ring.decrypt("t", &ct).unwrap_err(),
            CryptoError::UnknownKeyVersion(7)
        );
    }

    #[test]
    fn rotation_midway_keeps_both_versions_readable() {
        let old = Keyring::generate().unwrap();
        let old_ct = old.encrypt("t", "first").unwrap();
        let rotated = old.with_new_version().unwrap();
        let new_ct = rotated.encrypt("t", "second").unwrap();
        assert_eq!(Keyring::version_of(&new_ct).unwrap(), 2);
        // Midway: some rows still v1, some already v2; both decrypt under the new keyring.
        assert_eq!(
            rotated.decrypt("t", &old_ct).unwrap().expose_secret(),
            "first"
        );
        assert_eq!(
            rotated.decrypt("t", &new_ct).unwrap().expose_secret(),
            "second"
        );
        // A node still on the old keyring reads v1 and names v2 as unknown.
        assert_eq!(
            old.decrypt("t", &new_ct).unwrap_err(),
            CryptoError::UnknownKeyVersion(2)
        );
    }

    #[test]
    fn spec_round_trips_and_rejects_garbage() {
        let ring = Keyring::generate().unwrap().with_new_version().unwrap();
        let again = Keyring::parse(ring.to_spec().expose_secret()).unwrap();
        assert_eq!(again.current_version(), 2);
        let ct = ring.encrypt("t", "x").unwrap();
        assert_eq!(again.decrypt("t", &ct).unwrap().expose_secret(), "x");
        assert!(Keyring::parse("").is_err());
        assert!(Keyring::parse("0:AAAA").is_err());
        assert!(Keyring::parse("one:AAAA").is_err());
    }
}
