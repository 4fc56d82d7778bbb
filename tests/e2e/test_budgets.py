"""Budgets and spend (issue 15): route prices, `max_budget`/`budget_duration` on keys (LiteLLM's
names), budgets of teams, users and the tenant. Each request reserves its worst case before it
is sent and is settled to the provider's usage (a stream's last chunk, asked for and removed
unless the client asked); a budget without room refuses with 429 `budget_exceeded` naming it.
Settled spend lands in the ledger behind `/key/info` and `/spend/report` (JSON and CSV, for
Finance, Admin and Auditor, not Developer), and in the audit trail as `spend.debited`."""
import csv
import io
import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import CHUNKS, REPO, Gateway, wait_until
from test_limits import Redis
from test_policies import CERBOS

# A prompt token costs a millionth of a dollar, a completion token a tenth.
PRICING = {"input_per_mtok": 1.0, "output_per_mtok": 100_000.0}
# The fake provider reports one prompt token and a completion token per chunk.
ANSWER_COST = 1e-6 + CHUNKS * 0.1


def priced_model(gw, name="priced"):
    r = gw.admin("POST", "/models", {"name": name, "deployments": [{"credential": "fake", "model": "up-p"}],
                                     "pricing": PRICING})
    assert r.status_code == 201, r.text
    assert r.json()["pricing"]["output_per_mtok"] == 100_000.0


def body(model="priced", **extra):
    """A chat request as bytes, so its length (the prompt's worst case) is known."""
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "hello"}],
                       "max_tokens": CHUNKS, **extra}).encode()


def reservation(content):
    return len(content) * 1e-6 + CHUNKS * 0.1


def chat(url, key, content=None):
    return httpx.post(url + "/v1/chat/completions", content=content or body(),
                      headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}, timeout=20)


def spend_events(gw, key_id):
    found = gw.admin("GET", "/audit/events", params={"type": "spend.debited", "actor": key_id, "limit": 500})
    assert found.status_code == 200, found.text
    return [e["event"] for e in found.json()["events"]]


@pytest.fixture(scope="module")
def gw(fake_provider):
    gateway = Gateway(fake_provider, "sqlite-up", extra_env={
        "ROUTERO_POLICIES_DIR": str(REPO / "policies"), "ROUTERO_CERBOS_BINARY": str(CERBOS)})
    priced_model(gateway)
    yield gateway
    gateway.close()


def test_litellms_key_generate_with_max_budget_works_and_a_spent_budget_refuses_naming_itself(gw):
    # LiteLLM's documented request, as its users send it.
    r = gw.admin("POST", "/key/generate", {"models": ["priced"], "max_budget": 1.0, "budget_duration": "30d",
                                           "metadata": {"user": "ishaan@berri.ai"}})
    assert r.status_code == 200, r.text
    issued = r.json()
    assert (issued["max_budget"], issued["budget_duration"]) == (1.0, "30d")
    gw.wait_for_key(issued["key"])
    first = chat(gw.data_url, issued["key"])
    assert first.status_code == 200, first.text
    # What is left (1.0 - 0.700001) cannot hold another worst case (0.7 and the prompt).
    refused = chat(gw.data_url, issued["key"])
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["type"]) == ("budget_exceeded", "insufficient_quota"), error
    assert f"key:{issued['key_id']}" in error["message"], error
    # Periods are aligned to the Unix epoch (every replica agrees without talking).
    period = 30 * 86_400
    assert abs(int(refused.headers["retry-after"]) - (period - int(time.time()) % period)) <= 2
    # The spend is settled to the provider's usage, in the ledger and the audit trail.
    wait_until(lambda: gw.admin("GET", "/key/info", params={"key_id": issued["key_id"]}).json()["info"]["spend"]
               == pytest.approx(ANSWER_COST), what="the key's spend in the ledger")
    [debited] = spend_events(gw, issued["key_id"])
    assert debited["details"]["output_tokens"] == CHUNKS and debited["details"]["estimated"] is False
    assert debited["details"]["cost_micros"] == round(ANSWER_COST * 1e6)
    def details(kind, field):
        found = gw.admin("GET", "/audit/events", params={"type": kind, "actor": issued["key_id"]}).json()["events"]
        return [e["event"]["details"][field] for e in found]
    wait_until(lambda: details("budget.exceeded", "budget") == [f"key:{issued['key_id']}"],
               what="budget.exceeded naming the key's budget")
    # 70% of the budget is spent: the 50% threshold is reported, once, and no other.
    wait_until(lambda: details("budget.threshold_reached", "percent") == [50], what="the 50% threshold")
    assert chat(gw.data_url, issued["key"]).status_code == 429
    assert details("budget.threshold_reached", "percent") == [50]


