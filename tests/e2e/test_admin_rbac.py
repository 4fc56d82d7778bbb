"""The admin API decided by the Cerbos policies (the real binary, started by `routero up` on
the repository's policies): every endpoint as each built-in role and a custom role, developers
acting on their own keys only, no raising of one's own rights (granting, rotating or updating
keys, managing roles), keys bound only to their creator's user and teams, model tags the
policies read normalised, tenants walled off from each other through every endpoint, and
failing closed while Cerbos is down."""

import subprocess
import uuid

import pytest

from conftest import ADMIN_KEY, REPO, Gateway, audit_since, routero, wait_until
from test_policies import CERBOS

ROLES = ["admin", "developer", "auditor", "finance", "support"]
SUPPORT = ["key:read", "key:list", "team:list", "audit_log:read"]


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def governed(fake_provider):
    gw = Gateway(fake_provider, "sqlite-up", extra_env={
        "ROUTERO_POLICIES_DIR": str(REPO / "policies"), "ROUTERO_CERBOS_BINARY": str(CERBOS)})
    yield gw
    gw.close()


def issue(gw, roles, key=None, user_id=None):
    """An admin key with `roles` (acting for `user_id`), issued by `key` (the bootstrap admin
    key by default)."""
    kwargs = {"key": key} if key else {}
    body = {"name": unique("k"), "roles": roles}
    if user_id:
        body["user_id"] = user_id
    r = gw.admin("POST", "/admin-keys", body, **kwargs)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["key"].startswith("sk-rtadm-") and body["roles"] == sorted(roles)
    return body


@pytest.fixture(scope="module")
def principals(governed):
    gw = governed
    r = gw.admin("PUT", "/roles/support", {"permissions": SUPPORT})
    assert r.status_code == 200 and r.json()["permissions"] == sorted(SUPPORT), r.text
    return {role: issue(gw, [role]) for role in ROLES}


def admin_key_id(gw):
    return gw.new_key()["key_id"]


def endpoints(gw):
    """(name, method, path, body or None, query or None, success status, roles allowed)."""
    return [
        ("create credential", "POST", "/credentials",
         lambda: {"name": unique("c"), "provider": "openai", "api_key": "sk-x", "base_url": gw.fake_url + "/v1"},
         None, 201, {"admin"}),
        ("list credentials", "GET", "/credentials", None, None, 200, {"admin"}),
        ("update credential", "PUT", lambda: "/credentials/" + credential(gw), lambda: {"api_key": "sk-rotated"},
         None, 200, {"admin"}),
        ("delete credential", "DELETE", lambda: "/credentials/" + credential(gw), None, None, 200, {"admin"}),
        ("create model", "POST", "/models",
         lambda: {"name": unique("m"), "deployments": [{"credential": "fake", "model": "up-a"}]},
         None, 201, {"admin"}),
        ("list models", "GET", "/models", None, None, 200, set(ROLES)),
        ("update model", "PUT", lambda: "/models/" + model(gw),
         lambda: {"deployments": [{"credential": "fake", "model": "up-b"}]}, None, 200, {"admin"}),
        ("delete model", "DELETE", lambda: "/models/" + model(gw), None, None, 200, {"admin"}),
        ("generate key", "POST", "/key/generate", lambda: {}, None, 200, {"admin", "developer"}),
        ("list keys", "GET", "/key/list", None, None, 200, {"admin", "developer", "auditor", "support"}),
        ("key info", "GET", "/key/info", None, lambda: {"key_id": admin_key_id(gw)}, 200,
         {"admin", "auditor", "support"}),
        ("update key", "POST", "/key/update", lambda: {"key_id": admin_key_id(gw), "models": ["gpt-a"]},
         None, 200, {"admin"}),
        ("regenerate key", "POST", "/key/regenerate", lambda: {"key_id": admin_key_id(gw)}, None, 200, {"admin"}),
        ("delete key", "POST", "/key/delete", lambda: {"key_ids": [admin_key_id(gw)]}, None, 200, {"admin"}),
        ("create team", "POST", "/teams", lambda: {"name": unique("t")}, None, 201, {"admin"}),
        ("list teams", "GET", "/teams", None, None, 200, {"admin", "support"}),
        ("create user", "POST", "/users", lambda: {"user_name": unique("u")}, None, 201, {"admin"}),
        ("list users", "GET", "/users", None, None, 200, {"admin"}),
        ("set a team's budget", "PUT", lambda: f"/teams/{team(gw)}/budget", lambda: {"max_budget": 10}, None, 200,
         {"admin"}),
        ("set a user's budget", "PUT", lambda: f"/users/{user(gw)}/budget", lambda: {"rpm_limit": 10}, None, 200,
         {"admin"}),
        ("set the tenant's budget", "PUT", "/tenant/budget", lambda: {}, None, 200, {"admin"}),
        ("spend report", "GET", "/spend/report", None, None, 200, {"admin", "auditor", "finance"}),
        ("data planes", "GET", "/data-planes", None, None, 200, {"admin"}),
        ("audit events", "GET", "/audit/events", None, None, 200, {"admin", "auditor", "support"}),
        ("audit retention", "GET", "/audit/retention", None, None, 200, {"admin", "auditor", "support"}),
        ("set audit retention", "PUT", "/audit/retention", lambda: {"days": 400}, None, 200, {"admin"}),
        ("issue admin key", "POST", "/admin-keys", lambda: {"name": unique("k"), "roles": ["finance"]},
         None, 201, {"admin"}),
        ("list admin keys", "GET", "/admin-keys", None, None, 200, {"admin"}),
        ("revoke admin key", "DELETE", lambda: "/admin-keys/" + issue(gw, ["finance"])["id"], None, None, 200,
         {"admin"}),
        ("list roles", "GET", "/roles", None, None, 200, {"admin"}),
        ("put role", "PUT", lambda: "/roles/" + unique("r"), lambda: {"permissions": ["team:list"]}, None, 200,
         {"admin"}),
        ("delete role", "DELETE", lambda: "/roles/" + put_role(gw), None, None, 200, {"admin"}),
    ]


