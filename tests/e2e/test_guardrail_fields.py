"""Guardrails read every field, through the real data plane with the official openai SDK:
request fields beside message content (checked at the fake provider), response fields beside
content, whole and streamed (checked in the raw bytes the client gets), and every framing of
an event stream the relay accepts, or refuses to pass on unread.

The fake provider is scripted by the last user text (see `chat` in routero-testkit):
`field:<field>:<base64>` answers the text in that field, `frame:<framing>:<base64>` streams it
framed so."""

import base64
import json
import random
import uuid

import httpx
import openai
import pytest

from conftest import UPSTREAM_KEY, Gateway, fake_requests, provider_received

EMAIL = "alice.smith@example.com"
LOCAL = "alice.smith"  # any piece of the address reaching the other side is a leak
GITHUB = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
REDACTED = "[REDACTED:EMAIL]"

RULES = {"rules": [
    {"detector": "email", "action": "redact"},
    {"detector": "card_number", "action": "redact"},
    {"category": "secret", "action": "block"},
]}


@pytest.fixture(scope="module")
def guarded(fake_provider):
    gw = Gateway(fake_provider, "sqlite-up")
    yield gw, gw.guarded_client(RULES)
    gw.close()


def chat(client, content, **kwargs):
    return client.chat.completions.create(model="gpt-a", messages=[{"role": "user", "content": content}], **kwargs)


def b64(text):
    return base64.b64encode(text.encode()).decode()


def provider_saw(gw):
    """The body of the last request the provider received, and its JSON text."""
    body = fake_requests(gw.fake_url)[-1]["body"]
    return body, json.dumps(body, ensure_ascii=False)


def raw_stream(client, content):
    """Every byte of a streamed chat completion as the client receives it."""
    with client.chat.completions.with_streaming_response.create(
            model="gpt-a", messages=[{"role": "user", "content": content}], stream=True) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        return b"".join(response.iter_bytes())


def events(raw):
    """The data of each event the gateway sent (its output is LF-framed, `data: ` lines)."""
    text = raw.decode("utf-8")
    assert text.endswith("\n\n"), text[-200:]
    out = []
    for event in text[:-2].split("\n\n"):
        data = [line.removeprefix("data: ") for line in event.split("\n") if line.startswith("data: ")]
        others = [line for line in event.split("\n") if not line.startswith("data: ")]
        assert all(line == ":" for line in others), f"unexpected lines in {event!r}"
        if data:
            out.append("\n".join(data))
    return out


def chunks(raw):
    """The JSON chunks of a stream that ended with [DONE], and nothing after it."""
    data = events(raw)
    assert data[-1] == "[DONE]", data[-3:]
    return [json.loads(d) for d in data[:-1]]


def streamed_field(raw, get):
    """One field of every choice's delta, assembled over the stream."""
    out = ""
    for chunk in chunks(raw):
        assert "error" not in chunk, chunk
        for choice in chunk["choices"]:
            piece = get(choice["delta"])
            out += piece or ""
    return out


# --- Requests: every field the model is given is redacted before the provider sees it. ---

SCHEMA = {"type": "object", "properties": {"who": {"type": "string", "description": f"defaults to {EMAIL}"}}}
TOOLS = [{"type": "function", "function": {"name": "lookup", "description": f"Ask {EMAIL} for access",
                                           "parameters": SCHEMA}}]

