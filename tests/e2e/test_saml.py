"""Single sign-on through SAML 2.0 (issue 14), against pysaml2 (a real SAML identity provider
library, signing with Debian's xmlsec1) and the real binary: the SP-initiated flow
(HTTP-Redirect AuthnRequest, HTTP-POST response) opens a session under the roles the tenant's
mapping gives the person's groups. Unsigned responses, responses signed by another key or with
SHA-1, signature-wrapped, expired, for another audience or recipient, replayed, and unsolicited
ones while IdP-initiated sign-in is off are all refused (401 sso_login_failed naming the reason,
recorded as login.failed); a provider without a signing certificate is refused when saved. Two
tenants with one provider: an assertion for one never opens a session in the other."""
import base64
import re
import subprocess
import tempfile
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.config import IdPConfig
from saml2.metadata import create_metadata_string
from saml2.saml import AUTHN_PASSWORD_PROTECTED, NAME_FORMAT_BASIC, NAMEID_FORMAT_EMAILADDRESS, NameID
from saml2.server import Server

from conftest import REPO, audit_since, wait_until
from test_scim import fresh_tenant
from test_sso import gw  # noqa: F401  (the same governed gateway, one per module)

ATTRIBUTE_MAPS = REPO / "tests" / "e2e" / "saml" / "attributemaps"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"
MAPPING = {"rules": [{"group": "gw-admins", "roles": ["admin"]}, {"group": "gw-users", "roles": ["auditor"]}],
           "default_roles": []}
USERS = {
    "alice": {"email": ["alice@example.test"], "displayName": ["Alice"], "groups": ["gw-admins"]},
    "bob": {"email": ["bob@example.test"], "displayName": ["Bob"], "groups": ["gw-users"]},
}


class SamlIdp:
    """A pysaml2 identity provider, in this process: it answers AuthnRequests the way a
    served one would, and can be told to answer them wrongly."""

    def __init__(self, entity_id=None, lifetime_minutes=5):
        self.dir = Path(tempfile.mkdtemp(prefix="routero-saml-idp-"))
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=routero-test-idp", "-keyout", str(self.dir / "idp.key"),
                        "-out", str(self.dir / "idp.crt")], check=True, capture_output=True)
        self.entity_id = entity_id or f"https://idp-{uuid.uuid4().hex[:8]}.example.test/metadata"
        self.lifetime = lifetime_minutes
        self.sp_files = []
        self.server = self.build()

    def build(self, lifetime=None):
        return Server(config=IdPConfig().load({
            "entityid": self.entity_id,
            "service": {"idp": {
                "endpoints": {"single_sign_on_service": [("http://127.0.0.1:9/sso", BINDING_HTTP_REDIRECT)]},
                "name_id_format": [NAMEID_FORMAT_EMAILADDRESS],
                "policy": {"default": {"lifetime": {"minutes": lifetime or self.lifetime}, "name_form": NAME_FORMAT_BASIC,
                                       "attribute_restrictions": None}},
                "want_authn_requests_signed": False,
            }},
            "key_file": str(self.dir / "idp.key"), "cert_file": str(self.dir / "idp.crt"),
            "xmlsec_binary": "/usr/bin/xmlsec1",
            "metadata": {"local": [str(f) for f in self.sp_files]},
            "accepted_time_diff": 60,
            "attribute_map_dir": str(ATTRIBUTE_MAPS),
        }))

    def certificate(self):
        return (self.dir / "idp.crt").read_text()

    def metadata(self):
        return create_metadata_string(None, config=self.server.config, sign=False).decode()

    def trust(self, sp_metadata):
        path = self.dir / f"sp-{len(self.sp_files)}.xml"
        path.write_text(sp_metadata)
        self.sp_files.append(path)
        self.server = self.build()

    def respond(self, sp_entity, acs, user="alice", in_response_to=None, sign_response=True, sign_assertion=True,
                sign_alg=RSA_SHA256, digest_alg=SHA256, server=None):
        """A base64 SAMLResponse to `sp_entity` (its Audience), for `acs` (Destination and
        Recipient), as pysaml2 makes it."""
        response = (server or self.server).create_authn_response(
            identity=USERS[user], in_response_to=in_response_to, destination=acs, sp_entity_id=sp_entity,
            name_id=NameID(format=NAMEID_FORMAT_EMAILADDRESS, text=USERS[user]["email"][0]),
            authn={"class_ref": AUTHN_PASSWORD_PROTECTED, "authn_auth": self.entity_id},
            sign_response=sign_response, sign_assertion=sign_assertion, sign_alg=sign_alg, digest_alg=digest_alg)
        return base64.b64encode(str(response).encode()).decode()


def encode(xml):
    return base64.b64encode(xml.encode()).decode()


