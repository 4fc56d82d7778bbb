"""Every data-plane request decided by the Cerbos policies (the real binary, started by
`routero up` on a copy of the repository's policies), through the official openai SDK:
model rules by role, tags spelled otherwise still deciding, failing closed while Cerbos is down
or when the snapshot carries no policies, and policy edits without a restart."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import openai
import pytest

from conftest import BIN_DIR, REPO, Gateway, Process, clean_env, free_port, wait_until

CERBOS = Path(os.environ.get("ROUTERO_CACHE", Path.home() / ".cache" / "routero")) / "bin" / "cerbos"


@contextlib.contextmanager
def governed_gateway(fake_provider, tmp_path, **env):
    """`routero up` on a copy of the policies, with a premium and a staging model; yields the
    gateway and the policy directory."""
    # A copy to edit (Cerbos ignores changes under hidden directories; pytest's are not).
    policies = tmp_path / "policies"
    shutil.copytree(REPO / "policies", policies)
    gw = Gateway(fake_provider, "sqlite-up", extra_env={
        "ROUTERO_POLICIES_DIR": str(policies), "ROUTERO_CERBOS_BINARY": str(CERBOS), **env})
    try:
        for name, tags in [("premium", {"tier": "premium"}), ("staging", {"env": "staging"})]:
            r = gw.admin("POST", "/models", {"name": name, "tags": tags,
                                             "deployments": [{"credential": "fake", "model": "up-" + name}]})
            assert r.status_code == 201 and r.json()["tags"] == tags, r.text
        yield gw, policies
    finally:
        gw.close()


@pytest.fixture
def governed(fake_provider, tmp_path):
    with governed_gateway(fake_provider, tmp_path) as governed:
        yield governed


def kill_cerbos(gw):
    """Kills the Cerbos that this gateway's `routero up` runs, by its process id (`routero up`
    restarts it within a second or so)."""
    up = gw.processes["up"].proc.pid
    children = [int(pid) for task in Path(f"/proc/{up}/task").iterdir()
                for pid in (task / "children").read_text().split()]
    cerbos = [pid for pid in children if b"cerbos" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(cerbos) == 1, (children, cerbos)
    os.kill(cerbos[0], signal.SIGKILL)


def client_with(gw, roles):
    issued = gw.new_key(roles=roles)
    assert issued["roles"] == roles
    gw.wait_for_key(issued["key"])
    return gw.client(issued["key"])


def chat(client, model):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])


def served(client, model):
    """Whether the request is served (False when refused with any status)."""
    try:
        return bool(chat(client, model).model)
    except openai.APIStatusError:
        return False


def refused_code(client, model):
    with pytest.raises(openai.APIStatusError) as refused:
        chat(client, model)
    return refused.value.status_code, refused.value.response.json()["error"]["code"]


def premium_for_managers_only(gw, name, tags):
    """Creates the model `name` with `tags` and shows it served to a manager and refused to a
    developer; returns the model as created and the developer's client."""
    r = gw.admin("POST", "/models", {"name": name, "tags": tags,
                                     "deployments": [{"credential": "fake", "model": "up-" + name}]})
    assert r.status_code == 201, r.text
    developer = client_with(gw, ["developer"])
    manager = client_with(gw, ["developer", "manager"])
    wait_until(lambda: served(manager, name), what=f"{name} in the data plane")
    assert refused_code(developer, name) == (403, "policy_denied")
    return r.json(), developer


def test_models_follow_roles_through_policy_alone(governed):
    gw, _ = governed
    developer = client_with(gw, ["developer"])
    manager = client_with(gw, ["developer", "manager"])
    qa = client_with(gw, ["developer", "qa"])

    assert chat(developer, "gpt-a").choices[0].message.content
    no_roles = client_with(gw, [])
    assert chat(no_roles, "gpt-a").model, "a key without roles acts as a plain member of its tenant"
    assert refused_code(no_roles, "premium") == (403, "policy_denied")
    assert refused_code(developer, "premium") == (403, "policy_denied")
    assert chat(manager, "premium").model
    assert refused_code(developer, "staging") == (403, "policy_denied")
    assert refused_code(manager, "staging") == (403, "policy_denied")
    assert chat(qa, "staging").model

    def blocked_with_version():
        events = gw.admin("GET", "/audit/events", params={"type": "request.blocked"}).json()["events"]
        return [e["event"] for e in events
                if e["event"]["reason_code"] == "policy_denied" and e["event"].get("policy_version")]
    wait_until(lambda: len(blocked_with_version()) >= 3, what="refusals audited with the policy version")
    assert blocked_with_version()[0]["policy_version"].startswith("sha256:")


def test_a_tag_spelled_otherwise_still_decides(governed):
    """A model tagged "Premium" used to be open to every key: the rule reads "premium"."""
    gw, _ = governed
    model, _ = premium_for_managers_only(gw, "shouted", {"Tier": " Premium "})
    assert model["tags"] == {"tier": "premium"}