def test_a_request_is_settled_to_what_the_provider_reports_not_its_reservation(gw):
    # Each request reserves 1.2 (12 completion tokens allowed) but costs 0.700001 (7 used):
    # a second fits only once the first was settled down to its usage.
    issued = gw.new_key(models=["priced"], max_budget=2.0)
    gw.wait_for_key(issued["key"])
    content = body(max_tokens=12)
    assert chat(gw.data_url, issued["key"], content).status_code == 200
    wait_until(lambda: chat(gw.data_url, issued["key"], content).status_code == 200, what="the second after settling")
    assert chat(gw.data_url, issued["key"], content).status_code == 429


def test_budgets_and_prices_are_checked(gw):
    for bad in [{"max_budget": -1}, {"max_budget": "lots"}, {"max_budget": 1e12}, {"budget_duration": "2mo"},
                {"budget_duration": "30"}, {"budget_thresholds": [0]}, {"budget_thresholds": [101]}]:
        r = gw.admin("POST", "/key/generate", {"models": ["priced"], **bad})
        assert r.status_code == 400, (bad, r.text)
    for bad in [{"input_per_mtok": -1, "output_per_mtok": 1}, {"input_per_mtok": 1},
                {"input_per_mtok": 1, "output_per_mtok": 1e9}, {"input_per_mtok": 1, "output_per_mtok": 1, "x": 1}]:
        r = gw.admin("POST", "/models", {"name": "bad-price", "deployments": [{"credential": "fake", "model": "m"}],
                                         "pricing": bad})
        assert r.status_code == 400, (bad, r.text)
    r = gw.admin("PUT", "/teams/no-such-team/budget", {"max_budget": 5})
    assert r.status_code == 404, r.text


def test_a_team_budget_is_shared_by_the_keys_of_the_team(gw):
    team = gw.admin("POST", "/teams", {"name": "budgeted"}).json()
    r = gw.admin("PUT", f"/teams/{team['id']}/budget", {"max_budget": 1.0, "budget_duration": "1mo"})
    assert r.status_code == 200, r.text
    assert r.json()["budget"]["max_budget"] == 1.0
    # Keys made after the budget: the snapshot that brings them brings it.
    first, second = (gw.new_key(models=["priced", "gpt-a"], team_id=team["id"]) for _ in range(2))
    gw.wait_for_key(first["key"])
    gw.wait_for_key(second["key"])
    assert chat(gw.data_url, first["key"]).status_code == 200
    refused = chat(gw.data_url, second["key"])
    assert refused.status_code == 429 and f"team:{team['id']}" in refused.json()["error"]["message"], refused.text
    # A model without a price costs nothing: the spent budget does not refuse it.
    assert chat(gw.data_url, second["key"], body("gpt-a")).status_code == 200
    cleared = gw.admin("PUT", f"/teams/{team['id']}/budget", {})
    assert cleared.status_code == 200, cleared.text
    wait_until(lambda: chat(gw.data_url, second["key"]).status_code == 200, what="the team budget removed")
    def updated():
        found = gw.admin("GET", "/audit/events", params={"type": "budget.updated"}).json()["events"]
        return [e for e in found if e["event"]["resource"]["id"] == team["id"]]
    wait_until(lambda: len(updated()) == 2, what="both budget changes audited")
    # The spend is the team's in the report.
    wait_until(lambda: any(row["team"] == team["id"] and row["requests"] >= 1 for row in
                           gw.admin("GET", "/spend/report", params={"group_by": "team"}).json()["rows"]),
               what="the team in the report")


def test_a_users_rate_limit_counts_every_key_of_the_user(gw):
    user = gw.admin("POST", "/users", {"user_name": "rate-limited-person"}).json()
    r = gw.admin("PUT", f"/users/{user['id']}/budget", {"rpm_limit": 2})
    assert r.status_code == 200 and r.json()["scope"] == f"user:{user['id']}", r.text
    keys = [gw.new_key(models=["priced"], user_id=user["id"])["key"] for _ in range(3)]
    gw.wait_for_key(keys[-1])
    assert [chat(gw.data_url, key).status_code for key in keys] == [200, 200, 429]
    refused = chat(gw.data_url, keys[0])
    assert f"rpm_limit of user:{user['id']}" in refused.json()["error"]["message"], refused.text


def test_the_tenant_budget_covers_every_key_and_names_itself(gw):
    # A tenant budget with no room at all: every priced request of the tenant is refused.
    assert gw.admin("PUT", "/tenant/budget", {"max_budget": 0}).status_code == 200
    try:
        issued = gw.new_key(models=["priced"])
        gw.wait_for_key(issued["key"])
        refused = chat(gw.data_url, issued["key"])
        assert refused.status_code == 429 and "tenant:" in refused.json()["error"]["message"], refused.text
    finally:
        assert gw.admin("PUT", "/tenant/budget", {}).status_code == 200
    wait_until(lambda: chat(gw.data_url, issued["key"]).status_code == 200, what="the tenant budget removed")