def credential(gw):
    name = unique("c")
    r = gw.admin("POST", "/credentials", {"name": name, "provider": "openai", "api_key": "sk-x",
                                          "base_url": gw.fake_url + "/v1"})
    assert r.status_code == 201, r.text
    return name


def model(gw):
    name = unique("m")
    r = gw.admin("POST", "/models", {"name": name, "deployments": [{"credential": "fake", "model": "up-a"}]})
    assert r.status_code == 201, r.text
    return name


def team(gw):
    r = gw.admin("POST", "/teams", {"name": unique("t")})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def user(gw):
    r = gw.admin("POST", "/users", {"user_name": unique("u")})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def put_role(gw):
    name = unique("r")
    assert gw.admin("PUT", f"/roles/{name}", {"permissions": ["team:list"]}).status_code == 200
    return name


def call(gw, key, method, path, body, query):
    path = path() if callable(path) else path
    return gw.admin(method, path, body() if body else None, key=key, params=query() if query else None)


def test_every_endpoint_as_every_role(governed, principals):
    gw = governed
    since = audit_since()
    wrong = []
    for name, method, path, body, query, success, allowed in endpoints(gw):
        for role in ROLES:
            r = call(gw, principals[role]["key"], method, path, body, query)
            expected = success if role in allowed else 403
            code = r.json().get("error", {}).get("code") if r.status_code >= 400 else None
            if r.status_code != expected or (expected == 403 and code != "policy_denied"):
                wrong.append(f"{name} as {role}: {r.status_code} {r.text[:200]}")
    assert not wrong, "\n".join(wrong)

    def refusals():
        events = gw.admin("GET", "/audit/events",
                          params={"type": "policy.blocked", "since": since, "limit": 500}).json()["events"]
        return [e["event"] for e in events if e["event"]["reason_code"] == "policy_denied"]
    wait_until(lambda: any(e["actor"]["id"] == principals["finance"]["id"] for e in refusals()),
               what="refusals audited as policy.blocked")
    refusal = next(e for e in refusals() if e["actor"]["id"] == principals["finance"]["id"])
    assert refusal["outcome"] == "denied" and refusal["policy_version"].startswith("sha256:")