def decode(response):
    return base64.b64decode(response).decode()


def tenant_id(gw, key):
    return gw.admin("GET", "/me", key=key).json()["tenant_id"]


class Tenant:
    """A tenant whose SAML provider is `idp`, trusted by it."""

    def __init__(self, gw, idp, jit=True, allow_idp_initiated=False, by_metadata=True, link_by_email=False):
        self.gw = gw
        self.admin, self.scim = fresh_tenant(gw)
        self.id = tenant_id(gw, self.admin)
        body = ({"metadata_xml": idp.metadata()} if by_metadata else
                {"entity_id": idp.entity_id, "sso_url": "http://127.0.0.1:9/sso", "certificate": idp.certificate()})
        r = gw.admin("PUT", "/sso/saml", {**body, "groups_attribute": "groups", "jit": jit,
                                           "allow_idp_initiated": allow_idp_initiated,
                                           "link_by_email": link_by_email}, key=self.admin)
        assert r.status_code == 200, r.text
        self.view = r.json()
        assert gw.admin("PUT", "/role-mappings", MAPPING, key=self.admin).status_code == 200
        r = httpx.get(self.view["metadata_url"], timeout=10)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/samlmetadata+xml"), r.text
        self.entity_id, self.acs = self.view["sp_entity_id"], self.view["acs_url"]
        assert self.entity_id in r.text and "AssertionConsumerService" in r.text
        idp.trust(r.text)

    def begin(self, idp):
        """A browser that began a sign-in, and the AuthnRequest's id and RelayState."""
        browser = httpx.Client(timeout=20)
        r = browser.get(self.gw.admin_url + "/sso/saml/login", params={"tenant": self.id})
        assert r.status_code == 303, r.text
        location = urlparse(r.headers["location"])
        assert location.netloc == "127.0.0.1:9" and location.path == "/sso"
        query = parse_qs(location.query)
        request = idp.server.parse_authn_request(query["SAMLRequest"][0], BINDING_HTTP_REDIRECT).message
        assert request.issuer.text == self.entity_id
        return browser, request.id, query["RelayState"][0]

    def post(self, browser, response, relay):
        data = {"SAMLResponse": response, **({"RelayState": relay} if relay else {})}
        return browser.post(self.acs, data=data)

    def events(self, kind, since):
        found = self.gw.admin("GET", "/audit/events", key=self.admin,
                              params={"type": kind, "since": since, "limit": 500}).json()["events"]
        return [e["event"] for e in found]


def refused(r, reason):
    assert r.status_code == 401, r.text
    error = r.json()["error"]
    assert error["code"] == "sso_login_failed" and error["message"] == f"Single sign-on refused: {reason}.", r.text
    assert "routero_session" not in r.headers.get("set-cookie", "")


def wait_for_reason(tenant, reason, since):
    wait_until(lambda: any(e.get("reason_code") == reason for e in tenant.events("login.failed", since)),
               what=f"login.failed {reason} audited")


@pytest.fixture(scope="module")
def idp():
    return SamlIdp()


@pytest.fixture(scope="module")
def tenant(gw, idp):
    return Tenant(gw, idp)


def signs_in(tenant, idp, user="alice", **kwargs):
    browser, request_id, relay = tenant.begin(idp)
    r = tenant.post(browser, idp.respond(tenant.entity_id, tenant.acs, user, request_id, **kwargs), relay)
    return browser, r


def test_the_signed_flow_opens_a_session_under_the_mapped_role(gw, idp, tenant):
    since = audit_since()
    _, r = signs_in(tenant, idp)
    assert r.status_code == 200, r.text
    assert "routero_session=" in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]
    client = httpx.Client(base_url=gw.admin_url, timeout=10)
    client.cookies.set("routero_session", r.cookies["routero_session"])
    me = client.get("/me").json()
    assert me["tenant_id"] == tenant.id and me["roles"] == ["admin"] and me["kind"] == "session", me
    users = {u["user_name"]: u for u in gw.admin("GET", "/users", key=tenant.admin).json()["users"]}
    assert users["alice@example.test"]["id"] == me["user_id"]
    wait_until(lambda: any(e["details"].get("protocol") == "saml" for e in tenant.events("login.success", since)),
               what="login.success audited")
    wait_until(lambda: any(e["resource"]["id"] == me["user_id"] for e in tenant.events("user.provisioned", since)),
               what="created at first sign-in (JIT), audited")
    # A lesser group maps to a lesser role.
    _, r = signs_in(tenant, idp, "bob")
    assert r.json()["roles"] == ["auditor"], r.text


