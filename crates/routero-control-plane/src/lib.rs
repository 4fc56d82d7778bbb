//! Routero's control plane: the only owner of durable state. It serves the admin API, and the
//! gRPC snapshot stream from which data planes learn keys, routes and credentials.
#![forbid(unsafe_code)]

mod api;
pub mod config;
mod egress;
mod error;
mod metrics;
mod outbox;
mod policy;
pub mod role_mapping;
mod snapshot;
pub mod store;
mod vault;

use routero_core::ErrorCode;
use std::future::Future;
use std::sync::Arc;

use routero_bus::EventBus;
use routero_crypto::{KeyHasher, generate_api_key};
use routero_proto::v1::snapshot_service_server::SnapshotServiceServer;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

pub use api::{ApiError, OPENAPI};
pub use config::{ControlPlaneConfig, GrpcTls, KeyringSource, SessionPolicy};
pub use error::ControlPlaneError;
pub use store::Store;
pub use vault::{Vault, rotate_credentials};

/// Name of the tenant created at first start.
pub const DEFAULT_TENANT: &str = "default";
/// Prefix of admin keys.
pub const ADMIN_KEY_PREFIX: &str = "sk-rtadm-";
/// The built-in role with full control of its tenant.
pub const ADMIN_ROLE: &str = "admin";

pub(crate) use routero_core::is_valid_name;

/// The two listeners the control plane serves on.
#[derive(Debug)]
pub struct Listeners {
    /// Admin REST API.
    pub http: TcpListener,
    /// gRPC snapshot service.
    pub grpc: TcpListener,
}

/// A control plane whose store is open and whose first snapshot is built.
pub struct ControlPlane {
    config: ControlPlaneConfig,
    state: api::AppState,
    /// The admin key generated at this start, when none existed: shown once, stored hashed.
    pub generated_admin_key: Option<SecretString>,
}

impl ControlPlane {
    /// Opens the store, registers or generates the admin key, and builds the first snapshot.
    pub async fn build(config: ControlPlaneConfig) -> Result<Self, ControlPlaneError> {
        let store = Store::connect(&config.database_url).await?;
        let vault = Vault::open(config.keyring.clone())?;
        let bound = vault::bind_legacy_credentials(&store, &vault).await?;
        if bound > 0 {
            tracing::info!(
                credentials = bound,
                "legacy credentials bound to their tenant, id and base URL"
            );
        }
        let hasher = KeyHasher::new(config.pepper.clone())?;
        let generated_admin_key =
            bootstrap_admin(&store, &hasher, config.admin_key.as_ref()).await?;
        let audit_log = match &config.audit_database_url {
            Some(url) => Some(
                routero_audit::AuditStore::connect(url)
                    .await?
                    .with_min_retention_days(config.audit_min_retention_days),
            ),
            None => None,
        };
        let publisher = snapshot::Publisher::start(
            store.clone(),
            vault.clone(),
            config.data_plane_key.clone(),
            &config.pepper,
        )
        .await?;
        let authorizer = match (&config.policies_dir, &config.authz) {
            (Some(dir), Some(authz)) => {
                // Policies on from the first snapshot: a data plane never sees a state
                // without them.
                let version = routero_authz::bundle_version(dir)
                    .map_err(|e| ControlPlaneError::Config(format!("policies_dir: {e}")))?;
                publisher.set_policy_version(&version).await?;
                Some(Arc::new(routero_authz::Authorizer::connect(authz).await?))
            }
            (Some(_), None) => {
                return Err(ControlPlaneError::Config(
                    "policies_dir needs a policy engine to decide admin requests (cerbos_addr)"
                        .into(),
                ));
            }
            (None, _) => None,
        };
        let state = api::AppState {
            store,
            hasher,
            vault,
            publisher,
            audit: None,
            audit_log,
            authorizer,
            deadlines: config.deadlines,
            max_body_bytes: config.max_body_bytes,
            failures: Arc::new(routero_core::AuthFailures::new(config.failure_limits)),
            sessions: config.sessions,
            trusted_proxies: config.trusted_proxies.clone(),
            metrics: Arc::new(metrics::AdminMetrics::new()),
            audit_verifier: config.audit_verifier.clone(),
            csrf: config
                .pepper
                .derive(routero_crypto::Purpose::SessionCsrf)
                .and_then(|key| routero_crypto::MessageKey::new(&key))?,
            whole_log: Arc::new(tokio::sync::Semaphore::new(2)),
            egress: Arc::new(config.egress.clone()),
            relying_party: Arc::new(
                routero_oidc::RelyingParty::new(config.egress.clone())
                    .map_err(|e| ControlPlaneError::Config(e.to_string()))?,
            ),
            public_url: config.public_url.clone(),
        };
        Ok(Self {
            config,
            state,
            generated_admin_key,
        })
    }