def test_developers_act_on_their_own_keys_only(governed, principals):
    gw = governed
    dev = principals["developer"]["key"]
    others = admin_key_id(gw)
    r = gw.admin("POST", "/key/generate", {"roles": ["developer"]}, key=dev)
    assert r.status_code == 200, r.text
    own = r.json()["key_id"]

    listed = [k["key_id"] for k in gw.admin("GET", "/key/list", key=dev).json()["keys"]]
    assert own in listed and others not in listed
    assert others in [k["key_id"] for k in gw.admin("GET", "/key/list").json()["keys"]]

    assert gw.admin("GET", "/key/info", key=dev, params={"key_id": own}).status_code == 200
    assert gw.admin("GET", "/key/info", key=dev, params={"key_id": others}).status_code == 403
    assert gw.admin("POST", "/key/update", {"key_id": own, "models": ["gpt-a"]}, key=dev).status_code == 200
    r = gw.admin("POST", "/key/regenerate", {"key_id": own}, key=dev)
    assert r.status_code == 200 and r.json()["key"].startswith("sk-rt-"), r.text
    # Revocation is all or none: one key of someone else's refuses the whole request.
    r = gw.admin("POST", "/key/delete", {"key_ids": [own, others]}, key=dev)
    assert r.status_code == 403, r.text
    assert gw.admin("POST", "/key/delete", {"key_ids": [own]}, key=dev).json()["deleted_keys"] == [own]
    assert gw.admin("GET", "/key/info", params={"key_id": others}).json()["info"]["revoked"] is False


def test_nobody_raises_their_own_rights(governed, principals):
    gw = governed
    dev = principals["developer"]["key"]
    # A developer's key may act as a developer, not as a manager (premium models).
    r = gw.admin("POST", "/key/generate", {"roles": ["manager"]}, key=dev)
    assert r.status_code == 403 and r.json()["error"]["code"] == "role_escalation", r.text
    mine = gw.admin("POST", "/key/generate", {"roles": ["developer"]}, key=dev).json()["key_id"]
    r = gw.admin("POST", "/key/update", {"key_id": mine, "roles": ["developer", "qa"]}, key=dev)
    assert r.status_code == 403 and r.json()["error"]["code"] == "role_escalation", r.text

    # A custom role that may manage roles and admin keys still grants only what it holds.
    r = gw.admin("PUT", "/roles/delegate", {"permissions": ["role:manage", "admin_key:create", "team:list"]})
    assert r.status_code == 200, r.text
    delegate = issue(gw, ["delegate"])["key"]
    r = gw.admin("PUT", "/roles/delegate", {"permissions": ["role:manage", "team:create"]}, key=delegate)
    assert r.status_code == 403 and r.json()["error"]["code"] == "role_escalation", r.text
    r = gw.admin("POST", "/admin-keys", {"name": "sneaky", "roles": ["admin"]}, key=delegate)
    assert r.status_code == 403 and r.json()["error"]["code"] == "role_escalation", r.text
    assert issue(gw, ["delegate"], key=delegate)["roles"] == ["delegate"]

    # Permissions follow the role: granting team:create lets its holders create teams at once.
    assert gw.admin("POST", "/teams", {"name": unique("t")}, key=delegate).status_code == 403
    r = gw.admin("PUT", "/roles/delegate", {"permissions": ["role:manage", "admin_key:create", "team:create"]})
    assert r.status_code == 200
    assert gw.admin("POST", "/teams", {"name": unique("t")}, key=delegate).status_code == 201


def refused(r, status, code):
    """Whether `r` is the refusal `status` `code`."""
    return r.status_code == status and r.json()["error"]["code"] == code