def xsw(response_b64):
    """The classic wrapping attack on a response whose assertion alone is signed: a forged
    assertion naming someone else goes first, the signed original stays (so its signature still
    verifies), hoping the reader takes the first."""
    xml = decode(response_b64)
    match = re.search(r"<(\w+:)?Assertion\b.*?</(\w+:)?Assertion>", xml, re.S)
    original = match.group(0)
    evil = re.sub(r"<(\w+:)?Signature\b.*?</(\w+:)?Signature>", "", original, flags=re.S)
    evil = evil.replace("alice@example.test", "bob@example.test").replace('ID="', 'ID="evil')
    return encode(xml.replace(original, evil + original))


def without_destination(response_b64):
    return encode(re.sub(r' Destination="[^"]*"', "", decode(response_b64), count=1))


def test_bad_responses_are_refused_and_audited(gw, idp, tenant):
    other_key = SamlIdp(entity_id=idp.entity_id)
    other_key.trust(httpx.get(tenant.view["metadata_url"], timeout=10).text)
    expired = idp.build(lifetime=-10)
    other_acs = tenant.acs.replace("tenant=", "tenant=x")
    cases = {
        "bad_signature": [
            lambda rid: idp.respond(tenant.entity_id, tenant.acs, in_response_to=rid,
                                    sign_response=False, sign_assertion=False),
            lambda rid: other_key.respond(tenant.entity_id, tenant.acs, in_response_to=rid),
            lambda rid: idp.respond(tenant.entity_id, tenant.acs, in_response_to=rid,
                                    sign_alg=RSA_SHA1, digest_alg=SHA1),
            # SHA-256 signatures over SHA-1 digests.
            lambda rid: idp.respond(tenant.entity_id, tenant.acs, in_response_to=rid, digest_alg=SHA1),
        ],
        "wrapped_assertion": [
            lambda rid: xsw(idp.respond(tenant.entity_id, tenant.acs, in_response_to=rid, sign_response=False)),
        ],
        "expired": [
            lambda rid: idp.respond(tenant.entity_id, tenant.acs, in_response_to=rid, server=expired),
        ],
        "wrong_recipient": [
            lambda rid: without_destination(idp.respond(tenant.entity_id, other_acs, in_response_to=rid,
                                                        sign_response=False)),
        ],
        "wrong_destination": [
            lambda rid: idp.respond(tenant.entity_id, other_acs, in_response_to=rid),
        ],
        "wrong_in_response_to": [
            lambda rid: idp.respond(tenant.entity_id, tenant.acs, in_response_to="_not" + rid),
        ],
    }
    for reason, makers in cases.items():
        since = audit_since()
        for make in makers:
            browser, request_id, relay = tenant.begin(idp)
            refused(tenant.post(browser, make(request_id), relay), reason)
        wait_for_reason(tenant, reason, since)


def test_an_assertion_for_another_tenant_is_refused(gw, idp, tenant):
    other = Tenant(gw, idp)
    since = audit_since()
    browser, request_id, relay = tenant.begin(idp)
    # Signed by the tenants' shared provider, for the other tenant's audience, to this ACS.
    r = tenant.post(browser, idp.respond(other.entity_id, tenant.acs, in_response_to=request_id), relay)
    refused(r, "wrong_audience")
    wait_for_reason(tenant, "wrong_audience", since)
    # The other tenant's own response, brought to this tenant's ACS with its RelayState.
    browser, request_id, relay = other.begin(idp)
    r = tenant.post(browser, idp.respond(other.entity_id, other.acs, in_response_to=request_id), relay)
    refused(r, "state_unknown")
    # And each tenant's own flow works.
    assert signs_in(other, idp)[1].json()["tenant_id"] == other.id


def test_references_outside_the_signed_element_are_never_fetched(gw, idp, tenant):
    """xmlsec digests every Reference before it checks the signature: a response pointing one at
    a URL would make the gateway fetch it. It is refused before any signature work."""
    fetched = []

    class Listener(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            fetched.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Listener)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        since = audit_since()
        browser, request_id, relay = tenant.begin(idp)
        xml = decode(idp.respond(tenant.entity_id, tenant.acs, in_response_to=request_id, sign_response=False))
        target = f"http://127.0.0.1:{server.server_address[1]}/ssrf"
        forged = re.sub(r'(<(\w+:)?Reference URI=")[^"]*"', rf'\g<1>{target}"', xml, count=1)
        assert target in forged
        refused(tenant.post(browser, encode(forged), relay), "wrapped_assertion")
        wait_for_reason(tenant, "wrapped_assertion", since)
        assert fetched == []
    finally:
        server.shutdown()


