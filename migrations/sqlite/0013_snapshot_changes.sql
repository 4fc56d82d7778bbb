-- Scale (issue 17): which keys each snapshot version changed, so the control plane reloads
-- those keys alone. `key_ids` is a JSON array of key ids, or NULL for a change that may touch
-- anything (a full reload). A version with no row here (older binaries, pruned rows, a manual
-- bump) also means a full reload.
CREATE TABLE snapshot_changes (
    version BIGINT PRIMARY KEY,
    key_ids TEXT
);
