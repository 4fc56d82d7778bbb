//! Walking a tenant's chain and its checkpoints, naming the first bad sequence number and why.

use std::collections::{HashMap, HashSet};

use routero_crypto::CheckpointVerifier;
use serde::Serialize;

use crate::anchor::Anchor;
use crate::chain::{ChainedRecord, Digest, GENESIS};
use crate::checkpoint::Checkpoint;

/// What kind of tampering was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tamper {
    /// The record's contents no longer match its hash.
    Modified,
    /// The record at this sequence number is missing.
    Deleted,
    /// A record stands at another record's place.
    Reordered,
    /// A record that was never written by the chain stands here.
    Inserted,
    /// A checkpoint's signature does not verify.
    BadCheckpointSignature,
    /// The chain is self-consistent but differs from what a valid checkpoint pinned: it was
    /// rewritten at or before this sequence number.
    CheckpointMismatch,
    /// The retention anchor's signature does not verify.
    BadAnchorSignature,
    /// A checkpoint stands where a retention anchor should: someone relabelled it to make the
    /// records below it deletable.
    CheckpointAsAnchor,
    /// The anchor stands for records that were not yet past its retention when it was signed.
    AnchorWithinRetention,
}

impl std::fmt::Display for Tamper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Modified => "modified",
            Self::Deleted => "deleted",
            Self::Reordered => "reordered",
            Self::Inserted => "inserted",
            Self::BadCheckpointSignature => "bad checkpoint signature",
            Self::CheckpointMismatch => "does not match its signed checkpoint",
            Self::BadAnchorSignature => "bad anchor signature",
            Self::CheckpointAsAnchor => "anchor is a checkpoint relabelled (refused)",
            Self::AnchorWithinRetention => "anchor covers records still within retention",
        })
    }
}

/// The first problem found in a tenant's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Tenant.
    pub tenant_id: String,
    /// First bad sequence number.
    pub seq: u64,
    /// Why.
    pub kind: Tamper,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tenant {}: seq {} {}",
            self.tenant_id, self.seq, self.kind
        )
    }
}

/// A chain that verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// Tenant.
    pub tenant_id: String,
    /// Records walked.
    pub records: u64,
    /// Last sequence number (the anchor's when there are no records after it).
    pub last_seq: u64,
    /// Highest sequence number pinned by a valid checkpoint; later records are chained but
    /// not yet signed.
    pub signed_through: u64,
}