REQUEST_CASES = {
    "tool description": (
        dict(messages=[{"role": "user", "content": "hi"}], tools=TOOLS),
        lambda b: b["tools"][0]["function"]["description"], f"Ask {REDACTED} for access"),
    "tool parameter schema": (
        dict(messages=[{"role": "user", "content": "hi"}], tools=TOOLS),
        lambda b: b["tools"][0]["function"]["parameters"]["properties"]["who"]["description"],
        f"defaults to {REDACTED}"),
    "legacy function": (
        dict(messages=[{"role": "user", "content": "hi"}],
             functions=[{"name": "lookup", "description": f"Ask {EMAIL}", "parameters": SCHEMA}]),
        lambda b: (b["functions"][0]["description"], b["functions"][0]["parameters"]["properties"]["who"]["description"]),
        (f"Ask {REDACTED}", f"defaults to {REDACTED}")),
    "message name": (
        dict(messages=[{"role": "user", "content": "hi", "name": EMAIL}]),
        lambda b: b["messages"][0]["name"], REDACTED),
    "response_format json_schema": (
        dict(messages=[{"role": "user", "content": "hi"}],
             response_format={"type": "json_schema", "json_schema": {
                 "name": "contact", "description": f"Contacts like {EMAIL}", "schema": SCHEMA}}),
        lambda b: (b["response_format"]["json_schema"]["description"],
                   b["response_format"]["json_schema"]["schema"]["properties"]["who"]["description"]),
        (f"Contacts like {REDACTED}", f"defaults to {REDACTED}")),
    "prediction": (
        dict(messages=[{"role": "user", "content": "hi"}],
             prediction={"type": "content", "content": f"Dear {EMAIL},"}),
        lambda b: b["prediction"]["content"], f"Dear {REDACTED},"),
    "second content part": (
        dict(messages=[{"role": "user", "content": [{"type": "text", "text": "first part"},
                                                    {"type": "text", "text": f"second {EMAIL}"}]}]),
        lambda b: [p["text"] for p in b["messages"][0]["content"]], ["first part", f"second {REDACTED}"]),
    "split across two messages": (
        dict(messages=[{"role": "user", "content": "write to alice.smith@exa"},
                       {"role": "user", "content": "mple.com now"}]),
        lambda b: [m["content"] for m in b["messages"]], [f"write to {REDACTED}", f"{REDACTED} now"]),
    "split across two parts": (
        dict(messages=[{"role": "user", "content": [{"type": "text", "text": "write to alice.smith@exa"},
                                                    {"type": "text", "text": "mple.com now"}]}]),
        lambda b: [p["text"] for p in b["messages"][0]["content"]], [f"write to {REDACTED}", f"{REDACTED} now"]),
    "zero-width space inside": (
        dict(messages=[{"role": "user", "content": "mail alice.smith\u200b@example.com please"}]),
        lambda b: b["messages"][0]["content"], f"mail {REDACTED} please"),
    "full-width characters": (
        dict(messages=[{"role": "user", "content": "mail ａｌｉｃｅ．ｓｍｉｔｈ＠ｅｘａｍｐｌｅ．ｃｏｍ please"}]),
        lambda b: b["messages"][0]["content"], f"mail {REDACTED} please"),
    "soft hyphens inside": (
        dict(messages=[{"role": "user", "content": "mail alice.smi\u00adth@exam\u00adple.com please"}]),
        lambda b: b["messages"][0]["content"], f"mail {REDACTED} please"),
    "no-break spaces between groups": (
        dict(messages=[{"role": "user", "content": "pay with 4242\u00a04242\u202f4242\u00a04242 today"}]),
        lambda b: b["messages"][0]["content"], "pay with [REDACTED:CARD_NUMBER] today"),
}


@pytest.mark.parametrize("case", REQUEST_CASES, ids=list(REQUEST_CASES))
def test_a_request_field_is_redacted_before_the_provider_sees_it(guarded, case):
    gw, client = guarded
    kwargs, get, expected = REQUEST_CASES[case]
    client.chat.completions.create(model="gpt-a", **kwargs)
    body, seen = provider_saw(gw)
    assert get(body) == expected, seen
    for leak in (EMAIL, LOCAL, "alice.smith@exa", "mple.com", "ａｌｉｃｅ", "\u200b"):
        assert leak not in seen, (leak, seen)


