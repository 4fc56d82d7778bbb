"""Single sign-on through OpenID Connect (issue 14), against panva's oidc-provider (a real,
OpenID-certified provider, from npm) and the real binary: the authorization code flow with PKCE
opens a session that acts under the roles the tenant's mapping gives the person's groups; a
person is linked to the tenant's user or created at first login (JIT) or refused; a deactivated
user cannot sign in and loses their live session. A man in the middle of the token endpoint
(the tenant's explicit endpoints route it through one) forges every kind of ID token a relying
party must refuse, and each refusal is answered 401 sso_login_failed with its reason and recorded
as login.failed. Two tenants with two providers never open each other's sessions."""
import base64
import hashlib
import hmac
import json
import os
import shutil
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlparse

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from conftest import REPO, Gateway, Process, audit_since, free_port, wait_until
from test_policies import CERBOS
from test_scim import create_tenant, fresh_tenant, unique, wait_for_key_on

CACHE = Path(os.environ.get("ROUTERO_CACHE", Path.home() / ".cache" / "routero"))
OP_DIR = CACHE / "oidc-provider-9.13.3"
CLIENT_SECRET = "gateway-secret-" + uuid.uuid4().hex
MAPPING = {"rules": [{"group": "gw-admins", "roles": ["admin"]}, {"group": "gw-users", "roles": ["auditor"]}],
           "default_roles": []}


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def rsa_key(kid):
    """A fresh RSA key and its private JWK."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = key.private_numbers()
    as_int = lambda n: b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))  # noqa: E731
    jwk = {"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
           "n": as_int(numbers.public_numbers.n), "e": as_int(numbers.public_numbers.e), "d": as_int(numbers.d),
           "p": as_int(numbers.p), "q": as_int(numbers.q), "dp": as_int(numbers.dmp1), "dq": as_int(numbers.dmq1),
           "qi": as_int(numbers.iqmp)}
    return key, jwk


def signed(header, claims, key):
    head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    return head + "." + b64(key.sign(head.encode(), padding.PKCS1v15(), hashes.SHA256()))


def parts(token):
    header, claims, _ = token.split(".")
    return json.loads(unb64(header)), json.loads(unb64(claims))


class Idp:
    """oidc-provider on loopback, signing with a key this test also holds."""

    def __init__(self, redirects):
        assert (OP_DIR / "node_modules" / "oidc-provider").is_dir(), "run scripts/install-oidc-provider.sh"
        self.key, jwk = rsa_key("op-key")
        self.dir = Path(OP_DIR)
        script = self.dir / "routero-test-provider.mjs"
        shutil.copyfile(REPO / "tests" / "e2e" / "oidc" / "provider.mjs", script)
        self.key_file = self.dir / f"key-{uuid.uuid4().hex}.json"
        self.key_file.write_text(json.dumps(jwk))
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.process = Process("oidc-provider", [shutil.which("node"), str(script)], env={
            "OP_PORT": str(self.port), "RP_REDIRECTS": ",".join(redirects), "OP_KEY_FILE": str(self.key_file),
            "OP_CLIENT_SECRET": CLIENT_SECRET})
        wait_until(lambda: self.ready(), what="oidc-provider ready")

    def ready(self):
        try:
            return httpx.get(self.issuer + "/.well-known/openid-configuration", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self):
        self.process.stop()
        self.key_file.unlink(missing_ok=True)


class TokenTamper:
    """A man in the middle of the token endpoint and the key set: forwards to the provider,
    then hands the relying party whatever ID token `self.forge` makes of the real one, and the
    provider's keys plus `self.extra_keys` (counting the key set's fetches)."""

    def __init__(self, idp):
        self.idp = idp
        self.forge = None
        self.extra_keys = []
        self.jwks_fetches = 0
        tamper = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                tamper.jwks_fetches += 1
                keys = httpx.get(tamper.idp.issuer + "/jwks", timeout=10).json()
                keys["keys"] += tamper.extra_keys
                data = json.dumps(keys).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                r = httpx.post(tamper.idp.issuer + "/token", content=body, timeout=10, headers={
                    "authorization": self.headers["authorization"], "content-type": self.headers["content-type"]})
                answer = r.json()
                if r.status_code == 200 and tamper.forge:
                    answer["id_token"] = tamper.forge(answer["id_token"])
                data = json.dumps(answer).encode()
                self.send_response(r.status_code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = self.base + "/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture(scope="module")
def gw(fake_provider):
    gateway = Gateway(fake_provider, "sqlite-up", extra_env={
        "ROUTERO_POLICIES_DIR": str(REPO / "policies"), "ROUTERO_CERBOS_BINARY": str(CERBOS),
    })
    yield gateway
    gateway.close()


@pytest.fixture(scope="module")
def idp(gw):
    provider = Idp([gw.admin_url + "/sso/oidc/callback"])
    yield provider
    provider.close()


@pytest.fixture(scope="module")
def tamper(idp):
    proxy = TokenTamper(idp)
    yield proxy
    proxy.close()


def configure(gw, key, idp, jit=False, **extra):
    body = {"issuer": idp.issuer, "client_id": "gateway", "client_secret": CLIENT_SECRET,
            "groups_claim": "groups", "scopes": ["email", "profile", "groups"], "jit": jit, **extra}
    r = gw.admin("PUT", "/sso/oidc", body, key=key)
    assert r.status_code == 200, r.text
    assert CLIENT_SECRET not in r.text and r.json()["client_secret_set"] is True
    r = gw.admin("PUT", "/role-mappings", MAPPING, key=key)
    assert r.status_code == 200, r.text


def tenant_id(gw, key):
    return gw.admin("GET", "/me", key=key).json()["tenant_id"]


def to_callback(gw, tenant, user):
    """A browser that began a login at the gateway for `tenant` and signed in at the provider
    as `user`, and the callback URL the provider sent it to (not yet followed)."""
    browser = httpx.Client(timeout=20)
    r = browser.get(gw.admin_url + "/sso/oidc/login", params={"tenant": tenant})
    assert r.status_code == 303, r.text
    assert "routero_oidc=" in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]
    location = r.headers["location"]
    query = parse_qs(urlparse(location).query)
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"][0], location
    assert query["state"][0] and query["nonce"][0] and "groups" in query["scope"][0]
    r = browser.get(location)
    assert r.status_code in (302, 303), r.text
    interaction = urljoin(location, r.headers["location"])
    r = browser.post(interaction, data={"prompt": "login", "login": user, "password": "any"})
    assert r.status_code in (302, 303), r.text
    r = browser.get(urljoin(interaction, r.headers["location"]))
    assert r.status_code in (302, 303), r.text
    callback = r.headers["location"]
    assert callback.startswith(gw.admin_url + "/sso/oidc/callback?"), callback
    return browser, callback


def sign_in(gw, tenant, user):
    browser, callback = to_callback(gw, tenant, user)
    return browser, browser.get(callback)


def refused(r, reason):
    assert r.status_code == 401, r.text
    error = r.json()["error"]
    assert error["code"] == "sso_login_failed" and error["message"] == f"Single sign-on refused: {reason}.", r.text
    assert "routero_session" not in r.headers.get("set-cookie", "")


def events(gw, kind, since, key=None):
    kwargs = {"key": key} if key else {}
    found = gw.admin("GET", "/audit/events", params={"type": kind, "since": since, "limit": 500}, **kwargs)
    return [e["event"] for e in found.json()["events"]]


def wait_for_reason(gw, reason, since, key=None):
    wait_until(lambda: any(e.get("reason_code") == reason for e in events(gw, "login.failed", since, key)),
               what=f"login.failed {reason} audited")


def session_of(r):
    """(client with the session cookie, CSRF token) of a successful callback."""
    assert r.status_code == 200, r.text
    cookie = r.headers["set-cookie"]
    assert "routero_session=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie, cookie
    client = httpx.Client(base_url=str(r.url).split("/sso/")[0], timeout=10)
    client.cookies.set("routero_session", r.cookies["routero_session"])
    return client, r.json()["csrf_token"]


@pytest.fixture(scope="module")
def tenant(gw, idp):
    """A tenant with the provider configured (JIT off), its admin key, SCIM client and id."""
    admin, scim = fresh_tenant(gw)
    configure(gw, admin, idp)
    people = {name: scim.create_user(f"{name}@example.test", externalId=name, active=True) for name in ("alice", "bob")}
    return admin, scim, tenant_id(gw, admin), people


def test_code_and_pkce_open_a_session_under_the_mapped_role(gw, idp, tenant):
    admin, scim, tid, people = tenant
    since = audit_since()
    alice = people["alice"]
    browser, callback = to_callback(gw, tid, "alice")
    answered = browser.get(callback)
    assert answered.headers["cache-control"] == "no-store"
    client, csrf = session_of(answered)
    me = client.get("/me").json()
    assert me["tenant_id"] == tid and me["user_id"] == alice["id"] and me["roles"] == ["admin"], me
    assert me["kind"] == "session"
    # The session acts through the admin API with its roles; a change needs the CSRF token.
    assert client.get("/sso/oidc").json()["issuer"] == idp.issuer
    r = client.post("/key/generate", json={"models": ["gpt-a"]})
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed", r.text
    r = client.post("/key/generate", json={"models": ["gpt-a"]}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text
    assert r.json()["user_id"] == alice["id"], "a person's key carries their identity"
    # The key acts with the roles the provider's groups map to (the data plane serves it).
    wait_for_key_on(gw.data_url, r.json()["key"])
    wait_until(lambda: any(e["actor"]["id"] == alice["id"] and e["details"].get("issuer") == idp.issuer
                           for e in events(gw, "login.success", since, admin)), what="login.success audited")
    # The login is spent: the same callback again is a replay.
    refused(browser.get(str(callback)), "state_replayed")


def test_a_person_whose_groups_map_to_a_lesser_role_gets_it_and_no_more(gw, tenant):
    admin, scim, tid, _ = tenant
    client, csrf = session_of(sign_in(gw, tid, "bob")[1])
    assert client.get("/me").json()["roles"] == ["auditor"]
    r = client.post("/teams", json={"name": "by-an-auditor"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 403 and r.json()["error"]["code"] == "policy_denied", r.text
    assert client.get("/audit/events").status_code == 200


def test_a_person_is_linked_by_verified_email_once_and_never_by_a_name_they_choose(gw, tenant):
    admin, scim, tid, people = tenant
    since = audit_since()
    carol = scim.create_user("carol@example.test", active=True)
    client, _ = session_of(sign_in(gw, tid, "carol")[1])
    assert client.get("/me").json()["user_id"] == carol["id"]
    # frank's provider says his address is not verified, grace's says nothing: neither links,
    # and neither does the user name frank's provider reports.
    scim.create_user("frank@example.test", active=True)
    scim.create_user("frank", active=True)
    scim.create_user("grace@example.test", active=True)
    refused(sign_in(gw, tid, "frank")[1], "user_unknown")
    refused(sign_in(gw, tid, "grace")[1], "user_unknown")
    # alice signed in before: another account with her (verified) address does not become her.
    session_of(sign_in(gw, tid, "alice")[1])
    refused(sign_in(gw, tid, "mallory")[1], "user_unknown")
    wait_for_reason(gw, "user_unknown", since, admin)
    assert session_of(sign_in(gw, tid, "alice")[1])[0].get("/me").json()["user_id"] == people["alice"]["id"]


def test_unknown_people_are_refused_without_jit(gw, tenant):
    admin, _, tid, _ = tenant
    since = audit_since()
    refused(sign_in(gw, tid, "dave")[1], "user_unknown")
    wait_for_reason(gw, "user_unknown", since, admin)
    assert not [u for u in gw.admin("GET", "/users", key=admin).json()["users"] if u["user_name"] == "dave"]


def test_jit_creates_people_at_first_login_and_only_groups_that_map_give_access(gw, idp):
    admin, _ = fresh_tenant(gw)
    configure(gw, admin, idp, jit=True)
    tid = tenant_id(gw, admin)
    since = audit_since()
    client, _ = session_of(sign_in(gw, tid, "dave")[1])
    me = client.get("/me").json()
    assert me["roles"] == ["auditor"], me
    users = {u["user_name"]: u for u in gw.admin("GET", "/users", key=admin).json()["users"]}
    # Named by the provider's verified address, its subject kept as the external id.
    assert users["dave@example.test"]["external_id"] == "dave" and users["dave@example.test"]["id"] == me["user_id"]
    wait_until(lambda: any(e["resource"]["id"] == me["user_id"] for e in events(gw, "user.provisioned", since, admin)),
               what="user.provisioned audited")
    # A second login is the same user.
    assert session_of(sign_in(gw, tid, "dave")[1])[0].get("/me").json()["user_id"] == me["user_id"]
    # Groups no rule maps, and no default role: no access.
    refused(sign_in(gw, tid, "erin")[1], "no_roles")
    wait_for_reason(gw, "no_roles", since, admin)
    # With a default role, the same person gets it; someone in two mapped groups holds the
    # roles of both (the highest is never lost to a lesser one).
    r = gw.admin("PUT", "/role-mappings", {**MAPPING, "default_roles": ["auditor"]}, key=admin)
    assert r.status_code == 200, r.text
    assert session_of(sign_in(gw, tid, "erin")[1])[0].get("/me").json()["roles"] == ["auditor"]
    assert session_of(sign_in(gw, tid, "judy")[1])[0].get("/me").json()["roles"] == ["admin", "auditor"]


def test_a_deactivated_user_cannot_sign_in_and_loses_the_live_session(gw, tenant):
    admin, scim, tid, _ = tenant
    since = audit_since()
    user = scim.create_user("ivan@example.test", externalId="ivan", active=True)
    client, _ = session_of(sign_in(gw, tid, "ivan")[1])
    assert client.get("/me").status_code == 200
    assert scim.patch("/Users/" + user["id"], {"op": "replace", "path": "active", "value": False}).status_code == 200
    r = client.get("/me")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_admin_key", r.text
    refused(sign_in(gw, tid, "ivan")[1], "user_inactive")
    wait_for_reason(gw, "user_inactive", since, admin)


def test_state_is_bound_to_the_browser_and_used_once(gw, tenant):
    admin, scim, tid, _ = tenant
    since = audit_since()
    browser, callback = to_callback(gw, tid, "alice")
    # Another browser (no binding cookie) presenting the callback: refused, and the state spent.
    refused(httpx.get(callback, timeout=20), "browser_mismatch")
    refused(browser.get(callback), "state_replayed")
    wait_for_reason(gw, "browser_mismatch", since, admin)
    wait_for_reason(gw, "state_replayed", since, admin)
    # A state the gateway never issued.
    forged = callback.split("state=")[0] + "state=" + b64(os.urandom(16))
    refused(browser.get(forged), "state_unknown")


FORGERIES = {
    "wrong_audience": lambda idp, h, c: signed(h, {**c, "aud": "another-client"}, idp.key),
    # Expired two minutes ago: past the minute of clock skew allowed.
    "expired": lambda idp, h, c: signed(h, {**c, "iat": int(time.time()) - 600, "exp": int(time.time()) - 120}, idp.key),
    "nonce_mismatch": lambda idp, h, c: signed(h, {**c, "nonce": "not-the-nonce"}, idp.key),
    "wrong_issuer": lambda idp, h, c: signed(h, {**c, "iss": "http://127.0.0.1:1"}, idp.key),
    "not_yet_valid": lambda idp, h, c: signed(h, {**c, "nbf": int(time.time()) + 3600}, idp.key),
    "wrong_authorized_party": lambda idp, h, c: signed(h, {**c, "azp": "another-client"}, idp.key),
    # Signed with another key under the provider's key id.
    "bad_signature": lambda idp, h, c: signed(h, c, rsa_key("op-key")[0]),
    # Signed by a key the provider never published.
    "unknown_kid": lambda idp, h, c: signed({**h, "kid": "rotated-away"}, c, rsa_key("rotated-away")[0]),
    "unsigned_token": lambda idp, h, c: b64(json.dumps({"alg": "none", "typ": "JWT"}).encode()) + "."
    + b64(json.dumps(c).encode()) + ".",
}


def hmac_with_public_key(idp, header, claims):
    """HS256 keyed with the provider's public key: the classic confusion attack."""
    public = idp.key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    head = b64(json.dumps({**header, "alg": "HS256"}).encode()) + "." + b64(json.dumps(claims).encode())
    return head + "." + b64(hmac.new(public, head.encode(), hashlib.sha256).digest())


