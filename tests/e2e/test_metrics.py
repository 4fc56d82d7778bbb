"""The data plane's Prometheus metrics, scraped by a real Prometheus (Debian's `prometheus`) and
checked by `promtool check metrics`: a request shows up in the right series, labels stay
bounded (routes and codes, never keys or client text)."""

import shutil
import subprocess
import tempfile
from pathlib import Path

import httpx
import openai
import pytest

from conftest import REPO, Gateway, Process, free_port, wait_until
from test_policies import CERBOS

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")


@pytest.fixture(scope="module")
def gateway(fake_provider):
    gw = Gateway(fake_provider, "sqlite-split", extra_env={"ROUTERO_METRICS_ADDR": "127.0.0.1:0"})
    yield gw
    gw.close()


def metrics_url(gw):
    port = gw.processes["data-plane"].port(r"metrics listening addr=127\.0\.0\.1:(\d+)", "its metrics port")
    return f"http://127.0.0.1:{port}/metrics"


def samples(text, name):
    """`{labels: value}` of the samples of `name` in an exposition."""
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels, _, value = line.rpartition(" ")
            found[labels[len(name):]] = float(value)
    return found


def test_requests_show_up_in_their_series_and_promtool_finds_nothing_wrong(gateway, tmp_path):
    issued = gateway.new_key()
    gateway.wait_for_key(issued["key"])
    client = gateway.client(issued["key"])
    url = metrics_url(gateway)
    before = samples(httpx.get(url).text, "routero_requests_total")
    client.chat.completions.create(model="gpt-a", messages=[{"role": "user", "content": "count me"}])
    with pytest.raises(openai.APIStatusError) as unknown:
        client.chat.completions.create(model="no-such-model-f00d", messages=[{"role": "user", "content": "x"}])
    unknown_code = unknown.value.body["code"]
    with pytest.raises(openai.AuthenticationError):
        gateway.client("sk-rt-" + "x" * 43).chat.completions.create(model="gpt-a", messages=[{"role": "user", "content": "x"}])

    response = httpx.get(url)
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    after = samples(text, "routero_requests_total")
    ok = '{endpoint="chat/completions",model="gpt-a",code="ok"}'
    assert after[ok] == before.get(ok, 0) + 1
    assert after['{endpoint="chat/completions",model="unknown",code="invalid_api_key"}'] >= 1
    assert after[f'{{endpoint="chat/completions",model="unknown",code="{unknown_code}"}}'] >= 1
    # Labels are bounded: no model name a client made up, no key, no key id.
    assert "f00d" not in text and issued["key"] not in text and issued["key_id"] not in text
    assert samples(text, "routero_response_head_seconds_count")['{endpoint="chat/completions",code="ok"}'] >= 1
    assert samples(text, "routero_snapshot_version")[""] >= 1
    assert 0 <= samples(text, "routero_snapshot_age_seconds")[""] < 60

    promtool_is_content(text, tmp_path)


def promtool_is_content(text, tmp_path):
    scraped = tmp_path / "scrape.txt"
    scraped.write_text(text)
    checked = subprocess.run([PROMTOOL, "check", "metrics"], stdin=scraped.open(), capture_output=True, text=True)
    assert checked.returncode == 0 and checked.stdout.strip() == "" and checked.stderr.strip() == "", \
        checked.stdout + checked.stderr


def test_each_stage_of_a_request_shows_up_in_its_series(fake_provider, tmp_path):
    """`routero up` with policies, guardrails and an audit spool: tokens, upstream and gateway
    time, a stream's first token, guardrail findings, policy decisions (engine, then cache) and
    the audit backlog."""
    gw = Gateway(fake_provider, "sqlite-up", extra_env={
        "ROUTERO_METRICS_ADDR": "127.0.0.1:0", "ROUTERO_POLICIES_DIR": str(REPO / "policies"),
        "ROUTERO_CERBOS_BINARY": str(CERBOS), "ROUTERO_POLICY_CACHE_SETTLE": "0s"})
    try:
        client = gw.guarded_client({"rules": [{"detector": "email", "action": "redact"}]})
        port = gw.processes["up"].port(r"metrics listening addr=127\.0\.0\.1:(\d+)", "its metrics port")
        url = f"http://127.0.0.1:{port}/metrics"
        stream = client.chat.completions.create(
            model="gpt-a", stream=True, messages=[{"role": "user", "content": "write to bob@example.com"}])
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        client.chat.completions.create(model="gpt-a", messages=[{"role": "user", "content": "again"}])
        text = httpx.get(url).text

        assert samples(text, "routero_tokens_total")['{model="gpt-a",type="input"}'] > 0
        assert samples(text, "routero_tokens_total")['{model="gpt-a",type="output"}'] > 0
        assert samples(text, "routero_upstream_seconds_count")['{provider="openai",code="ok"}'] >= 2
        assert samples(text, "routero_gateway_seconds_count")['{endpoint="chat/completions"}'] >= 2
        assert samples(text, "routero_first_token_seconds_count")['{endpoint="chat/completions",model="gpt-a"}'] >= 1
        findings = samples(text, "routero_guardrail_findings_total")
        assert findings['{detector="email",action="redact",stage="request"}'] >= 2, findings
        decisions = samples(text, "routero_authz_decisions_total")
        assert decisions['{decision="allow",source="engine"}'] >= 1, decisions
        assert decisions['{decision="allow",source="cache"}'] >= 1, decisions
        assert samples(text, "routero_audit_bus_depth")[""] >= 0
        assert samples(text, "routero_audit_spool_bytes")[""] >= 0
        assert samples(text, "routero_audit_delivery_failures_total")[""] == 0
        assert "bob@example.com" not in text and "write to" not in text
        promtool_is_content(text, tmp_path)
    except BaseException:
        print(gw.logs())
        raise
    finally:
        gw.close()


def test_a_real_prometheus_scrapes_the_data_plane(gateway, tmp_path):
    issued = gateway.new_key()
    gateway.wait_for_key(issued["key"])
    gateway.client(issued["key"]).chat.completions.create(model="gpt-b", messages=[{"role": "user", "content": "scrape"}])
    target = metrics_url(gateway).removeprefix("http://").removesuffix("/metrics")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: routero-data-plane\n    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    web = f"127.0.0.1:{free_port()}"
    prometheus = Process("prometheus", [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                        f"--web.listen-address={web}"], cwd=tmp_path)
    try:
        def series():
            r = httpx.get(f"http://{web}/api/v1/query",
                          params={"query": 'routero_requests_total{model="gpt-b",code="ok"}'}, timeout=5)
            return r.json()["data"]["result"] if r.status_code == 200 else []

        wait_until(lambda: series(), timeout=30, what="Prometheus to scrape the request's series")
        [result] = series()
        assert result["metric"]["job"] == "routero-data-plane"
        assert result["metric"]["endpoint"] == "chat/completions"
        assert float(result["value"][1]) >= 1
        up = httpx.get(f"http://{web}/api/v1/query", params={"query": "up"}).json()["data"]["result"]
        assert [r["value"][1] for r in up] == ["1"]
    except BaseException:
        print(prometheus.output()[-3000:])
        raise
    finally:
        prometheus.stop()
