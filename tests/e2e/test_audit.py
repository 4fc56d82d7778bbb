"""The audit trail of `routero up`: every request and admin action once, chained and signed,
verifiable from the database and from an export; tampering named by `routero audit verify`."""

import json
import sqlite3
import subprocess

import httpx
import openai
import pytest

from conftest import BIN_DIR, Gateway, clean_env, routero


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
