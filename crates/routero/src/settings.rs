//! Settings: one optional TOML file, then `ROUTERO_<FIELD>` environment overrides, validated
//! into each service's config before anything starts. Errors name the field.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use routero_control_plane::{ControlPlaneConfig, GrpcTls, KeyringSource};
use routero_core::{EgressPolicy, parse_cidrs, parse_duration};
use routero_crypto::{Keyring, SealingKey};
use routero_data_plane::{ControlPlaneTls, DataPlaneConfig};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Every setting. Secrets are base64 of 32 bytes unless said otherwise. Debug output shows
/// none of them (nor database passwords).
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `routero up`: directory for the SQLite file, generated secrets and the snapshot.
    pub data_dir: Option<String>,
    /// Control plane: `postgres://…` or `sqlite://…`.
    pub database_url: Option<String>,
    /// Control plane: admin key to register (any string of 32+ characters).
    pub admin_key: Option<Secret>,
    /// Control plane: pepper for key hashing.
    pub pepper: Option<Secret>,
    /// Control plane: master keyring, `1:<base64>,2:<base64>`; the highest version encrypts.
    pub master_keys: Option<Secret>,
    /// Control plane: file holding the master keyring (instead of `master_keys`).
    pub master_keys_file: Option<String>,
    /// Both planes: key that seals secrets in snapshots.
    pub data_plane_key: Option<Secret>,
    /// Control plane: admin API listen address.
    pub control_plane_addr: Option<SocketAddr>,
    /// Control plane: PEM certificate chain of the admin API (enables HTTPS on it; read again
    /// when the file changes).
    pub admin_tls_cert: Option<String>,
    /// Control plane: PEM private key of the admin API's certificate.
    pub admin_tls_key: Option<String>,
    /// Control plane: gRPC snapshot service listen address.
    pub grpc_addr: Option<SocketAddr>,
    /// Control plane: heartbeat interval on snapshot streams (`5s`).
    pub heartbeat_interval: Option<Interval>,
    /// Both planes: allow the snapshot channel in plaintext beyond loopback (messages are still
    /// authenticated and secrets sealed, but their contents, key hashes and routes, are
    /// readable on the network). Off by default: TLS is required off loopback.
    pub allow_plaintext_grpc: Option<Flag>,
    /// Control plane: PEM certificate for the gRPC service (enables TLS).
    pub grpc_tls_cert: Option<String>,
    /// Control plane: PEM key for the gRPC service.
    pub grpc_tls_key: Option<String>,
    /// Control plane: PEM CA for client certificates (enables mutual TLS).
    pub grpc_tls_client_ca: Option<String>,
    /// Data plane: listen address.
    pub data_plane_addr: Option<SocketAddr>,
    /// Data plane: PEM certificate chain of the OpenAI API (enables HTTPS on it; read again
    /// when the file changes).
    pub tls_cert: Option<String>,
    /// Data plane: PEM private key of the OpenAI API's certificate.
    pub tls_key: Option<String>,
    /// Data plane, control plane and audit writer: where Prometheus scrapes `/metrics` (a port
    /// of its own, with `/healthz`); unset: not served.
    pub metrics_addr: Option<SocketAddr>,
    /// Data plane: control plane gRPC URL.
    pub control_plane_url: Option<String>,
    /// Data plane: PEM CA of the control plane's certificate (enables TLS).
    pub control_plane_ca: Option<String>,
    /// Data plane: name in the control plane's certificate.
    pub control_plane_tls_domain: Option<String>,
    /// Data plane: PEM client certificate for mutual TLS.
    pub client_tls_cert: Option<String>,
    /// Data plane: PEM client key for mutual TLS.
    pub client_tls_key: Option<String>,
    /// Data plane: node name reported to the control plane.
    pub node_id: Option<String>,
    /// Data plane: file for the sealed last good snapshot.
    pub snapshot_path: Option<String>,
    /// Data plane: refuse traffic after this long without control-plane contact (`300s`).
    pub max_staleness: Option<Interval>,
    /// Both planes: comma-separated CIDRs (a load balancer, an ingress) whose
    /// `X-Forwarded-For` is believed.
    pub trusted_proxies: Option<String>,
    /// Both planes: comma-separated CIDRs a provider may be reached at although private,
    /// loopback, link-local or otherwise special-purpose (on-premises models). None by default;
    /// `routero up`: `127.0.0.0/8,::1/128` unless set (an empty value opens nothing).
    pub egress_allow: Option<String>,
    /// Data plane: largest request body in bytes.
    pub max_body_bytes: Option<String>,
    /// Data plane: longest wait for a provider's response to begin (`60s`); past it the request
    /// falls back to the route's next deployment.
    pub upstream_ttfb_timeout: Option<Interval>,
    /// Data plane: failures in a row (no connection, timeout, 5xx) that open a deployment's
    /// circuit breaker (`5`).
    pub breaker_failures: Option<String>,
    /// Data plane: 429s in a row that open a deployment's circuit breaker, counted apart from
    /// failures (`5`; `0`: a provider's rate limits never open it).
    pub breaker_rate_limits: Option<String>,
    /// Data plane: how long an open breaker keeps requests from its deployment before one
    /// probe (`60s`).
    pub breaker_open_for: Option<Interval>,
    /// Both planes: how long a client may take to send a request's headers (`10s`); silent
    /// connections are closed after it.
    pub header_timeout: Option<Interval>,
    /// Both planes: how long a client may take to send a request's body, whole (`30s`).
    pub body_timeout: Option<Interval>,
    /// Both planes: the window failed authentications are counted in per source address
    /// (`60s`): 10 are recorded one by one, the rest counted into one record per source and
    /// window, and past 60 the source gets 429 until the window ends.
    pub auth_failure_window: Option<Interval>,
    /// Both planes: how long handling a request may take up to its response's head (data plane
    /// `600s`, admin API `60s`).
    pub request_timeout: Option<Interval>,
    /// Control plane: a sign-in session unused this long ends (`30m`).
    pub session_idle_timeout: Option<Interval>,
    /// Control plane: a sign-in session ends this long after sign-in, used or not (`12h`).
    pub session_lifetime: Option<Interval>,
    /// Control plane: break-glass local admins may be created and sign in with a password
    /// (`false`: `POST /login/local` does not exist and `POST /local-admins` is refused).
    pub break_glass: Option<Flag>,
    /// Control plane: the URL browsers and identity providers reach the admin API at
    /// (`https://gateway.example.com`); single sign-on's redirect URIs are built from it
    /// (unset: from each request's `Host`).
    pub public_url: Option<String>,
    /// Data plane: where budgets and rate limits are counted, shared by every replica
    /// (`redis://host:6379`); unset, each process counts its own (one replica: `routero up`).
    pub redis_url: Option<String>,
    /// Audit: database of the audit log (`routero up`: `data_dir/audit.db`).
    pub audit_database_url: Option<String>,
    /// Audit: Ed25519 seed (base64) that signs checkpoints.
    pub audit_signing_key: Option<Secret>,
    /// Audit: public key (base64) that verifies checkpoints.
    pub audit_public_key: Option<String>,
    /// Audit: when the audit bus is full, `block` requests until there is room, or
    /// `fail_closed` to refuse them with 503 `audit_unavailable`.
    pub audit_overflow: Option<String>,
    /// Audit: the shortest retention a tenant may set, in days (`90`); pruning never keeps
    /// less, whatever the retention table says.
    pub audit_min_retention_days: Option<String>,
    /// Audit: the writer signs a checkpoint of each tenant's head at least this often while
    /// events arrive (`10s`), and every 1000 events.
    pub audit_checkpoint_interval: Option<Interval>,
    /// Audit: SIEM webhook receiving chained records (signed with `audit_webhook_secret`).
    pub audit_webhook_url: Option<String>,
    /// Audit: HMAC-SHA256 key of the webhook signature header (16+ characters).
    pub audit_webhook_secret: Option<Secret>,
    /// Development only: lets `routero control-plane` and `routero data-plane` run without an
    /// audit destination (`kafka_brokers`); they refuse to start otherwise. Logged at every
    /// start.
    pub allow_unaudited: Option<Flag>,
    /// Audit: Kafka bootstrap servers (`host:port,...`). Separate control-plane and data-plane
    /// processes publish their audit events there; `routero audit-writer` consumes them.
    pub kafka_brokers: Option<String>,
    /// Audit: speak TLS to the brokers (on when `kafka_tls_ca` or `kafka_tls_cert` is set).
    pub kafka_tls: Option<Flag>,
    /// Audit: PEM CAs of the brokers' certificates (unset: the system's).
    pub kafka_tls_ca: Option<String>,
    /// Audit: PEM client certificate for brokers that require one.
    pub kafka_tls_cert: Option<String>,
    /// Audit: PEM private key of `kafka_tls_cert`.
    pub kafka_tls_key: Option<String>,
    /// Audit: allow plaintext to brokers beyond loopback (audit events, who did what, readable
    /// and alterable on the network). Off by default: TLS is required off loopback.
    pub allow_plaintext_kafka: Option<Flag>,
    /// Audit: consumer-group session timeout of the audit writer (`10s`).
    pub kafka_session_timeout: Option<Interval>,
    /// Audit: partitions of the audit topics when the writer creates them (`12`).
    pub kafka_topic_partitions: Option<String>,
    /// Audit: replication factor of the audit topics when the writer creates them (`3`).
    pub kafka_replication_factor: Option<String>,
    /// Audit: directory of the local spool events wait in until the broker has them
    /// (`data_dir/audit-spool`, else `./audit-spool`); one per process.
    pub audit_spool_dir: Option<String>,
    /// Audit: most bytes the spool holds before the bus's overflow policy applies (256 MiB).
    pub audit_spool_max_bytes: Option<String>,
    /// Audit: S3 or S3-compatible endpoint receiving gzipped NDJSON objects of chained records.
    pub audit_s3_endpoint: Option<String>,
    /// Audit: bucket of the S3 export.
    pub audit_s3_bucket: Option<String>,
    /// Audit: signing region of the S3 export (`us-east-1`).
    pub audit_s3_region: Option<String>,
    /// Audit: object name prefix of the S3 export (`routero-audit/`).
    pub audit_s3_prefix: Option<String>,
    /// Audit: access key id of the S3 export.
    pub audit_s3_access_key_id: Option<String>,
    /// Audit: secret access key of the S3 export.
    pub audit_s3_secret_access_key: Option<Secret>,
    /// Audit: how often the S3 export writes its objects (`1h`).
    pub audit_s3_interval: Option<Interval>,
    /// Control plane (and `routero up`): the Cerbos policy directory; with it every request is
    /// decided by the policies (`routero up`: `./policies` when that directory exists; an
    /// empty value turns policies off).
    pub policies_dir: Option<String>,
    /// Data plane: how long after a policy version first appears its decisions are asked
    /// afresh rather than cached, while Cerbos reloads (`10s`).
    pub policy_cache_settle: Option<Interval<true>>,
    /// `routero up`: the `cerbos` binary it runs on `policies_dir` (else PATH, else
    /// `~/.cache/routero/bin/cerbos`, where `make run` installs it).
    pub cerbos_binary: Option<String>,
    /// Every service: `text` (default) or `json` log lines on stderr (JSON lines carry the
    /// current request's span fields, its `trace_id` among them).
    pub log_format: Option<String>,
    /// Every service: OpenTelemetry collector (OTLP over gRPC) spans are exported to,
    /// `http://127.0.0.1:4317` or `https://…` with `otlp_ca`; unset: no spans are made.
    pub otlp_endpoint: Option<String>,
    /// Every service: PEM CA of an `https://` collector.
    pub otlp_ca: Option<String>,
    /// Every service: allow an `http://` collector beyond loopback (spans carry model routes,
    /// tenant and key ids, never text). Off by default.
    pub allow_plaintext_otlp: Option<Flag>,
    /// Every service: share of new traces kept, `0` to `1` (`1`); a client's `traceparent`
    /// decides for its own.
    pub trace_sample_ratio: Option<String>,
    /// Control and data plane: the Cerbos PDP's gRPC address (`127.0.0.1:3593`), asked before
    /// every admin request and every proxied one when the control plane has policies.
    pub cerbos_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let table = toml::Table::try_from(self).unwrap_or_default();
        let mut map = f.debug_map();
        // Secrets serialize as `[REDACTED]`; URLs lose their passwords and query secrets.
        for (name, value) in &table {
            let shown = match value.as_str() {
                Some(text) => routero_core::redact_url(text),
                None => value.to_string(),
            };
            map.entry(name, &shown);
        }
        map.finish()
    }
}

