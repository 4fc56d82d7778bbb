//! `routero audit …`: verify, export, and the public key.

use std::io::{BufReader, Write};

use anyhow::{Context, Result, bail};
use routero_audit::{
    AuditStore, ExportLine, TenantLog, Verified, Violation, verify_chain, verify_export,
};
use routero_crypto::CheckpointVerifier;

use crate::Audit;
use crate::settings::Settings;
use crate::up;

/// The store and the public key this installation uses.
async fn open(settings: &Settings) -> Result<(AuditStore, CheckpointVerifier)> {
    let store = AuditStore::connect(&up::audit_database_url(settings)?).await?;
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

fn report(results: &[Result<Verified, Violation>]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let mut failed = 0;
    for result in results {
        match result {
            Ok(v) => writeln!(
                out,
                "tenant {}: ok, {} records through seq {}, signed through seq {}",
                v.tenant_id, v.records, v.last_seq, v.signed_through
            )?,
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

/// Runs an audit command.
pub async fn run(settings: Settings, command: Audit) -> Result<()> {
    match command {
        Audit::Verify {
            file: Some(path),
            public_key,
            tenant,
        } => {
            let verifier = verifier(&settings, public_key.as_deref())?;
            let file = std::fs::File::open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let results = verify_export(BufReader::new(file), &verifier)?;
            let results: Vec<_> = results
                .into_iter()
                .filter(|r| {
                    tenant.as_ref().is_none_or(|t| {
                        r.as_ref().map_or_else(|v| &v.tenant_id, |v| &v.tenant_id) == t
                    })
                })
                .collect();
            report(&results)
        }
        Audit::Verify {
            file: None,
            public_key,
            tenant,
        } => {
            let (store, configured) = open(&settings).await?;
            let verifier = match public_key {
                Some(key) => CheckpointVerifier::from_base64(&key).context("public key")?,
                None => configured,
            };
            let mut results = Vec::new();
            for tenant in tenants(&store, tenant).await? {
                let TenantLog {
                    anchor,
                    records,
                    checkpoints,
                } = store.load(&tenant).await?;
                results.push(verify_chain(
                    &tenant,
                    &records,
                    &checkpoints,
                    anchor.as_ref(),
                    &verifier,
                ));
            }
            report(&results)
        }
        Audit::Export { tenant } => {
            let (store, _) = open(&settings).await?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for tenant in tenants(&store, tenant).await? {
                let log = store.load(&tenant).await?;
                let lines = log
                    .anchor
                    .into_iter()
                    .map(ExportLine::Anchor)
                    .chain(
                        log.records
                            .into_iter()
                            .map(|r| ExportLine::Record(Box::new(r))),
                    )
                    .chain(log.checkpoints.into_iter().map(ExportLine::Checkpoint));
                for line in lines {
                    serde_json::to_writer(&mut out, &line)?;
                    writeln!(out)?;
                }
            }
            out.flush()?;
            Ok(())
        }
        Audit::Prune => {
            let store = AuditStore::connect(&up::audit_database_url(&settings)?).await?;
            let signer = up::audit_signer(&settings)?;
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
        Audit::PublicKey => {
            writeln!(
                std::io::stdout(),
                "{}",
                verifier(&settings, None)?.to_base64()
            )?;
            Ok(())
        }
    }
}
