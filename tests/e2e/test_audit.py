"""The audit trail of `routero up`: every request and admin action once, chained and signed,
verifiable from the database and from an export; tampering named by `routero audit verify`."""

import json
import re
import sqlite3
import subprocess

import httpx
import openai
import pytest

from conftest import BIN_DIR, Gateway, clean_env, ready, wait_until


def audit(gw, *args):
    """Runs `routero audit …` on the gateway's data directory; returns (exit code, stdout)."""
    done = subprocess.run([str(BIN_DIR / "routero"), "audit", *args], capture_output=True, text=True,
                          env=clean_env({"ROUTERO_DATA_DIR": str(gw.dir / "data")}))
    return done.returncode, done.stdout + done.stderr


@pytest.fixture
def audited(fake_provider):
    gw = Gateway(fake_provider, "sqlite-up")
    issued = gw.new_key(models=["gpt-a"])
    gw.wait_for_key(issued["key"])
    client = gw.client(issued["key"])
    client.chat.completions.create(model="gpt-a", messages=[{"role": "user", "content": "a secret prompt"}])
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="gpt-b", messages=[{"role": "user", "content": "x"}])
    httpx.post(gw.data_url + "/v1/chat/completions", headers={"Authorization": "Bearer sk-rt-forged"}, json={})
    gw.admin("GET", "/key/list", key="sk-rtadm-wrong")
    gw.admin("POST", "/key/delete", {"key_ids": [issued["key_id"]]})
    gw.stop("up")  # a clean stop drains the bus and signs a last checkpoint
    yield gw, issued
    gw.close()


def exported(gw):
    code, out = audit(gw, "export")
    assert code == 0, out
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_every_event_appears_once_chained_and_verifies(audited):
    gw, issued = audited
    lines = exported(gw)
    records = [l for l in lines if l["kind"] == "record"]
    actions = [r["event"]["action"] for r in records if r["tenant_id"] != "_unattributed"]
    assert actions == ["credential.created", "model.created", "model.created", "model.created",
                       "key.created", "request.routed", "request.blocked", "key.revoked"], actions
    unattributed = [(r["event"]["action"], r["event"]["reason_code"]) for r in records if r["tenant_id"] == "_unattributed"]
    assert unattributed == [("request.blocked", "invalid_api_key"), ("login.failed", "invalid_admin_key")]
    routed = next(r["event"] for r in records if r["event"]["action"] == "request.routed")
    assert routed["actor"] == {"kind": "virtual_key", "id": issued["key_id"], "source_ip": "127.0.0.1",
                               "user_agent": routed["actor"]["user_agent"]}
    assert routed["resource"] == {"kind": "model", "id": "gpt-a"} and routed["outcome"] == "success"
    assert routed["details"]["status"] == 200 and routed["request_id"]
    assert len({r["event"]["event_id"] for r in records}) == len(records)
    assert "a secret prompt" not in json.dumps(lines), "prompts never reach the audit log"
    assert issued["key"] not in json.dumps(lines), "nor do keys"

    code, out = audit(gw, "verify")
    assert code == 0, out
    assert "ok, 8 records through seq 8, signed through seq 8" in out

    export = gw.dir / "export.jsonl"
    export.write_text("".join(json.dumps(l) + "\n" for l in lines))
    public_key = audit(gw, "public-key")[1].strip()
    code, out = audit(gw, "verify", "--file", str(export), "--public-key", public_key)
    assert code == 0 and "signed through seq 8" in out, out
    tampered = gw.dir / "tampered.jsonl"
    tampered.write_text(export.read_text().replace('"outcome": "denied"', '"outcome": "success"', 1))
    code, out = audit(gw, "verify", "--file", str(tampered), "--public-key", public_key)
    assert code == 1 and "modified" in out, out


@pytest.mark.parametrize("tamper, expected", [
    (["UPDATE audit_records SET event = REPLACE(event, '\"status\":200', '\"status\":500') WHERE seq = 6"], "seq 6 modified"),
    (["DELETE FROM audit_records WHERE seq = 3"], "seq 3 deleted"),
    (["UPDATE audit_records SET seq = -1 WHERE seq = 4", "UPDATE audit_records SET seq = 4 WHERE seq = 5",
      "UPDATE audit_records SET seq = 5 WHERE seq = -1"], "seq 4 reordered"),
])
def test_tampering_in_the_database_is_named(audited, tamper, expected):
    gw, _ = audited
    db = sqlite3.connect(gw.dir / "data" / "audit.db")
    with db:
        db.execute("DROP TRIGGER audit_records_no_update")
        db.execute("DROP TRIGGER audit_records_no_delete")
        for statement in tamper:
            db.execute(statement + " AND tenant_id != '_unattributed'" if "WHERE" in statement else statement)
    db.close()
    code, out = audit(gw, "verify")
    assert code == 1, out
    assert expected in out, out