def test_token_id_input_is_refused_while_rules_apply(guarded):
    gw, client = guarded
    # Token ids no other request sends: the provider's record is searched for them.
    ids = [random.randrange(10**6, 10**7) for _ in range(3)]
    for tokens in ([ids], ids):
        with pytest.raises(openai.BadRequestError) as refused:
            client.embeddings.create(model="embed", input=tokens)
        assert refused.value.status_code == 400
        assert refused.value.body["code"] == "guardrail_uninspectable", refused.value.body
    assert not any(str(ids[0]) in json.dumps(r["body"]) for r in fake_requests(gw.fake_url)), \
        "a refused request reached the provider"
    # Text input on the same route is read, not refused.
    client.embeddings.create(model="embed", input=[f"row {EMAIL}"])
    body, seen = provider_saw(gw)
    assert body["input"] == [f"row {REDACTED}"], seen


@pytest.mark.parametrize("spoofed", [
    GITHUB.replace("ghp_", "gh\u0440_"),  # Cyrillic er for p
    "\u0455k-proj-" + "Xq7vR2mN9pL4tK8wZ3yB6cD1fG5hJ0aS",  # Cyrillic dze for s
    "\u0410\u041aIAIOSFODNN7EXAMPLE",  # Cyrillic A and K
])
def test_a_key_with_look_alike_letters_in_its_prefix_is_blocked(guarded, spoofed):
    gw, client = guarded
    marker = "req-" + uuid.uuid4().hex[:12]
    with pytest.raises(openai.BadRequestError) as refused:
        chat(client, f"deploy with {spoofed} tonight {marker}")
    assert refused.value.body["code"] == "guardrail_blocked", refused.value.body
    assert not provider_received(gw.fake_url, marker), "the blocked request reached the provider"


# --- Responses: every field the client gets is redacted, whole and streamed. ---

SAID = f"Contact {EMAIL} now"
EXPECTED = f"Contact {REDACTED} now"
ARGUMENTS = json.dumps({"to": EMAIL, "note": "hi"})
EXPECTED_ARGUMENTS = json.dumps({"to": REDACTED, "note": "hi"})

# field: (the text the provider answers, where it is in a message or delta, what the client gets)
RESPONSE_FIELDS = {
    "refusal": (SAID, lambda m: m.get("refusal"), EXPECTED),
    "reasoning_content": (SAID, lambda m: m.get("reasoning_content"), EXPECTED),
    "audio.transcript": (SAID, lambda m: (m.get("audio") or {}).get("transcript"), EXPECTED),
    "function_call": (ARGUMENTS, lambda m: (m.get("function_call") or {}).get("arguments"), EXPECTED_ARGUMENTS),
    "logprobs": (SAID, lambda m: m.get("content"), EXPECTED),
}


@pytest.mark.parametrize("field", RESPONSE_FIELDS)
def test_a_response_field_is_redacted_whole(guarded, field):
    _, client = guarded
    said, get, expected = RESPONSE_FIELDS[field]
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-a", messages=[{"role": "user", "content": f"field:{field}:{b64(said)}"}])
    text = raw.http_response.text
    completion = json.loads(text)
    [choice] = completion["choices"]
    assert get(choice["message"]) == expected, text
    assert EMAIL not in text and LOCAL not in text, text
    # logprobs would spell the text out token by token: dropped while rules apply.
    assert "logprobs" not in choice and '"bytes"' not in text, text
    parsed = raw.parse().choices[0]
    assert parsed.logprobs is None
    if field == "refusal":
        assert parsed.message.refusal == expected
    if field == "audio.transcript":
        assert parsed.message.audio.transcript == expected
    if field == "function_call":
        assert parsed.message.function_call.arguments == expected


@pytest.mark.parametrize("field", RESPONSE_FIELDS)
def test_a_response_field_is_redacted_streamed(guarded, field):
    _, client = guarded
    said, get, expected = RESPONSE_FIELDS[field]
    raw = raw_stream(client, f"field:{field}:{b64(said)}")
    assert streamed_field(raw, get) == expected, raw
    assert EMAIL.encode() not in raw and LOCAL.encode() not in raw, raw
    for chunk in chunks(raw):
        for choice in chunk["choices"]:
            assert "logprobs" not in choice, chunk
    assert b"logprobs" not in raw and b'"bytes"' not in raw, raw


