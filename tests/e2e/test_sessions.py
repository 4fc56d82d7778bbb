"""Sign-in sessions and break-glass local admins (issue 14), through the real binary: a local
admin signs in, the session cookie opens the admin API under the account's roles with its CSRF
token, cookies carry the right flags, sessions end by logout, by an admin, when idle and at
their absolute expiry, and an account locks after repeated failures. Every login is audited."""
import time

import httpx
import pytest

from conftest import REPO, Gateway, audit_since, wait_until
from test_policies import CERBOS

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def gw(fake_provider):
    gateway = Gateway(fake_provider, "sqlite-up", extra_env={
        "ROUTERO_POLICIES_DIR": str(REPO / "policies"), "ROUTERO_CERBOS_BINARY": str(CERBOS),
        "ROUTERO_BREAK_GLASS": "true",
        "ROUTERO_SESSION_IDLE_TIMEOUT": "3s",
        "ROUTERO_SESSION_LIFETIME": "8s",
    })
    yield gateway
    gateway.close()


def local_admin(gw, username, roles=None):
    body = {"username": username, "password": PASSWORD, **({"roles": roles} if roles else {})}
    r = gw.admin("POST", "/local-admins", body)
    assert r.status_code == 201, r.text
    created = r.json()
    assert "password" not in r.text and PASSWORD not in r.text and "argon2" not in r.text
    return created


def login(gw, username, password=PASSWORD, tenant="default", headers=None):
    return httpx.post(gw.admin_url + "/login/local", json={"tenant": tenant, "username": username, "password": password},
                      headers=headers or {}, timeout=30)


def with_session(gw, r):
    """A client carrying the session cookie of login response `r`, and its CSRF token."""
    assert r.status_code == 200, r.text
    client = httpx.Client(base_url=gw.admin_url, timeout=10)
    client.cookies.set("routero_session", r.cookies["routero_session"])
    return client, r.json()["csrf_token"]


def events(gw, kind, since):
    found = gw.admin("GET", "/audit/events", params={"type": kind, "since": since, "limit": 500}).json()["events"]
    return [e["event"] for e in found]


