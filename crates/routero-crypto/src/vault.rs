use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};

use crate::{CryptoError, SealingKey};

/// Domain of the vault's associated data for credentials bound to their binding.
const BOUND_DOMAIN: &[u8] = b"routero:credential-bound";
/// Prefix of the associated data of legacy ciphertexts, followed by the tenant id.
const LEGACY_DOMAIN: &[u8] = b"routero:credential:";

/// What a provider key is bound to: its tenant, its credential, and the base URL it may be sent
/// to. A ciphertext (or a sealed copy for data planes) opens only under the same three, so a
/// credential repointed at another URL, or a ciphertext copied to another row, does not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CredentialBinding<'a> {
    /// Tenant id.
    pub tenant: &'a str,
    /// Credential id.
    pub credential_id: &'a str,
    /// Base URL, exactly as stored.
    pub base_url: &'a str,
}

impl CredentialBinding<'_> {
    /// Associated data under `domain`: each part length-prefixed, so no two bindings encode
    /// alike.
    pub fn associated_data(&self, domain: &[u8]) -> Vec<u8> {
        let mut out = domain.to_vec();
        for part in [self.tenant, self.credential_id, self.base_url] {
            let len = u64::try_from(part.len()).unwrap_or(u64::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        out
    }
}

/// The two ciphertext forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// `b<version>:`: bound to tenant, credential id and base URL.
    Bound,
    /// `v<version>:`: bound to the tenant only (before credentials were bound); opened only to
    /// be re-encrypted bound ([`Keyring::bind_legacy`]).
    Legacy,
}

/// Master keys for provider credentials, by version. New encryptions use the highest version;
/// every version held stays decryptable, so a rotation can re-encrypt while traffic continues.
///
/// Ciphertexts read `b<version>:<base64(nonce ‖ ciphertext ‖ tag)>` and are bound to their
/// [`CredentialBinding`]: tenant, credential id and base URL are the associated data. Legacy
/// ciphertexts (`v<version>:`, the tenant alone as associated data) do not decrypt; they can
/// only be re-encrypted bound.
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

    fn key(&self, version: u32) -> Result<&SealingKey, CryptoError> {
        self.keys
            .get(&version)
            .ok_or(CryptoError::UnknownKeyVersion(version))
    }

    /// Encrypts a credential's secret under the current key, bound to `binding`.
    pub fn encrypt(
        &self,
        binding: &CredentialBinding<'_>,
        plaintext: &str,
    ) -> Result<String, CryptoError> {
        let version = self.current_version();
        let sealed = self
            .key(version)?
            .seal(&binding.associated_data(BOUND_DOMAIN), plaintext.as_bytes())?;
        Ok(format!("b{version}:{}", STANDARD.encode(sealed)))
    }

    /// Decrypts a credential's secret bound to `binding`, whatever version it was encrypted
    /// under. A legacy ciphertext is refused ([`CryptoError::Legacy`]).
    pub fn decrypt(
        &self,
        binding: &CredentialBinding<'_>,
        ciphertext: &str,
    ) -> Result<SecretString, CryptoError> {
        match split(ciphertext)? {
            (Form::Bound, version, body) => {
                self.open(version, &binding.associated_data(BOUND_DOMAIN), body)
            }
            (Form::Legacy, ..) => Err(CryptoError::Legacy),
        }
    }

    /// Re-encrypts a legacy ciphertext of `binding.tenant` under the current key, bound to
    /// `binding`. Anything but a legacy ciphertext is refused.
    pub fn bind_legacy(
        &self,
        binding: &CredentialBinding<'_>,
        ciphertext: &str,
    ) -> Result<String, CryptoError> {
        match split(ciphertext)? {
            (Form::Legacy, version, body) => {
                let aad = [LEGACY_DOMAIN, binding.tenant.as_bytes()].concat();
                let plaintext = self.open(version, &aad, body)?;
                self.encrypt(binding, plaintext.expose_secret())
            }
            (Form::Bound, ..) => Err(CryptoError::Malformed("not a legacy ciphertext")),
        }
    }

    fn open(&self, version: u32, aad: &[u8], body: &str) -> Result<SecretString, CryptoError> {
        let key = self.key(version)?;
        let sealed = STANDARD
            .decode(body)
            .map_err(|_| CryptoError::Malformed("not base64"))?;
        let plaintext = key.open(aad, &sealed)?;
        String::from_utf8(plaintext)
            .map(SecretString::from)
            .map_err(|_| CryptoError::Malformed("not UTF-8"))
    }

    /// The key version a ciphertext was encrypted under.
    pub fn version_of(ciphertext: &str) -> Result<u32, CryptoError> {
        split(ciphertext).map(|(_, version, _)| version)
    }

    /// Whether a ciphertext is in the legacy form, bound to its tenant only.
    pub fn is_legacy(ciphertext: &str) -> bool {
        matches!(split(ciphertext), Ok((Form::Legacy, ..)))
    }
}

