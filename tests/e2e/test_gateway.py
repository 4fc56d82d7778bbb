"""The foundation's acceptance, end to end: the official `openai` SDK against the real binary,
on `routero up` (SQLite) and on separate control and data planes (PostgreSQL)."""

import base64
import struct
import time

import httpx
import openai
import pytest

from conftest import (ADMIN_KEY, CHUNK_INTERVAL_MS, CHUNKS, UPSTREAM_KEY, Gateway, error_code, fake_requests,
                      routero, wait_until)


def test_chat_plain_reaches_the_provider_with_its_key_and_upstream_model(gateway):
    key = gateway.new_key(models=["gpt-a"])["key"]
    gateway.wait_for_key(key)
    reply = gateway.client(key).chat.completions.create(
        model="gpt-a", messages=[{"role": "user", "content": "hello routero"}]
    )
    assert reply.choices[0].message.content == "fake reply to: hello routero"
    seen = [r for r in fake_requests(gateway.fake_url) if r["body"].get("messages", [{}])[-1].get("content") == "hello routero"]
    assert seen, "the provider saw the request"
    assert seen[-1]["body"]["model"] == "up-a"
    assert seen[-1]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert key not in str(seen[-1]), "the virtual key never reaches the provider"


def test_chat_streaming_relays_every_chunk_as_it_arrives(gateway):
    key = gateway.new_key(models=["gpt-a"])["key"]
    gateway.wait_for_key(key)
    stream = gateway.client(key).chat.completions.create(
        model="gpt-a", messages=[{"role": "user", "content": "stream please"}], stream=True
    )
    texts, arrivals = [], []
    for chunk in stream:
        arrivals.append(time.monotonic())
        if chunk.choices and chunk.choices[0].delta.content:
            texts.append(chunk.choices[0].delta.content)
    assert texts == [f"chunk{i} " for i in range(CHUNKS)]
    # Unbuffered: the chunks, sent CHUNK_INTERVAL_MS apart, arrive spread out, not in one burst.
    assert arrivals[-1] - arrivals[0] >= (CHUNKS - 1) * CHUNK_INTERVAL_MS / 1000 / 2


def test_models_lists_only_what_the_key_may_use(gateway):
    key = gateway.new_key(models=["gpt-a"])["key"]
    gateway.wait_for_key(key)
    client = gateway.client(key)
    assert [m.id for m in client.models.list()] == ["gpt-a"]
    assert client.models.retrieve("gpt-a").id == "gpt-a"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-b")
    unrestricted = gateway.new_key()["key"]
    gateway.wait_for_key(unrestricted)
    assert [m.id for m in gateway.client(unrestricted).models.list()] == ["embed", "gpt-a", "gpt-b"]


def test_another_model_is_refused(gateway):
    key = gateway.new_key(models=["gpt-a"])["key"]
    gateway.wait_for_key(key)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        gateway.client(key).chat.completions.create(model="gpt-b", messages=[{"role": "user", "content": "x"}])
    assert error_code(refused.value) == "model_not_allowed"


