"""The Helm chart (helm/routero), rendered by the real Helm library (helm-python-sdk, no helm
binary), linted by Helm, and every manifest validated against the Kubernetes schemas
(kubernetes-validate); its README, values and schema kept in agreement."""

import json
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from helm_python import chart

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "routero"
KUBERNETES = "1.31"
VALUES = {
    "default": None,
    "production": CHART / "examples" / "production.yaml",
    "evaluation": CHART / "examples" / "evaluation.yaml",
}


def values_of(name):
    path = VALUES[name]
    return yaml.safe_load(path.read_text()) if path else None


def render(values, name="rt", upgrade=False):
    """Every manifest the chart renders with `values` (for an install, or an upgrade), as dicts."""
    rendered = chart.Chart.load(str(CHART)).render(values=values, name=name, namespace="gw",
                                                   is_install=not upgrade, is_upgrade=upgrade)
    return [
        doc
        for path, text in sorted(rendered.items())
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def pod_specs(manifests):
    for doc in manifests:
        spec = doc.get("spec", {})
        if doc["kind"] in ("Deployment", "Job"):
            yield doc, spec["template"]["spec"]


@pytest.mark.parametrize("name", VALUES)
def test_renders_lints_and_validates_against_kubernetes_schemas(name):
    values = values_of(name)
    manifests = render(values)
    kinds = {doc["kind"] for doc in manifests}
    assert {"Deployment", "Service", "ConfigMap", "NetworkPolicy"} <= kinds
    assert ("Secret" in kinds) == (name != "production"), "the production example brings its own Secret"
    if name == "production":
        assert {"HorizontalPodAutoscaler", "PodDisruptionBudget", "Job", "Ingress"} <= kinds
        deployments = {doc["metadata"]["name"] for doc in manifests if doc["kind"] == "Deployment"}
        assert deployments == {"rt-routero-control-plane", "rt-routero-data-plane", "rt-routero-audit-writer"}
    for doc in manifests:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    linted = chart.lint(str(CHART), values=values, strict=True)
    assert linted["errors"] == []
    assert [m for m in linted["messages"] if m["severity"] > 1] == [], linted["messages"]


def test_the_schema_validation_can_fail():
    """A manifest with a wrong-typed field is refused: the validation above checks something."""
    deployment = next(doc for doc in render(values_of("production")) if doc["kind"] == "Deployment")
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


def schema_leaves(node, prefix=""):
    for key, value in node.get("properties", {}).items():
        if value.get("type") == "object" and "properties" in value:
            yield from schema_leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_every_value_is_documented_in_the_readme_and_in_the_schema():
    schema = json.loads((CHART / "values.schema.json").read_text())
    in_schema = set(schema_leaves(schema))
    table = (CHART / "README.md").read_text().split("\n## Values\n", 1)[1]
    documented = set(re.findall(r"^\| `([A-Za-z0-9_.]+)` \|", table, re.M))
    assert documented - in_schema == set(), "documented but not in the schema"
    assert in_schema - documented == set(), "in the schema but not documented"

    def value_leaves(node, prefix=""):
        for key, value in node.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict) and value and path in {p.rsplit(".", 1)[0] for p in in_schema if "." in p}:
                yield from value_leaves(value, path + ".")
            else:
                yield path

    assert set(value_leaves(yaml.safe_load((CHART / "values.yaml").read_text()))) == in_schema


