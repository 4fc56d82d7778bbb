//! PATCH (RFC 7644 §3.5.2) on a canonical document: `add`, `replace` and `remove`, with and
//! without a path, value-path filters (`members[value eq "…"]`, `emails[type eq "work"].value`)
//! and what real identity providers send: capitalised `op` values, `replace` without a path
//! carrying dotted or URN-qualified names, string booleans, member removal by a value list.
//! The caller validates the result again with [`crate::resource::canonical`].

use serde_json::{Map, Value};

use crate::filter::{self, AttrPath, Filter, Op, PatchPath};
use crate::resource::{coerce, coerce_one, comparable, operand};
use crate::schema::{self, Attribute, Kind, Mutability, Type};
use crate::{MAX_OPERATIONS, ScimError, ScimType};

/// The PatchOp message schema.
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Add,
    Replace,
    Remove,
}

fn syntax(detail: impl Into<String>) -> ScimError {
    ScimError::bad(ScimType::InvalidSyntax, detail)
}

fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// Applies a PatchOp message's operations to `doc`, in order; the first that fails stops
/// them all (the caller keeps the stored document). `doc` may carry the resource's `id`, so
/// that an operation writing it unchanged is accepted; validating the result drops it.
pub fn apply(kind: Kind, doc: &mut Map<String, Value>, message: &Value) -> Result<(), ScimError> {
    let message = message
        .as_object()
        .ok_or_else(|| syntax("the body must be a PatchOp message"))?;
    if let Some(schemas) = field(message, "schemas")
        && !schemas.as_array().is_some_and(|s| {
            s.iter()
                .any(|u| u.as_str().is_some_and(|u| u.eq_ignore_ascii_case(PATCH_OP)))
        })
    {
        return Err(syntax(format!("schemas must list {PATCH_OP}")));
    }
    let operations = field(message, "Operations")
        .and_then(Value::as_array)
        .filter(|ops| !ops.is_empty())
        .ok_or_else(|| syntax("Operations must be a non-empty list"))?;
    if operations.len() > MAX_OPERATIONS {
        return Err(ScimError::bad(
            ScimType::TooMany,
            format!("at most {MAX_OPERATIONS} operations"),
        ));
    }
    for operation in operations {
        let operation = operation
            .as_object()
            .ok_or_else(|| syntax("an operation must be an object"))?;
        let verb = match field(operation, "op").and_then(Value::as_str) {
            Some(op) if op.eq_ignore_ascii_case("add") => Verb::Add,
            Some(op) if op.eq_ignore_ascii_case("replace") => Verb::Replace,
            Some(op) if op.eq_ignore_ascii_case("remove") => Verb::Remove,
            _ => return Err(syntax("op must be add, replace or remove")),
        };
        let value = field(operation, "value").unwrap_or(&Value::Null);
        match field(operation, "path") {
            None | Some(Value::Null) => without_path(kind, doc, verb, value)?,
            Some(Value::String(path)) => match kind.extension(path) {
                // The whole extension: removed, or its attributes added or replaced.
                Some((urn, _)) if verb == Verb::Remove => {
                    doc.remove(urn);
                }
                Some((urn, _)) => {
                    let value = serde_json::json!({ urn: value });
                    without_path(kind, doc, verb, &value)?;
                }
                None => at_path(kind, doc, verb, &filter::parse_path(path)?, value)?,
            },
            Some(_) => {
                return Err(ScimError::bad(
                    ScimType::InvalidPath,
                    "path must be a string",
                ));
            }
        }
    }
    Ok(())
}