def audited_refusal(gw, since, actor_id, code, resource_id):
    """Waits for the `policy.blocked` event, `since` the test began, of `actor_id` refused with
    `code` on `resource_id`."""
    def matching():
        events = gw.admin("GET", "/audit/events",
                          params={"type": "policy.blocked", "since": since, "limit": 500}).json()["events"]
        return [e["event"] for e in events
                if e["event"]["actor"]["id"] == actor_id and e["event"]["reason_code"] == code
                and e["event"]["resource"]["id"] == resource_id]
    wait_until(matching, what=f"{code} on {resource_id} audited as policy.blocked")
    assert matching()[0]["outcome"] == "denied"


def test_rotating_or_updating_a_key_needs_every_role_it_acts_with(governed):
    gw = governed
    since = audit_since()
    r = gw.admin("PUT", "/roles/rotator", {"permissions": ["key:read", "key:rotate", "key:update"]})
    assert r.status_code == 200, r.text
    rotator = issue(gw, ["rotator", "developer"])
    premium = gw.new_key(roles=["developer", "manager"])
    plain = gw.new_key(roles=["developer"])

    # A key with premium access (manager), which the rotator lacks: no new secret for it, no
    # wider networks, no longer life.
    r = gw.admin("POST", "/key/regenerate", {"key_id": premium["key_id"]}, key=rotator["key"])
    assert refused(r, 403, "role_escalation") and "sk-rt-" not in r.text, r.text
    for change in [{"allowed_cidrs": ["0.0.0.0/0"]}, {"duration": "3650d"}, {"models": ["gpt-a"]}]:
        r = gw.admin("POST", "/key/update", {"key_id": premium["key_id"], **change}, key=rotator["key"])
        assert refused(r, 403, "role_escalation"), (change, r.text)
    info = gw.admin("GET", "/key/info", params={"key_id": premium["key_id"]}).json()["info"]
    assert info["key_hint"] == premium["key_hint"] and info["expires"] is None and info["allowed_cidrs"] == []
    audited_refusal(gw, since, rotator["id"], "role_escalation", premium["key_id"])

    # A key acting only with roles the rotator holds is its to rotate and update.
    r = gw.admin("POST", "/key/regenerate", {"key_id": plain["key_id"]}, key=rotator["key"])
    assert r.status_code == 200 and r.json()["key"].startswith("sk-rt-"), r.text
    r = gw.admin("POST", "/key/update", {"key_id": plain["key_id"], "allowed_cidrs": ["10.0.0.0/8"]},
                 key=rotator["key"])
    assert r.status_code == 200, r.text
    # The admin rotates any key.
    assert gw.admin("POST", "/key/regenerate", {"key_id": premium["key_id"]}).status_code == 200


def test_managing_roles_is_its_own_permission(governed):
    gw = governed
    since = audit_since()
    assert gw.admin("PUT", "/roles/guard-editor", {"permissions": ["policy:read", "policy:update"]}).status_code == 200
    assert gw.admin("PUT", "/roles/auditing", {"permissions": ["audit_log:read", "team:list"]}).status_code == 200
    editor = issue(gw, ["guard-editor"])

    # policy:update is the guardrails, not the roles.
    assert gw.admin("PUT", "/guardrails", {"rules": []}, key=editor["key"]).status_code == 200
    for method, path, body in [("GET", "/roles", None), ("PUT", "/roles/mine", {"permissions": ["policy:update"]}),
                               ("DELETE", "/roles/auditing", None)]:
        r = gw.admin(method, path, body, key=editor["key"])
        assert refused(r, 403, "policy_denied"), (method, path, r.text)

    assert gw.admin("PUT", "/roles/steward", {"permissions": ["role:list", "role:manage", "team:list"]}).status_code == 200
    steward = issue(gw, ["steward"])
    # role:manage is the roles, not the guardrails...
    assert refused(gw.admin("PUT", "/guardrails", {"rules": []}, key=steward["key"]), 403, "policy_denied")
    assert gw.admin("GET", "/roles", key=steward["key"]).status_code == 200
    r = gw.admin("PUT", "/roles/listers", {"permissions": ["team:list"]}, key=steward["key"])
    assert r.status_code == 200, r.text
    assert gw.admin("DELETE", "/roles/listers", key=steward["key"]).status_code == 200
    # ...and only roles whose permissions the steward holds: no overwriting nor deleting a
    # role that grants more (audit_log:read here).
    r = gw.admin("PUT", "/roles/auditing", {"permissions": ["team:list"]}, key=steward["key"])
    assert refused(r, 403, "role_escalation"), r.text
    r = gw.admin("DELETE", "/roles/auditing", key=steward["key"])
    assert refused(r, 403, "role_escalation"), r.text
    roles = {role["name"]: role["permissions"] for role in gw.admin("GET", "/roles").json()["roles"]}
    assert roles["auditing"] == ["audit_log:read", "team:list"] and "listers" not in roles
    audited_refusal(gw, since, steward["id"], "role_escalation", "auditing")


