//! The audit event model: one typed record per significant event, serialized as canonical
//! JSON (object keys sorted, no insignificant whitespace) so that a hash over it is stable.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What happened. The dotted names are the stable wire form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// A request was proxied to a provider.
    #[serde(rename = "request.routed")]
    RequestRouted,
    /// A request was refused by the gateway.
    #[serde(rename = "request.blocked")]
    RequestBlocked,
    /// A request failed upstream.
    #[serde(rename = "request.failed")]
    RequestFailed,
    /// A guardrail detected something in a request or response.
    #[serde(rename = "request.guardrail_triggered")]
    RequestGuardrailTriggered,
    /// An authorization decision (sampled).
    #[serde(rename = "policy.evaluated")]
    PolicyEvaluated,
    /// The policy bundle changed version.
    #[serde(rename = "policy.changed")]
    PolicyChanged,
    /// A policy refused an action.
    #[serde(rename = "policy.blocked")]
    PolicyBlocked,
    /// A user was provisioned.
    #[serde(rename = "user.provisioned")]
    UserProvisioned,
    /// A user's attributes changed.
    #[serde(rename = "user.updated")]
    UserUpdated,
    /// A user was deprovisioned (deactivated, deleted, or left every group that grants
    /// access); details say how many keys were revoked.
    #[serde(rename = "user.deprovisioned")]
    UserDeprovisioned,
    /// A group (team) was created by the identity provider.
    #[serde(rename = "group.created")]
    GroupCreated,
    /// A group's attributes or members changed; details list members added and removed.
    #[serde(rename = "group.updated")]
    GroupUpdated,
    /// A group was deleted.
    #[serde(rename = "group.deleted")]
    GroupDeleted,
    /// A SCIM request presented no valid SCIM token.
    #[serde(rename = "scim.auth_failed")]
    ScimAuthFailed,
    /// An authenticated SCIM request was refused (its status as the reason; never its content).
    #[serde(rename = "scim.request_refused")]
    ScimRequestRefused,
    /// A SCIM token was created.
    #[serde(rename = "scim_token.created")]
    ScimTokenCreated,
    /// A SCIM token was revoked.
    #[serde(rename = "scim_token.revoked")]
    ScimTokenRevoked,
    /// A tenant's role mapping was replaced.
    #[serde(rename = "role_mapping.updated")]
    RoleMappingUpdated,
    /// A key was created.
    #[serde(rename = "key.created")]
    KeyCreated,
    /// A key's allowlists, expiry, scope or metadata changed.
    #[serde(rename = "key.updated")]
    KeyUpdated,
    /// A key's secret was replaced.
    #[serde(rename = "key.rotated")]
    KeyRotated,
    /// A key was revoked.
    #[serde(rename = "key.revoked")]
    KeyRevoked,
    /// A provider credential was stored.
    #[serde(rename = "credential.created")]
    CredentialCreated,
    /// A model route was created.
    #[serde(rename = "model.created")]
    ModelCreated,
    /// A model route's deployments or tags were replaced.
    #[serde(rename = "model.updated")]
    ModelUpdated,
    /// A model route was deleted.
    #[serde(rename = "model.deleted")]
    ModelDeleted,
    /// A provider credential's secret or base URL was replaced.
    #[serde(rename = "credential.updated")]
    CredentialUpdated,
    /// A provider credential was deleted.
    #[serde(rename = "credential.deleted")]
    CredentialDeleted,
    /// A team was created.
    #[serde(rename = "team.created")]
    TeamCreated,
    /// An admin key was issued.
    #[serde(rename = "admin_key.created")]
    AdminKeyCreated,
    /// An admin key was revoked.
    #[serde(rename = "admin_key.revoked")]
    AdminKeyRevoked,
    /// A custom role was created or its permissions replaced.
    #[serde(rename = "role.updated")]
    RoleUpdated,
    /// A custom role was deleted.
    #[serde(rename = "role.deleted")]
    RoleDeleted,
    /// A tenant's guardrail pipeline was replaced.
    #[serde(rename = "guardrails.updated")]
    GuardrailsUpdated,
    /// A tenant's audit retention period changed.
    #[serde(rename = "audit.retention_changed")]
    AuditRetentionChanged,
    /// Someone downloaded the tenant's audit trail (`GET /audit/export`).
    #[serde(rename = "audit.exported")]
    AuditExported,
    /// The audit writer received a message on the events topic that is not an audit event;
    /// recorded (its digest, never its bytes) rather than dropped.
    #[serde(rename = "audit.message_rejected")]
    AuditMessageRejected,
    /// A login succeeded.
    #[serde(rename = "login.success")]
    LoginSuccess,
    /// A login or admin authentication failed.
    #[serde(rename = "login.failed")]
    LoginFailed,
    /// A person signed out (their session ended).
    #[serde(rename = "logout")]
    Logout,
    /// An admin ended someone's session.
    #[serde(rename = "session.revoked")]
    SessionRevoked,
    /// A break-glass local admin was created.
    #[serde(rename = "local_admin.created")]
    LocalAdminCreated,
    /// A break-glass local admin was deleted.
    #[serde(rename = "local_admin.deleted")]
    LocalAdminDeleted,
    /// A tenant's identity provider settings were set or removed.
    #[serde(rename = "sso_config.updated")]
    SsoConfigUpdated,
    /// A tenant's CORS origins were set.
    #[serde(rename = "cors.updated")]
    CorsUpdated,
    /// A second factor was requested.
    #[serde(rename = "mfa.challenged")]
    MfaChallenged,
    /// The budget or rate limits of a tenant, team or user were set.
    #[serde(rename = "budget.updated")]
    BudgetUpdated,
    /// A request was served uncounted: the counters could not be reached and its tenant
    /// chose `fail_open`.
    #[serde(rename = "limits.failed_open")]
    LimitsFailedOpen,
    /// A budget crossed a warning threshold.
    #[serde(rename = "budget.threshold_reached")]
    BudgetThresholdReached,
    /// A budget was exhausted.
    #[serde(rename = "budget.exceeded")]
    BudgetExceeded,
    /// Spend was charged.
    #[serde(rename = "spend.debited")]
    SpendDebited,
    /// A deployment failed too often in a row: a data plane stops sending it requests for a
    /// while.
    #[serde(rename = "deployment.circuit_opened")]
    DeploymentCircuitOpened,
    /// A deployment answered its probe: a data plane sends it requests again.
    #[serde(rename = "deployment.circuit_closed")]
    DeploymentCircuitClosed,
}

