"""A key's rate limits (issue 15, first part): `rpm_limit` and `tpm_limit` on /key/generate and
/key/update (LiteLLM's names), counted before a request is sent; past a limit 429 rate_limited
with Retry-After, answers carrying OpenAI's x-ratelimit-* headers. Counted in process by
`routero up`, and in a real Redis shared by two data-plane replicas; Redis gone, requests are
refused 503 limits_unavailable (never served uncounted) and flow again when it is back."""
import shutil
import subprocess
import time

import httpx
import pytest

from conftest import Gateway, free_port, wait_until


def chat(url, key, max_tokens=None):
    body = {"model": "gpt-a", "messages": [{"role": "user", "content": "hello"}],
            **({"max_tokens": max_tokens} if max_tokens else {})}
    return httpx.post(url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"},
                      timeout=20)


@pytest.fixture(scope="module")
def gw(fake_provider):
    gateway = Gateway(fake_provider, "sqlite-up")
    yield gateway
    gateway.close()


def test_a_key_gets_its_requests_per_minute_then_429_with_retry_after(gw):
    limited = gw.new_key(models=["gpt-a"], rpm_limit=5)
    assert limited["rpm_limit"] == 5 and limited["tpm_limit"] is None
    free = gw.new_key(models=["gpt-a"])
    gw.wait_for_key(free["key"])
    gw.wait_for_key(limited["key"])
    left = []
    for _ in range(5):
        r = chat(gw.data_url, limited["key"])
        assert r.status_code == 200, r.text
        assert r.headers["x-ratelimit-limit-requests"] == "5"
        left.append(int(r.headers["x-ratelimit-remaining-requests"]))
    assert left == [4, 3, 2, 1, 0], left
    r = chat(gw.data_url, limited["key"])
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited", r.text
    assert "rpm_limit" in r.json()["error"]["message"]
    assert 1 <= int(r.headers["retry-after"]) <= 13
    # Another key is not affected; the limit's interval later, one more request fits.
    assert chat(gw.data_url, free["key"]).status_code == 200
    time.sleep(int(r.headers["retry-after"]))
    assert chat(gw.data_url, limited["key"]).status_code == 200


def test_tokens_per_minute_count_the_prompt_and_the_completion_allowed(gw):
    key = gw.new_key(models=["gpt-a"], tpm_limit=300)["key"]
    gw.wait_for_key(key)
    r = chat(gw.data_url, key, max_tokens=100)
    assert r.status_code == 200, r.text
    assert r.headers["x-ratelimit-limit-tokens"] == "300"
    assert int(r.headers["x-ratelimit-remaining-tokens"]) < 200, "the prompt and the completion allowed count"
    # A request allowing more tokens than the limit holds is refused outright.
    r = chat(gw.data_url, key, max_tokens=5000)
    assert r.status_code == 429 and "tpm_limit" in r.json()["error"]["message"], r.text


def test_limits_are_checked_when_set_and_updated(gw):
    for bad in [{"rpm_limit": 0}, {"tpm_limit": 10**10}, {"rpm_limit": -1}, {"rpm_limit": "many"}]:
        r = gw.admin("POST", "/key/generate", {"models": ["gpt-a"], **bad})
        assert r.status_code == 400, (bad, r.text)
    key = gw.new_key(models=["gpt-a"], rpm_limit=5)
    r = gw.admin("POST", "/key/update", {"key_id": key["key_id"], "tpm_limit": 1000})
    assert r.status_code == 200, r.text
    assert (r.json()["info"]["rpm_limit"], r.json()["info"]["tpm_limit"]) == (5, 1000)
    info = gw.admin("GET", "/key/info", params={"key_id": key["key_id"]}).json()
    assert "1000" in str(info), info


class Redis:
    """A Redis of this test's own, on a free port (so it can be killed)."""

    def __init__(self, port=None):
        self.port = port or free_port()
        self.proc = subprocess.Popen([shutil.which("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
        wait_until(self.ready, what="redis ready")

    def ready(self):
        done = subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True)
        return done.stdout.strip() == "PONG"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def test_replicas_share_a_limit_in_redis_and_refuse_when_it_is_gone(fake_provider):
    redis = Redis()
    gw = Gateway(fake_provider, "sqlite", extra_env={"ROUTERO_REDIS_URL": f"redis://127.0.0.1:{redis.port}"})
    try:
        second = gw.start_replica("dp-second")
        warm = gw.new_key(models=["gpt-a"])["key"]
        gw.wait_for_key(warm)
        wait_until(lambda: chat(second, warm).status_code == 200, what="second replica serves")
        key = gw.new_key(models=["gpt-a"], rpm_limit=60)["key"]
        wait_until(lambda: httpx.get(second + "/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code
                   == 200 and httpx.get(gw.data_url + "/v1/models", headers={"Authorization": f"Bearer {key}"})
                   .status_code == 200, what="both replicas know the key")
        started = time.monotonic()
        with httpx.Client(timeout=20) as client:
            answers = [client.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                   json={"model": "gpt-a", "messages": [{"role": "user", "content": "hello"}]})
                       for _ in range(50) for url in (gw.data_url, second)]
        elapsed = time.monotonic() - started
        statuses = [a.status_code for a in answers]
        served = statuses.count(200)
        print(f"a burst of 100 requests over two replicas in {elapsed:.2f} s, rpm_limit 60: {served} served, "
              f"{statuses.count(429)} refused")
        # 60 at once, then one a second (GCRA): a slow burst earns one more per second it took.
        assert 60 <= served <= 61 + int(elapsed) and statuses.count(429) == 100 - served, statuses
        assert all(1 <= int(a.headers["retry-after"]) <= 2 for a in answers if a.status_code == 429)
        # A second later (a sixtieth of the minute), one more fits.
        time.sleep(1.1)
        assert chat(second, key).status_code == 200
        # Redis gone: a limited key is refused at once, never served uncounted; a key without
        # limits needs no counter.
        redis.stop()
        r = chat(gw.data_url, key)
        assert r.status_code == 503 and r.json()["error"]["code"] == "limits_unavailable", r.text
        assert chat(gw.data_url, warm).status_code == 200
        port = redis.port
        redis = Redis(port)
        wait_until(lambda: chat(second, key).status_code == 200, what="traffic flows again without a restart")
    finally:
        gw.close()
        redis.stop()