def test_a_deleted_role_leaves_nothing_behind_for_its_name(governed):
    gw = governed
    assert gw.admin("PUT", "/roles/temp", {"permissions": ["audit_log:read"]}).status_code == 200
    holder = issue(gw, ["temp", "finance"])
    virtual = gw.new_key(roles=["developer", "temp"])
    assert gw.admin("GET", "/audit/events", key=holder["key"]).status_code == 200

    assert gw.admin("DELETE", "/roles/temp").status_code == 200
    admin_keys = {k["id"]: k for k in gw.admin("GET", "/admin-keys").json()["admin_keys"]}
    assert admin_keys[holder["id"]]["roles"] == ["finance"]
    info = gw.admin("GET", "/key/info", params={"key_id": virtual["key_id"]}).json()["info"]
    assert info["roles"] == ["developer"]
    # The name created again grants nothing to the keys that held the old role.
    assert gw.admin("PUT", "/roles/temp", {"permissions": ["audit_log:read"]}).status_code == 200
    assert refused(gw.admin("GET", "/audit/events", key=holder["key"]), 403, "policy_denied")


def test_keys_are_bound_only_to_their_creators_user_and_teams(governed, principals):
    gw = governed
    since = audit_since()
    platform, data = (gw.admin("POST", "/teams", {"name": unique(n)}).json()["id"] for n in ("platform", "data"))
    alice = gw.admin("POST", "/users", {"user_name": unique("alice"), "team_ids": [platform]}).json()["id"]
    bob = gw.admin("POST", "/users", {"user_name": unique("bob"), "team_ids": [data]}).json()["id"]

    # A developer key acting for no user binds keys to nobody.
    unbound = principals["developer"]["key"]
    for scope in [{"user_id": alice}, {"team_id": platform}]:
        assert refused(gw.admin("POST", "/key/generate", scope, key=unbound), 403, "scope_not_allowed"), scope
    assert gw.admin("POST", "/key/generate", {}, key=unbound).status_code == 200

    dev_alice = issue(gw, ["developer"], user_id=alice)
    assert dev_alice["user_id"] == alice
    assert [k for k in gw.admin("GET", "/admin-keys").json()["admin_keys"]
            if k["id"] == dev_alice["id"]][0]["user_id"] == alice

    # Alice's developer key binds keys to alice and her team, never to bob or his team.
    for scope in [{"user_id": bob}, {"team_id": data}, {"user_id": alice, "team_id": data}]:
        r = gw.admin("POST", "/key/generate", scope, key=dev_alice["key"])
        assert refused(r, 403, "scope_not_allowed"), (scope, r.text)
    r = gw.admin("POST", "/key/generate", {"user_id": alice, "team_id": platform}, key=dev_alice["key"])
    assert r.status_code == 200 and (r.json()["user_id"], r.json()["team_id"]) == (alice, platform), r.text
    own = r.json()["key_id"]
    for scope in [{"user_id": bob}, {"team_id": data}]:
        r = gw.admin("POST", "/key/update", {"key_id": own, **scope}, key=dev_alice["key"])
        assert refused(r, 403, "scope_not_allowed"), (scope, r.text)
    info = gw.admin("GET", "/key/info", params={"key_id": own}).json()["info"]
    assert (info["user_id"], info["team_id"]) == (alice, platform)
    audited_refusal(gw, since, dev_alice["id"], "scope_not_allowed", own)

    # Issuing admin keys follows the same rule; the admin binds any user of the tenant.
    assert gw.admin("PUT", "/roles/issuer", {"permissions": ["admin_key:create"]}).status_code == 200
    issuer = issue(gw, ["issuer"], user_id=alice)["key"]
    r = gw.admin("POST", "/admin-keys", {"name": unique("k"), "roles": ["issuer"], "user_id": bob}, key=issuer)
    assert refused(r, 403, "scope_not_allowed"), r.text
    assert issue(gw, ["issuer"], key=issuer, user_id=alice)["user_id"] == alice
    r = gw.admin("POST", "/key/generate", {"user_id": bob, "team_id": data})
    assert r.status_code == 200, r.text
    r = gw.admin("POST", "/admin-keys", {"name": unique("k"), "roles": ["developer"], "user_id": "usr_missing"})
    assert refused(r, 404, "user_not_found"), r.text


