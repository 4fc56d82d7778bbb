//! The NDJSON export: one JSON object per line, anchors, records and checkpoints of any tenants,
//! in chain order per tenant. Verifiable with the public key alone, no database. Witnesses (the
//! SIEM topic, the S3 export, a webhook receiver's archive) hold the same lines; the signed
//! checkpoints among them pin chain heads the database cannot take back.

use std::collections::BTreeMap;
use std::io::BufRead;

use routero_crypto::CheckpointVerifier;
use serde::{Deserialize, Serialize};

use crate::AuditError;
use crate::anchor::Anchor;
use crate::chain::ChainedRecord;
use crate::checkpoint::Checkpoint;
use crate::store::TenantLog;
use crate::verify::{Verified, Violation};

/// One line of an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExportLine {
    /// The signed retention anchor a pruned chain continues from.
    Anchor(Anchor),
    /// A chained record.
    Record(Box<ChainedRecord>),
    /// A signed checkpoint.
    Checkpoint(Checkpoint),
}

impl TenantLog {
    /// The log as export lines: its anchor, records, then checkpoints.
    pub fn into_export(self) -> impl Iterator<Item = ExportLine> {
        self.anchor
            .into_iter()
            .map(ExportLine::Anchor)
            .chain(
                self.records
                    .into_iter()
                    .map(|r| ExportLine::Record(Box::new(r))),
            )
            .chain(self.checkpoints.into_iter().map(ExportLine::Checkpoint))
    }
}

/// A checkpoint line with its kind changed to `anchor`: recognised to be named, never used.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Relabelled {
    Anchor(Checkpoint),
}

/// Reads the lines of an export or a witness with their line numbers; blank lines are skipped,
/// anything else that does not parse is an error naming its line.
fn lines(reader: impl BufRead) -> impl Iterator<Item = Result<(usize, ExportLine), AuditError>> {
    reader
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.as_ref().is_ok_and(|l| l.trim().is_empty()))
        .map(|(index, line)| {
            let line = line?;
            let parsed =
                serde_json::from_str(&line).map_err(|source| {
                    match serde_json::from_str::<Relabelled>(&line) {
                        Ok(Relabelled::Anchor(checkpoint)) => AuditError::CheckpointAsAnchor {
                            line: index + 1,
                            seq: checkpoint.seq,
                        },
                        Err(_) => AuditError::Json {
                            line: index + 1,
                            source,
                        },
                    }
                })?;
            Ok((index + 1, parsed))
        })
}

/// Reads an export into each tenant's log.
pub fn read_export(reader: impl BufRead) -> Result<BTreeMap<String, TenantLog>, AuditError> {
    let mut tenants: BTreeMap<String, TenantLog> = BTreeMap::new();
    for line in lines(reader) {
        match line?.1 {
            ExportLine::Anchor(a) => {
                let log = tenants.entry(a.tenant_id.clone()).or_default();
                if log.anchor.as_ref().is_none_or(|held| held.seq < a.seq) {
                    log.anchor = Some(a);
                }
            }
            ExportLine::Record(r) => tenants
                .entry(r.tenant_id.clone())
                .or_default()
                .records
                .push(*r),
            ExportLine::Checkpoint(c) => tenants
                .entry(c.tenant_id.clone())
                .or_default()
                .checkpoints
                .push(c),
        }
    }
    Ok(tenants)
}

/// The checkpoints a witness holds, each checked against `verifier` (a witness line that does
/// not verify is an error: a witness is only as good as its signatures). Other lines are
/// skipped.
pub fn read_witness(
    reader: impl BufRead,
    verifier: &CheckpointVerifier,
) -> Result<Vec<Checkpoint>, AuditError> {
    let mut checkpoints = Vec::new();
    for line in lines(reader) {
        if let (line, ExportLine::Checkpoint(checkpoint)) = line? {
            if !checkpoint.verify(verifier) {
                return Err(AuditError::UnsignedWitness {
                    line,
                    tenant_id: checkpoint.tenant_id,
                    seq: checkpoint.seq,
                });
            }
            checkpoints.push(checkpoint);
        }
    }
    Ok(checkpoints)
}

/// Adds witnessed checkpoints to the logs they belong to, and a log for every tenant a witness
/// knows and the logs do not (its chain was cut whole).
pub fn add_witnessed(logs: &mut BTreeMap<String, TenantLog>, witnessed: Vec<Checkpoint>) {
    for checkpoint in witnessed {
        logs.entry(checkpoint.tenant_id.clone())
            .or_default()
            .checkpoints
            .push(checkpoint);
    }
}

/// Verifies every tenant's chain in an export.
pub fn verify_export(
    reader: impl BufRead,
    verifier: &CheckpointVerifier,
) -> Result<Vec<Result<Verified, Violation>>, AuditError> {
    Ok(read_export(reader)?
        .iter()
        .map(|(tenant, log)| log.verify(tenant, verifier))
        .collect())
}