def test_the_audit_log_refuses_updates(audited):
    gw, _ = audited
    db = sqlite3.connect(gw.dir / "data" / "audit.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE audit_records SET outcome = 'success'")
    db.close()


def test_audit_events_query_filters_and_pages(fake_provider):
    gw = Gateway(fake_provider, "sqlite-up")
    try:
        keys = [gw.new_key(models=["gpt-a"]) for _ in range(3)]
        gw.admin("POST", "/key/delete", {"key_ids": [keys[0]["key_id"]]})

        def created():
            r = gw.admin("GET", "/audit/events?type=key.created&limit=2")
            assert r.status_code == 200, r.text
            return r.json()
        # The writer commits asynchronously; wait until all three creations are stored.
        wait_until(lambda: created()["next_cursor"] is not None and len(created()["events"]) == 2, timeout=10)
        first = created()
        seqs = [e["seq"] for e in first["events"]]
        assert seqs == sorted(seqs, reverse=True), "newest first"
        second = gw.admin("GET", f"/audit/events?type=key.created&limit=2&cursor={first['next_cursor']}").json()
        ids = [e["event"]["resource"]["id"] for e in first["events"] + second["events"]]
        assert sorted(ids) == sorted(k["key_id"] for k in keys) and second["next_cursor"] is None
        wait_until(lambda: len(gw.admin("GET", "/audit/events?type=key.revoked").json()["events"]) == 1, timeout=10)
        revoked = gw.admin("GET", "/audit/events?type=key.revoked&outcome=success").json()["events"]
        assert revoked[0]["event"]["resource"]["id"] == keys[0]["key_id"]
        assert gw.admin("GET", "/audit/events?since=2999-01-01T00:00:00Z").json()["events"] == []
        assert len(gw.admin("GET", "/audit/events?until=2999-01-01T00:00:00Z&limit=500").json()["events"]) >= 7
        for bad in ["type=key.exploded", "since=yesterday", "limit=0", "limit=501", "cursor=abc", "surprise=1"]:
            r = gw.admin("GET", f"/audit/events?{bad}")
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_query", (bad, r.text)
        assert gw.admin("GET", "/audit/events", key="sk-rtadm-wrong").status_code == 401
        # Failed logins belong to no tenant: they are not in this tenant's trail.
        assert gw.admin("GET", "/audit/events?type=login.failed").json()["events"] == []
    finally:
        gw.close()


def test_retention_is_set_per_tenant_and_pruning_runs_on_demand(fake_provider):
    gw = Gateway(fake_provider, "sqlite-up", extra_env={"ROUTERO_AUDIT_MIN_RETENTION_DAYS": "100"})
    try:
        assert gw.admin("GET", "/audit/retention").json() == {"days": 365}
        r = gw.admin("PUT", "/audit/retention", {"days": 120})
        assert r.status_code == 200 and r.json() == {"days": 120}
        # The retention lives in the chain: in force once a checkpoint signs its event (10 s).
        wait_until(lambda: gw.admin("GET", "/audit/retention").json() == {"days": 120}, timeout=25,
                   what="the retention change signed")
        for body, code in [({"days": 0}, "invalid_retention"), ({"days": 4000}, "invalid_retention"),
                           ({"days": 99}, "retention_too_short"),
                           ({"days": 30, "also": 1}, "unknown_field"), ({"days": "30"}, "invalid_field")]:
            r = gw.admin("PUT", "/audit/retention", body)
            assert r.status_code == 400 and r.json()["error"]["code"] == code, (body, r.text)
        assert gw.admin("GET", "/audit/retention").json() == {"days": 120}, "a refusal changes nothing"
        wait_until(lambda: len(gw.admin("GET", "/audit/events?type=audit.retention_changed").json()["events"]) == 1, timeout=10)
        # The attempt to erase history sooner is itself recorded.
        wait_until(lambda: [e["event"]["reason_code"] for e in
                            gw.admin("GET", "/audit/events?type=policy.blocked").json()["events"]] == ["retention_too_short"],
                   timeout=10, what="the refusal audited")
        # Nothing is 100 days old yet: pruning keeps everything and the chain still verifies.
        code, out = audit(gw, "prune")
        assert code == 0 and "0 tenant(s) pruned" in out, out
        gw.stop("up")
        code, out = audit(gw, "verify")
        assert code == 0, out
    finally:
        gw.close()


