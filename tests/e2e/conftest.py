"""End-to-end fixtures: the real `routero` binary, real PostgreSQL, the fake provider from
routero-testkit (the only fake), and the official `openai` SDK as the client."""

import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import httpx
import openai
import pytest

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("ROUTERO_BIN_DIR", REPO / "target" / "debug"))
POSTGRES = os.environ.get("ROUTERO_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")
UPSTREAM_KEY = "sk-upstream-" + uuid.uuid4().hex
ADMIN_KEY = "sk-rtadm-e2e-" + uuid.uuid4().hex
CHUNKS = 7
CHUNK_INTERVAL_MS = 50


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A child process whose output goes to a log file, shown when a test fails."""

    def __init__(self, name, args, env=None, cwd=None):
        self.name = name
        self.log_path = Path(tempfile.mkstemp(prefix=f"routero-{name}-", suffix=".log")[1])
        self.log = open(self.log_path, "w")
        full_env = clean_env(env)
        full_env.setdefault("RUST_LOG", "info")
        self.proc = subprocess.Popen(args, env=full_env, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT)

    def output(self):
        return self.log_path.read_text()

    def port(self, pattern, what):
        """The port the process says it bound (`pattern`'s first group, in its output without
        colours), waiting for it to say so."""
        found = []

        def said():
            text = re.sub(r"\x1b\[[0-9;]*m", "", self.output())
            found[:] = re.findall(pattern, text)
            return bool(found) or self.proc.poll() is not None
        wait_until(said, what=what)
        assert found, f"{self.name} never said {what}:\n{self.output()[-3000:]}"
        return int(found[-1]) if isinstance(found[-1], str) else tuple(int(p) for p in found[-1])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def wait_until(check, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as error:  # noqa: BLE001 - retried until the deadline
            last = error
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}: {last}")


def listening_ports(pid):
    """The TCP ports the process `pid` listens on: its sockets (/proc/PID/fd) in the LISTEN
    state of /proc/net/tcp{,6}."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def ready(url, verify=True):
    return httpx.get(url, timeout=2, verify=verify).status_code == 200


