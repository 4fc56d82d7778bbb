"""The web console (issue 19) in a real browser: Debian's headless Chromium driven by Selenium
(not our code). People sign in through the tenant's OpenID provider (panva's oidc-provider) and
land in the console. An admin creates a key and sees it once, calls a model with it, revokes
it; markup in a key's alias is shown as text; people carry the roles their groups map to; a
deployment whose breaker opened is named on the models view and the data-plane panel. An
auditor sees the audit trail, verifies it and downloads its export, sees what the guardrails
found (never the text they matched), and cannot create keys (no button, and the API refuses).
Finance sees spend over time, budgets with the thresholds reached, and downloads spend as CSV.
Everything can be done with the keyboard alone. A Content-Security-Policy violation or any
console error fails a test; each view is saved as a screenshot in target/console-screenshots
for a person to look at."""

import datetime
import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path

import httpx
import openai
import pytest

from conftest import REPO, UPSTREAM_KEY, Gateway, wait_until
from test_policies import CERBOS
from test_scim import fresh_tenant
from test_sso import Idp, configure, tenant_id

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

SCREENSHOTS = REPO / "target" / "console-screenshots"
AXE = Path(os.environ.get("ROUTERO_CACHE", Path.home() / ".cache" / "routero")) / "axe-core-4.14.1" / "node_modules" \
    / "axe-core" / "axe.min.js"
XSS = '<img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>'
# In a prompt the e-mail guardrail redacts: it must never reach a page.
EMAIL = "jane.roe.4821@example.org"


@pytest.fixture(scope="module")
def gw(fake_provider):
    gateway = Gateway(fake_provider, "sqlite-up", extra_env={
        "ROUTERO_POLICIES_DIR": str(REPO / "policies"), "ROUTERO_CERBOS_BINARY": str(CERBOS),
        "ROUTERO_AUDIT_CHECKPOINT_INTERVAL": "1s"})
    yield gateway
    gateway.close()


@pytest.fixture(scope="module")
def prepared(gw, fake_provider):
    """A tenant with the OpenID provider configured, alice (an admin by her groups), a model of
    its own with spend, a guardrail finding and a budget spent through, and a deployment whose
    breaker is open: (its id, its admin key)."""
    idp = Idp([gw.admin_url + "/sso/oidc/callback"])
    admin, scim = fresh_tenant(gw)
    configure(gw, admin, idp)
    r = gw.admin("PUT", "/role-mappings", {"rules": [
        {"group": "gw-admins", "roles": ["admin"]}, {"group": "gw-users", "roles": ["auditor"]},
        {"group": "gw-finance", "roles": ["finance"]}], "default_roles": []}, key=admin)
    assert r.status_code == 200, r.text
    for name in ("alice", "bob", "fiona", "dora"):
        scim.create_user(f"{name}@example.test", externalId=name, active=True)
    r = gw.admin("POST", "/credentials", {"name": "fake", "provider": "openai", "api_key": UPSTREAM_KEY,
                                          "base_url": fake_provider + "/v1"}, key=admin)
    assert r.status_code == 201, r.text
    r = gw.admin("POST", "/models", {"name": "gpt-a", "deployments": [{"credential": "fake", "model": "up-a"}],
                                     "pricing": {"input_per_mtok": 2.5, "output_per_mtok": 10}}, key=admin)
    assert r.status_code == 201, r.text
    r = gw.admin("PUT", "/guardrails", {"rules": [{"detector": "email", "action": "redact"}]}, key=admin)
    assert r.status_code == 200, r.text
    # Some spend to report and a guardrail finding: a priced request with an e-mail address in
    # it, by a key then given a budget of ten micro-dollars a day, which that spend exceeds.
    issued = gw.admin("POST", "/key/generate", {"models": ["gpt-a"], "metadata": {"alias": "budgeted"}}, key=admin).json()
    gw.wait_for_key(issued["key"])
    client = openai.OpenAI(api_key=issued["key"], base_url=gw.data_url + "/v1", max_retries=0, timeout=10)
    client.chat.completions.create(model="gpt-a", messages=[{"role": "user", "content": f"priced, ask {EMAIL}"}])
    r = gw.admin("POST", "/key/update", {"key_id": issued["key_id"], "max_budget": 0.00001, "budget_duration": "1d"}, key=admin)
    assert r.status_code == 200, r.text
    wait_until(lambda: any(b["spent"] > 0 for b in gw.admin("GET", "/budgets", key=admin).json()["budgets"]),
               what="the spend in the ledger")
    # A deployment that cannot be reached: five failures in a row open its breaker, which the
    # data plane names in its next report (every 10 s of heartbeats, the version unchanged).
    r = gw.admin("POST", "/credentials", {"name": "dead", "provider": "openai", "api_key": "sk-dead",
                                          "base_url": "http://127.0.0.1:9/v1"}, key=admin)
    assert r.status_code == 201, r.text
    dead = r.json()["id"]
    r = gw.admin("POST", "/models", {"name": "gpt-down", "deployments": [{"credential": "dead", "model": "up-down"}]}, key=admin)
    assert r.status_code == 201, r.text
    down = gw.admin("POST", "/key/generate", {"models": ["gpt-down"]}, key=admin).json()["key"]
    gw.wait_for_key(down)
    seen = []

    def plane(breakers):
        """The one data plane, once it reported the version published (and breakers, or not)."""
        answer = gw.admin("GET", "/data-planes", key=admin).json()
        [plane] = answer["data_planes"]
        seen.append(plane)
        return plane["version"] == answer["version"] and bool(plane["breakers"]) == breakers
    wait_until(lambda: plane(False), what="the data plane at the published version")
    before = seen[-1]
    for _ in range(5):
        r = httpx.post(gw.data_url + "/v1/chat/completions", headers={"Authorization": f"Bearer {down}"},
                       json={"model": "gpt-down", "messages": [{"role": "user", "content": "x"}]}, timeout=10)
        assert r.status_code >= 500, r.text
    wait_until(lambda: plane(True), timeout=30, what="the open breaker reported")
    after = seen[-1]
    assert after["version"] == before["version"] and after["reported_at"] > before["reported_at"], (before, after)
    assert after["breakers"] == [{"credential_id": dead, "credential": "dead", "model": "up-down", "state": "open"}], after
    yield tenant_id(gw, admin), admin
    idp.close()