def test_model_tags_the_policies_read_are_normalised_or_refused(governed):
    gw = governed

    def create(tags):
        return gw.admin("POST", "/models", {"name": unique("m"), "tags": tags,
                                            "deployments": [{"credential": "fake", "model": "up-a"}]})
    for tags, stored in [({"tier": "Premium"}, {"tier": "premium"}),
                         ({"Tier": " PREMIUM ", "ENV": "Staging"}, {"tier": "premium", "env": "staging"}),
                         ({"tier": "standard", "env": "production", "cost-center": "R&D"},
                          {"tier": "standard", "env": "production", "cost-center": "R&D"})]:
        r = create(tags)
        assert r.status_code == 201 and r.json()["tags"] == stored, (tags, r.text)
    for tags, code in [({"tier": "gold"}, "invalid_tags"), ({"env": "stagging"}, "invalid_tags"),
                       ({"tier": "premium", "TIER": "standard"}, "invalid_tags"),
                       ({"tenant": "other"}, "reserved_tag"), ({"Owner": "adm_1"}, "reserved_tag")]:
        assert refused(create(tags), 400, code), tags


def test_bad_role_and_key_requests_are_refused_with_codes(governed):
    gw = governed
    cases = [
        ("PUT", "/roles/admin", {"permissions": ["team:list"]}, 400, "reserved_role"),
        ("PUT", "/roles/x", {"permissions": ["team:fly"]}, 400, "invalid_permissions"),
        ("PUT", "/roles/x", {"permissions": []}, 400, "invalid_permissions"),
        ("PUT", "/roles/x", {"permissions": ["team:list"], "extra": 1}, 400, "unknown_field"),
        ("DELETE", "/roles/never-made", None, 404, "role_not_found"),
        ("POST", "/admin-keys", {"name": "x", "roles": ["wizard"]}, 400, "unknown_role"),
        ("POST", "/admin-keys", {"name": "x", "roles": []}, 400, "invalid_roles"),
        ("DELETE", "/admin-keys/adm_missing", None, 404, "admin_key_not_found"),
    ]
    for method, path, body, status, code in cases:
        r = gw.admin(method, path, body)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), (path, r.text)
    # The last admin key with the admin role cannot be revoked (the tenant would be locked out).
    admins = [k for k in gw.admin("GET", "/admin-keys").json()["admin_keys"] if k["roles"] == ["admin"]]
    for key in admins[1:]:
        assert gw.admin("DELETE", f"/admin-keys/{key['id']}").status_code == 200
    r = gw.admin("DELETE", f"/admin-keys/{admins[0]['id']}")
    assert r.status_code == 409 and r.json()["error"]["code"] == "last_admin_key", r.text