def test_a_response_is_used_once(gw, idp, tenant):
    browser, request_id, relay = tenant.begin(idp)
    response = idp.respond(tenant.entity_id, tenant.acs, in_response_to=request_id)
    assert tenant.post(browser, response, relay).status_code == 200
    refused(tenant.post(browser, response, relay), "state_replayed")
    # Without its RelayState it is unsolicited, which this tenant does not take.
    refused(tenant.post(browser, response, None), "unsolicited_response")
    # In another browser (no binding cookie), with a fresh login's state: refused too.
    _, _, relay = tenant.begin(idp)
    refused(tenant.post(httpx.Client(timeout=10), response, relay), "browser_mismatch")


def test_idp_initiated_sign_in_is_off_unless_allowed_and_never_replayable(gw, idp, tenant):
    since = audit_since()
    unsolicited = idp.respond(tenant.entity_id, tenant.acs)
    refused(tenant.post(httpx.Client(timeout=10), unsolicited, None), "unsolicited_response")
    wait_for_reason(tenant, "unsolicited_response", since)
    allowing = Tenant(gw, idp, allow_idp_initiated=True, by_metadata=False)
    unsolicited = idp.respond(allowing.entity_id, allowing.acs)
    r = allowing.post(httpx.Client(timeout=10), unsolicited, "https://app.example/after-login")
    assert r.status_code == 200, r.text
    since = audit_since()
    refused(allowing.post(httpx.Client(timeout=10), unsolicited, None), "assertion_replayed")
    wait_for_reason(allowing, "assertion_replayed", since)
    # A solicited response (it answers a request) is not taken as an unsolicited one from a
    # browser that never made the request.
    browser, request_id, relay = allowing.begin(idp)
    answering = idp.respond(allowing.entity_id, allowing.acs, in_response_to=request_id)
    refused(allowing.post(httpx.Client(timeout=10), answering, None), "wrong_in_response_to")


def test_a_provider_without_a_signing_certificate_is_refused_when_saved(gw, idp, tenant):
    unsigned = re.sub(r"<(\w+:)?KeyDescriptor\b.*?</(\w+:)?KeyDescriptor>", "", idp.metadata(), flags=re.S)
    assert "X509Certificate" not in unsigned
    for body, why in [({"metadata_xml": unsigned}, "no signing certificate"),
                      ({"entity_id": idp.entity_id, "sso_url": "http://127.0.0.1:9/sso",
                        "certificate": "bm90IGEgY2VydGlmaWNhdGU="}, "not X.509"),
                      ({"entity_id": idp.entity_id, "sso_url": "http://idp.example.com/sso",
                        "certificate": idp.certificate()}, "https is required"),
                      ({"metadata_xml": idp.metadata(), "entity_id": idp.entity_id}, "metadata_xml, or entity_id")]:
        r = gw.admin("PUT", "/sso/saml", body, key=tenant.admin)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_sso_config", (body.keys(), r.text)
        assert why in r.json()["error"]["message"], r.text
    # The tenant's provider is unchanged: its sign-in still works.
    assert signs_in(tenant, idp)[1].status_code == 200


def test_people_link_by_email_only_when_the_tenant_trusts_it(gw, idp):
    untrusting = Tenant(gw, idp, jit=False)
    untrusting.scim.create_user("bob@example.test", active=True)
    refused(signs_in(untrusting, idp, "bob")[1], "user_unknown")


def test_a_deactivated_user_is_refused_and_loses_the_live_session(gw, idp):
    closed = Tenant(gw, idp, jit=False, link_by_email=True)
    refused(signs_in(closed, idp, "bob")[1], "user_unknown")
    user = closed.scim.create_user("bob@example.test", active=True)
    _, r = signs_in(closed, idp, "bob")
    assert r.status_code == 200, r.text
    client = httpx.Client(base_url=gw.admin_url, timeout=10)
    client.cookies.set("routero_session", r.cookies["routero_session"])
    assert client.get("/me").status_code == 200
    since = audit_since()
    assert closed.scim.patch("/Users/" + user["id"], {"op": "replace", "path": "active", "value": False}).status_code == 200
    r = client.get("/me")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_admin_key", r.text
    refused(signs_in(closed, idp, "bob")[1], "user_inactive")
    wait_for_reason(closed, "user_inactive", since)


def test_two_tenants_with_two_providers_never_cross(gw, idp, tenant):
    second_idp = SamlIdp()
    second = Tenant(gw, second_idp)
    idp.trust(httpx.get(second.view["metadata_url"], timeout=10).text)
    # The first provider answers a request of the second tenant's, for its audience and ACS:
    # its signature is not the second tenant's provider's.
    browser, request_id, relay = second.begin(second_idp)
    refused(second.post(browser, idp.respond(second.entity_id, second.acs, in_response_to=request_id), relay),
            "bad_signature")
    assert signs_in(second, second_idp)[1].json()["tenant_id"] == second.id
    assert signs_in(tenant, idp)[1].json()["tenant_id"] == tenant.id