FORGERIES["disallowed_algorithm"] = hmac_with_public_key


@pytest.fixture(scope="module")
def forged_tenant(gw, idp, tamper):
    """A tenant whose provider is configured with explicit endpoints (no discovery), the
    token endpoint's behind the man in the middle."""
    admin, scim = fresh_tenant(gw)
    configure(gw, admin, idp, jit=True, authorization_endpoint=idp.issuer + "/auth",
              token_endpoint=tamper.url, jwks_uri=tamper.base + "/jwks", userinfo_endpoint=idp.issuer + "/me")
    return admin, tenant_id(gw, admin)


@pytest.mark.parametrize("reason", sorted(FORGERIES))
def test_forged_id_tokens_are_refused_and_audited(gw, idp, tamper, forged_tenant, reason):
    admin, tid = forged_tenant
    since = audit_since()
    forge = FORGERIES[reason]
    tamper.forge = lambda token: forge(idp, *parts(token))
    try:
        refused(sign_in(gw, tid, "alice")[1], reason)
    finally:
        tamper.forge = None
    wait_for_reason(gw, reason, since, admin)
    # The same tenant signs in when nothing is forged (through the same explicit endpoints).
    assert session_of(sign_in(gw, tid, "alice")[1])[0].get("/me").json()["roles"] == ["admin"]


