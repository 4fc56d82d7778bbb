//! Who may use the admin API: admin keys with their roles, and each tenant's custom roles.

use routero_core::{ErrorCode, Resource};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use routero_core::audit::AuditEvent;

use super::{
    Owned, Result, Store, delete_named, from_json, naming, new_id, require_in_tenant, to_json,
    unique_violation,
};
use crate::ControlPlaneError;
use crate::store::{AdminKey, AdminPrincipal, CustomRole};

impl Store {
    /// Number of active admin keys of a tenant.
    pub async fn admin_key_count(&self, tenant_id: &str) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM admin_keys WHERE tenant_id = $1 AND revoked_at IS NULL",
        )
        .bind(tenant_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Stores an admin key's hash with its name, roles and user (one of the tenant's, when
    /// given), with the events recording it; returns the key's record.
    pub async fn insert_admin_key(
        &self,
        tenant_id: &str,
        hash: &[u8],
        (name, roles, user_id): (&str, &[String], Option<&str>),
        events: Vec<AuditEvent>,
    ) -> Result<AdminKey> {
        let key = AdminKey {
            id: new_id("adm"),
            name: name.to_owned(),
            roles: sorted(roles.to_vec()),
            user_id: user_id.map(str::to_owned),
            created_at: routero_core::unix_now(),
            revoked: false,
        };
        let mut tx = self.pool.begin().await?;
        if let Some(user) = user_id {
            require_in_tenant(&mut tx, Owned::User, tenant_id, user).await?;
        }
        sqlx::query(
            "INSERT INTO admin_keys (id, tenant_id, key_hash, name, roles, user_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&key.id)
        .bind(tenant_id)
        .bind(hash)
        .bind(&key.name)
        .bind(to_json(&key.roles)?)
        .bind(&key.user_id)
        .bind(key.created_at)
        .execute(&mut *tx)
        .await?;
        self.commit_recorded(tx, &naming(events, &key.id)).await?;
        Ok(key)
    }

    /// Whether an admin key with this hash was ever registered, and whether it is revoked.
    pub async fn admin_key_state(&self, hash: &[u8]) -> Result<Option<bool>> {
        let row = sqlx::query("SELECT revoked_at FROM admin_keys WHERE key_hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Ok(row.try_get::<Option<i64>, _>("revoked_at")?.is_some()))
            .transpose()
    }

    /// The principal of an active admin key with this hash, with the permissions of the
    /// tenant's custom roles it holds and the teams of its user. A key acting for a user who
    /// is deactivated or deleted opens nothing while the user is.
    pub async fn find_admin_key(&self, hash: &[u8]) -> Result<Option<AdminPrincipal>> {
        let Some(row) = sqlx::query(
            "SELECT id, tenant_id, roles, user_id FROM admin_keys \
             WHERE key_hash = $1 AND revoked_at IS NULL AND (user_id IS NULL OR user_id IN \
             (SELECT id FROM users WHERE active AND deleted_at IS NULL))",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let roles: Vec<String> = from_json(&row.try_get::<String, _>("roles")?)?;
        let principal = self
            .principal_of(
                row.try_get("id")?,
                row.try_get("tenant_id")?,
                roles,
                row.try_get("user_id")?,
            )
            .await?;
        Ok(Some(principal))
    }

    /// The principal `id` of the tenant acting with `roles` (for a user, if it acts for one):
    /// with the permissions of the tenant's custom roles among them, and the user's teams.
    pub(super) async fn principal_of(
        &self,
        id: String,
        tenant_id: String,
        roles: Vec<String>,
        user_id: Option<String>,
    ) -> Result<AdminPrincipal> {
        let permissions: Vec<String> = self
            .list_roles(&tenant_id)
            .await?
            .into_iter()
            .filter(|role| roles.contains(&role.name))
            .flat_map(|role| role.permissions)
            .collect();
        let teams = sqlx::query(
            "SELECT m.team_id FROM team_members m JOIN teams t ON t.id = m.team_id \
             WHERE m.user_id = $1 AND t.tenant_id = $2 AND t.deleted_at IS NULL",
        )
        .bind(&user_id)
        .bind(&tenant_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| row.try_get("team_id"))
        .collect::<std::result::Result<_, _>>()?;
        Ok(AdminPrincipal {
            key_id: id,
            tenant_id,
            roles: sorted(roles),
            permissions: sorted(permissions),
            user_id,
            teams: sorted(teams),
            session_id: None,
        })
    }

    /// The tenant's admin keys, oldest first; revoked ones only when asked.
    pub async fn list_admin_keys(
        &self,
        tenant_id: &str,
        include_revoked: bool,
    ) -> Result<Vec<AdminKey>> {
        sqlx::query(
            "SELECT id, name, roles, user_id, created_at, revoked_at FROM admin_keys \
             WHERE tenant_id = $1 AND ($2 OR revoked_at IS NULL) ORDER BY created_at, id",
        )
        .bind(tenant_id)
        .bind(include_revoked)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(admin_key)
        .collect()
    }

    /// Revokes an active admin key of the tenant. Refused (`Invalid`, `last_admin_key`) when
    /// it is the tenant's last active key with the `admin` role, which would lock the tenant
    /// out of its own administration.
    pub async fn revoke_admin_key(
        &self,
        tenant_id: &str,
        key_id: &str,
        events: &[AuditEvent],
    ) -> Result<AdminKey> {
        let mut tx = self.pool.begin().await?;
        let active = sqlx::query(
            "SELECT id, name, roles, user_id, created_at, revoked_at FROM admin_keys \
             WHERE tenant_id = $1 AND revoked_at IS NULL",
        )
        .bind(tenant_id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(admin_key)
        .collect::<Result<Vec<_>>>()?;
        let target = active
            .iter()
            .find(|key| key.id == key_id)
            .cloned()
            .ok_or(ControlPlaneError::NotFound(Resource::AdminKey))?;
        let is_admin = |key: &AdminKey| key.roles.iter().any(|r| r == "admin");
        if is_admin(&target) && active.iter().filter(|k| is_admin(k)).count() == 1 {
            return Err(ControlPlaneError::Rejected {
                code: ErrorCode::LastAdminKey,
                message: "this is the tenant's last admin key with the admin role".into(),
            });
        }
        sqlx::query("UPDATE admin_keys SET revoked_at = $1 WHERE tenant_id = $2 AND id = $3")
            .bind(routero_core::unix_now())
            .bind(tenant_id)
            .bind(key_id)
            .execute(&mut *tx)
            .await?;
        self.commit_recorded(tx, events).await?;
        Ok(AdminKey {
            revoked: true,
            ..target
        })
    }

    /// Creates or replaces the tenant's custom role `name`, with the events recording it.
    pub async fn put_role(
        &self,
        tenant_id: &str,
        role: &CustomRole,
        events: &[AuditEvent],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let now = routero_core::unix_now();
        sqlx::query(
            "INSERT INTO roles (tenant_id, name, permissions, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT (tenant_id, name) \
             DO UPDATE SET permissions = excluded.permissions, updated_at = excluded.updated_at",
        )
        .bind(tenant_id)
        .bind(&role.name)
        .bind(to_json(&role.permissions)?)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_violation(e, Resource::Role))?;
        self.commit_recorded(tx, events).await
    }

    /// The tenant's custom role `name`, if it exists.
    pub async fn role(&self, tenant_id: &str, name: &str) -> Result<Option<CustomRole>> {
        sqlx::query("SELECT name, permissions FROM roles WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(custom_role)
            .transpose()
    }

    /// The tenant's custom roles by name.
    pub async fn list_roles(&self, tenant_id: &str) -> Result<Vec<CustomRole>> {
        sqlx::query("SELECT name, permissions FROM roles WHERE tenant_id = $1 ORDER BY name")
            .bind(tenant_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(custom_role)
            .collect()
    }

    /// Deletes the tenant's custom role `name` and takes the name off every admin key and
    /// virtual key of the tenant, in one transaction: a role created later under the same
    /// name grants them nothing.
    pub async fn delete_role(
        &self,
        tenant_id: &str,
        name: &str,
        events: &[AuditEvent],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        delete_named(
            &mut tx,
            "DELETE FROM roles WHERE tenant_id = $1 AND name = $2",
            (tenant_id, name),
            Resource::Role,
        )
        .await?;
        for (id, roles) in without_role(&mut tx, HELD_BY_ADMIN_KEYS, tenant_id, name).await? {
            sqlx::query("UPDATE admin_keys SET roles = $1 WHERE tenant_id = $2 AND id = $3")
                .bind(to_json(&roles)?)
                .bind(tenant_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let now = routero_core::unix_now();
        for (id, roles) in without_role(&mut tx, HELD_BY_VIRTUAL_KEYS, tenant_id, name).await? {
            sqlx::query(
                "UPDATE virtual_keys SET roles = $1, updated_at = $2 WHERE tenant_id = $3 AND id = $4",
            )
            .bind(to_json(&roles)?)
            .bind(now)
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        // Virtual keys' roles reach data planes in snapshots.
        self.commit_change(tx, events).await
    }
}

const HELD_BY_ADMIN_KEYS: &str =
    "SELECT id, roles FROM admin_keys WHERE tenant_id = $1 AND roles LIKE $2";
const HELD_BY_VIRTUAL_KEYS: &str =
    "SELECT id, roles FROM virtual_keys WHERE tenant_id = $1 AND roles LIKE $2";

/// The rows (`id`, `roles` as a JSON array) that `holders` finds holding role `name` in the
/// tenant, each with its roles but that one.
async fn without_role(
    tx: &mut Transaction<'_, Any>,
    holders: &'static str,
    tenant_id: &str,
    name: &str,
) -> Result<Vec<(String, Vec<String>)>> {
    // Role names are JSON strings without escapes (letters, digits, -_.:/@), so the quoted
    // name finds every holder; `_` matching any character only finds more, dropped below.
    let rows = sqlx::query(holders)
        .bind(tenant_id)
        .bind(format!("%\"{name}\"%"))
        .fetch_all(&mut **tx)
        .await?;
    let mut changed = Vec::new();
    for row in &rows {
        let roles: Vec<String> = from_json(&row.try_get::<String, _>("roles")?)?;
        if roles.iter().any(|role| role == name) {
            let kept = roles.into_iter().filter(|role| role != name).collect();
            changed.push((row.try_get("id")?, kept));
        }
    }
    Ok(changed)
}

fn custom_role(row: &AnyRow) -> Result<CustomRole> {
    Ok(CustomRole {
        name: row.try_get("name")?,
        permissions: from_json(&row.try_get::<String, _>("permissions")?)?,
    })
}

fn admin_key(row: &AnyRow) -> Result<AdminKey> {
    Ok(AdminKey {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        roles: from_json(&row.try_get::<String, _>("roles")?)?,
        user_id: row.try_get("user_id")?,
        created_at: row.try_get("created_at")?,
        revoked: row.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
    })
}

fn sorted(mut items: Vec<String>) -> Vec<String> {
    items.sort();
    items.dedup();
    items
}
