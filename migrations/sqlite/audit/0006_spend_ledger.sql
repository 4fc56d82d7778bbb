-- The spend ledger (issue 15): every chained `spend.debited` event added up, in the same
-- transaction that chains it (so each is counted exactly once, whatever is redelivered), per
-- hour (its start, `YYYY-MM-DDTHH:00:00Z`), key, user, team and model. Absent users and teams
-- are ''. Derived data: the chained events it adds up are the evidence.
CREATE TABLE spend_ledger (
    tenant_id      TEXT NOT NULL,
    hour           TEXT NOT NULL,
    key_id         TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    team_id        TEXT NOT NULL,
    model          TEXT NOT NULL,
    requests       BIGINT NOT NULL,
    input_tokens   BIGINT NOT NULL,
    cached_tokens  BIGINT NOT NULL,
    output_tokens  BIGINT NOT NULL,
    cost_micros    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, hour, key_id, user_id, team_id, model)
);
