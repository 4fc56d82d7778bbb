"""CORS (issue 14): a tenant lists the browser origins its web apps call both APIs from; none by
default. A preflight is answered for a listed origin only, and an answer is readable from an
origin only when the caller's own tenant lists it (another tenant's key or admin key gets no
Access-Control-Allow-Origin), through the real binary."""
import httpx
import pytest

from conftest import Gateway, audit_since, wait_until
from test_scim import create_tenant, unique

APP = "https://app.example.com"
EVIL = "https://evil.example"


@pytest.fixture(scope="module")
def gw(fake_provider):
    gateway = Gateway(fake_provider, "sqlite-up")
    yield gateway
    gateway.close()


def preflight(url, origin):
    return httpx.options(url, headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                       "Access-Control-Request-Headers": "authorization, content-type"}, timeout=10)


def allowed_origin(r):
    return r.headers.get("access-control-allow-origin")


def test_origins_are_listed_per_tenant_and_none_by_default(gw):
    data = gw.data_url + "/v1/chat/completions"
    key = gw.new_key()["key"]
    other_admin = create_tenant(gw, unique("cors-"))
    other_key = gw.admin("POST", "/key/generate", {}, key=other_admin).json()["key"]
    # Nothing is allowed by default, on either plane.
    assert allowed_origin(preflight(data, APP)) is None
    assert allowed_origin(preflight(gw.admin_url + "/teams", APP)) is None
    r = httpx.get(gw.data_url + "/v1/models", headers={"Authorization": f"Bearer {key}", "Origin": APP}, timeout=10)
    assert r.status_code == 200 and allowed_origin(r) is None
    # Only exact origins are taken.
    for bad in ["*", "null", APP + "/", APP + "/app", "https://*.example.com", "ftp://app.example.com"]:
        r = gw.admin("PUT", "/cors", {"origins": [bad]})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_field", (bad, r.text)
    since = audit_since()
    r = gw.admin("PUT", "/cors", {"origins": ["https://App.Example.com", APP]})
    assert r.status_code == 200 and r.json()["origins"] == [APP], r.text
    assert gw.admin("GET", "/cors").json()["origins"] == [APP]
    wait_until(lambda: allowed_origin(preflight(data, APP)) == APP, what="data plane answers the listed origin")
    r = preflight(data, APP)
    assert r.status_code == 204 and "authorization" in r.headers["access-control-allow-headers"]
    assert r.headers.get("access-control-allow-credentials") is None, "cookies never go cross-origin"
    assert allowed_origin(preflight(data, EVIL)) is None
    # The answer is readable from the origin with this tenant's key, not with another's.
    r = httpx.get(gw.data_url + "/v1/models", headers={"Authorization": f"Bearer {key}", "Origin": APP}, timeout=10)
    assert allowed_origin(r) == APP and "Origin" in r.headers["vary"]
    r = httpx.get(gw.data_url + "/v1/models", headers={"Authorization": f"Bearer {other_key}", "Origin": APP},
                  timeout=10)
    assert r.status_code == 200 and allowed_origin(r) is None
    r = httpx.get(gw.data_url + "/v1/models", headers={"Authorization": f"Bearer {key}", "Origin": EVIL}, timeout=10)
    assert allowed_origin(r) is None
    # The admin API alike.
    assert allowed_origin(preflight(gw.admin_url + "/teams", APP)) == APP
    assert allowed_origin(gw.admin("GET", "/teams", headers={"Origin": APP})) == APP
    assert allowed_origin(gw.admin("GET", "/teams", key=other_admin, headers={"Origin": APP})) is None
    wait_until(lambda: any(e["details"].get("origins") == [APP] for e in
                           gw.admin("GET", "/audit/events", params={"type": "cors.updated", "since": since})
                           .json()["events"] for e in [e["event"]]), what="cors.updated audited")
    # Emptied, nothing is allowed again.
    assert gw.admin("PUT", "/cors", {"origins": []}).json()["origins"] == []
    wait_until(lambda: allowed_origin(preflight(data, APP)) is None, what="the origin is no longer answered")


def test_only_admins_list_origins(gw):
    admin = create_tenant(gw, unique("cors-roles-"))
    r = gw.admin("POST", "/admin-keys", {"name": unique("auditor-"), "roles": ["auditor"]}, key=admin)
    assert r.status_code == 201, r.text
    auditor = r.json()["key"]
    r = gw.admin("PUT", "/cors", {"origins": [APP]}, key=auditor)
    assert r.status_code == 403 and r.json()["error"]["code"] == "policy_denied", r.text