def test_streams_are_settled_from_their_last_chunk_which_the_client_sees_only_if_it_asked(gw):
    issued = gw.new_key(models=["priced"], max_budget=100)
    gw.wait_for_key(issued["key"])
    client = gw.client(issued["key"])
    plain = list(client.chat.completions.create(model="priced", messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=CHUNKS, stream=True))
    assert plain and all(chunk.choices for chunk in plain), "no usage chunk the client did not ask for"
    asked = list(client.chat.completions.create(model="priced", messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=CHUNKS, stream=True,
                                                stream_options={"include_usage": True}))
    assert asked[-1].usage.completion_tokens == CHUNKS and not asked[-1].choices
    wait_until(lambda: len(spend_events(gw, issued["key_id"])) == 2, what="both streams settled")
    for event in spend_events(gw, issued["key_id"]):
        assert event["details"]["estimated"] is False and event["details"]["output_tokens"] == CHUNKS, event


def test_a_client_gone_mid_stream_is_charged_its_reservation(gw):
    issued = gw.new_key(models=["priced"], max_budget=100)
    gw.wait_for_key(issued["key"])
    content = body(stream=True)
    with httpx.stream("POST", gw.data_url + "/v1/chat/completions", content=content, timeout=20,
                      headers={"Authorization": f"Bearer {issued['key']}", "Content-Type": "application/json"}) as r:
        assert r.status_code == 200
        next(r.iter_raw())  # the first chunk, then the client goes
    wait_until(lambda: spend_events(gw, issued["key_id"]), what="the abandoned stream settled")
    [event] = spend_events(gw, issued["key_id"])
    assert event["details"]["estimated"] is True, event
    assert event["details"]["cost_micros"] == round(reservation(content) * 1e6), event


def test_a_client_gone_after_the_usage_chunk_is_charged_what_the_provider_reported(gw):
    issued = gw.new_key(models=["priced"], max_budget=100)
    gw.wait_for_key(issued["key"])
    content = body(stream=True, stream_options={"include_usage": True})
    with httpx.stream("POST", gw.data_url + "/v1/chat/completions", content=content, timeout=20,
                      headers={"Authorization": f"Bearer {issued['key']}", "Content-Type": "application/json"}) as r:
        for line in r.iter_lines():
            if '"usage":{' in line.replace(" ", ""):
                break  # the usage chunk read, the client goes before [DONE]
    wait_until(lambda: spend_events(gw, issued["key_id"]), what="the stream settled")
    [event] = spend_events(gw, issued["key_id"])
    assert event["details"]["estimated"] is False, event
    assert event["details"]["cost_micros"] == round(ANSWER_COST * 1e6), event


def test_the_spend_report_matches_the_requests_and_only_finance_and_admin_read_it(gw):
    priced_model(gw, "priced-too")
    keys = [gw.new_key(models=["priced", "priced-too"], max_budget=100) for _ in range(2)]
    gw.wait_for_key(keys[1]["key"])
    made = {keys[0]["key_id"]: 3, keys[1]["key_id"]: 2}
    for issued in keys:
        for _ in range(made[issued["key_id"]]):
            assert chat(gw.data_url, issued["key"], body("priced-too")).status_code == 200

    def by_key():
        report = gw.admin("GET", "/spend/report", params={"group_by": "key"})
        assert report.status_code == 200, report.text
        return {row["key"]: row for row in report.json()["rows"]}
    wait_until(lambda: all(by_key().get(k, {}).get("requests") == n for k, n in made.items()),
               what="the requests in the report")
    rows = by_key()
    for key_id, count in made.items():
        assert rows[key_id]["spend"] == pytest.approx(count * ANSWER_COST)
        assert rows[key_id]["output_tokens"] == count * CHUNKS
    models = gw.admin("GET", "/spend/report", params={"group_by": "model"}).json()["rows"]
    assert {row["model"]: row["requests"] for row in models}["priced-too"] == 5
    csv_answer = gw.admin("GET", "/spend/report", params={"group_by": "key"}, headers={"Accept": "text/csv"})
    assert csv_answer.headers["content-type"].startswith("text/csv")
    lines = {row["key"]: row for row in csv.DictReader(io.StringIO(csv_answer.text))}
    assert set(lines) == set(rows)
    for key_id, row in rows.items():
        line = lines[key_id]
        assert [int(line[f]) for f in ("requests", "input_tokens", "cached_tokens", "output_tokens")] == \
            [row[f] for f in ("requests", "input_tokens", "cached_tokens", "output_tokens")]
        assert float(line["spend_usd"]) == pytest.approx(row["spend"])
    assert gw.admin("GET", "/spend/report", params={"group_by": "nope"}).status_code == 400
    # An hour range that ended before these requests holds none of them.
    past = gw.admin("GET", "/spend/report", params={"group_by": "key", "to": "2026-01-01T00:00:00Z"}).json()
    assert past["rows"] == [] and past["total_spend"] == 0
    for role, status in [("finance", 200), ("auditor", 200), ("developer", 403)]:
        r = gw.admin("POST", "/admin-keys", {"name": f"spend-{role}", "roles": [role]})
        assert r.status_code == 201, r.text
        answer = gw.admin("GET", "/spend/report", key=r.json()["key"], headers={"Accept": "text/csv"})
        assert answer.status_code == status, (role, answer.text)
        if status == 403:
            assert answer.json()["error"]["code"] == "policy_denied"


