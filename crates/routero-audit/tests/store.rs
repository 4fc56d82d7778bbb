//! The audit store on SQLite and PostgreSQL: chained appends, idempotent redelivery,
//! append-only triggers, and tampering done directly in the database named by the verifier.
#![expect(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use routero_audit::{
    AuditError, AuditStore, ChainHead, Interval, SpendGroup, Tamper, verify_chain,
};
use routero_core::audit::{
    Actor, ActorKind, AuditEvent, EventType, Outcome, Resource, canonical_json,
};
use routero_crypto::CheckpointSigner;
use serde_json::{Map, Value};
use sqlx::{AssertSqlSafe, Connection};

fn event(tenant: &str, i: u64) -> AuditEvent {
    AuditEvent {
        event_id: format!("{tenant}-{i:04}"),
        tenant_id: tenant.into(),
        time: format!("2026-11-22T12:00:{:02}.000Z", i % 60),
        actor: Actor {
            kind: ActorKind::AdminKey,
            id: Some("adm_1".into()),
            source_ip: None,
            user_agent: None,
        },
        action: EventType::KeyCreated,
        resource: Resource {
            kind: "key".into(),
            id: Some(format!("key_{i}")),
        },
        outcome: Outcome::Success,
        reason_code: None,
        request_id: None,
        policy_version: None,
        details: Map::from_iter([("tokens".to_string(), Value::from(i * 10))]),
    }
}

struct Db {
    store: AuditStore,
    url: String,
}

async fn open(url: &str) -> Db {
    Db {
        store: AuditStore::connect(url).await.unwrap(),
        url: url.to_owned(),
    }
}

impl Db {
    async fn sql(&self, statements: &[&str]) -> Result<(), sqlx::Error> {
        let mut conn = sqlx::AnyConnection::connect(&self.url).await?;
        for statement in statements {
            sqlx::query(AssertSqlSafe(statement.to_string()))
                .execute(&mut conn)
                .await?;
        }
        Ok(())
    }

    fn postgres(&self) -> bool {
        self.url.starts_with("postgres")
    }

    /// What a database superuser can do: take the append-only triggers away.
    async fn drop_guards(&self) {
        if self.postgres() {
            self.sql(&["ALTER TABLE audit_records DISABLE TRIGGER audit_records_append_only"])
                .await
                .unwrap();
        } else {
            self.sql(&[
                "DROP TRIGGER audit_records_no_update",
                "DROP TRIGGER audit_records_no_delete",
            ])
            .await
            .unwrap();
        }
    }

    async fn verify(&self, signer: &CheckpointSigner, tenant: &str) -> Result<u64, (u64, Tamper)> {
        let log = self.store.load(tenant).await.unwrap();
        verify_chain(
            tenant,
            &log.records,
            &log.checkpoints,
            log.anchor.as_ref(),
            &signer.verifier(),
        )
        .map(|v| v.signed_through)
        .map_err(|v| (v.seq, v.kind))
    }
}

routero_testkit::on_both_databases!(
    open;
    appends_chain_per_tenant_idempotently_and_verify,
    the_log_refuses_update_and_delete,
    tampering_in_the_database_is_named,
    pruning_leaves_a_signed_anchor_and_the_rest_verifies,
    a_checkpoint_copied_into_the_anchors_is_refused,
    records_made_to_look_old_are_not_pruned,
    a_record_inserted_at_the_head_is_never_signed,
    a_record_altered_before_its_checkpoint_is_named,
    an_unsigned_checkpoint_row_is_not_where_a_check_starts,
    a_head_replaced_at_the_same_seq_is_never_signed,
    a_retention_forged_at_the_head_is_not_applied,
    spend_is_added_up_once_per_event_per_hour_key_user_team_and_model,
    spend_is_reported_over_time_and_since_a_period_start,
    guardrail_findings_are_counted_per_hour_stage_detector_and_action,
);

