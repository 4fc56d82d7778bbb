"""The provider catalogue can be changed and cleaned up: model routes replaced and deleted,
credentials rotated and deleted (a leaked provider key removed), each audited and reaching the
data plane in the next snapshot, on `routero up` and on split planes."""

import httpx
import openai
import pytest

from conftest import UPSTREAM_KEY, audit_since, error_code, fake_requests, wait_until


def chat(gateway, key, model, text):
    return gateway.client(key).chat.completions.create(model=model, messages=[{"role": "user", "content": text}])


def audited(gateway, action, since):
    """The resources of the `action` events since `since` (the test's start)."""
    return [e["event"]["resource"]["id"] for e in gateway.admin(
        "GET", "/audit/events", params={"type": action, "since": since, "limit": 500}).json().get("events", [])]


def test_a_model_route_is_replaced_and_deleted(gateway):
    since = audit_since()
    r = gateway.admin("POST", "/models", {"name": "gpt-moving", "deployments": [{"credential": "fake", "model": "up-one"}]})
    assert r.status_code == 201, r.text
    key = gateway.new_key(models=["gpt-moving"])["key"]
    gateway.wait_for_key(key)
    chat(gateway, key, "gpt-moving", "first route")
    assert fake_requests(gateway.fake_url)[-1]["body"]["model"] == "up-one"

    r = gateway.admin("PUT", "/models/gpt-moving", {"deployments": [{"credential": "fake", "model": "up-two"}],
                                                    "tags": {"tier": "standard"}})
    assert r.status_code == 200 and r.json()["deployments"][0]["model"] == "up-two", r.text
    def routed_to_two():
        chat(gateway, key, "gpt-moving", "second route")
        return fake_requests(gateway.fake_url)[-1]["body"]["model"] == "up-two"
    wait_until(routed_to_two, timeout=5, what="the replaced route at the data plane")

    for body, code in [({"deployments": []}, "invalid_deployments"),
                       ({"deployments": [{"credential": "nope", "model": "x"}]}, "unknown_credential"),
                       ({"deployments": [{"credential": "fake", "model": "x"}], "extra": 1}, "unknown_field")]:
        r = gateway.admin("PUT", "/models/gpt-moving", body)
        assert r.status_code == 400 and r.json()["error"]["code"] == code, (body, r.text)
    r = gateway.admin("PUT", "/models/no-such-model", {"deployments": [{"credential": "fake", "model": "x"}]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found", r.text

    r = gateway.admin("DELETE", "/models/gpt-moving")
    assert r.status_code == 200, r.text
    def gone():
        try:
            chat(gateway, key, "gpt-moving", "after delete")
        except openai.NotFoundError as error:
            return error_code(error) == "model_not_found"
        return False
    wait_until(gone, timeout=5, what="the deleted route refused")
    assert gateway.admin("DELETE", "/models/gpt-moving").status_code == 404
    if gateway.mode != "sqlite-up":
        return  # split planes here run without an audit pipeline
    wait_until(lambda: "gpt-moving" in audited(gateway, "model.updated", since) and "gpt-moving" in audited(gateway, "model.deleted", since),
               timeout=15, what="model.updated and model.deleted audited")


def test_a_developer_cannot_change_or_delete_models(gateway):
    r = gateway.admin("POST", "/admin-keys", {"name": "dev", "roles": ["developer"]})
    assert r.status_code == 201, r.text
    developer = r.json()["key"]
    for method, body in [("PUT", {"deployments": [{"credential": "fake", "model": "evil"}]}), ("DELETE", None)]:
        r = gateway.admin(method, "/models/gpt-a", body, key=developer)
        assert r.status_code == 403 and r.json()["error"]["code"] == "policy_denied", r.text


def test_a_leaked_provider_key_is_rotated_then_removed(gateway):
    since = audit_since()
    r = gateway.admin("POST", "/credentials", {"name": "leaky", "provider": "openai", "api_key": UPSTREAM_KEY,
                                               "base_url": gateway.fake_url + "/v1"})
    assert r.status_code == 201, r.text
    credential_id = r.json()["id"]
    assert gateway.admin("POST", "/models", {"name": "gpt-leaky", "deployments": [{"credential": "leaky", "model": "up-l"}]}).status_code == 201
    key = gateway.new_key(models=["gpt-leaky"])["key"]
    gateway.wait_for_key(key)
    chat(gateway, key, "gpt-leaky", "before rotation")
    assert fake_requests(gateway.fake_url)[-1]["authorization"] == f"Bearer {UPSTREAM_KEY}"

    # Rotated to a secret the provider does not know: the next snapshot carries it.
    r = gateway.admin("PUT", "/credentials/leaky", {"api_key": "sk-rotated-unknown-to-the-provider"})
    assert r.status_code == 200 and "api_key" not in r.json() and "rotated" not in r.text, r.text
    def refused_upstream():
        try:
            chat(gateway, key, "gpt-leaky", "after rotation")
        except openai.APIStatusError as error:
            return error_code(error) == "upstream_auth_failed"
        return False
    wait_until(refused_upstream, timeout=5, what="the rotated secret in use")
    assert fake_requests(gateway.fake_url)[-1]["authorization"] == "Bearer sk-rotated-unknown-to-the-provider"
    # Rotated back, and the base URL kept (only the secret changed).
    assert gateway.admin("PUT", "/credentials/leaky", {"api_key": UPSTREAM_KEY}).status_code == 200
    wait_until(lambda: chat(gateway, key, "gpt-leaky", "rotated back").choices, timeout=5, what="the secret back")
    # The base URL changes with the secret sealed again under it; the egress policy applies.
    r = gateway.admin("PUT", "/credentials/leaky", {"base_url": "http://169.254.169.254/v1"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "base_url_not_allowed", r.text
    r = gateway.admin("PUT", "/credentials/leaky", {"base_url": gateway.fake_url + "/v1/"})
    assert r.status_code == 200, r.text
    wait_until(lambda: chat(gateway, key, "gpt-leaky", "moved").choices, timeout=5, what="the moved credential in use")

    for body, code in [({}, "invalid_update"), ({"api_key": ""}, "invalid_provider_key"), ({"api_key": "x", "extra": 1}, "unknown_field")]:
        r = gateway.admin("PUT", "/credentials/leaky", body)
        assert r.status_code == 400 and r.json()["error"]["code"] == code, (body, r.text)
    assert gateway.admin("PUT", "/credentials/nope", {"api_key": "x"}).json()["error"]["code"] == "credential_not_found"

    # Removal: refused while a model deploys it, then gone from the data plane.
    r = gateway.admin("DELETE", "/credentials/leaky")
    assert r.status_code == 409 and r.json()["error"]["code"] == "credential_in_use" and "gpt-leaky" in r.text, r.text
    assert gateway.admin("DELETE", "/models/gpt-leaky").status_code == 200
    assert gateway.admin("DELETE", "/credentials/leaky").status_code == 200
    assert all(c["name"] != "leaky" for c in gateway.admin("GET", "/credentials").json()["credentials"])
    assert gateway.admin("DELETE", "/credentials/leaky").status_code == 404
    if gateway.mode == "sqlite-up":
        wait_until(lambda: audited(gateway, "credential.updated", since).count(credential_id) == 3
                   and audited(gateway, "credential.deleted", since) == [credential_id],
                   timeout=15, what="credential.updated x3 and credential.deleted audited")