    /// Records every admin mutation (through the outbox, committed with it) and failed admin
    /// authentication on `bus`.
    pub fn with_audit(mut self, bus: EventBus) -> Result<Self, ControlPlaneError> {
        let key = self
            .config
            .pepper
            .derive(routero_crypto::Purpose::AuditOutbox)
            .and_then(|key| routero_crypto::MessageKey::new(&key))?;
        self.state.store = self.state.store.clone().with_outbox(key);
        self.state.audit = Some(bus);
        Ok(self)
    }

    /// Serves the admin API and the snapshot service until `shutdown` completes, then drains.
    pub async fn serve(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ControlPlaneError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let publisher = Arc::clone(&self.state.publisher);
        let follower = tokio::spawn(
            publisher
                .clone()
                .follow(self.config.poll_interval, stop_rx.clone()),
        );
        let policy_watch = self.config.policies_dir.clone().map(|dir| {
            tokio::spawn(policy::watch_bundle(
                publisher.clone(),
                dir,
                self.config.poll_interval,
                self.state.audit.clone(),
                stop_rx.clone(),
            ))
        });

        let grpc_service = SnapshotServiceServer::new(snapshot::SnapshotGrpc::new(
            publisher,
            self.config.heartbeat_interval,
            stop_rx.clone(),
        ));
        let mut builder = Server::builder();
        if let Some(tls) = &self.config.grpc_tls {
            builder = builder
                .tls_config(server_tls(tls))
                .map_err(|e| ControlPlaneError::Config(format!("grpc tls: {e}")))?;
        }
        let mut grpc_stop = stop_rx.clone();
        // TCP_NODELAY: small snapshot frames (a revocation) must not wait for Nagle.
        let incoming = TcpListenerStream::new(listeners.grpc)
            .map(|accepted| accepted.and_then(|stream| stream.set_nodelay(true).map(|()| stream)));
        let grpc = builder
            .add_service(grpc_service)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = grpc_stop.changed().await;
            });

        let reporting = tokio::spawn(routero_bus::report_auth_failures(
            Arc::clone(&self.state.failures),
            self.state.audit.clone(),
            routero_bus::FailureReport {
                action: routero_core::audit::EventType::LoginFailed,
                resource: "admin_api",
                reason_code: "invalid_admin_key",
            },
            stop_rx.clone(),
        ));
        let forwarding = self.state.audit.clone().map(|bus| {
            tokio::spawn(outbox::forward(
                self.state.store.clone(),
                bus,
                stop_rx.clone(),
            ))
        });
        let metrics = match self.config.metrics_addr {
            Some(addr) => {
                let (metrics, publisher) = (
                    Arc::clone(&self.state.metrics),
                    Arc::clone(&self.state.publisher),
                );
                let mut stop = stop_rx.clone();
                Some(
                    routero_http::metrics::serve(
                        addr,
                        Arc::new(move || metrics.render(&publisher)),
                        async move {
                            let _ = stop.changed().await;
                        },
                    )
                    .await
                    .map_err(ControlPlaneError::Config)?,
                )
            }
            None => None,
        };
        let deadlines = self.state.deadlines;
        let mut http_stop = stop_rx;
        let http = routero_http::serve(
            listeners.http,
            api::router(self.state),
            deadlines,
            self.config.https.clone(),
            async move {
                let _ = http_stop.changed().await;
            },
        );

        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let (grpc, ()) = tokio::join!(grpc, http);
        let _ = follower.await;
        let _ = reporting.await;
        if let Some(task) = forwarding {
            let _ = task.await;
        }
        if let Some(task) = policy_watch {
            let _ = task.await;
        }
        if let Some(task) = metrics {
            let _ = task.await;
        }
        grpc.map_err(|e| ControlPlaneError::Server(format!("grpc: {e}")))?;
        Ok(())
    }
}

