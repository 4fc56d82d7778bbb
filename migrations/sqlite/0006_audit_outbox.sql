-- Admin mutations and the audit events recording them commit together: each event is written
-- here in the mutation's own transaction, then forwarded to the audit pipeline and deleted.
CREATE TABLE audit_outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    event       TEXT NOT NULL,
    -- HMAC of the event under a key derived from the pepper: only rows the control plane wrote
    -- are forwarded (one inserted with the database's credentials is recorded as rejected).
    mac         TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