@pytest.fixture(scope="module")
def tenant(prepared):
    return prepared[0]


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1366,900",
                 "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    driver = webdriver.Chrome(options=options, service=service)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def shot(driver, name):
    """Saves the view for a person to look at, after Deque's axe-core (WCAG 2 A and AA rules:
    labels, names, contrast, structure) finds nothing wrong with it."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # The whole page, not only what a laptop's window shows at once.
    size = driver.get_window_size()
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(size["width"], max(size["height"], height + 140))
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
    driver.set_window_size(size["width"], size["height"])
    assert AXE.is_file(), "run scripts/install-axe-core.sh"
    driver.execute_script(AXE.read_text())
    violations = driver.execute_async_script("""
        const done = arguments[0];
        axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})
          .then((r) => done(r.violations.map((v) => ({id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target.join(' '))}))),
                (e) => done([{id: 'axe failed', impact: String(e), nodes: []}]));
    """)
    assert violations == [], f"{name}: {json.dumps(violations, indent=1)}"


def console_errors(driver, origin, refused=()):
    """Errors the page logged (a CSP violation is one), of the console's own origin, but the
    refusals the test provoked itself (`refused`: "<path> … <status>" of its own calls)."""
    return [entry for entry in driver.get_log("browser")
            if entry["level"] == "SEVERE" and origin in entry.get("message", "")
            and not any(path in entry["message"] and f"status of {status}" in entry["message"]
                        for path, status in refused)]


def shown(driver, element_id):
    return driver.find_element(By.ID, element_id).is_displayed()


def sign_in(browser, gw, tenant, user, lands_on):
    """Signs `user` in through the provider from the console's sign-in view; waits for the
    section `lands_on`."""
    browser.get(gw.admin_url + "/console")
    wait_until(lambda: shown(browser, "signin"), what="the sign-in view")
    browser.find_element(By.ID, "sso-tenant").send_keys(tenant)
    browser.find_element(By.ID, "sso-submit").click()
    # oidc-provider's own login form (its development interaction): any password.
    wait_until(lambda: browser.find_elements(By.NAME, "login"), timeout=20, what="the provider's login form")
    browser.find_element(By.NAME, "login").send_keys(user)
    browser.find_element(By.NAME, "password").send_keys("any")
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_until(lambda: browser.current_url.startswith(gw.admin_url + "/console") and shown(browser, lands_on),
               timeout=20, what="the console after sign-in")


def nav(browser):
    """The sections the console offers."""
    return [link.text for link in browser.find_elements(By.CSS_SELECTOR, "#nav a") if link.is_displayed()]


def api_from_page(browser, method, path):
    """(status, body) of an admin API call made by the page's own session, CSRF token included."""
    return browser.execute_async_script("""
        const [method, path, done] = arguments;
        const csrf = document.querySelector('meta[name="routero-csrf"]').content;
        fetch(path, {method, credentials: 'same-origin', headers: {'X-CSRF-Token': csrf, 'Content-Type': 'application/json'},
                     body: method === 'GET' ? undefined : '{}'})
          .then(async (r) => done([r.status, await r.text()]), (e) => done([0, String(e)]));
    """, method, path)