@pytest.fixture(scope="session")
def fake_provider():
    proc = subprocess.Popen(
        [str(BIN_DIR / "routero-fake-provider"), "--port", "0", "--api-key", UPSTREAM_KEY,
         "--chunks", str(CHUNKS), "--chunk-interval-ms", str(CHUNK_INTERVAL_MS)],
        stdout=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline().strip()
    assert line.startswith("listening on "), line
    yield line.removeprefix("listening on ")
    proc.terminate()
    proc.wait(timeout=10)


def clean_env(extra=None):
    """This environment without ROUTERO_* variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTERO_")}
    env.update(extra or {})
    return env


def routero(*args, env=None):
    """Runs a `routero` command to completion and returns its standard output."""
    return subprocess.run([str(BIN_DIR / "routero"), *args], env=clean_env(env), check=True,
                          capture_output=True, text=True).stdout


def secret():
    return routero("admin", "generate-secret").strip()


def create_postgres_database():
    name = "routero_e2e_" + uuid.uuid4().hex[:12]
    subprocess.run(["psql", f"{POSTGRES}/postgres", "-q", "-c", f"CREATE DATABASE {name}"], check=True)
    return f"{POSTGRES}/{name}"


class Gateway:
    """A running Routero: either `routero up` (SQLite) or separate control and data planes."""

    def __init__(self, fake_url, mode, extra_env=None, cp_env=None, ca=None):
        """With `ca`, the listeners whose certificates the environments set are HTTPS,
        verified against that CA file."""
        self.mode = mode
        self.verify = ssl.create_default_context(cafile=str(ca)) if ca else True
        self.fake_url = fake_url
        self.dir = Path(tempfile.mkdtemp(prefix="routero-e2e-"))
        # Services bind port 0 and say which port they got (no port picked here, released,
        # then taken by someone else first); restarts reuse the ports they said.
        self.admin_port = self.grpc_port = self.data_port = 0
        self.extra_env = extra_env or {}
        self.processes = {}
        if mode == "sqlite-up":
            self.up_env = {
                "ROUTERO_DATA_DIR": str(self.dir / "data"),
                "ROUTERO_ADMIN_KEY": ADMIN_KEY,
                "ROUTERO_DATA_PLANE_ADDR": "127.0.0.1:0",
                "ROUTERO_CONTROL_PLANE_ADDR": "127.0.0.1:0",
                "ROUTERO_GRPC_ADDR": "127.0.0.1:0",
                **self.extra_env,
            }
            self.start("up", self.up_env)
        else:
            self.data_plane_key = secret()
            self.cp_env = {
                "ROUTERO_DATABASE_URL": create_postgres_database() if mode == "postgres" else f"sqlite://{self.dir}/cp.db",
                "ROUTERO_ADMIN_KEY": ADMIN_KEY,
                "ROUTERO_PEPPER": secret(),
                "ROUTERO_MASTER_KEYS": "1:" + secret(),
                "ROUTERO_DATA_PLANE_KEY": self.data_plane_key,
                "ROUTERO_CONTROL_PLANE_ADDR": "127.0.0.1:0",
                "ROUTERO_GRPC_ADDR": "127.0.0.1:0",
                "ROUTERO_HEARTBEAT_INTERVAL": "1s",
                # The fake provider is on loopback, which split planes refuse unless allowed.
                "ROUTERO_EGRESS_ALLOW": "127.0.0.1/32",
                # Split planes without a broker: only for tests that are not about the audit pipeline.
                **({} if "ROUTERO_KAFKA_BROKERS" in (cp_env or {}) else {"ROUTERO_ALLOW_UNAUDITED": "true"}),
                **(cp_env or {}),
            }
            self.start_control_plane()
            self.start_data_plane()
        try:
            wait_until(lambda: ready(self.admin_url + "/readyz", self.verify), what="control plane ready")
            wait_until(lambda: ready(self.data_url + "/readyz", self.verify), what="data plane ready")
        except AssertionError as error:
            logs = self.logs()
            self.close()
            raise AssertionError(f"{error}\n{logs}") from None
        self.setup_catalog()

    def start(self, command, env):
        process = Process(command, [str(BIN_DIR / "routero"), command], env=env, cwd=self.dir)
        self.processes[command] = process
        if command == "up" and not self.data_port:
            self.admin_port = process.port(r"admin API: +https?://127\.0\.0\.1:(\d+)", "its admin API")
            self.data_port = process.port(r"OpenAI API: +https?://127\.0\.0\.1:(\d+)", "its OpenAI API")
            env.update({"ROUTERO_DATA_PLANE_ADDR": f"127.0.0.1:{self.data_port}",
                        "ROUTERO_CONTROL_PLANE_ADDR": f"127.0.0.1:{self.admin_port}"})

    def scheme(self, certificate):
        """https when the services' environment sets `certificate`."""
        env = self.up_env if self.mode == "sqlite-up" else {**self.cp_env, **self.extra_env}
        return "https" if certificate in env else "http"

    @property
    def admin_url(self):
        return f"{self.scheme('ROUTERO_ADMIN_TLS_CERT')}://127.0.0.1:{self.admin_port}"

    @property
    def data_url(self):
        return f"{self.scheme('ROUTERO_TLS_CERT')}://127.0.0.1:{self.data_port}"

    def start_control_plane(self):
        self.start("control-plane", self.cp_env)
        if not self.admin_port:
            self.admin_port, self.grpc_port = self.processes["control-plane"].port(
                r"control plane listening admin=127\.0\.0\.1:(\d+) grpc=127\.0\.0\.1:(\d+)", "where it listens")
            self.cp_env.update({"ROUTERO_CONTROL_PLANE_ADDR": f"127.0.0.1:{self.admin_port}",
                                "ROUTERO_GRPC_ADDR": f"127.0.0.1:{self.grpc_port}"})

    def start_data_plane(self, **overrides):
        env = {
            "ROUTERO_CONTROL_PLANE_URL": f"http://127.0.0.1:{self.grpc_port}",
            "ROUTERO_DATA_PLANE_KEY": self.data_plane_key,
            "ROUTERO_DATA_PLANE_ADDR": f"127.0.0.1:{self.data_port}",
            "ROUTERO_SNAPSHOT_PATH": str(self.dir / "snapshot.bin"),
            "ROUTERO_NODE_ID": "e2e-dp",
            "ROUTERO_EGRESS_ALLOW": "127.0.0.1/32",
            **({} if "ROUTERO_KAFKA_BROKERS" in self.extra_env else {"ROUTERO_ALLOW_UNAUDITED": "true"}),
            **self.extra_env,
            **overrides,
        }
        env = {name: value.format(grpc_port=self.grpc_port) for name, value in env.items()}
        self.start("data-plane", env)
        if not self.data_port:
            self.data_port = self.processes["data-plane"].port(r"data plane listening addr=127\.0\.0\.1:(\d+)",
                                                               "where it listens")

    def stop(self, command):
        self.processes.pop(command).stop()

    def start_replica(self, name, **env_overrides):
        """Another data plane, `routero data-plane` named `name`, on this gateway's control plane
        (either mode: `routero up` serves data planes on its gRPC port too), with `env_overrides`;
        returns its URL once it is ready. `close()` stops it with the rest."""
        if self.mode == "sqlite-up":
            # `routero up` says where its admin and OpenAI APIs listen, not its gRPC port: it is
            # the third port the process listens on. Its Cerbos, if any, is the one it started.
            grpc = listening_ports(self.processes["up"].proc.pid) - {self.admin_port, self.data_port}
            assert len(grpc) == 1, f"routero up listens on {grpc} besides its APIs"
            grpc_port = grpc.pop()
            key = (self.dir / "data" / "data-plane.key").read_text().strip()
            cerbos_yaml = self.dir / "data" / "cerbos" / "cerbos.yaml"
            cerbos = re.search(r'grpcListenAddr: "([^"]+)"', cerbos_yaml.read_text()).group(1) \
                if cerbos_yaml.exists() else None
            extra = {"ROUTERO_CERBOS_ADDR": cerbos} if cerbos else {}
        else:
            grpc_port, key = self.grpc_port, self.data_plane_key
            extra = {**self.extra_env}
        env = {
            "ROUTERO_CONTROL_PLANE_URL": f"http://127.0.0.1:{grpc_port}",
            "ROUTERO_DATA_PLANE_KEY": key,
            "ROUTERO_DATA_PLANE_ADDR": "127.0.0.1:0",
            "ROUTERO_SNAPSHOT_PATH": str(self.dir / f"{name}-snapshot.bin"),
            "ROUTERO_NODE_ID": name,
            "ROUTERO_EGRESS_ALLOW": "127.0.0.1/32",
            **({} if "ROUTERO_KAFKA_BROKERS" in extra else {"ROUTERO_ALLOW_UNAUDITED": "true"}),
            **extra,
            **env_overrides,
        }
        process = Process(name, [str(BIN_DIR / "routero"), "data-plane"], env=env, cwd=self.dir)
        self.processes[name] = process
        port = process.port(r"data plane listening addr=127\.0\.0\.1:(\d+)", "where it listens")
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: ready(url + "/readyz"), what=f"{name} ready")
        return url

    def close(self):
        for proc in list(self.processes.values()):
            proc.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def logs(self):
        return "\n".join(f"--- {p.name} ---\n{p.output()[-4000:]}" for p in self.processes.values())

    def admin(self, method, path, body=None, key=ADMIN_KEY, **kwargs):
        headers = {**({"Authorization": f"Bearer {key}"} if key else {}), **kwargs.pop("headers", {})}
        return httpx.request(method, self.admin_url + path, json=body, headers=headers, timeout=10,
                             verify=self.verify, **kwargs)

    def setup_catalog(self):
        r = self.admin("POST", "/credentials", {
            "name": "fake", "provider": "openai", "api_key": UPSTREAM_KEY, "base_url": self.fake_url + "/v1",
        })
        assert r.status_code == 201, r.text
        assert "api_key" not in r.json() and UPSTREAM_KEY not in r.text
        for name, upstream in [("gpt-a", "up-a"), ("gpt-b", "up-b"), ("embed", "up-embed")]:
            r = self.admin("POST", "/models", {"name": name, "deployments": [{"credential": "fake", "model": upstream}]})
            assert r.status_code == 201, r.text

    def new_key(self, **body):
        r = self.admin("POST", "/key/generate", body)
        assert r.status_code == 200, r.text
        return r.json()

    def client(self, key):
        return openai.OpenAI(api_key=key, base_url=self.data_url + "/v1", max_retries=0, timeout=10,
                             http_client=httpx.Client(verify=self.verify))

    def wait_for_key(self, key):
        """Waits until the data plane knows a freshly generated key."""
        # 429 (this address throttled for failed authentications) says nothing of the key.
        wait_until(lambda: httpx.get(self.data_url + "/v1/models", headers={"Authorization": f"Bearer {key}"},
                                     verify=self.verify).status_code
                   not in (401, 429), timeout=5, what="key to reach the data plane")

    def guarded_client(self, pipeline):
        """Sets the tenant's guardrail pipeline (it must redact emails) and returns a client of
        a new key once the data plane applies it."""
        r = self.admin("PUT", "/guardrails", pipeline)
        assert r.status_code == 200, r.text
        issued = self.new_key()
        self.wait_for_key(issued["key"])
        client = self.client(issued["key"])
        probe = [{"role": "user", "content": "say:mail probe@example.com"}]
        wait_until(lambda: "[REDACTED:EMAIL]" in client.chat.completions.create(
            model="gpt-a", messages=probe).choices[0].message.content, what="guardrails in the data plane")
        return client


@pytest.fixture(scope="module", params=["sqlite-up", "postgres"])
def gateway(request, fake_provider):
    gw = Gateway(fake_provider, request.param)
    yield gw
    if request.session.testsfailed:
        print(gw.logs())
    gw.close()


def fake_requests(fake_url):
    return httpx.get(fake_url + "/_fake/requests").json()["requests"]


def provider_received(fake_url, marker):
    """Whether a request carrying `marker` is among those the fake provider recorded. (It keeps
    the last 1000: comparing their count before and after cannot tell that one more arrived.)"""
    return any(marker in json.dumps(r["body"], ensure_ascii=False) for r in fake_requests(fake_url))


def audit_since():
    """Now, as the `since` filter of GET /audit/events reads it: taken at the start of a test,
    it limits queries to the events of that test."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error_code(exc):
    body = exc.response.json()
    return body["error"]["code"]