def test_cerbos_down_fails_closed_and_traffic_recovers(governed):
    gw, _ = governed
    fresh = client_with(gw, ["developer"])  # no cached decision for this key
    kill_cerbos(gw)
    assert refused_code(fresh, "gpt-a") == (503, "policy_engine_unavailable")
    wait_until(lambda: served(fresh, "gpt-a"), timeout=20, what="traffic to recover once Cerbos is back")


SETTLE = 5  # seconds a new policy version's decisions are asked afresh, not cached


def test_a_policy_edit_changes_the_decision_without_restart(fake_provider, tmp_path):
    """A refusal cached under the old policy version gives way to the edited policy's decision
    (the new version empties the decision cache), without a restart."""
    with governed_gateway(fake_provider, tmp_path, ROUTERO_POLICY_CACHE_SETTLE=f"{SETTLE}s") as (gw, policies):
        developer = client_with(gw, ["developer"])
        fresh = client_with(gw, ["developer"])
        # The first decision under this version opens its settle window; one asked past it is
        # kept. (A time window, not a state to poll for: nothing shows it but its effect below.)
        assert refused_code(developer, "premium") == (403, "policy_denied")
        time.sleep(SETTLE + 0.5)
        assert refused_code(developer, "premium") == (403, "policy_denied")
        # Cached: with Cerbos down, the refusal is still answered while a decision never asked
        # before fails closed (asked second, which shows Cerbos was down for the first).
        kill_cerbos(gw)
        assert refused_code(developer, "premium") == (403, "policy_denied")
        assert refused_code(fresh, "gpt-a") == (503, "policy_engine_unavailable")
        wait_until(lambda: served(fresh, "gpt-a"), timeout=20, what="Cerbos back")
        assert refused_code(developer, "premium") == (403, "policy_denied")

        # ...and developers may invoke premium models from now on.
        model = policies / "resources" / "model.yaml"
        edited = model.read_text().replace(
            "derivedRoles: [tenant_manager]\n      condition:\n        match:\n          expr: V.known && V.premium && !V.staging",
            "derivedRoles: [tenant_developer]\n      condition:\n        match:\n          expr: V.known && V.premium && !V.staging")
        assert edited != model.read_text()
        staged = policies / "model.yaml.new"
        staged.write_text(edited)
        staged.replace(model)
        wait_until(lambda: served(developer, "premium"), timeout=30, what="the edited policy to decide")

        def policy_changes():
            out = subprocess.run([str(BIN_DIR / "routero"), "audit", "export"], capture_output=True, text=True,
                                 check=True, env=clean_env({"ROUTERO_DATA_DIR": str(gw.dir / "data")})).stdout
            return [line["event"] for line in map(json.loads, out.splitlines())
                    if line["kind"] == "record" and line["event"]["action"] == "policy.changed"]
        wait_until(lambda: len(policy_changes()) == 1, what="policy.changed audited")
        change = policy_changes()[0]
        old, new = change["details"]["old_version"], change["details"]["new_version"]
        assert old.startswith("sha256:") and new.startswith("sha256:") and old != new == change["policy_version"]


@contextlib.contextmanager
def cerbos_sidecar(tmp_path):
    """A Cerbos server on the repository's policies; yields its gRPC address."""
    http_port, grpc_port = free_port(), free_port()
    (tmp_path / "cerbos.yaml").write_text(
        f'server:\n  httpListenAddr: "127.0.0.1:{http_port}"\n  grpcListenAddr: "127.0.0.1:{grpc_port}"\n'
        f'storage:\n  driver: disk\n  disk:\n    directory: "{REPO / "policies"}"\n'
        'telemetry:\n  disabled: true\n')
    sidecar = Process("cerbos", [str(CERBOS), "server", f"--config={tmp_path / 'cerbos.yaml'}"], cwd=tmp_path)
    try:
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{http_port}/_cerbos/health").status_code == 200,
                   what="cerbos sidecar")
        yield f"127.0.0.1:{grpc_port}"
    finally:
        sidecar.stop()


def test_split_planes_ask_a_cerbos_sidecar(fake_provider, tmp_path):
    """Control plane with the policies, both planes asking a Cerbos sidecar."""
    with cerbos_sidecar(tmp_path) as cerbos:
        gw = Gateway(fake_provider, "postgres", extra_env={"ROUTERO_CERBOS_ADDR": cerbos},
                     cp_env={"ROUTERO_POLICIES_DIR": str(REPO / "policies"), "ROUTERO_CERBOS_ADDR": cerbos})
        try:
            _, developer = premium_for_managers_only(gw, "premium", {"tier": "premium"})
            assert served(developer, "gpt-a")
        finally:
            gw.close()


def test_a_data_plane_with_a_policy_engine_never_skips_it(fake_provider, tmp_path):
    """A control plane without policies publishes no policy version: a data plane configured
    with a policy engine refuses rather than serving undecided."""
    with cerbos_sidecar(tmp_path) as cerbos:
        gw = Gateway(fake_provider, "sqlite", extra_env={"ROUTERO_CERBOS_ADDR": cerbos})
        try:
            developer = client_with(gw, ["developer"])
            assert refused_code(developer, "gpt-a") == (503, "policy_engine_unavailable")
        finally:
            gw.close()