/// `add`/`replace` with a map of attributes (dotted names and URN-qualified names included).
fn without_path(
    kind: Kind,
    doc: &mut Map<String, Value>,
    verb: Verb,
    value: &Value,
) -> Result<(), ScimError> {
    if verb == Verb::Remove {
        return Err(ScimError::bad(ScimType::NoTarget, "remove needs a path"));
    }
    let fields = value.as_object().ok_or_else(|| {
        ScimError::bad(
            ScimType::InvalidValue,
            "value must be an object when there is no path",
        )
    })?;
    for (key, value) in fields {
        if key.eq_ignore_ascii_case("schemas") {
            continue;
        }
        if let Some((urn, _)) = kind.extension(key) {
            let inner = value.as_object().ok_or_else(|| {
                ScimError::bad(ScimType::InvalidValue, format!("{urn} must be an object"))
            })?;
            for (name, value) in inner {
                if name.eq_ignore_ascii_case("schemas") {
                    continue;
                }
                let path = PatchPath {
                    attr: AttrPath {
                        urn: Some(urn.to_owned()),
                        name: name.clone(),
                        sub: None,
                    },
                    filter: None,
                    sub: None,
                };
                at_path(kind, doc, verb, &path, value)?;
            }
            continue;
        }
        let path = filter::parse_path(key).map_err(|_| {
            ScimError::bad(ScimType::InvalidValue, format!("unknown attribute {key}"))
        })?;
        if path.filter.is_some() {
            return Err(ScimError::bad(
                ScimType::InvalidValue,
                format!("{key} is not an attribute name"),
            ));
        }
        at_path(kind, doc, verb, &path, value)?;
    }
    Ok(())
}

fn at_path(
    kind: Kind,
    doc: &mut Map<String, Value>,
    verb: Verb,
    path: &PatchPath,
    value: &Value,
) -> Result<(), ScimError> {
    let resolved = schema::resolve(kind, &path.attr).ok_or_else(|| {
        ScimError::bad(
            ScimType::InvalidPath,
            format!("{} is not an attribute", path.attr.name),
        )
    })?;
    let attribute = resolved.attribute;
    let leaf = resolved
        .sub
        .or_else(|| path.sub.as_deref().and_then(|s| attribute.sub_attribute(s)));
    if path.sub.is_some() && leaf.is_none() {
        return Err(ScimError::bad(
            ScimType::InvalidPath,
            "no such sub-attribute",
        ));
    }
    let unchanged = path.filter.is_none()
        && leaf.is_none()
        && resolved.extension.is_none()
        && verb != Verb::Remove
        && doc.get(attribute.name) == Some(value);
    if unchanged {
        // Okta renames a group with `{"id": <its own id>, "displayName": …}`: writing a
        // read-only attribute's own value changes nothing and is allowed.
        return Ok(());
    }
    if attribute.mutability == Mutability::ReadOnly
        || leaf.is_some_and(|l| l.mutability == Mutability::ReadOnly)
    {
        return Err(ScimError::bad(
            ScimType::Mutability,
            format!("{} is read-only", attribute.name),
        ));
    }
    if !attribute.returned() {
        return Ok(()); // write-only (password): accepted, never kept
    }
    let container = match resolved.extension {
        None => doc,
        Some(urn) => doc
            .entry(urn)
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .ok_or_else(|| {
                ScimError::bad(ScimType::InvalidValue, format!("{urn} is not an object"))
            })?,
    };
    match (&path.filter, leaf) {
        (None, None) => whole(container, attribute, verb, value),
        (None, Some(sub)) => each_element(container, attribute, sub, verb, value),
        (Some(filter), sub) => selected(container, attribute, filter, sub, verb, value),
    }?;
    let empty = |v: &Value| {
        v.is_null()
            || v.as_object().is_some_and(Map::is_empty)
            || v.as_array().is_some_and(Vec::is_empty)
    };
    // An extension object left empty is dropped by `resource::canonical`.
    container.retain(|_, v| !empty(v));
    Ok(())
}

