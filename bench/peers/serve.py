"""Starts one benchmark peer in front of the fake provider and prints `listening on <url>`,
the line `routero-bench` waits for:
`serve.py tensorzero|litellm <provider base URL> <port> <log file>`.

TensorZero's gateway runs inside this process (its Python package embeds it); LiteLLM's proxy
replaces this process (one worker, callbacks off, no retries), so the process measured is the
proxy itself. Both route the model `bench` to the fake provider's `fake-model`, TensorZero
without authentication, LiteLLM with its master key only: neither authorizes, guards nor audits.
"""
import os
import sys
import tempfile
import time

# The fake provider's key (routero-bench's UPSTREAM_KEY).
UPSTREAM_KEY = "sk-upstream-bench"
# What the bench sends LiteLLM as its key (its master key: one comparison, no database).
MASTER_KEY = "sk-bench-litellm-master"


def quiet(log: str) -> int:
    """Sends the peer's own output to `log` (the bench reads one line only, and shows the log's
    end when the peer fails) and returns the standard output the bench reads, for `announce`."""
    bench = os.dup(1)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(out, 1)
    os.dup2(out, 2)
    return bench


def announce(bench: int, url: str) -> None:
    """Writes the line the bench waits for."""
    os.write(bench, f"listening on {url}\n".encode())
    os.close(bench)


def tensorzero(bench: int, provider: str, config_dir: str) -> None:
    from tensorzero.tensorzero import _start_http_gateway

    os.environ["BENCH_UPSTREAM_KEY"] = UPSTREAM_KEY

    config = os.path.join(config_dir, "tensorzero.toml")
    with open(config, "w") as f:
        f.write(
            "[models.bench]\nrouting = [\"fake\"]\n\n"
            "[models.bench.providers.fake]\ntype = \"openai\"\n"
            f"model_name = \"fake-model\"\napi_base = \"{provider}/v1/\"\n"
            "api_key_location = \"env::BENCH_UPSTREAM_KEY\"\n"
        )
    gateway = _start_http_gateway(
        config_file=config, clickhouse_url=None, postgres_url=None, valkey_url=None, async_setup=False
    )
    # Its base URL ends in /v1, which the bench adds itself.
    announce(bench, gateway.base_url.rstrip("/").removesuffix("/v1"))
    while True:
        time.sleep(3600)


def litellm(bench: int, provider: str, port: str, config_dir: str) -> None:
    config = os.path.join(config_dir, "litellm.yaml")
    with open(config, "w") as f:
        f.write(
            "model_list:\n  - model_name: bench\n    litellm_params:\n"
            f"      model: openai/fake-model\n      api_base: {provider}/v1\n"
            f"      api_key: {UPSTREAM_KEY}\n"
            "litellm_settings:\n  callbacks: []\n  num_retries: 0\n  telemetry: false\n"
            # The bench's key; LiteLLM refuses to start without one.
            f"general_settings:\n  master_key: {MASTER_KEY}\n"
        )
    announce(bench, f"http://127.0.0.1:{port}")
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR")
    litellm_bin = os.path.join(os.path.dirname(sys.executable), "litellm")
    os.execve(
        litellm_bin,
        [litellm_bin, "--config", config, "--host", "127.0.0.1", "--port", port, "--num_workers", "1"],
        env,
    )


if __name__ == "__main__":
    peer, provider, port, log = sys.argv[1:5]
    scratch = tempfile.mkdtemp(prefix=f"routero-bench-{peer}-")
    if peer == "tensorzero":
        tensorzero(quiet(log), provider, scratch)
    elif peer == "litellm":
        litellm(quiet(log), provider, port, scratch)
    else:
        sys.exit(f"unknown peer {peer}")
