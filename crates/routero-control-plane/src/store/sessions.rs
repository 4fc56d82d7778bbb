//! Break-glass local admins and server-side sessions.
//!
//! A session is found by the HMAC of its cookie token; it lives until its absolute expiry, or
//! until it has been idle longer than the idle timeout, or until it is revoked (logout, an
//! admin, deprovisioning of its user, deletion of its local admin). A local admin's failed
//! logins are counted; past the limit the account is locked for a while.

use routero_core::Resource;
use routero_core::audit::AuditEvent;
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{AdminPrincipal, Result, Store, from_json, naming, new_id, to_json, unique_violation};
use crate::ControlPlaneError;

/// A local admin's record; never the password.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LocalAdmin {
    /// Identifier: the principal id its sessions act as.
    pub id: String,
    /// The name it signs in with.
    pub username: String,
    /// Roles its sessions act with.
    pub roles: Vec<String>,
    /// Unix seconds of creation.
    pub created_at: i64,
    /// Until when it is locked after too many failed logins (Unix seconds).
    pub locked_until: Option<i64>,
}

/// A session's record; never its token.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Session {
    /// Identifier (not the cookie's token).
    pub id: String,
    /// The user (SSO) who signed in.
    pub user_id: Option<String>,
    /// The local admin who signed in.
    pub local_admin_id: Option<String>,
    /// Roles it acts with.
    pub roles: Vec<String>,
    /// Where it was opened from.
    pub source_ip: Option<String>,
    /// Unix seconds of sign-in.
    pub created_at: i64,
    /// Unix seconds of its last request.
    pub last_seen_at: i64,
    /// Unix seconds of its absolute expiry.
    pub expires_at: i64,
}

/// A session found for a request: who it is, and the HMAC of its CSRF token.
#[derive(Debug, Clone)]
pub struct LiveSession {
    /// The session.
    pub session: Session,
    /// The principal it acts as.
    pub principal: AdminPrincipal,
    /// HMAC of its CSRF token.
    pub csrf_hash: Vec<u8>,
}

/// What a new session is for.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    /// HMAC of the cookie's token.
    pub token_hash: &'a [u8],
    /// HMAC of the CSRF token.
    pub csrf_hash: &'a [u8],
    /// The user (SSO) signing in.
    pub user_id: Option<&'a str>,
    /// The local admin signing in.
    pub local_admin_id: Option<&'a str>,
    /// Roles it acts with.
    pub roles: &'a [String],
    /// Where it is opened from.
    pub source_ip: Option<&'a str>,
    /// Seconds until its absolute expiry.
    pub lifetime: i64,
}

const SESSION_COLUMNS: &str = "SELECT id, tenant_id, csrf_hash, user_id, local_admin_id, roles, \
     source_ip, created_at, last_seen_at, expires_at FROM sessions";

