"""Routing (issue 16): a route's strategy (`priority`, `weighted` by deployment weights,
`least_latency`, `least_busy`) across providers, so that a tenant's named virtual models
(`smart`, `balanced`) spread over OpenAI and Anthropic deployments; a route's attempts and
retry budget (a failing deployment cannot multiply the load: past the budget, no fallback);
per-route timeouts; 429s counted apart by the breakers (`breaker_rate_limits`, 0 here: a
provider's rate limits never open one). The fake provider's faults drive each case."""
import threading
import time
import uuid

import httpx
import pytest

from conftest import UPSTREAM_KEY, Gateway, fake_requests, wait_until


@pytest.fixture(scope="module")
def gw(fake_provider):
    gateway = Gateway(fake_provider, "sqlite-up", extra_env={
        "ROUTERO_BREAKER_FAILURES": "1000", "ROUTERO_BREAKER_RATE_LIMITS": "0"})
    r = gateway.admin("POST", "/credentials", {"name": "claude", "provider": "anthropic", "api_key": UPSTREAM_KEY,
                                               "base_url": gateway.fake_url})
    assert r.status_code == 201, r.text
    yield gateway
    gateway.close()


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def route(gw, name=None, **fields):
    name = name or unique("route")
    r = gw.admin("POST", "/models", {"name": name, **fields})
    assert r.status_code == 201, r.text
    key = gw.new_key(models=[name])["key"]
    gw.wait_for_key(key)
    return name, key, r.json()


def chat(gw, model, key, text="hi", **extra):
    return httpx.post(gw.data_url + "/v1/chat/completions", timeout=30, headers={"Authorization": f"Bearer {key}"},
                      json={"model": model, "messages": [{"role": "user", "content": text}], **extra})


def fault(gw, model, **how):
    assert httpx.post(gw.fake_url + "/_fake/fault", json={"model": model, **how}).status_code == 204


def served_by(gw, marker):
    """The upstream model of the request the provider saw carrying `marker`."""
    found = [r["body"]["model"] for r in fake_requests(gw.fake_url) if marker in str(r["body"])]
    assert len(found) == 1, found
    return found[0]


def test_named_virtual_models_spread_over_providers_by_weight(gw):
    gpt, claude = unique("gpt"), unique("claude")
    name, key, shown = route(gw, "smart-" + uuid.uuid4().hex[:6], strategy="weighted", deployments=[
        {"credential": "fake", "model": gpt, "weight": 1}, {"credential": "claude", "model": claude, "weight": 3}])
    assert shown["strategy"] == "weighted" and [d.get("weight", 1) for d in shown["deployments"]] == [1, 3]
    counts = {gpt: 0, claude: 0}
    for _ in range(200):
        marker = unique("m")
        r = chat(gw, name, key, f"say:{marker}")
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == marker, r.text
        counts[served_by(gw, marker)] += 1
    # 3 to 1 expected (150 of 200); the bounds are 5 standard deviations wide.
    assert 120 <= counts[claude] <= 180, counts
    # A balanced alias of the same deployments, in priority order: the first always serves.
    balanced, key, shown = route(gw, "balanced-" + uuid.uuid4().hex[:6], deployments=[
        {"credential": "claude", "model": claude}, {"credential": "fake", "model": gpt}])
    assert shown["strategy"] == "priority"
    for _ in range(5):
        marker = unique("m")
        assert chat(gw, balanced, key, f"say:{marker}").status_code == 200
        assert served_by(gw, marker) == claude


def test_least_busy_sends_to_the_deployment_with_fewer_requests_in_flight(gw):
    first, second = unique("first"), unique("second")
    name, key, _ = route(gw, strategy="least_busy", deployments=[{"credential": "fake", "model": first},
                                                                 {"credential": "fake", "model": second}])
    fault(gw, first, stall_ms=3000, count=1)
    held = unique("held")
    slow = threading.Thread(target=chat, args=(gw, name, key, f"say:{held}"))
    slow.start()
    # In flight at the first deployment (the provider has it, stalled) before the next comes.
    wait_until(lambda: any(held in str(r["body"]) for r in fake_requests(gw.fake_url)), what="the held request")
    marker = unique("m")
    assert chat(gw, name, key, f"say:{marker}").status_code == 200
    assert served_by(gw, marker) == second
    slow.join()
    # Nothing in flight: the first (in order) again.
    marker = unique("m")
    assert chat(gw, name, key, f"say:{marker}").status_code == 200
    assert served_by(gw, marker) == first


def test_least_latency_sends_to_the_deployment_that_answers_soonest(gw):
    slow, quick = unique("slow"), unique("quick")
    name, key, _ = route(gw, strategy="least_latency", deployments=[{"credential": "fake", "model": slow},
                                                                    {"credential": "fake", "model": quick}])
    fault(gw, slow, stall_ms=1000, count=100)
    picks = []
    for _ in range(6):
        marker = unique("m")
        assert chat(gw, name, key, f"say:{marker}").status_code == 200
        picks.append(served_by(gw, marker))
    # Each is tried once (the untried first), then the quicker serves.
    assert picks == [slow] + [quick] * 5, picks
    fault(gw, slow, count=0)


