"""The snapshot stream over mutual TLS, and `routero up`'s first-start admin key."""

import time
from pathlib import Path

import httpx
import pytest

from conftest import BIN_DIR, Gateway, Process, free_port, wait_until
from certs import certificate_authority, issue

DOMAIN = "routero-cp.test"


@pytest.fixture
def pki(tmp_path):
    """A throwaway CA with a server certificate for DOMAIN and a client certificate."""
    certificate_authority(tmp_path)
    issue(tmp_path, "server", f"DNS:{DOMAIN}")
    issue(tmp_path, "client", "DNS:dp.routero.test", usage="clientAuth")
    return tmp_path


def control_plane_tls(pki):
    """A control plane serving TLS that requires client certificates from the test CA."""
    return {
        "ROUTERO_GRPC_TLS_CERT": str(pki / "server.crt"),
        "ROUTERO_GRPC_TLS_KEY": str(pki / "server.key"),
        "ROUTERO_GRPC_TLS_CLIENT_CA": str(pki / "ca.crt"),
    }


def data_plane_tls(pki):
    """A data plane trusting the test CA, without a client certificate."""
    return {
        "ROUTERO_CONTROL_PLANE_CA": str(pki / "ca.crt"),
        "ROUTERO_CONTROL_PLANE_URL": "https://127.0.0.1:{grpc_port}",
        "ROUTERO_CONTROL_PLANE_TLS_DOMAIN": DOMAIN,
    }


def test_snapshot_stream_over_mutual_tls(fake_provider, pki):
    cp_tls = control_plane_tls(pki)
    dp_tls = {
        **data_plane_tls(pki),
        "ROUTERO_CLIENT_TLS_CERT": str(pki / "client.crt"),
        "ROUTERO_CLIENT_TLS_KEY": str(pki / "client.key"),
    }
    # The data plane reaches the control plane only through https with its client certificate.
    gw = Gateway(fake_provider, "sqlite-split", extra_env=dp_tls, cp_env=cp_tls)
    try:
        key = gw.new_key(models=["gpt-a"])["key"]
        gw.wait_for_key(key)
        reply = gw.client(key).chat.completions.create(model="gpt-a", messages=[{"role": "user", "content": "tls"}])
        assert reply.choices[0].message.content == "fake reply to: tls"
    finally:
        gw.close()


def foreign_client_certificate(pki):
    """A client certificate like the test CA's, signed by another CA the control plane does
    not trust."""
    other = pki / "other"
    other.mkdir()
    certificate_authority(other)
    issue(other, "client", "DNS:dp.routero.test", usage="clientAuth")
    return other


@pytest.mark.parametrize("identity", ["none", "another CA"])
def test_data_plane_without_a_trusted_client_certificate_is_refused(fake_provider, pki, identity):
    """The same data plane that is served with the test CA's client certificate gets no
    snapshot with none, or with one from another CA: it never becomes ready, says why on
    /readyz, serves nothing, and the control plane never lists it."""
    cp_tls = control_plane_tls(pki)
    trusted = {**data_plane_tls(pki), "ROUTERO_CLIENT_TLS_CERT": str(pki / "client.crt"),
               "ROUTERO_CLIENT_TLS_KEY": str(pki / "client.key")}
    gw = Gateway(fake_provider, "sqlite-split", extra_env=trusted, cp_env=cp_tls)
    try:
        key = gw.new_key(models=["gpt-a"])["key"]
        gw.wait_for_key(key)
        gw.stop("data-plane")
        overrides = {"ROUTERO_SNAPSHOT_PATH": str(pki / "refused-snapshot.bin"), "ROUTERO_NODE_ID": "refused-dp"}
        if identity == "none":
            gw.extra_env = data_plane_tls(pki)
        else:
            other = foreign_client_certificate(pki)
            overrides.update(ROUTERO_CLIENT_TLS_CERT=str(other / "client.crt"),
                             ROUTERO_CLIENT_TLS_KEY=str(other / "client.key"))
        gw.start_data_plane(**overrides)

        def readyz():
            return httpx.get(gw.data_url + "/readyz", timeout=2)
        wait_until(lambda: "snapshot channel" in readyz().text, what="the data plane to report the refusal")
        # Its retries fare no better: not ready throughout, for the reason it gives.
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            r = readyz()
            assert r.status_code == 503, r.text
            error = r.json()["error"]
            assert error["code"] == "control_plane_unreachable", r.text
            assert error["message"].startswith("no snapshot applied yet; last from the snapshot channel: snapshot stream"), r.text
            time.sleep(0.2)
        r = httpx.post(gw.data_url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                       json={"model": "gpt-a", "messages": [{"role": "user", "content": "refused"}]}, timeout=10)
        assert r.status_code == 503 and r.json()["error"]["code"] == "control_plane_unreachable", r.text
        nodes = [p["node_id"] for p in gw.admin("GET", "/data-planes").json()["data_planes"]]
        assert "e2e-dp" in nodes and "refused-dp" not in nodes, nodes
    finally:
        gw.close()


def test_up_generates_an_admin_key_once_and_stores_it_hashed(tmp_path):
    ports = {name: free_port() for name in ["DATA_PLANE", "CONTROL_PLANE", "GRPC"]}
    env = {f"ROUTERO_{name}_ADDR": f"127.0.0.1:{port}" for name, port in ports.items()}
    env["ROUTERO_DATA_DIR"] = str(tmp_path / "data")
    admin_url = f"http://127.0.0.1:{ports['CONTROL_PLANE']}"

    first = Process("up-first", [str(BIN_DIR / "routero"), "up"], env=env, cwd=tmp_path)
    try:
        wait_until(lambda: httpx.get(admin_url + "/readyz").status_code == 200, what="first start")
        out = first.output()
        admin_key = next(word for word in out.split() if word.startswith("sk-rtadm-"))
        r = httpx.post(admin_url + "/key/generate", json={}, headers={"Authorization": f"Bearer {admin_key}"})
        assert r.status_code == 200
    finally:
        first.stop()
    database = (tmp_path / "data" / "routero.db").read_bytes()
    assert admin_key.encode() not in database, "the admin key is stored hashed"
    assert oct((tmp_path / "data" / "pepper.key").stat().st_mode & 0o777) == "0o600"

    second = Process("up-second", [str(BIN_DIR / "routero"), "up"], env=env, cwd=tmp_path)
    try:
        wait_until(lambda: httpx.get(admin_url + "/readyz").status_code == 200, what="second start")
        time.sleep(0.2)
        assert "sk-rtadm-" not in second.output(), "the admin key is shown only once"
        r = httpx.get(admin_url + "/key/list", headers={"Authorization": f"Bearer {admin_key}"})
        assert r.status_code == 200 and len(r.json()["keys"]) == 1
    finally:
        second.stop()
