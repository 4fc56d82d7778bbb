//! People and groups as the identity provider provisions them (SCIM), their search index,
//! SCIM tokens and the tenant's role mapping; and deprovisioning, which revokes a person's
//! keys in the same transaction that deactivates, deletes or ungroups them.
//!
//! Users and teams keep their canonical SCIM document beside the columns the rest of the
//! control plane reads (`user_name`, `email`, `active`, team `name`), which are written from
//! it. Each write replaces the resource's rows in `scim_values`, the index filters run on.
//! Writes are optimistic: they name the version they read and fail with `version_mismatch`
//! if another write came first.

use std::collections::{BTreeSet, HashMap};

use routero_core::audit::{Actor, AuditEvent, EventType, Outcome};
use routero_core::{ErrorCode, Resource};
use routero_scim::resource::{self as scim_resource, Meta};
use routero_scim::schema::Kind;
use routero_scim::sql::Condition;
use serde_json::{Map, Value, json};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{Result, Store, from_json, new_id, to_json, unique_violation};
use crate::ControlPlaneError;
use crate::role_mapping::RoleMapping;

/// A user or group as stored.
#[derive(Debug, Clone)]
pub struct ScimRecord {
    /// Its id.
    pub id: String,
    /// Its canonical SCIM document (without `groups`/`members`).
    pub doc: Map<String, Value>,
    /// Unix seconds of creation.
    pub created: i64,
    /// Unix seconds of the last change.
    pub updated: i64,
    /// Its version (ETag).
    pub version: i64,
    /// Whether SCIM owns it.
    pub managed: bool,
    /// Whether a user may act (always true for a group).
    pub active: bool,
    /// A user's groups, or a group's members: `(id, display name)`.
    pub links: Vec<(String, String)>,
}

impl ScimRecord {
    /// The resource as SCIM clients read it, under `base` (`…/scim/v2`).
    pub fn render(&self, kind: Kind, base: &str) -> Value {
        let mut doc = self.doc.clone();
        let (attribute, endpoint) = match kind {
            Kind::User => ("groups", "Groups"),
            Kind::Group => ("members", "Users"),
        };
        if !self.links.is_empty() {
            let links = self
                .links
                .iter()
                .map(|(id, display)| match kind {
                    // A user's groups say which; a group's members are what the identity
                    // provider wrote (their value), as it wrote them.
                    Kind::User => json!({"value": id, "display": display, "type": "direct",
                                         "$ref": format!("{base}/{endpoint}/{id}")}),
                    Kind::Group => json!({"value": id, "$ref": format!("{base}/{endpoint}/{id}")}),
                })
                .collect();
            doc.insert(attribute.into(), Value::Array(links));
        }
        scim_resource::render(kind, &doc, &self.meta(base))
    }

    fn meta(&self, base: &str) -> Meta {
        Meta {
            id: self.id.clone(),
            created: self.created,
            last_modified: self.updated,
            version: self.version,
            base: base.to_owned(),
        }
    }
}

/// Who is changing people or groups: for the events the store writes with the change.
#[derive(Debug, Clone)]
pub struct Changer {
    /// The tenant changed.
    pub tenant_id: String,
    /// Who changes it.
    pub actor: Actor,
    /// Whether the change comes from SCIM (which then owns the resource).
    pub scim: bool,
}

impl Changer {
    /// An admin key of `tenant_id` changing people or groups through the admin API.
    pub fn admin_key(tenant_id: &str, key_id: &str) -> Self {
        Self {
            tenant_id: tenant_id.to_owned(),
            actor: routero_bus::actor(
                routero_core::audit::ActorKind::AdminKey,
                Some(key_id.to_owned()),
            ),
            scim: false,
        }
    }

    /// An event of this changer on `(kind, id)`.
    pub fn event(&self, action: EventType, kind: &str, id: &str) -> AuditEvent {
        routero_bus::event(
            &self.tenant_id,
            action,
            self.actor.clone(),
            routero_bus::resource(kind, Some(id.to_owned())),
            Outcome::Success,
        )
    }
}

/// A SCIM token's record; never the token.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScimToken {
    /// Identifier.
    pub id: String,
    /// Label (the identity provider it is for).
    pub name: String,
    /// Unix seconds of creation.
    pub created_at: i64,
    /// Unix seconds of revocation.
    pub revoked_at: Option<i64>,
}

const USER_COLUMNS: &str = "SELECT r.id, r.user_name, r.email, r.display_name, r.external_id, \
     CAST(CASE WHEN r.active THEN 1 ELSE 0 END AS BIGINT) AS active, r.scim, \
     CAST(CASE WHEN r.scim_managed THEN 1 ELSE 0 END AS BIGINT) AS managed, r.version, \
     r.created_at, r.updated_at FROM users r";
const TEAM_COLUMNS: &str = "SELECT r.id, r.name, r.external_id, r.scim, \
     CAST(CASE WHEN r.scim_managed THEN 1 ELSE 0 END AS BIGINT) AS managed, r.version, \
     r.created_at, r.updated_at FROM teams r";

