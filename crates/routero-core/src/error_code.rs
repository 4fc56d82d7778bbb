//! The one vocabulary of errors both planes answer with: each code has its stable string, its
//! HTTP status, its OpenAI-style error `type` and a message safe to show a client.
//!
//! The codes are part of the public API; clients match on them. A code means one thing and
//! has one status wherever it is answered.

/// A kind of resource of the admin API, as errors name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// A virtual API key.
    Key,
    /// An admin key.
    AdminKey,
    /// A provider credential.
    Credential,
    /// A model route.
    Model,
    /// A team.
    Team,
    /// A user.
    User,
    /// A role.
    Role,
    /// A tenant.
    Tenant,
    /// A SCIM token.
    ScimToken,
    /// A break-glass local admin.
    LocalAdmin,
    /// A sign-in session.
    Session,
}

impl Resource {
    /// The resource as a message names it (`admin key`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::AdminKey => "admin key",
            Self::Credential => "credential",
            Self::Model => "model",
            Self::Team => "team",
            Self::User => "user",
            Self::Role => "role",
            Self::Tenant => "tenant",
            Self::ScimToken => "SCIM token",
            Self::LocalAdmin => "local admin",
            Self::Session => "session",
        }
    }
}

/// Why a request was not served, on either plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    // --- authentication and authorization ---
    /// No key, or a key the snapshot does not know.
    InvalidApiKey,
    /// The key's expiry has passed.
    KeyExpired,
    /// No admin key, or one that is not valid.
    InvalidAdminKey,
    /// A login named an unknown account or the wrong password (or a locked account).
    InvalidCredentials,
    /// A request made with a session cookie without the session's CSRF token or from another
    /// origin.
    CsrfFailed,
    /// A single sign-on was refused (the provider's answer failed a check, or the person
    /// may not sign in); the message names the reason.
    SsoLoginFailed,
    /// The source address failed authentication too often this minute.
    TooManyAuthFailures,
    /// The client address is outside the key's CIDR allowlist.
    IpNotAllowed,
    /// The key may not use the requested model.
    ModelNotAllowed,
    /// The authorization policies do not allow the action.
    PolicyDenied,
    /// The policy engine could not decide; refused rather than allowed.
    PolicyEngineUnavailable,
    /// The caller tried to grant, or act on, rights it does not hold itself.
    RoleEscalation,
    /// The caller tried to bind a key to a user or team other than its own.
    ScopeNotAllowed,
    // --- guardrails ---
    /// A guardrail's `block` rule fired on the request or the response.
    GuardrailBlocked,
    /// The tenant's guardrails could not be loaded; refused rather than unscanned.
    GuardrailUnavailable,
    /// Input the guardrails cannot read (token ids instead of text) while they apply.
    GuardrailUninspectable,
    // --- what the request names ---
    /// No such resource in the caller's tenant (for the data plane: no route for the model).
    NotFound(Resource),
    /// No such endpoint.
    RouteNotFound,
    /// A resource of that name already exists.
    AlreadyExists(Resource),
    /// The credential is still deployed by models.
    CredentialInUse,
    /// The tenant's last admin key with the admin role cannot be revoked.
    LastAdminKey,
    /// The user is deactivated or deleted: no key may be issued for them.
    UserInactive,
    /// The tenant's role mapping gives the user no role: no key may be issued for them.
    UserWithoutRoles,
    /// A rate limit of the key is reached (`Retry-After` says when to try again).
    RateLimited,
    /// A budget the request falls under has no room for its worst-case cost.
    BudgetExceeded,
    /// The resource changed since the version the request names (`If-Match`).
    VersionMismatch,
    /// Break-glass local admins are off on this deployment (`break_glass`).
    BreakGlassDisabled,
    /// The tenant has no identity provider for this protocol.
    SsoNotConfigured,
    // --- the request itself ---
    /// The request body is not what the endpoint takes (data plane).
    InvalidRequest,
    /// The request body is too large.
    BodyTooLarge,
    /// The body is not JSON.
    MalformedJson,
    /// The body could not be read.
    InvalidBody,
    /// A field of the body has the wrong type or value.
    InvalidField,
    /// The body has a field the endpoint does not take.
    UnknownField,
    /// The body is not sent as `application/json`.
    UnsupportedMediaType,
    /// The query string is not valid.
    InvalidQuery,
    /// A path parameter is not valid.
    InvalidPath,
    /// A name is not valid.
    InvalidName,
    /// A duration is not valid.
    InvalidDuration,
    /// A CIDR is not valid.
    InvalidCidr,
    /// The list of keys is empty or too long.
    InvalidKeys,
    /// Key metadata is not valid.
    InvalidMetadata,
    /// A list of models is not valid.
    InvalidModels,
    /// A list of roles is not valid.
    InvalidRoles,
    /// A role's permissions are not valid.
    InvalidPermissions,
    /// A role name is reserved for a built-in role.
    ReservedRole,
    /// A role that does not exist.
    UnknownRole,
    /// A guardrail pipeline does not compile.
    InvalidGuardrails,
    /// A retention setting is not valid.
    InvalidRetention,
    /// A retention shorter than the operator's minimum.
    RetentionTooShort,
    /// Credential tags are not valid.
    InvalidTags,
    /// A tag reserved for the gateway.
    ReservedTag,
    /// A deployment names a credential that does not exist.
    UnknownCredential,
    /// A provider the gateway does not speak.
    UnsupportedProvider,
    /// A model's deployments are not valid.
    InvalidDeployments,
    /// An update that changes nothing or changes what cannot change.
    InvalidUpdate,
    /// A provider's API key is not valid.
    InvalidProviderKey,
    /// A base URL is not a valid provider URL.
    InvalidBaseUrl,
    /// A base URL's host does not resolve.
    BaseUrlUnresolvable,
    /// A base URL resolves to an address the egress policy does not allow.
    BaseUrlNotAllowed,
    /// The identity provider settings cannot work (a URL, a missing certificate, …).
    InvalidSsoConfig,
    // --- the gateway and what it depends on ---
    /// The data plane has no snapshot fresh enough to decide.
    ControlPlaneUnreachable,
    /// The request could not be recorded in the audit log, so it is not served.
    AuditUnavailable,
    /// No audit log is configured.
    AuditNotConfigured,
    /// The control plane's database is unavailable.
    DatabaseUnavailable,
    /// The provider could not be reached.
    UpstreamUnreachable,
    /// The counters of budgets and rate limits cannot be reached: refused, never served
    /// uncounted.
    LimitsUnavailable,
    /// The identity provider could not be reached or answered nonsense.
    IdpUnavailable,
    /// The provider's address is one the operator's egress policy does not allow.
    EgressNotAllowed,
    /// The provider did not answer in time.
    UpstreamTimeout,
    /// The provider refused the gateway's own credentials.
    UpstreamAuthFailed,
    /// The provider failed.
    UpstreamError,
    /// The provider is rate limiting the gateway.
    UpstreamRateLimited,
    /// The client did not send its request (headers, body) within the deadline.
    RequestTimeout,
    /// Handling the request took longer than the gateway allows.
    DeadlineExceeded,
    /// The gateway failed unexpectedly; nothing was served or changed.
    InternalError,
}

