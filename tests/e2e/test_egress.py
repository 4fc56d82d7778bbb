"""Provider egress is governed, against the real binary: credential base URLs are checked against
the operator's egress policy when saved (addresses, and every address a name resolves to), again
by the data plane when it connects (a name that now resolves to a refused address is never
connected to), and a provider key is bound to its credential's tenant, id and base URL, so a row
repointed (or a ciphertext copied) with the database's own credentials never sends the key
anywhere."""

import sqlite3
import subprocess
import uuid

import httpx
import pytest

from conftest import (ADMIN_KEY, BIN_DIR, UPSTREAM_KEY, Gateway, Process, fake_requests, free_port,
                      provider_received, ready, secret, wait_until)

PRIVATE = [
    "http://127.0.0.1:9/v1",
    "http://10.0.0.1/v1",
    "http://169.254.169.254/latest",
    "http://[::ffff:127.0.0.1]:9/v1",
    "http://localhost:9/v1",
]
MALFORMED = [
    "http://api.example.com/v1?api-version=1",
    "http://api.example.com/v1#fragment",
    "http://user:secret@api.example.com/v1",
    "ftp://api.example.com/v1",
    "file:///etc/passwd",
]


class ControlPlane:
    """A split control plane on SQLite with `egress_allow` as given (unset when None)."""

    def __init__(self, tmp_path, egress_allow=None):
        self.url = f"http://127.0.0.1:{free_port()}"
        env = {
            "ROUTERO_DATABASE_URL": f"sqlite://{tmp_path}/cp.db", "ROUTERO_ADMIN_KEY": ADMIN_KEY,
            "ROUTERO_PEPPER": secret(), "ROUTERO_MASTER_KEYS": "1:" + secret(), "ROUTERO_DATA_PLANE_KEY": secret(),
            "ROUTERO_CONTROL_PLANE_ADDR": self.url.removeprefix("http://"),
            "ROUTERO_GRPC_ADDR": f"127.0.0.1:{free_port()}", "ROUTERO_ALLOW_UNAUDITED": "true",
        }
        if egress_allow is not None:
            env["ROUTERO_EGRESS_ALLOW"] = egress_allow
        self.process = Process("control-plane", [str(BIN_DIR / "routero"), "control-plane"], env=env, cwd=tmp_path)
        wait_until(lambda: ready(self.url + "/readyz"), what="control plane ready")

    def credential(self, name, base_url):
        return httpx.post(self.url + "/credentials", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10,
                          json={"name": name, "provider": "openai", "api_key": "sk-x", "base_url": base_url})


def refusal(response):
    return response.status_code, response.json()["error"]["code"]


def test_a_split_control_plane_refuses_private_providers_unless_allowed(tmp_path):
    (tmp_path / "closed").mkdir()
    closed = ControlPlane(tmp_path / "closed")
    try:
        for i, url in enumerate(PRIVATE):
            r = closed.credential(f"private-{i}", url)
            assert refusal(r) == (400, "base_url_not_allowed"), (url, r.text)
            assert "egress_allow" in r.json()["error"]["message"], r.text
        for i, url in enumerate(MALFORMED):
            assert refusal(closed.credential(f"bad-{i}", url)) == (400, "invalid_base_url"), url
        r = closed.credential("nowhere", "https://no-such-host.invalid/v1")
        assert refusal(r) == (400, "base_url_unresolvable"), r.text
        assert "private" in closed.process.output() and "refused" in closed.process.output(), \
            "the start says what the egress policy refuses"
    finally:
        closed.process.stop()

    (tmp_path / "open").mkdir()
    opened = ControlPlane(tmp_path / "open", egress_allow="127.0.0.1/32,::1/128,10.0.0.0/8,169.254.169.254/32")
    try:
        for i, url in enumerate(PRIVATE):
            r = opened.credential(f"private-{i}", url)
            assert r.status_code == 201, (url, r.text)
        assert refusal(opened.credential("beside", "http://169.254.169.253/v1")) == (400, "base_url_not_allowed")
        for i, url in enumerate(MALFORMED):
            assert refusal(opened.credential(f"bad-{i}", url)) == (400, "invalid_base_url"), url
        assert "provider egress opened by egress_allow" in opened.process.output()
    finally:
        opened.process.stop()


def test_routero_up_allows_loopback_providers_and_says_so(fake_provider):
    gw = Gateway(fake_provider, "sqlite-up")  # its catalog has a provider on 127.0.0.1
    try:
        assert "allowed by default in routero up" in gw.logs() and "egress_allow" in gw.logs(), gw.logs()
        key = gw.new_key(models=["gpt-a"])["key"]
        gw.wait_for_key(key)
        reply = gw.client(key).chat.completions.create(model="gpt-a", messages=[{"role": "user", "content": "local"}])
        assert reply.choices[0].message.content == "fake reply to: local"
        # Only loopback: private and link-local addresses stay refused, and the refusal is audited.
        for name, url in [("lan", "http://10.0.0.1/v1"), ("metadata", "http://169.254.169.254/latest")]:
            r = gw.admin("POST", "/credentials", {"name": name, "provider": "openai", "api_key": "sk-x", "base_url": url})
            assert refusal(r) == (400, "base_url_not_allowed"), r.text

        def audited():
            events = gw.admin("GET", "/audit/events", params={"type": "policy.blocked", "limit": 500}).json()["events"]
            return sorted(e["event"]["resource"]["id"] for e in events if e["event"]["reason_code"] == "base_url_not_allowed")
        wait_until(lambda: audited() == ["lan", "metadata"], timeout=10, what="egress refusals audited")
    finally:
        gw.close()