fn whole(
    container: &mut Map<String, Value>,
    attribute: &Attribute,
    verb: Verb,
    value: &Value,
) -> Result<(), ScimError> {
    let name = attribute.name;
    match verb {
        Verb::Remove if attribute.multi && value.is_array() => {
            // Entra: remove the listed members, by their `value`.
            let drop: std::collections::HashSet<String> = value
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.get("value").map(Value::to_string))
                .collect();
            if let Some(Value::Array(items)) = container.get_mut(name) {
                items.retain(|item| {
                    !item
                        .get("value")
                        .is_some_and(|v| drop.contains(&v.to_string()))
                });
            }
        }
        Verb::Remove => {
            container.remove(name);
        }
        Verb::Add if attribute.multi => {
            let added = coerce(attribute, &as_list(value))?.unwrap_or(Value::Array(Vec::new()));
            let list = container
                .entry(name)
                .or_insert_with(|| Value::Array(Vec::new()));
            if let (Value::Array(list), Value::Array(added)) = (list, added) {
                let mut seen: std::collections::HashSet<String> =
                    list.iter().map(Value::to_string).collect();
                for item in added {
                    if seen.insert(item.to_string()) {
                        list.push(item);
                    }
                }
            }
        }
        Verb::Add | Verb::Replace if attribute.ty == Type::Complex && !attribute.multi => {
            let Some(Value::Object(parts)) = coerce_one(attribute, value)? else {
                if verb == Verb::Replace && value.is_null() {
                    container.remove(name);
                }
                return Ok(());
            };
            let target = container
                .entry(name)
                .or_insert_with(|| Value::Object(Map::new()));
            match target {
                Value::Object(existing) => existing.extend(parts),
                other => *other = Value::Object(parts),
            }
        }
        Verb::Add | Verb::Replace => match coerce(
            attribute,
            &if attribute.multi {
                as_list(value)
            } else {
                value.clone()
            },
        )? {
            Some(v) => {
                container.insert(name.to_owned(), v);
            }
            None => {
                container.remove(name);
            }
        },
    }
    Ok(())
}

/// A single value where a list is expected becomes a list of one (Okta sends both).
fn as_list(value: &Value) -> Value {
    match value {
        Value::Array(_) | Value::Null => value.clone(),
        other => Value::Array(vec![other.clone()]),
    }
}

/// `attr.sub`: the sub-attribute of a complex attribute, or of every element of a list.
fn each_element(
    container: &mut Map<String, Value>,
    attribute: &Attribute,
    sub: &Attribute,
    verb: Verb,
    value: &Value,
) -> Result<(), ScimError> {
    let set = |object: &mut Map<String, Value>| -> Result<(), ScimError> {
        match (verb, coerce_one(sub, value)?) {
            (Verb::Remove, _) | (_, None) => {
                object.remove(sub.name);
            }
            (_, Some(v)) => {
                object.insert(sub.name.to_owned(), v);
            }
        }
        Ok(())
    };
    match container.get_mut(attribute.name) {
        Some(Value::Array(items)) => items
            .iter_mut()
            .filter_map(Value::as_object_mut)
            .try_for_each(set)?,
        Some(Value::Object(object)) => set(object)?,
        _ if verb == Verb::Remove => {}
        _ => {
            let mut object = Map::new();
            set(&mut object)?;
            let fresh = Value::Object(object);
            container.insert(
                attribute.name.to_owned(),
                if attribute.multi {
                    Value::Array(vec![fresh])
                } else {
                    fresh
                },
            );
        }
    }
    Ok(())
}

/// `attr[filter]` and `attr[filter].sub`: the elements the filter selects.
fn selected(
    container: &mut Map<String, Value>,
    attribute: &Attribute,
    filter: &Filter,
    sub: Option<&Attribute>,
    verb: Verb,
    value: &Value,
) -> Result<(), ScimError> {
    if !attribute.multi || attribute.ty != Type::Complex {
        return Err(ScimError::bad(
            ScimType::InvalidPath,
            format!("{} is not a list of objects", attribute.name),
        ));
    }
    let items = match container.get_mut(attribute.name) {
        Some(Value::Array(items)) => std::mem::take(items),
        _ => Vec::new(),
    };
    let mut kept = Vec::with_capacity(items.len());
    let mut hits = 0_usize;
    for mut item in items {
        if !matches(attribute, &item, filter)? {
            kept.push(item);
            continue;
        }
        hits += 1;
        match (verb, sub, item.as_object_mut()) {
            (Verb::Remove, None, _) => continue,
            (_, Some(sub), Some(object)) => match (verb, coerce_one(sub, value)?) {
                (Verb::Remove, _) | (_, None) => {
                    object.remove(sub.name);
                }
                (_, Some(v)) => {
                    object.insert(sub.name.to_owned(), v);
                }
            },
            (_, None, Some(object)) => {
                if let Some(Value::Object(parts)) = coerce_one(attribute, value)? {
                    object.extend(parts);
                }
            }
            (_, _, None) => {}
        }
        kept.push(item);
    }
    if hits == 0 {
        // Entra replaces `emails[type eq "work"].value` on a user without a work email: the
        // filter's equalities and the value make the element.
        match (verb, seed(filter)) {
            (Verb::Add | Verb::Replace, Some(mut element)) => {
                match sub {
                    Some(sub) => {
                        element.insert(sub.name.to_owned(), value.clone());
                    }
                    None => {
                        if let Some(parts) = value.as_object() {
                            element.extend(parts.clone());
                        }
                    }
                }
                if let Some(element) = coerce_one(attribute, &Value::Object(element))? {
                    kept.push(element);
                }
            }
            _ => {
                container.insert(attribute.name.to_owned(), Value::Array(kept));
                return Err(ScimError::bad(
                    ScimType::NoTarget,
                    "the path's filter matched nothing",
                ));
            }
        }
    }
    container.insert(attribute.name.to_owned(), Value::Array(kept));
    Ok(())
}

