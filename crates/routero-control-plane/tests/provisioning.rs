//! People and groups as SCIM provisions them, on SQLite and PostgreSQL: every filter operator
//! runs in SQL with the same answers on both, paging, versions, and deprovisioning that
//! revokes keys and takes them out of the snapshot.
#![expect(clippy::unwrap_used, clippy::indexing_slicing)]

use routero_control_plane::role_mapping::{RoleMapping, Rule};
use routero_control_plane::store::{Changer, KeyRecord};
use routero_control_plane::{ControlPlaneError, Store};
use routero_core::ErrorCode;
use routero_core::audit::ActorKind;
use routero_scim::resource::canonical;
use routero_scim::schema::Kind;
use serde_json::json;

async fn open(url: &str) -> Store {
    Store::connect(url).await.unwrap()
}

routero_testkit::on_both_databases!(
    open;
    every_operator_runs_in_sql,
    paging_counts_and_orders,
    versions_refuse_stale_writes,
    deprovisioning_revokes_and_unserves_keys,
    role_mapping_gives_keys_their_roles,
    user_names_are_unique_regardless_of_case,
);

fn scim(tenant: &str) -> Changer {
    Changer {
        tenant_id: tenant.to_owned(),
        actor: routero_bus::actor(ActorKind::ScimToken, Some("scim_1".into())),
        scim: true,
    }
}

async fn user(store: &Store, tenant: &str, body: serde_json::Value) -> String {
    let doc = canonical(Kind::User, &body).unwrap();
    store
        .scim_create(&scim(tenant), Kind::User, doc)
        .await
        .unwrap()
        .id
}

async fn group(store: &Store, tenant: &str, name: &str, members: &[&str]) -> String {
    let members: Vec<_> = members.iter().map(|m| json!({ "value": m })).collect();
    let doc = canonical(
        Kind::Group,
        &json!({"displayName": name, "members": members}),
    )
    .unwrap();
    store
        .scim_create(&scim(tenant), Kind::Group, doc)
        .await
        .unwrap()
        .id
}

async fn matching(store: &Store, tenant: &str, kind: Kind, filter: &str) -> Vec<String> {
    let parsed = routero_scim::filter::parse(filter).unwrap();
    let condition = routero_scim::sql::compile(kind, &parsed, 2).unwrap();
    let (total, records) = store
        .scim_search(tenant, kind, Some(&condition), 0, 200)
        .await
        .unwrap();
    assert_eq!(usize::try_from(total).unwrap(), records.len(), "{filter}");
    let mut names: Vec<String> = records
        .iter()
        .map(|r| {
            let key = if kind == Kind::User {
                "userName"
            } else {
                "displayName"
            };
            r.doc[key].as_str().unwrap().to_owned()
        })
        .collect();
    names.sort();
    names
}

