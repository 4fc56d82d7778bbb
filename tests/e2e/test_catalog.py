"""The provider catalogue can be changed and cleaned up: model routes replaced and deleted,
credentials rotated and deleted (a leaked provider key removed), each audited and reaching the
data plane in the next snapshot, on `routero up` and on split planes."""

import httpx
import openai
import pytest

from conftest import UPSTREAM_KEY, error_code, fake_requests, wait_until


def chat(gateway, key, model, text):
    return gateway.client(key).chat.completions.create(model=model, messages=[{"role": "user", "content": text}])


def audited(gateway, action):
    return [e["event"]["resource"]["id"] for e in
            gateway.admin("GET", f"/audit/events?type={action}").json().get("events", [])]


def test_a_model_route_is_replaced_and_deleted(gateway):
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
    wait_until(lambda: "gpt-moving" in audited(gateway, "model.updated") and "gpt-moving" in audited(gateway, "model.deleted"),
               timeout=15, what="model.updated and model.deleted audited")


def test_a_developer_cannot_change_or_delete_models(gateway):
    r = gateway.admin("POST", "/admin-keys", {"name": "dev", "roles": ["developer"]})
    assert r.status_code == 201, r.text
    developer = r.json()["key"]
    for method, body in [("PUT", {"deployments": [{"credential": "fake", "model": "evil"}]}), ("DELETE", None)]:
        r = gateway.admin(method, "/models/gpt-a", body, key=developer)
        assert r.status_code == 403 and r.json()["error"]["code"] == "policy_denied", r.text
