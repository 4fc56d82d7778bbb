"""Budgets and spend (issue 15): route prices, `max_budget`/`budget_duration` on keys (LiteLLM's
names), budgets of teams, users and the tenant. Each request reserves its worst case before it
is sent and is settled to the provider's usage (a stream's last chunk, asked for and removed
unless the client asked); a budget without room refuses with 429 `budget_exceeded` naming it.
Settled spend lands in the ledger behind `/key/info` and `/spend/report` (JSON and CSV, Finance
and Admin only), and in the audit trail as `spend.debited`."""
import csv
import io
import json
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
    assert int(refused.headers["retry-after"]) <= 30 * 86_400
    # The spend is settled to the provider's usage, in the ledger and the audit trail.
    wait_until(lambda: gw.admin("GET", "/key/info", params={"key_id": issued["key_id"]}).json()["info"]["spend"]
               == pytest.approx(ANSWER_COST), what="the key's spend in the ledger")
    [debited] = spend_events(gw, issued["key_id"])
    assert debited["details"]["output_tokens"] == CHUNKS and debited["details"]["estimated"] is False
    assert debited["details"]["cost_micros"] == round(ANSWER_COST * 1e6)
    exceeded = gw.admin("GET", "/audit/events", params={"type": "budget.exceeded", "actor": issued["key_id"]}).json()
    assert [e["event"]["details"]["budget"] for e in exceeded["events"]] == [f"key:{issued['key_id']}"]
    # 70% of the budget is spent: the 50% threshold is reported, once.
    reached = gw.admin("GET", "/audit/events", params={"type": "budget.threshold_reached",
                                                       "actor": issued["key_id"]}).json()["events"]
    assert [e["event"]["details"]["percent"] for e in reached] == [50], reached


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
    updated = gw.admin("GET", "/audit/events", params={"type": "budget.updated"}).json()["events"]
    assert len([e for e in updated if e["event"]["resource"]["id"] == team["id"]]) == 2


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
    assert float(lines[keys[0]["key_id"]]["spend_usd"]) == pytest.approx(3 * ANSWER_COST)
    assert gw.admin("GET", "/spend/report", params={"group_by": "nope"}).status_code == 400
    for role, status in [("finance", 200), ("developer", 403)]:
        r = gw.admin("POST", "/admin-keys", {"name": f"spend-{role}", "roles": [role]})
        assert r.status_code == 201, r.text
        answer = gw.admin("GET", "/spend/report", key=r.json()["key"])
        assert answer.status_code == status, (role, answer.text)


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
    finally:
        gw.close()
        redis.stop()
