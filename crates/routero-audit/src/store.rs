//! The append-only audit store, on PostgreSQL or SQLite: chained records, checkpoints and
//! anchors. UPDATE and DELETE are refused by triggers (DELETE allowed only below a signed
//! anchor, for retention); appends are idempotent on event id.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use routero_core::audit::{AuditEvent, EventType, canonical_json};
use routero_crypto::{CheckpointSigner, CheckpointVerifier, MessageKey};
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use crate::AuditError;
use crate::anchor::Anchor;
use crate::chain::{ChainHead, ChainedRecord, Digest, parse_digest};
use crate::checkpoint::Checkpoint;
use crate::verify::{Verified, Violation, verify_chain};

const MIGRATIONS: &[routero_sql::EmbeddedMigration] = &[
    (
        1,
        "audit log",
        include_str!("../../../migrations/postgres/audit/0001_audit_log.sql"),
        include_str!("../../../migrations/sqlite/audit/0001_audit_log.sql"),
    ),
    (
        2,
        "retention",
        include_str!("../../../migrations/postgres/audit/0002_retention.sql"),
        include_str!("../../../migrations/sqlite/audit/0002_retention.sql"),
    ),
    (
        3,
        "export",
        include_str!("../../../migrations/postgres/audit/0003_export.sql"),
        include_str!("../../../migrations/sqlite/audit/0003_export.sql"),
    ),
    (
        4,
        "anchor domain",
        include_str!("../../../migrations/postgres/audit/0004_anchor_domain.sql"),
        include_str!("../../../migrations/sqlite/audit/0004_anchor_domain.sql"),
    ),
    (
        5,
        "record tags",
        include_str!("../../../migrations/postgres/audit/0005_record_tags.sql"),
        include_str!("../../../migrations/sqlite/audit/0005_record_tags.sql"),
    ),
    (
        6,
        "spend ledger",
        include_str!("../../../migrations/postgres/audit/0006_spend_ledger.sql"),
        include_str!("../../../migrations/sqlite/audit/0006_spend_ledger.sql"),
    ),
    (
        7,
        "guardrail findings",
        include_str!("../../../migrations/postgres/audit/0007_guardrail_findings.sql"),
        include_str!("../../../migrations/sqlite/audit/0007_guardrail_findings.sql"),
    ),
];

/// How long a tenant keeps its audit trail unless configured otherwise.
pub const DEFAULT_RETENTION_DAYS: u32 = 365;
/// The shortest retention a tenant may set unless the operator says otherwise.
pub const DEFAULT_MIN_RETENTION_DAYS: u32 = 90;

/// Everything stored for one tenant, in chain order, for verification and export.
#[derive(Debug, Clone, Default)]
pub struct TenantLog {
    /// The anchor the chain continues from after pruning.
    pub anchor: Option<Anchor>,
    /// Records by sequence number.
    pub records: Vec<ChainedRecord>,
    /// Checkpoints by sequence number (and any a witness added).
    pub checkpoints: Vec<Checkpoint>,
}

impl TenantLog {
    /// Verifies this log as `tenant_id`'s chain.
    pub fn verify(
        &self,
        tenant_id: &str,
        verifier: &CheckpointVerifier,
    ) -> Result<Verified, Violation> {
        verify_chain(
            tenant_id,
            &self.records,
            &self.checkpoints,
            self.anchor.as_ref(),
            verifier,
        )
    }
}

/// Filters of an audit query; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Events at or after this RFC 3339 UTC time.
    pub since: Option<String>,
    /// Events before this RFC 3339 UTC time.
    pub until: Option<String>,
    /// Only this event type (`key.created`, …).
    pub action: Option<String>,
    /// Only this actor id.
    pub actor_id: Option<String>,
    /// Only this outcome (`success`, `denied`, `failure`).
    pub outcome: Option<String>,
    /// Only events older than this sequence number (the cursor of the previous page).
    pub before_seq: Option<u64>,
    /// Page size.
    pub limit: u32,
}