async fn appends_chain_per_tenant_idempotently_and_verify(db: Db) {
    let signer = CheckpointSigner::generate().unwrap();
    let events: Vec<AuditEvent> = (1..=4)
        .flat_map(|i| [event("a", i), event("b", i)])
        .collect();
    let written = db.store.append(&events).await.unwrap();
    assert_eq!(written.len(), 8);
    assert_eq!(
        written
            .iter()
            .filter(|r| r.tenant_id == "b")
            .map(|r| r.seq)
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    // Redelivery, also inside one batch, writes nothing twice.
    let again = db
        .store
        .append(&[events[0].clone(), event("a", 5), event("a", 5)])
        .await
        .unwrap();
    assert_eq!(again.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![5]);
    let signed = db
        .store
        .checkpoint(&signer, ["a", "b"], "2026-11-22T12:01:00Z")
        .await
        .unwrap();
    assert_eq!(
        signed
            .iter()
            .map(|c| (c.tenant_id.as_str(), c.seq))
            .collect::<Vec<_>>(),
        vec![("a", 5), ("b", 4)]
    );
    assert!(
        db.store
            .checkpoint(&signer, ["a"], "later")
            .await
            .unwrap()
            .is_empty(),
        "no new records, no new checkpoint"
    );
    assert_eq!(db.store.tenants().await.unwrap(), vec!["a", "b"]);
    assert_eq!(db.verify(&signer, "a").await, Ok(5));
    assert_eq!(db.verify(&signer, "b").await, Ok(4));
    let log = db.store.load("a").await.unwrap();
    assert_eq!(log.records[2].event, event("a", 3));
    let stored_json = canonical_json(&log.records[2].event).unwrap();
    assert_eq!(stored_json, canonical_json(&event("a", 3)).unwrap());

    // A batch larger than one INSERT takes, two tenants interleaved, with events already
    // stored and repeated among the new: each chain continues, nothing twice.
    let mut large: Vec<AuditEvent> = (6..=705)
        .flat_map(|i| [event("a", i), event("c", i)])
        .collect();
    large.insert(300, event("a", 2));
    large.insert(900, event("c", 6));
    let written = db.store.append(&large).await.unwrap();
    assert_eq!(written.len(), 1400);
    let c_seqs: Vec<u64> = written
        .iter()
        .filter(|r| r.tenant_id == "c")
        .map(|r| r.seq)
        .collect();
    assert_eq!(c_seqs, (1..=700).collect::<Vec<_>>());
    db.store
        .checkpoint(&signer, ["a", "c"], "2026-11-22T12:02:00Z")
        .await
        .unwrap();
    assert_eq!(db.verify(&signer, "a").await, Ok(705));
    assert_eq!(db.verify(&signer, "c").await, Ok(700));
}

async fn the_log_refuses_update_and_delete(db: Db) {
    let signer = CheckpointSigner::generate().unwrap();
    db.store
        .append(&[event("a", 1), event("a", 2)])
        .await
        .unwrap();
    db.store.checkpoint(&signer, ["a"], "t").await.unwrap();
    for statement in [
        "UPDATE audit_records SET outcome = 'denied' WHERE seq = 1",
        "DELETE FROM audit_records WHERE seq = 2",
        "UPDATE audit_checkpoints SET hash = 'x'",
        "DELETE FROM audit_checkpoints",
    ] {
        let error = db.sql(&[statement]).await.expect_err(statement).to_string();
        assert!(error.contains("append-only"), "{statement}: {error}");
    }
    assert_eq!(db.verify(&signer, "a").await, Ok(2));
}

async fn tampering_in_the_database_is_named(db: Db) {
    let signer = CheckpointSigner::generate().unwrap();
    for tenant in ["modify", "delete", "reorder", "insert"] {
        let events: Vec<AuditEvent> = (1..=8).map(|i| event(tenant, i)).collect();
        db.store.append(&events).await.unwrap();
        db.store.checkpoint(&signer, [tenant], "t").await.unwrap();
        assert_eq!(db.verify(&signer, tenant).await, Ok(8));
    }
    db.drop_guards().await;

    db.sql(&[r#"UPDATE audit_records SET event = REPLACE(event, '"tokens":30', '"tokens":31') WHERE tenant_id = 'modify' AND seq = 3"#])
        .await
        .unwrap();
    assert_eq!(
        db.verify(&signer, "modify").await,
        Err((3, Tamper::Modified))
    );

    db.sql(&["DELETE FROM audit_records WHERE tenant_id = 'delete' AND seq = 4"])
        .await
        .unwrap();
    assert_eq!(
        db.verify(&signer, "delete").await,
        Err((4, Tamper::Deleted))
    );

    db.sql(&[
        "UPDATE audit_records SET seq = -1 WHERE tenant_id = 'reorder' AND seq = 4",
        "UPDATE audit_records SET seq = 4 WHERE tenant_id = 'reorder' AND seq = 5",
        "UPDATE audit_records SET seq = 5 WHERE tenant_id = 'reorder' AND seq = -1",
    ])
    .await
    .unwrap();
    assert_eq!(
        db.verify(&signer, "reorder").await,
        Err((4, Tamper::Reordered))
    );

    // A forged record chained after seq 3, with the rest renumbered to make room.
    let log = db.store.load("insert").await.unwrap();
    let mut head = ChainHead {
        tenant_id: "insert".into(),
        seq: 3,
        hash: log.records[2].digest().unwrap(),
    };
    let forged = head.append(event("insert", 99)).unwrap();
    let forged_json = String::from_utf8(canonical_json(&forged.event).unwrap())
        .unwrap()
        .replace('\'', "''");
    db.sql(&[
        "UPDATE audit_records SET seq = seq + 100 WHERE tenant_id = 'insert' AND seq >= 4",
        "UPDATE audit_records SET seq = seq - 99 WHERE tenant_id = 'insert' AND seq >= 100",
        &format!(
            "INSERT INTO audit_records (tenant_id, seq, event_id, time, action, actor_kind, actor_id, outcome, prev_hash, hash, event, written_at) \
             VALUES ('insert', 4, 'forged', 't', 'key.created', 'admin_key', NULL, 'success', '{}', '{}', '{forged_json}', 0)",
            forged.prev_hash, forged.hash
        ),
    ])
    .await
    .unwrap();
    assert_eq!(
        db.verify(&signer, "insert").await,
        Err((4, Tamper::Inserted))
    );
}

/// `2025-01-31T00:00:00Z`, the prune time of these tests.
fn prune_time() -> std::time::SystemTime {
    humantime::parse_rfc3339("2025-01-31T00:00:00Z").unwrap()
}

/// The event that sets a tenant's retention, as the admin API records it.
fn retention_changed(tenant: &str, i: u64, days: u64, time: &str) -> AuditEvent {
    let mut set = event(tenant, i);
    set.action = routero_core::audit::EventType::AuditRetentionChanged;
    set.details = Map::from_iter([("days".to_string(), Value::from(days))]);
    set.time = time.into();
    set
}

/// Tenant `a`'s chain of `count` events and then a retention of `days`, all at `time`, signed.
async fn signed_chain(
    store: &AuditStore,
    signer: &CheckpointSigner,
    count: u64,
    days: u64,
    time: &str,
) {
    let mut events: Vec<AuditEvent> = (1..=count).map(|i| event("a", i)).collect();
    events.push(retention_changed("a", count + 1, days, time));
    for e in &mut events {
        e.time = time.into();
    }
    store.append(&events).await.unwrap();
    store.checkpoint(signer, ["a"], "t").await.unwrap();
}

async fn pruning_leaves_a_signed_anchor_and_the_rest_verifies(db: Db) {
    let signer = CheckpointSigner::generate().unwrap();
    assert_eq!(db.store.retention("a").await.unwrap(), 365, "the default");
    assert!(matches!(
        db.store.check_retention(30),
        Err(AuditError::RetentionTooShort { minimum: 90 })
    ));
    assert!(db.store.check_retention(120).is_ok());
    let store = db.store.clone().with_min_retention_days(1);

    // Six old events, two recent ones, then an old one arriving late (out of time order).
    let mut events: Vec<AuditEvent> = (1..=9).map(|i| event("a", i)).collect();
    for (i, e) in events.iter_mut().enumerate() {
        e.time = if (6..8).contains(&i) {
            format!("2025-01-0{}T00:00:00.000Z", i - 3)
        } else {
            format!("2020-01-0{}T00:00:00.000Z", i + 1)
        };
    }
    // The retention the chain records is the one in force (a table could be edited).
    events.push(retention_changed("a", 10, 30, "2025-01-10T00:00:00.000Z"));
    store.append(&events).await.unwrap();
    assert_eq!(
        store.retention("a").await.unwrap(),
        365,
        "in force once signed"
    );
    store.checkpoint(&signer, ["a"], "t").await.unwrap();
    assert_eq!(store.retention("a").await.unwrap(), 30);
    assert_eq!(
        db.store.retention("a").await.unwrap(),
        90,
        "never below the minimum"
    );
    let anchor = store
        .prune(&signer, "a", prune_time())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            anchor.seq,
            anchor.retention_days,
            anchor.covered_until.as_str()
        ),
        (6, 30, "2020-01-06T00:00:00.000Z"),
        "only the prefix that is entirely older than the cutoff"
    );
    assert!(
        store
            .prune(&signer, "a", prune_time())
            .await
            .unwrap()
            .is_none()
    );

    let log = db.store.load("a").await.unwrap();
    assert_eq!(
        log.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![7, 8, 9, 10]
    );
    assert_eq!(log.anchor.as_ref().map(|a| a.seq), Some(6));
    assert_eq!(db.verify(&signer, "a").await, Ok(10));
    // New records continue the chain after pruning.
    db.store.append(&[event("a", 11)]).await.unwrap();
    db.store.checkpoint(&signer, ["a"], "t").await.unwrap();
    assert_eq!(db.verify(&signer, "a").await, Ok(11));

    let refused = db
        .sql(&["DELETE FROM audit_records WHERE tenant_id = 'a' AND seq = 7"])
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("append-only"), "{refused}");
    let refused = db.sql(&["DELETE FROM audit_anchors"]).await.unwrap_err();
    assert!(refused.to_string().contains("append-only"), "{refused}");
}