def test_sign_in_create_a_key_once_use_it_revoke_it(gw, tenant, browser):
    origin = gw.admin_url
    browser.get(origin + "/console")
    wait_until(lambda: shown(browser, "signin"), what="the sign-in view")
    shot(browser, "01-sign-in")
    sign_in(browser, gw, tenant, "alice", "keys")
    # Alice by the name she goes by, an admin by her groups.
    assert browser.find_element(By.ID, "who").text == f"alice@example.test (admin) in tenant {tenant}"
    assert nav(browser) == ["Keys", "Audit", "Spend", "People", "Models", "Guardrails"]
    shot(browser, "02-keys")

    alias = "probe " + XSS
    browser.find_element(By.ID, "create-alias").send_keys(alias)
    browser.find_element(By.ID, "create-models").send_keys("gpt-a")
    browser.find_element(By.ID, "create-submit").click()
    wait_until(lambda: shown(browser, "secret"), what="the new key shown")
    secret = browser.find_element(By.ID, "secret-value").text
    assert secret.startswith("sk-"), secret
    shot(browser, "03-key-shown-once")
    browser.find_element(By.ID, "secret-done").click()
    assert not shown(browser, "secret") and browser.find_element(By.ID, "secret-value").text == ""
    # Shown once: not in the page any more, nor after a reload, nor in what the admin API lists.
    browser.refresh()
    wait_until(lambda: shown(browser, "keys") and browser.find_elements(By.CSS_SELECTOR, "#keys-rows tr"),
               what="the keys listed again")
    assert secret not in browser.page_source

    # The alias is text: the markup is on screen as written and never ran.
    row = next(r for r in browser.find_elements(By.CSS_SELECTOR, "#keys-rows tr") if "probe" in r.text)
    assert row.find_elements(By.TAG_NAME, "td")[0].text == alias
    assert not row.find_elements(By.TAG_NAME, "img") and not row.find_elements(By.TAG_NAME, "script")
    assert browser.title == "Routero console"
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018
    key_id = row.find_elements(By.TAG_NAME, "td")[1].text

    gw.wait_for_key(secret)
    client = openai.OpenAI(api_key=secret, base_url=gw.data_url + "/v1", max_retries=0, timeout=10)
    reply = client.chat.completions.create(model="gpt-a", messages=[{"role": "user", "content": "from the console"}])
    assert reply.choices[0].message.content == "fake reply to: from the console"

    browser.find_element(By.CSS_SELECTOR, f'button[data-key-id="{key_id}"]').click()
    wait_until(lambda: "revoked" in browser.find_element(By.ID, "status").text, what="the revocation confirmed")
    Select(browser.find_element(By.ID, "keys-status")).select_by_value("revoked")
    wait_until(lambda: any(key_id in r.text and "revoked" in r.text
                           for r in browser.find_elements(By.CSS_SELECTOR, "#keys-rows tr")),
               what="the key listed as revoked")
    shot(browser, "04-key-revoked")

    def refused():
        try:
            client.chat.completions.create(model="gpt-a", messages=[{"role": "user", "content": "after"}])
            return False
        except openai.AuthenticationError:
            return True
    wait_until(refused, timeout=5, what="the revoked key refused")

    # Its creation, its use and its revocation in the audit trail, then the trail verified.
    browser.find_element(By.ID, "nav-audit").click()
    wait_until(lambda: shown(browser, "audit") and browser.find_elements(By.CSS_SELECTOR, "#audit-rows tr"), what="the audit view")

    def listed(events):
        """Whether the view lists each of `events` of the key; if not, asks again (at most
        twice a second: events arrive as the writer chains them)."""
        rows = browser.find_elements(By.CSS_SELECTOR, "#audit-rows tr")
        if events <= {row.find_elements(By.TAG_NAME, "td")[2].text for row in rows if key_id in row.text}:
            return True
        time.sleep(0.5)
        browser.find_element(By.ID, "audit-apply").click()
        return False
    for event in ("key.created", "request.routed", "key.revoked"):
        browser.find_element(By.ID, "audit-type").clear()
        browser.find_element(By.ID, "audit-type").send_keys(event)
        browser.find_element(By.ID, "audit-apply").click()
        wait_until(lambda: listed({event}), what=f"the key's {event} in the trail")  # noqa: B023 - used at once
    browser.find_element(By.ID, "verify").click()
    wait_until(lambda: browser.find_element(By.ID, "verify-result").text.startswith("Verified:"), timeout=20,
               what="the trail verified")
    assert console_errors(browser, origin) == []


def create_in_console(browser, **fields):
    """Creates a key through the form (`fields`: input id suffix and text); returns its
    secret, once the page shows it, and closes it."""
    for name, text in fields.items():
        browser.find_element(By.ID, f"create-{name}").send_keys(text)
    browser.find_element(By.ID, "create-submit").click()
    wait_until(lambda: shown(browser, "secret"), what="the new key shown")
    secret = browser.find_element(By.ID, "secret-value").text
    browser.find_element(By.ID, "secret-done").click()
    return secret