/// Who acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A person signed in through SSO.
    User,
    /// An admin API key.
    AdminKey,
    /// A virtual key on the data plane.
    VirtualKey,
    /// An IdP's SCIM client.
    ScimToken,
    /// Routero itself.
    System,
    /// A caller that could not be identified.
    Anonymous,
}

/// The actor of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// Kind of actor.
    pub kind: ActorKind,
    /// Its identifier (key id, user id); never a secret.
    pub id: Option<String>,
    /// Client address.
    pub source_ip: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
}

/// What was acted on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    /// Resource kind, e.g. `key`, `model`, `credential`.
    pub kind: String,
    /// Its identifier.
    pub id: Option<String>,
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Done.
    Success,
    /// Refused by a rule or policy.
    Denied,
    /// Attempted and failed.
    Failure,
}

/// One audit event. Prompts and responses are never in it unless a route opts in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// UUIDv7, unique: the idempotency key of the audit writer.
    pub event_id: String,
    /// Tenant the event belongs to; each tenant has its own chain.
    pub tenant_id: String,
    /// When it happened, RFC 3339 UTC.
    pub time: String,
    /// Who.
    pub actor: Actor,
    /// What.
    pub action: EventType,
    /// On what.
    pub resource: Resource,
    /// How it ended.
    pub outcome: Outcome,
    /// Stable reason code of a refusal or failure.
    pub reason_code: Option<String>,
    /// Request identifier, to correlate with logs.
    pub request_id: Option<String>,
    /// Version of the policy bundle that decided, where a decision was made.
    pub policy_version: Option<String>,
    /// Event-specific details.
    pub details: Map<String, Value>,
}

/// Most characters an event keeps of any one string; the rest is cut and marked.
pub const MAX_STRING_CHARS: usize = 512;
/// Most entries an event keeps of any one list or object in its details.
pub const MAX_DETAIL_ENTRIES: usize = 64;
/// How deep details may nest; deeper values are replaced by a marker.
const MAX_DETAIL_DEPTH: usize = 4;
/// What replaces the cut part of a string, or a value nested too deep.
const CUT: &str = "…[cut]";

fn bound_string(text: &mut String) {
    if let Some((at, _)) = text.char_indices().nth(MAX_STRING_CHARS) {
        text.truncate(at);
        text.push_str(CUT);
    }
}

fn bound_option(text: &mut Option<String>) {
    if let Some(text) = text {
        bound_string(text);
    }
}

fn bound_value(value: &mut Value, depth: usize) {
    match value {
        Value::String(text) => bound_string(text),
        _ if depth >= MAX_DETAIL_DEPTH && (value.is_array() || value.is_object()) => {
            *value = Value::from(CUT);
        }
        Value::Array(items) => {
            items.truncate(MAX_DETAIL_ENTRIES);
            items
                .iter_mut()
                .for_each(|item| bound_value(item, depth + 1));
        }
        Value::Object(map) => bound_map(map, depth + 1),
        _ => {}
    }
}