def test_the_provider_really_sends_logprobs(fake_provider):
    """The fake's `logprobs` script does spell the text out, so their absence above is the
    gateway's doing."""
    body = {"model": "m", "messages": [{"role": "user", "content": f"field:logprobs:{b64(SAID)}"}]}
    r = httpx.post(fake_provider + "/v1/chat/completions", json=body,
                   headers={"Authorization": f"Bearer {UPSTREAM_KEY}"})
    tokens = r.json()["choices"][0]["logprobs"]["content"]
    assert "".join(t["token"] for t in tokens) == SAID
    assert bytes(b for t in tokens for b in t["bytes"]).decode() == SAID


@pytest.mark.parametrize("field", ["refusal", "reasoning_content", "audio.transcript", "function_call"])
def test_a_secret_in_a_response_field_is_blocked(guarded, field):
    _, client = guarded
    with pytest.raises(openai.BadRequestError) as refused:
        chat(client, f"field:{field}:{b64(f'token {GITHUB}')}")
    assert refused.value.body["code"] == "guardrail_blocked"
    assert GITHUB not in json.dumps(refused.value.body)

    raw = raw_stream(client, f"field:{field}:{b64(f'token {GITHUB}')}")
    data = events(raw)
    assert json.loads(data[-1])["error"]["code"] == "guardrail_blocked", data[-3:]
    assert GITHUB[:8].encode() not in raw, raw


# --- Streams: every framing the relay accepts delivers the redacted text. ---

FRAMED = f"Grüße — schreib an {EMAIL}, danke ✓"
FRAMED_EXPECTED = f"Grüße — schreib an {REDACTED}, danke ✓"


@pytest.mark.parametrize("framing", ["lf", "crlf", "cr", "nospace", "multiline", "comment", "utf8split"])
def test_every_framing_delivers_the_redacted_text(guarded, framing):
    _, client = guarded
    raw = raw_stream(client, f"frame:{framing}:{b64(FRAMED)}")
    assert streamed_field(raw, lambda d: d.get("content")) == FRAMED_EXPECTED, raw.decode()
    assert EMAIL.encode() not in raw and LOCAL.encode() not in raw, raw
    if framing == "comment":
        # The comment carrying the text is relayed without it.
        assert raw.startswith(b":\n\n"), raw[:100]


@pytest.mark.parametrize("framing", ["notjson", "notutf8", "oversize"])
def test_an_unreadable_event_ends_the_stream_with_an_error(guarded, framing):
    _, client = guarded
    raw = raw_stream(client, f"frame:{framing}:{b64(FRAMED)}")
    data = events(raw)
    assert json.loads(data[-1])["error"]["code"] == "guardrail_uninspectable", data[-3:]
    # Nothing after the error: no further chunk, no [DONE], nothing of the unreadable event.
    assert raw.endswith(b"\n\n") and raw.count(b"guardrail_uninspectable") == 1, raw[-300:]
    assert b"[DONE]" not in raw and b"not json" not in raw and b"xxxx" not in raw, raw[-300:]
    for d in data[:-1]:
        assert "error" not in json.loads(d), d
    assert EMAIL.encode() not in raw and LOCAL.encode() not in raw and b"danke" not in raw, raw

    # The SDK's own reading of such a stream raises the error.
    with pytest.raises(openai.APIError) as ended:
        for _ in chat(client, f"frame:{framing}:{b64(FRAMED)}", stream=True):
            pass
    body = ended.value.body if isinstance(ended.value.body, dict) else {}
    assert (body.get("code") or body.get("error", {}).get("code")) == "guardrail_uninspectable", body