def test_a_name_resolving_to_a_refused_address_at_connect_time_is_not_connected_to(fake_provider):
    """The control plane saw an allowed address (its policy opens loopback); the data plane's
    policy opens 127.0.0.2 only, so when it resolves `localhost` to 127.0.0.1 at connect time
    (as a name rebound after it was saved would), it refuses before connecting."""
    gw = Gateway(fake_provider, "sqlite-split", cp_env={"ROUTERO_EGRESS_ALLOW": "127.0.0.0/8,::1/128"},
                 extra_env={"ROUTERO_EGRESS_ALLOW": "127.0.0.2/32"})
    try:
        port = fake_provider.rsplit(":", 1)[1]
        r = gw.admin("POST", "/credentials", {"name": "by-name", "provider": "openai", "api_key": UPSTREAM_KEY,
                                              "base_url": f"http://localhost:{port}/v1"})
        assert r.status_code == 201, r.text
        assert gw.admin("POST", "/models", {"name": "gpt-name", "deployments": [{"credential": "by-name", "model": "x"}]}).status_code == 201
        key = gw.new_key(models=["gpt-name", "gpt-a"])["key"]
        gw.wait_for_key(key)
        marker = "rebound-" + uuid.uuid4().hex[:12]
        for model in ["gpt-name", "gpt-a"]:  # a name resolved at connect time; an address literal
            r = httpx.post(gw.data_url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                           json={"model": model, "messages": [{"role": "user", "content": marker}]}, timeout=10)
            assert refusal(r) == (502, "egress_not_allowed"), (model, r.text)
        assert not provider_received(fake_provider, marker), "the refused address got a request"
        assert "refused by the egress policy" in gw.logs(), gw.logs()
    finally:
        gw.close()


@pytest.fixture(scope="module")
def attacker():
    """A listener an attacker controls, recording what reaches it."""
    proc = subprocess.Popen([str(BIN_DIR / "routero-fake-provider"), "--port", "0"], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line.startswith("listening on "), line
    yield line.removeprefix("listening on ")
    proc.terminate()
    proc.wait(timeout=10)


def sql(gw, statement):
    """Runs SQL with the control plane's own database credentials, as an attacker holding them
    would, and bumps the snapshot version so the change is published at once."""
    statements = [statement, "UPDATE snapshot_version SET version = version + 1"]
    if gw.mode == "sqlite-up":
        db = sqlite3.connect(gw.dir / "data" / "routero.db", timeout=10)
        with db:
            for s in statements:
                db.execute(s)
        db.close()
    else:
        subprocess.run(["psql", gw.cp_env["ROUTERO_DATABASE_URL"], "-q", "-v", "ON_ERROR_STOP=1",
                        *[arg for s in statements for arg in ("-c", s)]], check=True)


def published_and_applied(gw, after):
    """Waits until a snapshot newer than `after` is published and every data plane applied it."""
    def applied():
        state = gw.admin("GET", "/data-planes").json()
        return state["version"] > after and all(p["version"] == state["version"] for p in state["data_planes"])
    wait_until(applied, timeout=10, what="the change applied")


def chat(gw, key, model):
    return httpx.post(gw.data_url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}]}, timeout=10)


@pytest.mark.parametrize("mode", ["sqlite-up", "postgres"])
def test_a_repointed_credential_never_sends_its_key(fake_provider, attacker, mode):
    gw = Gateway(fake_provider, mode)
    try:
        assert gw.admin("POST", "/credentials", {"name": "decoy", "provider": "openai", "api_key": "sk-decoy",
                                                 "base_url": attacker + "/v1"}).status_code == 201
        assert gw.admin("POST", "/models", {"name": "gpt-decoy", "deployments": [{"credential": "decoy", "model": "x"}]}).status_code == 201
        key = gw.new_key(models=["gpt-a", "gpt-decoy"])["key"]
        gw.wait_for_key(key)
        assert chat(gw, key, "gpt-a").status_code == 200

        # The credential's row repointed at the attacker.
        version = gw.admin("GET", "/data-planes").json()["version"]
        sql(gw, f"UPDATE credentials SET base_url = '{attacker}/v1' WHERE name = 'fake'")
        published_and_applied(gw, version)
        assert refusal(chat(gw, key, "gpt-a")) == (502, "upstream_unreachable")
        # The ciphertext copied into the row of a credential already pointing at the attacker.
        version = gw.admin("GET", "/data-planes").json()["version"]
        sql(gw, "UPDATE credentials SET ciphertext = (SELECT ciphertext FROM credentials WHERE name = 'fake') "
                "WHERE name = 'decoy'")
        published_and_applied(gw, version)
        assert refusal(chat(gw, key, "gpt-decoy")) == (502, "upstream_unreachable")
        assert fake_requests(attacker) == [], "the attacker's listener got a request"
        assert "credential left out of the snapshot" in gw.logs(), gw.logs()

        # Pointed back where it was bound, the credential serves again.
        version = gw.admin("GET", "/data-planes").json()["version"]
        sql(gw, f"UPDATE credentials SET base_url = '{fake_provider}/v1' WHERE name = 'fake'")
        published_and_applied(gw, version)
        assert chat(gw, key, "gpt-a").status_code == 200
        assert fake_requests(attacker) == []
    finally:
        gw.close()
