//! Single sign-on: each tenant's identity provider settings, the logins begun and not yet
//! finished (used once), and the person a provider's identity links to.

use routero_core::audit::AuditEvent;
use sqlx::Row;

use super::provisioning::{Members, groups_where};
use super::{Result, Store, to_json};

/// A tenant's identity provider as stored.
#[derive(Debug, Clone)]
pub struct SsoConfig {
    /// The protocol's settings, as JSON (never a secret).
    pub settings: String,
    /// The sealed client secret (OIDC).
    pub secret: Option<String>,
    /// Whether unknown people are created at their first login.
    pub jit: bool,
    /// Advances with every change.
    pub version: i64,
    /// Unix seconds of the last change.
    pub updated_at: i64,
}

/// A login begun: what its callback needs (no `Debug`: it holds the PKCE verifier).
#[derive(Clone)]
pub struct PendingLogin {
    /// The tenant signing in.
    pub tenant_id: String,
    /// `oidc` or `saml`.
    pub protocol: String,
    /// HMAC of the cookie that binds the login to the browser that began it.
    pub browser_hash: Vec<u8>,
    /// The nonce the ID token must carry (OIDC).
    pub nonce: String,
    /// The PKCE code verifier (OIDC).
    pub verifier: String,
    /// The redirect URI the provider was given.
    pub redirect_uri: String,
    /// Where the login was begun from.
    pub source_ip: Option<String>,
    /// Unix seconds after which the login cannot be finished.
    pub expires_at: i64,
}

/// What taking a login's state found.
pub enum TakenLogin {
    /// A login not used before (now used).
    Fresh(PendingLogin),
    /// A login already finished (or tried): a replay, in this tenant.
    Used(String),
    /// No such login.
    Unknown,
}

/// The person an identity provider vouched for, as the store links it.
#[derive(Debug, Clone, Copy)]
pub struct Vouched<'a> {
    /// The provider's issuer (OIDC) or entity id (SAML).
    pub issuer: &'a str,
    /// The provider's stable subject (`sub`, or the NameID).
    pub subject: &'a str,
    /// An email address the provider says it verified.
    pub verified_email: Option<&'a str>,
}

impl Vouched<'_> {
    /// The identity recorded on a linked user: issuer and subject, unambiguously joined.
    fn identity(&self) -> Result<String> {
        to_json(&[self.issuer, self.subject])
    }
}

/// The user a provider's identity links to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Linked {
    /// This user, active or not.
    User {
        /// The user's id.
        id: String,
        /// Whether the user may act.
        active: bool,
    },
    /// No user of the tenant matches.
    Unknown,
    /// More than one user matches the email address.
    Ambiguous,
}

impl Store {
    /// The tenant's identity provider for `protocol`.
    pub async fn sso_config(&self, tenant_id: &str, protocol: &str) -> Result<Option<SsoConfig>> {
        sqlx::query(
            "SELECT settings, secret, CAST(CASE WHEN jit THEN 1 ELSE 0 END AS BIGINT) AS jit, \
             version, updated_at FROM sso_configs WHERE tenant_id = $1 AND protocol = $2",
        )
        .bind(tenant_id)
        .bind(protocol)
        .fetch_optional(&self.pool)
        .await?
        .map(|row| {
            Ok(SsoConfig {
                settings: row.try_get("settings")?,
                secret: row.try_get("secret")?,
                jit: row.try_get::<i64, _>("jit")? != 0,
                version: row.try_get("version")?,
                updated_at: row.try_get("updated_at")?,
            })
        })
        .transpose()
    }

    /// Sets the tenant's identity provider for `protocol`, with the events recording it;
    /// returns its new version.
    pub async fn put_sso_config(
        &self,
        tenant_id: &str,
        protocol: &str,
        config: (&str, Option<&str>, bool),
        events: &[AuditEvent],
    ) -> Result<i64> {
        let (settings, secret, jit) = config;
        let mut tx = self.pool.begin().await?;
        let version: i64 = sqlx::query(
            "INSERT INTO sso_configs (tenant_id, protocol, settings, secret, jit, version, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 1, $6) ON CONFLICT (tenant_id, protocol) DO UPDATE SET \
             settings = excluded.settings, secret = excluded.secret, jit = excluded.jit, \
             version = sso_configs.version + 1, updated_at = excluded.updated_at RETURNING version",
        )
        .bind(tenant_id)
        .bind(protocol)
        .bind(settings)
        .bind(secret)
        .bind(jit)
        .bind(routero_core::unix_now())
        .fetch_one(&mut *tx)
        .await?
        .try_get("version")?;
        self.commit_forgetting_groups(tx, tenant_id, events).await?;
        Ok(version)
    }

