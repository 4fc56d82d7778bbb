"""The audit pipeline of separate processes: control plane and data plane publish to a real
Kafka-protocol broker (tansu) through their spools, `routero audit-writer` chains the events
into PostgreSQL and re-publishes them to `routero.audit.v1`, where a plain Kafka client
(confluent-kafka, as a SIEM would) checks the chain, and writes hourly gzipped NDJSON objects to an S3-compatible server (moto).
Broker and writer failures lose nothing."""

import contextlib
import gzip
import hashlib
import json
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import boto3
import openai
import pytest
from confluent_kafka import Consumer

from certs import certificate_authority, issue
from conftest import BIN_DIR, Gateway, Process, clean_env, create_postgres_database, free_port, ready, secret, wait_until
from kafka import Broker, S3Server, TlsFront

SIEM_TOPIC = "routero.audit.v1"


@pytest.fixture(scope="module")
def s3():
    server = S3Server()
    yield server
    server.stop()


class AuditWriter:
    """`routero audit-writer` on its own PostgreSQL database."""

    def __init__(self, broker, workdir, s3_bucket, kafka):
        self.workdir = workdir
        self.s3_bucket = s3_bucket
        self.env = {
            "ROUTERO_AUDIT_S3_ENDPOINT": broker.s3.url,
            "ROUTERO_AUDIT_S3_BUCKET": s3_bucket,
            "ROUTERO_AUDIT_S3_ACCESS_KEY_ID": "test",
            "ROUTERO_AUDIT_S3_SECRET_ACCESS_KEY": "test-secret",
            "ROUTERO_AUDIT_S3_INTERVAL": "1s",
            **kafka,
            "ROUTERO_AUDIT_DATABASE_URL": create_postgres_database(),
            "ROUTERO_AUDIT_SIGNING_KEY": secret(),
            "ROUTERO_KAFKA_SESSION_TIMEOUT": "6s",
            "ROUTERO_KAFKA_TOPIC_PARTITIONS": "3",
            "ROUTERO_KAFKA_REPLICATION_FACTOR": "1",
            "ROUTERO_AUDIT_CHECKPOINT_INTERVAL": "1s",
        }
        self.process = None
        self.start()

    def start(self):
        self.process = Process("audit-writer", [str(BIN_DIR / "routero"), "audit-writer"], env=self.env,
                               cwd=self.workdir)
        wait_until(lambda: "audit writer consuming" in self.process.output(), what="audit writer up")

    def kill(self):
        """SIGKILL: no drain, no final checkpoint, offsets as the last commit left them."""
        self.process.proc.kill()
        self.process.proc.wait()

    def stop(self):
        self.process.stop()

    def audit(self, *args):
        done = subprocess.run([str(BIN_DIR / "routero"), "audit", *args], capture_output=True, text=True,
                              env=clean_env(self.env), cwd=self.workdir)
        return done.returncode, done.stdout, done.stderr

    def records(self):
        code, out, err = self.audit("export")
        assert code == 0, err
        return [line for line in map(json.loads, out.splitlines()) if line["kind"] == "record"]


@contextlib.contextmanager
def running_pipeline(s3, fake_provider, broker, kafka, front=None):
    """An audit writer and a split gateway publishing through `broker`, all with the
    Kafka settings `kafka`."""
    gw = writer = None
    try:
        workdir = tempfile.mkdtemp(prefix="routero-writer-")
        bucket = "audit-" + uuid.uuid4().hex[:8]
        s3.create_bucket(bucket)
        writer = AuditWriter(broker, workdir, bucket, kafka)
        gw = Gateway(fake_provider, "postgres",
                     extra_env={**kafka, "ROUTERO_AUDIT_SPOOL_DIR": workdir + "/dp-spool"},
                     cp_env={**kafka, "ROUTERO_AUDIT_SPOOL_DIR": workdir + "/cp-spool",
                             "ROUTERO_AUDIT_DATABASE_URL": writer.env["ROUTERO_AUDIT_DATABASE_URL"]})
        yield writer, gw
    finally:
        for name, logs in [("gateway", gw and gw.logs()), ("writer", writer and writer.process.output()[-4000:]),
                           ("broker", broker.logs()), ("TLS front", front and front.logs())]:
            print(f"=== {name} ===\n{logs}")
        if gw:
            gw.close()
        if writer:
            writer.stop()