def test_the_retry_budget_stops_fallbacks_that_would_multiply_the_load(gw):
    failing, backup = unique("failing"), unique("backup")
    name, key, shown = route(gw, retry_budget_percent=0, max_attempts=2, deployments=[
        {"credential": "fake", "model": failing}, {"credential": "fake", "model": backup}])
    assert (shown["retry_budget_percent"], shown["max_attempts"]) == (0, 2)
    fault(gw, failing, status=503, count=1000)
    started = time.monotonic()
    statuses = [chat(gw, name, key).status_code for _ in range(13)]
    # No budget beyond the floor: 10 retries over the last two 5 s windows, then none.
    if time.monotonic() - started < 5:
        assert statuses[:10] == [200] * 10 and set(statuses[10:]) == {502}, statuses
    fault(gw, failing, count=0)


def test_max_attempts_bounds_each_request(gw):
    a, b, c = unique("a"), unique("b"), unique("c")
    name, key, _ = route(gw, max_attempts=2, deployments=[{"credential": "fake", "model": m} for m in (a, b, c)])
    for model in (a, b):
        fault(gw, model, status=500, count=1)
    r = chat(gw, name, key)
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_error", r.text
    tried = [x["body"]["model"] for x in fake_requests(gw.fake_url) if x["body"]["model"] in (a, b, c)]
    assert tried == [a, b], tried


def test_429s_are_counted_apart_from_failures(fake_provider):
    """With breaker_failures 2 and breaker_rate_limits 0: eight 429s in a row open nothing,
    two failures do."""
    strict = Gateway(fake_provider, "sqlite-up", extra_env={
        "ROUTERO_BREAKER_FAILURES": "2", "ROUTERO_BREAKER_RATE_LIMITS": "0", "ROUTERO_BREAKER_OPEN_FOR": "60s"})
    try:
        limited, backup = unique("limited"), unique("backup")
        name, key, _ = route(strict, deployments=[{"credential": "fake", "model": limited},
                                                  {"credential": "fake", "model": backup}])
        fault(strict, limited, status=429, count=8)
        for _ in range(8):
            assert chat(strict, name, key).json()["model"] == backup
        # Had the 429s opened the breaker, this would go to the backup.
        assert chat(strict, name, key).json()["model"] == limited
        fault(strict, limited, status=503, count=2)
        for _ in range(2):
            assert chat(strict, name, key).json()["model"] == backup

        def opened():
            found = strict.admin("GET", "/audit/events", params={"type": "deployment.circuit_opened"}).json()["events"]
            return [e for e in found if e["event"]["details"].get("model") == limited]
        wait_until(lambda: len(opened()) == 1, what="the breaker opened by two failures")
        assert chat(strict, name, key).json()["model"] == backup, "open: the backup serves"
        # Alone, a rate-limited deployment's 429 reaches the client with the provider's Retry-After.
        alone, key, _ = route(strict, deployments=[{"credential": "fake", "model": backup}])
        fault(strict, backup, status=429, count=1)
        r = chat(strict, alone, key)
        assert r.status_code == 429 and r.headers["retry-after"] == "1", (r.status_code, r.headers)
        assert r.json()["error"]["code"] == "upstream_rate_limited", r.text
    finally:
        strict.close()


def test_a_routes_own_timeouts_replace_the_data_planes(gw):
    patient, slow = unique("patient"), unique("slow")
    # The data plane waits 60 s for a head by default; this route, 1 s for a stream's head and
    # 2 s for a whole attempt.
    name, key, shown = route(gw, timeouts={"ttfb": "1s", "total": "2s"},
                             deployments=[{"credential": "fake", "model": slow}])
    assert shown["timeouts"] == {"ttfb": "1s", "total": "2s"}
    fault(gw, slow, stall_ms=5000, count=1)
    started = time.monotonic()
    r = chat(gw, name, key, stream=True)
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout", r.text
    assert time.monotonic() - started < 3.5, "the route's 1 s, not the stall's 5 s"
    fault(gw, slow, stall_ms=6000, count=1)
    started = time.monotonic()
    r = chat(gw, name, key)
    assert time.monotonic() - started < 4.5, "the route's 2 s total, not the stall's 6 s"
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout", r.text
    other, key, _ = route(gw, deployments=[{"credential": "fake", "model": patient}])
    fault(gw, patient, stall_ms=1500, count=1)
    assert chat(gw, other, key, stream=True).status_code == 200


@pytest.mark.parametrize("fields, reason", [
    ({"strategy": "fastest"}, "strategy"),
    ({"deployments": [{"credential": "fake", "model": "m", "weight": 2}]}, "weight"),
    ({"strategy": "weighted", "deployments": [{"credential": "fake", "model": "m", "weight": 0}]}, "weight"),
    ({"max_attempts": 9}, "max_attempts"),
    ({"retry_budget_percent": 101}, "retry_budget_percent"),
    ({"timeouts": {"ttfb": "10ms"}}, "timeouts.ttfb"),
    ({"timeouts": {"total": "2h"}}, "timeouts.total"),
    ({"timeouts": {"connect": "1s"}}, "connect"),
    ({"retries": 3}, "retries"),
])
def test_bad_routing_is_refused_whole(gw, fields, reason):
    name = unique("bad")
    body = {"name": name, "deployments": [{"credential": "fake", "model": "m"}], **fields}
    r = gw.admin("POST", "/models", body)
    assert r.status_code == 400 and reason in r.text, r.text
    assert gw.admin("GET", "/models").json()["models"] and name not in gw.admin("GET", "/models").text
