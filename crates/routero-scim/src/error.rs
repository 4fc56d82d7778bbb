//! SCIM's error body (RFC 7644 §3.12): `status` as a string and a `scimType` where one applies.

use serde_json::{Value, json};

/// The `scimType` of a 400 (or 409) error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScimType {
    /// The filter cannot be parsed, names what the server does not know, or is too large.
    InvalidFilter,
    /// A value has the wrong type, is not allowed, or names an unknown attribute.
    InvalidValue,
    /// A PATCH path is not a path the schema has.
    InvalidPath,
    /// A PATCH path's filter matched nothing.
    NoTarget,
    /// A unique attribute's value is taken.
    Uniqueness,
    /// An attempt to change a read-only or immutable attribute.
    Mutability,
    /// The request body is not valid JSON or not the message expected.
    InvalidSyntax,
    /// More results or operations than the server allows.
    TooMany,
    /// The resource's version is not the one the request named.
    InvalidVers,
}

impl ScimType {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidFilter => "invalidFilter",
            Self::InvalidValue => "invalidValue",
            Self::InvalidPath => "invalidPath",
            Self::NoTarget => "noTarget",
            Self::Uniqueness => "uniqueness",
            Self::Mutability => "mutability",
            Self::InvalidSyntax => "invalidSyntax",
            Self::TooMany => "tooMany",
            Self::InvalidVers => "invalidVers",
        }
    }
}

/// A SCIM error: an HTTP status, an optional `scimType` and a detail safe to show the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimError {
    /// The HTTP status.
    pub status: u16,
    /// The SCIM error type, for 400 and 409 errors.
    pub scim_type: Option<ScimType>,
    /// What went wrong, in words.
    pub detail: String,
}

impl ScimError {
    /// A 400 error of `scim_type`.
    pub fn bad(scim_type: ScimType, detail: impl Into<String>) -> Self {
        Self {
            status: 400,
            scim_type: Some(scim_type),
            detail: detail.into(),
        }
    }

    /// An error of `status` without a `scimType`.
    pub fn status(status: u16, detail: impl Into<String>) -> Self {
        Self {
            status,
            scim_type: None,
            detail: detail.into(),
        }
    }

    /// 404: no such resource (in the caller's tenant).
    pub fn not_found(what: &str) -> Self {
        Self::status(404, format!("{what} not found"))
    }

    /// 409 uniqueness: the value of `attribute` is taken.
    pub fn taken(attribute: &str) -> Self {
        Self {
            status: 409,
            scim_type: Some(ScimType::Uniqueness),
            detail: format!("{attribute} is already taken"),
        }
    }

    /// The error body.
    pub fn body(&self) -> Value {
        let mut body = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": self.status.to_string(),
            "detail": self.detail,
        });
        if let (Some(kind), Some(map)) = (self.scim_type, body.as_object_mut()) {
            map.insert("scimType".into(), kind.as_str().into());
        }
        body
    }
}

impl std::fmt::Display for ScimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.detail)
    }
}

impl std::error::Error for ScimError {}