/// The audit store.
#[derive(Debug, Clone)]
pub struct AuditStore {
    pub(crate) pool: AnyPool,
    /// No tenant keeps its trail for less (the operator's floor, whatever a tenant asks).
    min_retention_days: u32,
    /// The writer's key tagging the records it stores; only the writer holds one.
    record_key: Option<MessageKey>,
    /// Records per `INSERT` and ids per lookup: large on PostgreSQL; small on SQLite, whose
    /// driver looks each numbered parameter up by name (a statement's cost grows with the
    /// square of its parameters there).
    rows_per_statement: (usize, usize),
    /// Per tenant, the head of the chain as this store left it, while every record through it
    /// was written here or checked by [`AuditStore::written_here`] since: a checkpoint at that
    /// head signs without reading the records back (the hash it signs is one this writer
    /// computed). Anything else found at the head (another writer, a row inserted with the
    /// database's credentials) drops the tenant, and its next checkpoint reads them all.
    vouched: Arc<Mutex<HashMap<String, (u64, Digest)>>>,
}

fn json_error(source: serde_json::Error) -> AuditError {
    AuditError::Json { line: 0, source }
}

fn seq_of(row: &AnyRow) -> Result<u64, AuditError> {
    let seq: i64 = row.try_get("seq")?;
    u64::try_from(seq).map_err(|_| AuditError::Malformed("seq"))
}

fn record_of(row: &AnyRow) -> Result<ChainedRecord, AuditError> {
    let event: String = row.try_get("event")?;
    Ok(ChainedRecord {
        tenant_id: row.try_get("tenant_id")?,
        seq: seq_of(row)?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
        event: serde_json::from_str(&event).map_err(json_error)?,
    })
}

fn anchor_of(row: &AnyRow) -> Result<Anchor, AuditError> {
    // Anchors from before the anchor domain lack these: they load, and fail to verify.
    let retention_days = row
        .try_get::<Option<i64>, _>("retention_days")?
        .unwrap_or(0);
    Ok(Anchor {
        tenant_id: row.try_get("tenant_id")?,
        seq: seq_of(row)?,
        hash: row.try_get("hash")?,
        covered_until: row
            .try_get::<Option<String>, _>("covered_until")?
            .unwrap_or_default(),
        retention_days: u32::try_from(retention_days).unwrap_or(0),
        pruned_at: row.try_get("time")?,
        signature: row.try_get("signature")?,
    })
}

fn checkpoint_of(row: &AnyRow) -> Result<Checkpoint, AuditError> {
    Ok(Checkpoint {
        tenant_id: row.try_get("tenant_id")?,
        seq: seq_of(row)?,
        hash: row.try_get("hash")?,
        time: row.try_get("time")?,
        signature: row.try_get("signature")?,
    })
}

/// Columns of an `audit_records` row.
const RECORD_COLUMNS: usize = 13;

/// One value of a row to insert.
enum Column {
    Text(String),
    Maybe(Option<String>),
    Number(i64),
}

