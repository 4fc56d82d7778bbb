-- Tenants, identity (users and groups shaped for SCIM), provider credentials, model routes,
-- virtual keys, admin keys, and the snapshot version every mutation advances.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE teams (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    external_id TEXT,
    created_at  BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE users (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    user_name    TEXT NOT NULL,
    email        TEXT,
    display_name TEXT,
    external_id  TEXT,
    active       BOOLEAN NOT NULL,
    created_at   BIGINT NOT NULL,
    UNIQUE (tenant_id, user_name)
);

CREATE TABLE team_members (
    team_id TEXT NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (team_id, user_id)
);

CREATE TABLE admin_keys (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    key_hash    BLOB NOT NULL UNIQUE,
    role        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE TABLE credentials (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    provider    TEXT NOT NULL,
    base_url    TEXT NOT NULL,
    -- "v<key version>:" + base64(nonce || AES-256-GCM ciphertext), tenant id as AAD
    ciphertext  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE model_routes (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    -- JSON array of {"credential_id", "model"}
    deployments TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE virtual_keys (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    -- HMAC-SHA256 of the key under the server pepper; the key itself is never stored
    key_hash      BLOB NOT NULL UNIQUE,
    key_hint      TEXT NOT NULL,
    team_id       TEXT REFERENCES teams(id),
    user_id       TEXT REFERENCES users(id),
    models        TEXT NOT NULL,
    allowed_cidrs TEXT NOT NULL,
    metadata      TEXT NOT NULL,
    expires_at    BIGINT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    revoked_at    BIGINT
);

CREATE INDEX virtual_keys_tenant ON virtual_keys (tenant_id);

CREATE TABLE snapshot_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);

INSERT INTO snapshot_version (id, version) VALUES (1, 1);