def test_tenants_see_nothing_of_each_other(governed):
    gw = governed
    out = routero("admin", "create-tenant", unique("tenant-b"), env={"ROUTERO_DATA_DIR": str(gw.dir / "data")})
    b = out.strip().rsplit(" ", 1)[-1]
    assert b.startswith("sk-rtadm-"), out

    # Tenant B builds a little of everything.
    assert gw.admin("POST", "/credentials", {"name": "b-cred", "provider": "openai", "api_key": "sk-b",
                                             "base_url": gw.fake_url + "/v1"}, key=b).status_code == 201
    assert gw.admin("POST", "/models", {"name": "b-model", "deployments": [{"credential": "b-cred", "model": "x"}]},
                    key=b).status_code == 201
    b_key = gw.admin("POST", "/key/generate", {}, key=b).json()["key_id"]
    assert gw.admin("POST", "/teams", {"name": "b-team"}, key=b).status_code == 201
    assert gw.admin("POST", "/users", {"user_name": "b-user"}, key=b).status_code == 201
    assert gw.admin("PUT", "/roles/b-role", {"permissions": ["team:list"]}, key=b).status_code == 200
    b_admin = issue(gw, ["auditor"], key=b)["id"]
    a_key = admin_key_id(gw)

    a_marks = [a_key, '"gpt-a"', '"fake"'] + [k["id"] for k in gw.admin("GET", "/admin-keys").json()["admin_keys"]]
    b_marks = ['"b-cred"', '"b-model"', b_key, '"b-team"', '"b-user"', '"b-role"', b_admin]
    for path in ["/credentials", "/models", "/key/list", "/teams", "/users", "/roles", "/admin-keys",
                 "/audit/events"]:
        params = {"limit": 500} if path == "/audit/events" else None
        seen_by_a, seen_by_b = (gw.admin("GET", path, key=key, params=params) for key in (ADMIN_KEY, b))
        assert seen_by_a.status_code == seen_by_b.status_code == 200, (seen_by_a.text, seen_by_b.text)
        assert not [m for m in b_marks if m in seen_by_a.text], f"tenant A sees tenant B through {path}"
        assert not [m for m in a_marks if m in seen_by_b.text], f"tenant B sees tenant A through {path}"

    # Naming the other tenant's objects finds nothing, and changes nothing.
    for method, path, body, query in [
        ("GET", "/key/info", None, {"key_id": b_key}),
        ("POST", "/key/update", {"key_id": b_key, "models": ["x"]}, None),
        ("POST", "/key/regenerate", {"key_id": b_key}, None),
        ("POST", "/key/delete", {"key_ids": [b_key]}, None),
        ("DELETE", f"/admin-keys/{b_admin}", None, None),
        ("DELETE", "/roles/b-role", None, None),
    ]:
        r = gw.admin(method, path, body, params=query)
        assert r.status_code == 404, (path, r.text)
    assert gw.admin("GET", "/key/info", key=b, params={"key_id": b_key}).json()["info"]["revoked"] is False
    assert gw.admin("GET", "/key/info", key=b, params={"key_id": a_key}).status_code == 404
    # A model of tenant A cannot back a route of tenant B.
    r = gw.admin("POST", "/models", {"name": "steal", "deployments": [{"credential": "fake", "model": "x"}]}, key=b)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "unknown_credential"), r.text


def test_admin_requests_fail_closed_while_cerbos_is_down(governed):
    gw = governed
    fresh = issue(gw, ["auditor"])["key"]  # no cached decision for this principal
    config = str(gw.dir / "data" / "cerbos" / "cerbos.yaml")
    subprocess.run(["pkill", "-9", "-f", config], check=True)
    r = gw.admin("GET", "/audit/events", key=fresh)
    assert r.status_code == 503 and r.json()["error"]["code"] == "policy_engine_unavailable", r.text
    wait_until(lambda: gw.admin("GET", "/audit/events", key=fresh).status_code == 200, timeout=20,
               what="admin requests to recover once Cerbos is back")


def test_without_policies_only_admins_administer(fake_provider):
    gw = Gateway(fake_provider, "sqlite-up")  # no policies directory: nothing to ask
    try:
        auditor = issue(gw, ["auditor"])["key"]
        r = gw.admin("GET", "/audit/events", key=auditor)
        assert r.status_code == 403 and r.json()["error"]["code"] == "policy_denied", r.text
        assert gw.admin("GET", "/audit/events").status_code == 200
    finally:
        gw.close()
