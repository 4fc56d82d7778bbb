//! `routero audit …`: verify (against witnesses too), export, prune, and the public key.

use std::collections::BTreeMap;
use std::io::{BufReader, Write};

use anyhow::{Context, Result, bail};
use routero_audit::{AuditStore, Checkpoint, TenantLog, add_witnessed, read_export, read_witness};
use routero_crypto::CheckpointVerifier;

use crate::Audit;
use crate::settings::Settings;
use crate::up;

/// The store and the public key this installation uses.
async fn open(settings: &Settings) -> Result<(AuditStore, CheckpointVerifier)> {
    let store = settings
        .audit_store(&up::audit_database_url(settings)?)
        .await?;
    Ok((store, verifier(settings, None)?))
}

/// The verifying key: given on the command line, configured, or derived from the signing key.
fn verifier(settings: &Settings, given: Option<&str>) -> Result<CheckpointVerifier> {
    if let Some(key) = given.or(settings.audit_public_key.as_deref()) {
        return CheckpointVerifier::from_base64(key).context("public key");
    }
    Ok(up::audit_signer(settings)?.verifier())
}

async fn tenants(store: &AuditStore, only: Option<String>) -> Result<Vec<String>> {
    Ok(match only {
        Some(tenant) => vec![tenant],
        None => store.tenants().await?,
    })
}

fn report(logs: &BTreeMap<String, TenantLog>, verifier: &CheckpointVerifier) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let mut failed = 0;
    for (tenant, log) in logs {
        match log.verify(tenant, verifier) {
            Ok(v) => {
                write!(
                    out,
                    "tenant {}: ok, {} records through seq {}, signed through seq {}",
                    v.tenant_id, v.records, v.last_seq, v.signed_through
                )?;
                if let Some(anchor) = &log.anchor {
                    write!(
                        out,
                        ", pruned through seq {} at {} under a {}-day retention",
                        anchor.seq, anchor.pruned_at, anchor.retention_days
                    )?;
                }
                writeln!(out)?;
            }
            Err(violation) => {
                failed += 1;
                writeln!(out, "{violation}")?;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} chain(s) failed verification");
    }
    Ok(())
}

/// The checkpoints every witness holds, each verified.
async fn witnessed(
    settings: &Settings,
    witnesses: &[String],
    verifier: &CheckpointVerifier,
) -> Result<Vec<Checkpoint>> {
    let mut checkpoints = Vec::new();
    for witness in witnesses {
        let held = match witness.strip_prefix("s3://") {
            Some(place) => {
                let (bucket, prefix) = place.split_once('/').unwrap_or((place, ""));
                let mut config = settings
                    .audit_s3()?
                    .context("--witness s3://…: set audit_s3_endpoint and its credentials")?;
                config.bucket = bucket.to_owned();
                config.prefix = prefix.to_owned();
                let lines = routero_audit_writer::read_witness_objects(config)
                    .await
                    .map_err(|e| anyhow::anyhow!("witness {witness}: {e}"))?;
                read_witness(lines.as_slice(), verifier)
            }
            None => {
                let file = std::fs::File::open(witness)
                    .with_context(|| format!("opening witness {witness}"))?;
                read_witness(BufReader::new(file), verifier)
            }
        };
        checkpoints.extend(held.with_context(|| format!("witness {witness}"))?);
    }
    Ok(checkpoints)
}

/// Runs an audit command.
pub async fn run(settings: Settings, command: Audit) -> Result<()> {
    match command {
        Audit::Verify {
            file,
            public_key,
            tenant,
            witness,
        } => verify(&settings, file, public_key.as_deref(), tenant, &witness).await,
        Audit::Export { tenant } => export(&settings, tenant).await,
        Audit::Prune => prune(&settings).await,
        Audit::PublicKey => print_public_key(&settings),
    }
}

/// `audit verify`: every chain (from the store, or an export `file`) and its checkpoints,
/// against the public key and what the witnesses hold.
async fn verify(
    settings: &Settings,
    file: Option<std::path::PathBuf>,
    public_key: Option<&str>,
    tenant: Option<String>,
    witness: &[String],
) -> Result<()> {
    let verifier = verifier(settings, public_key)?;
    let mut logs = match file {
        Some(path) => {
            let file = std::fs::File::open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            read_export(BufReader::new(file))?
        }
        None => {
            let store = settings
                .audit_store(&up::audit_database_url(settings)?)
                .await?;
            let mut logs = BTreeMap::new();
            for tenant in tenants(&store, tenant.clone()).await? {
                let log = store.load(&tenant).await?;
                logs.insert(tenant, log);
            }
            logs
        }
    };
    add_witnessed(&mut logs, witnessed(settings, witness, &verifier).await?);
    if let Some(only) = &tenant {
        logs.retain(|name, _| name == only);
    }
    report(&logs, &verifier)
}

/// `audit export`: every record, anchor and checkpoint as JSON lines on standard output.
async fn export(settings: &Settings, tenant: Option<String>) -> Result<()> {
    let (store, _) = open(settings).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for tenant in tenants(&store, tenant).await? {
        for line in store.load(&tenant).await?.into_export() {
            serde_json::to_writer(&mut out, &line)?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    Ok(())
}

/// `audit prune`: drops records past their tenant's retention, leaving signed anchors.
async fn prune(settings: &Settings) -> Result<()> {
    let store = settings
        .audit_store(&up::audit_database_url(settings)?)
        .await?;
    let signer = up::audit_signer(settings)?;
    let anchors = store
        .prune_expired(&signer, std::time::SystemTime::now())
        .await?;
    let mut out = std::io::stdout().lock();
    for anchor in &anchors {
        writeln!(
            out,
            "tenant {}: pruned through seq {}",
            anchor.tenant_id, anchor.seq
        )?;
    }
    writeln!(out, "{} tenant(s) pruned", anchors.len())?;
    Ok(())
}

/// `audit public-key`: the checkpoint verification key, base64.
fn print_public_key(settings: &Settings) -> Result<()> {
    writeln!(
        std::io::stdout(),
        "{}",
        verifier(settings, None)?.to_base64()
    )?;
    Ok(())
}