@pytest.fixture
def pipeline(s3, fake_provider):
    broker = Broker(s3)
    try:
        with running_pipeline(s3, fake_provider, broker, {"ROUTERO_KAFKA_BROKERS": broker.address}) as (writer, gw):
            yield broker, writer, gw
    finally:
        broker.stop()


def tenant_records(writer):
    return [r for r in writer.records() if r["tenant_id"] != "_unattributed"]


def routed_for(records, key_id):
    return [r for r in records if r["event"]["action"] == "request.routed" and r["event"]["actor"]["id"] == key_id]


def wait_for_routed(broker, writer, key_id, count, timeout=60):
    """The writer's records once `count` routed events of `key_id` are chained. On a timeout it
    says how many were chained and how many are on the events topic, so a failure points at
    the part that kept them (the writer, or the data plane and the broker)."""
    try:
        wait_until(lambda: len(routed_for(tenant_records(writer), key_id)) >= count, timeout=timeout,
                   what=f"{count} request.routed events of {key_id}")
    except AssertionError as error:
        chained = len(routed_for(tenant_records(writer), key_id))
        raise AssertionError(f"{error}; chained: {chained}; on the events topic: {events_on_topic(broker, key_id)}") from None
    return tenant_records(writer)


def events_on_topic(broker, key_id, seconds=20):
    """Actions on the events topic, read from the start by a consumer of its own: the key's
    routed requests, and rejections."""
    consumer = Consumer({"bootstrap.servers": broker.address, "group.id": "probe-" + uuid.uuid4().hex,
                         "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    consumer.subscribe(["routero.audit.events"])
    seen = {"request.routed": 0, "audit.message_rejected": 0, "other": 0}
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None or message.error():
                continue
            event = json.loads(message.value())
            if event.get("action") == "request.routed" and event["actor"]["id"] == key_id:
                seen["request.routed"] += 1
            elif event.get("action") == "audit.message_rejected":
                seen["audit.message_rejected"] += 1
            else:
                seen["other"] += 1
    finally:
        consumer.close()
    return seen


def key_and_client(gw):
    issued = gw.new_key(models=["gpt-a"])
    gw.wait_for_key(issued["key"])
    return issued, gw.client(issued["key"])


def chat(client, n):
    for _ in range(n):
        client.chat.completions.create(model="gpt-a", messages=[{"role": "user", "content": "hello"}])


def assert_once_and_verified(writer, records):
    ids = [r["event"]["event_id"] for r in records]
    assert len(ids) == len(set(ids)), "an event was chained twice"
    code, out, err = writer.audit("verify")
    assert code == 0, out + err


def test_key_lifecycle_events_arrive_once_chained_and_verified(pipeline):
    broker, writer, gw = pipeline
    issued, client = key_and_client(gw)
    chat(client, 10)
    gw.admin("POST", "/key/delete", {"key_ids": [issued["key_id"]]})

    served_after = []  # requests that got in before the revocation reached the data plane

    def refused():
        try:
            chat(client, 1)
            served_after.append(1)
            return False
        except openai.AuthenticationError:
            return True
    # Revocation reaches the data plane in milliseconds (bench/README.md).
    wait_until(refused, timeout=5, what="the revoked key refused")

    wait_until(lambda: any(r["event"]["action"] == "key.revoked" for r in tenant_records(writer)), timeout=60,
               what="key.revoked chained")
    records = wait_for_routed(broker, writer, issued["key_id"], 10)
    actions = [r["event"]["action"] for r in records]
    assert actions.count("key.created") == 1 and actions.count("key.revoked") == 1, actions
    assert len(routed_for(records, issued["key_id"])) == 10 + len(served_after)
    seqs = [r["seq"] for r in records]
    assert seqs == list(range(1, len(seqs) + 1)), "one gapless chain per tenant"
    # The refused request has no tenant to be charged to; it is chained under _unattributed.
    wait_until(lambda: any(r["event"]["action"] == "request.blocked" and r["event"]["reason_code"] == "invalid_api_key"
                           for r in writer.records()), timeout=60, what="request.blocked chained")
    assert_once_and_verified(writer, writer.records())


def test_a_broker_outage_loses_no_event(pipeline):
    broker, writer, gw = pipeline
    issued, client = key_and_client(gw)
    chat(client, 10)
    broker.stop()
    chat(client, 20)  # served while the broker is down: the events wait in the data plane's spool
    # The data plane restarts before the broker is back: only the spool on disk has the events.
    gw.stop("data-plane")
    spooled = sum(f.stat().st_size for f in (Path(writer.workdir) / "dp-spool").glob("*.spool"))
    assert spooled > 0, "the events are in the spool while the broker is down"
    gw.start_data_plane()
    wait_until(lambda: ready(gw.data_url + "/readyz"), what="data plane back")
    chat(client, 5)
    broker.start()
    chat(client, 5)
    records = wait_for_routed(broker, writer, issued["key_id"], 40, timeout=90)
    assert len(routed_for(records, issued["key_id"])) == 40
    assert_once_and_verified(writer, records)


def test_killing_the_writer_mid_traffic_neither_loses_nor_duplicates(pipeline):
    broker, writer, gw = pipeline
    issued, client = key_and_client(gw)
    traffic = threading.Thread(target=chat, args=(client, 150))
    traffic.start()
    wait_until(lambda: len(routed_for(tenant_records(writer), issued["key_id"])) >= 20, timeout=60,
               what="the writer busy")
    writer.kill()
    time.sleep(1)
    writer.start()
    traffic.join()
    records = wait_for_routed(broker, writer, issued["key_id"], 150, timeout=90)
    assert len(routed_for(records, issued["key_id"])) == 150
    assert_once_and_verified(writer, records)


def link_hash(prev_hash, record):
    """SHA-256(prev_hash ‖ canonical {event, seq, tenant_id}): sorted keys, no whitespace."""
    canonical = json.dumps({"event": record["event"], "seq": record["seq"], "tenant_id": record["tenant_id"]},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical).hexdigest()


def verify_received(records):
    """A SIEM's check of one tenant's chain as received; returns the first problem or None."""
    previous = None
    for record in records:
        if previous is not None:
            if record["seq"] != previous["seq"] + 1:
                return f"seq {record['seq']} after {previous['seq']}"
            if record["prev_hash"] != previous["hash"]:
                return f"seq {record['seq']} does not follow {previous['seq']}"
        if link_hash(record["prev_hash"], record) != record["hash"]:
            return f"seq {record['seq']} modified"
        previous = record
    return None


def cut_tail(writer, tenant, keep):
    """What an operator with the audit database's credentials can do: drop the append-only
    triggers and delete a tenant's records and checkpoints after `keep`."""
    url = writer.env["ROUTERO_AUDIT_DATABASE_URL"]
    subprocess.run(["psql", url, "-q", "-v", "ON_ERROR_STOP=1", "-c",
                    "ALTER TABLE audit_records DISABLE TRIGGER audit_records_append_only; "
                    "ALTER TABLE audit_checkpoints DISABLE TRIGGER audit_checkpoints_append_only; "
                    f"DELETE FROM audit_records WHERE tenant_id = '{tenant}' AND seq > {keep}; "
                    f"DELETE FROM audit_checkpoints WHERE tenant_id = '{tenant}' AND seq > {keep};"],
                   check=True)


def test_a_siem_consumer_verifies_the_chain_it_receives_and_witnesses_a_cut(pipeline):
    broker, writer, gw = pipeline
    issued, client = key_and_client(gw)
    chat(client, 5)
    stored = wait_for_routed(broker, writer, issued["key_id"], 5)
    tenant = stored[0]["tenant_id"]
    head = stored[-1]["seq"]

    consumer = Consumer({"bootstrap.servers": broker.address, "group.id": "siem-" + uuid.uuid4().hex,
                         "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    consumer.subscribe([SIEM_TOPIC])
    received, checkpoints = [], []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and not (
                len([r for r in received if r["tenant_id"] == tenant]) >= len(stored)
                and any(c["tenant_id"] == tenant and c["seq"] >= head for c in checkpoints)):
            message = consumer.poll(1.0)
            if message is None or message.error():
                continue
            line = json.loads(message.value())
            assert message.key().decode() == line["tenant_id"], "keyed by tenant"
            kind = line.pop("kind")
            assert kind in ("record", "checkpoint"), kind
            (received if kind == "record" else checkpoints).append(line)
    finally:
        consumer.close()
    mine = [r for r in received if r["tenant_id"] == tenant]
    assert [r["seq"] for r in mine] == [r["seq"] for r in stored], "every record, in chain order"
    assert verify_received(mine) is None
    assert mine[0]["prev_hash"] == "0" * 64
    signed = [c for c in checkpoints if c["tenant_id"] == tenant]
    assert signed and all(any(r["seq"] == c["seq"] and r["hash"] == c["hash"] for r in mine) for c in signed), \
        "each checkpoint pins a record the SIEM has"

    # The check can fail: a record altered in transit is named.
    forged = json.loads(json.dumps(mine))
    forged[2]["event"]["outcome"] = "failure"
    assert verify_received(forged) == f"seq {forged[2]['seq']} modified"
    del forged[2]
    assert verify_received(forged) is not None

    # The database's tail is cut; what the SIEM topic holds shows it.
    witnessed = max(c["seq"] for c in signed)
    cut_tail(writer, tenant, witnessed - 2)
    code, out, err = writer.audit("verify", "--tenant", tenant)
    assert code == 0, out + err + " (alone, a cut chain verifies)"
    witness = Path(writer.workdir) / "siem-witness.jsonl"
    witness.write_text("".join(json.dumps(dict(c, kind="checkpoint")) + "\n" for c in checkpoints))
    code, out, err = writer.audit("verify", "--tenant", tenant, "--witness", str(witness))
    assert code == 1 and f"tenant {tenant}: seq {witnessed - 1} deleted" in out, out + err


def s3_objects(s3, bucket):
    """Every object in the bucket: name -> gunzipped NDJSON lines (read with boto3)."""
    client = boto3.client("s3", endpoint_url=s3.url, aws_access_key_id="test", aws_secret_access_key="test",
                          region_name="us-east-1")
    names = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {name: [json.loads(line) for line in
                   gzip.decompress(client.get_object(Bucket=bucket, Key=name)["Body"].read()).decode().splitlines()]
            for name in names}


def test_chained_records_land_in_s3_as_gzipped_ndjson_per_hour_with_their_checkpoints(pipeline, s3):
    broker, writer, gw = pipeline
    issued, client = key_and_client(gw)
    chat(client, 5)
    stored = wait_for_routed(broker, writer, issued["key_id"], 5)
    tenant = stored[0]["tenant_id"]
    head = stored[-1]["seq"]

    def exported():
        objects = s3_objects(s3, writer.s3_bucket)
        return sorted((line for name, lines in objects.items() if name.startswith(f"routero-audit/{tenant}/")
                       for line in lines), key=lambda line: line["seq"])

    def checkpoints():
        objects = s3_objects(s3, writer.s3_bucket)
        return [line for name, lines in objects.items()
                if name.startswith(f"routero-audit/checkpoints/{tenant}/") for line in lines]

    wait_until(lambda: len(exported()) >= len(stored), timeout=30, what="records in S3")
    wait_until(lambda: any(c["seq"] >= head for c in checkpoints()), timeout=30, what="the head's checkpoint in S3")
    objects = s3_objects(s3, writer.s3_bucket)
    for name, lines in objects.items():
        if name.startswith("routero-audit/checkpoints/"):
            assert [line["kind"] for line in lines] == ["checkpoint"], name
            assert name.endswith(f"/{lines[0]['seq']:020}.ndjson.gz"), name
            continue
        time = lines[0]["event"]["time"]
        hour = f"{time[:4]}/{time[5:7]}/{time[8:10]}/{time[11:13]}"
        assert f"/{hour}/" in name and name.endswith(".ndjson.gz"), name
        assert all(line["kind"] == "record" for line in lines)
        first, last = name.removesuffix(".ndjson.gz").rsplit("/", 1)[1].split("-")
        assert [int(first), int(last)] == [lines[0]["seq"], lines[-1]["seq"]], "named by its sequence range"
    records = exported()
    assert records[:len(stored)] == stored, "the same records as the database, in chain order"
    assert verify_received(records) is None

    # The S3 export is the witness of a cut tail.
    witnessed = max(c["seq"] for c in checkpoints())
    cut_tail(writer, tenant, witnessed - 1)
    code, out, err = writer.audit("verify", "--tenant", tenant)
    assert code == 0, out + err
    code, out, err = writer.audit("verify", "--tenant", tenant, "--witness", f"s3://{writer.s3_bucket}/routero-audit/")
    assert code == 1 and f"tenant {tenant}: seq {witnessed} deleted" in out, out + err


def test_a_message_the_broker_will_never_take_is_recorded_and_skipped(pipeline):
    """A spooled event too large for the broker (here planted in the data plane's spool, as a
    disk fault or an older version could leave it) is not retried forever ahead of the rest:
    it is replaced by audit.message_rejected with its SHA-256, and later events flow."""
    broker, writer, gw = pipeline
    issued, client = key_and_client(gw)
    chat(client, 2)
    wait_for_routed(broker, writer, issued["key_id"], 2)
    gw.stop("data-plane")
    spool = Path(writer.workdir) / "dp-spool"
    segment = sorted(spool.glob("*.spool"))[-1]
    huge = json.dumps({"event_id": str(uuid.uuid4()), "tenant_id": "_unattributed", "time": "2026-11-29T00:00:00.000Z",
                       "actor": {"kind": "system", "id": None, "source_ip": None, "user_agent": None},
                       "action": "request.failed", "resource": {"kind": "x", "id": None}, "outcome": "failure",
                       "reason_code": None, "request_id": None, "policy_version": None,
                       "details": {"padding": "x" * (2 * 1024 * 1024)}}).encode()
    with open(segment, "ab") as f:
        f.write(huge + b"\n")
    gw.start_data_plane()
    wait_until(lambda: ready(gw.data_url + "/readyz"), what="data plane back")
    chat(client, 3)
    wait_for_routed(broker, writer, issued["key_id"], 5, timeout=90)
    digest = hashlib.sha256(huge).hexdigest()
    rejected = [r["event"] for r in writer.records() if r["event"]["action"] == "audit.message_rejected"]
    assert any(e["details"].get("sha256") == digest and e["reason_code"] == "refused_by_broker" for e in rejected), rejected
    assert all("padding" not in json.dumps(e) for e in rejected), "never its bytes"
    assert_once_and_verified(writer, writer.records())


def test_events_travel_through_a_tls_front_that_requires_client_certificates(s3, fake_provider, tmp_path):
    """The brokers behind TLS with client certificates (stunnel4 in front of tansu, which tells
    clients to use the front): the services' events arrive chained and verified; a writer
    without a client certificate is refused at the handshake and does not start."""
    certificate_authority(tmp_path)
    issue(tmp_path, "broker", "IP:127.0.0.1")
    issue(tmp_path, "client", "DNS:routero.test", usage="clientAuth")
    port = free_port()
    broker = Broker(s3, advertised_port=port)
    front = TlsFront(broker, port, tmp_path)
    kafka = {"ROUTERO_KAFKA_BROKERS": front.address, "ROUTERO_KAFKA_TLS_CA": str(tmp_path / "ca.crt"),
             "ROUTERO_KAFKA_TLS_CERT": str(tmp_path / "client.crt"),
             "ROUTERO_KAFKA_TLS_KEY": str(tmp_path / "client.key")}
    try:
        with running_pipeline(s3, fake_provider, broker, kafka, front) as (writer, gw):
            issued, client = key_and_client(gw)
            chat(client, 3)
            wait_until(lambda: len(routed_for(tenant_records(writer), issued["key_id"])) == 3, timeout=60,
                       what="the requests chained through the TLS front")
            records = tenant_records(writer)
            assert [r["event"]["action"] for r in records].count("key.created") == 1
            assert_once_and_verified(writer, records)
            assert "peer did not return a certificate" not in front.logs()

            without = {name: value for name, value in writer.env.items()
                       if name not in ("ROUTERO_KAFKA_TLS_CERT", "ROUTERO_KAFKA_TLS_KEY")}
            refused = subprocess.run([str(BIN_DIR / "routero"), "audit-writer"], env=clean_env(without),
                                     capture_output=True, text=True, timeout=120, cwd=tmp_path)
            assert refused.returncode != 0
            assert "creating the audit topics" in refused.stderr, refused.stderr[-2000:]
            assert "peer did not return a certificate" in front.logs()

            # The broker's name is checked: its certificate names 127.0.0.1, not localhost.
            misnamed = {**writer.env, "ROUTERO_KAFKA_BROKERS": f"localhost:{port}"}
            refused = subprocess.run([str(BIN_DIR / "routero"), "audit-writer"], env=clean_env(misnamed),
                                     capture_output=True, text=True, timeout=120, cwd=tmp_path)
            assert refused.returncode != 0
            assert "creating the audit topics" in refused.stderr, refused.stderr[-2000:]
    finally:
        front.stop()
        broker.stop()
