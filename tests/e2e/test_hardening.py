"""Security promises under attack or fault, each through a public interface: services that will
not run unaudited, events that cannot bloat the log, and the rest of issue 10's review."""

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
from openapi_spec_validator import validate

from conftest import ADMIN_KEY, BIN_DIR, REPO, UPSTREAM_KEY, Gateway, Process, clean_env, free_port, secret, wait_until


def audit_export(gw):
    done = subprocess.run([str(BIN_DIR / "routero"), "audit", "export"], capture_output=True, text=True,
                          env=clean_env({"ROUTERO_DATA_DIR": str(gw.dir / "data")}))
    return done.returncode, done.stdout


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


def held_open(port, request, count):
    """`count` connections that each send `request` (headers, maybe a partial body) and stop."""
    sockets = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(request)
        sockets.append(s)
    return sockets


def closed_within(sockets, seconds):
    """How many of the sockets the server closed within `seconds`, and what it said first."""
    deadline = time.monotonic() + seconds
    closed, answers = 0, []
    for s in sockets:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        said = b""
        try:
            while chunk := s.recv(4096):
                said += chunk
            closed += 1
        except (socket.timeout, TimeoutError):
            pass
        except ConnectionResetError:
            closed += 1
        answers.append(said)
        s.close()
    return closed, answers


