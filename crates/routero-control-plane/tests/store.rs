//! The store test suite, run against SQLite and a real PostgreSQL (a fresh database per test).
#![expect(clippy::unwrap_used)]

use routero_control_plane::store::Changer;
use routero_control_plane::store::{
    CustomRole, KeyChanges, KeyRecord, Route, StoredDeployment, User,
};
use routero_control_plane::{ControlPlaneError, Store, rotate_credentials};
use routero_core::{ErrorCode, Resource};
use routero_crypto::{CredentialBinding, Keyring};
use secrecy::ExposeSecret;

async fn open(url: &str) -> Store {
    Store::connect(url).await.unwrap()
}

routero_testkit::on_both_databases!(
    open;
    migrations_are_idempotent_and_version_starts_at_one,
    key_lifecycle_advances_the_version_and_leaves_revoked_keys_out,
    revocation_is_all_or_none,
    tenants_are_walled_off,
    names_are_unique_per_tenant,
    rotation_reencrypts_everything_or_nothing,
    users_and_teams,
    admin_keys_and_custom_roles,
    deleting_a_role_takes_its_name_off_every_key,
    admin_keys_act_for_a_user_and_its_teams,
    versions_that_changed_keys_alone_name_those_keys,
);

fn key(tenant: &str, id: &str, hash: u8) -> KeyRecord {
    KeyRecord {
        id: id.into(),
        tenant_id: tenant.into(),
        key_hash: vec![hash; 32],
        key_hint: "sk-rt-abcd...wxyz".into(),
        team_id: None,
        user_id: None,
        models: vec!["gpt-a".into()],
        allowed_cidrs: vec!["10.0.0.0/8".into()],
        metadata: serde_json::Map::from_iter([("owner".to_string(), serde_json::json!("ops"))]),
        expires_at: Some(2_000_000_000),
        created_at: 1_700_000_000,
        revoked_at: None,
        roles: vec!["developer".into()],
        owner: Some("adm_1".into()),
        limits: routero_core::Allowance {
            rpm_limit: Some(60),
            max_budget_micros: Some(5_000_000),
            budget_duration: Some("1mo".into()),
            ..routero_core::Allowance::default()
        },
    }
}

async fn migrations_are_idempotent_and_version_starts_at_one(store: Store) {
    assert_eq!(store.snapshot_version().await.unwrap(), 1);
    let a = store.ensure_tenant("default").await.unwrap();
    assert_eq!(store.ensure_tenant("default").await.unwrap(), a);
    store.ping().await.unwrap();
}