fn server_tls(tls: &GrpcTls) -> ServerTlsConfig {
    let identity = Identity::from_pem(&tls.cert_pem, tls.key_pem.expose_secret());
    let config = ServerTlsConfig::new().identity(identity);
    match &tls.client_ca_pem {
        Some(ca) => config.client_ca_root(Certificate::from_pem(ca)),
        None => config,
    }
}

/// Ensures the default tenant has an admin key: the configured one (registered if new), or
/// a generated one when the tenant has none, returned so the caller can show it once.
///
/// A configured key that was revoked stays revoked: the control plane starts, says so, and
/// does not register it again (a restart never undoes a revocation). If that leaves the
/// tenant without any admin key, one is generated and shown, as at a first start.
async fn bootstrap_admin(
    store: &Store,
    hasher: &KeyHasher,
    configured: Option<&SecretString>,
) -> Result<Option<SecretString>, ControlPlaneError> {
    let tenant = store.ensure_tenant(DEFAULT_TENANT).await?;
    let admin = [ADMIN_ROLE.to_owned()];
    if let Some(key) = configured {
        let hash = hasher.hash(key.expose_secret());
        match store.admin_key_state(&hash.0).await? {
            None => {
                store
                    .insert_admin_key(&tenant, &hash.0, ("configured", &admin, None), Vec::new())
                    .await?;
                return Ok(None);
            }
            Some(false) => return Ok(None),
            Some(true) => tracing::warn!(
                "the configured admin_key was revoked: it stays revoked and is not registered again; remove it from the configuration"
            ),
        }
    }
    if store.admin_key_count(&tenant).await? > 0 {
        return Ok(None);
    }
    let (key, _) =
        issue_admin_key(store, hasher, &tenant, ("first", &admin, None), Vec::new()).await?;
    Ok(Some(key))
}

/// Generates an admin key for the tenant (acting for `user_id`, when given) and stores its
/// hash; the key is returned to be shown once.
pub(crate) async fn issue_admin_key(
    store: &Store,
    hasher: &KeyHasher,
    tenant_id: &str,
    named: (&str, &[String], Option<&str>),
    events: Vec<routero_core::audit::AuditEvent>,
) -> Result<(SecretString, store::AdminKey), ControlPlaneError> {
    let key = generate_api_key(ADMIN_KEY_PREFIX)?;
    let hash = hasher.hash(key.expose_secret());
    let record = store
        .insert_admin_key(tenant_id, &hash.0, named, events)
        .await?;
    Ok((key, record))
}

/// Creates a tenant with a first admin key (role `admin`), returned to be shown once: an
/// operator's action (`routero admin create-tenant`), outside any tenant's administration.
pub async fn create_tenant(
    store: &Store,
    hasher: &KeyHasher,
    name: &str,
) -> Result<SecretString, ControlPlaneError> {
    if !is_valid_name(name) {
        return Err(ControlPlaneError::rejected(
            ErrorCode::InvalidName,
            "a tenant name is 1-128 characters of letters, digits and -_.:/@",
        ));
    }
    let tenant = store.create_tenant(name).await?;
    let admin = [ADMIN_ROLE.to_owned()];
    let (key, _) =
        issue_admin_key(store, hasher, &tenant, ("first", &admin, None), Vec::new()).await?;
    Ok(key)
}