def test_slow_and_silent_clients_are_cut_off_on_both_planes(fake_provider):
    """Before: 10,300 uploads that sent headers and never a body were all still open 42 s later."""
    gw = Gateway(fake_provider, "sqlite-up", extra_env={"ROUTERO_HEADER_TIMEOUT": "1s", "ROUTERO_BODY_TIMEOUT": "1s"})
    try:
        issued = gw.new_key(models=["gpt-a"])
        gw.wait_for_key(issued["key"])
        headers_only = lambda path, auth: (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                           f"Authorization: Bearer {auth}\r\nContent-Length: 1000\r\n\r\n{{").encode()
        attacks = {
            "silent": held_open(gw.data_port, b"", 100),
            "half headers": held_open(gw.data_port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n", 100),
            "no body, valid key": held_open(gw.data_port, headers_only("/v1/chat/completions", issued["key"]), 100),
            "admin, no body": held_open(gw.admin_port, headers_only("/key/generate", ADMIN_KEY), 100),
            "admin, silent": held_open(gw.admin_port, b"", 100),
        }
        started = time.monotonic()
        # Meanwhile, the gateway serves.
        client = gw.client(issued["key"])
        assert client.chat.completions.create(model="gpt-a", messages=[{"role": "user", "content": "hi"}]).choices
        for name, sockets in attacks.items():
            closed, answers = closed_within(sockets, 6 - (time.monotonic() - started))
            assert closed == len(sockets), f"{name}: {closed} of {len(sockets)} closed"
            if "no body" in name:
                assert all(b"request_timeout" in answer for answer in answers), (name, answers[:2])
        assert time.monotonic() - started < 6
        # The authenticated slow uploads were refused, and recorded as such.
        wait_until(lambda: len([e for e in gw.admin("GET", "/audit/events?type=request.blocked&limit=200").json()["events"]
                                if e["event"]["reason_code"] == "request_timeout"]) == 100, timeout=10,
                   what="100 request_timeout refusals recorded")
    finally:
        gw.close()


def test_failed_authentication_is_throttled_and_its_events_aggregated(fake_provider):
    gw = Gateway(fake_provider, "sqlite-up", extra_env={"ROUTERO_AUTH_FAILURE_WINDOW": "4s"})
    try:
        issued = gw.new_key(models=["gpt-a"])
        gw.wait_for_key(issued["key"])
        # Start at the beginning of a window, so the whole flood falls in one.
        time.sleep(4 - time.time() % 4 + 0.05)
        bad = {"Authorization": "Bearer sk-rt-" + "x" * 43}
        # One client for the flood: a new one per request costs the client ~50 ms (TLS context),
        # which would spread the flood over two windows.
        with httpx.Client(timeout=10) as flood:
            statuses = [flood.get(gw.data_url + "/v1/models", headers=bad).status_code for _ in range(80)]
        assert statuses[:60] == [401] * 60 and statuses[60:] == [429] * 20, statuses
        throttled = httpx.get(gw.data_url + "/v1/models", headers=bad)
        assert throttled.json()["error"]["code"] == "too_many_auth_failures"
        assert 1 <= int(throttled.headers["retry-after"]) <= 4
        # Data-plane keys are 256 random bits: a valid one from the same address still passes.
        assert httpx.get(gw.data_url + "/v1/models", headers={"Authorization": f"Bearer {issued['key']}"}).status_code == 200

        # The admin API: past the limit a wrong admin key is refused with 429 before it is even
        # compared, while the right one still passes (a guesser cannot lock the operator out).
        time.sleep(4 - time.time() % 4 + 0.05)
        with httpx.Client(timeout=10) as flood:
            for _ in range(61):
                flood.get(gw.admin_url + "/key/list", headers={"Authorization": "Bearer sk-rtadm-guess"})
        r = gw.admin("GET", "/key/list", key="sk-rtadm-guess")
        assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_auth_failures", r.text
        assert gw.admin("GET", "/key/list").status_code == 200

        def unattributed():
            code, out = audit_export(gw)
            return [json.loads(line)["event"] for line in out.splitlines()
                    if '"_unattributed"' in line and '"record"' in line]
        def aggregated(action):
            return [e for e in unattributed() if e["action"] == action and e["details"].get("aggregated")]
        gw.stop("up")
        events = unattributed()
        single = [e for e in events if e["action"] == "request.blocked" and not e["details"].get("aggregated")]
        assert len(single) == 10, "a source's first 10 failures in a window are recorded one by one"
        blocked = aggregated("request.blocked")
        assert [(e["actor"]["source_ip"], e["details"]["count"]) for e in blocked] == [("127.0.0.1", 71)], blocked
        logins = [e for e in events if e["action"] == "login.failed"]
        assert len([e for e in logins if not e["details"].get("aggregated")]) == 10
        counts = [e["details"]["count"] for e in logins if e["details"].get("aggregated")]
        # 62 guesses, the first 10 recorded one by one.
        assert counts == [52], counts
    finally:
        gw.close()



def test_behind_a_trusted_proxy_failures_are_counted_per_forwarded_client(fake_provider):
    """Behind `trusted_proxies` the admin API counts failures per client the proxy names (not
    per proxy, which would let one guesser lock everyone behind it out of their errors), and
    records that address; a forwarded address from an untrusted peer would be ignored."""
    gw = Gateway(fake_provider, "sqlite-up",
                 extra_env={"ROUTERO_AUTH_FAILURE_WINDOW": "4s", "ROUTERO_TRUSTED_PROXIES": "127.0.0.0/8"})
    try:
        time.sleep(4 - time.time() % 4 + 0.05)
        guesser = {"X-Forwarded-For": "198.51.100.1", "Authorization": "Bearer sk-rtadm-guess"}
        # One client, so the flood falls in one 4 s window even on a loaded machine.
        with httpx.Client(timeout=10) as flood:
            statuses = [flood.get(gw.admin_url + "/key/list", headers=guesser).status_code for _ in range(61)]
        assert statuses == [401] * 60 + [429], statuses
        bystander = {"X-Forwarded-For": "198.51.100.2"}
        assert gw.admin("GET", "/key/list", key="sk-rtadm-typo", headers=bystander).status_code == 401
        gw.stop("up")
        _, out = audit_export(gw)
        sources = {json.loads(line)["event"]["actor"]["source_ip"] for line in out.splitlines()
                   if '"login.failed"' in line and '"record"' in line}
        assert sources == {"198.51.100.1", "198.51.100.2"}, sources
    finally:
        gw.close()

def test_files_are_owner_only_whatever_the_umask(tmp_path, fake_provider):
    """Keys, databases, the audit spool, the persisted snapshot and Cerbos' files, created under
    umask 000: every directory 0700 and every file 0600."""
    data = tmp_path / "data"
    ports = {name: free_port() for name in ("ROUTERO_DATA_PLANE_ADDR", "ROUTERO_CONTROL_PLANE_ADDR", "ROUTERO_GRPC_ADDR")}
    env = clean_env({"ROUTERO_DATA_DIR": str(data), "ROUTERO_ADMIN_KEY": ADMIN_KEY,
                     **{name: f"127.0.0.1:{port}" for name, port in ports.items()}})
    if "ROUTERO_CACHE" in os.environ:
        env["ROUTERO_CACHE"] = os.environ["ROUTERO_CACHE"]
    log = open(tmp_path / "up.log", "w")
    up = subprocess.Popen([str(BIN_DIR / "routero"), "up"], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                          preexec_fn=lambda: os.umask(0))
    try:
        data_url = f"http://127.0.0.1:{ports['ROUTERO_DATA_PLANE_ADDR']}"
        wait_until(lambda: httpx.get(data_url + "/readyz").status_code == 200, what="up ready")
        admin = f"http://127.0.0.1:{ports['ROUTERO_CONTROL_PLANE_ADDR']}"
        r = httpx.post(admin + "/key/generate", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, json={})
        assert r.status_code == 200, r.text
        httpx.get(data_url + "/v1/models", headers={"Authorization": "Bearer sk-rt-nope"})
        wait_until(lambda: (data / "snapshot.bin").exists(), what="the persisted snapshot")
    finally:
        up.terminate()
        up.wait(timeout=30)
        log.close()
    seen = {"dirs": 0, "files": 0}
    wrong = []
    for path in [data, *data.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        expected = 0o700 if path.is_dir() else 0o600
        seen["dirs" if path.is_dir() else "files"] += 1
        if mode != expected:
            wrong.append(f"{path.relative_to(tmp_path)}: {mode:o}")
    assert not wrong, wrong
    names = {p.name for p in data.rglob("*")}
    for expected in ("pepper.key", "master-keys", "data-plane.key", "audit-signing.key", "routero.db", "audit.db",
                     "snapshot.bin", "audit-spool", "cerbos.yaml", "cerbos.log"):
        assert expected in names, (expected, sorted(names))


def test_revoking_the_configured_admin_key_survives_a_restart(fake_provider):
    """The configured ROUTERO_ADMIN_KEY revoked through the API: the next start succeeds, the
    key stays revoked (a restart never undoes a revocation), and the start says so."""
    gw = Gateway(fake_provider, "sqlite-up")
    try:
        second = gw.admin("POST", "/admin-keys", {"name": "second", "roles": ["admin"]})
        assert second.status_code == 201, second.text
        second_key = second.json()["key"]
        keys = gw.admin("GET", "/admin-keys", key=second_key).json()
        listed = keys["admin_keys"] if isinstance(keys, dict) else keys
        configured = next(k for k in listed if k["name"] == "configured")
        r = gw.admin("DELETE", f"/admin-keys/{configured['id']}", key=second_key)
        assert r.status_code in (200, 204), r.text
        assert gw.admin("GET", "/key/list").status_code == 401
        gw.stop("up")
        gw.start("up", gw.up_env)
        wait_until(lambda: httpx.get(gw.admin_url + "/readyz").status_code == 200, what="the restart")
        assert gw.admin("GET", "/key/list").status_code == 401, "still revoked"
        assert gw.admin("GET", "/key/list", key=second_key).status_code == 200
        assert "configured admin_key was revoked" in gw.processes["up"].output()
    finally:
        gw.close()


def test_generated_requests_never_break_the_admin_api(fake_provider):
    """The admin API's OpenAPI document, as served, is a valid OpenAPI 3 document
    (openapi-spec-validator, not our code), and schemathesis (not our code) generates requests
    from it, valid and not: none gets a server error or a dropped connection. Before the fix, a
    `duration` ending in a multi-byte character ("5é") panicked the handler."""
    gw = Gateway(fake_provider, "sqlite-up")
    try:
        validate(httpx.get(gw.admin_url + "/openapi.json").json())
        r = gw.admin("POST", "/key/generate", {"duration": "5é"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_duration", r.text
        st = Path(sys.executable).parent / "st"
        done = subprocess.run([str(st), "run", gw.admin_url + "/openapi.json", "-u", gw.admin_url,
                               "-H", f"Authorization: Bearer {ADMIN_KEY}", "--checks", "not_a_server_error",
                               "--max-time", "30", "--seed", "1", "-w", "1", "--no-color"],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        assert "passed" in done.stdout, done.stdout[-2000:]
        assert gw.admin("GET", "/key/list").status_code == 200, "still serving"
    finally:
        gw.close()


def test_a_request_abandoned_by_its_client_is_still_recorded():
    """A client that hangs up while the provider thinks leaves a `request.failed` record with
    `client_closed`: walking away from a request does not take it out of the audit log."""
    slow = subprocess.Popen([str(BIN_DIR / "routero-fake-provider"), "--port", "0", "--api-key", UPSTREAM_KEY,
                             "--latency-ms", "3000"], stdout=subprocess.PIPE, text=True)
    gw = None
    try:
        line = slow.stdout.readline().strip()
        gw = Gateway(line.removeprefix("listening on "), "sqlite-up")
        issued = gw.new_key(models=["gpt-a"])
        gw.wait_for_key(issued["key"])
        try:
            httpx.post(gw.data_url + "/v1/chat/completions", timeout=0.5,
                       headers={"Authorization": f"Bearer {issued['key']}"},
                       json={"model": "gpt-a", "messages": [{"role": "user", "content": "hello"}]})
            raise AssertionError("the provider answered within the client's patience")
        except httpx.TimeoutException:
            pass

        def abandoned():
            events = gw.admin("GET", "/audit/events", params={"type": "request.failed", "limit": 100}).json()["events"]
            return any(e["event"]["reason_code"] == "client_closed" for e in events)
        wait_until(abandoned, what="the abandoned request recorded")
        gw.stop("up")
        code, out = audit_export(gw)
        assert code == 0, out
        events = [json.loads(l)["event"] for l in out.splitlines() if '"record"' in l]
        failed = [e for e in events if e["action"] == "request.failed"]
        assert [(e["reason_code"], e["actor"]["id"], e["resource"]["id"]) for e in failed] == \
            [("client_closed", issued["key_id"], "gpt-a")], failed
    finally:
        if gw:
            gw.close()
        slow.terminate()
        slow.wait(timeout=10)


def test_private_files_are_refused_a_shared_directory(tmp_path):
    """A data directory anyone can write into (like /tmp) could be swapped under the gateway:
    `routero up` refuses it with a clear message instead of keeping keys there."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    env = clean_env({"ROUTERO_DATA_DIR": str(shared), "ROUTERO_ADMIN_KEY": ADMIN_KEY,
                     **{name: f"127.0.0.1:{free_port()}" for name in
                        ("ROUTERO_DATA_PLANE_ADDR", "ROUTERO_CONTROL_PLANE_ADDR", "ROUTERO_GRPC_ADDR")}})
    done = subprocess.run([str(BIN_DIR / "routero"), "up"], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0
    assert "is a shared directory" in done.stderr, done.stderr
    assert not any(shared.iterdir()), "nothing was written into it"