def test_clock_skew_of_a_minute_is_allowed(gw, idp, tamper, forged_tenant):
    _, tid = forged_tenant
    tamper.forge = lambda token: signed(parts(token)[0], {**parts(token)[1], "exp": int(time.time()) - 20}, idp.key)
    try:
        session_of(sign_in(gw, tid, "alice")[1])
    finally:
        tamper.forge = None


def test_groups_missing_from_the_id_token_are_read_from_userinfo(gw, idp, tamper, forged_tenant):
    _, tid = forged_tenant
    without_groups = lambda token: signed(parts(token)[0], {k: v for k, v in parts(token)[1].items() if k != "groups"},  # noqa: E731
                                          idp.key)
    tamper.forge = without_groups
    try:
        client, _ = session_of(sign_in(gw, tid, "alice")[1])
    finally:
        tamper.forge = None
    assert client.get("/me").json()["roles"] == ["admin"], "gw-admins came from userinfo"


def test_a_rotated_key_is_fetched_and_unknown_keys_do_not_storm_the_provider(gw, idp, tamper, forged_tenant):
    admin, tid = forged_tenant
    new_key, new_jwk = rsa_key("rotated-in")
    public = {k: new_jwk[k] for k in ("kty", "kid", "alg", "use", "n", "e")}
    # The provider starts signing with a key it has just published: the gateway fetches the
    # key set again (it last did at least five seconds ago) and accepts the token.
    session_of(sign_in(gw, tid, "alice")[1])
    time.sleep(6)
    tamper.extra_keys = [public]
    tamper.forge = lambda token: signed({**parts(token)[0], "kid": "rotated-in"}, parts(token)[1], new_key)
    try:
        session_of(sign_in(gw, tid, "alice")[1])
        # Tokens naming keys nobody published, one after another: at most one more fetch.
        stranger = rsa_key("nobody")[0]
        tamper.forge = lambda token: signed({**parts(token)[0], "kid": "nobody"}, parts(token)[1], stranger)
        before = tamper.jwks_fetches
        for _ in range(3):
            refused(sign_in(gw, tid, "alice")[1], "unknown_kid")
        assert tamper.jwks_fetches - before <= 1, tamper.jwks_fetches - before
    finally:
        tamper.forge = None
        tamper.extra_keys = []