async fn every_operator_runs_in_sql(store: Store) {
    let t = store.ensure_tenant("t").await.unwrap();
    let other = store.ensure_tenant("other").await.unwrap();
    let ada = user(
        &store,
        &t,
        json!({
            "userName": "Ada", "externalId": "Ext-1", "active": true, "title": "Countess",
            "emails": [{"value": "ada@work.io", "type": "work", "primary": true},
                       {"value": "ada@home.io", "type": "home"}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Math"},
        }),
    )
    .await;
    user(&store, &t, json!({
        "userName": "bob", "externalId": "ext-2", "active": false,
        "emails": [{"value": "bob@home.io", "type": "work"}, {"value": "bob@x.io", "type": "home", "primary": true}],
    }))
    .await;
    user(&store, &t, json!({"userName": "carol_100%"})).await;
    user(&store, &other, json!({"userName": "ada@other"})).await;
    let cases: &[(&str, &[&str])] = &[
        (r#"userName eq "ADA""#, &["Ada"]),
        (r#"USERNAME Eq "ada""#, &["Ada"]),
        (r#"userName ne "ada""#, &["bob", "carol_100%"]),
        (r#"userName co "A""#, &["Ada", "carol_100%"]),
        (r#"userName co "_1""#, &["carol_100%"]),
        (r#"userName co "%""#, &["carol_100%"]),
        (r#"userName co """#, &["Ada", "bob", "carol_100%"]),
        (r#"userName sw "b""#, &["bob"]),
        (r#"userName ew "0%""#, &["carol_100%"]),
        (r#"userName gt "b""#, &["bob", "carol_100%"]),
        (r#"userName ge "bob""#, &["bob", "carol_100%"]),
        (r#"userName lt "b""#, &["Ada"]),
        (r#"userName le "bob""#, &["Ada", "bob"]),
        // externalId is case-exact: on both databases
        (r#"externalId eq "ext-1""#, &[]),
        (r#"externalId co "xt-1""#, &["Ada"]),
        (r#"externalId sw "E""#, &["Ada"]),
        (r#"externalId co "E""#, &["Ada"]),
        ("title pr", &["Ada"]),
        ("not (title pr)", &["bob", "carol_100%"]),
        ("emails pr", &["Ada", "bob"]),
        ("active eq true", &["Ada", "carol_100%"]),
        ("active eq false", &["bob"]),
        (r#"emails co "home""#, &["Ada", "bob"]),
        (
            r#"emails.type eq "work" and emails.primary eq true"#,
            &["Ada", "bob"],
        ),
        (r#"emails[type eq "work" and primary eq true]"#, &["Ada"]),
        (r#"emails[type eq "work" and value sw "bob"]"#, &["bob"]),
        (r#"emails[not (primary pr)]"#, &["Ada", "bob"]),
        (
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "math""#,
            &["Ada"],
        ),
        (
            r#"userName eq "bob" or (title pr and not (active eq false))"#,
            &["Ada", "bob"],
        ),
        (
            r#"meta.lastModified gt "2000-01-01T00:00:00Z""#,
            &["Ada", "bob", "carol_100%"],
        ),
        (r#"meta.created lt "2000-01-01T00:00:00.000Z""#, &[]),
        (&format!(r#"id eq "{ada}""#), &["Ada"]),
        (r#"userName eq "x' OR 1=1 --""#, &[]),
    ];
    for (filter, expected) in cases {
        assert_eq!(
            matching(&store, &t, Kind::User, filter).await,
            *expected,
            "{filter}"
        );
    }
    group(&store, &t, "eng", &[&ada]).await;
    group(&store, &t, "empty", &[]).await;
    assert_eq!(
        matching(
            &store,
            &t,
            Kind::Group,
            &format!(r#"members[value eq "{ada}"]"#)
        )
        .await,
        ["eng"]
    );
    assert_eq!(
        matching(&store, &t, Kind::Group, "not (members pr)").await,
        ["empty"]
    );
}

async fn paging_counts_and_orders(store: Store) {
    let t = store.ensure_tenant("t").await.unwrap();
    for i in 0..5 {
        user(&store, &t, json!({ "userName": format!("u{i}") })).await;
    }
    let names = |records: Vec<routero_control_plane::store::ScimRecord>| -> Vec<String> {
        records
            .iter()
            .map(|r| r.doc["userName"].as_str().unwrap().to_owned())
            .collect()
    };
    let (total, page) = store.scim_search(&t, Kind::User, None, 1, 2).await.unwrap();
    assert_eq!(
        (total, names(page)),
        (5, vec!["u1".to_owned(), "u2".to_owned()])
    );
    let (total, page) = store
        .scim_search(&t, Kind::User, None, 4, 10)
        .await
        .unwrap();
    assert_eq!((total, names(page)), (5, vec!["u4".to_owned()]));
    let (total, page) = store
        .scim_search(&t, Kind::User, None, 9, 10)
        .await
        .unwrap();
    assert_eq!((total, page.len()), (5, 0));
    let (total, page) = store.scim_search(&t, Kind::User, None, 0, 0).await.unwrap();
    assert_eq!((total, page.len()), (5, 0));
}

async fn versions_refuse_stale_writes(store: Store) {
    let t = store.ensure_tenant("t").await.unwrap();
    let id = user(&store, &t, json!({"userName": "ada"})).await;
    let first = store.scim_get(&t, Kind::User, &id).await.unwrap();
    let doc = canonical(Kind::User, &json!({"userName": "ada", "title": "x"})).unwrap();
    let second = store
        .scim_replace(&scim(&t), Kind::User, &first, doc.clone())
        .await
        .unwrap();
    assert_eq!(second.version, first.version + 1);
    let stale = store.scim_replace(&scim(&t), Kind::User, &first, doc).await;
    assert!(
        matches!(
            stale,
            Err(ControlPlaneError::Rejected {
                code: ErrorCode::VersionMismatch,
                ..
            })
        ),
        "{stale:?}"
    );
    let stale_delete = store
        .scim_delete(&scim(&t), Kind::User, &id, Some(first.version))
        .await;
    assert!(
        matches!(stale_delete, Err(ControlPlaneError::Rejected { .. })),
        "{stale_delete:?}"
    );
    let other = store.ensure_tenant("other").await.unwrap();
    let foreign = store
        .scim_delete(&scim(&other), Kind::User, &id, None)
        .await;
    assert!(
        matches!(foreign, Err(ControlPlaneError::NotFound(_))),
        "{foreign:?}"
    );
    assert_eq!(
        store.scim_get(&t, Kind::User, &id).await.unwrap().version,
        second.version
    );
}

fn key_of(tenant: &str, id: &str, user: &str, hash: u8, roles: &[&str]) -> KeyRecord {
    KeyRecord {
        id: id.into(),
        tenant_id: tenant.into(),
        key_hash: vec![hash; 32],
        key_hint: "sk-rt-abcd...wxyz".into(),
        team_id: None,
        user_id: Some(user.into()),
        models: vec![],
        allowed_cidrs: vec![],
        metadata: serde_json::Map::new(),
        expires_at: None,
        created_at: 1_700_000_000,
        revoked_at: None,
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        owner: None,
        limits: routero_core::Allowance::default(),
    }
}

async fn served(store: &Store) -> Vec<(String, Vec<String>)> {
    let mut keys: Vec<_> = store
        .load_state()
        .await
        .unwrap()
        .keys
        .into_iter()
        .map(|k| (k.id, k.roles))
        .collect();
    keys.sort();
    keys
}

async fn deprovisioning_revokes_and_unserves_keys(store: Store) {
    let t = store.ensure_tenant("t").await.unwrap();
    let ada = user(&store, &t, json!({"userName": "ada"})).await;
    let bob = user(&store, &t, json!({"userName": "bob"})).await;
    store
        .insert_key(&key_of(&t, "k_ada", &ada, 1, &[]), &[])
        .await
        .unwrap();
    store
        .insert_key(&key_of(&t, "k_bob", &bob, 2, &[]), &[])
        .await
        .unwrap();
    let admin_role = vec!["admin".to_owned()];
    let adas_admin_key = store
        .insert_admin_key(&t, &[9; 32], ("ada's", &admin_role, Some(&ada)), Vec::new())
        .await
        .unwrap();
    assert!(store.find_admin_key(&[9; 32]).await.unwrap().is_some());
    // A key Ada's admin key issued without binding it to anyone is Ada's key too.
    let owned = KeyRecord {
        user_id: None,
        owner: Some(adas_admin_key.id.clone()),
        ..key_of(&t, "k_owned", &ada, 4, &[])
    };
    store.insert_key(&owned, &[]).await.unwrap();
    let version = store.snapshot_version().await.unwrap();
    let current = store.scim_get(&t, Kind::User, &ada).await.unwrap();
    let doc = canonical(Kind::User, &json!({"userName": "ada", "active": "False"})).unwrap();
    store
        .scim_replace(&scim(&t), Kind::User, &current, doc)
        .await
        .unwrap();
    assert!(
        store.snapshot_version().await.unwrap() > version,
        "data planes hear of it"
    );
    assert_eq!(served(&store).await, vec![("k_bob".to_owned(), vec![])]);
    assert!(
        store.find_admin_key(&[9; 32]).await.unwrap().is_none(),
        "an admin key acting for a deactivated user opens nothing"
    );
    assert!(
        store
            .get_key(&t, "k_owned")
            .await
            .unwrap()
            .revoked_at
            .is_some()
    );
    assert!(
        store
            .get_key(&t, "k_ada")
            .await
            .unwrap()
            .revoked_at
            .is_some()
    );
    // Reactivation brings no key back, and no key may be issued to an inactive user.
    let current = store.scim_get(&t, Kind::User, &ada).await.unwrap();
    let inactive = store
        .insert_key(&key_of(&t, "k_ada2", &ada, 3, &[]), &[])
        .await;
    assert!(
        matches!(
            inactive,
            Err(ControlPlaneError::Rejected {
                code: ErrorCode::UserInactive,
                ..
            })
        ),
        "{inactive:?}"
    );
    let doc = canonical(Kind::User, &json!({"userName": "ada", "active": true})).unwrap();
    store
        .scim_replace(&scim(&t), Kind::User, &current, doc)
        .await
        .unwrap();
    assert!(
        store
            .get_key(&t, "k_ada")
            .await
            .unwrap()
            .revoked_at
            .is_some()
    );
    // Deleting frees the name and revokes; the row stays for what names it.
    store
        .scim_delete(&scim(&t), Kind::User, &bob, None)
        .await
        .unwrap();
    assert!(served(&store).await.is_empty());
    assert!(
        store
            .get_key(&t, "k_bob")
            .await
            .unwrap()
            .revoked_at
            .is_some()
    );
    user(&store, &t, json!({"userName": "BOB"})).await;
    // A team's keys go with the team.
    let ops = group(&store, &t, "ops", &[]).await;
    let team_key = KeyRecord {
        user_id: None,
        team_id: Some(ops.clone()),
        ..key_of(&t, "k_team", &ada, 5, &[])
    };
    store.insert_key(&team_key, &[]).await.unwrap();
    store
        .scim_delete(&scim(&t), Kind::Group, &ops, None)
        .await
        .unwrap();
    assert!(
        store
            .get_key(&t, "k_team")
            .await
            .unwrap()
            .revoked_at
            .is_some()
    );
    group(&store, &t, "OPS", &[]).await;
    assert!(matches!(
        store.scim_get(&t, Kind::User, &bob).await,
        Err(ControlPlaneError::NotFound(_))
    ));
}

async fn role_mapping_gives_keys_their_roles(store: Store) {
    let t = store.ensure_tenant("t").await.unwrap();
    let ada = user(&store, &t, json!({"userName": "ada"})).await;
    let eng = group(&store, &t, "Engineering", &[&ada]).await;
    let ml = group(&store, &t, "ml", &[&ada]).await;
    store
        .insert_key(&key_of(&t, "k_all", &ada, 1, &[]), &[])
        .await
        .unwrap();
    store
        .insert_key(&key_of(&t, "k_narrow", &ada, 2, &["developer"]), &[])
        .await
        .unwrap();
    store
        .insert_key(&key_of(&t, "k_wide", &ada, 3, &["admin"]), &[])
        .await
        .unwrap();
    let mapping = RoleMapping {
        rules: vec![
            Rule {
                group: "engineering".into(),
                roles: vec!["developer".into()],
            },
            Rule {
                group: ml.clone(),
                roles: vec!["manager".into()],
            },
        ],
        default_roles: vec![],
    };
    store.put_role_mapping(&t, &mapping, &[]).await.unwrap();
    assert_eq!(
        served(&store).await,
        vec![
            (
                "k_all".to_owned(),
                vec!["developer".to_owned(), "manager".to_owned()]
            ),
            ("k_narrow".to_owned(), vec!["developer".to_owned()]),
        ]
    );
    // Out of ml: manager is gone from the next snapshot.
    let current = store.scim_get(&t, Kind::Group, &ml).await.unwrap();
    let doc = canonical(Kind::Group, &json!({"displayName": "ml"})).unwrap();
    store
        .scim_replace(&scim(&t), Kind::Group, &current, doc)
        .await
        .unwrap();
    assert_eq!(served(&store).await[0].1, vec!["developer".to_owned()]);
    assert!(
        store
            .get_key(&t, "k_all")
            .await
            .unwrap()
            .revoked_at
            .is_none()
    );
    // Out of the last group that grants anything: the keys are revoked.
    store
        .scim_delete(&scim(&t), Kind::Group, &eng, None)
        .await
        .unwrap();
    assert!(served(&store).await.is_empty());
    assert!(
        store
            .get_key(&t, "k_all")
            .await
            .unwrap()
            .revoked_at
            .is_some()
    );
}

async fn user_names_are_unique_regardless_of_case(store: Store) {
    let t = store.ensure_tenant("t").await.unwrap();
    user(&store, &t, json!({"userName": "Ada"})).await;
    let doc = canonical(Kind::User, &json!({"userName": "aDA"})).unwrap();
    let taken = store.scim_create(&scim(&t), Kind::User, doc.clone()).await;
    assert!(
        matches!(taken, Err(ControlPlaneError::Conflict(_))),
        "{taken:?}"
    );
    let other = store.ensure_tenant("other").await.unwrap();
    store
        .scim_create(&scim(&other), Kind::User, doc)
        .await
        .unwrap();
    let (total, _) = store
        .scim_search(&t, Kind::User, None, 0, 10)
        .await
        .unwrap();
    assert_eq!(total, 1, "nothing half-written");
}