def test_the_default_minimum_retention_is_90_days(fake_provider):
    gw = Gateway(fake_provider, "sqlite-up")
    try:
        r = gw.admin("PUT", "/audit/retention", {"days": 1})
        assert r.status_code == 400 and r.json()["error"]["code"] == "retention_too_short", r.text
        assert "90" in r.json()["error"]["message"]
        assert gw.admin("PUT", "/audit/retention", {"days": 90}).status_code == 200
    finally:
        gw.close()


def test_a_checkpoint_relabelled_as_an_anchor_is_refused(audited):
    """The attack of an operator with the database: copy a checkpoint into the anchors, which
    makes every record below it deletable, delete them; or relabel a line of an export."""
    gw, _ = audited
    code, out = audit(gw, "verify")
    assert code == 0, out
    export = exported(gw)
    tenant = next(line["tenant_id"] for line in export if line["tenant_id"] != "_unattributed")
    db = sqlite3.connect(gw.dir / "data" / "audit.db")
    with db:
        db.execute("INSERT INTO audit_anchors (tenant_id, seq, hash, time, signature, covered_until, retention_days) "
                   "SELECT tenant_id, seq, hash, time, signature, '2020-01-01T00:00:00.000Z', 365 "
                   "FROM audit_checkpoints WHERE tenant_id = ?", (tenant,))
        # The append-only trigger lets records below an anchor go: the forged one opens the door.
        db.execute("DELETE FROM audit_records WHERE tenant_id = ?", (tenant,))
    db.close()
    code, out = audit(gw, "verify")
    assert code == 1 and f"tenant {tenant}: seq 8 anchor is a checkpoint relabelled" in out, out

    public_key = audit(gw, "public-key")[1].strip()
    relabelled = [dict(line, kind="anchor") if line["kind"] == "checkpoint" and line["tenant_id"] == tenant else line
                  for line in export if not (line["kind"] == "record" and line["tenant_id"] == tenant)]
    forged = gw.dir / "forged.jsonl"
    forged.write_text("".join(json.dumps(line) + "\n" for line in relabelled))
    code, out = audit(gw, "verify", "--file", str(forged), "--public-key", public_key)
    assert code == 1 and "relabelled as an anchor" in out, out


def checkpoint_lines(received):
    return [dict(c, kind="checkpoint") for c in received]


def test_webhook_sink_delivers_signed_chained_records_and_witnesses_the_heads(fake_provider):
    import hashlib
    import hmac
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    secret = "whsec-e2e-0123456789abcdef"
    received, checkpoints, refused = [], [], []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            t, v1 = (part.split("=", 1)[1] for part in self.headers["X-Routero-Signature"].split(","))
            expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, v1):
                refused.append(body)
                self.send_response(401)
            else:
                received.extend(json.loads(body)["records"])
                checkpoints.extend(json.loads(body)["checkpoints"])
                self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    gw = Gateway(fake_provider, "sqlite-up", extra_env={
        "ROUTERO_AUDIT_WEBHOOK_URL": f"http://127.0.0.1:{server.server_port}/hook",
        "ROUTERO_AUDIT_WEBHOOK_SECRET": secret,
        "ROUTERO_AUDIT_CHECKPOINT_INTERVAL": "1s",
    })
    try:
        issued = gw.new_key(models=["gpt-a"])
        gw.admin("POST", "/key/delete", {"key_ids": [issued["key_id"]]})
        wait_until(lambda: "key.revoked" in [r["event"]["action"] for r in received], timeout=20, what="webhook delivery")
        assert not refused
        tenant = [r for r in received if r["tenant_id"] != "_unattributed"]
        assert [r["seq"] for r in tenant] == list(range(1, len(tenant) + 1)), "in order, once"
        assert all(b["prev_hash"] == a["hash"] for a, b in zip(tenant, tenant[1:])), "a chain the SIEM can check"
        head = tenant[-1]["seq"]
        tenant = tenant[0]["tenant_id"]
        wait_until(lambda: any(c["tenant_id"] == tenant and c["seq"] == head for c in checkpoints), timeout=20,
                   what="the head's checkpoint at the webhook")
        gw.stop("up")
        # An operator with the database cuts the tail: the last two records and the checkpoints
        # over them. On its own, the shorter chain still verifies.
        db = sqlite3.connect(gw.dir / "data" / "audit.db")
        with db:
            db.execute("DROP TRIGGER audit_records_no_delete")
            db.execute("DROP TRIGGER audit_checkpoints_no_delete")
            db.execute("DELETE FROM audit_records WHERE tenant_id = ? AND seq > ?", (tenant, head - 2))
            db.execute("DELETE FROM audit_checkpoints WHERE tenant_id = ? AND seq > ?", (tenant, head - 2))
        db.close()
        code, out = audit(gw, "verify")
        assert code == 0, out
        witness = gw.dir / "webhook-witness.jsonl"
        witness.write_text("".join(json.dumps(line) + "\n" for line in checkpoint_lines(checkpoints)))
        code, out = audit(gw, "verify", "--witness", str(witness))
        assert code == 1 and f"tenant {tenant}: seq {head - 1} deleted" in out, out
        # A witness whose checkpoint was forged is refused, not believed.
        forged = checkpoint_lines(checkpoints)[-1] | {"seq": head + 5}
        witness.write_text(json.dumps(forged) + "\n")
        code, out = audit(gw, "verify", "--witness", str(witness))
        assert code == 1 and "not signed by this key" in out, out
    finally:
        gw.close()
        server.shutdown()