@pytest.mark.parametrize(
    "values, refusal",
    [
        ({"unknown": 1}, "additional properties 'unknown' not allowed"),
        ({"topology": "cluster"}, "value must be one of"),
        ({"dataPlane": {"maxStaleness": "forever"}}, "maxStaleness"),
        ({"topology": "split"}, "secrets.databaseUrl"),
        (
            {"topology": "split", "secrets": {"existingSecret": "mine"},
             "kafka": {"brokers": "k:9092", "allowPlaintext": True}},
            "snapshotTls.secretName",
        ),
        (
            {"topology": "split", "secrets": {"existingSecret": "mine"}, "kafka": {"brokers": "k:9092"},
             "snapshotTls": {"allowPlaintext": True}},
            "kafka.tls.secretName",
        ),
        (
            {"topology": "split", "secrets": {"existingSecret": "mine"}, "snapshotTls": {"allowPlaintext": True}},
            "kafka.brokers",
        ),
        # An empty list of peers would admit everyone (NetworkPolicy semantics), never no one.
        ({"networkPolicy": {"adminFrom": []}}, "adminFrom"),
        ({"networkPolicy": {"externalEgress": []}}, "externalEgress"),
        ({"trustedProxies": "10.0.0.0/8"}, "networkPolicy.apiFrom"),
        # A certificate the evaluation pod would not use is refused, not ignored.
        ({"dataPlane": {"tls": {"secretName": "api-tls"}}}, "dataPlane.tls and controlPlane.tls: split only"),
    ],
)
def test_bad_or_missing_values_are_refused_with_their_name(values, refusal):
    with pytest.raises(Exception) as refused:
        render(values)
    assert refusal in str(refused.value)