impl Settings {
    /// Reads `file` (if any), then applies `ROUTERO_<FIELD>` variables from `env`.
    pub fn load(file: Option<&Path>, env: &BTreeMap<String, String>) -> Result<Self> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                text.parse::<toml::Table>()
                    .with_context(|| format!("parsing {}", path.display()))?
            }
            None => toml::Table::new(),
        };
        let known = field_names::<Self>();
        for (name, value) in env {
            let Some(field) = name.strip_prefix("ROUTERO_").map(str::to_ascii_lowercase) else {
                continue;
            };
            if known.contains(&field.as_str()) {
                table.insert(field, toml::Value::String(value.clone()));
            }
        }
        // A value that does not read is named: each setting is tried alone to find which.
        Self::deserialize(table.clone())
            .map_err(|error| {
                let named = table.iter().find_map(|(name, value)| {
                    let alone = toml::Table::from_iter([(name.clone(), value.clone())]);
                    Self::deserialize(alone)
                        .err()
                        .map(|why| anyhow!("{name}: {why}"))
                });
                named.unwrap_or_else(|| anyhow!(error))
            })
            .context("invalid settings")
    }

    fn required<'a>(value: Option<&'a str>, field: &str) -> Result<&'a str> {
        value.filter(|v| !v.trim().is_empty()).ok_or_else(|| {
            anyhow!(
                "{field} is required (set ROUTERO_{})",
                field.to_ascii_uppercase()
            )
        })
    }

    fn key(value: Option<&Secret>, field: &str) -> Result<SealingKey> {
        let value = value.map(Secret::expose);
        SealingKey::from_base64(Self::required(value, field)?).map_err(|e| anyhow!("{field}: {e}"))
    }

    fn file(value: Option<&String>, field: &str) -> Result<Option<Vec<u8>>> {
        value
            .map(|path| std::fs::read(path).map_err(|e| anyhow!("{field}: {path}: {e}")))
            .transpose()
    }

    /// Whether operator commands act on the `routero up` layout (`data_dir` set, no
    /// `database_url`): its data directory holds the database and the generated secrets.
    /// Decided here once, for every command that needs to know.
    pub fn embedded(&self) -> bool {
        self.data_dir.is_some() && self.database_url.is_none()
    }

    /// A comma-separated CIDR list.
    fn cidrs(list: &str, field: &str) -> Result<Vec<ipnet::IpNet>> {
        let entries: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        parse_cidrs(&entries).map_err(|e| anyhow!("{field}: {e}"))
    }

    /// The provider egress policy: `egress_allow` opened, else `default`.
    pub fn egress(&self, default: EgressPolicy) -> Result<EgressPolicy> {
        match &self.egress_allow {
            Some(list) => Ok(EgressPolicy::new(Self::cidrs(list, "egress_allow")?)),
            None => Ok(default),
        }
    }

    /// Logs where providers may be reached: a warning naming the ranges opened, since each
    /// opens the gateway toward a network it could otherwise not reach for a client.
    pub fn log_egress(&self, policy: &EgressPolicy) {
        let ranges = policy
            .allowlist()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        if ranges.is_empty() {
            tracing::info!(
                "provider egress: loopback, private, link-local and other special-purpose addresses refused (egress_allow opens ranges)"
            );
        } else if self.egress_allow.is_some() {
            tracing::warn!(%ranges, "provider egress opened by egress_allow to {ranges}");
        } else {
            tracing::warn!(%ranges, "provider egress to loopback ({ranges}) allowed by default in routero up, for models on this host; set egress_allow to narrow or widen it");
        }
    }

    /// HTTPS for the admin API (`admin`) or the OpenAI API, when its certificate is set.
    pub fn https(&self, admin: bool) -> Result<Option<routero_http::Https>> {
        let (cert, key, names) = if admin {
            (
                &self.admin_tls_cert,
                &self.admin_tls_key,
                "admin_tls_cert and admin_tls_key",
            )
        } else {
            (&self.tls_cert, &self.tls_key, "tls_cert and tls_key")
        };
        match (cert, key) {
            (Some(cert), Some(key)) => routero_http::Https::load(cert, key)
                .map(Some)
                .map_err(|e| anyhow!("{names}: {e}")),
            (None, None) => Ok(None),
            _ => bail!("{names}: set both"),
        }
    }

    /// Deadlines for clients, with `request` as the default whole-request deadline.
    pub fn deadlines(&self, request: Duration) -> Result<routero_http::Deadlines> {
        let mut deadlines = routero_http::Deadlines::with_request(request);
        for (value, slot) in [
            (self.header_timeout, &mut deadlines.header),
            (self.body_timeout, &mut deadlines.body),
            (self.request_timeout, &mut deadlines.request),
        ] {
            if let Some(duration) = value {
                *slot = duration.get();
            }
        }
        Ok(deadlines)
    }

    /// Peers whose `X-Forwarded-For` is believed (none by default).
    pub fn trusted_proxies(&self) -> Result<Vec<ipnet::IpNet>> {
        self.trusted_proxies
            .as_deref()
            .map_or(Ok(Vec::new()), |list| Self::cidrs(list, "trusted_proxies"))
    }

    /// Limits on failed authentications per source address.
    pub fn failure_limits(&self) -> Result<routero_core::FailureLimits> {
        let mut limits = routero_core::FailureLimits::default();
        if let Some(window) = self.auth_failure_window.map(Interval::get) {
            limits.window_secs = window.as_secs();
        }
        Ok(limits)
    }

    /// Admin API address (default `127.0.0.1:8081`).
    pub fn control_plane_addr(&self) -> SocketAddr {
        self.control_plane_addr
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8081)))
    }

    /// gRPC address (default `127.0.0.1:8082`).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8082)))
    }

    /// Data plane address (default `127.0.0.1:8080`).
    pub fn data_plane_addr(&self) -> SocketAddr {
        self.data_plane_addr
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)))
    }

    /// The master keyring's source.
    pub fn keyring(&self) -> Result<KeyringSource> {
        match (&self.master_keys, &self.master_keys_file) {
            (Some(spec), None) => Keyring::parse(spec.expose())
                .map(KeyringSource::Fixed)
                .map_err(|e| anyhow!("master_keys: {e}")),
            (None, Some(path)) => {
                let source = KeyringSource::File(PathBuf::from(path));
                routero_control_plane::Vault::open(source.clone())
                    .map_err(|e| anyhow!("master_keys_file: {e}"))?;
                Ok(source)
            }
            (Some(_), Some(_)) => bail!("master_keys and master_keys_file: set only one"),
            (None, None) => bail!("master_keys is required (set ROUTERO_MASTER_KEYS)"),
        }
    }

    /// The control plane's public URL, checked: `http(s)://host[:port][/path]`, no query.
    pub fn public_url(&self) -> Result<Option<String>> {
        let Some(text) = &self.public_url else {
            return Ok(None);
        };
        let url = url::Url::parse(text).map_err(|e| anyhow::anyhow!("public_url: {e}"))?;
        if !matches!(url.scheme(), "http" | "https")
            || url.query().is_some()
            || url.fragment().is_some()
        {
            bail!("public_url: an http or https URL without query or fragment");
        }
        Ok(Some(url.as_str().trim_end_matches('/').to_owned()))
    }

    /// How long sign-in sessions live, and whether break-glass accounts may sign in.
    pub fn sessions(&self) -> routero_control_plane::SessionPolicy {
        let mut policy = routero_control_plane::SessionPolicy::default();
        if let Some(idle) = self.session_idle_timeout.map(Interval::get) {
            policy.idle = idle;
        }
        if let Some(lifetime) = self.session_lifetime.map(Interval::get) {
            policy.lifetime = lifetime;
        }
        policy.break_glass = self.break_glass.is_some_and(|Flag(on)| on);
        policy
    }

    /// The control plane's config.
    pub fn control_plane(&self) -> Result<ControlPlaneConfig> {
        let mut config = ControlPlaneConfig::new(
            Self::required(self.database_url.as_deref(), "database_url")?.to_owned(),
            Self::key(self.pepper.as_ref(), "pepper")?,
            self.keyring()?,
            Self::key(self.data_plane_key.as_ref(), "data_plane_key")?,
        );
        if let Some(admin_key) = &self.admin_key {
            if admin_key.expose().len() < 32 {
                bail!("admin_key: use at least 32 characters");
            }
            config.admin_key = Some(SecretString::from(admin_key.expose().to_owned()));
        }
        config.audit_database_url = self.audit_database_url.clone();
        config.audit_min_retention_days = self.audit_min_retention_days()?;
        config.egress = self.egress(EgressPolicy::default())?;
        config.public_url = self.public_url()?;
        config.deadlines = self.deadlines(config.deadlines.request)?;
        config.failure_limits = self.failure_limits()?;
        config.trusted_proxies = self.trusted_proxies()?;
        config.policies_dir = self
            .policies_dir
            .as_ref()
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from);
        config.authz = self.cerbos()?;
        if config.policies_dir.is_some() && config.authz.is_none() {
            bail!(
                "policies_dir: set cerbos_addr too, the policy engine that decides admin requests"
            );
        }
        if let Some(interval) = self.heartbeat_interval.map(Interval::get) {
            config.heartbeat_interval = interval;
        }
        config.sessions = self.sessions();
        config.https = self.https(true)?;
        config.metrics_addr = self.metrics_addr;
        config.audit_verifier = self
            .audit_public_key
            .as_deref()
            .map(routero_crypto::CheckpointVerifier::from_base64)
            .transpose()
            .map_err(|e| anyhow!("audit_public_key: {e}"))?;
        let cert = Self::file(self.grpc_tls_cert.as_ref(), "grpc_tls_cert")?;
        let key = Self::file(self.grpc_tls_key.as_ref(), "grpc_tls_key")?;
        config.grpc_tls = match (cert, key) {
            (Some(cert_pem), Some(key_pem)) => Some(GrpcTls {
                cert_pem,
                key_pem: String::from_utf8(key_pem)
                    .map_err(|_| anyhow!("grpc_tls_key: not PEM"))?
                    .into(),
                client_ca_pem: Self::file(self.grpc_tls_client_ca.as_ref(), "grpc_tls_client_ca")?,
            }),
            (None, None) if self.grpc_tls_client_ca.is_none() => None,
            _ => bail!(
                "grpc_tls_cert and grpc_tls_key: set both (and grpc_tls_client_ca only with them)"
            ),
        };
        let grpc_addr = self.grpc_addr();
        if config.grpc_tls.is_none()
            && !grpc_addr.ip().is_loopback()
            && !self.allow_plaintext_grpc()
        {
            bail!(
                "grpc_addr: {grpc_addr} is not loopback and the snapshot service has no TLS; set grpc_tls_cert and grpc_tls_key (or, knowingly, allow_plaintext_grpc=true)"
            );
        }
        Ok(config)
    }

    /// What a full audit bus does (default: block).
    pub fn audit_overflow(&self) -> Result<routero_bus::Overflow> {
        match self.audit_overflow.as_deref() {
            None | Some("block") => Ok(routero_bus::Overflow::Block),
            Some("fail_closed") => Ok(routero_bus::Overflow::FailClosed),
            Some(other) => bail!("audit_overflow: {other:?} is not block or fail_closed"),
        }
    }

    /// How to ask the PDP at `cerbos_addr`, when set (a sidecar of a split plane).
    fn cerbos(&self) -> Result<Option<routero_authz::AuthzConfig>> {
        self.cerbos_addr
            .map(|addr| self.authz(addr.ip().to_string(), addr.port()))
            .transpose()
    }

    /// How to ask the PDP at `host:port`.
    pub fn authz(&self, host: String, port: u16) -> Result<routero_authz::AuthzConfig> {
        let mut config = routero_authz::AuthzConfig::new(host, port);
        // 0s caches at once (benchmarks, a PDP whose policies never change under it).
        if let Some(settle) = self.policy_cache_settle.map(Interval::get) {
            config.settle = settle;
        }
        Ok(config)
    }

    /// The Kafka adapter's config, when `kafka_brokers` is set.
    pub fn kafka(&self) -> Result<Option<routero_kafka::KafkaConfig>> {
        let Some(brokers) = self
            .kafka_brokers
            .as_deref()
            .filter(|b| !b.trim().is_empty())
        else {
            return Ok(None);
        };
        let mut config = routero_kafka::KafkaConfig::new(brokers.to_owned());
        if let Some(timeout) = self.kafka_session_timeout.map(Interval::get) {
            config.session_timeout = timeout;
        }
        if let Some(n) = &self.kafka_topic_partitions {
            config.partitions = n
                .parse()
                .map_err(|e| anyhow!("kafka_topic_partitions: {e}"))?;
        }
        if let Some(n) = &self.kafka_replication_factor {
            config.replication = n
                .parse()
                .map_err(|e| anyhow!("kafka_replication_factor: {e}"))?;
        }
        config.tls = self.kafka_tls()?;
        if config.tls.is_none()
            && !self.allow_plaintext_kafka.is_some_and(|Flag(on)| on)
            && !brokers.split(',').all(is_loopback_authority)
        {
            bail!(
                "kafka_brokers: plaintext beyond loopback; set kafka_tls (with kafka_tls_ca, kafka_tls_cert and kafka_tls_key as the brokers need) or, knowingly, allow_plaintext_kafka=true"
            );
        }
        Ok(Some(config))
    }

    /// How the process logs and traces; `service` names its spans (none: an operator command,
    /// which makes none).
    pub fn telemetry(
        &self,
        service: Option<&'static str>,
    ) -> Result<routero_telemetry::TelemetryConfig> {
        let json_logs = match self.log_format.as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => bail!("log_format: {other:?} is not text or json"),
        };
        let otlp_endpoint = self.otlp_endpoint.clone().filter(|_| service.is_some());
        if let Some(endpoint) = &otlp_endpoint {
            match endpoint.split_once("://").map(|(scheme, _)| scheme) {
                Some("https") if self.otlp_ca.is_some() => {}
                Some("https") => bail!("otlp_endpoint: https:// needs otlp_ca"),
                Some("http")
                    if is_loopback_url(endpoint)
                        || self.allow_plaintext_otlp.is_some_and(|Flag(on)| on) => {}
                Some("http") => bail!(
                    "otlp_endpoint: plaintext beyond loopback; use https:// with otlp_ca (or, knowingly, allow_plaintext_otlp=true)"
                ),
                _ => bail!("otlp_endpoint: use http:// or https://"),
            }
        }
        let sample_ratio = match &self.trace_sample_ratio {
            None => 1.0,
            Some(text) => text
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| anyhow!("trace_sample_ratio: a number from 0 to 1"))?,
        };
        Ok(routero_telemetry::TelemetryConfig {
            json_logs,
            otlp_endpoint,
            ca_pem: Self::file(self.otlp_ca.as_ref(), "otlp_ca")?,
            service_name: service.unwrap_or("routero"),
            sample_ratio,
        })
    }

    /// TLS to the brokers, when asked for or implied by a CA or client certificate.
    fn kafka_tls(&self) -> Result<Option<routero_kafka::KafkaTls>> {
        let readable = |value: &Option<String>, field: &str| -> Result<Option<PathBuf>> {
            value
                .as_ref()
                .map(|path| {
                    std::fs::File::open(path)
                        .map(|_| PathBuf::from(path))
                        .map_err(|e| anyhow!("{field}: {path}: {e}"))
                })
                .transpose()
        };
        let ca = readable(&self.kafka_tls_ca, "kafka_tls_ca")?;
        let client = match (
            readable(&self.kafka_tls_cert, "kafka_tls_cert")?,
            readable(&self.kafka_tls_key, "kafka_tls_key")?,
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => bail!("kafka_tls_cert and kafka_tls_key: set both"),
        };
        match self.kafka_tls.map(|Flag(on)| on) {
            Some(false) if ca.is_some() || client.is_some() => {
                bail!("kafka_tls: false, but kafka_tls_ca or kafka_tls_cert is set")
            }
            Some(false) => Ok(None),
            None if ca.is_none() && client.is_none() => Ok(None),
            _ => Ok(Some(routero_kafka::KafkaTls { ca, client })),
        }
    }

    /// Whether the snapshot channel may be plaintext beyond loopback (default: no).
    fn allow_plaintext_grpc(&self) -> bool {
        self.allow_plaintext_grpc.is_some_and(|Flag(on)| on)
    }

    /// Whether a split service may run without an audit destination (default: no).
    pub fn allow_unaudited(&self) -> bool {
        self.allow_unaudited.is_some_and(|Flag(on)| on)
    }

    /// The operator's minimum audit retention, in days (default 90).
    pub fn audit_min_retention_days(&self) -> Result<u32> {
        match &self.audit_min_retention_days {
            None => Ok(routero_audit::DEFAULT_MIN_RETENTION_DAYS),
            Some(days) => match days.parse::<u32>() {
                Ok(days) if days >= 1 => Ok(days),
                _ => bail!("audit_min_retention_days: a whole number of days, at least 1"),
            },
        }
    }

    /// How the audit writer batches and checkpoints.
    pub fn audit_writer(&self) -> Result<routero_audit_writer::WriterConfig> {
        let mut config = routero_audit_writer::WriterConfig::default();
        if let Some(interval) = self.audit_checkpoint_interval.map(Interval::get) {
            config.checkpoint_interval = interval;
        }
        Ok(config)
    }

    /// The audit store at `url`, holding tenants to the operator's minimum retention.
    pub async fn audit_store(&self, url: &str) -> Result<routero_audit::AuditStore> {
        Ok(routero_audit::AuditStore::connect(url)
            .await?
            .with_min_retention_days(self.audit_min_retention_days()?))
    }

    /// The audit spool's directory and bound: `audit_spool_dir`, else `audit-spool` in the data
    /// directory (`data_dir`, or the one given), else `./audit-spool`.
    pub fn audit_spool(&self, data_dir: Option<&Path>) -> Result<(PathBuf, u64)> {
        let dir = match (&self.audit_spool_dir, &self.data_dir, data_dir) {
            (Some(dir), _, _) => PathBuf::from(dir),
            (None, Some(data), _) => Path::new(data).join("audit-spool"),
            (None, None, Some(data)) => data.join("audit-spool"),
            (None, None, None) => PathBuf::from("audit-spool"),
        };
        let max = match &self.audit_spool_max_bytes {
            Some(bytes) => bytes
                .parse()
                .map_err(|e| anyhow!("audit_spool_max_bytes: {e}"))?,
            None => 256 << 20,
        };
        Ok((dir, max))
    }

    /// The S3 export, when `audit_s3_endpoint` is set.
    pub fn audit_s3(&self) -> Result<Option<routero_audit_writer::S3Config>> {
        let Some(endpoint) = &self.audit_s3_endpoint else {
            return Ok(None);
        };
        if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
            bail!("audit_s3_endpoint: use https:// (or http:// for a store on loopback)");
        }
        let mut config = routero_audit_writer::S3Config::new(
            endpoint.clone(),
            Self::required(self.audit_s3_bucket.as_deref(), "audit_s3_bucket")?.to_owned(),
            self.audit_s3_region
                .clone()
                .unwrap_or_else(|| "us-east-1".into()),
            Self::required(
                self.audit_s3_access_key_id.as_deref(),
                "audit_s3_access_key_id",
            )?
            .to_owned(),
            Self::required(
                self.audit_s3_secret_access_key.as_ref().map(Secret::expose),
                "audit_s3_secret_access_key",
            )?
            .to_owned()
            .into(),
        );
        if let Some(prefix) = &self.audit_s3_prefix {
            config.prefix.clone_from(prefix);
        }
        if let Some(interval) = self.audit_s3_interval.map(Interval::get) {
            config.delivery.poll_interval = interval;
        }
        Ok(Some(config))
    }

    /// The SIEM webhook sink, when `audit_webhook_url` is set.
    pub fn audit_webhook(&self) -> Result<Option<routero_audit_writer::WebhookConfig>> {
        let Some(url) = &self.audit_webhook_url else {
            if self.audit_webhook_secret.is_some() {
                bail!("audit_webhook_secret: set audit_webhook_url too");
            }
            return Ok(None);
        };
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            bail!("audit_webhook_url: use http:// or https://");
        }
        let secret = Self::required(
            self.audit_webhook_secret.as_ref().map(Secret::expose),
            "audit_webhook_secret",
        )?;
        if secret.len() < 16 {
            bail!("audit_webhook_secret: use at least 16 characters");
        }
        Ok(Some(routero_audit_writer::WebhookConfig::new(
            url.clone(),
            secret.to_owned().into(),
        )))
    }

    /// How the data plane counts (`redis_url`) and reaches providers: time to a response's
    /// head, circuit breakers.
    pub fn upstreams(&self, config: &mut DataPlaneConfig) -> Result<()> {
        config.redis_url = self.redis_url.clone().map(SecretString::from);
        if let Some(ttfb) = self.upstream_ttfb_timeout.map(Interval::get) {
            config.upstream_ttfb_timeout = ttfb;
        }
        if let Some(failures) = &self.breaker_failures {
            config.breaker.failures = failures
                .parse()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| anyhow!("breaker_failures: 1 to 1000"))?;
        }
        if let Some(limits) = &self.breaker_rate_limits {
            config.breaker.rate_limits = limits
                .parse()
                .ok()
                .filter(|n| *n <= 1000)
                .ok_or_else(|| anyhow!("breaker_rate_limits: 0 to 1000"))?;
        }
        if let Some(open_for) = self.breaker_open_for.map(Interval::get) {
            config.breaker.open_for = open_for;
        }
        Ok(())
    }

    /// The data plane's config.
    pub fn data_plane(&self) -> Result<DataPlaneConfig> {
        let url = Self::required(self.control_plane_url.as_deref(), "control_plane_url")?;
        let tls = self.control_plane_ca.is_some();
        match (url.split_once("://").map(|(scheme, _)| scheme), tls) {
            (Some("http"), false) | (Some("https"), true) => {}
            (Some("http"), true) => {
                bail!("control_plane_url: use https:// when control_plane_ca is set")
            }
            (Some("https"), false) => bail!("control_plane_url: https:// needs control_plane_ca"),
            _ => bail!("control_plane_url: use http:// or https://"),
        }
        if !tls && !is_loopback_url(url) && !self.allow_plaintext_grpc() {
            bail!(
                "control_plane_url: plaintext beyond loopback; use https:// with control_plane_ca (or, knowingly, allow_plaintext_grpc=true)"
            );
        }
        let mut config = DataPlaneConfig::new(
            url.to_owned(),
            Self::key(self.data_plane_key.as_ref(), "data_plane_key")?,
        );
        if let Some(node_id) = &self.node_id {
            config.node_id = node_id.clone();
        }
        config.snapshot_path = self.snapshot_path.as_ref().map(PathBuf::from);
        config.metrics_addr = self.metrics_addr;
        config.https = self.https(false)?;
        config.traced = self.otlp_endpoint.is_some();
        if let Some(staleness) = self.max_staleness.map(Interval::get) {
            config.max_staleness = staleness;
        }
        config.trusted_proxies = self.trusted_proxies()?;
        config.egress = self.egress(EgressPolicy::default())?;
        self.upstreams(&mut config)?;
        if let Some(bytes) = &self.max_body_bytes {
            config.max_body_bytes = bytes.parse().map_err(|e| anyhow!("max_body_bytes: {e}"))?;
        }
        config.deadlines = self.deadlines(config.deadlines.request)?;
        config.failure_limits = self.failure_limits()?;
        config.authz = self.cerbos()?;
        if let Some(ca_pem) = Self::file(self.control_plane_ca.as_ref(), "control_plane_ca")? {
            let identity = match (
                Self::file(self.client_tls_cert.as_ref(), "client_tls_cert")?,
                Self::file(self.client_tls_key.as_ref(), "client_tls_key")?,
            ) {
                (Some(cert), Some(key)) => Some((
                    cert,
                    SecretString::from(
                        String::from_utf8(key).map_err(|_| anyhow!("client_tls_key: not PEM"))?,
                    ),
                )),
                (None, None) => None,
                _ => bail!("client_tls_cert and client_tls_key: set both"),
            };
            config.control_plane_tls = Some(ControlPlaneTls {
                ca_pem,
                domain: Self::required(
                    self.control_plane_tls_domain.as_deref(),
                    "control_plane_tls_domain",
                )?
                .to_owned(),
                client_identity: identity,
            });
        }
        Ok(config)
    }
}