async fn key_lifecycle_advances_the_version_and_leaves_revoked_keys_out(store: Store) {
    let t = store.ensure_tenant("t").await.unwrap();
    let v0 = store.snapshot_version().await.unwrap();
    store.insert_key(&key(&t, "k1", 1), &[]).await.unwrap();
    store.insert_key(&key(&t, "k2", 2), &[]).await.unwrap();
    assert_eq!(store.snapshot_version().await.unwrap(), v0 + 2);
    assert_eq!(store.get_key(&t, "k1").await.unwrap(), key(&t, "k1", 1));

    let updated = store
        .update_key(
            &t,
            "k1",
            &KeyChanges {
                models: Some(vec!["gpt-b".into()]),
                expires_at: Some(None),
                ..Default::default()
            },
            &[],
        )
        .await
        .unwrap();
    assert_eq!(updated.models, vec!["gpt-b".to_string()]);
    assert_eq!(updated.expires_at, None);
    assert_eq!(
        updated.allowed_cidrs,
        vec!["10.0.0.0/8".to_string()],
        "untouched fields stay"
    );

    let replaced = store
        .replace_key_secret(&t, "k2", (&[9; 32], "sk-rt-new...hint"), None, &[])
        .await
        .unwrap();
    assert_eq!(replaced.key_hash, vec![9; 32]);
    assert_eq!(replaced.expires_at, Some(2_000_000_000));

    let named = store
        .active_keys(&t, &["k1".into()], &[vec![9; 32]])
        .await
        .unwrap();
    let ids: Vec<String> = named.into_iter().map(|k| k.id).collect();
    assert_eq!(ids, vec!["k1", "k2"]);
    assert_eq!(store.revoke_keys(&t, &ids, &[]).await.unwrap(), ids);
    let state = store.load_state().await.unwrap();
    assert_eq!(state.version, store.snapshot_version().await.unwrap());
    assert!(state.keys.is_empty(), "revoked keys never reach a snapshot");
    assert_eq!(store.list_keys(&t, None, false).await.unwrap().len(), 0);
    assert_eq!(store.list_keys(&t, None, true).await.unwrap().len(), 2);
    assert_eq!(
        store
            .list_keys(&t, Some("adm_1"), true)
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(
        store
            .list_keys(&t, Some("adm_2"), true)
            .await
            .unwrap()
            .is_empty(),
        "owner filter"
    );
    assert!(matches!(
        store
            .update_key(&t, "k1", &KeyChanges::default(), &[])
            .await,
        Err(ControlPlaneError::NotFound(Resource::Key))
    ));
}

async fn revocation_is_all_or_none(store: Store) {
    let t = store.ensure_tenant("t").await.unwrap();
    store.insert_key(&key(&t, "k1", 1), &[]).await.unwrap();
    let version = store.snapshot_version().await.unwrap();
    let result = store
        .revoke_keys(&t, &["k1".into(), "missing".into()], &[])
        .await;
    assert!(matches!(
        result,
        Err(ControlPlaneError::NotFound(Resource::Key))
    ));
    assert_eq!(
        store.list_keys(&t, None, false).await.unwrap().len(),
        1,
        "k1 still active"
    );
    assert_eq!(store.snapshot_version().await.unwrap(), version);
}

async fn tenants_are_walled_off(store: Store) {
    let a = store.ensure_tenant("a").await.unwrap();
    let b = store.ensure_tenant("b").await.unwrap();
    store.insert_key(&key(&a, "ka", 1), &[]).await.unwrap();
    let cred = store
        .create_credential(
            &a,
            "openai",
            "openai",
            "http://x/v1",
            |_| Ok("b1:xx".into()),
            Vec::new(),
        )
        .await
        .unwrap();

    assert!(matches!(
        store.get_key(&b, "ka").await,
        Err(ControlPlaneError::NotFound(Resource::Key))
    ));
    assert!(store.list_keys(&b, None, true).await.unwrap().is_empty());
    assert!(matches!(
        store.revoke_keys(&b, &["ka".into()], &[]).await,
        Err(ControlPlaneError::NotFound(Resource::Key))
    ));
    assert!(matches!(
        store.active_keys(&b, &[], &[vec![1; 32]]).await,
        Err(ControlPlaneError::NotFound(Resource::Key))
    ));
    assert!(store.list_credentials(&b).await.unwrap().is_empty());
    assert_eq!(
        store.credential_id_by_name(&b, "openai").await.unwrap(),
        None
    );
    let foreign_route = Route {
        tenant_id: b.clone(),
        name: "gpt".into(),
        deployments: vec![StoredDeployment {
            credential_id: cred.id.clone(),
            model: "m".into(),
            weight: 1,
        }],
        tags: Default::default(),
        pricing: None,
        routing: Default::default(),
    };
    assert!(matches!(
        store.create_route(&foreign_route, &[]).await,
        Err(ControlPlaneError::NotFound(Resource::Credential))
    ));
    let team_a = store
        .create_team(&Changer::admin_key(&a, "adm_1"), "red", None)
        .await
        .unwrap();
    let mut foreign_key = key(&b, "kb", 2);
    foreign_key.team_id = Some(team_a.id);
    assert!(matches!(
        store.insert_key(&foreign_key, &[]).await,
        Err(ControlPlaneError::NotFound(Resource::Team))
    ));
    assert!(store.list_routes(Some(&b)).await.unwrap().is_empty());
}

async fn names_are_unique_per_tenant(store: Store) {
    let a = store.ensure_tenant("a").await.unwrap();
    let b = store.ensure_tenant("b").await.unwrap();
    store
        .create_credential(
            &a,
            "main",
            "openai",
            "http://x",
            |_| Ok("b1:x".into()),
            Vec::new(),
        )
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_credential(
                &a,
                "main",
                "openai",
                "http://x",
                |_| Ok("b1:x".into()),
                Vec::new()
            )
            .await,
        Err(ControlPlaneError::Conflict(Resource::Credential))
    ));
    store
        .create_credential(
            &b,
            "main",
            "openai",
            "http://x",
            |_| Ok("b1:x".into()),
            Vec::new(),
        )
        .await
        .unwrap();
    let cred = store
        .credential_id_by_name(&a, "main")
        .await
        .unwrap()
        .unwrap();
    let route = Route {
        tenant_id: a.clone(),
        name: "gpt".into(),
        deployments: vec![StoredDeployment {
            credential_id: cred,
            model: "m".into(),
            weight: 3,
        }],
        tags: [("tier".to_owned(), "premium".to_owned())].into(),
        pricing: Some(routero_core::Pricing {
            input_micros_per_mtok: 150_000,
            output_micros_per_mtok: 600_000,
            cached_input_micros_per_mtok: None,
            default_max_tokens: Some(256),
        }),
        routing: routero_core::Routing {
            strategy: routero_core::Strategy::Weighted,
            max_attempts: Some(2),
            ..Default::default()
        },
    };
    store.create_route(&route, &[]).await.unwrap();
    assert!(matches!(
        store.create_route(&route, &[]).await,
        Err(ControlPlaneError::Conflict(Resource::Model))
    ));
    assert_eq!(store.list_routes(Some(&a)).await.unwrap(), vec![route]);
}

