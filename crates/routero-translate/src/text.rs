//! Reading text and small values out of JSON the same way in every translation.

use serde_json::{Map, Value};

use crate::Untranslatable;

/// The text of `content`: a string as is, or the `text` of its parts (of any of `kinds`)
/// joined; `None` for anything else (`null`, a number, parts without text).
pub(crate) fn joined(content: &Value, kinds: &[&str]) -> Option<String> {
    match content {
        Value::String(text) => Some(text.clone()),
        Value::Array(parts) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter(|part| {
                    part.get("type")
                        .and_then(Value::as_str)
                        .is_some_and(|kind| kinds.contains(&kind))
                })
                .filter_map(|part| part.get("text").and_then(Value::as_str))
                .collect();
            (!texts.is_empty()).then(|| texts.concat())
        }
        _ => None,
    }
}

/// A field's string, or a refusal naming the field.
pub(crate) fn string<'a>(
    object: &'a Map<String, Value>,
    field: &str,
) -> Result<&'a str, Untranslatable> {
    object
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| Untranslatable::new(format!("{field}: a string is required")))
}

/// The `type` of a part or item, `""` when it has none.
pub(crate) fn kind(value: &Value) -> &str {
    value.get("type").and_then(Value::as_str).unwrap_or("")
}

/// Copies the fields named in `pairs` (from, to) that `from` has into `to`.
pub(crate) fn copy(from: &Map<String, Value>, to: &mut Map<String, Value>, pairs: &[(&str, &str)]) {
    for (source, target) in pairs {
        if let Some(value) = from.get(*source).filter(|v| !v.is_null()) {
            to.insert((*target).to_owned(), value.clone());
        }
    }
}

/// A tool call's arguments (JSON text) as the object Anthropic takes: `{}` when empty.
pub(crate) fn arguments_object(arguments: &str) -> Result<Value, Untranslatable> {
    if arguments.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(object @ Value::Object(_)) => Ok(object),
        _ => Err(Untranslatable::new(
            "tool call arguments must be a JSON object",
        )),
    }
}

/// A message's content as the dialects carry it: one string, or an array of parts (blocks).
pub(crate) enum Content<'a> {
    Text(&'a str),
    Parts(&'a [Value]),
}

/// Reads `value` as content whose array items are called `parts` in refusals.
pub(crate) fn content<'a>(value: &'a Value, parts: &str) -> Result<Content<'a>, Untranslatable> {
    match value {
        Value::String(text) => Ok(Content::Text(text)),
        Value::Array(items) => Ok(Content::Parts(items)),
        _ => Err(Untranslatable::new(format!(
            "content: a string or an array of {parts} is required"
        ))),
    }
}