def test_replicas_sharing_redis_serve_a_budget_once(fake_provider):
    redis = Redis()
    url = f"redis://127.0.0.1:{redis.port}"
    gw = Gateway(fake_provider, "sqlite-up", extra_env={"ROUTERO_REDIS_URL": url})
    try:
        priced_model(gw)
        second = gw.start_replica("dp-second", ROUTERO_REDIS_URL=url)
        content = body()
        fits = 20
        budget = round(fits * reservation(content), 6)
        issued = gw.new_key(models=["priced"], max_budget=budget)
        wait_until(lambda: all(httpx.get(u + "/v1/models", headers={"Authorization": f"Bearer {issued['key']}"})
                               .status_code == 200 for u in (gw.data_url, second)), what="both replicas know the key")
        with ThreadPoolExecutor(max_workers=50) as pool:
            answers = list(pool.map(lambda i: chat((gw.data_url, second)[i % 2], issued["key"], content), range(200)))
        served = [a for a in answers if a.status_code == 200]
        refused = [a for a in answers if a.status_code == 429]
        spent = sum(a.json()["usage"]["prompt_tokens"] * 1e-6 + a.json()["usage"]["completion_tokens"] * 0.1
                    for a in served)
        print(f"200 concurrent requests over two replicas, a budget of USD {budget} fitting {fits}: "
              f"{len(served)} served, {len(refused)} refused, USD {spent:.6f} settled")
        assert len(served) + len(refused) == 200
        assert all(a.json()["error"]["code"] == "budget_exceeded" for a in refused)
        assert abs(len(served) - fits) <= 1
        assert spent <= budget + reservation(content)
        # What the counter in Redis settled to: the provider's usage of each request served,
        # nothing of the refused, no reservation left.
        counter = f"budget:key:{issued['key_id']}:0"

        def held(field):
            done = subprocess.run(["redis-cli", "-p", str(redis.port), "HGET", counter, field],
                                  capture_output=True, text=True)
            return int(done.stdout.strip() or 0)
        wait_until(lambda: held("reserved") == 0, what="every reservation settled")
        print(f"settled in Redis: {held('spent')} micro-dollars of a budget of {round(budget * 1e6)}")
        assert held("spent") == len(served) * round(ANSWER_COST * 1e6)

        # Redis gone: a counted request is refused at once, never served uncounted...
        limited = gw.new_key(models=["priced"], rpm_limit=1000)
        gw.wait_for_key(limited["key"])
        assert chat(gw.data_url, limited["key"]).status_code == 200
        redis.stop()
        r = chat(gw.data_url, limited["key"])
        assert r.status_code == 503 and r.json()["error"]["code"] == "limits_unavailable", r.text
        # ...unless its tenant chose fail_open: then it is served, and audited as such.
        r = gw.admin("PUT", "/tenant/budget", {"fail_open": True})
        assert r.status_code == 200 and r.json()["budget"]["fail_open"] is True, r.text
        assert gw.admin("PUT", "/teams/any/budget", {"fail_open": True}).status_code == 400
        wait_until(lambda: chat(gw.data_url, limited["key"]).status_code == 200, what="served failing open")
        failed_open = gw.admin("GET", "/audit/events", params={"type": "limits.failed_open",
                                                               "actor": limited["key_id"]}).json()["events"]
        assert failed_open and all(e["event"]["reason_code"] == "limits_unavailable" for e in failed_open)
        assert gw.admin("PUT", "/tenant/budget", {}).status_code == 200
        wait_until(lambda: chat(gw.data_url, limited["key"]).status_code == 503, what="failing closed again")
        redis = Redis(redis.port)
        wait_until(lambda: chat(second, limited["key"]).status_code == 200, what="traffic back without a restart")
    finally:
        gw.close()
        redis.stop()
