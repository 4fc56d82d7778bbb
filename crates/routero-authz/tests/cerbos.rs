//! Decisions of the real Cerbos binary on the repository's policies: roles, tenant walls,
//! model invoke rules, failing closed, recovery, and policy edits without a restart.
#![expect(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use routero_authz::{Authorizer, AuthzError, Pdp, Principal, Target, bundle_version, find_cerbos};

fn repo_policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies")
}

/// A caller's records, as the gateway holds them.
#[derive(Clone)]
struct Who {
    id: String,
    roles: Vec<String>,
    tenant: String,
    permissions: Vec<String>,
}

impl Who {
    fn principal(&self) -> Principal<'_> {
        Principal {
            id: &self.id,
            roles: &self.roles,
            tenant: &self.tenant,
            teams: &[],
            permissions: &self.permissions,
        }
    }
}

/// A resource's records.
struct What {
    kind: String,
    id: String,
    tenant: String,
    attributes: BTreeMap<String, String>,
}

impl What {
    fn target(&self) -> Target<'_> {
        Target {
            kind: &self.kind,
            id: &self.id,
            tenant: &self.tenant,
            attributes: &self.attributes,
        }
    }
}

fn principal(id: &str, roles: &[&str], tenant: &str) -> Who {
    Who {
        id: id.into(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        tenant: tenant.into(),
        permissions: Vec::new(),
    }
}

fn target(kind: &str, tenant: &str, attributes: &[(&str, &str)]) -> What {
    What {
        kind: kind.into(),
        id: format!("{kind}-1"),
        tenant: tenant.into(),
        attributes: attributes
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let destination = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &destination);
        } else {
            std::fs::copy(&path, &destination).unwrap();
        }
    }
}

async fn start(policies: &Path, work: &Path, settle: Duration) -> (Pdp, Authorizer) {
    let pdp = Pdp::start(&find_cerbos(None).unwrap(), policies, work)
        .await
        .unwrap();
    let mut config = pdp.config();
    config.settle = settle;
    let authorizer = Authorizer::connect(&config).await.unwrap();
    (pdp, authorizer)
}

#[tokio::test]
async fn roles_tenants_and_model_rules_decide() {
    let work = tempfile::tempdir().unwrap();
    let (_pdp, authz) = start(&repo_policies(), work.path(), Duration::ZERO).await;
    let version = bundle_version(&repo_policies()).unwrap();
    let allowed = |p: Who, t: What, action: &'static str| {
        let (authz, version) = (&authz, version.clone());
        async move {
            authz
                .is_allowed(&version, &p.principal(), &t.target(), action)
                .await
                .unwrap()
        }
    };
    let developer = || principal("dev1", &["developer"], "a");
    assert!(allowed(developer(), target("key", "a", &[]), "create").await);
    assert!(
        !allowed(developer(), target("key", "b", &[]), "create").await,
        "tenant wall"
    );
    assert!(
        allowed(
            developer(),
            target("key", "a", &[("owner", "dev1")]),
            "revoke"
        )
        .await
    );
    assert!(
        !allowed(
            developer(),
            target("key", "a", &[("owner", "bob")]),
            "revoke"
        )
        .await
    );
    assert!(
        !allowed(
            principal("aud", &["auditor"], "a"),
            target("key", "a", &[]),
            "create"
        )
        .await
    );
    assert!(
        allowed(
            principal("adm", &["admin"], "a"),
            target("credential", "a", &[]),
            "delete"
        )
        .await
    );
    assert!(
        !allowed(
            principal("adm", &["admin"], "b"),
            target("credential", "a", &[]),
            "read"
        )
        .await
    );
    assert!(
        !allowed(
            principal("adm", &["admin"], "a"),
            target("credential", "b", &[("tenant", "a")]),
            "read"
        )
        .await,
        "an attribute named tenant does not move a resource across the wall"
    );
    assert!(
        !allowed(developer(), target("no_such_kind", "a", &[]), "read").await,
        "deny by default"
    );
    let mut custom = principal("sup", &["support"], "a");
    custom.permissions = vec!["team:read".into()];
    assert!(allowed(custom.clone(), target("team", "a", &[]), "read").await);
    assert!(!allowed(custom, target("team", "a", &[]), "delete").await);

    let premium = || target("model", "a", &[("tier", "premium")]);
    let staging = || target("model", "a", &[("env", "staging")]);
    assert!(!allowed(developer(), premium(), "invoke").await);
    assert!(
        allowed(
            principal("m", &["developer", "manager"], "a"),
            premium(),
            "invoke"
        )
        .await
    );
    assert!(!allowed(developer(), staging(), "invoke").await);
    assert!(
        allowed(
            principal("q", &["developer", "qa"], "a"),
            staging(),
            "invoke"
        )
        .await
    );
    assert!(allowed(developer(), target("model", "a", &[]), "invoke").await);
    // Tag values the policies do not know fail closed, for every role.
    for tags in [
        [("tier", "Premium")],
        [("tier", "gold")],
        [("env", "Staging")],
    ] {
        assert!(!allowed(developer(), target("model", "a", &tags), "invoke").await);
        assert!(
            !allowed(
                principal("mq", &["developer", "manager", "qa"], "a"),
                target("model", "a", &tags),
                "invoke"
            )
            .await
        );
    }
}

