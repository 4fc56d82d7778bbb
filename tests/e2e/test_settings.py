"""Operator settings through the public interface: `trusted_proxies` deciding whose
`X-Forwarded-For` is believed (what the audit trail records as the source, and what a key's
address allowlist is checked against), and `--config` files refused with the field or the file
named, and `audit_overflow = "fail_closed"` with a full audit spool."""

import subprocess
import uuid

import httpx
import pytest

from conftest import BIN_DIR, Gateway, Process, clean_env, free_port, provider_received, secret, wait_until

CLIENT = "203.0.113.7"  # where the client is, as the proxy in front says
SPOOFED = "198.51.100.66"  # what the client itself put in X-Forwarded-For before the proxy


def source_of(gw, action, actor_id):
    """The source addresses of `actor_id`'s `action` events."""
    events = gw.admin("GET", "/audit/events", params={"type": action, "limit": 500}).json()["events"]
    return [e["event"]["actor"]["source_ip"] for e in events if e["event"]["actor"]["id"] == actor_id]


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted proxy", "untrusted peer"])
def test_x_forwarded_for_counts_only_from_a_trusted_proxy(fake_provider, trusted):
    """Behind a trusted proxy (127.0.0.1 here) the right-most forwarded address is the client:
    audited as the source and checked against the key's allowlist. From any other peer the
    header is ignored: the peer's own address is recorded and checked."""
    gw = Gateway(fake_provider, "sqlite-up", extra_env={"ROUTERO_TRUSTED_PROXIES": "127.0.0.1/32"} if trusted else {})
    try:
        forwarded = {"X-Forwarded-For": f"{SPOOFED}, {CLIENT}"}
        open_key = gw.new_key(models=["gpt-a"])
        fenced = gw.new_key(models=["gpt-a"], allowed_cidrs=["203.0.113.0/24"])
        gw.wait_for_key(fenced["key"])

        def chat(issued):
            return httpx.post(gw.data_url + "/v1/chat/completions",
                              headers={"Authorization": f"Bearer {issued['key']}", **forwarded},
                              json={"model": "gpt-a", "messages": [{"role": "user", "content": "hi"}]}, timeout=10)
        r = chat(open_key)
        assert r.status_code == 200, r.text
        r = chat(fenced)
        if trusted:
            assert r.status_code == 200, r.text
        else:
            assert r.status_code == 403 and r.json()["error"]["code"] == "ip_not_allowed", r.text
        expected = CLIENT if trusted else "127.0.0.1"
        wait_until(lambda: source_of(gw, "request.routed", open_key["key_id"]), what="the request audited")
        assert source_of(gw, "request.routed", open_key["key_id"]) == [expected]

        # The admin API reads the same setting.
        r = gw.admin("POST", "/key/generate", {}, headers=forwarded)
        assert r.status_code == 200, r.text
        created = r.json()["key_id"]

        def created_from():
            events = gw.admin("GET", "/audit/events", params={"type": "key.created", "limit": 500}).json()["events"]
            return [e["event"]["actor"]["source_ip"] for e in events if e["event"]["resource"]["id"] == created]
        wait_until(created_from, what="key.created audited")
        assert created_from() == [expected]
    finally:
        gw.close()


def run_with_config(tmp_path, text, *command):
    """Runs `routero --config <file with text> <command>`; returns the completed process."""
    path = tmp_path / "routero.toml"
    path.write_text(text)
    return subprocess.run([str(BIN_DIR / "routero"), "--config", str(path), *command], env=clean_env(),
                          capture_output=True, text=True, timeout=30, cwd=tmp_path)


def test_a_config_file_with_an_unknown_field_is_refused(tmp_path):
    good = run_with_config(tmp_path, 'max_staleness = "30s"\n', "admin", "generate-secret")
    assert good.returncode == 0, good.stderr
    bad = run_with_config(tmp_path, 'max_stalenes = "30s"\n', "admin", "generate-secret")
    assert bad.returncode != 0 and bad.stdout == ""
    assert "unknown field `max_stalenes`" in bad.stderr, bad.stderr


