//! `routero`: the one binary. `up` runs everything in one process on embedded defaults;
//! `control-plane` and `data-plane` run the services apart; `admin` holds operator commands.
#![forbid(unsafe_code)]

mod audit;
mod export;
mod kafka;
mod settings;
mod up;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use routero_control_plane::{ControlPlane, Listeners, Store, rotate_credentials};
use routero_crypto::{KeyHasher, Keyring, SealingKey};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use crate::settings::Settings;

#[derive(Parser)]
#[command(
    name = "routero",
    version,
    about = "A self-hostable LLM gateway built for security and governance"
)]
struct Cli {
    /// TOML settings file; `ROUTERO_<FIELD>` variables override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Control plane and data plane in one process on a SQLite file in ROUTERO_DATA_DIR.
    Up,
    /// The control plane: admin API and gRPC snapshot service.
    ControlPlane,
    /// The data plane: the OpenAI-compatible proxy.
    DataPlane,
    /// The audit writer: consumes the Kafka events topic, chains and stores events, signs
    /// checkpoints, re-publishes chained records to `routero.audit.v1`.
    AuditWriter,
    /// Operator commands.
    #[command(subcommand)]
    Admin(Admin),
    /// The audit log.
    #[command(subcommand)]
    Audit(Audit),
}

#[derive(Subcommand)]
enum Audit {
    /// Verifies hash chains and signed checkpoints, from the audit database or from an export;
    /// names the first bad sequence number. Exits 1 when anything fails to verify.
    Verify {
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// An NDJSON export to verify instead of the database (needs --public-key).
        #[arg(long, requires = "public_key")]
        file: Option<PathBuf>,
        /// Base64 Ed25519 public key that signed the checkpoints.
        #[arg(long)]
        public_key: Option<String>,
        /// Signed chain heads kept outside the database: an NDJSON file of export lines (what a
        /// SIEM kept of the `routero.audit.v1` topic or the webhook), or `s3://<bucket>/<prefix>`
        /// (the S3 export, reached with the audit_s3_* settings). A chain shorter than a
        /// witnessed head is reported as cut. Repeatable.
        #[arg(long)]
        witness: Vec<String>,
    },
    /// Writes the audit log (anchors, records, checkpoints) as NDJSON to standard output.
    Export {
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Prints the public key that verifies this installation's checkpoints.
    PublicKey,
    /// Removes records past each tenant's retention now, behind signed anchors (the audit
    /// writer also does this hourly).
    Prune,
}

#[derive(Subcommand)]
enum Admin {
    /// Re-encrypts every provider credential under the newest master key, in one transaction.
    /// With ROUTERO_DATA_DIR (`routero up`), a new key version is generated first; otherwise
    /// ROUTERO_MASTER_KEYS must already hold the new version.
    RotateMasterKey,
    /// Prints a fresh random 32-byte key in base64 (for pepper, data_plane_key, master_keys).
    GenerateSecret,
    /// Creates a tenant and prints its first admin key (role admin; shown once).
    CreateTenant {
        /// Unique tenant name.
        name: String,
    },
    /// Applies pending schema migrations to the control plane's database (`database_url`) and,
    /// when set, the audit store (`audit_database_url`), then exits: run before new binaries
    /// start (the Helm chart's migrations Job). Services also apply them when they start.
    Migrate,
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let settings = Settings::load(cli.config.as_deref(), &env)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // Services export spans when configured; operator commands only log.
    let service = match cli.command {
        Command::Up => Some("routero"),
        Command::ControlPlane => Some("routero-control-plane"),
        Command::DataPlane => Some("routero-data-plane"),
        Command::AuditWriter => Some("routero-audit-writer"),
        Command::Admin(_) | Command::Audit(_) => None,
    };
    let telemetry = {
        let _runtime = runtime.enter();
        routero_telemetry::init(&settings.telemetry(service)?)?
    };
    let ran = runtime.block_on(async move {
        match cli.command {
            Command::Up => up::run(settings).await,
            Command::ControlPlane => control_plane(settings).await,
            Command::DataPlane => data_plane(settings).await,
            Command::AuditWriter => kafka::audit_writer(settings).await,
            Command::Admin(Admin::RotateMasterKey) => rotate_master_key(settings).await,
            Command::Admin(Admin::CreateTenant { name }) => create_tenant(settings, &name).await,
            Command::Admin(Admin::Migrate) => migrate(settings).await,
            Command::Audit(command) => audit::run(settings, command).await,
            Command::Admin(Admin::GenerateSecret) => {
                let key = SealingKey::generate()?;
                writeln!(std::io::stdout(), "{}", key.to_base64().expose_secret())?;
                Ok(())
            }
        }
    });
    {
        let _runtime = runtime.enter();
        telemetry.shutdown();
    }
    ran
}

async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

async fn control_plane(settings: Settings) -> Result<()> {
    let config = settings.control_plane()?;
    settings.log_egress(&config.egress);
    let http = bind(settings.control_plane_addr()).await?;
    let grpc = bind(settings.grpc_addr()).await?;
    let audit = kafka::service_bus(&settings)?;
    let mut plane = ControlPlane::build(config).await?;
    if let Some((bus, _)) = &audit {
        plane = plane.with_audit(bus.clone())?;
    }
    if let Some(key) = &plane.generated_admin_key {
        writeln!(
            std::io::stdout(),
            "admin key (shown once; stored hashed): {}",
            key.expose_secret()
        )?;
    }
    tracing::info!(admin = %http.local_addr()?, grpc = %grpc.local_addr()?, "control plane listening");
    plane
        .serve(Listeners { http, grpc }, shutdown_signal())
        .await?;
    drain(audit).await
}

async fn data_plane(settings: Settings) -> Result<()> {
    let config = settings.data_plane()?;
    settings.log_egress(&config.egress);
    let listener = bind(settings.data_plane_addr()).await?;
    tracing::info!(addr = %listener.local_addr()?, "data plane listening");
    let audit = kafka::service_bus(&settings)?;
    let bus = audit.as_ref().map(|(bus, _)| bus.clone());
    routero_data_plane::run(config, listener, bus, shutdown_signal()).await?;
    drain(audit).await
}

/// Once the service is down, lets the audit forwarder send what it still holds.
async fn drain(audit: Option<(routero_bus::EventBus, tokio::task::JoinHandle<()>)>) -> Result<()> {
    if let Some((bus, forwarder)) = audit {
        drop(bus);
        forwarder.await?;
    }
    Ok(())
}

async fn create_tenant(settings: Settings, name: &str) -> Result<()> {
    let (database_url, pepper) = if settings.embedded() {
        let dir = up::data_dir(&settings)?;
        (up::database_url(&dir), up::pepper(&dir)?)
    } else {
        let config = settings.control_plane()?;
        (config.database_url, config.pepper)
    };
    let store = Store::connect(&database_url).await?;
    let key = routero_control_plane::create_tenant(&store, &KeyHasher::new(pepper)?, name).await?;
    writeln!(
        std::io::stdout(),
        "tenant {name} created; its admin key (shown once; stored hashed): {}",
        key.expose_secret()
    )?;
    Ok(())
}

async fn migrate(settings: Settings) -> Result<()> {
    let database_url = settings
        .database_url
        .as_deref()
        .context("database_url: the control plane's database")?;
    Store::connect(database_url)
        .await
        .context("migrating the control plane's database")?;
    writeln!(std::io::stdout(), "control plane database: migrated")?;
    if let Some(audit_url) = settings.audit_database_url.as_deref() {
        routero_audit::AuditStore::connect(audit_url)
            .await
            .context("migrating the audit store")?;
        writeln!(std::io::stdout(), "audit store: migrated")?;
    }
    Ok(())
}

async fn rotate_master_key(settings: Settings) -> Result<()> {
    let (database_url, keyring) = if settings.embedded() {
        let dir = up::data_dir(&settings)?;
        let path = up::keyring_file(&dir)?;
        let current = Keyring::parse(&std::fs::read_to_string(&path)?)?;
        let next = current.with_new_version()?;
        // The new keyring is written before any row changes, so a running control plane
        // re-reads it when it meets the new version.
        let tmp = path.with_extension("new");
        let _ = std::fs::remove_file(&tmp);
        up::write_secret(&tmp, &next.to_spec())?;
        std::fs::rename(&tmp, &path)?;
        (up::database_url(&dir), next)
    } else {
        let config = settings.control_plane()?;
        let keyring = match config.keyring {
            routero_control_plane::KeyringSource::Fixed(keyring) => keyring,
            routero_control_plane::KeyringSource::File(path) => {
                Keyring::parse(&std::fs::read_to_string(path)?)?
            }
        };
        (config.database_url, keyring)
    };
    let store = Store::connect(&database_url).await?;
    let changed = rotate_credentials(&store, &keyring).await?;
    writeln!(
        std::io::stdout(),
        "re-encrypted {changed} credential(s) under master key v{}",
        keyring.current_version()
    )?;
    Ok(())
}
