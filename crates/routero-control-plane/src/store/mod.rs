//! The control plane's durable state, on PostgreSQL or SQLite through one implementation.
//!
//! Every query is scoped by tenant. Every mutation that changes what data planes enforce
//! advances the snapshot version in the same transaction, so a reader that sees the version
//! also sees the change.

mod access;
mod outbox;
mod provisioning;
mod records;
mod sessions;
mod sso;

use routero_core::audit::AuditEvent;
use routero_core::{Allowance, ErrorCode, Resource};
use routero_scim::schema::Kind;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};
use tokio::sync::Notify;

pub(crate) use outbox::naming;
pub use provisioning::{Changer, ScimRecord, ScimToken};
pub use records::{
    AdminKey, AdminPrincipal, ChangedKeys, Credential, CustomRole, KeyChanges, KeyRecord, Route,
    SealedCredential, StateRows, StoredDeployment, Team, User,
};
pub use sessions::{LiveSession, LocalAdmin, NewSession, Session};
pub use sso::{Linked, PendingLogin, SsoConfig, TakenLogin, Vouched};

use crate::ControlPlaneError;

/// `SELECT <every key column> FROM virtual_keys <rest>`, as one literal.
macro_rules! select_keys {
    ($($rest:expr),+) => {
        concat!(
            "SELECT id, tenant_id, key_hash, key_hint, team_id, user_id, models, allowed_cidrs, \
             metadata, expires_at, created_at, revoked_at, roles, owner, limits FROM virtual_keys ",
            $($rest),+
        )
    };
}

/// The keys data planes are sent: unrevoked, and never those of a deactivated or deleted user,
/// bound to them or issued by an admin key acting for them.
macro_rules! served_keys {
    () => {
        "revoked_at IS NULL AND (user_id IS NULL OR user_id IN \
         (SELECT id FROM users WHERE active AND deleted_at IS NULL)) \
         AND (owner IS NULL OR owner NOT IN (SELECT a.id FROM admin_keys a \
         JOIN users u ON u.id = a.user_id WHERE NOT u.active OR u.deleted_at IS NOT NULL))"
    };
}

/// Ids bound per query when keys are read by id.
const IDS_PER_QUERY: usize = 500;

/// The control plane's schema, per backend.
const MIGRATIONS: &[routero_sql::EmbeddedMigration] = &[
    (
        1,
        "foundation",
        include_str!("../../../../migrations/postgres/0001_foundation.sql"),
        include_str!("../../../../migrations/sqlite/0001_foundation.sql"),
    ),
    (
        2,
        "policy attributes",
        include_str!("../../../../migrations/postgres/0002_policy_attributes.sql"),
        include_str!("../../../../migrations/sqlite/0002_policy_attributes.sql"),
    ),
    (
        3,
        "admin rbac",
        include_str!("../../../../migrations/postgres/0003_admin_rbac.sql"),
        include_str!("../../../../migrations/sqlite/0003_admin_rbac.sql"),
    ),
    (
        4,
        "guardrails",
        include_str!("../../../../migrations/postgres/0004_guardrails.sql"),
        include_str!("../../../../migrations/sqlite/0004_guardrails.sql"),
    ),
    (
        5,
        "authz hardening",
        include_str!("../../../../migrations/postgres/0005_authz_hardening.sql"),
        include_str!("../../../../migrations/sqlite/0005_authz_hardening.sql"),
    ),
    (
        6,
        "audit outbox",
        include_str!("../../../../migrations/postgres/0006_audit_outbox.sql"),
        include_str!("../../../../migrations/sqlite/0006_audit_outbox.sql"),
    ),
    (
        7,
        "provisioning",
        include_str!("../../../../migrations/postgres/0007_provisioning.sql"),
        include_str!("../../../../migrations/sqlite/0007_provisioning.sql"),
    ),
    (
        8,
        "sessions",
        include_str!("../../../../migrations/postgres/0008_sessions.sql"),
        include_str!("../../../../migrations/sqlite/0008_sessions.sql"),
    ),
    (
        9,
        "single sign-on",
        include_str!("../../../../migrations/postgres/0009_sso.sql"),
        include_str!("../../../../migrations/sqlite/0009_sso.sql"),
    ),
    (
        10,
        "limits",
        include_str!("../../../../migrations/postgres/0010_limits.sql"),
        include_str!("../../../../migrations/sqlite/0010_limits.sql"),
    ),
    (
        11,
        "budgets",
        include_str!("../../../../migrations/postgres/0011_budgets.sql"),
        include_str!("../../../../migrations/sqlite/0011_budgets.sql"),
    ),
    (
        12,
        "routing",
        include_str!("../../../../migrations/postgres/0012_routing.sql"),
        include_str!("../../../../migrations/sqlite/0012_routing.sql"),
    ),
    (
        13,
        "snapshot changes",
        include_str!("../../../../migrations/postgres/0013_snapshot_changes.sql"),
        include_str!("../../../../migrations/sqlite/0013_snapshot_changes.sql"),
    ),
];

type Result<T> = std::result::Result<T, ControlPlaneError>;

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// The store: a pool plus a signal raised after every committed snapshot change.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    changed: std::sync::Arc<Notify>,
    /// The key tagging the events mutations write into the audit outbox (none: not audited).
    outbox: Option<routero_crypto::MessageKey>,
    outbox_filled: std::sync::Arc<Notify>,
}