@pytest.mark.parametrize("name", VALUES)
def test_every_pod_runs_restricted(name):
    for doc, pod in pod_specs(render(values_of(name))):
        assert pod["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, container["name"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            if container["name"] in ("data-plane", "control-plane", "routero"):
                assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
                assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def pods_and_env(manifests):
    """Pod specs by name, and each pod's first container's plain environment values."""
    pods = {doc["metadata"]["name"]: pod for doc, pod in pod_specs(manifests)}
    env = {
        name: {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        for name, pod in pods.items()
    }
    return pods, env


def test_snapshots_travel_over_tls_and_data_planes_get_the_ca_alone():
    pods, env = pods_and_env(render(values_of("production")))
    data_plane, control_plane = env["rt-routero-data-plane"], env["rt-routero-control-plane"]
    assert data_plane["ROUTERO_CONTROL_PLANE_URL"] == "https://rt-routero-snapshots:8082"
    assert data_plane["ROUTERO_CONTROL_PLANE_TLS_DOMAIN"] == "rt-routero-snapshots"
    assert "ROUTERO_ALLOW_PLAINTEXT_GRPC" not in data_plane
    assert control_plane["ROUTERO_GRPC_TLS_KEY"] == "/etc/routero/tls/tls.key"
    tls = next(v for v in pods["rt-routero-data-plane"]["volumes"] if v["name"] == "snapshot-tls")
    assert tls["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}], "no server key on data planes"


def test_every_kafka_client_speaks_tls_with_its_client_certificate():
    pods, env = pods_and_env(render(values_of("production")))
    for name in ("rt-routero-control-plane", "rt-routero-data-plane", "rt-routero-audit-writer"):
        assert env[name]["ROUTERO_KAFKA_TLS_CA"] == "/etc/routero/kafka/ca.crt", name
        assert env[name]["ROUTERO_KAFKA_TLS_CERT"] == "/etc/routero/kafka/tls.crt", name
        assert env[name]["ROUTERO_KAFKA_TLS_KEY"] == "/etc/routero/kafka/tls.key", name
        assert "ROUTERO_ALLOW_PLAINTEXT_KAFKA" not in env[name], name
        mounts = {m["name"]: m for m in pods[name]["containers"][0]["volumeMounts"]}
        assert mounts["kafka-tls"] == {"name": "kafka-tls", "mountPath": "/etc/routero/kafka", "readOnly": True}
        volumes = {v["name"]: v for v in pods[name]["volumes"]}
        assert volumes["kafka-tls"]["secret"]["secretName"] == "routero-kafka-tls"
    # Without a client certificate, the Secret's key is not mounted at all.
    ca_only = {**values_of("production"), "kafka": {**values_of("production")["kafka"],
                                                    "tls": {"secretName": "kafka-ca", "clientCertificate": False}}}
    pods, env = pods_and_env(render(ca_only))
    for name in ("rt-routero-control-plane", "rt-routero-data-plane", "rt-routero-audit-writer"):
        volumes = {v["name"]: v for v in pods[name]["volumes"]}
        assert volumes["kafka-tls"]["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
        assert "ROUTERO_KAFKA_TLS_KEY" not in env[name] and env[name]["ROUTERO_KAFKA_TLS_CA"]
    # Plaintext only when asked for, and then said in every service's environment.
    plain = {**values_of("production"), "kafka": {"brokers": "k:9092", "allowPlaintext": True}}
    _, env = pods_and_env(render(plain))
    assert all(env[name]["ROUTERO_ALLOW_PLAINTEXT_KAFKA"] == "true" and "ROUTERO_KAFKA_TLS_CA" not in env[name]
               for name in ("rt-routero-control-plane", "rt-routero-data-plane", "rt-routero-audit-writer"))


def test_https_on_the_apis_mounts_the_secret_and_probes_over_https():
    values = {**values_of("production"), "dataPlane": {"tls": {"secretName": "api-tls"}},
              "controlPlane": {"tls": {"secretName": "admin-tls"}}}
    manifests = render(values)
    for doc in manifests:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    pods, env = pods_and_env(manifests)
    for name, prefix, secret in [("rt-routero-data-plane", "ROUTERO_", "api-tls"),
                                 ("rt-routero-control-plane", "ROUTERO_ADMIN_", "admin-tls")]:
        assert env[name][f"{prefix}TLS_CERT"] == "/etc/routero/https/tls.crt"
        assert env[name][f"{prefix}TLS_KEY"] == "/etc/routero/https/tls.key"
        container = pods[name]["containers"][0]
        assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
        assert container["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
        volumes = {v["name"]: v for v in pods[name]["volumes"]}
        assert volumes["https"]["secret"]["secretName"] == secret
    # Without a Secret, plain HTTP probes and no certificate settings.
    pods, env = pods_and_env(render(values_of("production")))
    assert pods["rt-routero-data-plane"]["containers"][0]["readinessProbe"]["httpGet"]["scheme"] == "HTTP"
    assert "ROUTERO_TLS_CERT" not in env["rt-routero-data-plane"]


def test_the_admin_port_is_reached_from_the_ingress_alone():
    policies = {doc["metadata"]["name"]: doc["spec"] for doc in render(values_of("production")) if doc["kind"] == "NetworkPolicy"}
    assert policies["rt-routero-default-deny"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in policies["rt-routero-default-deny"]
    admin_rules = [r for r in policies["rt-routero-control-plane"]["ingress"] if r["ports"] == [{"port": 8081}]]
    assert admin_rules == [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}], "ports": [{"port": 8081}]}]
    grpc_rules = [r for r in policies["rt-routero-control-plane"]["ingress"] if r["ports"] == [{"port": 8082}]]
    assert grpc_rules[0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "data-plane"


def test_the_policies_configmap_carries_every_policy_of_the_repository():
    config = next(doc for doc in render(None) if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].endswith("-policies"))
    policies = REPO / "policies"
    expected = {
        str(path.relative_to(policies)): path.read_text()
        for path in policies.rglob("*.yaml")
        if "tests" not in path.relative_to(policies).parts
    }
    assert expected, "the repository has policies"
    carried = {key.replace("__", "/"): text for key, text in config["data"].items() if key != "cerbos.yaml"}
    assert carried == expected
    cerbos = yaml.safe_load(config["data"]["cerbos.yaml"])
    assert cerbos["server"]["grpcListenAddr"].startswith("127.0.0.1:"), "Cerbos on the pod's loopback only"


def test_generated_secrets_are_kept_and_never_regenerated_on_an_upgrade():
    secret = next(doc for doc in render(None) if doc["kind"] == "Secret")
    annotations = secret["metadata"]["annotations"]
    assert annotations["helm.sh/resource-policy"] == "keep"
    assert "helm.sh/hook" not in annotations, "a hook would be deleted and recreated on every upgrade"
    # Offline there is no Secret to read back: an upgrade refuses rather than generate new keys.
    with pytest.raises(Exception) as refused:
        render(None, upgrade=True)
    assert "not found while upgrading" in str(refused.value)
    assert render({"secrets": {"existingSecret": "mine"}}, upgrade=True)
    assert set(secret["data"]) == {"pepper", "master-keys", "data-plane-key", "audit-signing-key", "admin-key"}
    again = next(doc for doc in render(None) if doc["kind"] == "Secret")
    assert again["data"]["pepper"] != secret["data"]["pepper"], "fresh random keys on a first install"
    assert not any(doc["kind"] == "Secret" for doc in render({"secrets": {"existingSecret": "mine"}}))


def test_a_service_monitor_selects_every_metrics_service():
    values = values_of("production") | {"metrics": {"serviceMonitor": {"enabled": True, "interval": "15s"}}}
    manifests = render(values)
    [monitor] = [doc for doc in manifests if doc["kind"] == "ServiceMonitor"]
    selected = monitor["spec"]["selector"]["matchLabels"]
    services = [doc for doc in manifests if doc["kind"] == "Service" and selected.items() <= doc["metadata"]["labels"].items()]
    assert {s["spec"]["selector"]["app.kubernetes.io/component"] for s in services} == \
        {"data-plane", "control-plane", "audit-writer"}
    assert all(s["spec"]["ports"] == [{"name": "metrics", "port": 9464, "targetPort": "metrics"}] for s in services)
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
    # Every pod a Service selects has the port it names.
    pods = {doc["metadata"]["labels"]["app.kubernetes.io/component"]: pod for doc, pod in pod_specs(manifests)}
    for service in services:
        pod = pods[service["spec"]["selector"]["app.kubernetes.io/component"]]
        assert any(p.get("name") == "metrics" for c in pod["containers"] for p in c.get("ports", []))
    assert not any(doc["kind"] == "ServiceMonitor" for doc in render(values_of("production")))


def test_only_metrics_from_reaches_the_metrics_ports():
    values = values_of("production") | {"networkPolicy": {**values_of("production")["networkPolicy"],
                                                          "metricsFrom": [{"podSelector": {"matchLabels": {"app": "prometheus"}}}]}}
    policies = {doc["metadata"]["name"]: doc["spec"] for doc in render(values) if doc["kind"] == "NetworkPolicy"}
    metrics = policies["rt-routero-metrics"]
    assert metrics["ingress"] == [{"from": [{"podSelector": {"matchLabels": {"app": "prometheus"}}}], "ports": [{"port": 9464}]}]
    assert metrics["podSelector"]["matchExpressions"][1]["values"] == ["data-plane", "control-plane", "audit-writer"]
    # No other policy opens the metrics port; without metricsFrom, the default deny keeps it shut.
    assert not any({"port": 9464} in rule.get("ports", []) for name, spec in policies.items() if name != "rt-routero-metrics"
                   for rule in spec.get("ingress", []))
    assert "rt-routero-metrics" not in {doc["metadata"]["name"] for doc in render(values_of("production"))
                                        if doc["kind"] == "NetworkPolicy"}


def test_the_migrations_job_runs_after_the_first_install_and_before_upgrades():
    job = next(doc for doc in render(values_of("production")) if doc["kind"] == "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["admin", "migrate"]


def test_with_trusted_proxies_only_the_ingress_reaches_the_api():
    policies = {doc["metadata"]["name"]: doc["spec"] for doc in render(values_of("production")) if doc["kind"] == "NetworkPolicy"}
    [api] = [rule for rule in policies["rt-routero-api"]["ingress"] if rule["ports"] == [{"port": 8080}]]
    assert api["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