def test_a_local_admin_signs_in_and_acts_with_its_roles(gw):
    since = audit_since()
    account = local_admin(gw, "breakglass")
    assert gw.admin("GET", "/local-admins").json()["local_admins"][0]["username"] == "breakglass"
    r = login(gw, "breakglass")
    client, csrf = with_session(gw, r)
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie, cookie
    assert "Secure" not in cookie, "a loopback host gets a cookie plain HTTP carries"
    me = client.get("/me").json()
    assert me["principal"] == account["id"] and me["kind"] == "session" and me["roles"] == ["admin"], me
    # Reads need no CSRF token; changes do, and from this host only.
    assert client.get("/teams").status_code == 200
    r = client.post("/teams", json={"name": "no-csrf"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed", r.text
    r = client.post("/teams", json={"name": "wrong-csrf"}, headers={"X-CSRF-Token": csrf + "x"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed", r.text
    r = client.post("/teams", json={"name": "other-origin"},
                    headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed", r.text
    r = client.post("/teams", json={"name": "with-csrf"},
                    headers={"X-CSRF-Token": csrf, "Origin": gw.admin_url})
    assert r.status_code == 201, r.text
    names = [t["name"] for t in gw.admin("GET", "/teams").json()["teams"]]
    assert "with-csrf" in names and not {"no-csrf", "wrong-csrf", "other-origin"} & set(names)
    wait_until(lambda: any(e["actor"]["id"] == account["id"] for e in events(gw, "login.success", since)),
               what="login.success audited")
    # Logout ends it; the cookie no longer opens anything.
    r = client.post("/logout", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and "Max-Age=0" in r.headers["set-cookie"], r.text
    r = client.get("/me")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_admin_key", r.text


def test_off_loopback_the_cookie_is_host_prefixed_and_secure(gw):
    local_admin(gw, "remote")
    r = login(gw, "remote", headers={"Host": "gateway.example.com"})
    assert r.status_code == 200, r.text
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("__Host-routero_session=") and "Secure" in cookie and "HttpOnly" in cookie, cookie
    assert "SameSite=Lax" in cookie and "Path=/" in cookie and "Domain" not in cookie, cookie


def test_failures_are_alike_audited_and_lock_the_account(gw):
    since = audit_since()
    account = local_admin(gw, "locksmith")
    for bad in [("locksmith", "wrong password!"), ("nobody", PASSWORD)]:
        r = login(gw, *bad)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_credentials", r.text
    r = login(gw, "locksmith", tenant="no-such-tenant")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_credentials", r.text
    for _ in range(4):
        assert login(gw, "locksmith", "wrong password!").status_code == 401
    # Five failures: locked, even with the right password.
    r = login(gw, "locksmith")
    assert r.status_code == 401, r.text
    wait_until(lambda: any(e["reason_code"] == "locked_out" and e["resource"]["id"] == account["id"]
                           for e in events(gw, "login.failed", since)), what="lockout audited")
    reasons = {e["reason_code"] for e in events(gw, "login.failed", since) if e["resource"]["id"] == account["id"]}
    assert {"wrong_password", "locked_out"} <= reasons, reasons
    # The right password after the fifth failure is refused as locked (not just counted).
    wait_until(lambda: any(e["reason_code"] == "locked_out" and "locked_until" not in e["details"]
                           and e["resource"]["id"] == account["id"] for e in events(gw, "login.failed", since)),
               what="a login refused while locked, audited")
    # Four failures do not lock: the limit is five.
    survivor = local_admin(gw, "survivor")
    for _ in range(4):
        assert login(gw, "survivor", "wrong password!").status_code == 401
    r = login(gw, "survivor")
    assert r.status_code == 200 and r.json()["principal"] == survivor["id"], r.text


def test_an_admin_ends_a_session_at_once(gw):
    local_admin(gw, "revokee")
    client, _ = with_session(gw, login(gw, "revokee"))
    assert client.get("/me").status_code == 200
    live = gw.admin("GET", "/sessions").json()["sessions"]
    mine = next(s for s in live if s["local_admin_id"] == client.get("/me").json()["principal"])
    r = gw.admin("DELETE", f"/sessions/{mine['id']}")
    assert r.status_code == 200, r.text
    assert client.get("/me").status_code == 401


def test_sessions_end_when_idle_and_at_their_lifetime(gw):
    local_admin(gw, "sleeper")
    idle, _ = with_session(gw, login(gw, "sleeper"))
    assert idle.get("/me").status_code == 200  # its last use
    started = time.monotonic()  # before `busy` signs in: its lifetime starts after this
    busy, _ = with_session(gw, login(gw, "sleeper"))
    # `busy` is used every second: alive past the idle timeout, ended at the lifetime.
    while time.monotonic() - started < 4.5:
        assert busy.get("/me").status_code == 200
        time.sleep(1)
    assert idle.get("/me").status_code == 401, "idle past 3 s"
    wait_until(lambda: busy.get("/me").status_code == 401, timeout=6, what="the 8 s lifetime")
    assert time.monotonic() - started >= 7


def test_deleting_a_local_admin_ends_its_sessions_and_only_admins_make_them(gw):
    account = local_admin(gw, "temporary")
    client, csrf = with_session(gw, login(gw, "temporary"))
    # A key its session minted works, then dies with the account.
    r = client.post("/key/generate", json={"models": ["gpt-a"]}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text
    minted = r.json()
    gw.wait_for_key(minted["key"])
    chat = {"model": "gpt-a", "messages": [{"role": "user", "content": "hi"}]}
    answer = lambda: httpx.post(gw.data_url + "/v1/chat/completions", json=chat,
                                headers={"Authorization": f"Bearer {minted['key']}"}, timeout=10)
    assert answer().status_code == 200
    assert gw.admin("DELETE", f"/local-admins/{account['id']}").status_code == 200
    assert client.get("/me").status_code == 401
    wait_until(lambda: answer().status_code == 401, timeout=5, what="the minted key refused")
    info = gw.admin("GET", "/key/info", params={"key_id": minted["key_id"]}).json()["info"]
    assert info["revoked"], info
    assert login(gw, "temporary").status_code == 401
    # A caller whose custom role lets it create admin keys still cannot make break-glass
    # accounts: only `admin` may.
    r = gw.admin("PUT", "/roles/keymaker", {"permissions": ["admin_key:create", "admin_key:list"]})
    assert r.status_code == 200, r.text
    r = gw.admin("POST", "/admin-keys", {"name": "keymaker", "roles": ["keymaker"]})
    assert r.status_code == 201, r.text
    keymaker = r.json()["key"]
    r = gw.admin("POST", "/local-admins", {"username": "escalate", "password": PASSWORD}, key=keymaker)
    assert r.status_code == 403 and r.json()["error"]["code"] == "role_escalation", r.text
    assert "escalate" not in [a["username"] for a in gw.admin("GET", "/local-admins").json()["local_admins"]]
    short = gw.admin("POST", "/local-admins", {"username": "short", "password": "too short"})
    assert short.status_code == 400, short.text


def test_only_this_hosts_cookie_counts_and_only_once(gw):
    local_admin(gw, "cookies")
    r = login(gw, "cookies")
    token = r.cookies["routero_session"]
    ok = httpx.get(gw.admin_url + "/me", headers={"Cookie": f"routero_session={token}"})
    assert ok.status_code == 200, ok.text
    # On a loopback host the __Host- name is not this host's cookie; two cookies of the right
    # name (one tossed in by someone else) make the request carry none.
    for cookie in [f"__Host-routero_session={token}", f"routero_session=tossed; routero_session={token}"]:
        r = httpx.get(gw.admin_url + "/me", headers={"Cookie": cookie})
        assert r.status_code == 401, (cookie, r.text)


def test_a_burst_of_guesses_gets_no_more_than_the_lockout_allows(gw):
    from concurrent.futures import ThreadPoolExecutor
    since = audit_since()
    account = local_admin(gw, "burst")
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda _: login(gw, "burst", "wrong password!").status_code, range(12)))
    assert all(code in (401, 429) for code in answers), answers
    assert login(gw, "burst").status_code in (401, 429), "locked: the right password too"

    def mine():
        return [e for e in events(gw, "login.failed", since) if e["resource"]["id"] == account["id"]]
    wait_until(lambda: len(mine()) >= 13, what="every attempt audited")
    # Only attempts counted before their check had a password checked: five at most.
    checked = [e for e in mine() if e["reason_code"] == "wrong_password" or "locked_until" in e["details"]]
    assert len(checked) <= 5, [e["reason_code"] for e in mine()]


def test_break_glass_is_off_unless_configured(fake_provider):
    plain = Gateway(fake_provider, "sqlite-up")
    try:
        r = plain.admin("POST", "/local-admins", {"username": "breakglass", "password": PASSWORD})
        assert r.status_code == 409 and r.json()["error"]["code"] == "break_glass_disabled", r.text
        assert plain.admin("GET", "/local-admins").json()["local_admins"] == []
        r = login(plain, "breakglass")
        assert r.status_code == 404 and r.json()["error"]["code"] == "route_not_found", r.text
    finally:
        plain.close()
