//! The credential vault as the control plane uses it: the keyring, re-read from its file when
//! a ciphertext names a version this process has not loaded yet.

use std::sync::{Arc, RwLock};

use routero_crypto::{CryptoError, Keyring};
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

    /// Encrypts a tenant's credential under the current master key.
    pub fn encrypt(&self, tenant: &str, plaintext: &str) -> Result<String, ControlPlaneError> {
        Ok(self.current().encrypt(tenant, plaintext)?)
    }

    /// Decrypts a tenant's credential, re-reading a keyring file once on an unknown version.
    pub fn decrypt(
        &self,
        tenant: &str,
        ciphertext: &str,
    ) -> Result<SecretString, ControlPlaneError> {
        match self.current().decrypt(tenant, ciphertext) {
            Err(CryptoError::UnknownKeyVersion(_))
                if matches!(self.source, KeyringSource::File(_)) =>
            {
                let fresh = load(&self.source)?;
                let result = fresh.decrypt(tenant, ciphertext);
                if let Ok(mut guard) = self.keyring.write() {
                    *guard = fresh;
                }
                Ok(result?)
            }
            other => Ok(other?),
        }
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

/// Re-encrypts every stored credential under the newest key of `keyring`, in one transaction.
///
/// Data planes keep serving throughout (they hold decrypted credentials), and every version in
/// `keyring` stays decryptable, so a control plane that reads a row midway still succeeds.
pub async fn rotate_credentials(
    store: &Store,
    keyring: &Keyring,
) -> Result<usize, ControlPlaneError> {
    let current = keyring.current_version();
    store
        .reencrypt_credentials(|tenant, ciphertext| {
            if Keyring::version_of(ciphertext)? == current {
                return Ok(None);
            }
            let plaintext = keyring.decrypt(tenant, ciphertext)?;
            Ok(Some(keyring.encrypt(tenant, plaintext.expose_secret())?))
        })
        .await
}