impl ErrorCode {
    /// The stable machine-readable code.
    pub fn code(self) -> &'static str {
        match self {
            Self::InvalidApiKey => "invalid_api_key",
            Self::KeyExpired => "key_expired",
            Self::InvalidAdminKey => "invalid_admin_key",
            Self::InvalidCredentials => "invalid_credentials",
            Self::CsrfFailed => "csrf_failed",
            Self::SsoLoginFailed => "sso_login_failed",
            Self::TooManyAuthFailures => "too_many_auth_failures",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::ModelNotAllowed => "model_not_allowed",
            Self::PolicyDenied => "policy_denied",
            Self::PolicyEngineUnavailable => "policy_engine_unavailable",
            Self::RoleEscalation => "role_escalation",
            Self::ScopeNotAllowed => "scope_not_allowed",
            Self::GuardrailBlocked => "guardrail_blocked",
            Self::GuardrailUnavailable => "guardrail_unavailable",
            Self::GuardrailUninspectable => "guardrail_uninspectable",
            Self::NotFound(resource) => match resource {
                Resource::Key => "key_not_found",
                Resource::AdminKey => "admin_key_not_found",
                Resource::Credential => "credential_not_found",
                Resource::Model => "model_not_found",
                Resource::Team => "team_not_found",
                Resource::User => "user_not_found",
                Resource::Role => "role_not_found",
                Resource::Tenant => "tenant_not_found",
                Resource::ScimToken => "scim_token_not_found",
                Resource::LocalAdmin => "local_admin_not_found",
                Resource::Session => "session_not_found",
            },
            Self::RouteNotFound => "route_not_found",
            Self::AlreadyExists(_) => "already_exists",
            Self::CredentialInUse => "credential_in_use",
            Self::LastAdminKey => "last_admin_key",
            Self::UserInactive => "user_inactive",
            Self::UserWithoutRoles => "user_without_roles",
            Self::VersionMismatch => "version_mismatch",
            Self::BreakGlassDisabled => "break_glass_disabled",
            Self::SsoNotConfigured => "sso_not_configured",
            Self::InvalidRequest => "invalid_request",
            Self::BodyTooLarge => "body_too_large",
            Self::MalformedJson => "malformed_json",
            Self::InvalidBody => "invalid_body",
            Self::InvalidField => "invalid_field",
            Self::UnknownField => "unknown_field",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::InvalidQuery => "invalid_query",
            Self::InvalidPath => "invalid_path",
            Self::InvalidName => "invalid_name",
            Self::InvalidDuration => "invalid_duration",
            Self::InvalidCidr => "invalid_cidr",
            Self::InvalidKeys => "invalid_keys",
            Self::InvalidMetadata => "invalid_metadata",
            Self::InvalidModels => "invalid_models",
            Self::InvalidRoles => "invalid_roles",
            Self::InvalidPermissions => "invalid_permissions",
            Self::ReservedRole => "reserved_role",
            Self::UnknownRole => "unknown_role",
            Self::InvalidGuardrails => "invalid_guardrails",
            Self::InvalidRetention => "invalid_retention",
            Self::RetentionTooShort => "retention_too_short",
            Self::InvalidTags => "invalid_tags",
            Self::ReservedTag => "reserved_tag",
            Self::UnknownCredential => "unknown_credential",
            Self::UnsupportedProvider => "unsupported_provider",
            Self::InvalidDeployments => "invalid_deployments",
            Self::InvalidUpdate => "invalid_update",
            Self::InvalidProviderKey => "invalid_provider_key",
            Self::InvalidBaseUrl => "invalid_base_url",
            Self::InvalidSsoConfig => "invalid_sso_config",
            Self::BaseUrlUnresolvable => "base_url_unresolvable",
            Self::BaseUrlNotAllowed => "base_url_not_allowed",
            Self::ControlPlaneUnreachable => "control_plane_unreachable",
            Self::AuditUnavailable => "audit_unavailable",
            Self::AuditNotConfigured => "audit_not_configured",
            Self::DatabaseUnavailable => "database_unavailable",
            Self::UpstreamUnreachable => "upstream_unreachable",
            Self::LimitsUnavailable => "limits_unavailable",
            Self::RateLimited => "rate_limited",
            Self::BudgetExceeded => "budget_exceeded",
            Self::IdpUnavailable => "idp_unavailable",
            Self::EgressNotAllowed => "egress_not_allowed",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamAuthFailed => "upstream_auth_failed",
            Self::UpstreamError => "upstream_error",
            Self::UpstreamRateLimited => "upstream_rate_limited",
            Self::RequestTimeout => "request_timeout",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::InternalError => "internal_error",
        }
    }

    /// The HTTP status that carries it.
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidApiKey
            | Self::KeyExpired
            | Self::InvalidAdminKey
            | Self::InvalidCredentials
            | Self::SsoLoginFailed => 401,
            Self::IpNotAllowed
            | Self::CsrfFailed
            | Self::ModelNotAllowed
            | Self::PolicyDenied
            | Self::RoleEscalation
            | Self::ScopeNotAllowed => 403,
            Self::NotFound(_) | Self::RouteNotFound | Self::SsoNotConfigured => 404,
            Self::RequestTimeout => 408,
            Self::AlreadyExists(_)
            | Self::CredentialInUse
            | Self::LastAdminKey
            | Self::UserInactive
            | Self::UserWithoutRoles
            | Self::BreakGlassDisabled => 409,
            Self::VersionMismatch => 412,
            Self::BodyTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::UpstreamRateLimited
            | Self::TooManyAuthFailures
            | Self::RateLimited
            | Self::BudgetExceeded => 429,
            Self::InternalError => 500,
            Self::UpstreamUnreachable
            | Self::IdpUnavailable
            | Self::EgressNotAllowed
            | Self::UpstreamAuthFailed
            | Self::UpstreamError => 502,
            Self::ControlPlaneUnreachable
            | Self::AuditUnavailable
            | Self::AuditNotConfigured
            | Self::DatabaseUnavailable
            | Self::LimitsUnavailable
            | Self::PolicyEngineUnavailable
            | Self::GuardrailUnavailable => 503,
            Self::UpstreamTimeout | Self::DeadlineExceeded => 504,
            Self::GuardrailBlocked
            | Self::GuardrailUninspectable
            | Self::InvalidRequest
            | Self::MalformedJson
            | Self::InvalidBody
            | Self::InvalidField
            | Self::UnknownField
            | Self::InvalidQuery
            | Self::InvalidPath
            | Self::InvalidName
            | Self::InvalidDuration
            | Self::InvalidCidr
            | Self::InvalidKeys
            | Self::InvalidMetadata
            | Self::InvalidModels
            | Self::InvalidRoles
            | Self::InvalidPermissions
            | Self::ReservedRole
            | Self::UnknownRole
            | Self::InvalidGuardrails
            | Self::InvalidRetention
            | Self::RetentionTooShort
            | Self::InvalidTags
            | Self::ReservedTag
            | Self::UnknownCredential
            | Self::UnsupportedProvider
            | Self::InvalidDeployments
            | Self::InvalidUpdate
            | Self::InvalidProviderKey
            | Self::InvalidBaseUrl
            | Self::BaseUrlUnresolvable
            | Self::BaseUrlNotAllowed
            | Self::InvalidSsoConfig => 400,
        }
    }

    /// The OpenAI error `type` it belongs to.
    pub fn error_type(self) -> &'static str {
        match self {
            Self::InvalidApiKey
            | Self::KeyExpired
            | Self::InvalidAdminKey
            | Self::InvalidCredentials
            | Self::SsoLoginFailed
            | Self::TooManyAuthFailures => "authentication_error",
            Self::UpstreamRateLimited | Self::LimitsUnavailable | Self::RateLimited => "api_error",
            // As OpenAI answers a spent quota.
            Self::BudgetExceeded => "insufficient_quota",
            _ => match self.http_status() {
                403 => "permission_error",
                400..=499 => "invalid_request_error",
                _ => "api_error",
            },
        }
    }

    /// A message safe to show the client: it never carries internal detail. Answers
    /// usually say more (which field, which resource).
    pub fn message(self) -> &'static str {
        match self {
            Self::InvalidApiKey => "The API key is missing or not valid.",
            Self::KeyExpired => "The API key has expired.",
            Self::InvalidAdminKey => {
                "A valid admin key is required: Authorization: Bearer <admin key>."
            }
            Self::TooManyAuthFailures => {
                "Too many failed authentications from this address; retry after the time given."
            }
            Self::InvalidCredentials => "Unknown user name or wrong password.",
            Self::BreakGlassDisabled => {
                "Break-glass local admins are off on this deployment (setting break_glass)."
            }
            Self::SsoLoginFailed => "The identity provider's sign-in was refused.",
            Self::SsoNotConfigured => "This tenant has no identity provider for this protocol.",
            Self::InvalidSsoConfig => "The identity provider settings cannot work.",
            Self::IdpUnavailable => "The identity provider cannot be reached right now.",
            Self::RateLimited => "This key's rate limit is reached; retry after the time given.",
            Self::BudgetExceeded => {
                "A budget this request falls under has no room for it; it was not sent."
            }
            Self::LimitsUnavailable => {
                "The gateway cannot count this request against its limits right now and refuses it."
            }
            Self::CsrfFailed => {
                "A request made with a session cookie needs the session's X-CSRF-Token header."
            }
            Self::IpNotAllowed => "Requests with this key are not allowed from this address.",
            Self::ModelNotAllowed => "This key may not use the requested model.",
            Self::PolicyDenied => "The gateway's policies do not allow this.",
            Self::PolicyEngineUnavailable => {
                "The gateway cannot check its policies right now and refuses the request."
            }
            Self::RoleEscalation => {
                "You may grant, or act on, only roles and permissions you hold yourself."
            }
            Self::ScopeNotAllowed => {
                "You may bind keys only to your own user and the teams it belongs to."
            }
            Self::GuardrailBlocked => {
                "The gateway's guardrails blocked this request: it carries content the tenant's policy does not allow."
            }
            Self::GuardrailUninspectable => {
                "The gateway's guardrails cannot read this input (token ids, not text): send text instead."
            }
            Self::GuardrailUnavailable => {
                "The gateway cannot apply its guardrails right now and refuses the request."
            }
            Self::NotFound(Resource::Model) => "The requested model does not exist.",
            Self::NotFound(_) => "No such resource in this tenant.",
            Self::RouteNotFound => "No such endpoint.",
            Self::AlreadyExists(_) => "A resource with this name already exists.",
            Self::CredentialInUse => "Models deploy this credential; change or delete them first.",
            Self::LastAdminKey => "This is the tenant's last admin key with the admin role.",
            Self::InvalidRequest => "The request body is not valid.",
            Self::BodyTooLarge => "The request body is too large.",
            Self::MalformedJson => "The request body is not valid JSON.",
            Self::InvalidBody => "The request body could not be read.",
            Self::UnsupportedMediaType => "Send Content-Type: application/json.",

            Self::ControlPlaneUnreachable => {
                "The gateway has no current configuration and refuses requests until it does."
            }
            Self::AuditUnavailable => {
                "The request cannot be recorded in the audit log right now and is refused."
            }
            Self::AuditNotConfigured => "No audit log is configured.",
            Self::DatabaseUnavailable => "The control plane's database is unavailable.",
            Self::UpstreamUnreachable => "The model provider could not be reached.",
            Self::EgressNotAllowed => {
                "The gateway's egress policy does not allow the model provider's address."
            }
            Self::UpstreamTimeout => "The model provider did not answer in time.",
            Self::UpstreamAuthFailed => "The gateway's provider credential was refused.",
            Self::UpstreamError => "The model provider failed.",
            Self::UpstreamRateLimited => {
                "The model provider is rate limiting requests; retry later."
            }
            Self::RequestTimeout => "The request was not received in time.",
            Self::DeadlineExceeded => "The request took longer than the gateway allows.",
            Self::InternalError => "The gateway failed; nothing was served or changed.",
            // Validation codes: answers name the field and what is wrong with it.
            _ => "The request is not valid; the code names what.",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Every code, each resource's for the resource-bearing ones.
    const ALL: &[ErrorCode] = &[
        ErrorCode::InvalidApiKey,
        ErrorCode::KeyExpired,
        ErrorCode::InvalidAdminKey,
        ErrorCode::SsoLoginFailed,
        ErrorCode::SsoNotConfigured,
        ErrorCode::InvalidSsoConfig,
        ErrorCode::IdpUnavailable,
        ErrorCode::RateLimited,
        ErrorCode::BudgetExceeded,
        ErrorCode::LimitsUnavailable,
        ErrorCode::TooManyAuthFailures,
        ErrorCode::IpNotAllowed,
        ErrorCode::ModelNotAllowed,
        ErrorCode::PolicyDenied,
        ErrorCode::PolicyEngineUnavailable,
        ErrorCode::RoleEscalation,
        ErrorCode::ScopeNotAllowed,
        ErrorCode::GuardrailBlocked,
        ErrorCode::GuardrailUnavailable,
        ErrorCode::GuardrailUninspectable,
        ErrorCode::NotFound(Resource::Key),
        ErrorCode::NotFound(Resource::AdminKey),
        ErrorCode::NotFound(Resource::Credential),
        ErrorCode::NotFound(Resource::Model),
        ErrorCode::NotFound(Resource::Team),
        ErrorCode::NotFound(Resource::User),
        ErrorCode::NotFound(Resource::Role),
        ErrorCode::NotFound(Resource::Tenant),
        ErrorCode::RouteNotFound,
        ErrorCode::AlreadyExists(Resource::Key),
        ErrorCode::AlreadyExists(Resource::AdminKey),
        ErrorCode::AlreadyExists(Resource::Credential),
        ErrorCode::AlreadyExists(Resource::Model),
        ErrorCode::AlreadyExists(Resource::Team),
        ErrorCode::AlreadyExists(Resource::User),
        ErrorCode::AlreadyExists(Resource::Role),
        ErrorCode::AlreadyExists(Resource::Tenant),
        ErrorCode::CredentialInUse,
        ErrorCode::LastAdminKey,
        ErrorCode::InvalidRequest,
        ErrorCode::BodyTooLarge,
        ErrorCode::MalformedJson,
        ErrorCode::InvalidBody,
        ErrorCode::InvalidField,
        ErrorCode::UnknownField,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::InvalidQuery,
        ErrorCode::InvalidPath,
        ErrorCode::InvalidName,
        ErrorCode::InvalidDuration,
        ErrorCode::InvalidCidr,
        ErrorCode::InvalidKeys,
        ErrorCode::InvalidMetadata,
        ErrorCode::InvalidModels,
        ErrorCode::InvalidRoles,
        ErrorCode::InvalidPermissions,
        ErrorCode::ReservedRole,
        ErrorCode::UnknownRole,
        ErrorCode::InvalidGuardrails,
        ErrorCode::InvalidRetention,
        ErrorCode::RetentionTooShort,
        ErrorCode::InvalidTags,
        ErrorCode::ReservedTag,
        ErrorCode::UnknownCredential,
        ErrorCode::UnsupportedProvider,
        ErrorCode::InvalidDeployments,
        ErrorCode::InvalidUpdate,
        ErrorCode::InvalidProviderKey,
        ErrorCode::InvalidBaseUrl,
        ErrorCode::BaseUrlUnresolvable,
        ErrorCode::BaseUrlNotAllowed,
        ErrorCode::ControlPlaneUnreachable,
        ErrorCode::AuditUnavailable,
        ErrorCode::AuditNotConfigured,
        ErrorCode::DatabaseUnavailable,
        ErrorCode::UpstreamUnreachable,
        ErrorCode::EgressNotAllowed,
        ErrorCode::UpstreamTimeout,
        ErrorCode::UpstreamAuthFailed,
        ErrorCode::UpstreamError,
        ErrorCode::UpstreamRateLimited,
        ErrorCode::RequestTimeout,
        ErrorCode::DeadlineExceeded,
        ErrorCode::InternalError,
    ];

    #[test]
    fn each_code_string_means_one_thing_with_one_status() {
        let mut seen: BTreeMap<&str, ErrorCode> = BTreeMap::new();
        for code in ALL {
            let name = code.code();
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
            assert!(!code.message().is_empty(), "{name}");
            assert!((400..600).contains(&code.http_status()), "{name}");
            if let Some(other) = seen.insert(name, *code) {
                // Only `already_exists` is shared, by every resource, with one status.
                assert!(
                    matches!(
                        (other, code),
                        (ErrorCode::AlreadyExists(_), ErrorCode::AlreadyExists(_))
                    ),
                    "{name} names both {other:?} and {code:?}"
                );
            }
        }
    }

    #[test]
    fn statuses_and_types_agree() {
        for code in ALL {
            let expected = match code.http_status() {
                401 => "authentication_error",
                403 => "permission_error",
                429 if *code == ErrorCode::TooManyAuthFailures => "authentication_error",
                // OpenAI's type for a spent quota.
                429 if *code == ErrorCode::BudgetExceeded => "insufficient_quota",
                429 => "api_error",
                400..=499 => "invalid_request_error",
                _ => "api_error",
            };
            assert_eq!(code.error_type(), expected, "{code:?}");
        }
        assert_eq!(
            ErrorCode::NotFound(Resource::Model).code(),
            "model_not_found"
        );
        assert_eq!(
            ErrorCode::NotFound(Resource::AdminKey).code(),
            "admin_key_not_found"
        );
    }
}