/// With the database's credentials, an operator makes recent records look old (the `time`
/// column, or the event itself) so that pruning would erase them: pruning reads the hashed
/// events and verifies the chain first, so neither works.
async fn records_made_to_look_old_are_not_pruned(db: Db) {
    let signer = CheckpointSigner::generate().unwrap();
    let store = db.store.clone().with_min_retention_days(1);
    signed_chain(&store, &signer, 5, 1, "2025-01-30T12:00:00.000Z").await;
    db.drop_guards().await;
    db.sql(&["UPDATE audit_records SET time = '2000-01-01T00:00:00.000Z' WHERE tenant_id = 'a' AND seq <= 3"])
        .await
        .unwrap();
    assert!(
        store
            .prune(&signer, "a", prune_time())
            .await
            .unwrap()
            .is_none(),
        "the time column is not what pruning reads"
    );
    db.sql(&["UPDATE audit_records SET event = REPLACE(event, '2025-01-30', '2000-01-01') WHERE tenant_id = 'a' AND seq <= 3"])
        .await
        .unwrap();
    assert!(matches!(
        store.prune(&signer, "a", prune_time()).await,
        Err(AuditError::Unverified(_))
    ));
    assert_eq!(
        store.load("a").await.unwrap().records.len(),
        6,
        "nothing erased"
    );
}

