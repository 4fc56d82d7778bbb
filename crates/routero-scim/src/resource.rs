//! Resources as Routero keeps them: a client's body validated against the schema into a
//! canonical document (attribute names as the schema spells them, Entra's string booleans
//! read as booleans, read-only attributes dropped, unknown ones refused), rendered back with
//! `id`, `meta` and `schemas`, narrowed by `attributes`/`excludedAttributes`, and flattened
//! into the rows of the search index that filters run on.

use serde_json::{Map, Value, json};

use crate::filter::AttrPath;
use crate::schema::{self, Attribute, COMMON_ATTRIBUTES, Home, Kind, Mutability, Type};
use crate::{ScimError, ScimType};

/// The longest string value accepted, in characters.
pub const MAX_STRING_CHARS: usize = 2048;
/// The most values a multi-valued attribute holds (group members excepted).
pub const MAX_VALUES: usize = 100;
/// The most members a group holds.
pub const MAX_MEMBERS: usize = 100_000;

fn invalid(detail: impl Into<String>) -> ScimError {
    ScimError::bad(ScimType::InvalidValue, detail)
}

/// Validates a client's resource body into the canonical document: core attributes by their
/// schema names, extension attributes in an object under their extension's URN.
pub fn canonical(kind: Kind, body: &Value) -> Result<Map<String, Value>, ScimError> {
    let Some(fields) = body.as_object() else {
        return Err(ScimError::bad(
            ScimType::InvalidSyntax,
            "the body must be a JSON object",
        ));
    };
    let mut doc = Map::new();
    for (key, value) in fields {
        if key.eq_ignore_ascii_case("schemas") {
            check_schemas(kind, value)?;
        } else if let Some((urn, attributes)) = kind.extension(key) {
            let Some(inner) = value.as_object() else {
                if value.is_null() {
                    continue;
                }
                return Err(invalid(format!("{urn} must be an object")));
            };
            let mut extension = Map::new();
            for (name, value) in inner {
                let attribute = attributes
                    .iter()
                    .find(|a| a.name.eq_ignore_ascii_case(name))
                    .ok_or_else(|| invalid(format!("unknown attribute {urn}:{name}")))?;
                put(&mut extension, attribute, value)?;
            }
            if !extension.is_empty() {
                doc.insert(urn.to_owned(), Value::Object(extension));
            }
        } else {
            let path = split_name(key);
            let resolved = schema::resolve(kind, &path)
                .filter(|r| r.sub.is_none())
                .ok_or_else(|| invalid(format!("unknown attribute {key}")))?;
            let target = match resolved.extension {
                None => &mut doc,
                Some(urn) => doc
                    .entry(urn)
                    .or_insert_with(|| Value::Object(Map::new()))
                    .as_object_mut()
                    .ok_or_else(|| invalid(format!("{urn} must be an object")))?,
            };
            put(target, resolved.attribute, value)?;
        }
    }
    doc.retain(|_, v| !v.as_object().is_some_and(Map::is_empty));
    let required = kind.attributes().iter().filter(|a| a.required);
    for attribute in required {
        if doc
            .get(attribute.name)
            .and_then(Value::as_str)
            .is_some_and(|s| s.chars().any(char::is_control))
        {
            return Err(invalid(format!(
                "{} must not contain control characters",
                attribute.name
            )));
        }
        if doc
            .get(attribute.name)
            .and_then(Value::as_str)
            .is_none_or(|s| s.trim().is_empty())
        {
            return Err(invalid(format!("{} is required", attribute.name)));
        }
    }
    Ok(doc)
}

/// `urn:…:name` or `name` as an attribute path (no sub-attribute).
pub(crate) fn split_name(key: &str) -> AttrPath {
    match key.rfind(':') {
        Some(at) => {
            let (urn, name) = key.split_at(at);
            AttrPath {
                urn: Some(urn.to_owned()),
                name: name.trim_start_matches(':').to_owned(),
                sub: None,
            }
        }
        None => AttrPath {
            urn: None,
            name: key.to_owned(),
            sub: None,
        },
    }
}