/// The element a filter of `eq` comparisons joined by `and` describes.
fn seed(filter: &Filter) -> Option<Map<String, Value>> {
    match filter {
        Filter::Compare(path, Op::Eq, value) if path.urn.is_none() && path.sub.is_none() => {
            Some(Map::from_iter([(path.name.clone(), value.clone())]))
        }
        Filter::And(a, b) => {
            let mut element = seed(a)?;
            element.extend(seed(b)?);
            Some(element)
        }
        _ => None,
    }
}

/// Whether an element of the multi-valued `attribute` matches a value filter.
pub fn matches(attribute: &Attribute, element: &Value, filter: &Filter) -> Result<bool, ScimError> {
    let sub_of = |path: &AttrPath| {
        if path.urn.is_some() || path.sub.is_some() {
            return None;
        }
        attribute.sub_attribute(&path.name)
    };
    let unknown = |path: &AttrPath| {
        ScimError::bad(
            ScimType::InvalidFilter,
            format!("{} has no sub-attribute {}", attribute.name, path.name),
        )
    };
    Ok(match filter {
        Filter::Present(path) => {
            let sub = sub_of(path).ok_or_else(|| unknown(path))?;
            element.get(sub.name).is_some_and(|v| !v.is_null())
        }
        Filter::Compare(path, op, value) => {
            let sub = sub_of(path).ok_or_else(|| unknown(path))?;
            let expected = operand(sub, *op, value)?;
            let actual = element.get(sub.name).and_then(|v| comparable(sub, v));
            match (op, actual) {
                (Op::Ne, None) => true,
                (_, None) => false,
                (op, Some(actual)) => compare(*op, &actual, &expected),
            }
        }
        Filter::And(a, b) => matches(attribute, element, a)? && matches(attribute, element, b)?,
        Filter::Or(a, b) => matches(attribute, element, a)? || matches(attribute, element, b)?,
        Filter::Not(inner) => !matches(attribute, element, inner)?,
        Filter::ValuePath(..) => {
            return Err(ScimError::bad(
                ScimType::InvalidFilter,
                "a value path cannot be nested",
            ));
        }
    })
}

