//! Linking records into a per-tenant hash chain.

use routero_core::audit::{AuditEvent, canonical_json};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::AuditError;

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// The `prev_hash` of a chain's first record.
pub const GENESIS: Digest = [0; 32];

/// One link of a tenant's chain, as stored and exported. Hashes are lowercase hex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainedRecord {
    /// Tenant whose chain this is.
    pub tenant_id: String,
    /// Position in the chain, from 1, without gaps.
    pub seq: u64,
    /// Hash of the record before (zeros for the first).
    pub prev_hash: String,
    /// `SHA-256(prev_hash ‖ canonical {event, seq, tenant_id})`.
    pub hash: String,
    /// The event.
    pub event: AuditEvent,
}

#[derive(Serialize)]
struct Linked<'a> {
    event: &'a AuditEvent,
    seq: u64,
    tenant_id: &'a str,
}

/// The hash of a record with these contents after `prev`.
pub(crate) fn link(
    prev: &Digest,
    tenant_id: &str,
    seq: u64,
    event: &AuditEvent,
) -> Result<Digest, AuditError> {
    let canonical = canonical_json(&Linked {
        event,
        seq,
        tenant_id,
    })
    .map_err(|source| AuditError::Json { line: 0, source })?;
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(&canonical);
    Ok(hasher.finalize().into())
}

/// Parses a hex digest.
pub(crate) fn parse_digest(hex_text: &str, what: &'static str) -> Result<Digest, AuditError> {
    let bytes = hex::decode(hex_text).map_err(|_| AuditError::Malformed(what))?;
    bytes.try_into().map_err(|_| AuditError::Malformed(what))
}

impl ChainedRecord {
    /// The stored hash, parsed.
    pub fn digest(&self) -> Result<Digest, AuditError> {
        parse_digest(&self.hash, "hash")
    }

    /// The stored previous hash, parsed.
    pub fn prev_digest(&self) -> Result<Digest, AuditError> {
        parse_digest(&self.prev_hash, "prev_hash")
    }

    /// The hash this record's contents give after its stored `prev_hash`, at sequence `seq`.
    pub(crate) fn recompute_at(&self, seq: u64) -> Result<Digest, AuditError> {
        link(&self.prev_digest()?, &self.tenant_id, seq, &self.event)
    }
}

/// The end of a tenant's chain: where the next record goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// Tenant.
    pub tenant_id: String,
    /// Sequence of the last record (0 for an empty chain).
    pub seq: u64,
    /// Hash of the last record ([`GENESIS`] for an empty chain).
    pub hash: Digest,
}

impl ChainHead {
    /// The head of an empty chain.
    pub fn genesis(tenant_id: impl Into<String>) -> Self {
        Self {
            tenant_id: tenant_id.into(),
            seq: 0,
            hash: GENESIS,
        }
    }

    /// Links `event` after the head and advances it.
    pub fn append(&mut self, event: AuditEvent) -> Result<ChainedRecord, AuditError> {
        if event.tenant_id != self.tenant_id {
            return Err(AuditError::WrongTenant {
                chain: self.tenant_id.clone(),
                event: event.tenant_id,
            });
        }
        let seq = self.seq + 1;
        let hash = link(&self.hash, &self.tenant_id, seq, &event)?;
        let record = ChainedRecord {
            tenant_id: self.tenant_id.clone(),
            seq,
            prev_hash: hex::encode(self.hash),
            hash: hex::encode(hash),
            event,
        };
        self.seq = seq;
        self.hash = hash;
        Ok(record)
    }
}