def test_settings_replaced_are_never_served_from_the_old_ones(gw, idp, tamper):
    """DELETE then PUT starts the version over: the provider found for the old settings (here
    behind the man in the middle, who breaks every token) is not used for the new ones."""
    admin, scim = fresh_tenant(gw)
    tid = tenant_id(gw, admin)
    configure(gw, admin, idp, jit=True, authorization_endpoint=idp.issuer + "/auth",
              token_endpoint=tamper.url, jwks_uri=idp.issuer + "/jwks")
    session_of(sign_in(gw, tid, "alice")[1])
    assert gw.admin("DELETE", "/sso/oidc", key=admin).json()["removed"] is True
    configure(gw, admin, idp, jit=True)
    assert gw.admin("GET", "/sso/oidc", key=admin).json()["version"] == 1
    tamper.forge = lambda token: signed(parts(token)[0], {**parts(token)[1], "aud": "x"}, idp.key)
    try:
        session_of(sign_in(gw, tid, "alice")[1])
    finally:
        tamper.forge = None


def test_the_client_secret_is_sealed_and_only_admins_configure(gw, idp, tenant):
    admin, _, tid, _ = tenant
    view = gw.admin("GET", "/sso/oidc", key=admin).json()
    assert view["redirect_uri"] == gw.admin_url + "/sso/oidc/callback" and CLIENT_SECRET not in json.dumps(view)
    assert view["login_url"].endswith(f"/sso/oidc/login?tenant={tid}")
    # A secret that is wrong at the provider: the code exchange fails, and is recorded.
    other, _ = fresh_tenant(gw)
    configure(gw, other, idp)
    r = gw.admin("PUT", "/sso/oidc", {"issuer": idp.issuer, "client_id": "gateway", "client_secret": "wrong",
                                      "groups_claim": "groups", "scopes": ["groups"]}, key=other)
    assert r.status_code == 200, r.text
    refused(sign_in(gw, tenant_id(gw, other), "alice")[1], "code_exchange_failed")
    # Settings that cannot work are refused when saved.
    for bad, code in [({"issuer": "ftp://idp.example"}, "invalid_sso_config"),
                      ({"issuer": idp.issuer + "?x=1"}, "invalid_sso_config"),
                      ({"authorization_endpoint": "https://phish.example/auth", "token_endpoint": idp.issuer + "/token",
                        "jwks_uri": idp.issuer + "/jwks"}, "invalid_sso_config"),
                      ({"issuer": "http://idp.example.com"}, "invalid_sso_config"),
                      ({"token_endpoint": idp.issuer + "/token"}, "invalid_sso_config"),
                      ({"issuer": "http://127.0.0.1:1"}, "idp_unavailable"),
                      ({"surprise": 1}, "unknown_field")]:
        body = {"issuer": idp.issuer, "client_id": "gateway", "client_secret": "s", **bad}
        r = gw.admin("PUT", "/sso/oidc", body, key=other)
        assert r.json()["error"]["code"] == code, (bad, r.text)
    # An auditor neither reads nor changes the settings.
    r = gw.admin("POST", "/admin-keys", {"name": unique("auditor-"), "roles": ["auditor"]}, key=admin)
    assert r.status_code == 201, r.text
    auditor = r.json()["key"]
    assert gw.admin("GET", "/sso/oidc", key=auditor).status_code == 403
    r = gw.admin("PUT", "/sso/oidc", {"issuer": idp.issuer, "client_id": "x", "client_secret": "y"}, key=auditor)
    assert r.status_code == 403, r.text