fn table(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::User => ("users", USER_COLUMNS),
        Kind::Group => ("teams", TEAM_COLUMNS),
    }
}

fn resource_of(kind: Kind) -> Resource {
    match kind {
        Kind::User => Resource::User,
        Kind::Group => Resource::Team,
    }
}

/// A record from its row; users and teams written before SCIM get a document from columns.
fn record(kind: Kind, row: &AnyRow) -> Result<ScimRecord> {
    let scim: Option<String> = row.try_get("scim")?;
    let doc = match scim {
        Some(text) => from_json(&text)?,
        None => {
            let mut doc = Map::new();
            let put = |doc: &mut Map<String, Value>, name: &str, column: &str| -> Result<()> {
                if let Some(value) = row.try_get::<Option<String>, _>(column)? {
                    doc.insert(name.into(), value.into());
                }
                Ok(())
            };
            match kind {
                Kind::User => {
                    put(&mut doc, "userName", "user_name")?;
                    put(&mut doc, "displayName", "display_name")?;
                    if let Some(email) = row.try_get::<Option<String>, _>("email")? {
                        doc.insert("emails".into(), json!([{"value": email, "primary": true}]));
                    }
                    doc.insert(
                        "active".into(),
                        (row.try_get::<i64, _>("active")? != 0).into(),
                    );
                }
                Kind::Group => put(&mut doc, "displayName", "name")?,
            }
            put(&mut doc, "externalId", "external_id")?;
            doc
        }
    };
    Ok(ScimRecord {
        id: row.try_get("id")?,
        doc,
        created: row.try_get("created_at")?,
        updated: row.try_get("updated_at")?,
        version: row.try_get("version")?,
        managed: row.try_get::<i64, _>("managed")? != 0,
        active: kind == Kind::Group || row.try_get::<i64, _>("active")? != 0,
        links: Vec::new(),
    })
}

fn text<'a>(doc: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    doc.get(name).and_then(Value::as_str)
}

