//! Data-plane configuration.

use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use routero_crypto::SealingKey;
use secrecy::SecretString;

/// TLS towards the control plane's snapshot service.
#[derive(Debug, Clone)]
pub struct ControlPlaneTls {
    /// PEM CA the server certificate must chain to.
    pub ca_pem: Vec<u8>,
    /// Name expected in the server certificate.
    pub domain: String,
    /// Client certificate and key for mutual TLS.
    pub client_identity: Option<(Vec<u8>, SecretString)>,
}

/// Everything the data plane needs to run.
#[derive(Debug, Clone)]
pub struct DataPlaneConfig {
    /// gRPC URL of the control plane, e.g. `http://127.0.0.1:8082`.
    pub control_plane_url: String,
    /// TLS for the snapshot stream; plaintext (secrets still sealed) when absent.
    pub control_plane_tls: Option<ControlPlaneTls>,
    /// Key that unseals the secrets in snapshots; shared with the control plane.
    pub data_plane_key: SealingKey,
    /// Name this node reports to the control plane.
    pub node_id: String,
    /// Where the last good snapshot is kept, sealed, for restarts while the control plane is down.
    pub snapshot_path: Option<PathBuf>,
    /// How long without contact with the control plane before requests are refused.
    pub max_staleness: Duration,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Time allowed to connect to a provider.
    pub upstream_connect_timeout: Duration,
    /// Longest silence allowed while reading a provider's response.
    pub upstream_read_timeout: Duration,
    /// Longest wait for a provider's response to begin (its head); past it the request goes
    /// to the route's next deployment.
    pub upstream_ttfb_timeout: Duration,
    /// When a deployment's circuit breaker opens, and for how long.
    pub breaker: crate::BreakerSettings,
    /// How long in-flight requests may take to finish after shutdown begins.
    pub shutdown_grace: Duration,
    /// How long clients may take to send a request's headers and body, and a request to be
    /// handled up to its response's head (10 s, 30 s, 600 s).
    pub deadlines: routero_http::Deadlines,
    /// Failed authentications per source address: recorded, counted, throttled.
    pub failure_limits: routero_core::FailureLimits,
    /// The Cerbos PDP asked `model:invoke` before every request when the snapshot carries a
    /// policy version; without it such requests are refused (503 `policy_engine_unavailable`).
    pub authz: Option<routero_authz::AuthzConfig>,
    /// Which addresses providers may be reached at, checked when a snapshot is applied (address
    /// literals) and at every connection (resolved names).
    pub egress: routero_core::EgressPolicy,
    /// Where budgets and rate limits are counted, shared by every replica (`redis://…`; a
    /// secret: it may carry a password); none counts in this process (one replica).
    pub redis_url: Option<SecretString>,
    /// Where Prometheus scrapes `/metrics` (a port of its own); none: not served.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// HTTPS on the OpenAI API listener (a certificate reloaded when its files change); none:
    /// plain HTTP (behind a TLS-terminating proxy, or on loopback).
    pub https: Option<routero_http::Https>,
    /// Whether the process exports spans: requests then make them (see `trace.rs`).
    pub traced: bool,
}

impl DataPlaneConfig {
    /// A configuration with defaults for everything but the control plane and its key.
    pub fn new(control_plane_url: String, data_plane_key: SealingKey) -> Self {
        Self {
            control_plane_url,
            control_plane_tls: None,
            data_plane_key,
            node_id: format!("dp-{}", uuid::Uuid::new_v4().simple()),
            snapshot_path: None,
            max_staleness: Duration::from_secs(300),
            trusted_proxies: Vec::new(),
            max_body_bytes: 8 * 1024 * 1024,
            upstream_connect_timeout: Duration::from_secs(10),
            upstream_read_timeout: Duration::from_secs(300),
            upstream_ttfb_timeout: Duration::from_secs(60),
            breaker: crate::BreakerSettings::default(),
            shutdown_grace: Duration::from_secs(30),
            failure_limits: routero_core::FailureLimits::default(),
            deadlines: routero_http::Deadlines::with_request(Duration::from_secs(600)),
            authz: None,
            egress: routero_core::EgressPolicy::default(),
            redis_url: None,
            metrics_addr: None,
            https: None,
            traced: false,
        }
    }
}
