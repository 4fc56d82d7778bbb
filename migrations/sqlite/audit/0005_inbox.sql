-- Events that must commit with a change made in the audit database itself (a tenant's
-- retention): written in the change's transaction, chained by the writer at its next tick.
CREATE TABLE audit_inbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    event       TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
