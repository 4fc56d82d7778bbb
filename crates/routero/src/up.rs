//! `routero up`: control plane and data plane in one process on a SQLite file, with secrets
//! generated once into the data directory (mode 0600).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use routero_bus::{Spool, SpoolSource, Spooled};
use routero_control_plane::{ControlPlane, ControlPlaneConfig, KeyringSource, Listeners};
use routero_core::EgressPolicy;
use routero_crypto::{CheckpointSigner, Keyring, SealingKey};
use routero_data_plane::DataPlaneConfig;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;

use crate::settings::Settings;
use crate::shutdown_signal;

/// File names inside the data directory.
pub const MASTER_KEYS_FILE: &str = "master-keys";
const PEPPER_FILE: &str = "pepper.key";
const DATA_PLANE_KEY_FILE: &str = "data-plane.key";
const DATABASE_FILE: &str = "routero.db";
const AUDIT_DATABASE_FILE: &str = "audit.db";
const AUDIT_SIGNING_KEY_FILE: &str = "audit-signing.key";
/// Events the in-process audit bus holds before its overflow policy applies.
const AUDIT_BUS_CAPACITY: usize = 10_000;

/// The SQLite URL of the database in `dir`.
pub fn database_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join(DATABASE_FILE).display())
}
const SNAPSHOT_FILE: &str = "snapshot.bin";

