//! The NDJSON export: one JSON object per line, records and checkpoints of any tenants, in
//! chain order per tenant. Verifiable with the public key alone, no database.

use std::collections::BTreeMap;
use std::io::BufRead;

use routero_crypto::CheckpointVerifier;
use serde::{Deserialize, Serialize};

use crate::AuditError;
use crate::chain::ChainedRecord;
use crate::checkpoint::Checkpoint;
use crate::verify::{Verified, Violation, verify_chain};

/// One line of an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExportLine {
    /// The signed checkpoint a pruned chain continues from.
    Anchor(Checkpoint),
    /// A chained record.
    Record(Box<ChainedRecord>),
    /// A signed checkpoint.
    Checkpoint(Checkpoint),
}

#[derive(Default)]
struct TenantLines {
    anchor: Option<Checkpoint>,
    records: Vec<ChainedRecord>,
    checkpoints: Vec<Checkpoint>,
}

/// Verifies every tenant's chain in an export. Lines that do not parse are errors (with their
/// line number); tampering is reported per tenant as a [`Violation`].
pub fn verify_export(
    reader: impl BufRead,
    verifier: &CheckpointVerifier,
) -> Result<Vec<Result<Verified, Violation>>, AuditError> {
    let mut tenants: BTreeMap<String, TenantLines> = BTreeMap::new();
    for (index, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: ExportLine =
            serde_json::from_str(&line).map_err(|source| AuditError::Json {
                line: index + 1,
                source,
            })?;
        match parsed {
            ExportLine::Anchor(c) => {
                let lines = tenants.entry(c.tenant_id.clone()).or_default();
                lines.anchor = Some(c);
            }
            ExportLine::Record(r) => tenants
                .entry(r.tenant_id.clone())
                .or_default()
                .records
                .push(*r),
            ExportLine::Checkpoint(c) => {
                tenants
                    .entry(c.tenant_id.clone())
                    .or_default()
                    .checkpoints
                    .push(c);
            }
        }
    }
    Ok(tenants
        .iter()
        .map(|(tenant, lines)| {
            verify_chain(
                tenant,
                &lines.records,
                &lines.checkpoints,
                lines.anchor.as_ref(),
                verifier,
            )
        })
        .collect())
}
