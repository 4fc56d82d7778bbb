-- Guardrail findings (issue 19): every chained `request.guardrail_triggered` event's findings
-- added up, in the same transaction that chains it (each counted once, whatever is
-- redelivered), per hour (its start, `YYYY-MM-DDTHH:00:00Z`), stage (request or response),
-- detector and action. Counts only: the matched text is in no event, so in no line here.
-- Derived data: the chained events it adds up are the evidence.
CREATE TABLE guardrail_findings (
    tenant_id  TEXT NOT NULL,
    hour       TEXT NOT NULL,
    stage      TEXT NOT NULL,
    detector   TEXT NOT NULL,
    action     TEXT NOT NULL,
    findings   BIGINT NOT NULL,
    requests   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, hour, stage, detector, action)
);
