-- Sign-in (issue 14). Break-glass local admins: a tenant's accounts for when its identity
-- provider is down, none unless an admin creates them; the password as an Argon2id PHC string,
-- failures counted for the lockout. Sessions: server-side, the cookie's token and the CSRF
-- token kept as HMACs under the pepper; idle and absolute expiry; revoked by logout, an admin,
-- or the deprovisioning of their user.
CREATE TABLE local_admins (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id),
    username        TEXT NOT NULL,
    password_hash   TEXT NOT NULL,
    roles           TEXT NOT NULL,
    failures        BIGINT NOT NULL DEFAULT 0,
    locked_until    BIGINT,
    created_at      BIGINT NOT NULL,
    UNIQUE (tenant_id, username)
);

CREATE TABLE sessions (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id),
    token_hash      BLOB NOT NULL UNIQUE,
    csrf_hash       BLOB NOT NULL,
    -- who signed in: a user (SSO) or a local admin
    user_id         TEXT REFERENCES users(id),
    local_admin_id  TEXT REFERENCES local_admins(id),
    roles           TEXT NOT NULL,
    source_ip       TEXT,
    created_at      BIGINT NOT NULL,
    last_seen_at    BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    revoked_at      BIGINT
);
CREATE INDEX sessions_by_user ON sessions (user_id);
