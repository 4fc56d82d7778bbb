//! Control-plane configuration, validated before anything starts.

use std::path::PathBuf;
use std::time::Duration;

use routero_crypto::{Keyring, SealingKey};
use secrecy::SecretString;

/// Where the master keyring comes from: fixed at start, or a file re-read when a ciphertext
/// names a version this process has not seen (so `rotate-master-key` can run beside it).
#[derive(Debug, Clone)]
pub enum KeyringSource {
    /// Given once, e.g. from `ROUTERO_MASTER_KEYS`.
    Fixed(Keyring),
    /// A file holding the keyring spec.
    File(PathBuf),
}

/// TLS for the gRPC snapshot service.
#[derive(Debug, Clone)]
pub struct GrpcTls {
    /// PEM certificate chain.
    pub cert_pem: Vec<u8>,
    /// PEM private key.
    pub key_pem: SecretString,
    /// PEM CA that client certificates must chain to; set for mutual TLS.
    pub client_ca_pem: Option<Vec<u8>>,
}

/// Everything the control plane needs to run. Its Debug output shows no secret (database
/// passwords included).
#[derive(Clone)]
pub struct ControlPlaneConfig {
    /// `postgres://…` or `sqlite://…`.
    pub database_url: String,
    /// Admin key to register at start (stored hashed); when absent and no admin key exists,
    /// one is generated and returned once by [`crate::bootstrap`].
    pub admin_key: Option<SecretString>,
    /// Pepper under which virtual and admin keys are hashed.
    pub pepper: SealingKey,
    /// Master keys of the credential vault.
    pub keyring: KeyringSource,
    /// Key that seals secrets sent to data planes.
    pub data_plane_key: SealingKey,
    /// Interval of heartbeats on idle snapshot streams.
    pub heartbeat_interval: Duration,
    /// How often the database's snapshot version is polled for changes made elsewhere.
    pub poll_interval: Duration,
    /// Largest admin request body accepted.
    pub max_body_bytes: usize,
    /// How long admin clients may take to send a request's headers and body, and a request to
    /// be handled (10 s, 30 s, 60 s).
    pub deadlines: routero_http::Deadlines,
    /// Failed authentications per source address: recorded, counted, throttled.
    pub failure_limits: routero_core::FailureLimits,
    /// Peers (a load balancer, an ingress) whose `X-Forwarded-For` names the admin client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// TLS (and mutual TLS) for the snapshot service; plaintext when absent.
    pub grpc_tls: Option<GrpcTls>,
    /// The audit log's database, served at `GET /audit/events`.
    pub audit_database_url: Option<String>,
    /// The shortest audit retention a tenant may set (`PUT /audit/retention`), in days.
    pub audit_min_retention_days: u32,
    /// The Cerbos policy directory whose bundle version snapshots carry; data planes then ask
    /// the policies before every request. Watched every `poll_interval`.
    pub policies_dir: Option<std::path::PathBuf>,
    /// The Cerbos PDP that decides every admin request; required with `policies_dir`. Without
    /// policies, only admin keys with the `admin` role may use the admin API.
    pub authz: Option<routero_authz::AuthzConfig>,
    /// Which addresses a credential's base URL may resolve to (private, loopback and
    /// link-local ranges refused unless allowed).
    pub egress: routero_core::EgressPolicy,
    /// How long sign-in sessions live, and how local admins' passwords are kept.
    pub sessions: SessionPolicy,
    /// The URL browsers and identity providers reach the admin API at; single sign-on's
    /// redirect URIs are built from it (none: from each request's `Host`).
    pub public_url: Option<String>,
    /// HTTPS on the admin API listener (a certificate reloaded when its files change); none:
    /// plain HTTP (behind a TLS-terminating proxy, or on loopback).
    pub https: Option<routero_http::Https>,
    /// Where Prometheus scrapes `/metrics` (a port of its own); none: not served.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The checkpoint public key `POST /audit/verify` checks the trail with; none: that
    /// answers 503 `audit_not_configured`.
    pub audit_verifier: Option<routero_crypto::CheckpointVerifier>,
}

/// How long sign-in sessions live, and how local admins' passwords are kept and locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// A session unused this long ends (30 min).
    pub idle: Duration,
    /// A session ends this long after sign-in, used or not (12 h).
    pub lifetime: Duration,
    /// Argon2id's cost for local admins' passwords (OWASP's by default).
    pub password_cost: routero_crypto::PasswordCost,
    /// Failed logins of one local admin that lock it (5).
    pub lockout_after: u32,
    /// How long a locked local admin stays locked (15 min).
    pub lockout_for: Duration,
    /// Whether local admins may be created and sign in (off unless configured).
    pub break_glass: bool,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(30 * 60),
            lifetime: Duration::from_secs(12 * 3600),
            password_cost: routero_crypto::PasswordCost::default(),
            lockout_after: 5,
            lockout_for: Duration::from_secs(15 * 60),
            break_glass: false,
        }
    }
}

impl ControlPlaneConfig {
    /// A configuration with defaults for everything but the secrets and the database.
    pub fn new(
        database_url: String,
        pepper: SealingKey,
        keyring: KeyringSource,
        data_plane_key: SealingKey,
    ) -> Self {
        Self {
            database_url,
            admin_key: None,
            pepper,
            keyring,
            data_plane_key,
            heartbeat_interval: Duration::from_secs(5),
            poll_interval: Duration::from_secs(1),
            max_body_bytes: 1024 * 1024,
            failure_limits: routero_core::FailureLimits::default(),
            trusted_proxies: Vec::new(),
            deadlines: routero_http::Deadlines::with_request(Duration::from_secs(60)),
            grpc_tls: None,
            audit_database_url: None,
            audit_min_retention_days: routero_audit::DEFAULT_MIN_RETENTION_DAYS,
            policies_dir: None,
            authz: None,
            egress: routero_core::EgressPolicy::default(),
            sessions: SessionPolicy::default(),
            public_url: None,
            https: None,
            metrics_addr: None,
            audit_verifier: None,
        }
    }
}

impl std::fmt::Debug for ControlPlaneConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |url: &Option<String>| url.as_deref().map(routero_core::redact_url);
        f.debug_struct("ControlPlaneConfig")
            .field(
                "database_url",
                &routero_core::redact_url(&self.database_url),
            )
            .field("admin_key", &self.admin_key)
            .field("pepper", &self.pepper)
            .field("keyring", &self.keyring)
            .field("data_plane_key", &self.data_plane_key)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("poll_interval", &self.poll_interval)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("deadlines", &self.deadlines)
            .field("failure_limits", &self.failure_limits)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("grpc_tls", &self.grpc_tls)
            .field("audit_database_url", &redacted(&self.audit_database_url))
            .field("audit_min_retention_days", &self.audit_min_retention_days)
            .field("policies_dir", &self.policies_dir)
            .field("authz", &self.authz)
            .field("public_url", &self.public_url)
            .finish()
    }
}