def test_keys_are_created_with_limits_rotated_and_revoked_in_bulk(gw, tenant, browser):
    sign_in(browser, gw, tenant, "alice", "keys")
    # A key bound to networks the test is not on: refused from here.
    fenced = create_in_console(browser, alias="fenced", models="gpt-a", cidrs="10.99.0.0/16",
                               budget="5", **{"budget-period": "30d"})
    gw.wait_for_key(fenced)
    r = httpx.post(gw.data_url + "/v1/chat/completions", headers={"Authorization": f"Bearer {fenced}"},
                   json={"model": "gpt-a", "messages": [{"role": "user", "content": "x"}]}, timeout=10)
    assert r.json()["error"]["code"] == "ip_not_allowed", r.text
    # Rotation: a new secret shown once, the old one refused.
    old = create_in_console(browser, alias="rotating", models="gpt-a")
    gw.wait_for_key(old)
    browser.find_element(By.ID, "keys-search").send_keys("rotating")
    wait_until(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#keys-rows tr")) == 1, what="the filter")
    browser.find_element(By.CSS_SELECTOR, "#keys-rows button[data-rotate]").click()
    wait_until(lambda: shown(browser, "secret") and browser.find_element(By.ID, "secret-value").text not in ("", old),
               what="the rotated secret")
    new = browser.find_element(By.ID, "secret-value").text
    browser.find_element(By.ID, "secret-done").click()
    gw.wait_for_key(new)
    wait_until(lambda: httpx.get(gw.data_url + "/v1/models", headers={"Authorization": f"Bearer {old}"}).status_code == 401,
               what="the old secret refused")
    # Bulk: every active key matching "bulk-", after a second press naming how many.
    browser.find_element(By.ID, "keys-search").clear()
    bulk = [create_in_console(browser, alias=f"bulk-{n}", models="gpt-a") for n in range(3)]
    browser.find_element(By.ID, "keys-search").send_keys("bulk-")
    wait_until(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#keys-rows tr")) == 3, what="the three keys")
    button = browser.find_element(By.ID, "keys-revoke-shown")
    assert button.text == "Revoke the 3 active keys shown"
    button.click()
    assert button.text == "Press again to revoke 3 keys"
    shot(browser, "10-bulk-revoke")
    button.click()
    wait_until(lambda: "3 keys revoked" in browser.find_element(By.ID, "status").text, what="the bulk revocation")
    for secret in bulk:
        wait_until(lambda: httpx.get(gw.data_url + "/v1/models", headers={"Authorization": f"Bearer {secret}"}).status_code == 401,
                   timeout=5, what="each bulk-revoked key refused")
    assert console_errors(browser, gw.admin_url, refused=[]) == []


def test_an_admin_sees_people_models_and_data_planes_and_edits_guardrails(gw, tenant, browser):
    sign_in(browser, gw, tenant, "alice", "keys")
    browser.find_element(By.ID, "nav-people").click()
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#sessions-rows tr"), what="people and sessions")
    users = {row.find_elements(By.TAG_NAME, "td")[1].text: [c.text for c in row.find_elements(By.TAG_NAME, "td")]
             for row in browser.find_elements(By.CSS_SELECTOR, "#users-rows tr")}
    assert users["alice@example.test"][4] == "identity provider (read-only)", users
    # Roles as her groups map them (the provider named gw-admins at sign-in); none for dora,
    # in no group a rule names, with no default role.
    assert users["alice@example.test"][5] == "admin", users
    assert users["dora@example.test"][5] == "none: no access", users
    rules = [[c.text for c in row.find_elements(By.TAG_NAME, "td")] for row in browser.find_elements(By.CSS_SELECTOR, "#mapping-rows tr")]
    assert ["gw-admins", "admin"] in rules and ["(anyone no rule matches)", "none: no access"] in rules, rules
    assert browser.find_elements(By.CSS_SELECTOR, "#sessions-rows button"), "sessions can be ended"
    shot(browser, "07-people")

    browser.find_element(By.ID, "nav-models").click()
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#planes-rows tr"), what="models, credentials and data planes")
    [model] = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#models-rows tr") if r.text.startswith("gpt-a")]
    assert "fake → up-a" in model and "2.5 / 10" in model, model
    assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in browser.find_elements(By.CSS_SELECTOR, "#credentials-rows tr")] == ["dead", "fake"]
    assert UPSTREAM_KEY not in browser.page_source, "a credential's secret is never shown"
    [down_model] = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#models-rows tr") if r.text.startswith("gpt-down")]
    assert "dead → up-down (breaker open in 1 of 1 data planes)" in down_model, down_model
    [plane] = [[c.text for c in r.find_elements(By.TAG_NAME, "td")] for r in browser.find_elements(By.CSS_SELECTOR, "#planes-rows tr")]
    assert plane[0].startswith("routero-up") and plane[1].endswith(", current") and plane[3].endswith(" s ago"), plane
    assert plane[4] == "dead → up-down: open", plane
    [card] = browser.find_elements(By.CSS_SELECTOR, "#planes-panel li")
    assert "up to date" in card.text and "1 breaker not closed" in card.text, card.text
    shot(browser, "08-models")

    browser.find_element(By.ID, "nav-guardrails").click()
    wait_until(lambda: browser.find_element(By.ID, "guardrails-text").get_attribute("value"), what="the pipeline")
    text = browser.find_element(By.ID, "guardrails-text")

    def save(pipeline):
        text.clear()
        text.send_keys(pipeline)
        browser.find_element(By.ID, "guardrails-save").click()
        wait_until(lambda: browser.find_element(By.ID, "guardrails-result").text, what="the answer to saving")
        said = browser.find_element(By.ID, "guardrails-result").text
        browser.execute_script("document.getElementById('guardrails-result').textContent = ''")
        return said
    assert save("{not json").startswith("Not JSON")
    refused = save('{"rules": [{"detector": "no-such-detector", "action": "redact"}]}')
    assert refused.startswith("Not saved:"), refused
    assert save('{"rules": [{"detector": "email", "action": "redact"}]}').startswith("Saved")
    shot(browser, "09-guardrails")
    assert gw.admin("GET", "/guardrails", key=None, headers={}).status_code == 401
    assert console_errors(browser, gw.admin_url, refused=[("/guardrails", 400)]) == []


def test_an_auditor_verifies_the_trail_and_cannot_create_keys(gw, tenant, browser):
    sign_in(browser, gw, tenant, "bob", "keys")
    assert browser.find_element(By.ID, "who").text == f"bob@example.test (auditor) in tenant {tenant}"
    assert nav(browser) == ["Keys", "Audit", "Spend", "Models", "Guardrails"]
    assert not shown(browser, "create-form"), "no key creation for an auditor"
    status, body = api_from_page(browser, "POST", "/key/generate")
    assert status == 403 and '"policy_denied"' in body, body

    browser.find_element(By.ID, "nav-audit").click()
    wait_until(lambda: shown(browser, "audit") and browser.find_elements(By.CSS_SELECTOR, "#audit-rows tr"),
               what="the audit trail")
    rows = browser.find_elements(By.CSS_SELECTOR, "#audit-rows tr")
    seqs = [int(row.find_elements(By.TAG_NAME, "td")[0].text) for row in rows]
    assert seqs == sorted(seqs, reverse=True) and seqs[-1] >= 1, "newest first, each with its place in the chain"
    assert any("login.success" in row.text for row in rows)
    def verified():
        browser.find_element(By.ID, "verify").click()
        text = browser.find_element(By.ID, "verify-result").text
        wait_until(lambda: browser.find_element(By.ID, "verify-result").text != text or text.startswith("Verified"),
                   what="an answer")
        result = browser.find_element(By.ID, "verify-result").text
        return result.startswith("Verified:") and "through seq 0." not in result
    wait_until(verified, timeout=20, what="the trail verified and signed")
    assert "hash chain intact" in browser.find_element(By.ID, "verify-result").text
    # Filtered by type, then the export the auditor may download.
    browser.find_element(By.ID, "audit-type").send_keys("login.success")
    browser.find_element(By.ID, "audit-apply").click()
    wait_until(lambda: all("login.success" in row.text for row in browser.find_elements(By.CSS_SELECTOR, "#audit-rows tr")),
               what="the filter applied")
    shot(browser, "05-audit-verified")
    assert shown(browser, "export")
    status, body = api_from_page(browser, "GET", browser.find_element(By.ID, "export").get_attribute("href"))
    assert status == 200 and '"kind":"record"' in body and '"kind":"checkpoint"' in body

    # What the guardrails found, per day, by detector and action; never the text matched. The
    # pipeline itself is not the auditor's to read.
    browser.find_element(By.ID, "nav-guardrails").click()
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#findings-rows tr"), what="the findings")
    lines = [[c.text for c in row.find_elements(By.TAG_NAME, "td")] for row in browser.find_elements(By.CSS_SELECTOR, "#findings-rows tr")]
    assert any(line[1:4] == ["request", "email", "redact"] and int(line[4]) >= 1 for line in lines), lines
    assert browser.find_elements(By.CSS_SELECTOR, "#findings-time-chart rect")
    assert "email → redact" in browser.find_element(By.ID, "findings-chart").text
    assert not shown(browser, "pipeline")
    assert EMAIL not in browser.page_source and "jane.roe" not in browser.page_source
    shot(browser, "11-guardrail-findings")
    assert console_errors(browser, gw.admin_url, refused=[("/key/generate", 403)]) == []


def test_finance_sees_spend_and_its_csv_and_nothing_else(gw, tenant, browser):
    sign_in(browser, gw, tenant, "fiona", "spend")
    assert browser.find_element(By.ID, "who").text.endswith(f"(finance) in tenant {tenant}")
    assert nav(browser) == ["Spend", "Models"]
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#budgets-rows tr"), what="spend per day and budgets")
    # Per day (today, UTC) by model, drawn by model and over time (spend and requests).
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    [row] = browser.find_elements(By.CSS_SELECTOR, "#spend-rows tr")
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    assert cells[:2] == [today, "gpt-a"] and int(cells[2]) >= 1 and float(cells[5]) > 0, cells
    assert len(browser.find_elements(By.CSS_SELECTOR, "#spend-chart rect")) == 1
    # Every day of the last 30 and today, the days without spend as zero.
    first = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=30)).date().isoformat()
    for chart, nothing in (("spend-time-chart", "0 USD"), ("requests-time-chart", "0 requests")):
        titles = [t.get_attribute("textContent") for t in browser.find_elements(By.CSS_SELECTOR, f"#{chart} rect title")]
        assert len(titles) == 31 and titles[0] == f"{first}: {nothing}", titles
        assert titles[-1].startswith(today + ": ") and titles[-1] != f"{today}: {nothing}", titles
        assert all(title.endswith(": " + nothing) for title in titles[:-1]), titles
    # The key whose budget of ten micro-dollars a day its request exceeds: every threshold
    # reached, the row marked.
    [budgeted] = [row for row in browser.find_elements(By.CSS_SELECTOR, "#budgets-rows tr")
                  if row.find_elements(By.TAG_NAME, "td")[1].text == "0.00001"]
    cells = [c.text for c in budgeted.find_elements(By.TAG_NAME, "td")]
    assert cells[0].startswith("key ") and cells[2].startswith("1d, since ") and float(cells[3]) > 0.00001, cells
    assert cells[5] == "50% reached, 80% reached, 100% reached" and "over" in budgeted.get_attribute("class"), cells
    shot(browser, "06-spend")
    status, csv = api_from_page(browser, "GET", browser.find_element(By.ID, "spend-csv").get_attribute("href"))
    assert status == 200 and csv.splitlines()[0].startswith("period,model,") and f"{today}T00:00:00Z,gpt-a," in csv, csv
    # In all, without periods.
    Select(browser.find_element(By.ID, "spend-interval")).select_by_value("")
    browser.find_element(By.ID, "spend-apply").click()
    wait_until(lambda: [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#spend-rows td")][:2] == ["in all", "gpt-a"],
               what="spend in all")
    assert not browser.find_elements(By.CSS_SELECTOR, "#spend-time-chart rect")
    # Finance reads no audit trail, verifies or exports none, and makes no keys: the API says so.
    refused = [("/audit/events", "GET"), ("/audit/verify", "POST"), ("/audit/export", "GET"), ("/key/generate", "POST"),
               ("/guardrails/findings", "GET")]
    for path, method in refused:
        assert api_from_page(browser, method, path)[0] == 403, path
    assert console_errors(browser, gw.admin_url, refused=[(path, 403) for path, _ in refused]) == []


def test_each_tenant_reads_only_its_own_budgets_findings_and_breakers(gw, prepared):
    """What the console's views read, through the admin API: another tenant's budgets, spend,
    findings and breakers never show; a role without `credential:list` gets a breaker without
    the credential's name; reports over time take bounded ranges."""
    _, admin = prepared
    other, other_scim = fresh_tenant(gw)
    r = gw.admin("PUT", "/tenant/budget", {"max_budget": 100, "budget_duration": "30d"}, key=other)
    assert r.status_code == 200, r.text
    budgets = gw.admin("GET", "/budgets", key=other).json()["budgets"]
    assert [(b["kind"], b["spent"], b["reached"]) for b in budgets] == [("tenant", 0, [])], budgets
    assert any(b["kind"] == "key" and b["spent"] > 0 for b in gw.admin("GET", "/budgets", key=admin).json()["budgets"])
    r = gw.admin("GET", "/guardrails/findings", key=other)
    assert r.status_code == 200 and r.json()["rows"] == [], r.text
    assert any(row["detector"] == "email" for row in gw.admin("GET", "/guardrails/findings", key=admin).json()["rows"])
    [plane] = gw.admin("GET", "/data-planes", key=other).json()["data_planes"]
    assert plane["breakers"] == [], "another tenant's deployments are never named"
    # No role mapping in the other tenant: its people carry no roles at all.
    other_scim.create_user("nomap@example.test", externalId="nomap", active=True)
    [user] = gw.admin("GET", "/users", key=other).json()["users"]
    assert "roles" not in user, user
    # A role that reads the tenant but lists no credentials.
    assert gw.admin("PUT", "/roles/ops", {"permissions": ["tenant:read"]}, key=admin).status_code == 200
    r = gw.admin("POST", "/admin-keys", {"name": "ops", "roles": ["ops"]}, key=admin)
    assert r.status_code == 201, r.text
    ops = r.json()["key"]
    [plane] = gw.admin("GET", "/data-planes", key=ops).json()["data_planes"]
    assert [(b["credential"], b["model"]) for b in plane["breakers"]] == [(None, "up-down")], plane
    assert gw.admin("GET", "/budgets", key=ops).status_code == 403
    assert gw.admin("GET", "/guardrails/findings", key=ops).status_code == 403
    # Ranges over time: an interval of ours, at most 31 days of hours or 366 of days.
    for path in ("/spend/report?interval=week", "/guardrails/findings?interval=week",
                 "/spend/report?interval=hour&from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z",
                 "/guardrails/findings?from=2024-01-01T00:00:00Z&to=2026-01-01T00:00:00Z"):
        r = gw.admin("GET", path, key=admin)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_query", (path, r.text)
    found = gw.admin("GET", "/guardrails/findings", key=admin).json()
    assert found["interval"] == "day" and found["truncated"] is False and found["from"] < found["rows"][0]["period"]
    tomorrow = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)).date().isoformat()
    later = gw.admin("GET", f"/spend/report?group_by=key&interval=hour&from={tomorrow}T00:00:00Z", key=admin).json()
    assert later["rows"] == [] and later["from"].startswith(tomorrow), later
    r = gw.admin("GET", f"/spend/report?group_by=key&interval=hour&to={tomorrow}T00:00:00Z&format=csv", key=admin)
    header, *lines = r.text.splitlines()
    assert header == "period,key,requests,input_tokens,cached_tokens,output_tokens,spend_usd" and lines, r.text
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:00:00Z", line.split(",")[0]) for line in lines), lines


