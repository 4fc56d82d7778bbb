//! The audit outbox on SQLite and PostgreSQL: an admin change and the event recording it
//! commit together or not at all, and the outbox forwards only rows the control plane wrote.
#![expect(clippy::unwrap_used, clippy::indexing_slicing)]

use routero_control_plane::store::Changer;
use routero_control_plane::{ControlPlaneError, Store};
use routero_core::audit::{ActorKind, AuditEvent, EventType, Outcome};
use routero_crypto::{MessageKey, Purpose, SealingKey};
use sqlx::{AssertSqlSafe, Connection};

struct Db {
    store: Store,
    url: String,
}

async fn open(url: &str) -> Db {
    let pepper = SealingKey::generate().unwrap();
    let key = MessageKey::new(&pepper.derive(Purpose::AuditOutbox).unwrap()).unwrap();
    Db {
        store: Store::connect(url).await.unwrap().with_outbox(key),
        url: url.to_owned(),
    }
}

impl Db {
    /// SQL with the application's own database credentials.
    async fn sql(&self, statements: &[&str]) {
        let mut conn = sqlx::AnyConnection::connect(&self.url).await.unwrap();
        for statement in statements {
            sqlx::query(AssertSqlSafe(statement.to_string()))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }

    fn postgres(&self) -> bool {
        self.url.starts_with("postgres")
    }
}

routero_testkit::on_both_databases!(
    open;
    a_change_and_its_event_commit_together,
    a_change_whose_event_cannot_be_written_does_not_happen,
    rows_not_written_here_are_forwarded_as_rejected,
);

fn team_created(tenant: &str) -> AuditEvent {
    routero_bus::event(
        tenant,
        EventType::TeamCreated,
        routero_bus::actor(ActorKind::AdminKey, Some("adm_1".into())),
        routero_bus::resource("team", None),
        Outcome::Success,
    )
}

async fn a_change_and_its_event_commit_together(db: Db) {
    let store = &db.store;
    let a = store.ensure_tenant("a").await.unwrap();
    let team = store
        .create_team(&Changer::admin_key(&a, "adm_1"), "ops", None)
        .await
        .unwrap();
    let duplicate = store
        .create_team(&Changer::admin_key(&a, "adm_1"), "ops", None)
        .await;
    assert!(
        matches!(duplicate, Err(ControlPlaneError::Conflict(_))),
        "{duplicate:?}"
    );
    let waiting = store.outbox(10).await.unwrap();
    assert_eq!(waiting.len(), 1, "the failed change left no event");
    assert_eq!(waiting[0].1.action, EventType::TeamCreated);
    assert_eq!(
        waiting[0].1.resource.id.as_deref(),
        Some(team.id.as_str()),
        "the event names the row it created"
    );
    store.forwarded(waiting[0].0).await.unwrap();
    assert!(store.outbox(10).await.unwrap().is_empty());
    let revoked = store
        .revoke_keys(&a, &["key_missing".into()], &[team_created(&a)])
        .await;
    assert!(revoked.is_err());
    assert!(
        store.outbox(10).await.unwrap().is_empty(),
        "all or none, events too"
    );
}

/// The event is written in the change's own transaction: when it cannot be, the change does
/// not happen either (here the outbox refuses every insert).
async fn a_change_whose_event_cannot_be_written_does_not_happen(db: Db) {
    if db.postgres() {
        db.sql(&[
            "CREATE FUNCTION refuse_outbox() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'outbox refused'; END; $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_outbox BEFORE INSERT ON audit_outbox FOR EACH ROW EXECUTE FUNCTION refuse_outbox()",
        ])
        .await;
    } else {
        db.sql(&["CREATE TRIGGER refuse_outbox BEFORE INSERT ON audit_outbox BEGIN SELECT RAISE(ABORT, 'outbox refused'); END"])
            .await;
    }
    let a = db.store.ensure_tenant("a").await.unwrap();
    let created = db
        .store
        .create_team(&Changer::admin_key(&a, "adm_1"), "ops", None)
        .await;
    assert!(created.is_err(), "{created:?}");
    assert!(
        db.store.list_teams(&a).await.unwrap().is_empty(),
        "no change without its event"
    );
}

/// A row inserted with the database's credentials (not tagged with the pepper-derived key,
/// even when it carries a genuine row's tag) is forwarded as `audit.message_rejected`, never
/// as the event it claims to be.
async fn rows_not_written_here_are_forwarded_as_rejected(db: Db) {
    let a = db.store.ensure_tenant("a").await.unwrap();
    db.store
        .create_team(&Changer::admin_key(&a, "adm_1"), "ops", None)
        .await
        .unwrap();
    let mut claimed = team_created(&a);
    claimed.resource.id = Some("forged".into());
    let forged = serde_json::to_string(&claimed).unwrap().replace('\'', "''");
    db.sql(&[&format!(
        "INSERT INTO audit_outbox (event, mac, created_at) SELECT '{forged}', mac, 0 FROM audit_outbox"
    )])
    .await;
    db.sql(&[&format!(
        "INSERT INTO audit_outbox (event, mac, created_at) VALUES ('not json', '{}', 0)",
        "ab".repeat(32)
    )])
    .await;
    let waiting = db.store.outbox(10).await.unwrap();
    let actions: Vec<_> = waiting
        .iter()
        .map(|(_, e)| (e.action, e.reason_code.clone(), e.tenant_id.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            (EventType::TeamCreated, None, a.as_str()),
            (
                EventType::AuditMessageRejected,
                Some("not_written_here".into()),
                "_unattributed"
            ),
            (
                EventType::AuditMessageRejected,
                Some("not_an_audit_event".into()),
                "_unattributed"
            ),
        ]
    );
}