def test_two_tenants_with_two_providers_never_cross(gw, idp):
    second = Idp([gw.admin_url + "/sso/oidc/callback"])
    try:
        admin_a, scim_a = fresh_tenant(gw)
        admin_b, scim_b = fresh_tenant(gw)
        configure(gw, admin_a, idp)
        configure(gw, admin_b, second)
        tid_a, tid_b = tenant_id(gw, admin_a), tenant_id(gw, admin_b)
        for scim in (scim_a, scim_b):
            scim.create_user("alice@example.test", externalId="alice", active=True)
        # A's provider's code, brought to a login B began: B exchanges it at its own provider.
        _, callback_a = to_callback(gw, tid_a, "alice")
        browser_b, callback_b = to_callback(gw, tid_b, "alice")
        code_a = parse_qs(urlparse(callback_a).query)["code"][0]
        state_b = parse_qs(urlparse(callback_b).query)["state"][0]
        r = browser_b.get(gw.admin_url + "/sso/oidc/callback", params={"code": code_a, "state": state_b})
        refused(r, "code_exchange_failed")
        # A browser signed in to A is not moved into B by a sign-in a page started there.
        browser, r = sign_in(gw, tid_a, "alice")
        session_of(r)
        r = browser.get(gw.admin_url + "/sso/oidc/login", params={"tenant": tid_b})
        assert r.status_code == 303
        r = browser.get(r.headers["location"])
        interaction = urljoin(second.issuer, r.headers["location"])
        r = browser.post(interaction, data={"prompt": "login", "login": "alice", "password": "any"})
        r = browser.get(urljoin(interaction, r.headers["location"]))
        refused(browser.get(r.headers["location"]), "signed_in_elsewhere")
        # Each tenant's own flow opens a session in that tenant only.
        client_a, _ = session_of(sign_in(gw, tid_a, "alice")[1])
        client_b, _ = session_of(sign_in(gw, tid_b, "alice")[1])
        assert client_a.get("/me").json()["tenant_id"] == tid_a
        assert client_b.get("/me").json()["tenant_id"] == tid_b
        users_a = {u["id"] for u in client_a.get("/users").json()["users"]}
        users_b = {u["id"] for u in client_b.get("/users").json()["users"]}
        assert users_a and users_b and not users_a & users_b
    finally:
        second.close()


def test_login_of_a_tenant_without_a_provider_is_refused(gw):
    admin = create_tenant(gw, unique("bare-"))
    r = httpx.get(gw.admin_url + "/sso/oidc/login", params={"tenant": tenant_id(gw, admin)}, timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "sso_not_configured", r.text
    r = httpx.get(gw.admin_url + "/sso/oidc/login", params={"tenant": "no-such-tenant"}, timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "sso_not_configured", r.text