fn compare(op: Op, actual: &str, expected: &str) -> bool {
    match op {
        Op::Eq => actual == expected,
        Op::Ne => actual != expected,
        Op::Co => actual.contains(expected),
        Op::Sw => actual.starts_with(expected),
        Op::Ew => actual.ends_with(expected),
        Op::Gt => actual > expected,
        Op::Ge => actual >= expected,
        Op::Lt => actual < expected,
        Op::Le => actual <= expected,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::resource::canonical;

    fn user() -> Map<String, Value> {
        canonical(
            Kind::User,
            &json!({
                "userName": "ada",
                "name": {"givenName": "Ada", "familyName": "Lovelace"},
                "emails": [{"value": "ada@work.io", "type": "work", "primary": true},
                           {"value": "ada@home.io", "type": "home"}],
                "active": true,
            }),
        )
        .expect("valid")
    }

    fn patch(doc: &mut Map<String, Value>, ops: Value) -> Result<(), ScimError> {
        apply(
            Kind::User,
            doc,
            &json!({"schemas": [PATCH_OP], "Operations": ops}),
        )
    }

    #[test]
    fn entra_shapes() {
        let mut doc = user();
        patch(
            &mut doc,
            json!([
                {"op": "Replace", "path": "active", "value": "False"},
                {"op": "Replace", "value": {
                    "name.givenName": "Augusta",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Math",
                }},
                {"op": "Add", "path": "emails[type eq \"other\"].value", "value": "a@other.io"},
            ]),
        )
        .expect("applies");
        assert_eq!(doc["active"], false);
        assert_eq!(doc["name"]["givenName"], "Augusta");
        assert_eq!(doc["name"]["familyName"], "Lovelace");
        assert_eq!(doc[schema::ENTERPRISE]["department"], "Math");
        assert_eq!(
            doc["emails"][2],
            json!({"value": "a@other.io", "type": "other"})
        );
    }

    #[test]
    fn value_paths_select_elements() {
        let mut doc = user();
        patch(&mut doc, json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "new@work.io"}]))
            .expect("applies");
        assert_eq!(doc["emails"][0]["value"], "new@work.io");
        patch(
            &mut doc,
            json!([{"op": "remove", "path": "emails[type eq \"home\"]"}]),
        )
        .expect("applies");
        assert_eq!(doc["emails"].as_array().map(Vec::len), Some(1));
        let error = patch(
            &mut doc,
            json!([{"op": "remove", "path": "emails[type eq \"none\"]"}]),
        )
        .expect_err("no target");
        assert_eq!(error.scim_type, Some(ScimType::NoTarget));
    }

    #[test]
    fn refusals() {
        for (ops, kind) in [
            (json!([{"op": "remove"}]), ScimType::NoTarget),
            (
                json!([{"op": "replace", "path": "shoeSize", "value": 1}]),
                ScimType::InvalidPath,
            ),
            (
                json!([{"op": "replace", "path": "id", "value": "x"}]),
                ScimType::Mutability,
            ),
            (
                json!([{"op": "replace", "path": "groups", "value": []}]),
                ScimType::Mutability,
            ),
            (
                json!([{"op": "move", "path": "active", "value": true}]),
                ScimType::InvalidSyntax,
            ),
            (
                json!([{"op": "replace", "path": "active", "value": 5}]),
                ScimType::InvalidValue,
            ),
            (
                json!([{"op": "replace", "path": "name.nope", "value": "x"}]),
                ScimType::InvalidPath,
            ),
        ] {
            let mut doc = user();
            let error = patch(&mut doc, ops.clone()).expect_err(&ops.to_string());
            assert_eq!(error.scim_type, Some(kind), "{ops}");
        }
    }

    #[test]
    fn whole_extension_and_unchanged_read_only_values() {
        let mut doc = user();
        doc.insert("id".into(), "u1".into());
        let ext = schema::ENTERPRISE;
        patch(
            &mut doc,
            json!([{"op": "add", "path": ext, "value": {"department": "R&D"}}]),
        )
        .expect("applies");
        assert_eq!(doc[ext]["department"], "R&D");
        patch(
            &mut doc,
            json!([{"op": "replace", "value": {"id": "u1", "title": "t"}}]),
        )
        .expect("its own id, unchanged");
        let error = patch(&mut doc, json!([{"op": "replace", "value": {"id": "u2"}}]))
            .expect_err("another id");
        assert_eq!(error.scim_type, Some(ScimType::Mutability));
        patch(&mut doc, json!([{"op": "remove", "path": ext}])).expect("applies");
        assert!(!doc.contains_key(ext));
    }

    #[test]
    fn group_members_by_filter_and_by_list() {
        let mut doc = canonical(
            Kind::Group,
            &json!({"displayName": "eng", "members": [{"value": "u1"}, {"value": "u2"}, {"value": "u3"}]}),
        )
        .expect("valid");
        apply(
            Kind::Group,
            &mut doc,
            &json!({"Operations": [
                {"op": "remove", "path": "members[value eq \"u1\"]"},
                {"op": "Remove", "path": "members", "value": [{"value": "u2"}]},
                {"op": "add", "path": "members", "value": [{"value": "u4", "display": "ignored"}]},
            ]}),
        )
        .expect("applies");
        assert_eq!(doc["members"], json!([{"value": "u3"}, {"value": "u4"}]));
    }
}
