//! The discovery documents (RFC 7644 §4): `ServiceProviderConfig`, `ResourceTypes` and
//! `Schemas`, generated from the schema tables so they cannot disagree with what is served.

use serde_json::{Value, json};

use crate::MAX_PAGE;
use crate::schema::{
    Attribute, ENTERPRISE, ENTERPRISE_ATTRIBUTES, GROUP, GROUP_ATTRIBUTES, Kind, USER,
    USER_ATTRIBUTES,
};

const LIST: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";

/// What the service supports.
pub fn service_provider_config(base: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": MAX_PAGE},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": true},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "Bearer token",
            "description": "A SCIM token created through the admin API (POST /scim/tokens).",
            "primary": true,
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{base}/ServiceProviderConfig"),
        },
    })
}

/// One resource type.
pub fn resource_type(kind: Kind, base: &str) -> Value {
    let extensions: Vec<Value> = kind
        .extensions()
        .iter()
        .map(|(urn, _)| json!({"schema": urn, "required": false}))
        .collect();
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
        "id": kind.name(),
        "name": kind.name(),
        "endpoint": format!("/{}", kind.endpoint()),
        "description": match kind {
            Kind::User => "A person of the tenant; owner of virtual keys.",
            Kind::Group => "A group of users; a team of the tenant.",
        },
        "schema": kind.schema(),
        "schemaExtensions": extensions,
        "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/{}", kind.name())},
    })
}

/// What a reference points at (RFC 7643 §8.7.1): members and groups at users and groups, a
/// manager at a user, anything else outside.
fn reference_types(parent: Option<&str>, attribute: &Attribute) -> &'static [&'static str] {
    match (parent, attribute.name) {
        (Some("members" | "groups"), "$ref") => &["User", "Group"],
        (Some("manager"), "$ref") => &["User"],
        _ => &["external"],
    }
}

fn described(parent: Option<&str>, attribute: &Attribute) -> Value {
    let mut value = json!({
        "name": attribute.name,
        "type": attribute.ty.as_str(),
        "multiValued": attribute.multi,
        "description": attribute.description,
        "required": attribute.required,
        "caseExact": attribute.case_exact,
        "mutability": attribute.mutability.as_str(),
        "returned": if attribute.returned() { "default" } else { "never" },
        "uniqueness": if attribute.unique { "server" } else { "none" },
    });
    if let Some(map) = value.as_object_mut() {
        if !attribute.sub.is_empty() {
            map.insert(
                "subAttributes".into(),
                attribute
                    .sub
                    .iter()
                    .map(|sub| described(Some(attribute.name), sub))
                    .collect(),
            );
        }
        if attribute.ty == crate::schema::Type::Reference {
            map.insert(
                "referenceTypes".into(),
                json!(reference_types(parent, attribute)),
            );
        }
    }
    value
}

/// Every schema served, by URN.
pub fn schemas(base: &str) -> Vec<Value> {
    [
        (USER, "User", "A person of the tenant.", USER_ATTRIBUTES),
        (
            ENTERPRISE,
            "EnterpriseUser",
            "Enterprise attributes of a user.",
            ENTERPRISE_ATTRIBUTES,
        ),
        (
            GROUP,
            "Group",
            "A group of users (a team).",
            GROUP_ATTRIBUTES,
        ),
    ]
    .into_iter()
    .map(|(urn, name, description, attributes)| {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
            "id": urn,
            "name": name,
            "description": description,
            "attributes": attributes.iter().map(|a| described(None, a)).collect::<Vec<_>>(),
            "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{urn}")},
        })
    })
    .collect()
}

/// A list response of every item (discovery lists are not paged).
pub fn list(items: Vec<Value>) -> Value {
    page(items.len(), 1, items)
}

/// A list response: `total` results in all, these starting at `start_index` (1-based).
pub fn page(total: usize, start_index: usize, items: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST],
        "totalResults": total,
        "startIndex": start_index,
        "itemsPerPage": items.len(),
        "Resources": items,
    })
}