impl Store {
    /// Connects to `postgres://…` or `sqlite://…` and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = routero_sql::open(url, "_routero_control_plane_migrations", MIGRATIONS).await?;
        Ok(Self {
            pool,
            changed: std::sync::Arc::new(Notify::new()),
            outbox: None,
            outbox_filled: std::sync::Arc::new(Notify::new()),
        })
    }

    /// Raised after every committed change to what data planes enforce (one waiter: the
    /// snapshot publisher; a change made while it is busy is kept as a permit).
    pub fn changed(&self) -> &Notify {
        &self.changed
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Commits a change data planes enforce, with the events recording it (into the outbox,
    /// in the same transaction), and moves the snapshot version on; the next snapshot is
    /// reloaded whole.
    async fn commit_change(&self, tx: Transaction<'_, Any>, events: &[AuditEvent]) -> Result<()> {
        self.commit_versioned(tx, events, None).await
    }

    /// [`Self::commit_change`] for a change to the keys `key_ids` and nothing else: the next
    /// snapshot reloads those keys alone.
    async fn commit_key_change(
        &self,
        tx: Transaction<'_, Any>,
        events: &[AuditEvent],
        key_ids: &[&str],
    ) -> Result<()> {
        self.commit_versioned(tx, events, Some(to_json(&key_ids)?))
            .await
    }

    async fn commit_versioned(
        &self,
        mut tx: Transaction<'_, Any>,
        events: &[AuditEvent],
        key_ids: Option<String>,
    ) -> Result<()> {
        sqlx::query("UPDATE snapshot_version SET version = version + 1 WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO snapshot_changes (version, key_ids) \
             SELECT version, $1 FROM snapshot_version WHERE id = 1",
        )
        .bind(key_ids)
        .execute(&mut *tx)
        .await?;
        self.commit_recorded(tx, events).await?;
        self.changed.notify_one();
        Ok(())
    }

    /// Moves the snapshot version on with no data change (the policy bundle changed).
    pub async fn bump_snapshot_version(&self) -> Result<()> {
        let tx = self.pool.begin().await?;
        self.commit_change(tx, &[]).await
    }

    // ---- tenants ----

    /// Creates the tenant `name`; returns its id. `Conflict` if it exists.
    pub async fn create_tenant(&self, name: &str) -> Result<String> {
        let id = new_id("tnt");
        sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&id)
            .bind(name)
            .bind(routero_core::unix_now())
            .execute(&self.pool)
            .await
            .map_err(|e| unique_violation(e, Resource::Tenant))?;
        Ok(id)
    }

    /// The id of the tenant named `name`, created if missing.
    pub async fn ensure_tenant(&self, name: &str) -> Result<String> {
        if let Some(row) = sqlx::query("SELECT id FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
        {
            return Ok(row.try_get("id")?);
        }
        self.create_tenant(name).await
    }

    // ---- teams and users ----

    /// Creates a team through the admin API (SCIM does not own it).
    pub async fn create_team(
        &self,
        changer: &Changer,
        name: &str,
        external_id: Option<&str>,
    ) -> Result<Team> {
        let mut doc = serde_json::Map::new();
        doc.insert("displayName".into(), name.into());
        if let Some(external_id) = external_id {
            doc.insert("externalId".into(), external_id.into());
        }
        let mut tx = self.pool.begin().await?;
        let (id, events) = self
            .insert_resource(&mut tx, changer, Kind::Group, doc)
            .await?;
        self.commit_recorded(tx, &events).await?;
        Ok(Team {
            id,
            name: name.to_owned(),
            external_id: external_id.map(str::to_owned),
        })
    }

    /// Teams of a tenant, by name.
    pub async fn list_teams(&self, tenant_id: &str) -> Result<Vec<Team>> {
        sqlx::query(
            "SELECT id, name, external_id FROM teams WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY name",
        )
            .bind(tenant_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(Team {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    external_id: r.try_get("external_id")?,
                })
            })
            .collect()
    }

    /// Creates a user through the admin API (SCIM does not own it), member of `team_ids`
    /// (all in the same tenant).
    pub async fn create_user(&self, changer: &Changer, user: &User) -> Result<User> {
        let mut doc = serde_json::Map::new();
        doc.insert("userName".into(), user.user_name.clone().into());
        doc.insert("active".into(), user.active.into());
        if let Some(name) = &user.display_name {
            doc.insert("displayName".into(), name.clone().into());
        }
        if let Some(email) = &user.email {
            doc.insert(
                "emails".into(),
                serde_json::json!([{"value": email, "primary": true}]),
            );
        }
        if let Some(external_id) = &user.external_id {
            doc.insert("externalId".into(), external_id.clone().into());
        }
        let tenant_id = &changer.tenant_id;
        let mut tx = self.pool.begin().await?;
        let (id, events) = self
            .insert_resource(&mut tx, changer, Kind::User, doc)
            .await?;
        for team_id in &user.team_ids {
            require_in_tenant(&mut tx, Owned::Team, tenant_id, team_id).await?;
            sqlx::query("INSERT INTO team_members (team_id, user_id) VALUES ($1, $2)")
                .bind(team_id)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            self.reindex_group(&mut tx, tenant_id, team_id).await?;
        }
        self.commit_change(tx, &events).await?;
        Ok(User {
            id,
            scim_managed: false,
            ..user.clone()
        })
    }

    /// The name a user of the tenant goes by: their display name, else their user name.
    pub async fn user_name(&self, tenant_id: &str, user_id: &str) -> Result<Option<String>> {
        sqlx::query(
            "SELECT COALESCE(NULLIF(display_name, ''), user_name) AS name FROM users \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?
        .map(|row| row.try_get("name"))
        .transpose()
        .map_err(Into::into)
    }

    /// Users of a tenant with their team memberships, by user name.
    pub async fn list_users(&self, tenant_id: &str) -> Result<Vec<User>> {
        let rows = sqlx::query(
            // Booleans read as integers: the Any driver cannot decode SQLite's BOOLEAN.
            "SELECT id, user_name, email, display_name, external_id, \
             CAST(CASE WHEN active THEN 1 ELSE 0 END AS BIGINT) AS active, \
             CAST(CASE WHEN scim_managed THEN 1 ELSE 0 END AS BIGINT) AS managed FROM users \
             WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY user_name",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        let members = sqlx::query(
            "SELECT m.team_id, m.user_id FROM team_members m JOIN users u ON u.id = m.user_id \
             WHERE u.tenant_id = $1 ORDER BY m.team_id",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                let team_ids = members
                    .iter()
                    .filter(|m| m.try_get::<String, _>("user_id").is_ok_and(|u| u == id))
                    .map(|m| m.try_get("team_id"))
                    .collect::<std::result::Result<_, _>>()?;
                Ok(User {
                    id,
                    user_name: r.try_get("user_name")?,
                    email: r.try_get("email")?,
                    display_name: r.try_get("display_name")?,
                    external_id: r.try_get("external_id")?,
                    active: r.try_get::<i64, _>("active")? != 0,
                    team_ids,
                    scim_managed: r.try_get::<i64, _>("managed")? != 0,
                })
            })
            .collect()
    }

    // ---- provider credentials ----

    /// Stores a credential, with the events recording it; `seal(id)` encrypts its secret bound
    /// to the id it is given.
    pub async fn create_credential(
        &self,
        tenant_id: &str,
        name: &str,
        provider: &str,
        base_url: &str,
        seal: impl FnOnce(&str) -> Result<String>,
        events: Vec<AuditEvent>,
    ) -> Result<Credential> {
        let id = new_id("cred");
        let ciphertext = seal(&id)?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO credentials (id, tenant_id, name, provider, base_url, ciphertext, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(tenant_id)
        .bind(name)
        .bind(provider)
        .bind(base_url)
        .bind(&ciphertext)
        .bind(routero_core::unix_now())
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_violation(e, Resource::Credential))?;
        self.commit_change(tx, &naming(events, &id)).await?;
        Ok(Credential {
            id,
            name: name.to_owned(),
            provider: provider.to_owned(),
            base_url: base_url.to_owned(),
        })
    }

    /// Replaces a credential's base URL and sealed secret with what `change(row)` returns (it
    /// sees the stored row, to re-seal the secret under the new binding), with the events
    /// recording it. `NotFound` when the tenant has no credential of that name.
    pub async fn update_credential(
        &self,
        tenant_id: &str,
        name: &str,
        change: impl FnOnce(&SealedCredential) -> Result<(String, String)>,
        events: Vec<AuditEvent>,
    ) -> Result<Credential> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT id, tenant_id, name, provider, base_url, ciphertext FROM credentials \
             WHERE tenant_id = $1 AND name = $2",
        )
        .bind(tenant_id)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ControlPlaneError::NotFound(Resource::Credential))?;
        let current = sealed_credential(&row)?;
        let (base_url, ciphertext) = change(&current)?;
        sqlx::query("UPDATE credentials SET base_url = $1, ciphertext = $2 WHERE id = $3 AND tenant_id = $4")
            .bind(&base_url)
            .bind(&ciphertext)
            .bind(&current.credential.id)
            .bind(tenant_id)
            .execute(&mut *tx)
            .await?;
        self.commit_change(tx, &naming(events, &current.credential.id))
            .await?;
        Ok(Credential {
            base_url,
            ..current.credential
        })
    }

    /// Deletes a credential, with the events recording it: refused (`credential_in_use`)
    /// while a route deploys it, naming the routes.
    pub async fn delete_credential(
        &self,
        tenant_id: &str,
        name: &str,
        events: Vec<AuditEvent>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let id: String =
            sqlx::query("SELECT id FROM credentials WHERE tenant_id = $1 AND name = $2")
                .bind(tenant_id)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(ControlPlaneError::NotFound(Resource::Credential))?
                .try_get("id")?;
        let mut users = Vec::new();
        for row in sqlx::query(
            "SELECT name, deployments FROM model_routes WHERE tenant_id = $1 ORDER BY name",
        )
        .bind(tenant_id)
        .fetch_all(&mut *tx)
        .await?
        {
            let deployments: Vec<StoredDeployment> =
                from_json(&row.try_get::<String, _>("deployments")?)?;
            if deployments.iter().any(|d| d.credential_id == id) {
                users.push(row.try_get::<String, _>("name")?);
            }
        }
        if !users.is_empty() {
            return Err(ControlPlaneError::Rejected {
                code: ErrorCode::CredentialInUse,
                message: format!(
                    "models deploy it: {}; change or delete them first",
                    users.join(", ")
                ),
            });
        }
        delete_named(
            &mut tx,
            "DELETE FROM credentials WHERE tenant_id = $1 AND name = $2",
            (tenant_id, name),
            Resource::Credential,
        )
        .await?;
        self.commit_change(tx, &naming(events, &id)).await
    }

    /// Credentials of a tenant, by name, without secrets.
    pub async fn list_credentials(&self, tenant_id: &str) -> Result<Vec<Credential>> {
        Ok(self
            .sealed_credentials(Some(tenant_id))
            .await?
            .into_iter()
            .map(|c| c.credential)
            .collect())
    }

    async fn sealed_credentials(&self, tenant_id: Option<&str>) -> Result<Vec<SealedCredential>> {
        sqlx::query(
            "SELECT id, tenant_id, name, provider, base_url, ciphertext FROM credentials \
             WHERE $1 IS NULL OR tenant_id = $1 ORDER BY name, id",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(sealed_credential)
        .collect()
    }

    /// Re-encrypts every credential in one transaction with `reencrypt(row)`, which returns
    /// the new ciphertext or `None` to leave the row. Either every row is rewritten or none is.
    /// Returns how many rows changed.
    pub async fn reencrypt_credentials(
        &self,
        reencrypt: impl Fn(&SealedCredential) -> Result<Option<String>>,
    ) -> Result<usize> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "SELECT id, tenant_id, name, provider, base_url, ciphertext FROM credentials ORDER BY id",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut changed = 0;
        for row in &rows {
            let row = sealed_credential(row)?;
            if let Some(new) = reencrypt(&row)? {
                sqlx::query("UPDATE credentials SET ciphertext = $1 WHERE id = $2")
                    .bind(new)
                    .bind(&row.credential.id)
                    .execute(&mut *tx)
                    .await?;
                changed += 1;
            }
        }
        if changed == 0 {
            tx.commit().await?;
        } else {
            self.commit_change(tx, &[]).await?;
        }
        Ok(changed)
    }

    // ---- model routes ----

    /// Creates a route (every deployment's credential must belong to the tenant), with the
    /// events recording it.
    pub async fn create_route(&self, route: &Route, events: &[AuditEvent]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        require_credentials(&mut tx, route).await?;
        let deployments = serde_json::to_string(&route.deployments)
            .map_err(|e| ControlPlaneError::Corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT INTO model_routes \
             (tenant_id, name, deployments, created_at, tags, pricing, routing) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&route.tenant_id)
        .bind(&route.name)
        .bind(deployments)
        .bind(routero_core::unix_now())
        .bind(to_json(&route.tags)?)
        .bind(route.pricing.as_ref().map(to_json).transpose()?)
        .bind(to_json(&route.routing)?)
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_violation(e, Resource::Model))?;
        self.commit_change(tx, events).await
    }

    /// Replaces a route's deployments and tags (every deployment's credential must belong to
    /// the tenant), with the events recording it. `NotFound` when there is no such route.
    pub async fn replace_route(&self, route: &Route, events: &[AuditEvent]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        require_credentials(&mut tx, route).await?;
        let replaced = sqlx::query(
            "UPDATE model_routes SET deployments = $1, tags = $2, pricing = $5, routing = $6 \
             WHERE tenant_id = $3 AND name = $4",
        )
        .bind(to_json(&route.deployments)?)
        .bind(to_json(&route.tags)?)
        .bind(&route.tenant_id)
        .bind(&route.name)
        .bind(route.pricing.as_ref().map(to_json).transpose()?)
        .bind(to_json(&route.routing)?)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if replaced == 0 {
            return Err(ControlPlaneError::NotFound(Resource::Model));
        }
        self.commit_change(tx, events).await
    }

    /// Deletes a route, with the events recording it. `NotFound` when there is no such route.
    pub async fn delete_route(
        &self,
        tenant_id: &str,
        name: &str,
        events: &[AuditEvent],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        delete_named(
            &mut tx,
            "DELETE FROM model_routes WHERE tenant_id = $1 AND name = $2",
            (tenant_id, name),
            Resource::Model,
        )
        .await?;
        self.commit_change(tx, events).await
    }

    /// Routes of a tenant (all tenants with `None`), by name.
    pub async fn list_routes(&self, tenant_id: Option<&str>) -> Result<Vec<Route>> {
        sqlx::query(
            "SELECT tenant_id, name, deployments, tags, pricing, routing FROM model_routes \
             WHERE $1 IS NULL OR tenant_id = $1 ORDER BY tenant_id, name",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            let deployments: String = r.try_get("deployments")?;
            let tags: String = r.try_get("tags")?;
            Ok(Route {
                tenant_id: r.try_get("tenant_id")?,
                name: r.try_get("name")?,
                deployments: serde_json::from_str(&deployments)
                    .map_err(|e| ControlPlaneError::Corrupt(e.to_string()))?,
                tags: from_json(&tags)?,
                pricing: r
                    .try_get::<Option<String>, _>("pricing")?
                    .as_deref()
                    .map(from_json)
                    .transpose()?,
                routing: r
                    .try_get::<Option<String>, _>("routing")?
                    .as_deref()
                    .map(from_json)
                    .transpose()?
                    .unwrap_or_default(),
            })
        })
        .collect()
    }

    /// The id of a credential of the tenant, by name.
    pub async fn credential_id_by_name(
        &self,
        tenant_id: &str,
        name: &str,
    ) -> Result<Option<String>> {
        Ok(
            sqlx::query("SELECT id FROM credentials WHERE tenant_id = $1 AND name = $2")
                .bind(tenant_id)
                .bind(name)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.try_get("id"))
                .transpose()?,
        )
    }

    // ---- virtual keys ----

    /// Stores a new key record (its hash, never the key), with the events recording it.
    pub async fn insert_key(&self, key: &KeyRecord, events: &[AuditEvent]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        check_scope(
            &mut tx,
            &key.tenant_id,
            key.team_id.as_deref(),
            key.user_id.as_deref(),
        )
        .await?;
        sqlx::query(
            "INSERT INTO virtual_keys (id, tenant_id, key_hash, key_hint, team_id, user_id, models, \
             allowed_cidrs, metadata, expires_at, created_at, updated_at, roles, owner, limits) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13, $14)",
        )
        .bind(&key.id)
        .bind(&key.tenant_id)
        .bind(&key.key_hash)
        .bind(&key.key_hint)
        .bind(&key.team_id)
        .bind(&key.user_id)
        .bind(to_json(&key.models)?)
        .bind(to_json(&key.allowed_cidrs)?)
        .bind(to_json(&key.metadata)?)
        .bind(key.expires_at)
        .bind(key.created_at)
        .bind(to_json(&key.roles)?)
        .bind(&key.owner)
        .bind(to_json(&key.limits)?)
        .execute(&mut *tx)
        .await?;
        self.commit_key_change(tx, events, &[&key.id]).await
    }

    /// A key of the tenant by id, revoked or not.
    pub async fn get_key(&self, tenant_id: &str, key_id: &str) -> Result<KeyRecord> {
        let row = sqlx::query(select_keys!("WHERE tenant_id = $1 AND id = $2"))
            .bind(tenant_id)
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(ControlPlaneError::NotFound(Resource::Key))?;
        key_record(&row)
    }

    /// Keys of a tenant (only those `owner` created, when given), newest first; revoked ones
    /// only when asked.
    pub async fn list_keys(
        &self,
        tenant_id: &str,
        owner: Option<&str>,
        include_revoked: bool,
    ) -> Result<Vec<KeyRecord>> {
        sqlx::query(select_keys!(
            "WHERE tenant_id = $1 AND ($2 OR revoked_at IS NULL) AND ($3 IS NULL OR owner = $3) \
             ORDER BY created_at DESC, id DESC"
        ))
        .bind(tenant_id)
        .bind(include_revoked)
        .bind(owner)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(key_record)
        .collect()
    }

    /// Applies `changes` to an active key, with the events recording it.
    pub async fn update_key(
        &self,
        tenant_id: &str,
        key_id: &str,
        changes: &KeyChanges,
        events: &[AuditEvent],
    ) -> Result<KeyRecord> {
        let mut tx = self.pool.begin().await?;
        let current = active_key(&mut tx, tenant_id, key_id).await?;
        let next = KeyRecord {
            models: changes.models.clone().unwrap_or(current.models),
            allowed_cidrs: changes
                .allowed_cidrs
                .clone()
                .unwrap_or(current.allowed_cidrs),
            metadata: changes.metadata.clone().unwrap_or(current.metadata),
            expires_at: changes.expires_at.unwrap_or(current.expires_at),
            team_id: changes.team_id.clone().unwrap_or(current.team_id),
            user_id: changes.user_id.clone().unwrap_or(current.user_id),
            roles: changes.roles.clone().unwrap_or(current.roles),
            limits: current.limits.merged(&changes.limits),
            ..current
        };
        check_scope(
            &mut tx,
            tenant_id,
            next.team_id.as_deref(),
            next.user_id.as_deref(),
        )
        .await?;
        sqlx::query(
            "UPDATE virtual_keys SET models = $1, allowed_cidrs = $2, metadata = $3, expires_at = $4, \
             team_id = $5, user_id = $6, updated_at = $7, roles = $10, limits = $11 \
             WHERE id = $8 AND tenant_id = $9",
        )
        .bind(to_json(&next.models)?)
        .bind(to_json(&next.allowed_cidrs)?)
        .bind(to_json(&next.metadata)?)
        .bind(next.expires_at)
        .bind(&next.team_id)
        .bind(&next.user_id)
        .bind(routero_core::unix_now())
        .bind(key_id)
        .bind(tenant_id)
        .bind(to_json(&next.roles)?)
        .bind(to_json(&next.limits)?)
        .execute(&mut *tx)
        .await?;
        self.commit_key_change(tx, events, &[key_id]).await?;
        Ok(next)
    }

    /// Replaces an active key's secret (the old key stops working at once), with the events
    /// recording it.
    pub async fn replace_key_secret(
        &self,
        tenant_id: &str,
        key_id: &str,
        (key_hash, key_hint): (&[u8], &str),
        expires_at: Option<Option<i64>>,
        events: &[AuditEvent],
    ) -> Result<KeyRecord> {
        let mut tx = self.pool.begin().await?;
        let current = active_key(&mut tx, tenant_id, key_id).await?;
        let expires_at = expires_at.unwrap_or(current.expires_at);
        sqlx::query(
            "UPDATE virtual_keys SET key_hash = $1, key_hint = $2, expires_at = $3, updated_at = $4 \
             WHERE id = $5 AND tenant_id = $6",
        )
        .bind(key_hash)
        .bind(key_hint)
        .bind(expires_at)
        .bind(routero_core::unix_now())
        .bind(key_id)
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?;
        self.commit_key_change(tx, events, &[key_id]).await?;
        Ok(KeyRecord {
            key_hash: key_hash.to_vec(),
            key_hint: key_hint.to_owned(),
            expires_at,
            ..current
        })
    }

    /// The active keys of the tenant named by id or by hash, all or none: an unknown or
    /// revoked one fails the whole lookup.
    pub async fn active_keys(
        &self,
        tenant_id: &str,
        ids: &[String],
        hashes: &[Vec<u8>],
    ) -> Result<Vec<KeyRecord>> {
        let mut tx = self.pool.begin().await?;
        let mut keys = Vec::with_capacity(ids.len() + hashes.len());
        for id in ids {
            keys.push(active_key(&mut tx, tenant_id, id).await?);
        }
        for hash in hashes {
            let row = sqlx::query(select_keys!(
                "WHERE tenant_id = $1 AND key_hash = $2 AND revoked_at IS NULL"
            ))
            .bind(tenant_id)
            .bind(hash.as_slice())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(ControlPlaneError::NotFound(Resource::Key))?;
            keys.push(key_record(&row)?);
        }
        Ok(keys)
    }

    /// Revokes keys of the tenant, all or none: if any is unknown or already revoked, nothing
    /// changes. Returns the revoked ids. `events` records it (one per key, built by the caller
    /// from `ids`).
    pub async fn revoke_keys(
        &self,
        tenant_id: &str,
        ids: &[String],
        events: &[AuditEvent],
    ) -> Result<Vec<String>> {
        let mut tx = self.pool.begin().await?;
        let mut revoked = Vec::with_capacity(ids.len());
        for id in ids {
            revoked.push(active_key(&mut tx, tenant_id, id).await?.id);
        }
        let now = routero_core::unix_now();
        for id in &revoked {
            sqlx::query("UPDATE virtual_keys SET revoked_at = $1, updated_at = $1 WHERE id = $2 AND tenant_id = $3")
                .bind(now)
                .bind(id)
                .bind(tenant_id)
                .execute(&mut *tx)
                .await?;
        }
        let ids: Vec<&str> = revoked.iter().map(String::as_str).collect();
        self.commit_key_change(tx, events, &ids).await?;
        Ok(revoked)
    }

    // ---- guardrails ----

    /// The tenant's guardrail configuration (JSON), if it has one.
    pub async fn guardrails(&self, tenant_id: &str) -> Result<Option<String>> {
        sqlx::query("SELECT config FROM guardrails WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| Ok(row.try_get("config")?))
            .transpose()
    }

    /// Replaces the tenant's guardrail configuration; data planes apply it from the next
    /// snapshot.
    pub async fn put_guardrails(
        &self,
        tenant_id: &str,
        config: &str,
        events: &[AuditEvent],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO guardrails (tenant_id, config, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id) DO UPDATE SET config = excluded.config, \
             updated_at = excluded.updated_at",
        )
        .bind(tenant_id)
        .bind(config)
        .bind(routero_core::unix_now())
        .execute(&mut *tx)
        .await?;
        self.commit_change(tx, events).await
    }

    // ---- CORS ----

    /// The origins the tenant's web apps may call from (none when it lists none).
    pub async fn cors_origins(&self, tenant_id: &str) -> Result<Vec<String>> {
        sqlx::query("SELECT origins FROM cors_origins WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| from_json(&row.try_get::<String, _>("origins")?))
            .transpose()
            .map(Option::unwrap_or_default)
    }

    /// Replaces the tenant's CORS origins; data planes apply them from the next snapshot.
    pub async fn put_cors_origins(
        &self,
        tenant_id: &str,
        origins: &[String],
        events: &[AuditEvent],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        if origins.is_empty() {
            sqlx::query("DELETE FROM cors_origins WHERE tenant_id = $1")
                .bind(tenant_id)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query(
                "INSERT INTO cors_origins (tenant_id, origins, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id) DO UPDATE SET origins = excluded.origins, \
                 updated_at = excluded.updated_at",
            )
            .bind(tenant_id)
            .bind(to_json(&origins)?)
            .bind(routero_core::unix_now())
            .execute(&mut *tx)
            .await?;
        }
        self.commit_change(tx, events).await
    }

    // ---- budgets and limits of tenants, teams and users ----

    /// The budget and limits of `scope` (`tenant`, `team:<id>`, `user:<id>`) in the tenant.
    pub async fn allowance(&self, tenant_id: &str, scope: &str) -> Result<Option<Allowance>> {
        sqlx::query("SELECT limits FROM allowances WHERE tenant_id = $1 AND scope = $2")
            .bind(tenant_id)
            .bind(scope)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| from_json(&row.try_get::<String, _>("limits")?))
            .transpose()
    }

    /// Every scope of the tenant with a budget or limits, by scope.
    pub async fn list_allowances(&self, tenant_id: &str) -> Result<Vec<(String, Allowance)>> {
        sqlx::query("SELECT scope, limits FROM allowances WHERE tenant_id = $1 ORDER BY scope")
            .bind(tenant_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                Ok((
                    row.try_get("scope")?,
                    from_json(&row.try_get::<String, _>("limits")?)?,
                ))
            })
            .collect()
    }

    /// Replaces the budget and limits of `scope` in the tenant (an unlimited one is removed);
    /// data planes count by them from the next snapshot.
    pub async fn put_allowance(
        &self,
        tenant_id: &str,
        scope: &str,
        allowance: &Allowance,
        events: &[AuditEvent],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        if let Some(team) = scope.strip_prefix("team:") {
            require_in_tenant(&mut tx, Owned::Team, tenant_id, team).await?;
        } else if let Some(user) = scope.strip_prefix("user:") {
            require_in_tenant(&mut tx, Owned::User, tenant_id, user).await?;
        }
        if allowance.is_unlimited() {
            sqlx::query("DELETE FROM allowances WHERE tenant_id = $1 AND scope = $2")
                .bind(tenant_id)
                .bind(scope)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query(
                "INSERT INTO allowances (tenant_id, scope, limits, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (tenant_id, scope) DO UPDATE SET limits = excluded.limits, \
                 updated_at = excluded.updated_at",
            )
            .bind(tenant_id)
            .bind(scope)
            .bind(to_json(allowance)?)
            .bind(routero_core::unix_now())
            .execute(&mut *tx)
            .await?;
        }
        self.commit_change(tx, events).await
    }

    // ---- snapshots ----

    /// The current snapshot version.
    pub async fn snapshot_version(&self) -> Result<u64> {
        let row = sqlx::query("SELECT version FROM snapshot_version WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        let version: i64 = row.try_get("version")?;
        u64::try_from(version).map_err(|_| ControlPlaneError::Corrupt("negative version".into()))
    }

    /// Everything data planes enforce, read consistently at one version: the version is read
    /// before and after, and the read is repeated if a change committed in between.
    pub async fn load_state(&self) -> Result<StateRows> {
        loop {
            let version = self.snapshot_version().await?;
            let keys = sqlx::query(select_keys!("WHERE ", served_keys!(), " ORDER BY id"))
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(key_record)
                .collect::<Result<Vec<_>>>()?;
            let keys = self.with_mapped_roles(keys).await?;
            let routes = self.list_routes(None).await?;
            let credentials = self.sealed_credentials(None).await?;
            let guardrails =
                sqlx::query("SELECT tenant_id, config FROM guardrails ORDER BY tenant_id")
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(|row| Ok((row.try_get("tenant_id")?, row.try_get("config")?)))
                    .collect::<Result<Vec<_>>>()?;
            let cors =
                sqlx::query("SELECT tenant_id, origins FROM cors_origins ORDER BY tenant_id")
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(|row| {
                        Ok((
                            row.try_get("tenant_id")?,
                            from_json(&row.try_get::<String, _>("origins")?)?,
                        ))
                    })
                    .collect::<Result<Vec<_>>>()?;
            let allowances = sqlx::query(
                "SELECT tenant_id, scope, limits FROM allowances ORDER BY tenant_id, scope",
            )
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| {
                Ok((
                    row.try_get("tenant_id")?,
                    row.try_get("scope")?,
                    from_json(&row.try_get::<String, _>("limits")?)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
            if self.snapshot_version().await? == version {
                return Ok(StateRows {
                    version,
                    keys,
                    routes,
                    credentials,
                    guardrails,
                    cors,
                    allowances,
                });
            }
        }
    }

    /// The keys changed after version `since`, read consistently at the current version, when
    /// every version since changed keys alone; `None` when one may have changed anything else
    /// (or left no record of what it changed): then the whole state must be reloaded.
    pub async fn changed_keys(&self, since: u64) -> Result<Option<ChangedKeys>> {
        loop {
            let version = self.snapshot_version().await?;
            let rows = sqlx::query(
                "SELECT key_ids FROM snapshot_changes WHERE version > $1 AND version <= $2",
            )
            .bind(i64::try_from(since).unwrap_or(i64::MAX))
            .bind(i64::try_from(version).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
            if u64::try_from(rows.len()).ok() != version.checked_sub(since) {
                return Ok(None);
            }
            let mut ids = std::collections::HashSet::new();
            for row in &rows {
                let Some(listed) = row.try_get::<Option<String>, _>("key_ids")? else {
                    return Ok(None);
                };
                ids.extend(from_json::<Vec<String>>(&listed)?);
            }
            let listed: Vec<&String> = ids.iter().collect();
            let mut keys = Vec::with_capacity(listed.len());
            for chunk in listed.chunks(IDS_PER_QUERY) {
                let parameters: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
                let sql = format!(
                    "{} AND id IN ({})",
                    select_keys!("WHERE ", served_keys!()),
                    parameters.join(", ")
                );
                // Built of literals and numbered parameters; the ids are bound.
                let mut query = sqlx::query(provisioning::built(sql));
                for id in chunk {
                    query = query.bind(id.as_str());
                }
                for row in query.fetch_all(&self.pool).await? {
                    keys.push(key_record(&row)?);
                }
            }
            let keys = self.with_mapped_roles(keys).await?;
            if self.snapshot_version().await? == version {
                return Ok(Some(ChangedKeys { version, ids, keys }));
            }
        }
    }

    /// Forgets which keys versions up to `version` changed (a reload from before it is whole).
    pub async fn prune_snapshot_changes(&self, version: u64) -> Result<()> {
        sqlx::query("DELETE FROM snapshot_changes WHERE version <= $1")
            .bind(i64::try_from(version).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

fn key_record(row: &AnyRow) -> Result<KeyRecord> {
    let models: String = row.try_get("models")?;
    let cidrs: String = row.try_get("allowed_cidrs")?;
    let metadata: String = row.try_get("metadata")?;
    let roles: String = row.try_get("roles")?;
    Ok(KeyRecord {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        key_hash: row.try_get("key_hash")?,
        key_hint: row.try_get("key_hint")?,
        team_id: row.try_get("team_id")?,
        user_id: row.try_get("user_id")?,
        models: from_json(&models)?,
        allowed_cidrs: from_json(&cidrs)?,
        metadata: from_json(&metadata)?,
        expires_at: row.try_get("expires_at")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
        roles: from_json(&roles)?,
        owner: row.try_get("owner")?,
        limits: from_json(&row.try_get::<String, _>("limits")?)?,
    })
}

fn sealed_credential(row: &AnyRow) -> Result<SealedCredential> {
    Ok(SealedCredential {
        credential: Credential {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            provider: row.try_get("provider")?,
            base_url: row.try_get("base_url")?,
        },
        tenant_id: row.try_get("tenant_id")?,
        ciphertext: row.try_get("ciphertext")?,
    })
}

async fn active_key(
    tx: &mut Transaction<'_, Any>,
    tenant_id: &str,
    key_id: &str,
) -> Result<KeyRecord> {
    let row = sqlx::query(select_keys!(
        "WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL"
    ))
    .bind(tenant_id)
    .bind(key_id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(ControlPlaneError::NotFound(Resource::Key))?;
    key_record(&row)
}

/// Rows that belong to a tenant and that other rows refer to.
#[derive(Clone, Copy)]
enum Owned {
    Team,
    User,
    Credential,
}

impl Owned {
    fn exists_sql(self) -> &'static str {
        match self {
            Self::Team => {
                "SELECT 1 AS one FROM teams WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL"
            }
            Self::User => {
                "SELECT 1 AS one FROM users WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL"
            }
            Self::Credential => "SELECT 1 AS one FROM credentials WHERE tenant_id = $1 AND id = $2",
        }
    }

    fn resource(self) -> Resource {
        match self {
            Self::Team => Resource::Team,
            Self::User => Resource::User,
            Self::Credential => Resource::Credential,
        }
    }
}

/// Every deployment's credential belongs to the route's tenant.
async fn require_credentials(tx: &mut Transaction<'_, Any>, route: &Route) -> Result<()> {
    for deployment in &route.deployments {
        require_in_tenant(
            tx,
            Owned::Credential,
            &route.tenant_id,
            &deployment.credential_id,
        )
        .await?;
    }
    Ok(())
}

impl Store {
    /// Sets `revoked_at` on the live row `id` of the tenant in `table` (a fixed name), with the
    /// events recording it; `NotFound(what)` when there is none.
    async fn revoke_row(
        &self,
        table: &'static str,
        (tenant_id, id): (&str, &str),
        what: Resource,
        events: &[AuditEvent],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let revoked = sqlx::query(provisioning::built(format!(
            "UPDATE {table} SET revoked_at = $1 WHERE tenant_id = $2 AND id = $3 AND revoked_at IS NULL"
        )))
        .bind(routero_core::unix_now())
        .bind(tenant_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if revoked.rows_affected() == 0 {
            return Err(ControlPlaneError::NotFound(what));
        }
        self.commit_recorded(tx, events).await
    }
}

/// Runs a `DELETE … WHERE tenant_id = $1 AND name = $2`; `NotFound(what)` when nothing was.
async fn delete_named(
    tx: &mut Transaction<'_, Any>,
    statement: &'static str,
    (tenant_id, name): (&str, &str),
    what: Resource,
) -> Result<()> {
    let deleted = sqlx::query(statement)
        .bind(tenant_id)
        .bind(name)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    if deleted == 0 {
        return Err(ControlPlaneError::NotFound(what));
    }
    Ok(())
}

/// Fails unless `id` names a row of that kind in `tenant_id`: the store's own tenant wall.
async fn require_in_tenant(
    tx: &mut Transaction<'_, Any>,
    kind: Owned,
    tenant_id: &str,
    id: &str,
) -> Result<()> {
    sqlx::query(kind.exists_sql())
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .map(|_| ())
        .ok_or(ControlPlaneError::NotFound(kind.resource()))
}

async fn check_scope(
    tx: &mut Transaction<'_, Any>,
    tenant_id: &str,
    team_id: Option<&str>,
    user_id: Option<&str>,
) -> Result<()> {
    if let Some(team) = team_id {
        require_in_tenant(tx, Owned::Team, tenant_id, team).await?;
    }
    if let Some(user) = user_id {
        require_in_tenant(tx, Owned::User, tenant_id, user).await?;
        // A write that changes nothing, to hold the user's row until this transaction ends: a
        // deactivation racing this key waits for it, then revokes it (or this waits for the
        // deactivation, then sees it).
        let active = sqlx::query("UPDATE users SET active = active WHERE id = $1 AND active")
            .bind(user)
            .execute(&mut **tx)
            .await?;
        if active.rows_affected() == 0 {
            return Err(ControlPlaneError::rejected(
                ErrorCode::UserInactive,
                "the user is deactivated; no key may be issued for them",
            ));
        }
        provisioning::require_roles(tx, tenant_id, user).await?;
    }
    Ok(())
}

fn unique_violation(error: sqlx::Error, what: Resource) -> ControlPlaneError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => ControlPlaneError::Conflict(what),
        _ => ControlPlaneError::Database(error),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| ControlPlaneError::Corrupt(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| ControlPlaneError::Corrupt(e.to_string()))
}