fn bound_map(map: &mut Map<String, Value>, depth: usize) {
    if map.len() > MAX_DETAIL_ENTRIES || map.keys().any(|k| k.chars().count() > MAX_STRING_CHARS) {
        *map = std::mem::take(map)
            .into_iter()
            .take(MAX_DETAIL_ENTRIES)
            .map(|(mut key, value)| {
                bound_string(&mut key);
                (key, value)
            })
            .collect();
    }
    map.values_mut().for_each(|value| bound_value(value, depth));
}

impl AuditEvent {
    /// The event with every string, list and object bounded, whatever a client sent (a 4 MB
    /// model name becomes its first [`MAX_STRING_CHARS`] characters and a marker), so no one
    /// event can bloat the log or exceed what the pipeline carries.
    pub fn bounded(mut self) -> Self {
        for text in [
            &mut self.event_id,
            &mut self.tenant_id,
            &mut self.time,
            &mut self.resource.kind,
        ] {
            bound_string(text);
        }
        for text in [
            &mut self.actor.id,
            &mut self.actor.source_ip,
            &mut self.actor.user_agent,
            &mut self.resource.id,
            &mut self.reason_code,
            &mut self.request_id,
            &mut self.policy_version,
        ] {
            bound_option(text);
        }
        bound_map(&mut self.details, 0);
        self
    }
}

/// The chain of events no tenant can be attributed to, such as a failed login with an unknown key.
pub const UNATTRIBUTED_TENANT: &str = "_unattributed";

/// Canonical JSON of any serializable value: object keys sorted, compact.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    // serde_json's `Map` is ordered by key (no `preserve_order`), so a detour through `Value`
    // sorts every object, including the fields of structs.
    serde_json::to_vec(&serde_json::to_value(value)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> AuditEvent {
        AuditEvent {
            event_id: "0190a0a0-0000-7000-8000-000000000001".into(),
            tenant_id: "t".into(),
            time: "2026-11-22T12:00:00.000Z".into(),
            actor: Actor {
                kind: ActorKind::AdminKey,
                id: Some("adm_1".into()),
                source_ip: Some("127.0.0.1".into()),
                user_agent: None,
            },
            action: EventType::KeyCreated,
            resource: Resource {
                kind: "key".into(),
                id: Some("key_1".into()),
            },
            outcome: Outcome::Success,
            reason_code: None,
            request_id: None,
            policy_version: None,
            details: Map::from_iter([
                ("z".to_string(), Value::from(1)),
                ("a".to_string(), Value::from("x")),
            ]),
        }
    }

    #[test]
    fn canonical_form_sorts_keys_and_round_trips() {
        let bytes = canonical_json(&event()).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.starts_with(r#"{"action":"key.created","actor":{"id":"adm_1","kind":"admin_key""#),
            "{text}"
        );
        assert!(text.contains(r#""details":{"a":"x","z":1}"#));
        let parsed: AuditEvent = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(parsed, event());
        assert_eq!(
            canonical_json(&parsed).unwrap(),
            bytes,
            "re-serialization is byte-identical"
        );
    }

    #[test]
    fn every_string_is_bounded_on_character_boundaries() {
        let mut big = event();
        big.resource.id = Some("é".repeat(2_000_000));
        big.actor.user_agent = Some("x".repeat(MAX_STRING_CHARS));
        big.details
            .insert("error".into(), Value::from("€".repeat(10_000)));
        big.details.insert(
            "list".into(),
            Value::from(vec![Value::from("y".repeat(1000)); 1000]),
        );
        big.details.insert(
            "deep".into(),
            serde_json::json!({"a": {"b": {"c": {"d": {"e": "f"}}}}}),
        );
        let bounded = big.bounded();
        let id = bounded.resource.id.clone().unwrap();
        assert_eq!(id.chars().count(), MAX_STRING_CHARS + CUT.chars().count());
        assert!(id.starts_with("éé") && id.ends_with(CUT));
        assert_eq!(
            bounded.actor.user_agent.as_deref().map(str::len),
            Some(MAX_STRING_CHARS),
            "a string at the bound is kept whole"
        );
        assert_eq!(
            bounded.details["list"].as_array().unwrap().len(),
            MAX_DETAIL_ENTRIES
        );
        assert_eq!(
            bounded.details["deep"]["a"]["b"]["c"]["d"],
            Value::from(CUT)
        );
        assert!(canonical_json(&bounded).unwrap().len() < 64 * 1024);
        assert_eq!(event().bounded(), event(), "small events are unchanged");
    }

    #[test]
    fn unknown_fields_and_types_are_refused() {
        let mut value = serde_json::to_value(event()).unwrap();
        value["surprise"] = Value::Bool(true);
        assert!(serde_json::from_value::<AuditEvent>(value).is_err());
        let mut value = serde_json::to_value(event()).unwrap();
        value["action"] = Value::from("key.exploded");
        assert!(serde_json::from_value::<AuditEvent>(value).is_err());
    }
}
