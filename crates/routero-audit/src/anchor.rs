//! Retention anchors: what pruning leaves where the oldest records were. An anchor is signed in
//! its own domain (never mistaken for a checkpoint) over the tenant, the last record removed
//! (its sequence number, hash and event time), the retention in force and the time of the
//! prune, so a verifier can tell that it only stands for records that were past retention.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use routero_core::audit::canonical_json;
use routero_crypto::{CheckpointSigner, CheckpointVerifier};
use serde::{Deserialize, Serialize};

use crate::AuditError;
use crate::chain::{Digest, parse_digest};
use crate::checkpoint::Checkpoint;
use crate::verify::Tamper;

/// Domain separation: distinct from the checkpoints' context, so no checkpoint signature is
/// ever an anchor signature.
const CONTEXT: &[u8] = b"routero-audit-anchor-v1\n";

/// A signed statement that a tenant's records through `seq` were removed by retention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anchor {
    /// Tenant.
    pub tenant_id: String,
    /// Sequence number of the last record removed; the chain continues at `seq + 1`.
    pub seq: u64,
    /// Hash of the record at `seq`, lowercase hex.
    pub hash: String,
    /// Event time of the record at `seq`, RFC 3339 UTC.
    pub covered_until: String,
    /// The tenant's retention in days when it was pruned.
    pub retention_days: u32,
    /// When it was pruned (and the anchor signed), RFC 3339 UTC.
    pub pruned_at: String,
    /// Ed25519 signature, base64.
    pub signature: String,
}

#[derive(Serialize)]
struct Signed<'a> {
    covered_until: &'a str,
    hash: &'a str,
    pruned_at: &'a str,
    retention_days: u32,
    seq: u64,
    tenant_id: &'a str,
}

impl Anchor {
    fn message(&self) -> Result<Vec<u8>, AuditError> {
        let body = canonical_json(&Signed {
            covered_until: &self.covered_until,
            hash: &self.hash,
            pruned_at: &self.pruned_at,
            retention_days: self.retention_days,
            seq: self.seq,
            tenant_id: &self.tenant_id,
        })
        .map_err(|source| AuditError::Json { line: 0, source })?;
        Ok([CONTEXT, &body].concat())
    }

    /// Signs an anchor for `tenant_id`'s records through `seq` (hash `hash`, event time
    /// `covered_until`), removed under `retention_days` at `pruned_at`.
    pub fn sign(
        signer: &CheckpointSigner,
        tenant_id: &str,
        (seq, hash, covered_until): (u64, &Digest, &str),
        retention_days: u32,
        pruned_at: &str,
    ) -> Result<Self, AuditError> {
        let mut anchor = Self {
            tenant_id: tenant_id.to_owned(),
            seq,
            hash: hex::encode(hash),
            covered_until: covered_until.to_owned(),
            retention_days,
            pruned_at: pruned_at.to_owned(),
            signature: String::new(),
        };
        anchor.signature = STANDARD.encode(signer.sign(&anchor.message()?));
        Ok(anchor)
    }

    /// The hash the chain continues from, once the anchor is shown genuine: signed by
    /// `verifier` as an anchor (a checkpoint's signature is named as such), and covering only
    /// records that were older than its retention when it was pruned.
    pub fn check(&self, verifier: &CheckpointVerifier) -> Result<Digest, Tamper> {
        let signed = self.message().ok().is_some_and(|message| {
            STANDARD
                .decode(&self.signature)
                .is_ok_and(|signature| verifier.verify(&message, &signature).is_ok())
        });
        if !signed {
            return Err(if self.as_checkpoint().verify(verifier) {
                Tamper::CheckpointAsAnchor
            } else {
                Tamper::BadAnchorSignature
            });
        }
        let retention = Duration::from_secs(u64::from(self.retention_days) * 86_400);
        let covered = humantime::parse_rfc3339(&self.covered_until).ok();
        let pruned = humantime::parse_rfc3339(&self.pruned_at).ok();
        match (covered, pruned) {
            (Some(covered), Some(pruned)) if covered + retention <= pruned => {}
            _ => return Err(Tamper::AnchorWithinRetention),
        }
        parse_digest(&self.hash, "anchor hash").map_err(|_| Tamper::BadAnchorSignature)
    }

    /// The checkpoint these fields and signature would be, if someone relabelled one.
    fn as_checkpoint(&self) -> Checkpoint {
        Checkpoint {
            tenant_id: self.tenant_id.clone(),
            seq: self.seq,
            hash: self.hash.clone(),
            time: self.pruned_at.clone(),
            signature: self.signature.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: Digest = [7; 32];

    fn anchor(signer: &CheckpointSigner, covered_until: &str, days: u32) -> Anchor {
        Anchor::sign(
            signer,
            "t",
            (6, &HASH, covered_until),
            days,
            "2026-11-29T00:00:00.000Z",
        )
        .unwrap()
    }

    #[test]
    fn an_anchor_verifies_only_in_its_own_domain_and_past_its_retention() {
        let signer = CheckpointSigner::generate().unwrap();
        let key = signer.verifier();
        let good = anchor(&signer, "2026-08-01T00:00:00.000Z", 90);
        assert_eq!(good.check(&key), Ok(HASH));

        let young = anchor(&signer, "2026-11-01T00:00:00.000Z", 90);
        assert_eq!(young.check(&key), Err(Tamper::AnchorWithinRetention));

        let mut widened = good.clone();
        widened.seq = 60;
        assert_eq!(widened.check(&key), Err(Tamper::BadAnchorSignature));
        let mut shortened = good.clone();
        shortened.retention_days = 1;
        assert_eq!(shortened.check(&key), Err(Tamper::BadAnchorSignature));

        let checkpoint =
            Checkpoint::sign(&signer, "t", 6, &HASH, "2026-11-29T00:00:00.000Z").unwrap();
        let relabelled = Anchor {
            signature: checkpoint.signature,
            ..good.clone()
        };
        assert_eq!(relabelled.check(&key), Err(Tamper::CheckpointAsAnchor));

        let other = CheckpointSigner::generate().unwrap().verifier();
        assert_eq!(good.check(&other), Err(Tamper::BadAnchorSignature));
    }
}
