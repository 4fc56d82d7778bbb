"""The chart's wiring proven with the real binary: the manifests rendered for the split
topology are run the way a kubelet would run them, on loopback. Each container's command and
arguments run as a local process with its rendered environment (Secret and field references
resolved), its volumes materialised as directories, `0.0.0.0:P` and the pod's own
`127.0.0.1:P` given free ports, and Service names resolved to the pods they select. The
migrations Job runs first, then control plane, audit writer and data plane, each Cerbos sidecar
a real Cerbos on the rendered configuration. Every hop the chart configures is TLS: HTTPS on
both APIs, the snapshot channel, and Kafka through a TLS front (stunnel4) that requires the
services' client certificate. A request then goes through the data plane to the fake provider
and into the audit chain, checked by `routero audit verify`."""

import base64
import re
import shutil
import ssl
import subprocess
import tempfile
from pathlib import Path

import httpx
import openai
import pytest

from conftest import BIN_DIR, POSTGRES, UPSTREAM_KEY, Process, clean_env, create_postgres_database, free_port, ready, wait_until
from kafka import Broker, S3Server, TlsFront
from test_helm_chart import render
from test_policies import CERBOS
from certs import certificate_authority, issue

SNAPSHOT_TLS, API_TLS, ADMIN_TLS, KAFKA_TLS = "snapshot-tls", "api-tls", "admin-tls", "kafka-tls"
# Files the image carries (Dockerfile), as they are on this machine.
IMAGE_FILES = {"/cerbos": str(CERBOS), "/usr/local/bin/cerbos": str(CERBOS), "/usr/local/bin/routero": str(BIN_DIR / "routero")}
SNAPSHOTS_HOST = "rt-routero-snapshots"


@pytest.fixture
def pki(tmp_path):
    """One CA; the TLS Secrets the chart is given, as {Secret: {key: bytes}}: the snapshot
    Service's certificate, the two APIs' (as reached on loopback), the services' Kafka client
    certificate; and the broker front's certificate in the directory."""
    certificate_authority(tmp_path, "chart-test-ca")
    issue(tmp_path, "broker", "DNS:localhost,IP:127.0.0.1")
    secrets = {}
    for secret, alt_names, usage in [(SNAPSHOT_TLS, f"DNS:{SNAPSHOTS_HOST}", "serverAuth"),
                                     (API_TLS, "DNS:localhost,IP:127.0.0.1", "serverAuth"),
                                     (ADMIN_TLS, "DNS:localhost,IP:127.0.0.1", "serverAuth"),
                                     (KAFKA_TLS, "DNS:routero.test", "clientAuth")]:
        issue(tmp_path, secret, alt_names, usage=usage)
        secrets[secret] = {"tls.crt": (tmp_path / f"{secret}.crt").read_bytes(),
                           "tls.key": (tmp_path / f"{secret}.key").read_bytes(),
                           "ca.crt": (tmp_path / "ca.crt").read_bytes()}
    return tmp_path, secrets


