-- Single sign-on and CORS (issue 14). A tenant's identity provider, one per protocol: its settings as
-- JSON (never a secret), an OIDC client secret sealed in the vault (bound to the tenant and
-- the issuer), whether unknown people are created at their first login (JIT), and a version
-- that keys the control plane's cache of the provider's endpoints and keys.
CREATE TABLE sso_configs (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    protocol    TEXT NOT NULL,
    settings    TEXT NOT NULL,
    secret      TEXT,
    jit         BOOLEAN NOT NULL,
    version     BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, protocol)
);

-- Logins begun and not yet finished: keyed by the HMAC of their state (OIDC) or request id
-- (SAML), bound to the browser that began them by the HMAC of a cookie, used once (used_at is
-- kept until expiry, so a replay is told apart from a forgery and recorded under its tenant).
CREATE TABLE sso_logins (
    state_hash   BYTEA PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    protocol     TEXT NOT NULL,
    browser_hash BYTEA NOT NULL,
    nonce        TEXT NOT NULL,
    verifier     TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    source_ip    TEXT,
    expires_at   BIGINT NOT NULL,
    used_at      BIGINT
);
CREATE INDEX sso_logins_by_expiry ON sso_logins (expires_at);
CREATE INDEX sso_logins_by_tenant ON sso_logins (tenant_id, expires_at);

-- The identity a user signs in as (the provider's issuer and subject), recorded at their first
-- sign-in, after which nothing else links to them; and the groups their provider named at their
-- last sign-in (JSON), mapped to roles with their SCIM groups (the roles of their sessions and
-- of the keys bound to them).
ALTER TABLE users ADD COLUMN sso_subject TEXT;
ALTER TABLE users ADD COLUMN sso_groups TEXT;
CREATE UNIQUE INDEX users_sso_subject ON users (tenant_id, sso_subject);

-- SAML assertions already consumed, until they could no longer be presented: a replay of one
-- (IdP-initiated sign-in has no request to tie it to) is refused.
CREATE TABLE sso_assertions (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    assertion_id TEXT NOT NULL,
    expires_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, assertion_id)
);

-- The browser origins each tenant's web apps call the gateway from (CORS), as a JSON list;
-- none unless an admin lists some. Data planes get them in snapshots.
CREATE TABLE cors_origins (
    tenant_id   TEXT PRIMARY KEY REFERENCES tenants(id),
    origins     TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);
