//! Signed checkpoints: `(tenant, seq, hash, time)` signed with Ed25519. A checkpoint pins the
//! chain up to `seq`; a pruned chain starts after its anchor checkpoint.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use routero_core::audit::canonical_json;
use routero_crypto::{CheckpointSigner, CheckpointVerifier};
use serde::{Deserialize, Serialize};

use crate::AuditError;
use crate::chain::{Digest, parse_digest};

/// Domain separation: a checkpoint signature can never be mistaken for another signature.
const CONTEXT: &[u8] = b"routero-audit-checkpoint-v1\n";

/// A signed statement that a tenant's chain had `hash` at `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Tenant.
    pub tenant_id: String,
    /// Sequence number pinned.
    pub seq: u64,
    /// Hash of the record at `seq`, lowercase hex.
    pub hash: String,
    /// When it was signed, RFC 3339 UTC.
    pub time: String,
    /// Ed25519 signature, base64.
    pub signature: String,
}

#[derive(Serialize)]
struct Signed<'a> {
    hash: &'a str,
    seq: u64,
    tenant_id: &'a str,
    time: &'a str,
}

impl Checkpoint {
    fn message(tenant_id: &str, seq: u64, hash: &str, time: &str) -> Result<Vec<u8>, AuditError> {
        let body = canonical_json(&Signed {
            hash,
            seq,
            tenant_id,
            time,
        })
        .map_err(|source| AuditError::Json { line: 0, source })?;
        Ok([CONTEXT, &body].concat())
    }

    /// Signs the chain state `(tenant_id, seq, hash)` at `time`.
    pub fn sign(
        signer: &CheckpointSigner,
        tenant_id: &str,
        seq: u64,
        hash: &Digest,
        time: &str,
    ) -> Result<Self, AuditError> {
        let hash = hex::encode(hash);
        let signature = signer.sign(&Self::message(tenant_id, seq, &hash, time)?);
        Ok(Self {
            tenant_id: tenant_id.to_owned(),
            seq,
            hash,
            time: time.to_owned(),
            signature: STANDARD.encode(signature),
        })
    }

    /// Whether the signature is `verifier`'s over these fields.
    pub fn verify(&self, verifier: &CheckpointVerifier) -> bool {
        let Ok(message) = Self::message(&self.tenant_id, self.seq, &self.hash, &self.time) else {
            return false;
        };
        STANDARD
            .decode(&self.signature)
            .is_ok_and(|signature| verifier.verify(&message, &signature).is_ok())
    }

    /// The pinned hash, parsed.
    pub fn digest(&self) -> Result<Digest, AuditError> {
        parse_digest(&self.hash, "checkpoint hash")
    }
}
