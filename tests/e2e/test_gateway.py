"""The foundation's acceptance, end to end: the official `openai` SDK against the real binary,
on `routero up` (SQLite) and on separate control and data planes (PostgreSQL)."""

import base64
import json
import re
import sqlite3
import struct
import threading
import time
import uuid
from datetime import datetime, timezone

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
    """A key valid for a few seconds serves, then is refused as expired once its time is up."""
    issued = gateway.new_key(models=["gpt-a"], duration="3s")
    expires = datetime.fromisoformat(issued["expires"].replace("Z", "+00:00"))
    client = gateway.client(issued["key"])
    gateway.wait_for_key(issued["key"])
    reply = client.chat.completions.create(model="gpt-a", messages=[{"role": "user", "content": "still valid"}])
    assert reply.choices[0].message.content == "fake reply to: still valid"
    assert datetime.now(timezone.utc) < expires, "the key was served before it expired"

    def expired():
        try:
            client.chat.completions.create(model="gpt-a", messages=[{"role": "user", "content": "x"}])
        except openai.AuthenticationError as refused:
            return error_code(refused)
        return None
    wait_until(lambda: expired() == "key_expired", timeout=10, what="the key to expire")
    assert datetime.now(timezone.utc) >= expires, "refused as expired before its expiry"


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


def key_versions(data_dir):
    """The master keyring `routero up` keeps in `data_dir`: {version: key}."""
    spec = (data_dir / "master-keys").read_text().strip()
    return {int(v): key for v, key in (entry.split(":", 1) for entry in spec.split(",") if entry)}


def ciphertext_versions(data_dir):
    """{credential name: master key version its stored ciphertext was sealed under}."""
    db = sqlite3.connect(f"file:{data_dir / 'routero.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT name, ciphertext FROM credentials").fetchall()
    finally:
        db.close()
    return {name: int(re.match(r"b(\d+):", ciphertext).group(1)) for name, ciphertext in rows}


def test_rotate_master_key_while_the_gateway_runs(fake_provider):
    """Rotation adds a key version that did not exist, re-seals every credential under it, and
    the traffic that runs through a credential meanwhile is served, every request."""
    gw = Gateway(fake_provider, "sqlite-up")
    data_dir = gw.dir / "data"
    try:
        key = gw.new_key(models=["gpt-a"])["key"]
        gw.wait_for_key(key)
        before = key_versions(data_dir)
        assert list(before) == [1] and ciphertext_versions(data_dir) == {"fake": 1}

        # Traffic through the credential, before, during and after the rotation.
        stop, served, failures = threading.Event(), [], []

        def traffic():
            client = gw.client(key)
            while not stop.is_set():
                text = "during-" + uuid.uuid4().hex[:8]
                try:
                    reply = client.chat.completions.create(model="gpt-a", messages=[{"role": "user", "content": text}])
                    assert reply.choices[0].message.content == f"fake reply to: {text}", reply
                    served.append(time.monotonic())
                except Exception as error:  # noqa: BLE001 - every failure is reported below
                    failures.append(repr(error))
        workers = [threading.Thread(target=traffic) for _ in range(2)]
        for worker in workers:
            worker.start()
        try:
            wait_until(lambda: len(served) >= 20, what="traffic before the rotation")
            started = time.monotonic()
            out = routero("admin", "rotate-master-key", env={"ROUTERO_DATA_DIR": str(data_dir)})
            finished = time.monotonic()
            count = len(served)
            wait_until(lambda: len(served) >= count + 20, what="traffic after the rotation")
        finally:
            stop.set()
            for worker in workers:
                worker.join(timeout=15)
        assert not failures, failures[:5]
        assert any(started <= at <= finished for at in served), "no request was served during the rotation"

        after = key_versions(data_dir)
        assert set(after) == {1, 2} and after[1] == before[1], "v1 is kept, v2 is added"
        assert after[2] not in before.values(), "v2 is a new key"
        assert "re-encrypted 1 credential(s) under master key v2" in out, out
        assert ciphertext_versions(data_dir) == {"fake": 2}, "the credential is sealed under v2"

        # The running control plane opens the v2 row for new snapshots: a key created now (in a
        # new snapshot) reaches the provider with the credential's secret, as does a credential
        # created right after the rotation, sealed under v2 (the control plane re-reads its
        # keyring before sealing, rather than keep using the v1 it loaded at start).
        r = gw.admin("POST", "/credentials", {"name": "second", "provider": "openai", "api_key": UPSTREAM_KEY, "base_url": gw.fake_url + "/v1"})
        assert r.status_code == 201, r.text
        assert ciphertext_versions(data_dir) == {"fake": 2, "second": 2}, "sealed under the newest version"
        assert gw.admin("POST", "/models", {"name": "gpt-c", "deployments": [{"credential": "second", "model": "up-c"}]}).status_code == 201
        fresh = gw.new_key(models=["gpt-a", "gpt-c"])["key"]
        gw.wait_for_key(fresh)
        for model in ["gpt-a", "gpt-c"]:
            text = f"v2 {model} " + uuid.uuid4().hex[:8]
            reply = gw.client(fresh).chat.completions.create(model=model, messages=[{"role": "user", "content": text}])
            assert reply.choices[0].message.content == f"fake reply to: {text}"
            [seen] = [r for r in fake_requests(gw.fake_url) if text in json.dumps(r["body"])]
            assert seen["authorization"] == f"Bearer {UPSTREAM_KEY}", seen
    finally:
        gw.close()