fn split(ciphertext: &str) -> Result<(Form, u32, &str), CryptoError> {
    let (form, rest) = if let Some(rest) = ciphertext.strip_prefix('b') {
        (Form::Bound, rest)
    } else if let Some(rest) = ciphertext.strip_prefix('v') {
        (Form::Legacy, rest)
    } else {
        return Err(CryptoError::Malformed("missing version prefix"));
    };
    let (version, body) = rest
        .split_once(':')
        .ok_or(CryptoError::Malformed("missing version prefix"))?;
    let version = version
        .parse()
        .map_err(|_| CryptoError::Malformed("bad version"))?;
    Ok((form, version, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: CredentialBinding<'static> = CredentialBinding {
        tenant: "tenant-a",
        credential_id: "cred_1",
        base_url: "https://api.openai.com/v1",
    };

    /// A ciphertext as written before credentials were bound: tenant-only associated data.
    fn legacy(key: &SealingKey, version: u32, tenant: &str, plaintext: &str) -> String {
        let sealed = key
            .seal(
                &[LEGACY_DOMAIN, tenant.as_bytes()].concat(),
                plaintext.as_bytes(),
            )
            .unwrap();
        format!("v{version}:{}", STANDARD.encode(sealed))
    }

    #[test]
    fn ciphertext_is_prefixed_and_round_trips() {
        let ring = Keyring::generate().unwrap();
        let ct = ring.encrypt(&A, "sk-provider").unwrap();
        assert!(ct.starts_with("b1:"), "{ct}");
        assert!(!ct.contains("sk-provider"));
        assert_eq!(
            ring.decrypt(&A, &ct).unwrap().expose_secret(),
            "sk-provider"
        );
        assert!(!Keyring::is_legacy(&ct));
    }

    #[test]
    fn another_tenant_credential_or_base_url_does_not_decrypt() {
        let ring = Keyring::generate().unwrap();
        let ct = ring.encrypt(&A, "sk-provider").unwrap();
        for other in [
            CredentialBinding {
                tenant: "tenant-b",
                ..A
            },
            CredentialBinding {
                credential_id: "cred_2",
                ..A
            },
            CredentialBinding {
                base_url: "https://attacker.example/v1",
                ..A
            },
            CredentialBinding {
                base_url: "https://api.openai.com/v1/",
                ..A
            },
        ] {
            assert_eq!(
                ring.decrypt(&other, &ct).unwrap_err(),
                CryptoError::Unauthentic,
                "{other:?}"
            );
        }
    }

    #[test]
    fn bindings_encode_unambiguously() {
        let split_differently = CredentialBinding {
            tenant: "tenant-acred_1",
            credential_id: "",
            base_url: "https://api.openai.com/v1",
        };
        assert_ne!(
            A.associated_data(b"d"),
            split_differently.associated_data(b"d")
        );
        assert_ne!(A.associated_data(b"d"), A.associated_data(b"e"));
    }

    #[test]
    fn legacy_ciphertexts_do_not_decrypt_but_can_be_bound_once() {
        let key = SealingKey::generate().unwrap();
        let ring = Keyring::new([(1, key.clone())]).unwrap();
        let old = legacy(&key, 1, "tenant-a", "sk-provider");
        assert!(Keyring::is_legacy(&old));
        assert_eq!(Keyring::version_of(&old).unwrap(), 1);
        assert_eq!(ring.decrypt(&A, &old).unwrap_err(), CryptoError::Legacy);

        let bound = ring.bind_legacy(&A, &old).unwrap();
        assert!(bound.starts_with("b1:"), "{bound}");
        assert_eq!(
            ring.decrypt(&A, &bound).unwrap().expose_secret(),
            "sk-provider"
        );
        let elsewhere = CredentialBinding {
            base_url: "https://attacker.example/v1",
            ..A
        };
        assert_eq!(
            ring.decrypt(&elsewhere, &bound).unwrap_err(),
            CryptoError::Unauthentic
        );
        // Only a legacy ciphertext of the binding's tenant is bound; a bound one is not re-bound.
        let other_tenant = CredentialBinding {
            tenant: "tenant-b",
            ..A
        };
        assert_eq!(
            ring.bind_legacy(&other_tenant, &old).unwrap_err(),
            CryptoError::Unauthentic
        );
        assert_eq!(
            ring.bind_legacy(&elsewhere, &bound).unwrap_err(),
            CryptoError::Malformed("not a legacy ciphertext")
        );
        // Binding moves a legacy ciphertext to the current key.
        let rotated = ring.with_new_version().unwrap();
        assert!(rotated.bind_legacy(&A, &old).unwrap().starts_with("b2:"));
    }

    #[test]
    fn tampered_ciphertext_does_not_decrypt() {
        let ring = Keyring::generate().unwrap();
        let ct = ring.encrypt(&A, "sk-provider").unwrap();
        let body = ct.strip_prefix("b1:").unwrap();
        let mut raw = STANDARD.decode(body).unwrap();
        raw[14] ^= 0x40;
        let tampered = format!("b1:{}", STANDARD.encode(raw));
        assert_eq!(
            ring.decrypt(&A, &tampered).unwrap_err(),
            CryptoError::Unauthentic
        );
        assert_eq!(
            ring.decrypt(&A, "b1:!!!").unwrap_err(),
            CryptoError::Malformed("not base64")
        );
        assert_eq!(
            ring.decrypt(&A, "plain").unwrap_err(),
            CryptoError::Malformed("missing version prefix")
        );
        assert_eq!(
            ring.decrypt(&A, "bx:AAAA").unwrap_err(),
            CryptoError::Malformed("bad version")
        );
    }

    #[test]
    fn unknown_version_is_named() {
        let ring = Keyring::generate().unwrap();
        let ct = ring.encrypt(&A, "x").unwrap().replacen("b1:", "b7:", 1);
        assert_eq!(
            ring.decrypt(&A, &ct).unwrap_err(),
            CryptoError::UnknownKeyVersion(7)
        );
    }

    #[test]
    fn rotation_midway_keeps_both_versions_readable() {
        let old = Keyring::generate().unwrap();
        let old_ct = old.encrypt(&A, "first").unwrap();
        let rotated = old.with_new_version().unwrap();
        let new_ct = rotated.encrypt(&A, "second").unwrap();
        assert_eq!(Keyring::version_of(&new_ct).unwrap(), 2);
        // Midway: some rows still v1, some already v2; both decrypt under the new keyring.
        assert_eq!(
            rotated.decrypt(&A, &old_ct).unwrap().expose_secret(),
            "first"
        );
        assert_eq!(
            rotated.decrypt(&A, &new_ct).unwrap().expose_secret(),
            "second"
        );
        // A node still on the old keyring reads v1 and names v2 as unknown.
        assert_eq!(
            old.decrypt(&A, &new_ct).unwrap_err(),
            CryptoError::UnknownKeyVersion(2)
        );
    }

    #[test]
    fn spec_round_trips_and_rejects_garbage() {
        let ring = Keyring::generate().unwrap().with_new_version().unwrap();
        let again = Keyring::parse(ring.to_spec().expose_secret()).unwrap();
        assert_eq!(again.current_version(), 2);
        let ct = ring.encrypt(&A, "x").unwrap();
        assert_eq!(again.decrypt(&A, &ct).unwrap().expose_secret(), "x");
        assert!(Keyring::parse("").is_err());
        assert!(Keyring::parse("0:AAAA").is_err());
        assert!(Keyring::parse("one:AAAA").is_err());
    }
}