def test_a_config_file_with_a_bad_value_is_refused(tmp_path):
    """The same data plane settings start a data plane with `max_staleness = "30s"`, and are
    refused, naming the field, with "soon" (or a number where a string belongs)."""
    port = free_port()
    settings = (f'control_plane_url = "http://127.0.0.1:{free_port()}"\ndata_plane_key = "{secret()}"\n'
                f'data_plane_addr = "127.0.0.1:{port}"\nallow_unaudited = "true"\n'
                f'snapshot_path = "{tmp_path / "snapshot.bin"}"\n')
    (tmp_path / "good.toml").write_text(settings + 'max_staleness = "30s"\n')
    started = Process("config-good", [str(BIN_DIR / "routero"), "--config", str(tmp_path / "good.toml"), "data-plane"],
                      cwd=tmp_path)
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200,
                   what="the data plane of the good file")
    finally:
        started.stop()

    soon = run_with_config(tmp_path, settings + 'max_staleness = "soon"\n', "data-plane")
    assert soon.returncode != 0, soon.stderr
    assert 'max_staleness: invalid duration "soon"' in soon.stderr, soon.stderr
    number = run_with_config(tmp_path, settings + "max_staleness = 30\n", "data-plane")
    assert number.returncode != 0, number.stderr
    assert "invalid type: integer `30`, expected a string" in number.stderr, number.stderr
    assert "in `max_staleness`" in number.stderr, number.stderr


def test_a_missing_or_unparsable_config_file_is_refused(tmp_path):
    missing = tmp_path / "nowhere" / "routero.toml"
    r = subprocess.run([str(BIN_DIR / "routero"), "--config", str(missing), "admin", "generate-secret"],
                       env=clean_env(), capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and r.stdout == ""
    assert f"reading {missing}" in r.stderr and "No such file or directory" in r.stderr, r.stderr

    broken = run_with_config(tmp_path, "data_dir = \n", "admin", "generate-secret")
    assert broken.returncode != 0 and broken.stdout == ""
    assert f"parsing {tmp_path / 'routero.toml'}" in broken.stderr and "line 1" in broken.stderr, broken.stderr


def test_a_full_audit_spool_fails_requests_closed(fake_provider, tmp_path):
    """Split planes with an unreachable broker and a spool of one byte: once the spool is full,
    `audit_overflow = "fail_closed"` refuses requests with 503 `audit_unavailable` (README: "when
    it is full the bus's overflow policy applies"), and nothing reaches the provider."""
    broker = f"127.0.0.1:{free_port()}"  # nothing listens there
    gw = Gateway(fake_provider, "sqlite", cp_env={"ROUTERO_KAFKA_BROKERS": broker},
                 extra_env={"ROUTERO_KAFKA_BROKERS": broker, "ROUTERO_AUDIT_OVERFLOW": "fail_closed",
                            "ROUTERO_AUDIT_SPOOL_MAX_BYTES": "1", "ROUTERO_AUDIT_SPOOL_DIR": str(tmp_path / "spool")})
    try:
        key = gw.new_key(models=["gpt-a"])["key"]
        gw.wait_for_key(key)

        def ask(text):
            """The status and error code of a chat request, or None when no answer came in 3 s."""
            try:
                r = httpx.post(gw.data_url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                               json={"model": "gpt-a", "messages": [{"role": "user", "content": text}]}, timeout=3)
            except httpx.TimeoutException:
                return None
            return r.status_code, (r.json().get("error") or {}).get("code")
        # The first events fill the spool; then requests are refused.
        wait_until(lambda: ask("filling") == (503, "audit_unavailable"), timeout=15, what="requests refused")
        marker = "unaudited-" + uuid.uuid4().hex[:12]
        assert ask(marker) == (503, "audit_unavailable")
        assert not provider_received(gw.fake_url, marker), "a request that could not be recorded reached the provider"
    finally:
        gw.close()