async fn rotation_reencrypts_everything_or_nothing(store: Store) {
    let t = store.ensure_tenant("t").await.unwrap();
    let v1 = Keyring::generate().unwrap();
    for name in ["one", "two", "three"] {
        store
            .create_credential(
                &t,
                name,
                "openai",
                "http://x",
                |id| {
                    let binding = CredentialBinding {
                        tenant: &t,
                        credential_id: id,
                        base_url: "http://x",
                    };
                    Ok(v1.encrypt(&binding, &format!("sk-{name}"))?)
                },
                Vec::new(),
            )
            .await
            .unwrap();
    }
    let before = store.load_state().await.unwrap().credentials;

    // A failure on the second row leaves every row as it was.
    let calls = std::cell::Cell::new(0);
    let failed = store
        .reencrypt_credentials(|_| {
            calls.set(calls.get() + 1);
            if calls.get() == 2 {
                Err(ControlPlaneError::Corrupt("injected".into()))
            } else {
                Ok(Some("v9:garbage".into()))
            }
        })
        .await;
    assert!(failed.is_err());
    assert_eq!(calls.get(), 2);
    let after_failure = store.load_state().await.unwrap().credentials;
    let cts = |rows: &[routero_control_plane::store::SealedCredential]| {
        rows.iter()
            .map(|c| c.ciphertext.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(cts(&after_failure), cts(&before));

    // A real rotation moves every row to v2, and each still decrypts to its secret.
    let v2 = v1.with_new_version().unwrap();
    assert_eq!(rotate_credentials(&store, &v2).await.unwrap(), 3);
    assert_eq!(
        rotate_credentials(&store, &v2).await.unwrap(),
        0,
        "already current"
    );
    for row in store.load_state().await.unwrap().credentials {
        assert!(row.ciphertext.starts_with("b2:"));
        let plain = v2.decrypt(&row.binding(), &row.ciphertext).unwrap();
        assert_eq!(plain.expose_secret(), format!("sk-{}", row.credential.name));
    }
}

async fn users_and_teams(store: Store) {
    let t = store.ensure_tenant("t").await.unwrap();
    let team = store
        .create_team(
            &Changer::admin_key(&t, "adm_1"),
            "platform",
            Some("okta-group-1"),
        )
        .await
        .unwrap();
    let user = User {
        id: String::new(),
        user_name: "alice".into(),
        email: Some("alice@example.com".into()),
        display_name: None,
        external_id: Some("okta-1".into()),
        active: true,
        team_ids: vec![team.id.clone()],
        scim_managed: false,
    };
    let created = store
        .create_user(&Changer::admin_key(&t, "adm_1"), &user)
        .await
        .unwrap();
    assert_eq!(store.list_users(&t).await.unwrap(), vec![created.clone()]);
    assert_eq!(store.list_teams(&t).await.unwrap(), vec![team]);
    assert!(matches!(
        store
            .create_user(&Changer::admin_key(&t, "adm_1"), &user)
            .await,
        Err(ControlPlaneError::Conflict(Resource::User))
    ));
    let mut k = key(&t, "k", 5);
    k.user_id = Some(created.id);
    store.insert_key(&k, &[]).await.unwrap();
}

async fn admin_keys_and_custom_roles(store: Store) {
    let a = store.ensure_tenant("a").await.unwrap();
    let b = store.ensure_tenant("b").await.unwrap();
    let support = CustomRole {
        name: "support".into(),
        permissions: vec!["key:read".into(), "team:list".into()],
    };
    store.put_role(&a, &support, &[]).await.unwrap();
    let admin = store
        .insert_admin_key(&a, &[1; 32], ("first", &["admin".into()], None), Vec::new())
        .await
        .unwrap();
    let helper = store
        .insert_admin_key(
            &a,
            &[2; 32],
            ("helper", &["support".into(), "auditor".into()], None),
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(helper.roles, vec!["auditor", "support"], "roles sorted");

    let principal = store.find_admin_key(&[2; 32]).await.unwrap().unwrap();
    assert_eq!(principal.tenant_id, a);
    assert_eq!(principal.permissions, vec!["key:read", "team:list"]);
    // A role of the same name in another tenant grants nothing here.
    store
        .put_role(
            &b,
            &CustomRole {
                name: "support".into(),
                permissions: vec!["user:delete".into()],
            },
            &[],
        )
        .await
        .unwrap();
    let principal = store.find_admin_key(&[2; 32]).await.unwrap().unwrap();
    assert_eq!(principal.permissions, vec!["key:read", "team:list"]);

    // Replacing a role changes what its holders may do at their next request.
    store
        .put_role(
            &a,
            &CustomRole {
                name: "support".into(),
                permissions: vec!["team:read".into()],
            },
            &[],
        )
        .await
        .unwrap();
    let principal = store.find_admin_key(&[2; 32]).await.unwrap().unwrap();
    assert_eq!(principal.permissions, vec!["team:read"]);
    store.delete_role(&a, "support", &[]).await.unwrap();
    let principal = store.find_admin_key(&[2; 32]).await.unwrap().unwrap();
    assert!(principal.permissions.is_empty());
    assert!(matches!(
        store.delete_role(&a, "support", &[]).await,
        Err(ControlPlaneError::NotFound(Resource::Role))
    ));

    // The last admin cannot be revoked; others can, once, and only in their tenant.
    assert!(matches!(
        store.revoke_admin_key(&a, &admin.id, &[]).await,
        Err(ControlPlaneError::Rejected {
            code: ErrorCode::LastAdminKey,
            ..
        })
    ));
    assert!(matches!(
        store.revoke_admin_key(&b, &helper.id, &[]).await,
        Err(ControlPlaneError::NotFound(Resource::AdminKey))
    ));
    assert!(
        store
            .revoke_admin_key(&a, &helper.id, &[])
            .await
            .unwrap()
            .revoked
    );
    assert!(store.find_admin_key(&[2; 32]).await.unwrap().is_none());
    assert!(matches!(
        store.revoke_admin_key(&a, &helper.id, &[]).await,
        Err(ControlPlaneError::NotFound(Resource::AdminKey))
    ));
    assert_eq!(
        store.list_admin_keys(&a, false).await.unwrap(),
        vec![admin.clone()]
    );
    assert_eq!(store.list_admin_keys(&a, true).await.unwrap().len(), 2);
    assert!(store.list_admin_keys(&b, true).await.unwrap().is_empty());
}

async fn deleting_a_role_takes_its_name_off_every_key(store: Store) {
    let a = store.ensure_tenant("a").await.unwrap();
    let b = store.ensure_tenant("b").await.unwrap();
    let ops = |permissions: &[&str]| CustomRole {
        name: "ops".into(),
        permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
    };
    store.put_role(&a, &ops(&["team:list"]), &[]).await.unwrap();
    store.put_role(&b, &ops(&["team:list"]), &[]).await.unwrap();
    assert_eq!(
        store.role(&a, "ops").await.unwrap(),
        Some(ops(&["team:list"]))
    );
    assert_eq!(store.role(&a, "nobody").await.unwrap(), None);
    let roles = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
    store
        .insert_admin_key(
            &a,
            &[1; 32],
            ("holder", &roles(&["auditor", "ops"]), None),
            Vec::new(),
        )
        .await
        .unwrap();
    // `_` in a LIKE pattern matches any character: "op_" must not lose "ops".
    store
        .put_role(
            &a,
            &CustomRole {
                name: "op_".into(),
                ..ops(&["team:list"])
            },
            &[],
        )
        .await
        .unwrap();
    store
        .insert_admin_key(&a, &[2; 32], ("other", &roles(&["ops"]), None), Vec::new())
        .await
        .unwrap();
    store
        .insert_admin_key(
            &b,
            &[3; 32],
            ("tenant b", &roles(&["ops"]), None),
            Vec::new(),
        )
        .await
        .unwrap();
    let mut held = key(&a, "k1", 4);
    held.roles = roles(&["developer", "ops"]);
    store.insert_key(&held, &[]).await.unwrap();
    let mut in_b = key(&b, "k2", 5);
    in_b.roles = roles(&["ops"]);
    store.insert_key(&in_b, &[]).await.unwrap();

    let v0 = store.snapshot_version().await.unwrap();
    store.delete_role(&a, "op_", &[]).await.unwrap();
    assert_eq!(
        store.get_key(&a, "k1").await.unwrap().roles,
        roles(&["developer", "ops"])
    );
    store.delete_role(&a, "ops", &[]).await.unwrap();
    assert!(
        store.snapshot_version().await.unwrap() > v0,
        "virtual keys changed"
    );
    assert_eq!(
        store.get_key(&a, "k1").await.unwrap().roles,
        roles(&["developer"])
    );
    let principal = |hash: u8| {
        let store = &store;
        async move { store.find_admin_key(&[hash; 32]).await.unwrap().unwrap() }
    };
    assert_eq!(principal(1).await.roles, roles(&["auditor"]));
    // Created again, the name grants nothing to the keys that held the old role...
    store
        .put_role(&a, &ops(&["user:delete"]), &[])
        .await
        .unwrap();
    assert!(principal(1).await.permissions.is_empty());
    assert!(principal(2).await.roles.is_empty());
    // ...and another tenant's role of the same name and its holders are untouched.
    assert_eq!(principal(3).await.roles, roles(&["ops"]));
    assert_eq!(
        store.get_key(&b, "k2").await.unwrap().roles,
        roles(&["ops"])
    );
    assert!(matches!(
        store.delete_role(&a, "op_", &[]).await,
        Err(ControlPlaneError::NotFound(Resource::Role))
    ));
}

async fn admin_keys_act_for_a_user_and_its_teams(store: Store) {
    let a = store.ensure_tenant("a").await.unwrap();
    let b = store.ensure_tenant("b").await.unwrap();
    let platform = store
        .create_team(&Changer::admin_key(&a, "adm_1"), "platform", None)
        .await
        .unwrap();
    let data = store
        .create_team(&Changer::admin_key(&a, "adm_1"), "data", None)
        .await
        .unwrap();
    store
        .create_team(&Changer::admin_key(&a, "adm_1"), "finance", None)
        .await
        .unwrap();
    let user = |name: &str, team_ids: Vec<String>| User {
        id: String::new(),
        user_name: name.into(),
        email: None,
        display_name: None,
        external_id: None,
        active: true,
        team_ids,
        scim_managed: false,
    };
    let alice = store
        .create_user(
            &Changer::admin_key(&a, "adm_1"),
            &user("alice", vec![platform.id.clone(), data.id.clone()]),
        )
        .await
        .unwrap();
    let bob = store
        .create_user(&Changer::admin_key(&b, "adm_1"), &user("bob", vec![]))
        .await
        .unwrap();
    let developer = vec!["developer".to_owned()];

    let key = store
        .insert_admin_key(
            &a,
            &[1; 32],
            ("alice's", &developer, Some(&alice.id)),
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(key.user_id.as_deref(), Some(alice.id.as_str()));
    let principal = store.find_admin_key(&[1; 32]).await.unwrap().unwrap();
    assert_eq!(principal.user_id.as_deref(), Some(alice.id.as_str()));
    let mut teams = vec![platform.id, data.id];
    teams.sort();
    assert_eq!(principal.teams, teams);
    assert_eq!(store.list_admin_keys(&a, false).await.unwrap(), vec![key]);

    let unbound = store
        .insert_admin_key(&a, &[2; 32], ("nobody's", &developer, None), Vec::new())
        .await
        .unwrap();
    assert_eq!(unbound.user_id, None);
    let principal = store.find_admin_key(&[2; 32]).await.unwrap().unwrap();
    assert_eq!((principal.user_id, principal.teams), (None, vec![]));

    // A user of another tenant, or none at all, is not found here.
    for missing in [bob.id.as_str(), "usr_missing"] {
        assert!(matches!(
            store
                .insert_admin_key(
                    &a,
                    &[3; 32],
                    ("stolen", &developer, Some(missing)),
                    Vec::new()
                )
                .await,
            Err(ControlPlaneError::NotFound(Resource::User))
        ));
    }
    assert!(store.find_admin_key(&[3; 32]).await.unwrap().is_none());
}

async fn versions_that_changed_keys_alone_name_those_keys(store: Store) {
    let t = store.ensure_tenant("t").await.unwrap();
    let start = store.snapshot_version().await.unwrap();
    assert!(
        store.changed_keys(start - 1).await.unwrap().is_none(),
        "the first version records nothing: a whole reload"
    );
    store.insert_key(&key(&t, "k1", 1), &[]).await.unwrap();
    store.insert_key(&key(&t, "k2", 2), &[]).await.unwrap();
    store.insert_key(&key(&t, "k3", 3), &[]).await.unwrap();
    store.revoke_keys(&t, &["k3".into()], &[]).await.unwrap();
    store
        .replace_key_secret(&t, "k2", (&[9; 32], "sk-rt-new...hint"), None, &[])
        .await
        .unwrap();
    let changed = store.changed_keys(start).await.unwrap().unwrap();
    assert_eq!(changed.version, start + 5);
    let mut ids: Vec<_> = changed.ids.iter().map(String::as_str).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["k1", "k2", "k3"]);
    let mut served: Vec<_> = changed
        .keys
        .iter()
        .map(|k| (k.id.as_str(), k.key_hash.first().copied()))
        .collect();
    served.sort_unstable();
    assert_eq!(
        served,
        [("k1", Some(1)), ("k2", Some(9))],
        "revoked k3 is named but not served"
    );
    let since_two = store.changed_keys(start + 4).await.unwrap().unwrap();
    assert_eq!(since_two.ids.len(), 1);

    // A change that is not about keys alone makes every reload across it whole.
    store
        .put_guardrails(&t, r#"{"input": []}"#, &[])
        .await
        .unwrap();
    assert!(store.changed_keys(start).await.unwrap().is_none());
    store.insert_key(&key(&t, "k4", 4), &[]).await.unwrap();
    let after = store.changed_keys(start + 6).await.unwrap().unwrap();
    assert_eq!(after.keys.len(), 1);

    // Forgotten versions also mean a whole reload.
    store.prune_snapshot_changes(start + 3).await.unwrap();
    assert!(store.changed_keys(start + 2).await.unwrap().is_none());
    assert!(store.changed_keys(start + 6).await.unwrap().is_some());
}
