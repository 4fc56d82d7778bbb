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

/// The hash of a record with these contents after `prev`.
pub(crate) fn link(
    prev: &Digest,
    tenant_id: &str,
    seq: u64,
    event: &AuditEvent,
) -> Result<Digest, AuditError> {
    let canonical = canonical_json(event).map_err(|source| AuditError::Json { line: 0, source })?;
    link_canonical(prev, tenant_id, seq, &canonical)
}

/// [`link`] from the event's canonical JSON: the canonical JSON of `{event, seq, tenant_id}`
/// (keys in that order, compact) is fed to the hash in pieces around the event's bytes, so an
/// event is made canonical once for its hash and its stored form.
pub(crate) fn link_canonical(
    prev: &Digest,
    tenant_id: &str,
    seq: u64,
    canonical_event: &[u8],
) -> Result<Digest, AuditError> {
    let tenant =
        serde_json::to_vec(tenant_id).map_err(|source| AuditError::Json { line: 0, source })?;
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(b"{\"event\":");
    hasher.update(canonical_event);
    hasher.update(b",\"seq\":");
    hasher.update(seq.to_string().as_bytes());
    hasher.update(b",\"tenant_id\":");
    hasher.update(&tenant);
    hasher.update(b"}");
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
        let canonical =
            canonical_json(&event).map_err(|source| AuditError::Json { line: 0, source })?;
        self.append_canonical(event, &canonical)
    }

    /// [`ChainHead::append`] of an event whose canonical JSON is `canonical`.
    pub(crate) fn append_canonical(
        &mut self,
        event: AuditEvent,
        canonical: &[u8],
    ) -> Result<ChainedRecord, AuditError> {
        if event.tenant_id != self.tenant_id {
            return Err(AuditError::WrongTenant {
                chain: self.tenant_id.clone(),
                event: event.tenant_id,
            });
        }
        let seq = self.seq + 1;
        let hash = link_canonical(&self.hash, &self.tenant_id, seq, canonical)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use routero_core::audit::{ActorKind, EventType, Outcome};

    /// What the chain has always hashed: the canonical JSON of the whole record.
    #[derive(Serialize)]
    struct Linked<'a> {
        event: &'a AuditEvent,
        seq: u64,
        tenant_id: &'a str,
    }

    #[test]
    fn hashing_in_pieces_is_hashing_the_canonical_record() {
        let mut event = AuditEvent {
            event_id: "0190a0a0-0000-7000-8000-000000000001".into(),
            tenant_id: "t\"é\u{1}/<x>".into(),
            time: "2026-11-22T12:00:00.000Z".into(),
            actor: routero_core::audit::Actor {
                kind: ActorKind::VirtualKey,
                id: Some("key_1".into()),
                source_ip: None,
                user_agent: Some("ü\n\t".into()),
            },
            action: EventType::RequestRouted,
            resource: routero_core::audit::Resource {
                kind: "model".into(),
                id: Some("m".into()),
            },
            outcome: Outcome::Success,
            reason_code: None,
            request_id: Some("req".into()),
            policy_version: None,
            details: serde_json::Map::new(),
        };
        event
            .details
            .insert("z".into(), serde_json::Value::from(1.5));
        event.details.insert(
            "a".into(),
            serde_json::json!({"y": [1, "\u{2028}"], "b": null}),
        );
        let tenant = event.tenant_id.clone();
        for seq in [1, 9, 10, 4_294_967_296, u64::MAX] {
            let whole = canonical_json(&Linked {
                event: &event,
                seq,
                tenant_id: &tenant,
            })
            .unwrap();
            let expected: Digest = Sha256::new()
                .chain_update([7u8; 32])
                .chain_update(&whole)
                .finalize()
                .into();
            assert_eq!(
                link(&[7; 32], &tenant, seq, &event).unwrap(),
                expected,
                "seq {seq}"
            );
        }
    }
}
