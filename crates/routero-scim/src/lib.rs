//! SCIM 2.0 (RFC 7643 and RFC 7644) as Routero serves it, without a database or a web
//! framework: the schemas of Users, Groups and the enterprise extension ([`schema`]), the filter
//! language parsed by our own bounded parser ([`filter`]), resources validated, rendered and
//! indexed ([`resource`]), PATCH ([`patch`]), filters compiled to SQL over the index
//! ([`sql`]), the discovery documents ([`discovery`]) and SCIM's error body ([`ScimError`]).
#![forbid(unsafe_code)]

pub mod discovery;
mod error;
pub mod filter;
pub mod patch;
pub mod resource;
pub mod schema;
pub mod sql;

pub use error::{ScimError, ScimType};

/// The media type of every SCIM body.
pub const CONTENT_TYPE: &str = "application/scim+json";
/// The most resources one page returns (declared in `ServiceProviderConfig`).
pub const MAX_PAGE: u32 = 200;
/// The most operations one PATCH request carries.
pub const MAX_OPERATIONS: usize = 100;