/// The writer signs only a chain it wrote: a record inserted at the head with the database's
/// credentials (its hash computed correctly) is never signed.
async fn a_record_inserted_at_the_head_is_never_signed(db: Db) {
    let signer = CheckpointSigner::generate().unwrap();
    let store = db
        .store
        .clone()
        .with_record_key(signer.record_key().unwrap());
    let events: Vec<AuditEvent> = (1..=3).map(|i| event("a", i)).collect();
    store.append(&events).await.unwrap();
    assert_eq!(
        store.checkpoint(&signer, ["a"], "t").await.unwrap().len(),
        1
    );
    forge_at_head(&db, &store, event("a", 4)).await;
    assert!(
        store
            .checkpoint(&signer, ["a"], "t")
            .await
            .unwrap()
            .is_empty(),
        "the inserted record is not signed"
    );
    assert_eq!(
        db.verify(&signer, "a").await,
        Ok(3),
        "signed through 3 only"
    );
    // What the writer appends after it stays unsigned too: the chain it would sign holds a
    // record it did not write.
    store.append(&[event("a", 5)]).await.unwrap();
    assert!(
        store
            .checkpoint(&signer, ["a"], "t")
            .await
            .unwrap()
            .is_empty()
    );
}

/// A writer's store (its records tagged) that chained tenant `a`'s events 1–3 and signed a
/// checkpoint over them, and its signer.
async fn signed_writer(db: &Db) -> (CheckpointSigner, AuditStore) {
    let signer = CheckpointSigner::generate().unwrap();
    let store = db
        .store
        .clone()
        .with_record_key(signer.record_key().unwrap());
    let events: Vec<AuditEvent> = (1..=3).map(|i| event("a", i)).collect();
    store.append(&events).await.unwrap();
    let signed = store.checkpoint(&signer, ["a"], "t").await.unwrap();
    assert_eq!(signed.len(), 1);
    (signer, store)
}