/// `schemas` lists the kind's core schema; other URNs (Entra adds its own) are allowed, since
/// attributes of schemas we do not serve are refused one by one.
fn check_schemas(kind: Kind, value: &Value) -> Result<(), ScimError> {
    match value.as_array() {
        Some(urns)
            if urns.iter().all(Value::is_string)
                && urns.iter().any(|u| {
                    u.as_str()
                        .is_some_and(|u| u.eq_ignore_ascii_case(kind.schema()))
                }) =>
        {
            Ok(())
        }
        _ => Err(invalid(format!("schemas must list {}", kind.schema()))),
    }
}

/// Puts `value` into `target` as `attribute`, coerced; read-only and write-only attributes
/// are dropped, as RFC 7643 §7 has servers ignore them.
fn put(
    target: &mut Map<String, Value>,
    attribute: &Attribute,
    value: &Value,
) -> Result<(), ScimError> {
    if !attribute.writable() || !attribute.returned() {
        return Ok(());
    }
    match coerce(attribute, value)? {
        Some(value) => {
            target.insert(attribute.name.to_owned(), value);
        }
        None => {
            target.remove(attribute.name);
        }
    }
    Ok(())
}

/// `value` as `attribute` holds it, or `None` when it unassigns the attribute (null, an empty
/// list or object).
pub fn coerce(attribute: &Attribute, value: &Value) -> Result<Option<Value>, ScimError> {
    if value.is_null() {
        return Ok(None);
    }
    if !attribute.multi {
        return coerce_one(attribute, value);
    }
    let Some(items) = value.as_array() else {
        return Err(invalid(format!("{} must be a list", attribute.name)));
    };
    let most = if attribute.name == "members" {
        MAX_MEMBERS
    } else {
        MAX_VALUES
    };
    if items.len() > most {
        return Err(ScimError::bad(
            ScimType::TooMany,
            format!("{} holds at most {most} values", attribute.name),
        ));
    }
    let mut list = Vec::with_capacity(items.len());
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    for item in items {
        if let Some(item) = coerce_one(attribute, item)?
            && seen.insert(item.to_string())
        {
            list.push(item);
        }
    }
    Ok((!list.is_empty()).then_some(Value::Array(list)))
}

/// One value of `attribute` (an element, for a multi-valued one).
pub fn coerce_one(attribute: &Attribute, value: &Value) -> Result<Option<Value>, ScimError> {
    let name = attribute.name;
    match (attribute.ty, value) {
        (_, Value::Null) => Ok(None),
        (Type::Complex, Value::Object(fields)) => {
            let mut object = Map::new();
            for (key, value) in fields {
                let sub = attribute
                    .sub_attribute(key)
                    .ok_or_else(|| invalid(format!("unknown attribute {name}.{key}")))?;
                if sub.mutability == Mutability::ReadOnly {
                    continue;
                }
                if let Some(value) = coerce_one(sub, value)? {
                    object.insert(sub.name.to_owned(), value);
                }
            }
            Ok((!object.is_empty()).then_some(Value::Object(object)))
        }
        (Type::Boolean, Value::Bool(_)) => Ok(Some(value.clone())),
        (Type::Boolean, Value::String(text)) if text.eq_ignore_ascii_case("true") => {
            Ok(Some(Value::Bool(true)))
        }
        (Type::Boolean, Value::String(text)) if text.eq_ignore_ascii_case("false") => {
            Ok(Some(Value::Bool(false)))
        }
        (Type::DateTime, Value::String(text)) => match humantime::parse_rfc3339_weak(text) {
            Ok(_) => Ok(Some(value.clone())),
            Err(_) => Err(invalid(format!("{name} must be an RFC 3339 date and time"))),
        },
        (Type::String | Type::Reference | Type::Binary, Value::String(text)) => {
            if text.contains('\0') {
                return Err(invalid(format!("{name} must not contain NUL characters")));
            }
            if text.chars().nth(MAX_STRING_CHARS).is_some() {
                return Err(invalid(format!(
                    "{name} is longer than {MAX_STRING_CHARS} characters"
                )));
            }
            Ok(Some(value.clone()))
        }
        (ty, _) => Err(invalid(format!("{name} must be a {}", ty.as_str()))),
    }
}

/// What the server keeps about a resource besides its document.
#[derive(Debug, Clone)]
pub struct Meta {
    /// Its id.
    pub id: String,
    /// When it was created (Unix seconds).
    pub created: i64,
    /// When it last changed (Unix seconds).
    pub last_modified: i64,
    /// Its version; the ETag is `W/"<version>"`.
    pub version: i64,
    /// The SCIM base URL (`…/scim/v2`) its location is under.
    pub base: String,
}