#[tokio::test]
async fn cerbos_down_fails_closed_cached_decisions_need_no_round_trip_and_it_recovers() {
    let work = tempfile::tempdir().unwrap();
    let (mut pdp, authz) = start(&repo_policies(), work.path(), Duration::ZERO).await;
    let version = bundle_version(&repo_policies()).unwrap();
    let developer = principal("dev1", &["developer"], "a");
    let model = target("model", "a", &[]);
    assert!(
        authz
            .is_allowed(&version, &developer.principal(), &model.target(), "invoke")
            .await
            .unwrap()
    );
    assert_eq!(authz.cached(), 1);

    pdp.kill().await;
    assert!(
        authz
            .is_allowed(&version, &developer.principal(), &model.target(), "invoke")
            .await
            .unwrap(),
        "a cached decision is answered without the PDP"
    );
    let uncached = authz
        .is_allowed(&version, &developer.principal(), &model.target(), "read")
        .await;
    assert!(
        matches!(uncached, Err(AuthzError::Unavailable(_))),
        "{uncached:?}"
    );

    pdp.restart().await.unwrap();
    let mut recovered = None;
    for _ in 0..100 {
        if let Ok(allowed) = authz
            .is_allowed(&version, &developer.principal(), &model.target(), "read")
            .await
        {
            recovered = Some(allowed);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(recovered, Some(true), "decisions come back with the PDP");
}

#[tokio::test]
async fn a_policy_edit_changes_the_decision_without_a_restart_and_the_old_one_is_not_served() {
    // Cerbos ignores changes under hidden directories, and tempfile's default names start
    // with a dot.
    let work = tempfile::Builder::new()
        .prefix("routero-authz-")
        .tempdir()
        .unwrap();
    let policies = work.path().join("policies");
    copy_dir(&repo_policies(), &policies);
    let settle = Duration::from_secs(8);
    let (_pdp, authz) = start(&policies, work.path(), settle).await;
    let developer = principal("dev1", &["developer"], "a");
    let key = target("key", "a", &[]);
    let before = bundle_version(&policies).unwrap();
    assert!(
        authz
            .is_allowed(&before, &developer.principal(), &key.target(), "create")
            .await
            .unwrap()
    );
    // The old decision, once its version has settled, is cached: the edit must be seen past it.
    tokio::time::sleep(settle).await;
    assert!(
        authz
            .is_allowed(&before, &developer.principal(), &key.target(), "create")
            .await
            .unwrap()
    );
    assert_eq!(
        authz.cached(),
        1,
        "the old decision is cached before the edit"
    );

    // Developers may no longer create keys.
    let file = policies.join("resources/key.yaml");
    let edited = std::fs::read_to_string(&file).unwrap().replace(
        "derivedRoles: [tenant_developer]",
        "derivedRoles: [tenant_admin]",
    );
    // Replaced atomically, as a checkout or a config-map swap does.
    let temporary = policies.join("key.yaml.tmp");
    std::fs::write(&temporary, edited).unwrap();
    std::fs::rename(&temporary, &file).unwrap();
    let after = bundle_version(&policies).unwrap();
    assert_ne!(before, after);

    let mut denied_at = None;
    for attempt in 0..100 {
        if !authz
            .is_allowed(&after, &developer.principal(), &key.target(), "create")
            .await
            .unwrap()
        {
            denied_at = Some(attempt);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        denied_at.is_some(),
        "the PDP did not reload the edited policy:\n{}",
        std::fs::read_to_string(work.path().join("cerbos.log")).unwrap_or_default()
    );
    tokio::time::sleep(settle).await;
    for _ in 0..3 {
        assert!(
            !authz
                .is_allowed(&after, &developer.principal(), &key.target(), "create")
                .await
                .unwrap()
        );
    }
    assert_eq!(authz.cached(), 1, "cached once settled");
}