def test_cidr_allowlist(gateway):
    outside = gateway.new_key(models=["gpt-a"], allowed_cidrs=["10.0.0.0/8", "192.168.7.7"])["key"]
    inside = gateway.new_key(models=["gpt-a"], allowed_cidrs=["127.0.0.0/8"])["key"]
    gateway.wait_for_key(inside)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        gateway.client(outside).chat.completions.create(model="gpt-a", messages=[{"role": "user", "content": "x"}])
    assert error_code(refused.value) == "ip_not_allowed"
    # X-Forwarded-For from an untrusted peer changes nothing.
    r = httpx.post(gateway.data_url + "/v1/chat/completions",
                   headers={"Authorization": f"Bearer {outside}", "X-Forwarded-For": "10.1.2.3"},
                   json={"model": "gpt-a", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 403 and r.json()["error"]["code"] == "ip_not_allowed"
    ok = gateway.client(inside).chat.completions.create(model="gpt-a", messages=[{"role": "user", "content": "x"}])
    assert ok.choices[0].message.content == "fake reply to: x"


def test_expired_key_is_refused(gateway):
    issued = gateway.new_key(models=["gpt-a"], duration="1s")
    assert issued["expires"] is not None
    time.sleep(1.5)
    with pytest.raises(openai.AuthenticationError) as refused:
        gateway.client(issued["key"]).chat.completions.create(model="gpt-a", messages=[{"role": "user", "content": "x"}])
    assert error_code(refused.value) == "key_expired"


def test_revoked_key_is_refused_within_one_second(gateway):
    issued = gateway.new_key(models=["gpt-a"])
    gateway.wait_for_key(issued["key"])
    client = gateway.client(issued["key"])
    client.chat.completions.create(model="gpt-a", messages=[{"role": "user", "content": "before"}])
    r = gateway.admin("POST", "/key/delete", {"key_ids": [issued["key_id"]]})
    assert r.status_code == 200 and r.json()["deleted_keys"] == [issued["key_id"]]
    revoked_at = time.monotonic()
    while True:
        try:
            client.chat.completions.create(model="gpt-a", messages=[{"role": "user", "content": "after"}])
        except openai.AuthenticationError as refused:
            assert error_code(refused) == "invalid_api_key"
            break
        assert time.monotonic() - revoked_at < 1.0, "revoked key still served after one second"
    assert time.monotonic() - revoked_at < 1.0


def test_revoke_by_key_with_http_delete(gateway):
    issued = gateway.new_key(models=["gpt-a"])
    r = gateway.admin("DELETE", "/key/delete", {"keys": [issued["key"]]})
    assert r.status_code == 200 and r.json()["deleted_keys"] == [issued["key_id"]]
    again = gateway.admin("DELETE", "/key/delete", {"keys": [issued["key"]]})
    assert again.status_code == 404 and again.json()["error"]["code"] == "key_not_found"
    info = gateway.admin("GET", f"/key/info?key_id={issued['key_id']}").json()
    assert info["info"]["revoked"] is True and "key" not in info["info"]


def test_regenerate_and_update(gateway):
    issued = gateway.new_key(models=["gpt-a"])
    gateway.wait_for_key(issued["key"])
    r = gateway.admin("POST", "/key/regenerate", {"key_id": issued["key_id"]})
    assert r.status_code == 200, r.text
    fresh = r.json()["key"]
    assert fresh != issued["key"] and r.json()["key_id"] == issued["key_id"]
    gateway.wait_for_key(fresh)
    with pytest.raises(openai.AuthenticationError):
        gateway.client(issued["key"]).models.list()
    r = gateway.admin("POST", "/key/update", {"key_id": issued["key_id"], "models": ["gpt-a", "gpt-b"]})
    assert r.status_code == 200 and r.json()["info"]["models"] == ["gpt-a", "gpt-b"]
    wait_until(lambda: len(gateway.client(fresh).models.list().data) == 2, timeout=2, what="update to propagate")
    listed = gateway.admin("GET", "/key/list").json()["keys"]
    assert issued["key_id"] in [k["key_id"] for k in listed]
    assert fresh not in str(listed) and issued["key"] not in str(listed), "keys are never shown again"


def test_embeddings_with_the_sdk_default_base64(gateway):
    key = gateway.new_key(models=["embed"])["key"]
    gateway.wait_for_key(key)
    result = gateway.client(key).embeddings.create(model="embed", input=["alpha", "beta"])
    assert len(result.data) == 2 and all(len(d.embedding) == 8 for d in result.data)
    plain = httpx.post(gateway.data_url + "/v1/embeddings", headers={"Authorization": f"Bearer {key}"},
                       json={"model": "embed", "input": ["alpha", "beta"], "encoding_format": "float"}).json()
    for decoded, floats in zip(result.data, plain["data"], strict=True):
        assert decoded.embedding == pytest.approx(floats["embedding"])
    raw = httpx.post(gateway.data_url + "/v1/embeddings", headers={"Authorization": f"Bearer {key}"},
                     json={"model": "embed", "input": "alpha", "encoding_format": "base64"}).json()
    decoded = struct.unpack("<8f", base64.b64decode(raw["data"][0]["embedding"]))
    assert list(decoded) == pytest.approx(plain["data"][0]["embedding"])


def test_x_api_key_header_is_accepted(gateway):
    key = gateway.new_key(models=["gpt-a"])["key"]
    gateway.wait_for_key(key)
    r = httpx.get(gateway.data_url + "/v1/models", headers={"x-api-key": key})
    assert r.status_code == 200 and [m["id"] for m in r.json()["data"]] == ["gpt-a"]


def test_data_plane_refuses_bad_input_with_stable_codes(gateway):
    key = gateway.new_key()["key"]
    gateway.wait_for_key(key)
    auth = {"Authorization": f"Bearer {key}"}
    url = gateway.data_url + "/v1/chat/completions"
    cases = [
        (httpx.post(url, headers=auth, content=b"{not json"), 400, "invalid_request"),
        (httpx.post(url, headers=auth, json=["an", "array"]), 400, "invalid_request"),
        (httpx.post(url, headers=auth, json={"messages": []}), 400, "invalid_request"),
        (httpx.post(url, headers=auth, json={"model": "gpt-a"}), 400, "invalid_request"),
        (httpx.post(url, headers=auth, json={"model": "nope", "messages": []}), 404, "model_not_found"),
        (httpx.post(url, headers=auth, content=b"x" * (9 * 1024 * 1024)), 413, "body_too_large"),
        (httpx.post(url, json={"model": "gpt-a", "messages": []}), 401, "invalid_api_key"),
        (httpx.post(url, headers={"Authorization": "Bearer sk-rt-forged"}, json={}), 401, "invalid_api_key"),
        (httpx.get(gateway.data_url + "/v1/nothing-here", headers=auth), 404, "unknown_url"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code, response.text


def test_admin_api_refuses_bad_input_with_stable_codes(gateway):
    def generate(content_type=None, **kwargs):
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        if content_type:
            headers["Content-Type"] = content_type
        return httpx.post(gateway.admin_url + "/key/generate", headers=headers, timeout=10, **kwargs)

    cases = [
        (generate("application/json", content=b"{\"duration\": "), 400, "malformed_json"),
        (generate(json={"duration": "30d", "surprise": True}), 400, "unknown_field"),
        (generate(json={"models": "gpt-a"}), 400, "invalid_field"),
        (generate(json={"duration": "30 days"}), 400, "invalid_duration"),
        (generate(json={"duration": "0d"}), 400, "invalid_duration"),
        (generate(json={"allowed_cidrs": ["10.0.0.0/33"]}), 400, "invalid_cidr"),
        (generate(json={"metadata": {"blob": "x" * (2 * 1024 * 1024)}}), 413, "body_too_large"),
        (generate(content=b"{}"), 415, "unsupported_media_type"),
        (gateway.admin("POST", "/key/generate", {}, key="sk-rtadm-wrong"), 401, "invalid_admin_key"),
        (gateway.admin("POST", "/key/generate", {}, key=None), 401, "invalid_admin_key"),
        (gateway.admin("POST", "/credentials", {"name": "x", "provider": "openai", "api_key": "k", "base_url": "ftp://x"}), 400, "invalid_base_url"),
        (gateway.admin("POST", "/credentials", {"name": "x", "provider": "mystery", "api_key": "k", "base_url": "http://x"}), 400, "unsupported_provider"),
        (gateway.admin("POST", "/credentials", {"name": "fake", "provider": "openai", "api_key": "k", "base_url": gateway.fake_url + "/v1"}), 409, "already_exists"),
        (gateway.admin("POST", "/models", {"name": "m", "deployments": [{"credential": "nope", "model": "x"}]}), 400, "unknown_credential"),
        (gateway.admin("GET", "/key/info?key_id=key_missing"), 404, "key_not_found"),
        (gateway.admin("GET", "/key/info"), 400, "invalid_query"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code, response.text
    assert "openapi" in httpx.get(gateway.admin_url + "/openapi.json").json()
    credentials = gateway.admin("GET", "/credentials").json()["credentials"]
    assert UPSTREAM_KEY not in str(credentials)


@pytest.fixture
def split_gateway(fake_provider):
    gw = Gateway(fake_provider, "postgres")
    yield gw
    gw.close()


def test_restarted_data_plane_serves_from_its_persisted_snapshot_while_the_control_plane_is_down(split_gateway):
    gw = split_gateway
    key = gw.new_key(models=["gpt-a"])["key"]
    gw.wait_for_key(key)
    applied = gw.admin("GET", "/data-planes").json()
    assert applied["data_planes"][0]["node_id"] == "e2e-dp"
    gw.stop("control-plane")
    gw.stop("data-plane")
    gw.start_data_plane(ROUTERO_MAX_STALENESS="6s")
    wait_until(lambda: httpx.get(gw.data_url + "/readyz").status_code == 200, timeout=5, what="data plane ready from disk")
    reply = gw.client(key).chat.completions.create(model="gpt-a", messages=[{"role": "user", "content": "offline"}])
    assert reply.choices[0].message.content == "fake reply to: offline"
    # Past the staleness bound without contact it fails closed.
    wait_until(lambda: httpx.get(gw.data_url + "/readyz").status_code == 503, timeout=15, what="staleness bound")
    with pytest.raises(openai.InternalServerError) as refused:
        gw.client(key).chat.completions.create(model="gpt-a", messages=[{"role": "user", "content": "stale"}])
    assert refused.value.status_code == 503 and error_code(refused.value) == "control_plane_unreachable"
    # And recovers when the control plane returns.
    gw.start_control_plane()
    wait_until(lambda: httpx.get(gw.data_url + "/readyz").status_code == 200, timeout=15, what="reconnect")
    gw.client(key).chat.completions.create(model="gpt-a", messages=[{"role": "user", "content": "back"}])


def test_rotate_master_key_while_the_gateway_runs(fake_provider):
    gw = Gateway(fake_provider, "sqlite-up")
    try:
        key = gw.new_key(models=["gpt-a"])["key"]
        gw.wait_for_key(key)
        data_dir = str(gw.dir / "data")
        out = routero("admin", "rotate-master-key", env={"ROUTERO_DATA_DIR": data_dir})
        assert "re-encrypted 1 credential(s) under master key v2" in out
        assert (gw.dir / "data" / "master-keys").read_text().startswith("1:")
        # Traffic continues, and the running control plane reads the v2 rows for new snapshots.
        gw.client(key).chat.completions.create(model="gpt-a", messages=[{"role": "user", "content": "rotated"}])
        r = gw.admin("POST", "/credentials", {"name": "second", "provider": "openai", "api_key": UPSTREAM_KEY, "base_url": gw.fake_url + "/v1"})
        assert r.status_code == 201
        gw.admin("POST", "/models", {"name": "gpt-c", "deployments": [{"credential": "second", "model": "up-c"}]})
        wait_until(lambda: gw.client(key).chat.completions.create(model="gpt-a", messages=[{"role": "user", "content": "x"}]) is not None, timeout=2)
        fresh = gw.new_key(models=["gpt-c"])["key"]
        gw.wait_for_key(fresh)
        assert gw.client(fresh).chat.completions.create(model="gpt-c", messages=[{"role": "user", "content": "v2"}]).choices[0].message.content == "fake reply to: v2"
    finally:
        gw.close()