impl Meta {
    /// The ETag of this version.
    pub fn etag(&self) -> String {
        format!("W/\"{}\"", self.version)
    }
}

/// An instant as SCIM writes it (`2026-11-30T03:27:42Z`).
pub fn timestamp(unix: i64) -> String {
    let at =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

/// The resource as clients read it: the document with `schemas`, `id` and `meta`.
pub fn render(kind: Kind, doc: &Map<String, Value>, meta: &Meta) -> Value {
    let mut schemas = vec![Value::from(kind.schema())];
    schemas.extend(
        kind.extensions()
            .iter()
            .filter(|(urn, _)| doc.contains_key(*urn))
            .map(|(urn, _)| Value::from(*urn)),
    );
    let mut out = Map::new();
    out.insert("schemas".into(), Value::Array(schemas));
    out.insert("id".into(), meta.id.clone().into());
    out.extend(doc.iter().map(|(k, v)| (k.clone(), v.clone())));
    out.insert(
        "meta".into(),
        json!({
            "resourceType": kind.name(),
            "created": timestamp(meta.created),
            "lastModified": timestamp(meta.last_modified),
            "location": format!("{}/{}/{}", meta.base, kind.endpoint(), meta.id),
            "version": meta.etag(),
        }),
    );
    Value::Object(out)
}

/// Narrows a rendered resource to `attributes` (plus `schemas` and `id`, always returned), or
/// takes `excluded` out of it. Names that are not attributes are ignored (RFC 7644 §3.9).
pub fn project(kind: Kind, resource: Value, attributes: &[String], excluded: &[String]) -> Value {
    let Value::Object(mut full) = resource else {
        return resource;
    };
    if !attributes.is_empty() {
        let mut narrowed = Map::new();
        for key in ["schemas", "id"] {
            if let Some(value) = full.remove(key) {
                narrowed.insert(key.into(), value);
            }
        }
        for name in attributes {
            copy_path(kind, &full, &mut narrowed, name);
        }
        return Value::Object(narrowed);
    }
    for name in excluded {
        remove_path(kind, &mut full, name);
    }
    Value::Object(full)
}

/// `(containing object key or none, attribute name, sub-attribute name)` a name points at.
fn locate(
    kind: Kind,
    name: &str,
) -> Option<(Home, &'static Attribute, Option<&'static Attribute>)> {
    let path = crate::filter::parse_path(name).ok()?;
    if path.filter.is_some() {
        return None;
    }
    let resolved = schema::resolve(kind, &path.attr)?;
    Some((resolved.extension, resolved.attribute, resolved.sub))
}

fn copy_path(kind: Kind, from: &Map<String, Value>, to: &mut Map<String, Value>, name: &str) {
    if let Some((urn, _)) = kind.extension(name) {
        if let Some(extension) = from.get(urn) {
            to.insert(urn.to_owned(), extension.clone());
        }
        return;
    }
    let Some((home, attribute, sub)) = locate(kind, name) else {
        return;
    };
    let (source, target) = match home {
        None => (Some(from), to),
        Some(urn) => (
            from.get(urn).and_then(Value::as_object),
            match to
                .entry(urn)
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
            {
                Some(target) => target,
                None => return,
            },
        ),
    };
    let Some(value) = source.and_then(|s| s.get(attribute.name)) else {
        return;
    };
    let Some(sub) = sub else {
        target.insert(attribute.name.into(), value.clone());
        return;
    };
    let pick = |element: &Value| element.get(sub.name).map(|v| json!({ sub.name: v }));
    let narrowed = match value {
        Value::Array(items) => Value::Array(items.iter().filter_map(pick).collect()),
        other => match pick(other) {
            Some(v) => v,
            None => return,
        },
    };
    match (target.get_mut(attribute.name), narrowed) {
        (Some(Value::Object(existing)), Value::Object(more)) => existing.extend(more),
        (_, narrowed) => {
            target.insert(attribute.name.into(), narrowed);
        }
    }
}

fn remove_path(kind: Kind, full: &mut Map<String, Value>, name: &str) {
    if let Some((urn, _)) = kind.extension(name) {
        full.remove(urn);
        return;
    }
    let Some((home, attribute, sub)) = locate(kind, name) else {
        return;
    };
    if home.is_none() && attribute.name == "id" {
        return; // always returned
    }
    let container = match home {
        None => Some(full),
        Some(urn) => full.get_mut(urn).and_then(Value::as_object_mut),
    };
    let Some(container) = container else {
        return;
    };
    match sub {
        None => {
            container.remove(attribute.name);
        }
        Some(sub) => match container.get_mut(attribute.name) {
            Some(Value::Array(items)) => items
                .iter_mut()
                .filter_map(Value::as_object_mut)
                .for_each(|e| {
                    e.remove(sub.name);
                }),
            Some(Value::Object(object)) => {
                object.remove(sub.name);
            }
            _ => {}
        },
    }
}

/// One row of the search index: the value of `attr` (with `sub`, in element `idx` of a
/// multi-valued attribute), normalised for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexRow {
    /// The attribute's index key ([`schema::index_key`]).
    pub attr: String,
    /// The element, for multi-valued attributes (0 otherwise).
    pub idx: i64,
    /// The sub-attribute's lowercase name, or empty.
    pub sub: String,
    /// The value as filters compare it.
    pub value: String,
}