/// `($1, $2, …), (…)`: `rows` rows of `columns` numbered parameters.
fn parameter_rows(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|row| {
            let numbers: Vec<String> = (1..=columns)
                .map(|column| format!("${}", row * columns + column))
                .collect();
            format!("({})", numbers.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn as_i64(seq: u64) -> Result<i64, AuditError> {
    i64::try_from(seq).map_err(|_| AuditError::Malformed("seq"))
}

impl AuditStore {
    /// Opens the store and applies its migrations (ledger `_routero_audit_migrations`).
    pub async fn connect(url: &str) -> Result<Self, AuditError> {
        let pool = routero_sql::open(url, "_routero_audit_migrations", MIGRATIONS).await?;
        let postgres = url.starts_with("postgres");
        Ok(Self {
            pool,
            min_retention_days: DEFAULT_MIN_RETENTION_DAYS,
            record_key: None,
            rows_per_statement: if postgres { (500, 1000) } else { (20, 100) },
            vouched: Arc::default(),
        })
    }

    /// The same store with the operator's minimum retention (at least 1 day).
    pub fn with_min_retention_days(mut self, days: u32) -> Self {
        self.min_retention_days = days.max(1);
        self
    }

    /// The same store tagging the records it appends with `key` and signing checkpoints only
    /// over records carrying its tags (the writer's store).
    pub fn with_record_key(mut self, key: MessageKey) -> Self {
        self.record_key = Some(key);
        self.vouched = Arc::default();
        self
    }

    /// The operator's minimum retention, in days.
    pub fn min_retention_days(&self) -> u32 {
        self.min_retention_days
    }

    /// The head of a tenant's chain: its last record, else its anchor, else genesis.
    async fn head(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        tenant_id: &str,
    ) -> Result<ChainHead, AuditError> {
        let last = sqlx::query(
            "SELECT seq, hash FROM audit_records WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(tenant_id)
        .fetch_optional(&mut **tx)
        .await?;
        let last = match last {
            Some(row) => Some(row),
            None => sqlx::query("SELECT seq, hash FROM audit_anchors WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1")
                .bind(tenant_id)
                .fetch_optional(&mut **tx)
                .await?,
        };
        Ok(match last {
            Some(row) => ChainHead {
                tenant_id: tenant_id.to_owned(),
                seq: seq_of(&row)?,
                hash: parse_digest(&row.try_get::<String, _>("hash")?, "hash")?,
            },
            None => ChainHead::genesis(tenant_id),
        })
    }

    /// Chains and stores `events` in one transaction. Events already stored (same event id)
    /// are skipped, so redelivery never duplicates. Returns the records written. With a
    /// record key (the writer's store), each record carries its tag. The batch costs a few
    /// statements, not two per event: the stored ids are asked in lists, the records written
    /// many rows to an `INSERT`.
    pub async fn append(&self, events: &[AuditEvent]) -> Result<Vec<ChainedRecord>, AuditError> {
        let mut tx = self.pool.begin().await?;
        let (rows_per_insert, ids_per_query) = self.rows_per_statement;
        let stored = Self::stored_ids(&mut tx, events, ids_per_query).await?;
        let mut taken: HashSet<&str> = HashSet::with_capacity(events.len());
        let mut heads: HashMap<String, ChainHead> = HashMap::new();
        let mut starts: HashMap<String, (u64, Digest)> = HashMap::new();
        let mut rows = Vec::with_capacity(events.len());
        let mut written = Vec::with_capacity(events.len());
        let now = routero_core::unix_now();
        for event in events {
            if stored.contains(event.event_id.as_str()) || !taken.insert(&event.event_id) {
                continue;
            }
            if !heads.contains_key(&event.tenant_id) {
                let head = Self::head(&mut tx, &event.tenant_id).await?;
                starts.insert(event.tenant_id.clone(), (head.seq, head.hash));
                heads.insert(event.tenant_id.clone(), head);
            }
            let head = heads
                .get_mut(&event.tenant_id)
                .ok_or(AuditError::Malformed("chain head"))?;
            let canonical = canonical_json(event).map_err(json_error)?;
            let record = head.append_canonical(event.clone(), &canonical)?;
            let canonical =
                String::from_utf8(canonical).map_err(|_| AuditError::Malformed("event"))?;
            rows.push([
                Column::Text(record.tenant_id.clone()),
                Column::Number(as_i64(record.seq)?),
                Column::Text(event.event_id.clone()),
                Column::Text(event.time.clone()),
                Column::Text(wire_name(&event.action)?),
                Column::Text(wire_name(&event.actor.kind)?),
                Column::Maybe(event.actor.id.clone()),
                Column::Text(wire_name(&event.outcome)?),
                Column::Text(record.prev_hash.clone()),
                Column::Text(record.hash.clone()),
                Column::Text(canonical),
                Column::Number(now),
                Column::Maybe(self.record_key.as_ref().map(|key| tag(key, &record.hash))),
            ]);
            written.push(record);
        }
        for chunk in rows.chunks(rows_per_insert) {
            let sql = format!(
                "INSERT INTO audit_records (tenant_id, seq, event_id, time, action, actor_kind, \
                 actor_id, outcome, prev_hash, hash, event, written_at, mac) VALUES {}",
                parameter_rows(chunk.len(), RECORD_COLUMNS)
            );
            // Built of numbered parameters only: every value is bound.
            let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
            for column in chunk.iter().flatten() {
                insert = match column {
                    Column::Text(text) => insert.bind(text),
                    Column::Maybe(text) => insert.bind(text),
                    Column::Number(number) => insert.bind(number),
                };
            }
            insert.execute(&mut *tx).await?;
        }
        for record in &written {
            match record.event.action {
                EventType::SpendDebited => {
                    crate::spend::add_to_ledger(&mut tx, &record.event).await?
                }
                EventType::RequestGuardrailTriggered => {
                    crate::findings::add_to_ledger(&mut tx, &record.event).await?;
                }
                _ => {}
            }
        }
        tx.commit().await?;
        let mut vouched = self.vouched();
        for (tenant, head) in heads {
            if vouched.get(&tenant) == starts.get(&tenant) {
                vouched.insert(tenant, (head.seq, head.hash));
            } else {
                vouched.remove(&tenant);
            }
        }
        Ok(written)
    }

    fn vouched(&self) -> MutexGuard<'_, HashMap<String, (u64, Digest)>> {
        // Every update is a whole insert or remove: a panic elsewhere cannot leave it half-done.
        self.vouched.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The ids among `events`' that are already stored, asked `ids_per_query` at a time.
    async fn stored_ids(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        events: &[AuditEvent],
        ids_per_query: usize,
    ) -> Result<HashSet<String>, AuditError> {
        let mut stored = HashSet::new();
        for chunk in events.chunks(ids_per_query) {
            let sql = format!(
                "SELECT event_id FROM audit_records WHERE event_id IN {}",
                parameter_rows(1, chunk.len())
            );
            // Built of numbered parameters only: every id is bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for event in chunk {
                query = query.bind(&event.event_id);
            }
            for row in query.fetch_all(&mut **tx).await? {
                stored.insert(row.try_get::<String, _>("event_id")?);
            }
        }
        Ok(stored)
    }

    /// Where a check of `tenant_id`'s records below `head` starts: its newest checkpoint or
    /// anchor at or below `head` whose signature is `verifier`'s (a row inserted with the
    /// database's credentials is passed over; of the newest 64 of each), else genesis.
    async fn signed_start(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        verifier: &CheckpointVerifier,
        tenant_id: &str,
        head: u64,
    ) -> Result<(u64, String), AuditError> {
        let checkpoints = sqlx::query(
            "SELECT tenant_id, seq, hash, time, signature FROM audit_checkpoints \
             WHERE tenant_id = $1 AND seq <= $2 ORDER BY seq DESC LIMIT 64",
        )
        .bind(tenant_id)
        .bind(as_i64(head)?)
        .fetch_all(&mut **tx)
        .await?;
        let anchors = sqlx::query(
            "SELECT tenant_id, seq, hash, time, signature, covered_until, retention_days \
             FROM audit_anchors WHERE tenant_id = $1 AND seq <= $2 ORDER BY seq DESC LIMIT 64",
        )
        .bind(tenant_id)
        .bind(as_i64(head)?)
        .fetch_all(&mut **tx)
        .await?;
        let mut start = (0, hex::encode(crate::chain::GENESIS));
        for row in &checkpoints {
            let checkpoint = checkpoint_of(row)?;
            if checkpoint.verify(verifier) {
                start = (checkpoint.seq, checkpoint.hash);
                break;
            }
        }
        for row in &anchors {
            let anchor = anchor_of(row)?;
            if anchor.seq > start.0 && anchor.check(verifier).is_ok() {
                start = (anchor.seq, anchor.hash);
                break;
            }
        }
        Ok(start)
    }

    /// Whether the records after `tenant_id`'s last signed checkpoint (or anchor) link up to
    /// `head`, its sequence number and its hash, and carry this store's record tags: `Err(seq)`
    /// names the first that does not (inserted, altered, or not written by this writer).
    async fn written_here(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        (key, verifier): (&MessageKey, &CheckpointVerifier),
        tenant_id: &str,
        head: &ChainHead,
    ) -> Result<Result<(), u64>, AuditError> {
        let (mut seq, mut hash) = Self::signed_start(tx, verifier, tenant_id, head.seq).await?;
        let rows = sqlx::query(
            "SELECT tenant_id, seq, prev_hash, hash, event, mac FROM audit_records \
             WHERE tenant_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq",
        )
        .bind(tenant_id)
        .bind(as_i64(seq)?)
        .bind(as_i64(head.seq)?)
        .fetch_all(&mut **tx)
        .await?;
        for row in &rows {
            let record = record_of(row)?;
            let mac: Option<String> = row.try_get("mac")?;
            let intact = record.seq == seq + 1
                && record.prev_hash == hash
                && record.recompute_at(record.seq).ok() == record.digest().ok()
                && mac.is_some_and(|mac| {
                    key.verify_parts(
                        &[record.hash.as_bytes()],
                        &hex::decode(mac).unwrap_or_default(),
                    )
                    .is_ok()
                });
            if !intact {
                return Ok(Err(seq + 1));
            }
            (seq, hash) = (record.seq, record.hash);
        }
        // The records read must end at the head that is signed (read apart from them).
        Ok(if seq == head.seq && hash == hex::encode(head.hash) {
            Ok(())
        } else {
            Err(seq + 1)
        })
    }

    /// Signs and stores a checkpoint at each given tenant's head, unless one is already there.
    pub async fn checkpoint(
        &self,
        signer: &CheckpointSigner,
        tenants: impl IntoIterator<Item = &str>,
        time: &str,
    ) -> Result<Vec<Checkpoint>, AuditError> {
        let mut tx = self.pool.begin().await?;
        let mut signed = Vec::new();
        let verifier = signer.verifier();
        for tenant in tenants {
            let head = Self::head(&mut tx, tenant).await?;
            if head.seq == 0 {
                continue;
            }
            let vouched = self.vouched().get(tenant) == Some(&(head.seq, head.hash));
            if let Some(key) = &self.record_key
                && !vouched
                && let Err(seq) =
                    Self::written_here(&mut tx, (key, &verifier), tenant, &head).await?
            {
                // Never sign what this writer did not write: the database was changed.
                tracing::error!(
                    tenant,
                    seq,
                    "audit record not written by this writer (inserted or altered in the database); its chain is not signed"
                );
                continue;
            }
            let exists = sqlx::query(
                "SELECT 1 AS one FROM audit_checkpoints WHERE tenant_id = $1 AND seq = $2",
            )
            .bind(tenant)
            .bind(as_i64(head.seq)?)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
            if exists {
                continue;
            }
            let checkpoint = Checkpoint::sign(signer, tenant, head.seq, &head.hash, time)?;
            sqlx::query(
                "INSERT INTO audit_checkpoints (tenant_id, seq, hash, time, signature) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&checkpoint.tenant_id)
            .bind(as_i64(checkpoint.seq)?)
            .bind(&checkpoint.hash)
            .bind(&checkpoint.time)
            .bind(&checkpoint.signature)
            .execute(&mut *tx)
            .await?;
            signed.push(checkpoint);
        }
        tx.commit().await?;
        // Vouched for only once signed and committed: the head is one this writer has read
        // back whole or chained itself since.
        if self.record_key.is_some() {
            let mut vouched = self.vouched();
            for checkpoint in &signed {
                vouched.insert(
                    checkpoint.tenant_id.clone(),
                    (checkpoint.seq, checkpoint.digest()?),
                );
            }
        }
        Ok(signed)
    }

    /// Tenants with an audit chain.
    pub async fn tenants(&self) -> Result<Vec<String>, AuditError> {
        sqlx::query(
            "SELECT tenant_id FROM audit_records UNION SELECT tenant_id FROM audit_anchors ORDER BY tenant_id",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| Ok(row.try_get("tenant_id")?))
        .collect()
    }

    /// One page of a tenant's events, newest first.
    pub async fn query(
        &self,
        tenant_id: &str,
        query: &EventQuery,
    ) -> Result<Vec<ChainedRecord>, AuditError> {
        let rows = sqlx::query(
            "SELECT tenant_id, seq, prev_hash, hash, event FROM audit_records WHERE tenant_id = $1 \
             AND ($2 IS NULL OR time >= $2) AND ($3 IS NULL OR time < $3) AND ($4 IS NULL OR action = $4) \
             AND ($5 IS NULL OR actor_id = $5) AND ($6 IS NULL OR outcome = $6) AND ($7 IS NULL OR seq < $7) \
             ORDER BY seq DESC LIMIT $8",
        )
        .bind(tenant_id)
        .bind(&query.since)
        .bind(&query.until)
        .bind(&query.action)
        .bind(&query.actor_id)
        .bind(&query.outcome)
        .bind(query.before_seq.map(as_i64).transpose()?)
        .bind(i64::from(query.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record_of).collect()
    }

    /// Refuses a retention below the operator's minimum ([`AuditError::RetentionTooShort`]).
    pub fn check_retention(&self, days: u32) -> Result<(), AuditError> {
        if days < self.min_retention_days {
            return Err(AuditError::RetentionTooShort {
                minimum: self.min_retention_days,
            });
        }
        Ok(())
    }

    /// How many days a tenant keeps its audit trail, as its signed chain says: its latest
    /// `audit.retention_changed` record a checkpoint covers, else the retention its latest
    /// anchor was pruned under, else the default; never below the operator's minimum.
    pub async fn retention(&self, tenant_id: &str) -> Result<u32, AuditError> {
        let changed = sqlx::query(
            "SELECT tenant_id, seq, prev_hash, hash, event FROM audit_records \
             WHERE tenant_id = $1 AND action = 'audit.retention_changed' \
             AND seq <= (SELECT COALESCE(MAX(seq), 0) FROM audit_checkpoints WHERE tenant_id = $1) \
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(record_of)
        .transpose()?;
        let anchor = self.latest_anchor(tenant_id).await?;
        Ok(self.retention_in(changed.iter(), anchor.as_ref()))
    }

    /// The retention `records` (in chain order) and `anchor` set, never below the minimum.
    fn retention_in<'a>(
        &self,
        records: impl Iterator<Item = &'a ChainedRecord>,
        anchor: Option<&Anchor>,
    ) -> u32 {
        let set = records
            .filter(|r| r.event.action == routero_core::audit::EventType::AuditRetentionChanged)
            .last()
            .and_then(|r| r.event.details.get("days")?.as_u64())
            .and_then(|days| u32::try_from(days).ok());
        set.or(anchor.map(|a| a.retention_days))
            .unwrap_or(DEFAULT_RETENTION_DAYS)
            .max(self.min_retention_days)
    }

    /// Removes a tenant's oldest records that are all past its retention at `now`, behind a
    /// signed anchor at the last one removed. Nothing is taken on the database's word: the
    /// tenant's chain is verified first (a chain that does not verify is not pruned), the
    /// retention is the one its chain records, the records' times are their hashed events'
    /// own, and only records a checkpoint signed are removed. Returns the anchor, or `None`
    /// when nothing was old enough.
    pub async fn prune(
        &self,
        signer: &CheckpointSigner,
        tenant_id: &str,
        now: SystemTime,
    ) -> Result<Option<Anchor>, AuditError> {
        let log = self.load(tenant_id).await?;
        let verified = log
            .verify(tenant_id, &signer.verifier())
            .map_err(AuditError::Unverified)?;
        // Only what a checkpoint signed: a record forged at the unsigned head sets nothing.
        let signed = || {
            log.records
                .iter()
                .take_while(|r| r.seq <= verified.signed_through)
        };
        let days = self.retention_in(signed(), log.anchor.as_ref());
        let cutoff = now
            .checked_sub(std::time::Duration::from_secs(u64::from(days) * 86_400))
            .unwrap_or(UNIX_EPOCH);
        // The longest prefix entirely older than the cutoff: never a newer event out of order.
        let old = |record: &&ChainedRecord| {
            humantime::parse_rfc3339(&record.event.time).is_ok_and(|time| time < cutoff)
        };
        let Some(last) = signed().take_while(old).last() else {
            return Ok(None);
        };
        let anchor = Anchor::sign(
            signer,
            tenant_id,
            (last.seq, &last.digest()?, &last.event.time),
            days,
            &humantime::format_rfc3339_millis(now).to_string(),
        )?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO audit_anchors (tenant_id, seq, hash, time, signature, covered_until, retention_days) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&anchor.tenant_id)
        .bind(as_i64(anchor.seq)?)
        .bind(&anchor.hash)
        .bind(&anchor.pruned_at)
        .bind(&anchor.signature)
        .bind(&anchor.covered_until)
        .bind(i64::from(anchor.retention_days))
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM audit_records WHERE tenant_id = $1 AND seq <= $2")
            .bind(tenant_id)
            .bind(as_i64(anchor.seq)?)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(anchor))
    }

    /// Prunes every tenant's trail to its retention period at `now`; returns the anchors signed.
    /// A tenant whose chain does not verify is left whole and reported.
    pub async fn prune_expired(
        &self,
        signer: &CheckpointSigner,
        now: SystemTime,
    ) -> Result<Vec<Anchor>, AuditError> {
        let mut anchors = Vec::new();
        for tenant in self.tenants().await? {
            match self.prune(signer, &tenant, now).await {
                Ok(Some(anchor)) => anchors.push(anchor),
                Ok(None) => {}
                Err(AuditError::Unverified(violation)) => {
                    tracing::error!(%violation, "audit chain does not verify; not pruned");
                }
                Err(error) => return Err(error),
            }
        }
        Ok(anchors)
    }

    /// The last sequence number `sink` delivered for a tenant (0: nothing yet).
    pub async fn export_cursor(&self, sink: &str, tenant_id: &str) -> Result<u64, AuditError> {
        let row =
            sqlx::query("SELECT seq FROM audit_export_cursors WHERE sink = $1 AND tenant_id = $2")
                .bind(sink)
                .bind(tenant_id)
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map_or(Ok(0), seq_of)
    }

    /// Records tenant records after `after` (up to `limit`), in order, for export.
    pub async fn records_after(
        &self,
        tenant_id: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<ChainedRecord>, AuditError> {
        sqlx::query(
            "SELECT tenant_id, seq, prev_hash, hash, event FROM audit_records \
             WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(tenant_id)
        .bind(as_i64(after)?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(record_of)
        .collect()
    }

    /// A tenant's checkpoints with `after < seq <= through`, in order, for export.
    pub async fn checkpoints_between(
        &self,
        tenant_id: &str,
        after: u64,
        through: u64,
    ) -> Result<Vec<Checkpoint>, AuditError> {
        sqlx::query(
            "SELECT tenant_id, seq, hash, time, signature FROM audit_checkpoints \
             WHERE tenant_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq",
        )
        .bind(tenant_id)
        .bind(as_i64(after)?)
        .bind(as_i64(through)?)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(checkpoint_of)
        .collect()
    }

    /// Moves `sink`'s cursor for a tenant to `seq`; with `dead`, first records those sequence
    /// numbers as given up on, with the attempts made and the last error.
    pub async fn advance_export(
        &self,
        sink: &str,
        tenant_id: &str,
        seq: u64,
        dead: Option<(&[u64], u32, &str)>,
    ) -> Result<(), AuditError> {
        let mut tx = self.pool.begin().await?;
        if let Some((seqs, attempts, error)) = dead {
            for dead_seq in seqs {
                sqlx::query(
                    "INSERT INTO audit_dead_letters (sink, tenant_id, seq, attempts, last_error, failed_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(sink)
                .bind(tenant_id)
                .bind(as_i64(*dead_seq)?)
                .bind(i64::from(attempts))
                .bind(error)
                .bind(routero_core::unix_now())
                .execute(&mut *tx)
                .await?;
            }
        }
        sqlx::query(
            "INSERT INTO audit_export_cursors (sink, tenant_id, seq, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (sink, tenant_id) DO UPDATE SET seq = $3, updated_at = $4",
        )
        .bind(sink)
        .bind(tenant_id)
        .bind(as_i64(seq)?)
        .bind(routero_core::unix_now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sequence numbers `sink` gave up on for a tenant, with the attempts made.
    pub async fn dead_letters(
        &self,
        sink: &str,
        tenant_id: &str,
    ) -> Result<Vec<(u64, u32)>, AuditError> {
        sqlx::query("SELECT seq, attempts FROM audit_dead_letters WHERE sink = $1 AND tenant_id = $2 ORDER BY seq")
            .bind(sink)
            .bind(tenant_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                let attempts = u32::try_from(row.try_get::<i64, _>("attempts")?).map_err(|_| AuditError::Malformed("attempts"))?;
                Ok((seq_of(row)?, attempts))
            })
            .collect()
    }

    async fn latest_anchor(&self, tenant_id: &str) -> Result<Option<Anchor>, AuditError> {
        sqlx::query(
            "SELECT tenant_id, seq, hash, time, signature, covered_until, retention_days \
             FROM audit_anchors WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(anchor_of)
        .transpose()
    }

    /// A tenant's anchor, records and checkpoints, in sequence order.
    pub async fn load(&self, tenant_id: &str) -> Result<TenantLog, AuditError> {
        let records = sqlx::query(
            "SELECT tenant_id, seq, prev_hash, hash, event FROM audit_records WHERE tenant_id = $1 ORDER BY seq",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(record_of)
        .collect::<Result<Vec<_>, AuditError>>()?;
        let checkpoints = sqlx::query(
            "SELECT tenant_id, seq, hash, time, signature FROM audit_checkpoints WHERE tenant_id = $1 ORDER BY seq",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(checkpoint_of)
        .collect::<Result<Vec<_>, AuditError>>()?;
        let anchor = self.latest_anchor(tenant_id).await?;
        Ok(TenantLog {
            anchor,
            records,
            checkpoints,
        })
    }
}

/// A record's tag under the writer's key, hex.
fn tag(key: &MessageKey, hash: &str) -> String {
    hex::encode(key.tag(hash.as_bytes()))
}

/// The wire name of an enum that serializes as a string (`key.created`, `admin_key`, …).
fn wire_name<T: serde::Serialize>(value: &T) -> Result<String, AuditError> {
    match serde_json::to_value(value).map_err(json_error)? {
        serde_json::Value::String(name) => Ok(name),
        _ => Err(AuditError::Malformed("enum name")),
    }
}