/// Verifies one tenant's records, in stored order, against its checkpoints (the database's and
/// any a witness holds: a checkpoint beyond the last record names the tail as deleted).
/// `anchor`, when the chain was pruned, is the signed anchor the remaining records continue
/// from.
pub fn verify_chain(
    tenant_id: &str,
    records: &[ChainedRecord],
    checkpoints: &[Checkpoint],
    anchor: Option<&Anchor>,
    verifier: &CheckpointVerifier,
) -> Result<Verified, Violation> {
    let violation = |seq, kind| Violation {
        tenant_id: tenant_id.to_owned(),
        seq,
        kind,
    };
    let (start_seq, start_hash) = match anchor {
        Some(anchor) if anchor.tenant_id != tenant_id => {
            return Err(violation(anchor.seq, Tamper::BadAnchorSignature));
        }
        Some(anchor) => (
            anchor.seq,
            anchor
                .check(verifier)
                .map_err(|kind| violation(anchor.seq, kind))?,
        ),
        None => (0, GENESIS),
    };

    // A checkpoint (a witness's, say) at the anchor's own place must pin the anchor's hash.
    let pinned_elsewhere = checkpoints.iter().any(|c| {
        c.seq == start_seq
            && c.tenant_id == tenant_id
            && c.verify(verifier)
            && c.digest().ok() != Some(start_hash)
    });
    if anchor.is_some() && pinned_elsewhere {
        return Err(violation(start_seq, Tamper::CheckpointMismatch));
    }
    let walked = walk(records, start_seq, start_hash).map_err(|(seq, kind)| violation(seq, kind));
    let mut signed_through = start_seq;
    let mut checkpoint_violation = None;
    let hashes: HashMap<u64, &str> = records.iter().map(|r| (r.seq, r.hash.as_str())).collect();
    let last_seq = records
        .iter()
        .map(|r| r.seq)
        .max()
        .unwrap_or(start_seq)
        .max(start_seq);
    let mut ordered: Vec<&Checkpoint> = checkpoints.iter().filter(|c| c.seq > start_seq).collect();
    ordered.sort_by_key(|c| c.seq);
    for checkpoint in ordered {
        let found = if !checkpoint.verify(verifier) || checkpoint.tenant_id != tenant_id {
            Some((checkpoint.seq, Tamper::BadCheckpointSignature))
        } else {
            match hashes.get(&checkpoint.seq) {
                // Records the checkpoint vouched for are gone from the end.
                None if checkpoint.seq > last_seq => Some((last_seq + 1, Tamper::Deleted)),
                None => Some((checkpoint.seq, Tamper::Deleted)),
                Some(hash) if *hash != checkpoint.hash => {
                    Some((checkpoint.seq, Tamper::CheckpointMismatch))
                }
                Some(_) => None,
            }
        };
        match found {
            Some((seq, kind)) => {
                checkpoint_violation = Some(violation(seq, kind));
                break;
            }
            None => signed_through = checkpoint.seq,
        }
    }

    match (walked, checkpoint_violation) {
        (Err(chain), Some(checkpoint)) => Err(if checkpoint.seq < chain.seq {
            checkpoint
        } else {
            chain
        }),
        (Err(chain), None) => Err(chain),
        (Ok(_), Some(checkpoint)) => Err(checkpoint),
        (Ok(records), None) => Ok(Verified {
            tenant_id: tenant_id.to_owned(),
            records,
            last_seq,
            signed_through,
        }),
    }
}

/// Walks the records in order; on the first broken link, classifies it from its neighbours.
fn walk(
    records: &[ChainedRecord],
    start_seq: u64,
    start_hash: Digest,
) -> Result<u64, (u64, Tamper)> {
    let stored: HashSet<&str> = records.iter().map(|r| r.hash.as_str()).collect();
    let seqs: HashSet<u64> = records.iter().map(|r| r.seq).collect();
    let mut seen = HashSet::new();
    let mut prev = start_hash;
    let mut expected = start_seq + 1;
    for (i, record) in records.iter().enumerate() {
        let s = expected;
        if record.seq > s {
            // A gap: the missing number stands later (moved) or nowhere (deleted).
            return Err((
                s,
                if seqs.contains(&s) {
                    Tamper::Reordered
                } else {
                    Tamper::Deleted
                },
            ));
        }
        if record.seq < s {
            let kind = if seen.contains(&record.seq) {
                Tamper::Inserted
            } else {
                Tamper::Reordered
            };
            return Err((record.seq, kind));
        }
        seen.insert(record.seq);
        let prev_digest = record.prev_digest().ok();
        let links = prev_digest == Some(prev);
        let self_consistent =
            record.recompute_at(s).ok() == record.digest().ok() && record.digest().is_ok();
        if links && self_consistent {
            prev = record.digest().map_err(|_| (s, Tamper::Modified))?;
            expected += 1;
            continue;
        }
        let next = records.get(i + 1);
        let before = i.checked_sub(1).and_then(|j| records.get(j));
        let kind = if !links && before.is_some_and(|b| record.prev_hash == b.prev_hash) {
            // Two records claim the same predecessor: the one before was slipped in.
            return Err((s - 1, Tamper::Inserted));
        } else if !links && stored.contains(record.prev_hash.as_str()) {
            Tamper::Reordered
        } else if !links
            && record.recompute_at(s + 1).ok() == record.digest().ok()
            && record.digest().is_ok()
        {
            // Verifies one place later: everything after a deleted record was renumbered.
            Tamper::Deleted
        } else if next.is_some_and(|n| n.prev_digest().ok() == Some(prev)) {
            // The next record links over this one.
            Tamper::Inserted
        } else if !links && self_consistent {
            Tamper::Inserted
        } else {
            Tamper::Modified
        };
        return Err((s, kind));
    }
    Ok(expected - start_seq - 1)
}