class Kubelet:
    """Runs rendered pods as local processes on loopback (see the module's doc)."""

    def __init__(self, manifests, secrets, root):
        self.root = root
        self.secrets = {
            doc["metadata"]["name"]: {k: base64.b64decode(v) for k, v in doc["data"].items()}
            for doc in manifests if doc["kind"] == "Secret"
        } | secrets
        self.config_maps = {doc["metadata"]["name"]: doc["data"] for doc in manifests if doc["kind"] == "ConfigMap"}
        self.pods = {doc["metadata"]["labels"]["app.kubernetes.io/component"]: (doc["metadata"]["name"], doc["spec"]["template"]["spec"])
                     for doc in manifests if doc["kind"] in ("Deployment", "Job")}
        self.services = {doc["metadata"]["name"]: doc["spec"] for doc in manifests if doc["kind"] == "Service"}
        self.ports = {}
        self.processes = []
        self.probes = []

    def port(self, component, port):
        """The free loopback port standing for `port` of the pod of `component`."""
        return self.ports.setdefault((component, int(port)), free_port())

    def service_port(self, name, port):
        spec = self.services[name]
        target = next(p["targetPort"] for p in spec["ports"] if p["port"] == int(port))
        component = spec["selector"]["app.kubernetes.io/component"]
        _, pod = self.pods[component]
        number = next(p["containerPort"] for c in pod["containers"] for p in c.get("ports", []) if p["name"] == target)
        return self.port(component, number)

    def rewrite(self, component, text, mounts):
        """Addresses and paths of the pod, as they are on this host."""
        text = re.sub(r"\b(?:0\.0\.0\.0|127\.0\.0\.1):(\d+)", lambda m: f"127.0.0.1:{self.port(component, m.group(1))}", text)
        text = re.sub(r"\b([a-z0-9-]+):(\d+)\b",
                      lambda m: f"127.0.0.1:{self.service_port(m.group(1), m.group(2))}" if m.group(1) in self.services else m.group(0),
                      text)
        if mounts:
            # One pass, longest first: a replaced path is never rewritten again.
            paths = sorted(mounts, key=len, reverse=True)
            pattern = r"(?<![\w/.-])(" + "|".join(map(re.escape, paths)) + r")(?![\w.-])"
            text = re.sub(pattern, lambda m: str(mounts[m.group(1)]), text)
        return text

    def volume(self, component, volume):
        local = Path(tempfile.mkdtemp(prefix=f"{component}-{volume['name']}-", dir=self.root))
        source = volume.get("configMap") or volume.get("secret")
        if source:
            data = (self.config_maps[source["name"]] if "configMap" in volume
                    else self.secrets[source["secretName"]])
            items = source.get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                target = local / item["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                value = data[item["key"]]
                target.write_bytes(value if isinstance(value, bytes) else value.encode())
        return local

    def run(self, component):
        """Starts every container of the pod of `component`; returns their processes."""
        name, pod = self.pods[component]
        volumes = {v["name"]: self.volume(component, v) for v in pod.get("volumes", [])}
        started = {}
        for container in pod["containers"]:
            mounts = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}
            env = {}
            for var in container.get("env", []):
                source = var.get("valueFrom", {})
                if "secretKeyRef" in source:
                    ref = source["secretKeyRef"]
                    value = self.secrets[ref["name"]].get(ref["key"])
                    if value is None:
                        assert ref.get("optional"), f"{name}: {ref} missing"
                        continue
                    env[var["name"]] = value.decode()
                elif "fieldRef" in source:
                    assert source["fieldRef"]["fieldPath"] == "metadata.name"
                    env[var["name"]] = f"{name}-0"
                else:
                    # A file of the image is where this machine has it (a host path, not the pod's).
                    env[var["name"]] = IMAGE_FILES.get(var["value"]) or self.rewrite(component, var["value"], mounts)
            if container["name"] == "cerbos":
                config = mounts["/config"] / "cerbos.yaml"
                config.write_text(self.rewrite(component, config.read_text(), mounts))
                command = [str(CERBOS), *[self.rewrite(component, a, mounts) for a in container["args"]]]
            else:
                command = [str(BIN_DIR / "routero"), *container["args"]]
            process = Process(f"{component}-{container['name']}", command, env=env, cwd=self.root)
            self.processes.append(process)
            started[container["name"]] = process
            self.probes.append((component, container, mounts))
        return started

    def wait_ready(self, component):
        """Waits until every container of the pod passes its readiness probe, as a kubelet
        marks a pod ready."""
        for owner, container, mounts in self.probes:
            probe = container.get("readinessProbe")
            if owner != component or not probe:
                continue
            if "exec" in probe:
                command = [IMAGE_FILES.get(part, self.rewrite(component, part, mounts))
                           for part in probe["exec"]["command"]]
                wait_until(lambda: subprocess.run(command, capture_output=True).returncode == 0, timeout=60,
                           what=f"{component}/{container['name']} ready")
            else:
                port_name = probe["httpGet"]["port"]
                number = next(p["containerPort"] for p in container["ports"] if p["name"] == port_name)
                scheme = probe["httpGet"].get("scheme", "HTTP").lower()
                url = f"{scheme}://127.0.0.1:{self.port(component, number)}{probe['httpGet']['path']}"
                # A kubelet's HTTPS probe does not verify the certificate.
                wait_until(lambda: ready(url, verify=False), timeout=60, what=f"{component}/{container['name']} ready")

    def stop(self):
        for process in reversed(self.processes):
            process.stop()

    def logs(self):
        return "\n".join(f"--- {p.name} ---\n{p.output()[-3000:]}" for p in self.processes)


