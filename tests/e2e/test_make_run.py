"""`make run` exactly as a new user types it: from the repository root, with the default
(relative) data directory and policies, then the README's quickstart run as written against it.

Only the ports (the defaults may be taken on a test machine) and the provider's address (the
fake provider instead of api.openai.com) differ from what the README says."""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import httpx
import openai
import pytest

from conftest import REPO, UPSTREAM_KEY, clean_env, free_port, wait_until


def quickstart(admin_port, data_port, fake_url, admin_key):
    """The README's quickstart block, pointed at this gateway and the fake provider."""
    section = (REPO / "README.md").read_text().split("## Quickstart", 1)[1]
    script = section.split("```sh\n", 1)[1].split("```", 1)[0]
    assert "localhost:8081" in script and "localhost:8080" in script, script
    script = script.replace("localhost:8081", f"127.0.0.1:{admin_port}")
    script = script.replace("localhost:8080", f"127.0.0.1:{data_port}")
    script = script.replace("https://api.openai.com/v1", fake_url + "/v1")
    script, replaced = re.subn(r"^ADMIN=.*$", f"ADMIN={admin_key}", script, count=1, flags=re.M)
    assert replaced == 1, "the quickstart starts from the admin key make run printed"
    return "set -euo pipefail\n" + script + '\nprintf "\\nKEY=%s\\n" "$KEY"\n'


def test_make_run_from_a_fresh_checkout_serves_the_quickstart(fake_provider):
    data = REPO / "data"
    if data.exists():
        pytest.skip("./data exists (a make run of your own): this test starts from none")
    admin_port, grpc_port, data_port = free_port(), free_port(), free_port()
    env = clean_env({
        "ROUTERO_CONTROL_PLANE_ADDR": f"127.0.0.1:{admin_port}",
        "ROUTERO_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
        "ROUTERO_DATA_PLANE_ADDR": f"127.0.0.1:{data_port}",
        "OPENAI_API_KEY": UPSTREAM_KEY,
    })
    if "ROUTERO_CACHE" in os.environ:  # where `make` finds Cerbos, as in the caller's make
        env["ROUTERO_CACHE"] = os.environ["ROUTERO_CACHE"]
    out = tempfile.TemporaryFile(mode="w+")
    make = subprocess.Popen(["make", "run"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)

    def printed():
        out.seek(0)
        return out.read()

    try:
        deadline = time.monotonic() + 300  # make run builds first
        while "admin key:" not in printed():
            assert make.poll() is None, f"make run exited with {make.returncode}:\n{printed()}"
            assert time.monotonic() < deadline, f"make run printed no admin key:\n{printed()}"
            time.sleep(0.1)
        admin_key = re.search(r"admin key:\s+(sk-rtadm-\S+)", printed()).group(1)
        assert f"OpenAI API:     http://127.0.0.1:{data_port}/v1" in printed()
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{data_port}/readyz").status_code == 200,
                   what="data plane ready")
        console = re.search(r"console:\s+(http://127\.0\.0\.1:\d+/console)", printed()).group(1)
        assert "Content-Security-Policy" in httpx.get(console).headers
        assert (data / "cerbos" / "cerbos.yaml").is_file(), "Cerbos runs on ./policies in ./data/cerbos"

        done = subprocess.run(["bash", "-c", quickstart(admin_port, data_port, fake_provider, admin_key)],
                              capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert '"object":"chat.completion"' in done.stdout, done.stdout
        assert "fake reply to: Hello" in done.stdout, "the provider answered through the gateway"
        assert '"group_by":"model"' in done.stdout, "the spend report answered"
        key = re.search(r"^KEY=(sk-rt-\S+)$", done.stdout, re.M).group(1)
        # Step 5 revoked the key: the data plane refuses it.
        client = openai.OpenAI(api_key=key, base_url=f"http://127.0.0.1:{data_port}/v1", max_retries=0)

        def refused():
            try:
                client.models.list()
            except openai.AuthenticationError:
                return True
            return False
        wait_until(refused, timeout=5, what="the revoked key to be refused")
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGTERM)
            try:
                make.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(make.pid, signal.SIGKILL)
                make.wait()
        shutil.rmtree(data, ignore_errors=True)