/// Writes a secret file readable by its owner only; fails if it exists.
pub fn write_secret(path: &Path, secret: &SecretString) -> Result<()> {
    let mut file = routero_files::create_new_private(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(secret.expose_secret().as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// The audit log's database URL: the setting, else `audit.db` in the data directory (which
/// is only created when it is needed).
pub fn audit_database_url(settings: &Settings) -> Result<String> {
    match &settings.audit_database_url {
        Some(url) => Ok(url.clone()),
        None => Ok(format!(
            "sqlite://{}",
            data_dir(settings)?.join(AUDIT_DATABASE_FILE).display()
        )),
    }
}

/// The checkpoint signing key: the setting, else `audit-signing.key` in the data directory,
/// generated at first start.
pub fn audit_signer(settings: &Settings) -> Result<CheckpointSigner> {
    if let Some(seed) = &settings.audit_signing_key {
        return CheckpointSigner::from_base64(seed.expose()).context("audit_signing_key");
    }
    let path = data_dir(settings)?.join(AUDIT_SIGNING_KEY_FILE);
    if !path.exists() {
        write_secret(&path, &CheckpointSigner::generate()?.to_base64())?;
    }
    let seed =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    CheckpointSigner::from_base64(&seed)
        .with_context(|| format!("{} holds no valid key", path.display()))
}

/// The pepper admin and virtual keys are hashed under, generated at first start.
pub fn pepper(dir: &Path) -> Result<SealingKey> {
    key_file(dir, PEPPER_FILE)
}

/// Reads a 32-byte key from `dir/name`, generating it at first start.
fn key_file(dir: &Path, name: &str) -> Result<SealingKey> {
    let path = dir.join(name);
    if !path.exists() {
        write_secret(&path, &SealingKey::generate()?.to_base64())?;
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    SealingKey::from_base64(&text).with_context(|| format!("{} holds no valid key", path.display()))
}

/// The data directory, 0700 (created, or tightened if it was wider).
pub fn data_dir(settings: &Settings) -> Result<PathBuf> {
    let dir = PathBuf::from(settings.data_dir.as_deref().unwrap_or("./data"));
    routero_files::private_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Ensures the keyring file exists in `dir`; returns its path.
pub fn keyring_file(dir: &Path) -> Result<PathBuf> {
    let path = dir.join(MASTER_KEYS_FILE);
    if !path.exists() {
        write_secret(&path, &Keyring::generate()?.to_spec())?;
    }
    Ok(path)
}

/// The policy directory: the setting, else `./policies` when it exists.
fn policies_dir(settings: &Settings) -> Option<PathBuf> {
    match settings.policies_dir.as_deref() {
        Some("") => None,
        Some(dir) => Some(PathBuf::from(dir)),
        None => Some(PathBuf::from("policies")).filter(|dir| dir.is_dir()),
    }
}

/// Starts Cerbos on the policies and keeps it running (restarted within a second when it
/// dies; meanwhile requests fail closed). The task owns the process: aborting it kills Cerbos.
async fn start_cerbos(
    settings: &Settings,
    policies: &Path,
    dir: &Path,
) -> Result<(routero_authz::AuthzConfig, tokio::task::JoinHandle<()>)> {
    let binary = routero_authz::find_cerbos(settings.cerbos_binary.as_deref().map(Path::new))?;
    let work = dir.join("cerbos");
    routero_files::private_dir(&work).with_context(|| format!("creating {}", work.display()))?;
    let mut pdp = routero_authz::Pdp::start(&binary, policies, &work).await?;
    let started = pdp.config();
    let config = settings.authz(started.host, started.port)?;
    let supervisor = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Err(error) = pdp.restart().await {
                tracing::error!(%error, "cerbos is down and did not restart; requests fail closed");
            }
        }
    });
    Ok((config, supervisor))
}

/// Runs `routero up` until interrupted.
pub async fn run(settings: Settings) -> Result<()> {
    let dir = data_dir(&settings)?;
    let data_plane_key = key_file(&dir, DATA_PLANE_KEY_FILE)?;
    let mut control = ControlPlaneConfig::new(
        database_url(&dir),
        pepper(&dir)?,
        KeyringSource::File(keyring_file(&dir)?),
        data_plane_key.clone(),
    );
    control.admin_key = settings
        .admin_key
        .as_ref()
        .map(|key| SecretString::from(key.expose().to_owned()));
    control.audit_database_url = Some(audit_database_url(&settings)?);
    control.audit_min_retention_days = settings.audit_min_retention_days()?;
    control.deadlines = settings.deadlines(control.deadlines.request)?;
    control.failure_limits = settings.failure_limits()?;
    control.sessions = settings.sessions();
    control.public_url = settings.public_url()?;
    control.https = settings.https(true)?;
    control.trusted_proxies = settings.trusted_proxies()?;
    // Local models on the same host are a real use of an all-in-one gateway.
    let egress = settings.egress(EgressPolicy::loopback())?;
    settings.log_egress(&egress);
    control.egress = egress.clone();
    if let Some(key) = &control.admin_key {
        anyhow::ensure!(
            key.expose_secret().len() >= 32,
            "admin_key: use at least 32 characters"
        );
    }

    let control_addr = settings.control_plane_addr();
    let grpc_addr = settings.grpc_addr();
    let data_addr = settings.data_plane_addr();
    let http = TcpListener::bind(control_addr)
        .await
        .with_context(|| format!("binding {control_addr}"))?;
    let grpc = TcpListener::bind(grpc_addr)
        .await
        .with_context(|| format!("binding {grpc_addr}"))?;
    let data = TcpListener::bind(data_addr)
        .await
        .with_context(|| format!("binding {data_addr}"))?;
    let grpc_addr = grpc.local_addr()?;

    let policies = policies_dir(&settings);
    let cerbos = match &policies {
        Some(policies) => {
            let (authz, supervisor) = start_cerbos(&settings, policies, &dir).await?;
            control.policies_dir = Some(policies.clone());
            control.authz = Some(authz.clone());
            tracing::info!(policies = %policies.display(), "requests are decided by the Cerbos policies");
            Some((authz, supervisor))
        }
        None => {
            tracing::warn!(
                "no policies directory: requests are checked against key allowlists only"
            );
            None
        }
    };
    let mut data_config = DataPlaneConfig::new(format!("http://{grpc_addr}"), data_plane_key);
    data_config.authz = cerbos.as_ref().map(|(authz, _)| authz.clone());
    data_config.node_id = "routero-up".into();
    data_config.snapshot_path = Some(dir.join(SNAPSHOT_FILE));
    data_config.shutdown_grace = Duration::from_secs(5);
    data_config.deadlines = settings.deadlines(data_config.deadlines.request)?;
    data_config.failure_limits = settings.failure_limits()?;
    data_config.trusted_proxies = settings.trusted_proxies()?;
    data_config.egress = egress;
    data_config.https = settings.https(false)?;
    data_config.traced = settings.otlp_endpoint.is_some();
    data_config.metrics_addr = settings.metrics_addr;
    settings.upstreams(&mut data_config)?;

    let signer = audit_signer(&settings)?;
    let audit_store = settings
        .audit_store(&audit_database_url(&settings)?)
        .await?
        .with_record_key(signer.record_key()?);
    // The same path as the split services: bus → fsynced spool → (here) the writer.
    let (bus, events) = routero_bus::in_process(AUDIT_BUS_CAPACITY, settings.audit_overflow()?);
    let (spool_dir, spool_bytes) = settings.audit_spool(Some(&dir))?;
    let spooled = Spooled::new(
        Spool::open(&spool_dir, spool_bytes)
            .with_context(|| format!("opening the audit spool in {}", spool_dir.display()))?,
    );
    let filling = tokio::spawn({
        let spooled = spooled.clone();
        async move { spooled.fill(events).await }
    });
    let admin_url = url(control.https.is_some(), http.local_addr()?);
    control.audit_verifier = Some(signer.verifier());
    let plane = ControlPlane::build(control)
        .await?
        .with_audit(bus.clone())?;
    announce(
        plane.generated_admin_key.as_ref(),
        &admin_url,
        &url(data_config.https.is_some(), data.local_addr()?),
        &dir,
    )?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.changed().await;
    };
    let sinks = crate::export::Sinks::start(&settings, &audit_store, &stop_rx)?;
    // The writer ends when the spool is drained after both planes are down; it is restarted
    // if it ever stops before.
    let (_writer_stop, never) = tokio::sync::watch::channel(false);
    let writer = tokio::spawn(routero_audit_writer::run_supervised(
        audit_store,
        signer,
        settings.audit_writer()?,
        move || Ok(SpoolSource::new(spooled.clone())),
        never,
    ));
    let control_task = tokio::spawn(plane.serve(Listeners { http, grpc }, wait(stop_rx.clone())));
    let data_task = tokio::spawn(routero_data_plane::run(
        data_config,
        data,
        Some(bus),
        wait(stop_rx),
    ));
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    control_task.await??;
    data_task.await??;
    // Both planes are down and their bus handles dropped: the spool takes what they emitted,
    // the writer drains it, signs a last checkpoint and returns.
    filling.await?;
    writer.await?;
    if let Some((_, supervisor)) = cerbos {
        supervisor.abort();
    }
    sinks.join().await
}

fn url(https: bool, addr: std::net::SocketAddr) -> String {
    format!("{}://{addr}", if https { "https" } else { "http" })
}

fn announce(admin_key: Option<&SecretString>, control: &str, data: &str, dir: &Path) -> Result<()> {
    let admin = match admin_key {
        Some(key) => format!("{}   (shown once; stored hashed)", key.expose_secret()),
        None => "the one printed at first start, or ROUTERO_ADMIN_KEY".into(),
    };
    let shown = admin_key.map_or("$ROUTERO_ADMIN_KEY", |k| k.expose_secret());
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Routero is up (data in {dir}).\n\
         \n  admin key:      {admin}\
         \n  admin API:      {control}   (OpenAPI: {control}/openapi.json)\
         \n  console:        {control}/console   (sign in with your single sign-on)\
         \n  OpenAI API:     {data}/v1   <- point any OpenAI client here\
         \n\nCreate a virtual key, then call the gateway with it:\
         \n  curl -s {control}/key/generate -H 'Authorization: Bearer {shown}' -H 'Content-Type: application/json' -d '{{\"duration\": \"30d\"}}'\
         \n  curl -s {data}/v1/models -H 'Authorization: Bearer <key from above>'\
         \n\nAdd a provider and a model first (see README.md, Quickstart). Ctrl-C stops.",
        dir = dir.display(),
    )?;
    out.flush()?;
    Ok(())
}