/// A value as the index keeps it and filters compare it: lowercased where the attribute is
/// not case-exact, booleans as `true`/`false`, instants in one format.
pub fn comparable(attribute: &Attribute, value: &Value) -> Option<String> {
    match (attribute.ty, value) {
        (Type::Boolean, Value::Bool(b)) => Some(b.to_string()),
        (Type::DateTime, Value::String(text)) => humantime::parse_rfc3339_weak(text)
            .ok()
            .map(|at| humantime::format_rfc3339_seconds(at).to_string()),
        (Type::Binary | Type::Complex | Type::Boolean | Type::DateTime, _) => None,
        (_, Value::String(text)) if attribute.case_exact => Some(text.clone()),
        (_, Value::String(text)) => Some(text.to_lowercase()),
        _ => None,
    }
}

/// A filter's value as the index compares it to `attribute`'s values under `op`: refused
/// (400 invalidFilter) where the type or operator does not apply, never coerced silently.
pub fn operand(
    attribute: &Attribute,
    op: crate::filter::Op,
    value: &Value,
) -> Result<String, ScimError> {
    let refuse = |why: &str| {
        Err(ScimError::bad(
            ScimType::InvalidFilter,
            format!("{}: {why}", attribute.name),
        ))
    };
    match attribute.ty {
        Type::Complex | Type::Binary => return refuse("cannot be compared"),
        Type::Boolean if op.orders() || op.is_substring() => {
            return refuse("a boolean is compared with eq or ne only");
        }
        Type::DateTime if op.is_substring() => return refuse("an instant is not a string"),
        _ => {}
    }
    let value = match (attribute.ty, value) {
        (Type::Boolean, Value::String(text)) => coerce_one(attribute, &Value::String(text.clone()))
            .ok()
            .flatten()
            .unwrap_or(Value::Null),
        _ => value.clone(),
    };
    match comparable(attribute, &value) {
        Some(text) => Ok(text),
        None => refuse(&format!("{value} is not a {}", attribute.ty.as_str())),
    }
}