/// The email the `email` column keeps: the primary one, or the first.
fn primary_email(doc: &Map<String, Value>) -> Option<String> {
    let emails = doc.get("emails")?.as_array()?;
    emails
        .iter()
        .find(|e| e.get("primary") == Some(&Value::Bool(true)))
        .or_else(|| emails.first())
        .and_then(|e| e.get("value"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Whether a user document says the user may act (absent means yes).
fn is_active(doc: &Map<String, Value>) -> bool {
    doc.get("active") != Some(&Value::Bool(false))
}

/// Member ids of a group document, without repeats, in order.
fn member_ids(doc: &Map<String, Value>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    doc.get("members")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("value").and_then(Value::as_str))
        .filter(|id| seen.insert(id.to_owned()))
        .map(str::to_owned)
        .collect()
}

impl Store {
    // ---- reading ----

    /// One user or group of the tenant, with its links.
    pub async fn scim_get(&self, tenant_id: &str, kind: Kind, id: &str) -> Result<ScimRecord> {
        let (_, columns) = table(kind);
        let row = sqlx::query(built(format!(
            "{columns} WHERE r.tenant_id = $1 AND r.id = $2 AND r.deleted_at IS NULL"
        )))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(ControlPlaneError::NotFound(resource_of(kind)))?;
        let mut records = vec![record(kind, &row)?];
        self.attach_links(kind, &mut records).await?;
        records
            .pop()
            .ok_or(ControlPlaneError::NotFound(resource_of(kind)))
    }

    /// A page of the tenant's users or groups matching `filter`: `count` of them after the
    /// first `offset`, oldest first, and how many match in all.
    pub async fn scim_search(
        &self,
        tenant_id: &str,
        kind: Kind,
        filter: Option<&Condition>,
        offset: i64,
        count: i64,
    ) -> Result<(i64, Vec<ScimRecord>)> {
        let (name, columns) = table(kind);
        let condition = filter
            .map(|c| format!(" AND {}", c.sql))
            .unwrap_or_default();
        let params = filter.map(|c| c.params.as_slice()).unwrap_or_default();
        let scope = format!("WHERE r.tenant_id = $1 AND r.deleted_at IS NULL{condition}");
        let mut total = sqlx::query(built(format!("SELECT COUNT(*) AS n FROM {name} r {scope}")))
            .bind(tenant_id);
        for param in params {
            total = total.bind(param);
        }
        let total: i64 = total.fetch_one(&self.pool).await?.try_get("n")?;
        if count == 0 || offset >= total {
            return Ok((total, Vec::new()));
        }
        let next = params.len() + 2;
        let mut page = sqlx::query(built(format!(
            "{columns} {scope} ORDER BY r.created_at, r.id LIMIT ${next} OFFSET ${}",
            next + 1
        )))
        .bind(tenant_id);
        for param in params {
            page = page.bind(param);
        }
        let rows = page.bind(count).bind(offset).fetch_all(&self.pool).await?;
        let mut records = rows
            .iter()
            .map(|r| record(kind, r))
            .collect::<Result<Vec<_>>>()?;
        self.attach_links(kind, &mut records).await?;
        Ok((total, records))
    }

    /// Fills each record's links: a user's groups, a group's members.
    async fn attach_links(&self, kind: Kind, records: &mut [ScimRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = (1..=records.len()).map(|i| format!("${i}")).collect();
        let sql = match kind {
            Kind::User => format!(
                "SELECT m.user_id AS owner, t.id AS id, t.name AS display FROM team_members m \
                 JOIN teams t ON t.id = m.team_id WHERE m.user_id IN ({}) ORDER BY t.name",
                ids.join(", ")
            ),
            Kind::Group => format!(
                "SELECT m.team_id AS owner, u.id AS id, u.user_name AS display FROM team_members m \
                 JOIN users u ON u.id = m.user_id WHERE m.team_id IN ({}) ORDER BY u.user_name",
                ids.join(", ")
            ),
        };
        let mut query = sqlx::query(built(sql));
        for record in records.iter() {
            query = query.bind(&record.id);
        }
        for row in query.fetch_all(&self.pool).await? {
            let owner: String = row.try_get("owner")?;
            if let Some(record) = records.iter_mut().find(|r| r.id == owner) {
                record
                    .links
                    .push((row.try_get("id")?, row.try_get("display")?));
            }
        }
        Ok(())
    }

    // ---- writing ----

    /// Creates a user or group from its canonical document (a group's members in it).
    pub async fn scim_create(
        &self,
        changer: &Changer,
        kind: Kind,
        doc: Map<String, Value>,
    ) -> Result<ScimRecord> {
        let mut tx = self.pool.begin().await?;
        let (id, events) = self.insert_resource(&mut tx, changer, kind, doc).await?;
        // A group's members change what their keys may do: data planes need the change.
        if kind == Kind::Group {
            self.commit_change(tx, &events).await?;
        } else {
            self.commit_recorded(tx, &events).await?;
        }
        self.scim_get(&changer.tenant_id, kind, &id).await
    }

    /// Inserts a user or group (and a group's members) inside `tx`; returns its id and the
    /// events recording it.
    pub(super) async fn insert_resource(
        &self,
        tx: &mut Transaction<'_, Any>,
        changer: &Changer,
        kind: Kind,
        mut doc: Map<String, Value>,
    ) -> Result<(String, Vec<AuditEvent>)> {
        let now = routero_core::unix_now();
        let members = member_ids(&doc);
        doc.remove("members");
        if kind == Kind::User {
            // A user created without saying is active, and says so to filters and readers.
            doc.entry("active").or_insert(Value::Bool(true));
        }
        let id = match kind {
            Kind::User => new_id("usr"),
            Kind::Group => new_id("team"),
        };
        let record = ScimRecord {
            id: id.clone(),
            active: is_active(&doc),
            doc,
            created: now,
            updated: now,
            version: 1,
            managed: changer.scim,
            links: Vec::new(),
        };
        match kind {
            Kind::User => {
                sqlx::query(
                    "INSERT INTO users (id, tenant_id, user_name, user_name_key, email, display_name, \
                     external_id, active, scim, scim_managed, version, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1, $11, $11)",
                )
                .bind(&id)
                .bind(&changer.tenant_id)
                .bind(text(&record.doc, "userName"))
                .bind(text(&record.doc, "userName").map(str::to_lowercase))
                .bind(primary_email(&record.doc))
                .bind(text(&record.doc, "displayName"))
                .bind(text(&record.doc, "externalId"))
                .bind(record.active)
                .bind(to_json(&record.doc)?)
                .bind(changer.scim)
                .bind(now)
                .execute(&mut **tx)
                .await
                .map_err(|e| unique_violation(e, Resource::User))?;
            }
            Kind::Group => {
                sqlx::query(
                    "INSERT INTO teams (id, tenant_id, name, name_key, external_id, scim, scim_managed, \
                     version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $8)",
                )
                .bind(&id)
                .bind(&changer.tenant_id)
                .bind(text(&record.doc, "displayName"))
                .bind(text(&record.doc, "displayName").map(str::to_lowercase))
                .bind(text(&record.doc, "externalId"))
                .bind(to_json(&record.doc)?)
                .bind(changer.scim)
                .bind(now)
                .execute(&mut **tx)
                .await
                .map_err(|e| unique_violation(e, Resource::Team))?;
            }
        }
        let mut events = vec![changer.event(
            match kind {
                Kind::User => EventType::UserProvisioned,
                Kind::Group if changer.scim => EventType::GroupCreated,
                Kind::Group => EventType::TeamCreated,
            },
            kind_name(kind),
            &id,
        )];
        if kind == Kind::Group {
            let (added, _, revocations) = self.set_members(tx, changer, &id, &members).await?;
            if let Some(event) = events.first_mut() {
                event.details.insert("members_added".into(), json!(added));
            }
            events.extend(revocations);
        }
        let record = ScimRecord {
            links: members.iter().map(|m| (m.clone(), String::new())).collect(),
            ..record
        };
        write_index(tx, &changer.tenant_id, kind, &record).await?;
        Ok((id, events))
    }

    /// Replaces a user or group (PUT, or the result of a PATCH) if it is still at `version`.
    /// Deactivating a user revokes its keys; a group's member changes revoke the keys of members
    /// left without access.
    pub async fn scim_replace(
        &self,
        changer: &Changer,
        kind: Kind,
        current: &ScimRecord,
        mut doc: Map<String, Value>,
    ) -> Result<ScimRecord> {
        let mut tx = self.pool.begin().await?;
        let now = routero_core::unix_now();
        let members = member_ids(&doc);
        doc.remove("members");
        // A document without `active` (a PUT that does not say, a PATCH that removes it)
        // keeps the user's state: never a silent reactivation.
        let active = match doc.get("active") {
            Some(_) => is_active(&doc),
            None => current.active,
        };
        let updated = match kind {
            Kind::User => sqlx::query(
                "UPDATE users SET user_name = $1, user_name_key = $2, email = $3, display_name = $4, \
                 external_id = $5, active = $6, scim = $7, scim_managed = (scim_managed OR $8), \
                 version = version + 1, updated_at = $9 \
                 WHERE tenant_id = $10 AND id = $11 AND version = $12 AND deleted_at IS NULL",
            )
            .bind(text(&doc, "userName"))
            .bind(text(&doc, "userName").map(str::to_lowercase))
            .bind(primary_email(&doc))
            .bind(text(&doc, "displayName"))
            .bind(text(&doc, "externalId"))
            .bind(active)
            .bind(to_json(&doc)?)
            .bind(changer.scim)
            .bind(now)
            .bind(&changer.tenant_id)
            .bind(&current.id)
            .bind(current.version)
            .execute(&mut *tx)
            .await
            .map_err(|e| unique_violation(e, Resource::User))?,
            Kind::Group => sqlx::query(
                "UPDATE teams SET name = $1, name_key = $9, external_id = $2, scim = $3, \
                 scim_managed = (scim_managed OR $4), version = version + 1, updated_at = $5 \
                 WHERE tenant_id = $6 AND id = $7 AND version = $8 AND deleted_at IS NULL",
            )
            .bind(text(&doc, "displayName"))
            .bind(text(&doc, "externalId"))
            .bind(to_json(&doc)?)
            .bind(changer.scim)
            .bind(now)
            .bind(&changer.tenant_id)
            .bind(&current.id)
            .bind(current.version)
            .bind(text(&doc, "displayName").map(str::to_lowercase))
            .execute(&mut *tx)
            .await
            .map_err(|e| unique_violation(e, Resource::Team))?,
        };
        if updated.rows_affected() == 0 {
            return Err(stale());
        }
        let mut events = Vec::new();
        let mut enforced = false;
        match kind {
            Kind::User => {
                let mut event = changer.event(EventType::UserUpdated, "user", &current.id);
                event.details.insert(
                    "attributes".into(),
                    json!(changed_attributes(&current.doc, &doc)),
                );
                events.push(event);
                if current.active && !active {
                    events.extend(
                        revoke_user_keys(&mut tx, changer, &current.id, "deactivated").await?,
                    );
                    enforced = true;
                }
            }
            Kind::Group => {
                let (added, removed, revocations) = self
                    .set_members(&mut tx, changer, &current.id, &members)
                    .await?;
                let mut event = changer.event(EventType::GroupUpdated, "team", &current.id);
                event.details.insert("members_added".into(), json!(added));
                event
                    .details
                    .insert("members_removed".into(), json!(removed));
                events.push(event);
                events.extend(revocations);
                enforced = true;
            }
        }
        let record = ScimRecord {
            doc,
            updated: now,
            version: current.version + 1,
            managed: current.managed || changer.scim,
            active,
            links: members.iter().map(|m| (m.clone(), String::new())).collect(),
            ..current.clone()
        };
        write_index(&mut tx, &changer.tenant_id, kind, &record).await?;
        if enforced {
            self.commit_change(tx, &events).await?;
        } else {
            self.commit_recorded(tx, &events).await?;
        }
        self.scim_get(&changer.tenant_id, kind, &current.id).await
    }

    /// Deletes a user or group at `version` (or any version). A deleted user's keys are revoked;
    /// its row stays, for the keys and the audit trail that name it, with its name freed.
    pub async fn scim_delete(
        &self,
        changer: &Changer,
        kind: Kind,
        id: &str,
        version: Option<i64>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let now = routero_core::unix_now();
        let (name, _) = table(kind);
        // The name is freed: the row keeps one with a control character, which no live name
        // may hold (`resource::canonical` and the admin API refuse them), so nothing can
        // collide with it and block the deletion.
        let rename = match kind {
            Kind::User => "user_name = $5, user_name_key = NULL, active = FALSE",
            Kind::Group => "name = $5, name_key = NULL",
        };
        let deleted = sqlx::query(built(format!(
            "UPDATE {name} SET {rename}, deleted_at = $1, updated_at = $1, version = version + 1 \
             WHERE tenant_id = $2 AND id = $3 AND deleted_at IS NULL AND ($4 < 0 OR version = $4)"
        )))
        .bind(now)
        .bind(&changer.tenant_id)
        .bind(id)
        .bind(version.unwrap_or(-1))
        .bind(format!("{id}\u{7f}deleted"))
        .execute(&mut *tx)
        .await?;
        if deleted.rows_affected() == 0 {
            let exists = sqlx::query(built(format!(
                "SELECT 1 AS one FROM {name} WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL"
            )))
            .bind(&changer.tenant_id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            return Err(match exists {
                Some(_) => stale(),
                None => ControlPlaneError::NotFound(resource_of(kind)),
            });
        }
        sqlx::query("DELETE FROM scim_values WHERE resource_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let mut events = Vec::new();
        match kind {
            Kind::User => {
                events.extend(revoke_user_keys(&mut tx, changer, id, "deleted").await?);
                let groups: Vec<String> =
                    sqlx::query("SELECT team_id FROM team_members WHERE user_id = $1")
                        .bind(id)
                        .fetch_all(&mut *tx)
                        .await?
                        .iter()
                        .map(|r| r.try_get("team_id"))
                        .collect::<std::result::Result<_, _>>()?;
                sqlx::query("DELETE FROM team_members WHERE user_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                for group in groups {
                    self.reindex_group(&mut tx, &changer.tenant_id, &group)
                        .await?;
                }
            }
            Kind::Group => {
                let members: Vec<String> = self.members(&mut tx, id).await?.into_iter().collect();
                sqlx::query("DELETE FROM team_members WHERE team_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                events.push(changer.event(EventType::GroupDeleted, "team", id));
                events.extend(self.revoke_if_no_access(&mut tx, changer, &members).await?);
                // Keys bound to the team go with it.
                let team_keys = revoke_keys(&mut tx, changer, KeysOf::Team(id), "team_deleted");
                events.extend(team_keys.await?);
            }
        }
        self.commit_change(tx, &events).await
    }

    async fn members(
        &self,
        tx: &mut Transaction<'_, Any>,
        group: &str,
    ) -> Result<BTreeSet<String>> {
        sqlx::query("SELECT user_id FROM team_members WHERE team_id = $1")
            .bind(group)
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(|r| Ok(r.try_get("user_id")?))
            .collect()
    }

    /// Makes `wanted` the group's members; returns who was added and removed, and the events
    /// of revoking the keys of removed members left without access.
    async fn set_members(
        &self,
        tx: &mut Transaction<'_, Any>,
        changer: &Changer,
        group: &str,
        wanted: &[String],
    ) -> Result<(Vec<String>, Vec<String>, Vec<AuditEvent>)> {
        let current = self.members(tx, group).await?;
        let wanted_set: BTreeSet<String> = wanted.iter().cloned().collect();
        let added: Vec<String> = wanted_set.difference(&current).cloned().collect();
        let removed: Vec<String> = current.difference(&wanted_set).cloned().collect();
        for user in &added {
            let known = sqlx::query(
                "SELECT 1 AS one FROM users WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
            )
            .bind(&changer.tenant_id)
            .bind(user)
            .fetch_optional(&mut **tx)
            .await?;
            if known.is_none() {
                return Err(ControlPlaneError::rejected(
                    ErrorCode::InvalidField,
                    format!("member {user} is not a user of this tenant"),
                ));
            }
            sqlx::query("INSERT INTO team_members (team_id, user_id) VALUES ($1, $2)")
                .bind(group)
                .bind(user)
                .execute(&mut **tx)
                .await?;
        }
        for user in &removed {
            sqlx::query("DELETE FROM team_members WHERE team_id = $1 AND user_id = $2")
                .bind(group)
                .bind(user)
                .execute(&mut **tx)
                .await?;
        }
        let revocations = self.revoke_if_no_access(tx, changer, &removed).await?;
        Ok((added, removed, revocations))
    }

    /// Revokes the keys of each of `users` whose groups no longer give them a role under the
    /// tenant's role mapping (none when the tenant has no mapping).
    async fn revoke_if_no_access(
        &self,
        tx: &mut Transaction<'_, Any>,
        changer: &Changer,
        users: &[String],
    ) -> Result<Vec<AuditEvent>> {
        let Some(mapping) = role_mapping_of(tx, &changer.tenant_id).await? else {
            return Ok(Vec::new());
        };
        let mut events = Vec::new();
        for user in users {
            if roles_of_user(tx, &mapping, user).await?.is_empty() {
                events.extend(revoke_user_keys(tx, changer, user, "no_access").await?);
            }
        }
        Ok(events)
    }

    /// A group's members changed underneath it (a user joined through the admin API, or was
    /// deleted): moves its version on, so `If-Match` sees the change, and rewrites its index
    /// rows.
    pub(super) async fn reindex_group(
        &self,
        tx: &mut Transaction<'_, Any>,
        tenant_id: &str,
        group: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE teams SET version = version + 1, updated_at = $1 WHERE tenant_id = $2 AND id = $3",
        )
        .bind(routero_core::unix_now())
        .bind(tenant_id)
        .bind(group)
        .execute(&mut **tx)
        .await?;
        let row = sqlx::query(built(format!(
            "{TEAM_COLUMNS} WHERE r.tenant_id = $1 AND r.id = $2"
        )))
        .bind(tenant_id)
        .bind(group)
        .fetch_one(&mut **tx)
        .await?;
        let mut record = record(Kind::Group, &row)?;
        record.links = self
            .members(tx, group)
            .await?
            .into_iter()
            .map(|id| (id, String::new()))
            .collect();
        write_index(tx, tenant_id, Kind::Group, &record).await
    }

    // ---- SCIM tokens ----

    /// Stores a SCIM token's hash.
    pub async fn create_scim_token(
        &self,
        tenant_id: &str,
        name: &str,
        hash: &[u8],
        events: Vec<AuditEvent>,
    ) -> Result<ScimToken> {
        let mut tx = self.pool.begin().await?;
        let token = ScimToken {
            id: new_id("scim"),
            name: name.to_owned(),
            created_at: routero_core::unix_now(),
            revoked_at: None,
        };
        sqlx::query(
            "INSERT INTO scim_tokens (id, tenant_id, name, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&token.id)
        .bind(tenant_id)
        .bind(name)
        .bind(hash)
        .bind(token.created_at)
        .execute(&mut *tx)
        .await?;
        self.commit_recorded(tx, &super::naming(events, &token.id))
            .await?;
        Ok(token)
    }

    /// The tenant's SCIM tokens, newest first.
    pub async fn list_scim_tokens(&self, tenant_id: &str) -> Result<Vec<ScimToken>> {
        sqlx::query(
            "SELECT id, name, created_at, revoked_at FROM scim_tokens WHERE tenant_id = $1 \
             ORDER BY created_at DESC, id",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(ScimToken {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                created_at: r.try_get("created_at")?,
                revoked_at: r.try_get("revoked_at")?,
            })
        })
        .collect()
    }

    /// Revokes a SCIM token of the tenant.
    pub async fn revoke_scim_token(
        &self,
        tenant_id: &str,
        id: &str,
        events: &[AuditEvent],
    ) -> Result<()> {
        self.revoke_row("scim_tokens", (tenant_id, id), Resource::ScimToken, events)
            .await
    }

    /// The `(token id, tenant id)` of a live SCIM token with this hash.
    pub async fn find_scim_token(&self, hash: &[u8]) -> Result<Option<(String, String)>> {
        sqlx::query(
            "SELECT id, tenant_id FROM scim_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| Ok((r.try_get("id")?, r.try_get("tenant_id")?)))
        .transpose()
    }

    // ---- role mapping ----

    /// The tenant's role mapping, if it has one.
    pub async fn role_mapping(&self, tenant_id: &str) -> Result<Option<RoleMapping>> {
        let mut conn = self.pool.acquire().await?;
        role_mapping_of(&mut conn, tenant_id).await
    }

    /// Replaces the tenant's role mapping; keys act with the roles it gives from the next
    /// snapshot on. An empty mapping (no rules, no default roles) removes it.
    pub async fn put_role_mapping(
        &self,
        tenant_id: &str,
        mapping: &RoleMapping,
        events: &[AuditEvent],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        if mapping.rules.is_empty() && mapping.default_roles.is_empty() {
            // An empty mapping is no mapping: keys act with their own roles again.
            sqlx::query("DELETE FROM role_mappings WHERE tenant_id = $1")
                .bind(tenant_id)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query(
                "INSERT INTO role_mappings (tenant_id, rules, default_roles, updated_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id) DO UPDATE SET \
                 rules = excluded.rules, default_roles = excluded.default_roles, \
                 updated_at = excluded.updated_at",
            )
            .bind(tenant_id)
            .bind(to_json(&mapping.rules)?)
            .bind(to_json(&mapping.default_roles)?)
            .bind(routero_core::unix_now())
            .execute(&mut *tx)
            .await?;
        }
        self.commit_change(tx, events).await
    }
}

impl Store {
    /// Keys as data planes enforce them: a key of a person in a tenant with a role mapping acts
    /// with the person's mapped roles (narrowed to the key's own, if it has some), and is not
    /// served at all while the person holds no role.
    pub(super) async fn with_mapped_roles(
        &self,
        keys: Vec<super::KeyRecord>,
    ) -> Result<Vec<super::KeyRecord>> {
        let mappings: std::collections::HashMap<String, RoleMapping> =
            sqlx::query("SELECT tenant_id, rules, default_roles FROM role_mappings")
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| {
                    Ok((
                        r.try_get("tenant_id")?,
                        RoleMapping {
                            rules: from_json(&r.try_get::<String, _>("rules")?)?,
                            default_roles: from_json(&r.try_get::<String, _>("default_roles")?)?,
                        },
                    ))
                })
                .collect::<Result<_>>()?;
        if mappings.is_empty() {
            return Ok(keys);
        }
        let mut conn = self.pool.acquire().await?;
        let groups = groups_where(&mut conn, Members::Everyone).await?;
        Ok(keys
            .into_iter()
            .filter_map(|mut key| {
                let (Some(mapping), Some(user)) = (mappings.get(&key.tenant_id), &key.user_id)
                else {
                    return Some(key);
                };
                let held = groups.get(user).map(Vec::as_slice).unwrap_or_default();
                let user_roles = mapping.roles_of(held);
                if user_roles.is_empty() {
                    return None;
                }
                // A key none of whose own roles the person holds is not served.
                key.roles = RoleMapping::key_roles(&user_roles, &key.roles);
                (!key.roles.is_empty()).then_some(key)
            })
            .collect())
    }
}

/// SQL text assembled from the store's fixed fragments, numbered parameters, and filters
/// compiled by `routero_scim::sql`, which binds every name and value as a parameter.
pub(super) fn built(sql: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql)
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::User => "user",
        Kind::Group => "team",
    }
}

fn stale() -> ControlPlaneError {
    ControlPlaneError::rejected(
        ErrorCode::VersionMismatch,
        "the resource changed since the version named; read it again",
    )
}

/// The top-level attributes whose values differ between two documents, sorted.
fn changed_attributes(before: &Map<String, Value>, after: &Map<String, Value>) -> Vec<String> {
    let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    names
        .into_iter()
        .filter(|n| before.get(*n) != after.get(*n))
        .cloned()
        .collect()
}

async fn role_mapping_of(
    conn: &mut sqlx::AnyConnection,
    tenant_id: &str,
) -> Result<Option<RoleMapping>> {
    sqlx::query("SELECT rules, default_roles FROM role_mappings WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| {
            Ok(RoleMapping {
                rules: from_json(&r.try_get::<String, _>("rules")?)?,
                default_roles: from_json(&r.try_get::<String, _>("default_roles")?)?,
            })
        })
        .transpose()
}

/// Which of the tenant's keys a revocation takes, by what they are bound to.
#[derive(Debug, Clone, Copy)]
pub(super) enum KeysOf<'a> {
    /// A person's: bound to them, or issued by an admin key acting for them.
    User(&'a str),
    /// A team's.
    Team(&'a str),
    /// Those an admin principal (admin key or local admin) issued.
    Owner(&'a str),
}

/// Revokes the tenant's live keys `which` names; returns a `key.revoked` event each, with
/// `reason` and what they were bound to.
pub(super) async fn revoke_keys(
    tx: &mut Transaction<'_, Any>,
    changer: &Changer,
    which: KeysOf<'_>,
    reason: &str,
) -> Result<Vec<AuditEvent>> {
    let (condition, detail, value) = match which {
        KeysOf::User(user) => (
            "(user_id = $3 OR owner IN (SELECT id FROM admin_keys WHERE tenant_id = $2 AND user_id = $3))",
            "user_id",
            user,
        ),
        KeysOf::Team(team) => ("team_id = $3", "team_id", team),
        KeysOf::Owner(owner) => ("owner = $3", "owner", owner),
    };
    let revoked: Vec<String> = sqlx::query(built(format!(
        "UPDATE virtual_keys SET revoked_at = $1, updated_at = $1 \
         WHERE tenant_id = $2 AND {condition} AND revoked_at IS NULL RETURNING id"
    )))
    .bind(routero_core::unix_now())
    .bind(&changer.tenant_id)
    .bind(value)
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(|r| r.try_get("id"))
    .collect::<std::result::Result<_, _>>()?;
    Ok(revoked
        .iter()
        .map(|key| {
            let mut event = changer.event(EventType::KeyRevoked, "key", key);
            event.reason_code = Some(reason.to_owned());
            event.details.insert("reason".into(), json!(reason));
            event.details.insert(detail.into(), json!(value));
            event
        })
        .collect())
}

/// The roles `mapping` gives `user` from the groups it is a member of.
async fn roles_of_user(
    tx: &mut Transaction<'_, Any>,
    mapping: &RoleMapping,
    user: &str,
) -> Result<Vec<String>> {
    let groups = groups_of(tx, user).await?;
    Ok(mapping.roles_of(&groups))
}

/// The `(id, name)` of each live group `user` is a member of, and the name of each group their
/// identity provider named at their last sign-in (with no id: a provider's group matches rules
/// by name only, so it can never pass for a SCIM group's id; Entra ID's object ids are names
/// here).
pub(super) async fn groups_of(
    conn: &mut sqlx::AnyConnection,
    user: &str,
) -> Result<Vec<(String, String)>> {
    Ok(groups_where(conn, Members::One(user))
        .await?
        .remove(user)
        .unwrap_or_default())
}

/// Whose groups [`groups_where`] reads (in two queries whatever their number).
pub(super) enum Members<'a> {
    /// One user's (by id).
    One(&'a str),
    /// Every user's of a tenant.
    OfTenant(&'a str),
    /// Every user's.
    Everyone,
}

/// [`groups_of`] each of `members`, by user id (a user in no group is absent).
pub(super) async fn groups_where(
    conn: &mut sqlx::AnyConnection,
    members: Members<'_>,
) -> Result<HashMap<String, Vec<(String, String)>>> {
    let (teams, users, value) = match members {
        Members::One(user) => ("m.user_id = $1 AND", "id = $1 AND", Some(user)),
        Members::OfTenant(tenant) => ("t.tenant_id = $1 AND", "tenant_id = $1 AND", Some(tenant)),
        Members::Everyone => ("", "", None),
    };
    // Only the filters above, of ours, are spliced in; the value is bound.
    let query = |sql: String| {
        let query = sqlx::query(sqlx::AssertSqlSafe(sql));
        match value {
            Some(value) => query.bind(value),
            None => query,
        }
    };
    let mut groups: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for row in query(format!(
        "SELECT m.user_id, t.id, t.name FROM team_members m JOIN teams t ON t.id = m.team_id \
         WHERE {teams} t.deleted_at IS NULL"
    ))
    .fetch_all(&mut *conn)
    .await?
    {
        groups
            .entry(row.try_get("user_id")?)
            .or_default()
            .push((row.try_get("id")?, row.try_get("name")?));
    }
    for row in query(format!(
        "SELECT id, sso_groups FROM users WHERE {users} sso_groups IS NOT NULL"
    ))
    .fetch_all(&mut *conn)
    .await?
    {
        let named: Vec<String> = from_json(&row.try_get::<String, _>("sso_groups")?)?;
        groups
            .entry(row.try_get("id")?)
            .or_default()
            .extend(named.into_iter().map(|name| (String::new(), name)));
    }
    Ok(groups)
}

/// Refuses (409 `user_without_roles`) to bind a key to a user the tenant's role mapping gives
/// no role: such a key would never be served.
pub(super) async fn require_roles(
    tx: &mut Transaction<'_, Any>,
    tenant_id: &str,
    user: &str,
) -> Result<()> {
    let Some(mapping) = role_mapping_of(tx, tenant_id).await? else {
        return Ok(());
    };
    if roles_of_user(tx, &mapping, user).await?.is_empty() {
        return Err(ControlPlaneError::rejected(
            ErrorCode::UserWithoutRoles,
            "the tenant's role mapping gives this user no role (no group of theirs matches a \
             rule, and there are no default roles); no key may be issued for them",
        ));
    }
    Ok(())
}

/// Revokes every live key of `user` (bound to them, or issued by an admin key acting for
/// them) and ends their sessions; returns `user.deprovisioned` (with how many keys) and a
/// `key.revoked` per key, with the reason.
async fn revoke_user_keys(
    tx: &mut Transaction<'_, Any>,
    changer: &Changer,
    user: &str,
    reason: &str,
) -> Result<Vec<AuditEvent>> {
    let now = routero_core::unix_now();
    let revoked = revoke_keys(tx, changer, KeysOf::User(user), "deprovisioned").await?;
    let sessions = sqlx::query(
        "UPDATE sessions SET revoked_at = $1 WHERE tenant_id = $2 AND user_id = $3 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(&changer.tenant_id)
    .bind(user)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    let mut deprovisioned = changer.event(EventType::UserDeprovisioned, "user", user);
    deprovisioned
        .details
        .insert("sessions_revoked".into(), json!(sessions));
    deprovisioned.reason_code = Some(reason.to_owned());
    deprovisioned
        .details
        .insert("keys_revoked".into(), json!(revoked.len()));
    let mut events = vec![deprovisioned];
    events.extend(revoked);
    Ok(events)
}

/// Replaces a resource's rows in the search index.
async fn write_index(
    tx: &mut Transaction<'_, Any>,
    tenant_id: &str,
    kind: Kind,
    record: &ScimRecord,
) -> Result<()> {
    sqlx::query("DELETE FROM scim_values WHERE resource_id = $1")
        .bind(&record.id)
        .execute(&mut **tx)
        .await?;
    // A user's groups are not indexed (filters refuse them): membership changes would leave
    // them stale. A group's members are.
    let indexed = match kind {
        Kind::User => ScimRecord {
            links: Vec::new(),
            ..record.clone()
        },
        Kind::Group => record.clone(),
    };
    let rows = scim_resource::index_rows(kind, &indexed.render(kind, ""));
    // Six parameters a row; PostgreSQL takes at most 65,535 a statement.
    for chunk in rows.chunks(1000) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| {
                let p = i * 6;
                format!(
                    "(${}, ${}, ${}, ${}, ${}, ${})",
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4,
                    p + 5,
                    p + 6
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO scim_values (tenant_id, resource_id, attr, idx, sub, value) VALUES {}",
            values.join(", ")
        );
        let mut query = sqlx::query(built(sql));
        for row in chunk {
            query = query
                .bind(tenant_id)
                .bind(&record.id)
                .bind(&row.attr)
                .bind(row.idx)
                .bind(&row.sub)
                .bind(&row.value);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}