@pytest.fixture
def broker(pki):
    """A broker reached through a TLS front that requires a client certificate of the CA."""
    s3 = S3Server()
    port = free_port()
    broker = Broker(s3, advertised_port=port)
    front = TlsFront(broker, port, pki[0])
    yield front
    front.stop()
    broker.stop()
    s3.stop()


def test_the_rendered_split_topology_serves_a_request_into_the_audit_chain(broker, pki, fake_provider, tmp_path):
    # The chart's manifests, with this machine's PostgreSQL and Kafka as the external services
    # (by name, not as loopback addresses: those belong to each pod).
    local = POSTGRES.replace("127.0.0.1", "localhost")
    values = {
        "topology": "split",
        "secrets": {
            "databaseUrl": create_postgres_database().replace(POSTGRES, local),
            "auditDatabaseUrl": create_postgres_database().replace(POSTGRES, local),
        },
        "kafka": {"brokers": f"localhost:{broker.port}", "topicPartitions": 3, "replicationFactor": 1,
                  "tls": {"secretName": KAFKA_TLS, "clientCertificate": True}},
        "snapshotTls": {"secretName": SNAPSHOT_TLS},
        "controlPlane": {"tls": {"secretName": ADMIN_TLS}},
        "dataPlane": {"tls": {"secretName": API_TLS}},
        "egressAllow": "127.0.0.1/32",
        "auditWriter": {"extraEnv": [{"name": "ROUTERO_KAFKA_SESSION_TIMEOUT", "value": "6s"},
                                     {"name": "ROUTERO_AUDIT_CHECKPOINT_INTERVAL", "value": "1s"}]},
    }
    manifests = render(values)
    ca, secrets = pki
    kubelet = Kubelet(manifests, secrets, tmp_path)
    verify = ssl.create_default_context(cafile=str(ca / "ca.crt"))
    try:
        migrations = kubelet.run("migrations")["migrations"]
        assert migrations.proc.wait(timeout=60) == 0, migrations.output()
        assert "control plane database: migrated" in migrations.output()

        for component in ("control-plane", "audit-writer", "data-plane"):
            kubelet.run(component)
            kubelet.wait_ready(component)
        admin_url = f"https://127.0.0.1:{kubelet.port('control-plane', 8081)}"
        api_url = f"https://127.0.0.1:{kubelet.port('data-plane', 8080)}"

        secret = next(doc for doc in manifests if doc["kind"] == "Secret")
        admin_key = base64.b64decode(secret["data"]["admin-key"]).decode()

        def admin(method, path, body=None):
            return httpx.request(method, admin_url + path, json=body, timeout=10, verify=verify,
                                 headers={"Authorization": f"Bearer {admin_key}"})

        r = admin("POST", "/credentials", {"name": "fake", "provider": "openai", "api_key": UPSTREAM_KEY,
                                           "base_url": fake_provider + "/v1"})
        assert r.status_code == 201, r.text
        r = admin("POST", "/models", {"name": "gpt-a", "deployments": [{"credential": "fake", "model": "up-a"}]})
        assert r.status_code == 201, r.text
        key = admin("POST", "/key/generate", {}).json()["key"]
        wait_until(lambda: httpx.get(api_url + "/v1/models", headers={"Authorization": f"Bearer {key}"},
                                     verify=verify).status_code == 200, what="key on the data plane")
        client = openai.OpenAI(api_key=key, base_url=api_url + "/v1", max_retries=0, timeout=10,
                               http_client=httpx.Client(verify=verify))
        reply = client.chat.completions.create(model="gpt-a", messages=[{"role": "user", "content": "through the chart"}])
        assert reply.choices[0].message.content == "fake reply to: through the chart"
        scraped = httpx.get(f"http://127.0.0.1:{kubelet.port('data-plane', 9464)}/metrics").text
        assert 'routero_requests_total{endpoint="chat/completions",model="gpt-a",code="ok"} 1' in scraped

        # Through Kafka, the audit writer chained and stored the request's event.
        wait_until(lambda: admin("GET", "/audit/events?type=request.routed").json()["events"], timeout=60,
                   what="the request's audit record")
        writer_env = {"ROUTERO_AUDIT_DATABASE_URL": values["secrets"]["auditDatabaseUrl"],
                      "ROUTERO_AUDIT_SIGNING_KEY": base64.b64decode(secret["data"]["audit-signing-key"]).decode()}
        verified = subprocess.run([str(BIN_DIR / "routero"), "audit", "verify"], env=clean_env(writer_env),
                                  capture_output=True, text=True, cwd=tmp_path)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "peer did not return a certificate" not in broker.logs()
        # Control plane and audit writer serve their metrics (and the writer its liveness).
        control = httpx.get(f"http://127.0.0.1:{kubelet.port('control-plane', 9464)}/metrics").text
        assert 'routero_admin_requests_total{method="POST",status="201"}' in control
        writer = kubelet.port("audit-writer", 9464)
        wait_until(lambda: "routero_audit_events_chained_total 0" not in httpx.get(f"http://127.0.0.1:{writer}/metrics").text,
                   what="the writer to count what it chained")
        assert httpx.get(f"http://127.0.0.1:{writer}/healthz").status_code == 200
    except BaseException:
        print(kubelet.logs())
        print(broker.logs())
        raise
    finally:
        kubelet.stop()
        shutil.rmtree(tmp_path, ignore_errors=True)


