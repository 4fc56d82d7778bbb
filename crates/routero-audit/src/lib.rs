//! The tamper-evident audit log, as a library: the audit writer appends with [`ChainHead`],
//! signs [`Checkpoint`]s, and anyone with the public key verifies with [`verify_chain`] or
//! [`verify_export`], from the database or from an exported NDJSON file.
//!
//! Each tenant has its own chain: `hash = SHA-256(prev_hash ‖ canonical record)`, where the
//! canonical record is the canonical JSON of `{event, seq, tenant_id}`.
#![forbid(unsafe_code)]

mod chain;
mod checkpoint;
mod error;
mod export;
mod store;
mod verify;

pub use chain::{ChainHead, ChainedRecord, Digest, GENESIS};
pub use checkpoint::Checkpoint;
pub use error::AuditError;
pub use export::{ExportLine, verify_export};
pub use store::{AuditStore, DEFAULT_RETENTION_DAYS, EventQuery, TenantLog};
pub use verify::{Tamper, Verified, Violation, verify_chain};
