"""Security promises under attack or fault, each through a public interface: services that will
not run unaudited, events that cannot bloat the log, and the rest of issue 10's review."""

import sqlite3
import subprocess

import httpx

from conftest import BIN_DIR, Gateway, Process, clean_env, free_port, secret, wait_until


def test_split_services_refuse_to_run_unaudited(tmp_path):
    key = secret()
    common = {"ROUTERO_DATA_PLANE_KEY": key}
    services = {
        "data-plane": {**common, "ROUTERO_CONTROL_PLANE_URL": "http://127.0.0.1:1",
                       "ROUTERO_DATA_PLANE_ADDR": f"127.0.0.1:{free_port()}"},
        "control-plane": {**common, "ROUTERO_DATABASE_URL": f"sqlite://{tmp_path}/cp.db", "ROUTERO_PEPPER": secret(),
                          "ROUTERO_MASTER_KEYS": "1:" + secret(),
                          "ROUTERO_CONTROL_PLANE_ADDR": f"127.0.0.1:{free_port()}",
                          "ROUTERO_GRPC_ADDR": f"127.0.0.1:{free_port()}"},
    }
    for command, env in services.items():
        done = subprocess.run([str(BIN_DIR / "routero"), command], env=clean_env(env), capture_output=True,
                              text=True, timeout=30, cwd=tmp_path)
        assert done.returncode != 0, (command, done.stderr)
        assert "kafka_brokers is required" in done.stderr and "ROUTERO_ALLOW_UNAUDITED" in done.stderr, done.stderr

        # The development switch lets it run, and says so at every start.
        started = Process(command, [str(BIN_DIR / "routero"), command],
                          env={**env, "ROUTERO_ALLOW_UNAUDITED": "true"}, cwd=tmp_path)
        try:
            wait_until(lambda: "UNAUDITED" in started.output(), timeout=20, what=f"{command} warning it is unaudited")
            assert started.proc.poll() is None, started.output()
        finally:
            started.stop()
        bad = subprocess.run([str(BIN_DIR / "routero"), command],
                             env=clean_env({**env, "ROUTERO_ALLOW_UNAUDITED": "yes"}), capture_output=True,
                             text=True, timeout=30, cwd=tmp_path)
        assert bad.returncode != 0 and "allow_unaudited" in bad.stderr, bad.stderr


def test_a_huge_model_name_cannot_bloat_the_audit_log(fake_provider):
    """Reproduced before: three chat requests with a 4 MB `model` grew audit.db by 12 MB."""
    gw = Gateway(fake_provider, "sqlite-up")
    try:
        issued = gw.new_key()
        gw.wait_for_key(issued["key"])
        database = gw.dir / "data" / "audit.db"
        before = database.stat().st_size
        huge = "m" * (4 * 1024 * 1024)
        for _ in range(3):
            r = httpx.post(gw.data_url + "/v1/chat/completions", headers={"Authorization": f"Bearer {issued['key']}"},
                           json={"model": huge, "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
            assert r.status_code in (400, 404), r.text
        wait_until(lambda: len(gw.admin("GET", "/audit/events?type=request.blocked").json()["events"]) >= 3,
                   timeout=10, what="the three refusals recorded")
        events = gw.admin("GET", "/audit/events?type=request.blocked").json()["events"]
        assert all(len(e["event"]["resource"]["id"] or "") <= 600 for e in events), "model names are bounded"
        gw.stop("up")
        db = sqlite3.connect(database)
        largest = db.execute("SELECT MAX(LENGTH(event)) FROM audit_records").fetchone()[0]
        db.close()
        assert largest < 16 * 1024, largest
        assert database.stat().st_size - before < 1024 * 1024, (before, database.stat().st_size)
    finally:
        gw.close()