    /// Commits a change of the tenant's identity provider: the groups providers named at past
    /// sign-ins are forgotten with it (the roles they gave come back at each person's next
    /// sign-in under the new settings), and data planes see the keys' roles change.
    async fn commit_forgetting_groups(
        &self,
        mut tx: sqlx::Transaction<'_, sqlx::Any>,
        tenant_id: &str,
        events: &[AuditEvent],
    ) -> Result<()> {
        let forgotten = sqlx::query(
            "UPDATE users SET sso_groups = NULL WHERE tenant_id = $1 AND sso_groups IS NOT NULL",
        )
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if forgotten == 0 {
            self.commit_recorded(tx, events).await
        } else {
            self.commit_change(tx, events).await
        }
    }

    /// Removes the tenant's identity provider for `protocol`; whether there was one.
    pub async fn delete_sso_config(
        &self,
        tenant_id: &str,
        protocol: &str,
        events: &[AuditEvent],
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM sso_configs WHERE tenant_id = $1 AND protocol = $2")
            .bind(tenant_id)
            .bind(protocol)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Ok(false);
        }
        self.commit_forgetting_groups(tx, tenant_id, events).await?;
        Ok(true)
    }

    /// Keeps a login begun under the HMAC of its state; forgets logins expired an hour ago.
    pub async fn begin_sso_login(&self, state_hash: &[u8], login: &PendingLogin) -> Result<()> {
        let now = routero_core::unix_now();
        sqlx::query("DELETE FROM sso_logins WHERE expires_at < $1")
            .bind(now - 3600)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO sso_logins (state_hash, tenant_id, protocol, browser_hash, nonce, verifier, \
             redirect_uri, source_ip, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(state_hash)
        .bind(&login.tenant_id)
        .bind(&login.protocol)
        .bind(&login.browser_hash)
        .bind(&login.nonce)
        .bind(&login.verifier)
        .bind(&login.redirect_uri)
        .bind(&login.source_ip)
        .bind(login.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// How many logins are pending (begun, not used, not expired): of the tenant, and of
    /// those begun from `source_ip`.
    pub async fn pending_sso_logins(
        &self,
        tenant_id: &str,
        source_ip: Option<&str>,
    ) -> Result<(i64, i64)> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, COALESCE(SUM(CASE WHEN source_ip = $3 THEN 1 ELSE 0 END), 0) \
             AS mine FROM sso_logins WHERE tenant_id = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(tenant_id)
        .bind(routero_core::unix_now())
        .bind(source_ip)
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("n")?, row.try_get("mine")?))
    }

    /// Takes the login with this state hash: in one statement, so two callbacks racing with
    /// the same state cannot both have it.
    pub async fn take_sso_login(&self, state_hash: &[u8]) -> Result<TakenLogin> {
        let taken = sqlx::query(
            "UPDATE sso_logins SET used_at = $2 WHERE state_hash = $1 AND used_at IS NULL \
             RETURNING tenant_id, protocol, browser_hash, nonce, verifier, redirect_uri, source_ip, \
             expires_at",
        )
        .bind(state_hash)
        .bind(routero_core::unix_now())
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = taken {
            return Ok(TakenLogin::Fresh(PendingLogin {
                tenant_id: row.try_get("tenant_id")?,
                protocol: row.try_get("protocol")?,
                browser_hash: row.try_get("browser_hash")?,
                nonce: row.try_get("nonce")?,
                verifier: row.try_get("verifier")?,
                redirect_uri: row.try_get("redirect_uri")?,
                source_ip: row.try_get("source_ip")?,
                expires_at: row.try_get("expires_at")?,
            }));
        }
        let used = sqlx::query("SELECT tenant_id FROM sso_logins WHERE state_hash = $1")
            .bind(state_hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match used {
            Some(row) => TakenLogin::Used(row.try_get("tenant_id")?),
            None => TakenLogin::Unknown,
        })
    }

    /// The tenant's user a provider's identity names: the user who signed in as it before;
    /// else, among users who never signed in, the one whose external id is the subject (SCIM
    /// from the same provider), then the one whose user name or email is the provider's
    /// verified email address. A provider's user name is never trusted to link: many let
    /// people change it.
    pub async fn sso_user(&self, tenant_id: &str, person: Vouched<'_>) -> Result<Linked> {
        const USERS: &str = "SELECT id, CAST(CASE WHEN active THEN 1 ELSE 0 END AS BIGINT) AS active \
             FROM users WHERE tenant_id = $1 AND deleted_at IS NULL AND ";
        let email = person.verified_email.map(str::to_lowercase);
        let lookups = [
            ("sso_subject = $2", Some(person.identity()?)),
            (
                "external_id = $2 AND sso_subject IS NULL",
                Some(person.subject.to_owned()),
            ),
            ("user_name_key = $2 AND sso_subject IS NULL", email.clone()),
            ("LOWER(email) = $2 AND sso_subject IS NULL", email),
        ];
        for (condition, value) in lookups {
            let Some(value) = value else { continue };
            let rows = sqlx::query(super::provisioning::built(format!(
                "{USERS}{condition} LIMIT 2"
            )))
            .bind(tenant_id)
            .bind(value)
            .fetch_all(&self.pool)
            .await?;
            match rows.as_slice() {
                [] => {}
                [row] => {
                    return Ok(Linked::User {
                        id: row.try_get("id")?,
                        active: row.try_get::<i64, _>("active")? != 0,
                    });
                }
                _ => return Ok(Linked::Ambiguous),
            }
        }
        Ok(Linked::Unknown)
    }

    /// Records that `user_id` signs in as `person` (once: a user already linked stays so).
    pub async fn link_sso_user(
        &self,
        tenant_id: &str,
        user_id: &str,
        person: Vouched<'_>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE users SET sso_subject = $1 WHERE id = $2 AND tenant_id = $3 AND sso_subject IS NULL",
        )
        .bind(person.identity()?)
        .bind(user_id)
        .bind(tenant_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Remembers a SAML assertion until it expires: whether it is new (a replay is not).
    pub async fn remember_assertion(
        &self,
        tenant_id: &str,
        assertion_id: &str,
        expires_at: i64,
    ) -> Result<bool> {
        let now = routero_core::unix_now();
        sqlx::query("DELETE FROM sso_assertions WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        let added = sqlx::query(
            "INSERT INTO sso_assertions (tenant_id, assertion_id, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id, assertion_id) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(assertion_id)
        .bind(expires_at.max(now))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(added == 1)
    }

    /// Keeps the groups a user's provider named at sign-in, which the role mapping reads with
    /// their SCIM groups; a change reaches data planes (the roles of the user's keys).
    pub async fn record_sso_groups(
        &self,
        tenant_id: &str,
        user_id: &str,
        groups: &[String],
    ) -> Result<()> {
        let mut sorted = groups.to_vec();
        sorted.sort();
        sorted.dedup();
        let named = to_json(&sorted)?;
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE users SET sso_groups = $1 WHERE id = $2 AND tenant_id = $3 \
             AND (sso_groups IS NULL OR sso_groups <> $1)",
        )
        .bind(&named)
        .bind(user_id)
        .bind(tenant_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Ok(());
        }
        self.commit_change(tx, &[]).await
    }

    /// The roles a signing-in user holds: the tenant's role mapping applied to their groups
    /// (SCIM's, and those their provider named); none when the tenant has no mapping.
    pub async fn sso_roles(&self, tenant_id: &str, user_id: &str) -> Result<Vec<String>> {
        Ok(self
            .mapped_roles(tenant_id, &[user_id])
            .await?
            .and_then(|mut roles| roles.pop())
            .unwrap_or_default())
    }

    /// The roles the tenant's role mapping gives each of `users` (of the tenant) from their
    /// groups, in order; `None` when the tenant has no mapping.
    pub async fn mapped_roles(
        &self,
        tenant_id: &str,
        users: &[&str],
    ) -> Result<Option<Vec<Vec<String>>>> {
        let Some(mapping) = self.role_mapping(tenant_id).await? else {
            return Ok(None);
        };
        let mut conn = self.pool.acquire().await?;
        let members = match users {
            [user] => Members::One(user),
            _ => Members::OfTenant(tenant_id),
        };
        let groups = groups_where(&mut conn, members).await?;
        Ok(Some(
            users
                .iter()
                .map(|user| {
                    let held = groups.get(*user).map(Vec::as_slice).unwrap_or_default();
                    mapping.roles_of(held)
                })
                .collect(),
        ))
    }
}