def test_the_rendered_evaluation_pod_serves_a_request(fake_provider, tmp_path):
    """`topology: up` (the default values): one pod, `routero up`, its admin key from the Secret
    the chart generated, Cerbos started from the image's binary on the chart's policies."""
    manifests = render({"egressAllow": "127.0.0.1/32"})
    kubelet = Kubelet(manifests, {}, tmp_path)
    try:
        kubelet.run("evaluation")
        kubelet.wait_ready("evaluation")
        secret = next(doc for doc in manifests if doc["kind"] == "Secret")
        admin_key = base64.b64decode(secret["data"]["admin-key"]).decode()
        admin_url = f"http://127.0.0.1:{kubelet.port('evaluation', 8081)}"
        api_url = f"http://127.0.0.1:{kubelet.port('evaluation', 8080)}"
        headers = {"Authorization": f"Bearer {admin_key}"}
        r = httpx.post(admin_url + "/credentials", headers=headers, json={
            "name": "fake", "provider": "openai", "api_key": UPSTREAM_KEY, "base_url": fake_provider + "/v1"})
        assert r.status_code == 201, r.text
        r = httpx.post(admin_url + "/models", headers=headers,
                       json={"name": "gpt-a", "deployments": [{"credential": "fake", "model": "up-a"}]})
        assert r.status_code == 201, r.text
        key = httpx.post(admin_url + "/key/generate", headers=headers, json={}).json()["key"]
        wait_until(lambda: httpx.get(api_url + "/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200,
                   what="key on the data plane")
        client = openai.OpenAI(api_key=key, base_url=api_url + "/v1", max_retries=0, timeout=10)
        reply = client.chat.completions.create(model="gpt-a", messages=[{"role": "user", "content": "evaluation"}])
        assert reply.choices[0].message.content == "fake reply to: evaluation"
        assert "requests are decided by the Cerbos policies" in kubelet.processes[0].output()
    except BaseException:
        print(kubelet.logs())
        raise
    finally:
        kubelet.stop()
