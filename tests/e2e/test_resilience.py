"""Providers that fail (issue 16, first part): a route's deployments in priority order, a failed
attempt (no connection, no response head within `upstream_ttfb_timeout`, a 5xx, a 429) falling
back to the next before anything reached the client, a provider's refusal of the request (4xx)
never retried, and a circuit breaker per deployment: five failures in a row open it (the
deployment gets no requests), after `breaker_open_for` one probe, whose success closes it;
both changes in the audit trail; and a client that goes away mid-stream ends the provider's
stream. Faults are injected into the fake provider per model."""
import time
import uuid

import httpx
import pytest

from conftest import CHUNKS, Gateway, wait_until


@pytest.fixture(scope="module")
def gw(fake_provider):
    gateway = Gateway(fake_provider, "sqlite-up", extra_env={
        "ROUTERO_UPSTREAM_TTFB_TIMEOUT": "1s", "ROUTERO_BREAKER_OPEN_FOR": "5s"})
    r = gateway.admin("POST", "/credentials", {"name": "dead", "provider": "openai", "api_key": "sk-x",
                                               "base_url": "http://127.0.0.1:1/v1"})
    assert r.status_code == 201, r.text
    yield gateway
    gateway.close()


def fault(gw, model, **how):
    r = httpx.post(gw.fake_url + "/_fake/fault", json={"model": model, **how})
    assert r.status_code == 204, r.text


def attempts(gw, model):
    recorded = httpx.get(gw.fake_url + "/_fake/requests").json()["requests"]
    return sum(1 for r in recorded if r["body"].get("model") == model)


def routed(gw, *deployments):
    """A model over `deployments` ((credential, upstream model) in priority order) and a key
    for it."""
    name = "r-" + uuid.uuid4().hex[:8]
    r = gw.admin("POST", "/models", {"name": name, "deployments": [{"credential": c, "model": m}
                                                                     for c, m in deployments]})
    assert r.status_code == 201, r.text
    key = gw.new_key(models=[name])["key"]
    gw.wait_for_key(key)
    return name, key


def chat(gw, model, key, **extra):
    return httpx.post(gw.data_url + "/v1/chat/completions", timeout=30, headers={"Authorization": f"Bearer {key}"},
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}], **extra})


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_a_failed_attempt_falls_back_to_the_next_deployment_and_a_refusal_does_not(gw):
    primary, backup = unique("primary"), unique("backup")
    model, key = routed(gw, ("fake", primary), ("fake", backup))
    fault(gw, primary, status=503, count=1)
    r = chat(gw, model, key)
    assert r.status_code == 200 and r.json()["model"] == backup, r.text
    assert (attempts(gw, primary), attempts(gw, backup)) == (1, 1)
    # A stream falls back the same way, before its first byte: the client gets one whole stream.
    fault(gw, primary, status=502, count=1)
    r = chat(gw, model, key, stream=True)
    events = [line for line in r.text.splitlines() if line.startswith("data: {")]
    assert r.status_code == 200 and len(events) == CHUNKS + 1 and backup in events[0], r.text
    # A provider refusing the request itself (a 4xx) answers the client: no fallback.
    fault(gw, primary, status=400, count=1)
    assert chat(gw, model, key).status_code == 400
    assert attempts(gw, backup) == 2


def test_no_connection_and_a_silent_provider_fall_back(gw):
    backup = unique("backup")
    model, key = routed(gw, ("dead", "anything"), ("fake", backup))
    r = chat(gw, model, key)
    assert r.status_code == 200 and r.json()["model"] == backup, r.text
    slow = unique("slow")
    model, key = routed(gw, ("fake", slow), ("fake", backup))
    # A stream must begin within upstream_ttfb_timeout (1 s here); a whole completion is
    # only written once done, so it is not held to it.
    fault(gw, slow, stall_ms=5000, count=1)
    started = time.monotonic()
    r = chat(gw, model, key, stream=True)
    assert r.status_code == 200 and backup in r.text and slow not in r.text, r.text
    assert time.monotonic() - started < 4, "the backup answered after the 1 s time-to-first-byte, not the stall"
    assert attempts(gw, slow) == 1
    fault(gw, slow, stall_ms=1500, count=1)
    r = chat(gw, model, key)
    assert r.status_code == 200 and r.json()["model"] == slow, r.text


def test_five_failures_open_the_breaker_then_one_probe_closes_it(gw):
    primary, backup = unique("primary"), unique("backup")
    model, key = routed(gw, ("fake", primary), ("fake", backup))
    fault(gw, primary, status=500, count=5)
    for _ in range(5):
        r = chat(gw, model, key)
        assert r.status_code == 200 and r.json()["model"] == backup, r.text
    assert attempts(gw, primary) == 5
    # Open: the primary gets nothing, the backup serves at once.
    for _ in range(3):
        assert chat(gw, model, key).json()["model"] == backup
    assert attempts(gw, primary) == 5

    def events(kind):
        found = gw.admin("GET", "/audit/events", params={"type": kind}).json()["events"]
        return [e["event"] for e in found if e["event"]["details"].get("model") == primary]
    wait_until(lambda: len(events("deployment.circuit_opened")) == 1, what="circuit_opened audited")
    # After the open period (5 s) one probe goes to the primary (healthy again) and closes it.
    time.sleep(5.2)
    r = chat(gw, model, key)
    assert r.json()["model"] == primary, r.text
    assert attempts(gw, primary) == 6
    wait_until(lambda: len(events("deployment.circuit_closed")) == 1, what="circuit_closed audited")
    assert chat(gw, model, key).json()["model"] == primary


def test_a_client_gone_mid_stream_ends_the_upstream_request(gw):
    long = unique("long")
    model, key = routed(gw, ("fake", long))
    fault(gw, long, chunk_interval_ms=500, count=1)  # a stream of several seconds
    with httpx.stream("POST", gw.data_url + "/v1/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {key}"},
                      json={"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as r:
        assert r.status_code == 200
        next(r.iter_raw())  # the first chunk, then the client goes
    started = time.monotonic()
    wait_until(lambda: long in httpx.get(gw.fake_url + "/_fake/cut").json()["models"], timeout=10,
               what="the provider's stream cut")
    assert time.monotonic() - started < CHUNKS * 0.5, "cut before the stream's own end"


def test_a_stream_whose_provider_dies_after_it_began_is_not_retried(gw):
    primary, backup = unique("primary"), unique("backup")
    model, key = routed(gw, ("fake", primary), ("fake", backup))
    fault(gw, primary, cut_after=3, count=1)
    received = []
    # The reset reaches the client as a broken stream (not a hang until a timeout).
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("POST", gw.data_url + "/v1/chat/completions", timeout=10,
                          headers={"Authorization": f"Bearer {key}"},
                          json={"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                received.append(line)
    data = [line for line in received if line.startswith("data: ")]
    # What the primary sent before it died reached the client, and nothing else: no second
    # deployment's stream spliced in, no [DONE] as if it were whole.
    assert data and all(primary in line for line in data), received
    assert "data: [DONE]" not in received
    assert (attempts(gw, primary), attempts(gw, backup)) == (1, 0)
