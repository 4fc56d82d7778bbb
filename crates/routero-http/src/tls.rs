//! HTTPS for a listener: a certificate chain and its key read from PEM files, and read again
//! when either file changes, so a renewed certificate (cert-manager, a mounted Secret, a
//! script) is served without a restart.
//!
//! TLS 1.2 and 1.3 only, with rustls's cipher suites (AEAD only, forward-secret key exchange);
//! HTTP/1.1 by ALPN. A renewal that does not load (unreadable, not PEM, a key that does not
//! match the certificate: as while one file is written before the other) keeps the
//! certificate being served and says so in the log.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// How often the files are looked at for a change.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Why a certificate could not be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TlsError {
    /// The file at fault.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

/// HTTPS settings of one listener; cheap to clone (the clones share the served certificate).
#[derive(Clone)]
pub struct Https {
    certificate: Arc<Reloading>,
    acceptor: TlsAcceptor,
}

impl fmt::Debug for Https {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Https")
            .field("cert", &self.certificate.cert)
            .field("key", &self.certificate.key)
            .finish_non_exhaustive()
    }
}

impl Https {
    /// Serves the chain in `cert` with the private key in `key` (both PEM).
    pub fn load(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let cert = cert.into();
        let key = key.into();
        let stamp = Stamp::of(&cert, &key);
        let loaded = certified_key(&cert, &key, &provider)?;
        let certificate = Arc::new(Reloading {
            cert,
            key,
            provider: Arc::clone(&provider),
            current: RwLock::new(Current {
                stamp,
                served: loaded,
                failed: false,
            }),
        });
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError {
                path: certificate.cert.display().to_string(),
                reason: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&certificate) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            certificate,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Reads the files again if they changed since last read. `Ok(true)`: the new
    /// certificate is served from the next handshake on; on an error the previous one stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        self.certificate.reload()
    }

    /// Reloads every [`RELOAD_EVERY`], for good (the caller aborts it).
    pub(crate) async fn watch(self) {
        let mut ticks = tokio::time::interval(RELOAD_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match self.reload() {
                Ok(true) => {
                    tracing::info!(cert = %self.certificate.cert.display(), "TLS certificate reloaded")
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, "TLS certificate not reloaded; the previous one is still served")
                }
            }
        }
    }

    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

/// The certificate being served, and the files it comes from.
struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Current>,
}

/// The certificate served, the files' stamp when last read, and whether that read failed.
struct Current {
    stamp: Stamp,
    served: Arc<CertifiedKey>,
    failed: bool,
}

impl fmt::Debug for Reloading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reloading")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

impl Reloading {
    fn current(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        // Nothing panics while the lock is held; a poisoned one still holds a whole value.
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn reload(&self) -> Result<bool, TlsError> {
        let stamp = Stamp::of(&self.cert, &self.key);
        let (changed, failed) = {
            let current = self.current();
            (current.stamp != stamp, current.failed)
        };
        if !changed && !failed {
            return Ok(false);
        }
        let loaded = certified_key(&self.cert, &self.key, &self.provider);
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        current.stamp = stamp;
        match loaded {
            Ok(served) => {
                current.served = served;
                current.failed = false;
                Ok(true)
            }
            // Retried at every look (a permission fixed, a transient error), said once per
            // change of the files.
            Err(error) => {
                current.failed = true;
                if changed { Err(error) } else { Ok(false) }
            }
        }
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current().served))
    }
}

/// What the two files looked like when read: a change of either is a reason to read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp([Option<(SystemTime, u64)>; 2]);

impl Stamp {
    fn of(cert: &Path, key: &Path) -> Self {
        // `metadata` follows symlinks: a Kubernetes Secret volume swaps a link on update.
        let seen = |path: &Path| {
            std::fs::metadata(path)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        };
        Self([seen(cert), seen(key)])
    }
}

fn certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let fault = |path: &Path, reason: String| TlsError {
        path: path.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| fault(cert, format!("not a PEM certificate chain ({e})")))?;
    if chain.is_empty() {
        return Err(fault(cert, "holds no certificate".into()));
    }
    // The parser's errors may quote the file's bytes: for the key, say only what kind of
    // failure it was.
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        let kind = match e {
            rustls::pki_types::pem::Error::Io(io) => format!("unreadable ({})", io.kind()),
            rustls::pki_types::pem::Error::NoItemsFound => "holds no private key".into(),
            _ => "not a well-formed PEM private key".into(),
        };
        fault(key, kind)
    })?;
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| fault(key, format!("unusable private key ({e})")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|_| fault(key, "does not match the certificate".into()))?;
    Ok(Arc::new(certified))
}