def crash_and_restart(gw):
    """SIGKILL `routero up` (no drain, no final checkpoint), then start it again."""
    gw.processes["up"].proc.kill()
    gw.processes["up"].proc.wait()
    gw.stop("up")
    gw.start("up", gw.up_env)
    wait_until(lambda: ready(gw.admin_url + "/readyz"), what="up again")


def test_a_crash_loses_no_event_a_client_was_answered_for(fake_provider):
    """`routero up` spools each event to disk before the client's answer: SIGKILL right after
    the answers, restart, and every request is in the chain."""
    gw = Gateway(fake_provider, "sqlite-up", extra_env={"ROUTERO_AUDIT_CHECKPOINT_INTERVAL": "1h"})
    try:
        issued = gw.new_key(models=["gpt-a"])
        gw.wait_for_key(issued["key"])
        client = gw.client(issued["key"])
        for _ in range(30):
            client.chat.completions.create(model="gpt-a", messages=[{"role": "user", "content": "hi"}])
        crash_and_restart(gw)

        def routed():
            events = gw.admin("GET", "/audit/events?type=request.routed&limit=100").json()["events"]
            return [e for e in events if e["event"]["actor"]["id"] == issued["key_id"]]
        wait_until(lambda: len(routed()) == 30, timeout=20, what="all 30 request events chained")
        gw.stop("up")
        code, out = audit(gw, "verify")
        assert code == 0 and "signed through" in out, out
        # The tail the crash left unsigned was signed at the restart, not when new events came.
        default = next(line for line in out.splitlines() if line.startswith("tenant tnt_"))
        last, signed = re.search(r"through seq (\d+), signed through seq (\d+)", default).groups()
        assert last == signed, default
    finally:
        gw.close()


def test_a_locked_audit_store_is_retried_and_nothing_is_lost(fake_provider):
    """The writer's database refuses writes for a while (held locked, as by a stuck backup): the
    gateway keeps serving from its spool, the writer retries and reports, and catches up."""
    gw = Gateway(fake_provider, "sqlite-up", extra_env={"ROUTERO_AUDIT_CHECKPOINT_INTERVAL": "1s"})
    try:
        issued = gw.new_key(models=["gpt-a"])
        gw.wait_for_key(issued["key"])
        client = gw.client(issued["key"])
        lock = sqlite3.connect(gw.dir / "data" / "audit.db", timeout=30, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        for _ in range(10):
            client.chat.completions.create(model="gpt-a", messages=[{"role": "user", "content": "hi"}])
        wait_until(lambda: "not committed; retrying" in gw.processes["up"].output(), timeout=30,
                   what="the writer to report the failure")
        lock.execute("ROLLBACK")
        lock.close()

        def routed():
            events = gw.admin("GET", "/audit/events?type=request.routed&limit=100").json()["events"]
            return [e for e in events if e["event"]["actor"]["id"] == issued["key_id"]]
        wait_until(lambda: len(routed()) == 10, timeout=30, what="the 10 events after the lock")
        gw.stop("up")
        code, out = audit(gw, "verify")
        assert code == 0, out
    finally:
        gw.close()


def test_an_admin_change_and_its_event_commit_together(fake_provider):
    """Each admin mutation writes its event in its own transaction (the outbox): SIGKILL right
    after the answers, restart, and every change is in the chain, once."""
    gw = Gateway(fake_provider, "sqlite-up", extra_env={"ROUTERO_AUDIT_CHECKPOINT_INTERVAL": "1h"})
    try:
        created = [gw.new_key(models=["gpt-a"])["key_id"] for _ in range(20)]
        crash_and_restart(gw)

        def chained():
            events = gw.admin("GET", "/audit/events?type=key.created&limit=100").json()["events"]
            return sorted(e["event"]["resource"]["id"] for e in events)
        wait_until(lambda: chained() == sorted(created), timeout=20, what="all 20 key.created events chained")
        gw.stop("up")
        code, out = audit(gw, "verify")
        assert code == 0, out
    finally:
        gw.close()