fn session(row: &AnyRow) -> Result<Session> {
    Ok(Session {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        local_admin_id: row.try_get("local_admin_id")?,
        roles: from_json(&row.try_get::<String, _>("roles")?)?,
        source_ip: row.try_get("source_ip")?,
        created_at: row.try_get("created_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

fn local_admin(row: &AnyRow) -> Result<LocalAdmin> {
    Ok(LocalAdmin {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        roles: from_json(&row.try_get::<String, _>("roles")?)?,
        created_at: row.try_get("created_at")?,
        locked_until: row.try_get("locked_until")?,
    })
}

impl Store {
    /// The id of the tenant with this id or name.
    pub async fn tenant_id(&self, id_or_name: &str) -> Result<Option<String>> {
        sqlx::query("SELECT id FROM tenants WHERE id = $1 OR name = $1 ORDER BY id LIMIT 1")
            .bind(id_or_name)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| Ok(row.try_get("id")?))
            .transpose()
    }

    // ---- local admins ----

    /// Creates a local admin with an Argon2id password hash.
    pub async fn create_local_admin(
        &self,
        tenant_id: &str,
        username: &str,
        password_hash: &str,
        roles: &[String],
        events: Vec<AuditEvent>,
    ) -> Result<LocalAdmin> {
        let mut tx = self.pool.begin().await?;
        let admin = LocalAdmin {
            id: new_id("lad"),
            username: username.to_owned(),
            roles: roles.to_vec(),
            created_at: routero_core::unix_now(),
            locked_until: None,
        };
        sqlx::query(
            "INSERT INTO local_admins (id, tenant_id, username, password_hash, roles, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&admin.id)
        .bind(tenant_id)
        .bind(username)
        .bind(password_hash)
        .bind(to_json(&admin.roles)?)
        .bind(admin.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_violation(e, Resource::LocalAdmin))?;
        self.commit_recorded(tx, &naming(events, &admin.id)).await?;
        Ok(admin)
    }

    /// The tenant's local admins, by name.
    pub async fn list_local_admins(&self, tenant_id: &str) -> Result<Vec<LocalAdmin>> {
        sqlx::query(
            "SELECT id, username, roles, created_at, locked_until FROM local_admins \
             WHERE tenant_id = $1 ORDER BY username",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(local_admin)
        .collect()
    }

    /// Deletes a local admin, ends its sessions and revokes the keys they minted.
    pub async fn delete_local_admin(
        &self,
        changer: &super::Changer,
        id: &str,
        mut events: Vec<AuditEvent>,
    ) -> Result<()> {
        let tenant_id = changer.tenant_id.as_str();
        let mut tx = self.pool.begin().await?;
        // Keys its sessions minted die with it.
        let keys = super::provisioning::revoke_keys(
            &mut tx,
            changer,
            super::provisioning::KeysOf::Owner(id),
            "local_admin_deleted",
        );
        events.extend(keys.await?);
        sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE tenant_id = $2 AND local_admin_id = $3 AND revoked_at IS NULL")
            .bind(routero_core::unix_now())
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE sessions SET local_admin_id = NULL WHERE local_admin_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM local_admins WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(ControlPlaneError::NotFound(Resource::LocalAdmin));
        }
        self.commit_change(tx, &events).await
    }

    /// A local admin of the tenant by name, with its password hash, for a login.
    pub async fn local_admin_login(
        &self,
        tenant_id: &str,
        username: &str,
    ) -> Result<Option<(LocalAdmin, String)>> {
        sqlx::query(
            "SELECT id, username, roles, created_at, locked_until, password_hash FROM local_admins \
             WHERE tenant_id = $1 AND username = $2",
        )
        .bind(tenant_id)
        .bind(username)
        .fetch_optional(&self.pool)
        .await?
        .map(|row| Ok((local_admin(&row)?, row.try_get("password_hash")?)))
        .transpose()
    }

    /// Counts a login attempt of a local admin before its password is checked; `None` when
    /// the account is locked or has had `limit` attempts since its last success or lock.
    /// Returns the attempts counted, this one included.
    pub async fn local_admin_attempt(&self, id: &str, limit: i64) -> Result<Option<i64>> {
        sqlx::query(
            "UPDATE local_admins SET failures = failures + 1 WHERE id = $1 \
             AND (locked_until IS NULL OR locked_until <= $2) AND failures < $3 RETURNING failures",
        )
        .bind(id)
        .bind(routero_core::unix_now())
        .bind(limit)
        .fetch_optional(&self.pool)
        .await?
        .map(|row| Ok(row.try_get("failures")?))
        .transpose()
    }

    /// Locks a local admin for `seconds` and starts its count again; returns the lock's end.
    pub async fn local_admin_lock(&self, id: &str, seconds: i64) -> Result<i64> {
        let until = routero_core::unix_now().saturating_add(seconds);
        sqlx::query("UPDATE local_admins SET failures = 0, locked_until = $1 WHERE id = $2")
            .bind(until)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(until)
    }

    /// Clears a local admin's failure count after a successful login.
    pub async fn local_admin_succeeded(&self, id: &str) -> Result<()> {
        sqlx::query("UPDATE local_admins SET failures = 0, locked_until = NULL WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- sessions ----

    /// Opens a session, with the events recording the login.
    pub async fn create_session(
        &self,
        tenant_id: &str,
        new: &NewSession<'_>,
        events: Vec<AuditEvent>,
    ) -> Result<Session> {
        let now = routero_core::unix_now();
        let mut tx = self.pool.begin().await?;
        let record = Session {
            id: new_id("ses"),
            user_id: new.user_id.map(str::to_owned),
            local_admin_id: new.local_admin_id.map(str::to_owned),
            roles: new.roles.to_vec(),
            source_ip: new.source_ip.map(str::to_owned),
            created_at: now,
            last_seen_at: now,
            expires_at: now + new.lifetime,
        };
        sqlx::query(
            "INSERT INTO sessions (id, tenant_id, token_hash, csrf_hash, user_id, local_admin_id, roles, \
             source_ip, created_at, last_seen_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10)",
        )
        .bind(&record.id)
        .bind(tenant_id)
        .bind(new.token_hash)
        .bind(new.csrf_hash)
        .bind(&record.user_id)
        .bind(&record.local_admin_id)
        .bind(to_json(&record.roles)?)
        .bind(&record.source_ip)
        .bind(now)
        .bind(record.expires_at)
        .execute(&mut *tx)
        .await?;
        self.commit_recorded(tx, &naming(events, &record.id))
            .await?;
        Ok(record)
    }

    /// The live session with this token hash (not revoked, not expired, not idle longer than
    /// `idle_seconds`), marked as seen now; with the principal it acts as.
    pub async fn find_session(
        &self,
        token_hash: &[u8],
        idle_seconds: i64,
    ) -> Result<Option<LiveSession>> {
        let now = routero_core::unix_now();
        let Some(row) = sqlx::query(super::provisioning::built(format!(
            "{SESSION_COLUMNS} WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > $2 \
             AND last_seen_at > $3"
        )))
        .bind(token_hash)
        .bind(now)
        .bind(now - idle_seconds)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let session = session(&row)?;
        let tenant_id: String = row.try_get("tenant_id")?;
        let csrf_hash: Vec<u8> = row.try_get("csrf_hash")?;
        sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id = $2")
            .bind(now)
            .bind(&session.id)
            .execute(&self.pool)
            .await?;
        let principal_id = session
            .local_admin_id
            .clone()
            .or_else(|| session.user_id.clone())
            .unwrap_or_else(|| session.id.clone());
        let mut principal = self
            .principal_of(
                principal_id,
                tenant_id,
                session.roles.clone(),
                session.user_id.clone(),
            )
            .await?;
        principal.session_id = Some(session.id.clone());
        Ok(Some(LiveSession {
            session,
            principal,
            csrf_hash,
        }))
    }

    /// The tenant's live sessions, newest first.
    pub async fn list_sessions(&self, tenant_id: &str) -> Result<Vec<Session>> {
        let now = routero_core::unix_now();
        sqlx::query(super::provisioning::built(format!(
            "{SESSION_COLUMNS} WHERE tenant_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
             ORDER BY created_at DESC, id"
        )))
        .bind(tenant_id)
        .bind(now)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(session)
        .collect()
    }

    /// Ends a session of the tenant.
    pub async fn revoke_session(
        &self,
        tenant_id: &str,
        id: &str,
        events: &[AuditEvent],
    ) -> Result<()> {
        self.revoke_row("sessions", (tenant_id, id), Resource::Session, events)
            .await
    }
}