/// Whether a checkpoint of tenant `a` by `store` signs nothing.
async fn signs_nothing(store: &AuditStore, signer: &CheckpointSigner) -> bool {
    store
        .checkpoint(signer, ["a"], "t")
        .await
        .unwrap()
        .is_empty()
}

/// The writer signs a head it wrote without reading its records back: a record altered in the
/// database before that checkpoint is still named by verification (the hash signed is the one
/// the writer computed), and once another writer has written at the head, its records are read
/// back and an altered one is never signed over.
async fn a_record_altered_before_its_checkpoint_is_named(db: Db) {
    let (signer, store) = signed_writer(&db).await;
    let events: Vec<AuditEvent> = (4..=6).map(|i| event("a", i)).collect();
    store.append(&events).await.unwrap();
    db.drop_guards().await;
    db.sql(&[r#"UPDATE audit_records SET event = REPLACE(event, '"tokens":50', '"tokens":51') WHERE tenant_id = 'a' AND seq = 5"#])
        .await
        .unwrap();
    let signed = store.checkpoint(&signer, ["a"], "t").await.unwrap();
    assert_eq!(signed.len(), 1);
    assert_eq!(signed[0].seq, 6);
    assert_eq!(
        signed[0].hash,
        store.load("a").await.unwrap().records[5].hash,
        "the head this writer chained"
    );
    assert_eq!(db.verify(&signer, "a").await, Err((5, Tamper::Modified)));

    // Another writer (the same key, another process) appends at the head: this one no longer
    // vouches for the chain, so it reads back what it did not write (here altered after it was
    // written) and signs nothing.
    let other = db
        .store
        .clone()
        .with_record_key(signer.record_key().unwrap());
    other.append(&[event("a", 7)]).await.unwrap();
    store.append(&[event("a", 8)]).await.unwrap();
    db.sql(&[r#"UPDATE audit_records SET event = REPLACE(event, '"tokens":70', '"tokens":71') WHERE tenant_id = 'a' AND seq = 7"#])
        .await
        .unwrap();
    assert!(
        signs_nothing(&store, &signer).await,
        "nothing signed over the record it did not write"
    );
}

/// With the database's credentials: a record forged at the head and a checkpoint row over it
/// with no valid signature, so that a check of the records would start after it. The writer
/// starts from its last checkpoint that verifies, meets the forged record, and signs nothing.
async fn an_unsigned_checkpoint_row_is_not_where_a_check_starts(db: Db) {
    let (signer, store) = signed_writer(&db).await;
    forge_at_head(&db, &store, event("a", 4)).await;
    let forged = store.load("a").await.unwrap().records[3].hash.clone();
    db.sql(&[&format!(
        "INSERT INTO audit_checkpoints (tenant_id, seq, hash, time, signature) VALUES ('a', 4, '{forged}', 't', '{}')",
        "A".repeat(88)
    )])
    .await
    .unwrap();
    store.append(&[event("a", 5)]).await.unwrap();
    assert!(
        signs_nothing(&store, &signer).await,
        "the forged record is not signed over"
    );
}

/// With the database's credentials: the head the writer chained deleted and a forged record
/// put in its place at the same sequence number. The writer no longer vouches for that head
/// (its hash differs), reads it back and signs nothing.
async fn a_head_replaced_at_the_same_seq_is_never_signed(db: Db) {
    let (signer, store) = signed_writer(&db).await;
    store.append(&[event("a", 4)]).await.unwrap();
    db.drop_guards().await;
    db.sql(&["DELETE FROM audit_records WHERE tenant_id = 'a' AND seq = 4"])
        .await
        .unwrap();
    forge_at_head(&db, &store, event("a", 40)).await;
    assert!(
        signs_nothing(&store, &signer).await,
        "the replaced head is not signed"
    );
    assert_eq!(
        db.verify(&signer, "a").await,
        Ok(3),
        "signed through 3 only"
    );
}

/// With the application's own database credentials: a checkpoint copied into the anchors,
/// then every record below it deleted. The verifier names the copy.
async fn a_checkpoint_copied_into_the_anchors_is_refused(db: Db) {
    let signer = CheckpointSigner::generate().unwrap();
    let events: Vec<AuditEvent> = (1..=8).map(|i| event("a", i)).collect();
    db.store.append(&events).await.unwrap();
    db.store
        .checkpoint(&signer, ["a"], "2026-11-22T12:00:00.000Z")
        .await
        .unwrap();
    db.sql(&[
        "INSERT INTO audit_anchors (tenant_id, seq, hash, time, signature, covered_until, retention_days) \
         SELECT tenant_id, seq, hash, time, signature, '2020-01-01T00:00:00.000Z', 90 FROM audit_checkpoints",
        "DELETE FROM audit_records WHERE tenant_id = 'a'",
    ])
    .await
    .unwrap();
    assert_eq!(
        db.verify(&signer, "a").await,
        Err((8, Tamper::CheckpointAsAnchor))
    );
}

/// With the database's credentials: `event` appended at the head of its tenant's chain, its
/// hashes computed correctly, under a well-formed tag the writer did not make.
async fn forge_at_head(db: &Db, store: &AuditStore, event: AuditEvent) {
    let log = store.load(&event.tenant_id).await.unwrap();
    let last = log.records.last().unwrap();
    let mut head = ChainHead {
        tenant_id: event.tenant_id.clone(),
        seq: last.seq,
        hash: last.digest().unwrap(),
    };
    let forged = head.append(event).unwrap();
    let canonical = String::from_utf8(canonical_json(&forged.event).unwrap()).unwrap();
    let action = serde_json::to_value(forged.event.action).unwrap();
    db.sql(&[&format!(
        "INSERT INTO audit_records (tenant_id, seq, event_id, time, action, actor_kind, actor_id, outcome, \
         prev_hash, hash, event, written_at, mac) VALUES ('{}', {}, '{}', '{}', '{}', 'admin_key', \
         'adm_1', 'success', '{}', '{}', '{}', 0, '{}')",
        forged.event.tenant_id,
        forged.seq,
        forged.event.event_id,
        forged.event.time,
        action.as_str().unwrap(),
        forged.prev_hash,
        forged.hash,
        canonical,
        "ab".repeat(32),
    )])
    .await
    .unwrap();
}

/// With the database's credentials: a correctly hashed `audit.retention_changed` of one day
/// inserted at the head, to have years of records pruned. Retention is read from the signed
/// chain only, so it changes nothing.
async fn a_retention_forged_at_the_head_is_not_applied(db: Db) {
    let signer = CheckpointSigner::generate().unwrap();
    let store = db
        .store
        .clone()
        .with_min_retention_days(1)
        .with_record_key(signer.record_key().unwrap());
    signed_chain(&store, &signer, 4, 3650, "2025-01-01T00:00:00.000Z").await;
    forge_at_head(
        &db,
        &store,
        retention_changed("a", 6, 1, "2025-01-01T00:00:00.000Z"),
    )
    .await;
    assert_eq!(store.retention("a").await.unwrap(), 3650);
    assert!(
        store
            .prune(&signer, "a", prune_time())
            .await
            .unwrap()
            .is_none(),
        "the forged retention prunes nothing"
    );
    assert_eq!(store.load("a").await.unwrap().records.len(), 6);
}

/// A `spend.debited` event as the data plane records it: `[tenant, key, team, model]`, at
/// `hh:mm` on 2026-11-22, costing `cost` micro-dollars.
fn debited(id: &str, [tenant, key, team, model]: [&str; 4], at: &str, cost: i64) -> AuditEvent {
    let mut event = event(tenant, 0);
    event.event_id = id.into();
    event.time = format!("2026-11-22T{at}:00.000Z");
    event.action = EventType::SpendDebited;
    event.actor = Actor {
        kind: ActorKind::VirtualKey,
        id: Some(key.into()),
        source_ip: None,
        user_agent: None,
    };
    event.resource = Resource {
        kind: "model".into(),
        id: Some(model.into()),
    };
    event.details = serde_json::json!({"team_id": team, "user_id": null, "input_tokens": 10,
        "cached_tokens": 0, "output_tokens": 5, "cost_micros": cost})
    .as_object()
    .unwrap()
    .clone();
    event
}

async fn spend_is_added_up_once_per_event_per_hour_key_user_team_and_model(db: Db) {
    let store = &db.store;
    let events = [
        debited("s1", ["a", "k1", "t1", "m1"], "12:05", 100),
        debited("s2", ["a", "k1", "t1", "m1"], "12:55", 200),
        debited("s3", ["a", "k2", "t1", "m2"], "13:01", 1000),
        // Another tenant's spend is never in this one's report.
        debited("s4", ["b", "k9", "t9", "m1"], "12:05", 7),
        // A forged, absurd cost cannot overflow a line.
        debited("s5", ["a", "k3", "", "m3"], "12:05", i64::MAX),
        debited("s6", ["a", "k3", "", "m3"], "12:06", i64::MAX),
    ];
    store.append(&events).await.unwrap();
    // Redelivered: chained once, counted once.
    store.append(&events[..3]).await.unwrap();
    assert_eq!(store.key_spend("a", "k1").await.unwrap(), 300);
    let by_team = store
        .spend_report("a", SpendGroup::Team, (None, None), None)
        .await
        .unwrap();
    let teams: Vec<(&str, i64, i64)> = by_team
        .iter()
        .map(|r| (r.group.as_str(), r.requests, r.output_tokens))
        .collect();
    assert_eq!(teams, [("", 2, 10), ("t1", 3, 15)]);
    assert_eq!(
        by_team[0].cost_micros, 2_000_000_000_000_000,
        "each clamped"
    );
    // Hours that start in [from, to): 12:00 only.
    let noon = store
        .spend_report(
            "a",
            SpendGroup::Model,
            (
                Some("2026-11-22T12:00:00.000Z"),
                Some("2026-11-22T13:00:00.000Z"),
            ),
            None,
        )
        .await
        .unwrap();
    let models: Vec<&str> = noon.iter().map(|r| r.group.as_str()).collect();
    assert_eq!(models, ["m3", "m1"]);
    assert_eq!(noon[1].cost_micros, 300);
}

async fn spend_is_reported_over_time_and_since_a_period_start(db: Db) {
    let store = &db.store;
    let mut next_day = debited("d3", ["a", "k1", "t1", "m1"], "09:00", 4000);
    next_day.time = "2026-11-23T09:30:00.000Z".into();
    store
        .append(&[
            debited("d1", ["a", "k1", "t1", "m1"], "12:05", 100),
            debited("d2", ["a", "k2", "t2", "m1"], "13:10", 20),
            next_day,
            debited("d4", ["b", "k9", "t9", "m1"], "12:05", 7),
        ])
        .await
        .unwrap();
    let line = |r: &routero_audit::SpendRow| {
        format!(
            "{} {} {}",
            r.period.as_deref().unwrap_or("-"),
            r.group,
            r.cost_micros
        )
    };
    let hourly = store
        .spend_report("a", SpendGroup::Team, (None, None), Some(Interval::Hour))
        .await
        .unwrap();
    assert_eq!(
        hourly.iter().map(line).collect::<Vec<_>>(),
        [
            "2026-11-22T12:00:00Z t1 100",
            "2026-11-22T13:00:00Z t2 20",
            "2026-11-23T09:00:00Z t1 4000",
        ]
    );
    let daily = store
        .spend_report("a", SpendGroup::Model, (None, None), Some(Interval::Day))
        .await
        .unwrap();
    assert_eq!(
        daily.iter().map(line).collect::<Vec<_>>(),
        [
            "2026-11-22T00:00:00Z m1 120",
            "2026-11-23T00:00:00Z m1 4000"
        ]
    );
    // From the 13:00 hour (a period that started at 13:20 is counted from it): noon does not
    // count; nothing from the hour `until` names on (a forged or far-off clock's stays out).
    let between = ("2026-11-22T13:00:00Z", "2026-11-24T00:00:00Z");
    assert_eq!(
        store.spend_between("a", None, between).await.unwrap(),
        [(String::new(), 4020)]
    );
    let mut by_team = store
        .spend_between("a", Some(SpendGroup::Team), between)
        .await
        .unwrap();
    by_team.sort();
    assert_eq!(by_team, [("t1".to_owned(), 4000), ("t2".to_owned(), 20)]);
    assert_eq!(
        store
            .spend_between("a", None, ("2026-11-22T13:00:00Z", "2026-11-23T09:00:00Z"))
            .await
            .unwrap(),
        [(String::new(), 20)],
        "the 09:00 hour is not before 09:00"
    );
    assert_eq!(
        store.spend_between("c", None, between).await.unwrap(),
        [(String::new(), 0)],
        "a tenant that spent nothing"
    );
    // An event whose time is not a time is chained (evidence) but not counted: it neither
    // holds the trail up nor lands in an hour of its choosing.
    let mut garbled = debited("d5", ["a", "k1", "t1", "m1"], "12:05", 100);
    garbled.time = "zzzz-11-22T12:05:00.000Z".into();
    assert_eq!(store.append(&[garbled]).await.unwrap().len(), 1);
    assert_eq!(store.key_spend("a", "k1").await.unwrap(), 4100);
}

/// A `request.guardrail_triggered` event at `hh:mm` on 2026-11-22 with `findings`
/// (`[detector, action, count]`).
fn triggered(
    id: &str,
    tenant: &str,
    at: &str,
    stage: &str,
    findings: &[(&str, &str, i64)],
) -> AuditEvent {
    let mut event = event(tenant, 0);
    event.event_id = id.into();
    event.time = format!("2026-11-22T{at}:00.000Z");
    event.action = EventType::RequestGuardrailTriggered;
    let findings: Vec<Value> = findings
        .iter()
        .map(|(detector, action, count)| {
            serde_json::json!({"detector": detector, "action": action, "count": count})
        })
        .collect();
    event.details = serde_json::json!({"stage": stage, "findings": findings})
        .as_object()
        .unwrap()
        .clone();
    event
}

async fn guardrail_findings_are_counted_per_hour_stage_detector_and_action(db: Db) {
    let store = &db.store;
    let long = "d".repeat(65);
    let events = [
        triggered(
            "g1",
            "a",
            "12:05",
            "request",
            &[("email", "redact", 2), ("ssn", "block", 1)],
        ),
        triggered("g2", "a", "12:40", "request", &[("email", "redact", 3)]),
        triggered("g3", "a", "13:01", "response", &[("email", "mask", 1)]),
        // Another tenant's findings are never in this one's report.
        triggered("g4", "b", "12:05", "request", &[("email", "redact", 9)]),
        // A forged event: a negative count, an absurd one, a name no detector has.
        triggered(
            "g5",
            "a",
            "14:00",
            "request",
            &[
                ("email", "redact", -5),
                ("ssn", "block", i64::MAX),
                (&long, "log", 1),
            ],
        ),
        // Forged names and a line given twice: no text of the event's choosing is kept, and
        // one event is one request per line.
        triggered(
            "g6",
            "a",
            "15:00",
            "<b>stage</b>",
            &[
                ("email", "redact", 2),
                ("email", "redact", 3),
                ("Email<b>", "redact", 1),
            ],
        ),
    ];
    store.append(&events).await.unwrap();
    // Redelivered: chained once, counted once.
    store.append(&events[..2]).await.unwrap();
    let line = |r: &routero_audit::FindingsRow| {
        format!(
            "{} {} {} {} {} {}",
            r.period, r.stage, r.detector, r.action, r.findings, r.requests
        )
    };
    let hourly = store
        .guardrail_findings("a", (None, Some("2026-11-22T14:00:00Z")), Interval::Hour)
        .await
        .unwrap();
    assert_eq!(
        hourly.iter().map(line).collect::<Vec<_>>(),
        [
            "2026-11-22T12:00:00Z request email redact 5 2",
            "2026-11-22T12:00:00Z request ssn block 1 1",
            "2026-11-22T13:00:00Z response email mask 1 1",
        ]
    );
    let daily = store
        .guardrail_findings("a", (None, None), Interval::Day)
        .await
        .unwrap();
    assert_eq!(
        daily.iter().map(line).collect::<Vec<_>>(),
        [
            "2026-11-22T00:00:00Z other email redact 5 1",
            "2026-11-22T00:00:00Z other other redact 1 1",
            "2026-11-22T00:00:00Z request email redact 5 3",
            "2026-11-22T00:00:00Z request other log 1 1",
            "2026-11-22T00:00:00Z request ssn block 1000001 2",
            "2026-11-22T00:00:00Z response email mask 1 1",
        ],
        "by stage; a negative count adds nothing, an absurd one a million"
    );
}
