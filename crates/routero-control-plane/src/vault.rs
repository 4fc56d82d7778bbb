//! The credential vault as the control plane uses it: the keyring, re-read from its file when
//! a ciphertext names a version this process has not loaded yet; each secret bound to its
//! credential's tenant, id and base URL.

use std::sync::{Arc, RwLock};

use routero_crypto::{CredentialBinding, CryptoError, Keyring};
use secrecy::{ExposeSecret, SecretString};

use crate::ControlPlaneError;
use crate::config::KeyringSource;
use crate::store::Store;

/// Encrypts and decrypts provider credentials under the master keyring.
#[derive(Debug, Clone)]
pub struct Vault {
    source: KeyringSource,
    keyring: Arc<RwLock<Keyring>>,
}

impl Vault {
    /// Loads the keyring from its source.
    pub fn open(source: KeyringSource) -> Result<Self, ControlPlaneError> {
        let keyring = load(&source)?;
        Ok(Self {
            source,
            keyring: Arc::new(RwLock::new(keyring)),
        })
    }

    fn current(&self) -> Keyring {
        match self.keyring.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Runs `op` with the keyring, re-reading a keyring file once when the ciphertext it
    /// reads names a version this process has not loaded.
    fn with_keyring<T>(
        &self,
        op: impl Fn(&Keyring) -> Result<T, CryptoError>,
    ) -> Result<T, ControlPlaneError> {
        match op(&self.current()) {
            Err(CryptoError::UnknownKeyVersion(_))
                if matches!(self.source, KeyringSource::File(_)) =>
            {
                let fresh = load(&self.source)?;
                let result = op(&fresh);
                if let Ok(mut guard) = self.keyring.write() {
                    *guard = fresh;
                }
                Ok(result?)
            }
            other => Ok(other?),
        }
    }

    /// Encrypts a credential's secret under the current master key, bound to `binding`. A
    /// keyring file is re-read first, so a secret saved after `rotate-master-key` added a
    /// version is sealed under it, not under the version this process loaded before.
    pub fn encrypt(
        &self,
        binding: &CredentialBinding<'_>,
        plaintext: &str,
    ) -> Result<String, ControlPlaneError> {
        let keyring = match &self.source {
            KeyringSource::Fixed(_) => self.current(),
            KeyringSource::File(_) => {
                let fresh = load(&self.source)?;
                if let Ok(mut guard) = self.keyring.write() {
                    *guard = fresh.clone();
                }
                fresh
            }
        };
        Ok(keyring.encrypt(binding, plaintext)?)
    }

    /// Decrypts a credential's secret bound to `binding`.
    pub fn decrypt(
        &self,
        binding: &CredentialBinding<'_>,
        ciphertext: &str,
    ) -> Result<SecretString, ControlPlaneError> {
        self.with_keyring(|keyring| keyring.decrypt(binding, ciphertext))
    }

    /// Re-encrypts a legacy (tenant-bound) ciphertext bound to `binding`.
    fn bind_legacy(
        &self,
        binding: &CredentialBinding<'_>,
        ciphertext: &str,
    ) -> Result<String, ControlPlaneError> {
        self.with_keyring(|keyring| keyring.bind_legacy(binding, ciphertext))
    }
}

fn load(source: &KeyringSource) -> Result<Keyring, ControlPlaneError> {
    match source {
        KeyringSource::Fixed(keyring) => Ok(keyring.clone()),
        KeyringSource::File(path) => {
            let spec = std::fs::read_to_string(path).map_err(|e| {
                ControlPlaneError::Config(format!("master keyring {}: {e}", path.display()))
            })?;
            Ok(Keyring::parse(&spec)?)
        }
    }
}

/// Binds every legacy ciphertext (tenant-only associated data, written before credentials
/// were bound) to its row's tenant, id and base URL, in one transaction; run at every start,
/// so it acts once. A legacy row that does not decrypt is logged and left as it is, which
/// keeps it out of snapshots. Returns how many rows were bound.
pub async fn bind_legacy_credentials(
    store: &Store,
    vault: &Vault,
) -> Result<usize, ControlPlaneError> {
    store
        .reencrypt_credentials(|row| {
            if !Keyring::is_legacy(&row.ciphertext) {
                return Ok(None);
            }
            match vault.bind_legacy(&row.binding(), &row.ciphertext) {
                Ok(bound) => Ok(Some(bound)),
                Err(error) => {
                    tracing::error!(credential = %row.credential.id, %error, "legacy credential did not decrypt; left unbound and out of snapshots");
                    Ok(None)
                }
            }
        })
        .await
}

/// Re-encrypts every stored credential under the newest key of `keyring`, bound to its row, in
/// one transaction (legacy ciphertexts are bound on the way).
///
/// Data planes keep serving throughout (they hold decrypted credentials), and every version in
/// `keyring` stays decryptable, so a control plane that reads a row midway still succeeds. A
/// row that does not decrypt (tampered, or repointed to another base URL) fails the rotation,
/// naming the credential.
pub async fn rotate_credentials(
    store: &Store,
    keyring: &Keyring,
) -> Result<usize, ControlPlaneError> {
    let current = keyring.current_version();
    store
        .reencrypt_credentials(|row| {
            let binding = row.binding();
            let fresh = if Keyring::is_legacy(&row.ciphertext) {
                keyring.bind_legacy(&binding, &row.ciphertext)
            } else if Keyring::version_of(&row.ciphertext)? == current {
                return Ok(None);
            } else {
                keyring
                    .decrypt(&binding, &row.ciphertext)
                    .and_then(|plaintext| keyring.encrypt(&binding, plaintext.expose_secret()))
            };
            fresh.map(Some).map_err(|error| {
                ControlPlaneError::Corrupt(format!("credential {}: {error}", row.credential.id))
            })
        })
        .await
}
