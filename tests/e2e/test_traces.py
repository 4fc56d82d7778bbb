"""OpenTelemetry traces: `routero up` exporting spans over OTLP/gRPC to a receiver built on the
official opentelemetry-proto definitions (grpcio, not our code). One request's spans continue
the client's W3C trace context, nest stage by stage with GenAI attributes, carry the context on
to the provider, and hold no prompt or answer text; its log lines (JSON) carry the trace id."""

import json
import secrets
from concurrent import futures

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from conftest import Gateway, REPO, fake_requests, wait_until
from test_policies import CERBOS

PIPELINE = {"rules": [{"detector": "email", "action": "redact"}]}


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace receiver keeping every span it is sent, with its service name."""

    def __init__(self):
        self.spans = []

    def Export(self, request, context):  # noqa: N802 - the generated service's method name
        for resource_spans in request.resource_spans:
            service = attributes(resource_spans.resource.attributes).get("service.name")
            for scope in resource_spans.scope_spans:
                self.spans.extend((service, span) for span in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


def attributes(pairs):
    def value(v):
        kind = v.WhichOneof("value")
        return getattr(v, kind) if kind else None
    return {pair.key: value(pair.value) for pair in pairs}


@pytest.fixture
def receiver():
    collector = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield collector, port
    server.stop(0)


@pytest.fixture
def traced(receiver, fake_provider):
    collector, port = receiver
    gw = Gateway(fake_provider, "sqlite-up", extra_env={
        "ROUTERO_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "ROUTERO_LOG_FORMAT": "json",
        "ROUTERO_POLICIES_DIR": str(REPO / "policies"), "ROUTERO_CERBOS_BINARY": str(CERBOS),
        # The SDK's batch delay (5 s by default), shortened for the test.
        "OTEL_BSP_SCHEDULE_DELAY": "100"})
    yield gw, collector
    gw.close()


def test_one_requests_spans_nest_by_stage_continue_the_clients_trace_and_hold_no_text(traced, fake_provider):
    gw, collector = traced
    r = gw.admin("POST", "/models", {"name": "traced", "deployments": [
        {"credential": "fake", "model": "up-a"}, {"credential": "fake", "model": "up-b"}]})
    assert r.status_code == 201, r.text
    client = gw.guarded_client(PIPELINE)
    # The first deployment fails once: the request falls back to the second, two attempts.
    r = httpx.post(fake_provider + "/_fake/fault", json={"model": "up-a", "status": 500, "count": 1})
    assert r.status_code == 204, r.text

    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    prompt = "the secret plan is PROMPT-MARKER-7f3a, mail it to alice@example.com"
    reply = client.chat.completions.create(
        model="traced", messages=[{"role": "user", "content": prompt}],
        extra_headers={"traceparent": f"00-{trace_id}-{client_span}-01"})
    assert reply.choices[0].message.content.startswith("fake reply to:")

    def ours():
        return [(service, span) for service, span in collector.spans if span.trace_id.hex() == trace_id]
    wait_until(lambda: any(span.name == "relay" for _, span in ours()), timeout=20, what="the request's spans")
    spans = {span.span_id.hex(): span for _, span in ours()}
    assert {service for service, _ in ours()} == {"routero"}
    root = next(span for span in spans.values() if span.parent_span_id.hex() == client_span)
    assert root.name == "chat" and root.kind == root.SPAN_KIND_SERVER
    root_attributes = attributes(root.attributes)
    assert root_attributes["gen_ai.operation.name"] == "chat"
    assert root_attributes["gen_ai.request.model"] == "traced"
    assert root_attributes["gen_ai.provider.name"] == "openai"
    assert root_attributes["http.response.status_code"] == 200
    assert root_attributes["gen_ai.usage.input_tokens"] > 0 and root_attributes["gen_ai.usage.output_tokens"] > 0
    assert root_attributes["routero.key_id"] and root_attributes["trace_id"] == trace_id

    children = sorted((span for span in spans.values() if span.parent_span_id == root.span_id),
                      key=lambda span: span.start_time_unix_nano)
    assert [span.name for span in children] == ["authenticate", "authorize", "guard", "upstream", "upstream", "relay"]
    assert all(root.start_time_unix_nano <= c.start_time_unix_nano and c.end_time_unix_nano <= root.end_time_unix_nano
               for c in children), "every stage within the request"
    failed, served = (attributes(span.attributes) for span in children[3:5])
    assert (failed["gen_ai.request.model"], failed["error.type"]) == ("up-a", "upstream_error")
    assert children[3].status.code == children[3].status.STATUS_CODE_ERROR
    assert served["gen_ai.request.model"] == "up-b" and "error.type" not in served
    assert all(attributes(span.attributes).get("gen_ai.provider.name") == "openai" for span in children[3:5])

    # The provider was sent each attempt's own context, in the client's trace.
    sent = [r["traceparent"] for r in fake_requests(fake_provider) if "PROMPT-MARKER" in json.dumps(r["body"])]
    assert sent == [f"00-{trace_id}-{children[3].span_id.hex()}-01", f"00-{trace_id}-{children[4].span_id.hex()}-01"]

    # Nothing the client wrote or the provider answered is in any span.
    everything = b"".join(span.SerializeToString() for _, span in collector.spans)
    for text in (b"PROMPT-MARKER", b"alice@example.com", b"fake reply", b"secret plan", client.api_key.encode()):
        assert text not in everything

    # The failed attempt's warning is a JSON log line carrying the trace id.
    lines = [json.loads(line) for line in gw.processes["up"].output().splitlines() if line.startswith("{")]
    warned = [line for line in lines if "provider failed" in line.get("fields", {}).get("message", "")]
    assert warned and all(any(span.get("trace_id") == trace_id for span in line["spans"]) for line in warned)


def test_without_an_otlp_endpoint_no_trace_context_reaches_the_provider(fake_provider):
    gw = Gateway(fake_provider, "sqlite-up")
    try:
        issued = gw.new_key(models=["gpt-a"])
        gw.wait_for_key(issued["key"])
        parent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
        gw.client(issued["key"]).chat.completions.create(
            model="gpt-a", messages=[{"role": "user", "content": "UNTRACED-MARKER"}], extra_headers={"traceparent": parent})
        [sent] = [r for r in fake_requests(fake_provider) if "UNTRACED-MARKER" in json.dumps(r["body"])]
        assert sent["traceparent"] is None
    finally:
        gw.close()


def test_a_clients_tracestate_goes_nowhere_and_its_sampled_flag_decides_nothing(traced, fake_provider):
    gw, collector = traced
    issued = gw.new_key(models=["gpt-a"])
    gw.wait_for_key(issued["key"])
    trace_id = secrets.token_hex(16)
    r = httpx.post(gw.data_url + "/v1/chat/completions", timeout=10, headers={
        "Authorization": f"Bearer {issued['key']}", "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-00",
        "tracestate": "vendor=" + "x" * 200},
        json={"model": "gpt-a", "messages": [{"role": "user", "content": "STATE-MARKER"}]})
    assert r.status_code == 200, r.text
    # Not sampled by the client, kept by the gateway's own ratio (1): the spans arrive.
    wait_until(lambda: any(span.trace_id.hex() == trace_id for _, span in collector.spans), timeout=20,
               what="the request's spans")
    assert all(span.trace_state == "" for _, span in collector.spans if span.trace_id.hex() == trace_id)
    [sent] = [r for r in fake_requests(fake_provider) if "STATE-MARKER" in json.dumps(r["body"])]
    assert sent["traceparent"].startswith(f"00-{trace_id}-") and sent["traceparent"].endswith("-01")
    assert sent["tracestate"] is None


def test_a_new_trace_is_started_without_a_valid_traceparent(traced):
    gw, collector = traced
    issued = gw.new_key(models=["gpt-a"])
    gw.wait_for_key(issued["key"])
    for header in (None, "00-not-a-trace-01", "00-" + "0" * 32 + "-" + "1" * 16 + "-01"):
        before = len(collector.spans)
        r = httpx.post(gw.data_url + "/v1/chat/completions", timeout=10,
                       headers={"Authorization": f"Bearer {issued['key']}", **({"traceparent": header} if header else {})},
                       json={"model": "gpt-a", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200, r.text
        wait_until(lambda: any(span.name == "chat" for _, span in collector.spans[before:]), timeout=20,
                   what="the request span")
        root = next(span for _, span in collector.spans[before:] if span.name == "chat")
        assert root.parent_span_id == b"", header
        assert root.trace_id != bytes(16)