def test_the_console_is_served_with_a_strict_policy(gw):
    for path in ("/console", "/console/assets/console.js", "/console/assets/console.css"):
        r = httpx.get(gw.admin_url + path)
        assert r.status_code == 200, path
        policy = r.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy
        assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["cache-control"] == "no-store"
    # Without a session the page carries no CSRF token; assets other than its own are not served.
    assert 'name="routero-csrf" content=""' in httpx.get(gw.admin_url + "/console").text
    assert httpx.get(gw.admin_url + "/console/assets/" + uuid.uuid4().hex).status_code == 404


def test_a_session_cookie_that_is_not_live_gets_the_sign_in_view(gw):
    r = httpx.get(gw.admin_url + "/console", cookies={"routero_session": "rses-" + "x" * 40})
    assert 'name="routero-csrf" content=""' in r.text


def session_cookie(browser):
    return {"routero_session": browser.get_cookie("routero_session")["value"]}


def test_the_session_is_guarded_against_other_sites(gw, tenant, browser):
    """What a page elsewhere could make a signed-in browser do: a change without the CSRF
    token, a download by navigation, a login into a tenant of its choosing that lands in the
    console."""
    sign_in(browser, gw, tenant, "alice", "keys")
    refused = browser.execute_async_script("""
        const done = arguments[0];
        fetch('/key/generate', {method: 'POST', credentials: 'same-origin', headers: {'Content-Type': 'application/json'}, body: '{}'})
          .then(async (r) => done([r.status, await r.text()]));
    """)
    assert refused[0] == 403 and '"csrf_failed"' in refused[1], refused
    cookie = session_cookie(browser)
    export = gw.admin_url + "/audit/export"
    r = httpx.get(export, cookies=cookie, headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed", r.text
    r = httpx.get(export, cookies=cookie, headers={"Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200 and r.headers["content-disposition"].startswith("attachment")
    assert {json.loads(line)["tenant_id"] for line in r.text.splitlines()} == {tenant}, "the caller's tenant only"
    wait_until(lambda: gw.admin("GET", "/audit/events?type=audit.exported", key=None, cookies=cookie).json()["events"],
               what="the export recorded")
    # A login another site begins never sends the browser to the console; the console's own does.
    login = gw.admin_url + "/sso/oidc/login"
    for site, returns in (("cross-site", False), ("same-origin", True)):
        r = httpx.get(login, params={"tenant": tenant, "return": "console"}, headers={"Sec-Fetch-Site": site})
        assert r.status_code == 303, r.text
        assert ("routero_return=console" in r.headers.get("set-cookie", "")) == returns, (site, r.headers)
    r = httpx.get(login, params={"tenant": tenant, "return": "https://evil.example"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_query", r.text
    assert console_errors(browser, gw.admin_url, refused=[("/key/generate", 403)]) == []


def test_markup_in_names_the_console_shows_stays_text(gw, tenant, browser):
    sign_in(browser, gw, tenant, "alice", "keys")
    cookie = session_cookie(browser)
    csrf = browser.find_element(By.CSS_SELECTOR, 'meta[name="routero-csrf"]').get_attribute("content")
    # Team and model names are refused with markup (invalid_name); a person's display name is
    # free text, as an identity provider sends it.
    r = httpx.post(gw.admin_url + "/teams", cookies=cookie, headers={"X-CSRF-Token": csrf}, json={"name": "t<b>"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_name", r.text
    r = httpx.post(gw.admin_url + "/users", cookies=cookie, headers={"X-CSRF-Token": csrf},
                   json={"user_name": "markup-person", "display_name": "person " + XSS})
    assert r.status_code == 201, r.text
    browser.find_element(By.ID, "nav-people").click()
    wait_until(lambda: any("markup-person" in row.text for row in browser.find_elements(By.CSS_SELECTOR, "#users-rows tr")),
               what="the person listed")
    row = next(row for row in browser.find_elements(By.CSS_SELECTOR, "#users-rows tr") if "markup-person" in row.text)
    assert row.find_elements(By.TAG_NAME, "td")[0].text == "person " + XSS
    assert not browser.find_elements(By.CSS_SELECTOR, "#users-rows img, #users-rows script")
    assert browser.title == "Routero console"
    assert console_errors(browser, gw.admin_url) == []


def press(browser, *keys):
    ActionChains(browser).send_keys(*keys).perform()


def tab_to(browser, selector, backwards=False, most=120):
    """Presses Tab (Shift+Tab `backwards`) until the element matching `selector` has the focus;
    the focus must be visible (an outline) at every stop on the way."""
    for _ in range(most):
        if backwards:
            ActionChains(browser).key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT).perform()
        else:
            press(browser, Keys.TAB)
        stop = browser.execute_script("""
            const e = document.activeElement;
            if (!e || e === document.body) return null;
            const s = getComputedStyle(e);
            return [e.id || e.outerHTML.slice(0, 80), s.outlineStyle, s.outlineWidth, e.matches(arguments[0])];
        """, selector)
        if stop is None:
            continue
        assert stop[1] != "none" and stop[2] != "0px", f"no visible focus on {stop[0]}"
        if stop[3]:
            return
    raise AssertionError(f"{selector} not reached with the keyboard")


def test_everything_can_be_done_with_the_keyboard_alone(gw, tenant, browser):
    """Sign in, create a key and close its secret, revoke it, verify the trail and show spend:
    Tab, Shift+Tab, typing, arrow keys, Enter and Space only, the focus visible at every stop."""
    browser.get(gw.admin_url + "/console")
    wait_until(lambda: shown(browser, "signin"), what="the sign-in view")
    tab_to(browser, "#sso-tenant")
    press(browser, tenant, Keys.ENTER)
    # The provider's own form (not ours) by keyboard too.
    wait_until(lambda: browser.find_elements(By.NAME, "login"), timeout=20, what="the provider's login form")
    browser.find_element(By.NAME, "login").send_keys("alice", Keys.TAB, "any", Keys.ENTER)
    wait_until(lambda: shown(browser, "keys"), timeout=20, what="the console after sign-in")

    tab_to(browser, "#create-alias")
    press(browser, "keyboard-made", Keys.TAB, "gpt-a", Keys.ENTER)
    wait_until(lambda: shown(browser, "secret"), what="the new key shown")
    assert browser.switch_to.active_element.get_attribute("id") == "secret-copy", "the secret's buttons take the focus"
    press(browser, Keys.TAB, Keys.ENTER)
    wait_until(lambda: not shown(browser, "secret"), what="the secret closed with Done")
    wait_until(lambda: any("keyboard-made" in r.text for r in browser.find_elements(By.CSS_SELECTOR, "#keys-rows tr")),
               what="the key listed")
    row = next(r for r in browser.find_elements(By.CSS_SELECTOR, "#keys-rows tr") if "keyboard-made" in r.text)
    key_id, models = (row.find_elements(By.TAG_NAME, "td")[i].text for i in (1, 2))
    assert models == "gpt-a", "typed into the field Tab went to"
    tab_to(browser, f'button[data-key-id="{key_id}"]')
    press(browser, Keys.ENTER)
    wait_until(lambda: f"Key {key_id} revoked." in browser.find_element(By.ID, "status").text, what="the revocation")

    tab_to(browser, "#nav-audit", backwards=True)
    press(browser, Keys.ENTER)
    wait_until(lambda: shown(browser, "audit") and browser.find_elements(By.CSS_SELECTOR, "#audit-rows tr"), what="the audit view")
    tab_to(browser, "#verify")
    press(browser, Keys.SPACE)
    wait_until(lambda: browser.find_element(By.ID, "verify-result").text.startswith("Verified:"), timeout=20,
               what="the trail verified")

    tab_to(browser, "#nav-spend", backwards=True)
    press(browser, Keys.ENTER)
    wait_until(lambda: shown(browser, "spend") and browser.find_elements(By.CSS_SELECTOR, "#spend-rows tr"), what="the spend view")
    # "In all" chosen with the arrow keys (the third choice), then shown.
    tab_to(browser, "#spend-interval")
    press(browser, Keys.DOWN, Keys.DOWN)
    assert browser.find_element(By.ID, "spend-interval").get_attribute("value") == ""
    tab_to(browser, "#spend-apply")
    press(browser, Keys.ENTER)
    wait_until(lambda: [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#spend-rows td")][:1] == ["in all"],
               what="spend in all")
    assert console_errors(browser, gw.admin_url) == []