/// A secret setting: read from the file or the environment, never shown (Debug output and
/// serialization give `[REDACTED]`).
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(routero_core::REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(routero_core::REDACTED)
    }
}

/// A duration setting, written `10s`, `5m`, `1h` or `30d`: longer than zero, or, where
/// `ZERO_MEANS_OFF`, also `0s` for "off". Refused at load, naming its field.
#[derive(Debug, Clone, Copy)]
pub struct Interval<const ZERO_MEANS_OFF: bool = false>(Duration);

impl<const ZERO_MEANS_OFF: bool> Interval<ZERO_MEANS_OFF> {
    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl<'de, const ZERO_MEANS_OFF: bool> Deserialize<'de> for Interval<ZERO_MEANS_OFF> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if ZERO_MEANS_OFF && text.trim_end_matches(['s', 'm', 'h', 'd']) == "0" {
            return Ok(Self(Duration::ZERO));
        }
        parse_duration(&text)
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

impl<const ZERO_MEANS_OFF: bool> Serialize for Interval<ZERO_MEANS_OFF> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&routero_core::format_duration(self.0))
    }
}

/// A switch: `true` or `false`, as a TOML boolean or (from the environment) a string.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(transparent)]
pub struct Flag(bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Bool(bool),
            Text(String),
        }
        match Written::deserialize(deserializer)? {
            Written::Bool(on) => Ok(Self(on)),
            Written::Text(text) => match text.as_str() {
                "true" => Ok(Self(true)),
                "false" => Ok(Self(false)),
                other => Err(serde::de::Error::custom(format!(
                    "{other:?} is not true or false"
                ))),
            },
        }
    }
}

