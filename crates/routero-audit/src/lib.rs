//! The tamper-evident audit log, as a library: the audit writer appends with [`ChainHead`],
//! signs [`Checkpoint`]s (published to witnesses outside the database) and, when it prunes,
//! [`Anchor`]s in their own signing domain; anyone with the public key verifies with
//! [`verify_chain`] or [`verify_export`], from the database or from an exported NDJSON file,
//! against the checkpoints witnesses hold ([`read_witness`]) so a cut tail is named.
//!
//! Each tenant has its own chain: `hash = SHA-256(prev_hash ‖ canonical record)`, where the
//! canonical record is the canonical JSON of `{event, seq, tenant_id}`.
#![forbid(unsafe_code)]

mod anchor;
mod chain;
mod checkpoint;
mod error;
mod export;
mod findings;
mod ledger;
mod spend;
mod store;
mod verify;

pub use anchor::Anchor;
pub use chain::{ChainHead, ChainedRecord, Digest, GENESIS};
pub use checkpoint::Checkpoint;
pub use error::AuditError;
pub use export::{ExportLine, add_witnessed, read_export, read_witness, verify_export};
pub use findings::FindingsRow;
pub use ledger::{Interval, MAX_LINES_OVER_TIME};
pub use spend::{SpendGroup, SpendRow};
pub use store::{
    AuditStore, DEFAULT_MIN_RETENTION_DAYS, DEFAULT_RETENTION_DAYS, EventQuery, TenantLog,
};
pub use verify::{Tamper, Verified, Violation, verify_chain};
