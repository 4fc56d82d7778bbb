"""HTTPS on the OpenAI API and the admin API: what the listeners offer as sslscan sees it, the
official SDK over it, a certificate renewed on disk served without a restart (and a broken
renewal not), plain HTTP and stalled handshakes turned away, and bad certificate settings
refused at start by name."""

import shutil
import socket
import ssl
import subprocess
import time
import xml.etree.ElementTree as ET

import httpx
import pytest

from certs import certificate_authority, issue
from conftest import BIN_DIR, Gateway, clean_env, wait_until

LOOPBACK = "DNS:localhost,IP:127.0.0.1"
WEAK = ("NULL", "EXP", "RC4", "DES", "MD5", "CBC", "SHA1", "ANON", "ADH", "AECDH", "PSK", "SRP", "CAMELLIA", "ARIA")


@pytest.fixture
def tls(tmp_path):
    certificate_authority(tmp_path)
    issue(tmp_path, "api", LOOPBACK)
    issue(tmp_path, "admin", LOOPBACK)
    return tmp_path


def https_env(tls):
    return {
        "ROUTERO_TLS_CERT": str(tls / "api.crt"),
        "ROUTERO_TLS_KEY": str(tls / "api.key"),
        "ROUTERO_ADMIN_TLS_CERT": str(tls / "admin.crt"),
        "ROUTERO_ADMIN_TLS_KEY": str(tls / "admin.key"),
        "ROUTERO_HEADER_TIMEOUT": "2s",
    }


@pytest.fixture
def gateway(fake_provider, tls):
    gw = Gateway(fake_provider, "sqlite-up", extra_env=https_env(tls), ca=tls / "ca.crt")
    yield gw
    gw.close()


def sslscan(port):
    """What sslscan finds on 127.0.0.1:`port`: enabled protocols and accepted ciphers."""
    out = subprocess.run(["sslscan", "--no-colour", "--xml=-", f"127.0.0.1:{port}"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    test = ET.fromstring(out[out.index("<document"):]).find("ssltest")
    protocols = {f"{p.get('type').upper()}v{p.get('version')}": p.get("enabled") == "1" for p in test.iter("protocol")}
    ciphers = [c.attrib for c in test.iter("cipher")]
    return protocols, ciphers


def served_serial(port, ca):
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.getpeercert()["serialNumber"]


def serial_of(cert):
    out = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-serial"], capture_output=True,
                         text=True, check=True).stdout
    return out.strip().split("=", 1)[1].upper()


def test_both_listeners_offer_tls_1_2_and_1_3_with_strong_ciphers_only(gateway):
    for port in (gateway.data_port, gateway.admin_port):
        protocols, ciphers = sslscan(port)
        assert protocols == {"SSLv2": False, "SSLv3": False, "TLSv1.0": False, "TLSv1.1": False,
                             "TLSv1.2": True, "TLSv1.3": True}, protocols
        accepted = [c for c in ciphers if c.get("status") in ("accepted", "preferred")]
        assert {c["sslversion"] for c in accepted} == {"TLSv1.2", "TLSv1.3"}, accepted
        for cipher in accepted:
            assert int(cipher["bits"]) >= 128, cipher
            assert not any(weak in cipher["cipher"].upper() for weak in WEAK), cipher
            # Forward secrecy: every TLS 1.2 suite is an ephemeral (EC)DH one.
            if cipher["sslversion"] == "TLSv1.2":
                assert cipher["cipher"].startswith("ECDHE-"), cipher


def test_the_official_sdk_and_the_admin_api_work_over_https(gateway):
    key = gateway.new_key(models=["gpt-a"])["key"]
    gateway.wait_for_key(key)
    reply = gateway.client(key).chat.completions.create(model="gpt-a", messages=[{"role": "user", "content": "over tls"}])
    assert reply.choices[0].message.content == "fake reply to: over tls"
    # A client that does not trust the CA is refused by its own verification, as it should be.
    with pytest.raises(httpx.ConnectError):
        httpx.get(gateway.data_url + "/healthz")


def answer(raw, size):
    try:
        return raw.recv(size)
    except ConnectionResetError:
        return b""


def test_plain_http_and_stalled_handshakes_are_turned_away(gateway):
    # Plain HTTP on the TLS port: no HTTP answer (at most a TLS alert), the connection ends.
    with socket.create_connection(("127.0.0.1", gateway.data_port), timeout=10) as raw:
        raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert not answer(raw, 4096).startswith(b"HTTP/"), "a plaintext request was answered"
    # A client that connects and never sends its hello is closed at the header deadline (2s).
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", gateway.admin_port), timeout=15) as raw:
        assert answer(raw, 1) == b""
    assert 1.5 < time.monotonic() - started < 10


def test_a_renewed_certificate_is_served_without_a_restart(gateway, tls):
    ca = tls / "ca.crt"
    assert served_serial(gateway.data_port, ca) == serial_of(tls / "api.crt")
    # Renewal as cert-manager does it: a new key and certificate over the same files.
    issue(tls, "renewed", LOOPBACK)
    shutil.copy(tls / "renewed.key", tls / "api.key")
    shutil.copy(tls / "renewed.crt", tls / "api.crt")
    renewed = serial_of(tls / "renewed.crt")
    wait_until(lambda: served_serial(gateway.data_port, ca) == renewed, timeout=15, what="the renewed certificate")
    # The admin listener has its own certificate, untouched.
    assert served_serial(gateway.admin_port, ca) == serial_of(tls / "admin.crt")

    # A renewal that breaks (a key that is not the certificate's) is not served: the last good
    # certificate stays, and the log says why.
    issue(tls, "other", LOOPBACK)
    said = gateway.logs().count("does not match the certificate")
    shutil.copy(tls / "other.key", tls / "api.key")
    wait_until(lambda: gateway.logs().count("does not match the certificate") > said, timeout=15,
               what="the refused renewal")
    assert "TLS certificate not reloaded" in gateway.logs()
    time.sleep(2.5)  # past the next look at the files (every 2 s): still refused, still the last good one
    assert served_serial(gateway.data_port, ca) == renewed
    key = gateway.new_key(models=["gpt-a"])["key"]
    gateway.wait_for_key(key)


@pytest.mark.parametrize("setting, value, message", [
    ("ROUTERO_TLS_KEY", None, "tls_cert and tls_key: set both"),
    ("ROUTERO_TLS_KEY", "admin.key", "tls_cert and tls_key: "),
    ("ROUTERO_ADMIN_TLS_CERT", "ca.key", "admin_tls_cert and admin_tls_key: "),
    ("ROUTERO_TLS_CERT", "missing.crt", "tls_cert and tls_key: "),
])
def test_bad_certificate_settings_stop_the_start_by_name(tmp_path, tls, setting, value, message):
    env = {**https_env(tls), "ROUTERO_DATA_DIR": str(tmp_path / "data"),
           "ROUTERO_DATA_PLANE_ADDR": "127.0.0.1:0", "ROUTERO_CONTROL_PLANE_ADDR": "127.0.0.1:0",
           "ROUTERO_GRPC_ADDR": "127.0.0.1:0"}
    if value is None:
        env.pop(setting)
    else:
        env[setting] = str(tls / value)
    run = subprocess.run([str(BIN_DIR / "routero"), "up"], env=clean_env(env), cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert message in run.stderr, run.stderr
    assert "panicked" not in run.stderr