/// The field names a struct deserializes, as its `Deserialize` implementation declares them:
/// the settings the environment may set, from the one declaration of [`Settings`].
fn field_names<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    /// A deserializer that only records the fields it is asked for.
    struct Names(&'static [&'static str]);

    #[derive(Debug)]
    struct Recorded;

    impl std::fmt::Display for Recorded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("field names recorded")
        }
    }

    impl std::error::Error for Recorded {}

    impl serde::de::Error for Recorded {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Self
        }
    }

    impl<'de> serde::Deserializer<'de> for &mut Names {
        type Error = Recorded;

        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Recorded> {
            Err(Recorded)
        }

        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Recorded> {
            self.0 = fields;
            Err(Recorded)
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut names = Names(&[]);
    let _ = T::deserialize(&mut names);
    names.0
}

/// Whether a URL's host is a loopback address or `localhost`.
/// Whether a broker (`host:port`, or `scheme://host:port`) is on loopback.
fn is_loopback_authority(broker: &str) -> bool {
    let broker = broker.trim();
    if broker.contains("://") {
        is_loopback_url(broker)
    } else {
        is_loopback_url(&format!("kafka://{broker}"))
    }
}

fn is_loopback_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    uri.host().is_some_and(|host| {
        host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    /// What a control plane needs, plus `extra`.
    fn control_plane_env<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut vars = vec![
            ("ROUTERO_DATABASE_URL", "sqlite://x"),
            ("ROUTERO_PEPPER", KEY),
            (
                "ROUTERO_MASTER_KEYS",
                "1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            ),
            ("ROUTERO_DATA_PLANE_KEY", KEY),
        ];
        vars.extend_from_slice(extra);
        vars
    }

    #[test]
    fn env_overrides_file_and_unrelated_variables_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routero.toml");
        std::fs::write(
            &path,
            "grpc_addr = \"127.0.0.1:1\"\ndata_plane_addr = \"127.0.0.1:2\"\n",
        )
        .unwrap();
        let s = Settings::load(
            Some(&path),
            &env(&[
                ("ROUTERO_GRPC_ADDR", "127.0.0.1:3"),
                ("ROUTERO_UNRELATED", "x"),
                ("HOME", "/"),
            ]),
        )
        .unwrap();
        assert_eq!(s.grpc_addr().port(), 3);
        assert_eq!(s.data_plane_addr().port(), 2);
    }

    #[test]
    fn every_field_can_be_set_from_the_environment() {
        let names = field_names::<Settings>();
        assert!(names.len() > 50, "{names:?}");
        for name in ["database_url", "pepper", "allow_unaudited", "cerbos_addr"] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        let s = Settings::load(
            None,
            &env(&[
                ("ROUTERO_CERBOS_BINARY", "/x/cerbos"),
                ("ROUTERO_ALLOW_UNAUDITED", "true"),
            ]),
        )
        .unwrap();
        assert_eq!(s.cerbos_binary.as_deref(), Some("/x/cerbos"));
        assert!(s.allow_unaudited());
        let refused =
            Settings::load(None, &env(&[("ROUTERO_ALLOW_UNAUDITED", "yes")])).unwrap_err();
        assert!(
            format!("{refused:#}").contains("allow_unaudited"),
            "{refused:#}"
        );
    }

    #[test]
    fn durations_are_longer_than_zero_unless_zero_means_off() {
        let load = |name: &str, value: &str| Settings::load(None, &env(&[(name, value)]));
        let settle = |value: &str| {
            load("ROUTERO_POLICY_CACHE_SETTLE", value)
                .unwrap()
                .authz("127.0.0.1".into(), 1)
                .unwrap()
                .settle
        };
        assert_eq!(settle("0s"), Duration::ZERO, "0s caches at once");
        assert_eq!(settle("3s"), Duration::from_secs(3));
        for (name, value) in [
            ("ROUTERO_POLICY_CACHE_SETTLE", "-1s"),
            ("ROUTERO_AUTH_FAILURE_WINDOW", "0s"),
            ("ROUTERO_REQUEST_TIMEOUT", "0s"),
            ("ROUTERO_MAX_STALENESS", "5 minutes"),
        ] {
            let refused = load(name, value).unwrap_err();
            let field = name.trim_start_matches("ROUTERO_").to_ascii_lowercase();
            assert!(format!("{refused:#}").contains(&field), "{refused:#}");
        }
        let debug = format!("{:?}", load("ROUTERO_MAX_STALENESS", "90s").unwrap());
        assert!(debug.contains("\"90s\""), "{debug}");
    }

    #[test]
    fn addresses_are_socket_addresses_refused_at_load_by_name() {
        let refused =
            Settings::load(None, &env(&[("ROUTERO_GRPC_ADDR", "localhost:port")])).unwrap_err();
        assert!(format!("{refused:#}").contains("grpc_addr"), "{refused:#}");
        let s = Settings::load(None, &env(&[("ROUTERO_CERBOS_ADDR", "127.0.0.1:3593")])).unwrap();
        assert_eq!(s.cerbos_addr.map(|a| a.port()), Some(3593));
        assert_eq!(Settings::default().control_plane_addr().port(), 8081);
    }

    #[test]
    fn the_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/routero.example.toml");
        let s = Settings::load(Some(&path), &BTreeMap::new()).unwrap();
        assert_eq!(s.data_plane_addr().port(), 8080);
    }

    #[test]
    fn unknown_fields_in_the_file_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routero.toml");
        std::fs::write(&path, "databse_url = \"x\"\n").unwrap();
        let error = format!(
            "{:#}",
            Settings::load(Some(&path), &BTreeMap::new()).unwrap_err()
        );
        assert!(error.contains("databse_url"), "{error}");
    }

    #[test]
    fn bad_values_name_their_field() {
        let refused = Settings::load(
            None,
            &env(&[
                ("ROUTERO_MAX_STALENESS", "soon"),
                ("ROUTERO_CONTROL_PLANE_URL", "http://127.0.0.1:8082"),
                (
                    "ROUTERO_DATA_PLANE_KEY",
                    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                ),
            ]),
        )
        .unwrap_err();
        assert!(
            format!("{refused:#}").contains("max_staleness: invalid duration \"soon\""),
            "{refused:#}"
        );
        let s = Settings::load(
            None,
            &env(&[
                ("ROUTERO_CONTROL_PLANE_URL", "http://x"),
                ("ROUTERO_CONTROL_PLANE_CA", "/ca.pem"),
                (
                    "ROUTERO_DATA_PLANE_KEY",
                    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                ),
            ]),
        )
        .unwrap();
        assert!(
            format!("{:#}", s.data_plane().unwrap_err()).contains("use https://"),
            "TLS settings never fall back to plaintext"
        );
        let s = Settings::load(None, &env(&[("ROUTERO_DATABASE_URL", "sqlite://x")])).unwrap();
        assert!(format!("{:#}", s.control_plane().unwrap_err()).contains("pepper"));
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ=";
        let s = Settings::load(
            None,
            &env(&[
                (
                    "ROUTERO_ADMIN_KEY",
                    "sk-rtadm-configured-0123456789abcdefghij",
                ),
                ("ROUTERO_PEPPER", secret),
                ("ROUTERO_MASTER_KEYS", &format!("1:{secret}")),
                ("ROUTERO_DATA_PLANE_KEY", secret),
                ("ROUTERO_AUDIT_SIGNING_KEY", secret),
                ("ROUTERO_AUDIT_WEBHOOK_SECRET", "whsec-0123456789abcdef"),
                (
                    "ROUTERO_AUDIT_WEBHOOK_URL",
                    "https://siem.example/hook?tenant=x&token=webhook-token-value",
                ),
                ("ROUTERO_AUDIT_S3_SECRET_ACCESS_KEY", "s3-secret-key-value"),
                (
                    "ROUTERO_DATABASE_URL",
                    "postgres://app:db-password-value@db/routero",
                ),
                (
                    "ROUTERO_AUDIT_DATABASE_URL",
                    "postgres://db/audit?password=audit-password-value",
                ),
            ]),
        )
        .unwrap();
        let mut shown = format!("{s:?}");
        let control = s.control_plane().unwrap();
        shown.push_str(&format!("{control:?}"));
        for leaked in [
            secret,
            "configured-0123456789",
            "whsec-0123456789",
            "s3-secret-key-value",
            "db-password-value",
            "audit-password-value",
            "webhook-token-value",
        ] {
            assert!(!shown.contains(leaked), "{leaked} in {shown}");
        }
        assert!(
            shown.contains("postgres://app:[REDACTED]@db/routero"),
            "{shown}"
        );
    }

    #[test]
    fn traces_go_to_a_loopback_or_tls_collector_and_logs_are_text_or_json() {
        let telemetry = |vars: &[(&str, &str)]| {
            Settings::load(None, &env(vars))
                .unwrap()
                .telemetry(Some("routero-data-plane"))
                .map(|t| (t.otlp_endpoint, t.json_logs, t.sample_ratio))
                .map_err(|e| format!("{e:#}"))
        };
        assert_eq!(telemetry(&[]), Ok((None, false, 1.0)));
        let local = "http://127.0.0.1:4317";
        assert_eq!(
            telemetry(&[
                ("ROUTERO_OTLP_ENDPOINT", local),
                ("ROUTERO_LOG_FORMAT", "json"),
                ("ROUTERO_TRACE_SAMPLE_RATIO", "0.25"),
            ]),
            Ok((Some(local.into()), true, 0.25))
        );
        let remote = [(
            "ROUTERO_OTLP_ENDPOINT",
            "http://collector.observability:4317",
        )];
        let refused = telemetry(&remote).unwrap_err();
        assert!(refused.contains("plaintext beyond loopback"), "{refused}");
        let opted = [remote[0], ("ROUTERO_ALLOW_PLAINTEXT_OTLP", "true")];
        assert!(telemetry(&opted).is_ok());
        for (vars, said) in [
            (
                vec![("ROUTERO_OTLP_ENDPOINT", "https://collector:4317")],
                "https:// needs otlp_ca",
            ),
            (
                vec![("ROUTERO_OTLP_ENDPOINT", "collector:4317")],
                "use http:// or https://",
            ),
            (
                vec![("ROUTERO_TRACE_SAMPLE_RATIO", "1.5")],
                "trace_sample_ratio",
            ),
            (
                vec![("ROUTERO_TRACE_SAMPLE_RATIO", "NaN")],
                "trace_sample_ratio",
            ),
            (vec![("ROUTERO_LOG_FORMAT", "xml")], "log_format"),
        ] {
            let error = telemetry(&vars).unwrap_err();
            assert!(error.contains(said), "{error}");
        }
        // Operator commands make no spans, whatever is configured.
        let command = Settings::load(None, &env(&[("ROUTERO_OTLP_ENDPOINT", local)]))
            .unwrap()
            .telemetry(None)
            .unwrap();
        assert_eq!(command.otlp_endpoint, None);
    }

    #[test]
    fn kafka_beyond_loopback_needs_tls_or_a_knowing_opt_out() {
        let file = std::env::temp_dir().join(format!("routero-ca-{}.pem", std::process::id()));
        std::fs::write(&file, "not checked here: librdkafka reads it").unwrap();
        let ca = file.to_str().unwrap();
        let kafka = |vars: &[(&str, &str)]| {
            Settings::load(None, &env(vars))
                .unwrap()
                .kafka()
                .map(|c| c.map(|c| c.tls.map(|t| (t.ca.is_some(), t.client.is_some()))))
                .map_err(|e| format!("{e:#}"))
        };
        let brokers = |list| ("ROUTERO_KAFKA_BROKERS", list);
        for local in [
            "127.0.0.1:9092",
            "localhost:9092,[::1]:9093",
            "PLAINTEXT://127.0.0.1:9092",
        ] {
            assert_eq!(kafka(&[brokers(local)]), Ok(Some(None)), "{local}");
        }
        let refused = kafka(&[brokers("127.0.0.1:9092,kafka.data.svc:9092")]).unwrap_err();
        assert!(refused.contains("plaintext beyond loopback"), "{refused}");
        let opt_out = [
            brokers("kafka:9092"),
            ("ROUTERO_ALLOW_PLAINTEXT_KAFKA", "true"),
        ];
        assert_eq!(kafka(&opt_out), Ok(Some(None)));
        // TLS on: by the flag (system CAs), or implied by a CA or client certificate.
        assert_eq!(
            kafka(&[brokers("kafka:9093"), ("ROUTERO_KAFKA_TLS", "true")]),
            Ok(Some(Some((false, false))))
        );
        assert_eq!(
            kafka(&[brokers("kafka:9093"), ("ROUTERO_KAFKA_TLS_CA", ca)]),
            Ok(Some(Some((true, false))))
        );
        let mutual = [
            brokers("kafka:9093"),
            ("ROUTERO_KAFKA_TLS_CERT", ca),
            ("ROUTERO_KAFKA_TLS_KEY", ca),
        ];
        assert_eq!(kafka(&mutual), Ok(Some(Some((false, true)))));
        for (vars, said) in [
            (
                vec![brokers("kafka:9093"), ("ROUTERO_KAFKA_TLS_CERT", ca)],
                "kafka_tls_cert and kafka_tls_key: set both",
            ),
            (
                vec![
                    brokers("kafka:9093"),
                    ("ROUTERO_KAFKA_TLS_CA", "/nonexistent/ca.pem"),
                ],
                "kafka_tls_ca: /nonexistent/ca.pem",
            ),
            (
                vec![
                    brokers("kafka:9093"),
                    ("ROUTERO_KAFKA_TLS", "false"),
                    ("ROUTERO_KAFKA_TLS_CA", ca),
                ],
                "kafka_tls: false, but",
            ),
        ] {
            let error = kafka(&vars).unwrap_err();
            assert!(error.contains(said), "{error}");
        }
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    fn egress_allow_opens_ranges_on_both_planes() {
        let planes = |allow: Option<&str>| {
            let mut vars =
                control_plane_env(&[("ROUTERO_CONTROL_PLANE_URL", "http://127.0.0.1:8082")]);
            if let Some(allow) = allow {
                vars.push(("ROUTERO_EGRESS_ALLOW", allow));
            }
            let settings = Settings::load(None, &env(&vars)).unwrap();
            let control = settings.control_plane().map(|c| c.egress);
            let data = settings.data_plane().map(|c| c.egress);
            (control, data)
        };
        let (control, data) = planes(None);
        assert_eq!(control.unwrap(), EgressPolicy::default());
        assert_eq!(data.unwrap(), EgressPolicy::default());
        let (control, data) = planes(Some("10.20.0.0/16, 127.0.0.1"));
        let expected = EgressPolicy::new(
            parse_cidrs(&["10.20.0.0/16".into(), "127.0.0.1/32".into()]).unwrap(),
        );
        assert_eq!(control.unwrap(), expected);
        assert_eq!(data.unwrap(), expected);
        let (control, data) = planes(Some("10.0.0.0/33"));
        assert!(format!("{:#}", control.unwrap_err()).contains("egress_allow"));
        assert!(format!("{:#}", data.unwrap_err()).contains("egress_allow"));

        let up = |allow: Option<&str>| {
            let vars: Vec<(&str, &str)> = allow
                .map(|a| ("ROUTERO_EGRESS_ALLOW", a))
                .into_iter()
                .collect();
            Settings::load(None, &env(&vars))
                .unwrap()
                .egress(EgressPolicy::loopback())
                .unwrap()
        };
        assert_eq!(up(None), EgressPolicy::loopback());
        assert_eq!(
            up(Some("")),
            EgressPolicy::default(),
            "an empty value opens nothing"
        );
    }

    #[test]
    fn plaintext_snapshots_only_on_loopback_unless_allowed() {
        let key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let data_plane = |url: &str, allow: Option<&str>| {
            let mut vars = vec![
                ("ROUTERO_CONTROL_PLANE_URL", url),
                ("ROUTERO_DATA_PLANE_KEY", key),
            ];
            if let Some(allow) = allow {
                vars.push(("ROUTERO_ALLOW_PLAINTEXT_GRPC", allow));
            }
            Settings::load(None, &env(&vars)).unwrap().data_plane()
        };
        for url in [
            "http://127.0.0.1:8082",
            "http://localhost:8082",
            "http://[::1]:8082",
        ] {
            assert!(data_plane(url, None).is_ok(), "{url}");
        }
        let refused = data_plane("http://10.0.0.5:8082", None).unwrap_err();
        assert!(format!("{refused:#}").contains("plaintext beyond loopback"));
        assert!(data_plane("http://10.0.0.5:8082", Some("true")).is_ok());

        let control_plane = |addr: &str, allow: Option<&str>| {
            let mut vars = control_plane_env(&[("ROUTERO_GRPC_ADDR", addr)]);
            if let Some(allow) = allow {
                vars.push(("ROUTERO_ALLOW_PLAINTEXT_GRPC", allow));
            }
            Settings::load(None, &env(&vars)).unwrap().control_plane()
        };
        assert!(control_plane("127.0.0.1:8082", None).is_ok());
        let refused = control_plane("0.0.0.0:8082", None).unwrap_err();
        assert!(format!("{refused:#}").contains("not loopback"));
        assert!(control_plane("0.0.0.0:8082", Some("true")).is_ok());
    }
}