/// The index rows of a rendered resource (`id`, `externalId`, `meta` and every attribute a
/// filter may name).
pub fn index_rows(kind: Kind, rendered: &Value) -> Vec<IndexRow> {
    let mut rows = Vec::new();
    let Some(fields) = rendered.as_object() else {
        return rows;
    };
    let homes = std::iter::once((
        None,
        kind.attributes()
            .iter()
            .chain(COMMON_ATTRIBUTES)
            .collect::<Vec<_>>(),
        Some(fields),
    ))
    .chain(kind.extensions().iter().map(|(urn, attributes)| {
        (
            Some(*urn),
            attributes.iter().collect(),
            fields.get(*urn).and_then(Value::as_object),
        )
    }));
    for (home, attributes, object) in homes {
        let Some(object) = object else { continue };
        for attribute in attributes {
            let Some(value) = object.get(attribute.name) else {
                continue;
            };
            let attr = schema::index_key(home, attribute);
            let elements: Vec<&Value> = match value {
                Value::Array(items) => items.iter().collect(),
                other => vec![other],
            };
            for (idx, element) in (0_i64..).zip(elements) {
                match element
                    .as_object()
                    .filter(|_| attribute.ty == Type::Complex)
                {
                    Some(parts) => {
                        for sub in attribute.sub {
                            if let Some(value) =
                                parts.get(sub.name).and_then(|v| comparable(sub, v))
                            {
                                rows.push(IndexRow {
                                    attr: attr.clone(),
                                    idx,
                                    sub: sub.name.to_ascii_lowercase(),
                                    value,
                                });
                            }
                        }
                    }
                    None => {
                        if let Some(value) = comparable(attribute, element) {
                            rows.push(IndexRow {
                                attr: attr.clone(),
                                idx,
                                sub: String::new(),
                                value,
                            });
                        }
                    }
                }
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names_booleans_and_extensions() {
        let doc = canonical(
            Kind::User,
            &json!({
                "schemas": [schema::USER, schema::ENTERPRISE],
                "USERNAME": "Ada",
                "Active": "False",
                "id": "ignored",
                "password": "never kept",
                "emails": [{"Value": "ada@example.com", "PRIMARY": "true", "type": "work"}],
                schema::ENTERPRISE: {"Department": "R&D"},
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter": "42",
            }),
        )
        .expect("valid");
        assert_eq!(doc["userName"], "Ada");
        assert_eq!(doc["active"], false);
        assert!(!doc.contains_key("id") && !doc.contains_key("password"));
        assert_eq!(doc["emails"][0]["primary"], true);
        assert_eq!(doc[schema::ENTERPRISE]["department"], "R&D");
        assert_eq!(doc[schema::ENTERPRISE]["costCenter"], "42");
    }

    #[test]
    fn refuses_unknown_attributes_and_wrong_types() {
        for body in [
            json!({"userName": "a", "shoeSize": 42}),
            json!({"userName": 123}),
            json!({"userName": "a", "active": 5}),
            json!({"userName": "a", "emails": "x"}),
            json!({"userName": "a", "emails": [{"value": "x", "colour": "red"}]}),
            json!({"userName": "a", "name": "Ada"}),
            json!({"displayName": "not a user"}),
            json!({"userName": "nul\u{0}byte"}),
            json!({"userName": "a", "schemas": ["urn:example:other"]}),
            json!({"userName": "  "}),
            json!(["not", "an", "object"]),
        ] {
            let error = canonical(Kind::User, &body).expect_err(&body.to_string());
            assert!(error.scim_type.is_some(), "{body}");
        }
    }

    #[test]
    fn projection_keeps_id_and_schemas() {
        let doc = canonical(
            Kind::User,
            &json!({"userName": "a", "name": {"givenName": "A", "familyName": "B"}, "title": "t"}),
        )
        .expect("valid");
        let meta = Meta {
            id: "u1".into(),
            created: 0,
            last_modified: 0,
            version: 1,
            base: "http://x/scim/v2".into(),
        };
        let full = render(Kind::User, &doc, &meta);
        let only = project(Kind::User, full.clone(), &["name.givenName".into()], &[]);
        assert_eq!(
            only,
            json!({"schemas": [schema::USER], "id": "u1", "name": {"givenName": "A"}})
        );
        let without = project(
            Kind::User,
            full.clone(),
            &[],
            &["title".into(), "id".into()],
        );
        assert!(without.get("title").is_none() && without["id"] == "u1");
        let entra = canonical(
            Kind::Group,
            &json!({"schemas": [schema::GROUP, "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/Group"],
                    "displayName": "g"}),
        );
        assert!(entra.is_ok(), "{entra:?}");
    }

    #[test]
    fn index_rows_normalise_case_and_time() {
        let doc = canonical(
            Kind::User,
            &json!({"userName": "Ada", "externalId": "AbC", "emails": [{"value": "A@X.io", "primary": true}]}),
        )
        .expect("valid");
        let meta = Meta {
            id: "u1".into(),
            created: 86_400,
            last_modified: 86_400,
            version: 1,
            base: String::new(),
        };
        let rows = index_rows(Kind::User, &render(Kind::User, &doc, &meta));
        let has = |attr: &str, sub: &str, value: &str| {
            rows.iter()
                .any(|r| r.attr == attr && r.sub == sub && r.value == value)
        };
        assert!(has("username", "", "ada"));
        assert!(has("externalid", "", "AbC"));
        assert!(has("emails", "value", "a@x.io"));
        assert!(has("emails", "primary", "true"));
        assert!(has("meta", "lastmodified", "1970-01-02T00:00:00Z"));
        assert!(has("id", "", "u1"));
    }
}
