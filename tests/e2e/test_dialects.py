"""API dialects (issue 16): Anthropic deployments (`"provider": "anthropic"`, reached at
`{base_url}/v1/messages` with `x-api-key` and `anthropic-version`, requests and answers
translated to and from chat completions, streams included), and two more client surfaces:
`POST /v1/messages` for the official `anthropic` SDK and `POST /v1/responses` for the official
`openai` SDK, each served by either kind of deployment. Every surface gets the same keys,
guardrails (a secret in an Anthropic deployment's streamed tool arguments is caught) and audit."""
import base64
import json
import uuid

import anthropic
import httpx
import openai
import pytest

from conftest import CHUNKS, UPSTREAM_KEY, Gateway, fake_requests, provider_received, wait_until

GITHUB = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
EMAIL = "alice.smith@example.com"
PIPELINE = {"rules": [{"detector": "email", "action": "redact"}, {"category": "secret", "action": "block"}]}
WEATHER = {"name": "weather", "description": "Weather of a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


@pytest.fixture(scope="module")
def gw(fake_provider):
    gateway = Gateway(fake_provider, "sqlite-up")
    r = gateway.admin("POST", "/credentials", {"name": "claude", "provider": "anthropic", "api_key": UPSTREAM_KEY,
                                               "base_url": gateway.fake_url})
    assert r.status_code == 201, r.text
    r = gateway.admin("POST", "/models", {"name": "claude", "deployments": [{"credential": "claude",
                                                                             "model": "claude-up"}]})
    assert r.status_code == 201, r.text
    gateway.guarded_client(PIPELINE)
    key = gateway.new_key(models=["claude", "gpt-a"])
    gateway.wait_for_key(key["key"])
    gateway.key = key
    yield gateway
    gateway.close()


def openai_client(gw):
    return gw.client(gw.key["key"])


def anthropic_client(gw):
    return anthropic.Anthropic(base_url=gw.data_url, api_key=gw.key["key"], max_retries=0, timeout=10)


def last_to(gw, path):
    return [r for r in fake_requests(gw.fake_url) if r["path"] == path][-1]


def marker():
    return "m-" + uuid.uuid4().hex[:10]


def test_the_openai_sdk_reaches_an_anthropic_deployment_plain_streamed_and_with_tools(gw):
    client = openai_client(gw)
    plain = client.chat.completions.create(model="claude", max_tokens=50, stop=["END"], messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "say:hello"}])
    assert plain.choices[0].message.content == "hello" and plain.choices[0].finish_reason == "stop"
    assert plain.usage.prompt_tokens == 1 and plain.usage.completion_tokens == CHUNKS
    sent = last_to(gw, "/v1/messages")
    # Anthropic's shape: the system prompt apart, max_tokens, stop sequences, the key in
    # x-api-key (the fake refuses Authorization) and no OpenAI fields.
    assert sent["body"]["system"] == "Be brief." and sent["body"]["max_tokens"] == 50
    assert sent["body"]["stop_sequences"] == ["END"] and sent["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert sent["body"]["messages"] == [{"role": "user", "content": [{"type": "text", "text": "say:hello"}]}]

    chunks = list(client.chat.completions.create(model="claude", stream=True, stream_options={"include_usage": True},
                                                 messages=[{"role": "user", "content": "say:streamed from claude"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "streamed from claude"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == CHUNKS and not chunks[-1].choices

    tools = [{"type": "function", "function": {"name": "weather", "parameters": WEATHER["input_schema"]}}]
    arguments = {"city": "Paris"}
    called = client.chat.completions.create(model="claude", tools=tools, tool_choice="required",
                                            messages=[{"role": "user", "content": "call:" + json.dumps(arguments)}])
    call = called.choices[0].message.tool_calls[0]
    assert json.loads(call.function.arguments) == arguments and called.choices[0].finish_reason == "tool_calls"
    sent = last_to(gw, "/v1/messages")["body"]
    assert sent["tools"] == [{"name": "weather", "input_schema": WEATHER["input_schema"]}]
    assert sent["tool_choice"] == {"type": "any"}
    streamed = list(client.chat.completions.create(model="claude", tools=tools, stream=True, messages=[
        {"role": "user", "content": "call:" + json.dumps(arguments)}]))
    pieces = [tc.function.arguments for c in streamed if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert json.loads("".join(p or "" for p in pieces)) == arguments and len(pieces) > 2
    # The tool's result goes back as Anthropic's tool_result.
    client.chat.completions.create(model="claude", tools=tools, messages=[
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": call.id, "type": "function", "function": {
            "name": "weather", "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    turns = last_to(gw, "/v1/messages")["body"]["messages"]
    assert turns[1] == {"role": "assistant", "content": [{"type": "tool_use", "id": call.id, "name": "weather",
                                                          "input": arguments}]}
    assert turns[2] == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                                     "content": "sunny"}]}


def sent_to(gw, model):
    """The body the provider last got for `model`'s deployment: Anthropic's shape for claude,
    OpenAI's for gpt-a."""
    return last_to(gw, "/v1/messages" if model == "claude" else "/v1/chat/completions")["body"]


@pytest.mark.parametrize("model", ["claude", "gpt-a"])
def test_the_anthropic_sdk_is_served_on_v1_messages_by_either_kind_of_deployment(gw, model):
    client = anthropic_client(gw)
    message = client.messages.create(model=model, max_tokens=64, system="Be brief.",
                                     messages=[{"role": "user", "content": "say:bonjour"}])
    assert message.content[0].text == "bonjour" and message.stop_reason == "end_turn"
    assert message.model == model and message.usage.output_tokens == CHUNKS
    sent = sent_to(gw, model)
    if model == "claude":
        assert sent["system"] == "Be brief." and sent["max_tokens"] == 64
    else:
        assert sent["messages"][0] == {"role": "system", "content": "Be brief."} and sent["max_tokens"] == 64

    with client.messages.stream(model=model, max_tokens=64,
                                messages=[{"role": "user", "content": "say:a streamed hello"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "a streamed hello" and final.stop_reason == "end_turn" and final.usage.output_tokens == CHUNKS

    arguments = {"city": "Lyon"}
    called = client.messages.create(model=model, max_tokens=64, tools=[WEATHER],
                                    tool_choice={"type": "tool", "name": "weather"},
                                    messages=[{"role": "user", "content": "call:" + json.dumps(arguments)}])
    use = next(block for block in called.content if block.type == "tool_use")
    assert use.input == arguments and called.stop_reason == "tool_use"
    sent = sent_to(gw, model)
    if model == "claude":
        assert sent["tools"] == [WEATHER] and sent["tool_choice"] == {"type": "tool", "name": "weather"}
    else:
        assert sent["tools"] == [{"type": "function", "function": {
            "name": "weather", "description": WEATHER["description"], "parameters": WEATHER["input_schema"]}}]
        assert sent["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    with client.messages.stream(model=model, max_tokens=64, tools=[WEATHER],
                                messages=[{"role": "user", "content": "call:" + json.dumps(arguments)}]) as stream:
        final = stream.get_final_message()
    assert [b.input for b in final.content if b.type == "tool_use"] == [arguments]
    # The result of the tool, and a follow-up, in Anthropic's shape.
    follow = client.messages.create(model=model, max_tokens=64, tools=[WEATHER], messages=[
        {"role": "user", "content": "weather in Lyon?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": use.id, "name": "weather", "input": arguments}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "rain"},
                                     {"type": "text", "text": "say:thanks"}]}])
    assert follow.content[0].text == "thanks"
    turns = sent_to(gw, model)["messages"]
    if model == "claude":
        assert turns[1] == {"role": "assistant", "content": [
            {"type": "tool_use", "id": use.id, "name": "weather", "input": arguments}]}
        assert turns[2]["content"][0] == {"type": "tool_result", "tool_use_id": use.id, "content": "rain"}
    else:
        assert turns[1]["tool_calls"][0]["id"] == use.id
        assert json.loads(turns[1]["tool_calls"][0]["function"]["arguments"]) == arguments
        assert turns[2] == {"role": "tool", "tool_call_id": use.id, "content": "rain"}
        assert turns[3] == {"role": "user", "content": [{"type": "text", "text": "say:thanks"}]}
    # Only what Anthropic's API knows is sent to an Anthropic deployment.
    if model == "claude":
        assert set(sent_to(gw, model)) <= {"model", "system", "messages", "max_tokens", "temperature", "top_p",
                                           "stream", "stop_sequences", "metadata", "tools", "tool_choice"}


def test_v1_messages_requests_are_guarded_and_refusals_are_in_anthropics_shape(gw):
    client = anthropic_client(gw)
    seen = marker()
    client.messages.create(model="claude", max_tokens=16, system=f"owner {EMAIL}", messages=[
        {"role": "user", "content": [{"type": "text", "text": f"hello {seen}"}]}])
    sent = json.dumps(last_to(gw, "/v1/messages")["body"])
    assert seen in sent and EMAIL not in sent and "[REDACTED:EMAIL]" in sent, sent

    secret = marker()
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model="gpt-a", max_tokens=16, messages=[
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": f"{GITHUB} {secret}"}]}])
    assert refused.value.body["error"]["code"] == "guardrail_blocked", refused.value.body
    assert refused.value.body["type"] == "error" and refused.value.body["error"]["type"] == "invalid_request_error"
    assert not provider_received(gw.fake_url, secret)

    with pytest.raises(anthropic.AuthenticationError) as unknown:
        anthropic.Anthropic(base_url=gw.data_url, api_key="sk-rt-nope", max_retries=0).messages.create(
            model="claude", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    assert unknown.value.body["error"]["code"] == "invalid_api_key"
    with pytest.raises(anthropic.PermissionDeniedError) as denied:
        client.messages.create(model="gpt-b", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    assert denied.value.body["error"]["code"] == "model_not_allowed"
    # What cannot be said to a deployment is refused with its reason, and nothing is sent,
    # whichever kind of deployment serves the model.
    for model in ("claude", "gpt-a"):
        for body, reason in [
            ({"messages": [{"role": "user", "content": "{m}"}]}, "max_tokens"),
            ({"max_tokens": 5, "messages": [{"role": "user", "content": [
                {"type": "text", "text": "{m}"}, {"type": "document", "source": {"type": "text", "data": "x"}}]}]},
             "document"),
            ({"max_tokens": 5, "tools": [{"type": "web_search_20250305", "name": "web_search"}],
              "messages": [{"role": "user", "content": "{m}"}]}, "tools"),
            ({"max_tokens": 5, "messages": "{m}"}, "messages"),
            ({"max_tokens": 5, "messages": [{"role": "system", "content": "{m}"}]}, "role"),
        ]:
            seen = marker()
            body = json.loads(json.dumps(body).replace("{m}", seen))
            r = httpx.post(gw.data_url + "/v1/messages", json={"model": model, **body},
                           headers={"x-api-key": gw.key["key"]})
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request", r.text
            assert reason in r.json()["error"]["message"], r.text
            assert not provider_received(gw.fake_url, seen), body
    # An Anthropic deployment embeds nothing.
    with pytest.raises(openai.BadRequestError) as refused:
        openai_client(gw).embeddings.create(model="claude", input="hi")
    assert "chat completions only" in str(refused.value)


def test_a_secret_in_an_anthropic_streamed_tool_argument_is_caught_on_every_surface(gw):
    # The request carries the arguments in base64 (no detector's business): it reaches the
    # provider, and only the provider's streamed answer has the token.
    def call():
        """A marker to find the request at the provider, and messages asking for the token."""
        seen = marker()
        arguments = base64.b64encode(json.dumps({"auth": GITHUB}).encode()).decode()
        return seen, [{"role": "user", "content": seen}, {"role": "user", "content": f"field:tool_call:{arguments}"}]
    received = []

    seen, messages = call()
    with pytest.raises(openai.APIError) as refused:
        for chunk in openai_client(gw).chat.completions.create(model="claude", stream=True, messages=messages):
            for choice in chunk.choices:
                received.extend(tc.function.arguments or "" for tc in choice.delta.tool_calls or [])
    # Ended mid-stream (a refusal of the request would be a status error).
    assert not isinstance(refused.value, openai.APIStatusError) and refused.value.code == "guardrail_blocked"
    assert provider_received(gw.fake_url, seen)

    seen, messages = call()
    with pytest.raises(anthropic.APIStatusError) as refused:
        with anthropic_client(gw).messages.stream(model="claude", max_tokens=64, messages=messages) as stream:
            for event in stream:
                if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                    received.append(event.delta.partial_json)
    assert refused.value.status_code == 200 and refused.value.body["error"]["code"] == "guardrail_blocked"
    assert provider_received(gw.fake_url, seen)

    # A Responses stream says so in its own error event, and ends.
    seen, messages = call()
    events = list(openai_client(gw).responses.create(model="claude", input=messages, stream=True))
    received.extend(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert events[-1].type == "error" and events[-1].code == "guardrail_blocked", events[-1]
    assert provider_received(gw.fake_url, seen)
    assert "ghp_" not in "".join(received), received


@pytest.mark.parametrize("model", ["gpt-a", "claude"])
def test_the_openai_sdk_is_served_on_v1_responses(gw, model):
    client = openai_client(gw)
    plain = client.responses.create(model=model, instructions="Be brief.", input="say:from responses",
                                    max_output_tokens=40)
    assert plain.output_text == "from responses" and plain.status == "completed" and plain.model == model
    assert plain.usage.output_tokens == CHUNKS
    sent = sent_to(gw, model)
    if model == "claude":
        assert sent["system"] == "Be brief." and sent["max_tokens"] == 40
    else:
        assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
        assert sent["max_completion_tokens"] == 40
    events = list(client.responses.create(model=model, input="say:streamed response", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "streamed response"
    assert events[-1].response.output_text == "streamed response"
    arguments = {"city": "Nice"}
    tools = [{"type": "function", "name": "weather", "parameters": WEATHER["input_schema"]}]
    called = client.responses.create(model=model, tools=tools, input="call:" + json.dumps(arguments))
    call = next(item for item in called.output if item.type == "function_call")
    assert json.loads(call.arguments) == arguments and call.name == "lookup"
    sent = sent_to(gw, model)
    assert sent["tools"] == ([{"name": "weather", "input_schema": WEATHER["input_schema"]}] if model == "claude" else
                             [{"type": "function", "function": {"name": "weather", "parameters": WEATHER["input_schema"]}}])
    follow = client.responses.create(model=model, tools=tools, input=[
        {"role": "user", "content": "weather?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        {"role": "user", "content": [{"type": "input_text", "text": "say:noted"}]}])
    assert follow.output_text == "noted"
    turns = sent_to(gw, model)["messages"]
    if model == "claude":
        assert turns[1]["content"][0] == {"type": "tool_use", "id": call.call_id, "name": "lookup", "input": arguments}
        assert turns[2]["content"][0] == {"type": "tool_result", "tool_use_id": call.call_id, "content": "sunny"}
    else:
        assert turns[1]["tool_calls"][0]["id"] == call.call_id
        assert turns[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"}
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=model, input="hi", previous_response_id="resp_1")
    assert "previous_response_id" in str(refused.value)


def test_each_surface_leaves_its_audit_event(gw):
    issued = gw.new_key(models=["claude"])
    gw.wait_for_key(issued["key"])
    openai.OpenAI(api_key=issued["key"], base_url=gw.data_url + "/v1", max_retries=0).chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "hi"}])
    openai.OpenAI(api_key=issued["key"], base_url=gw.data_url + "/v1", max_retries=0).responses.create(
        model="claude", input="hi")
    anthropic.Anthropic(base_url=gw.data_url, api_key=issued["key"], max_retries=0).messages.create(
        model="claude", max_tokens=8, messages=[{"role": "user", "content": "hi"}])

    def endpoints():
        found = gw.admin("GET", "/audit/events", params={"type": "request.routed", "actor": issued["key_id"],
                                                         "limit": 500}).json()["events"]
        return sorted(e["event"]["details"]["endpoint"] for e in found)
    wait_until(lambda: endpoints() == ["chat/completions", "messages", "responses"], what="each surface audited")


def test_a_failing_openai_deployment_falls_back_to_an_anthropic_one(gw):
    name = "mixed-" + uuid.uuid4().hex[:6]
    primary = "up-" + uuid.uuid4().hex[:6]
    r = gw.admin("POST", "/models", {"name": name, "deployments": [{"credential": "fake", "model": primary},
                                                                    {"credential": "claude", "model": "claude-up"}]})
    assert r.status_code == 201, r.text
    key = gw.new_key(models=[name])["key"]
    gw.wait_for_key(key)
    assert httpx.post(gw.fake_url + "/_fake/fault", json={"model": primary, "status": 503, "count": 1}).status_code == 204
    seen = marker()
    served = gw.client(key).chat.completions.create(model=name, messages=[{"role": "user", "content": f"say:{seen}"}])
    assert served.choices[0].message.content == seen
    tried = [(r["path"], r["body"]["model"]) for r in fake_requests(gw.fake_url) if seen in json.dumps(r["body"])]
    assert tried == [("/v1/chat/completions", primary), ("/v1/messages", "claude-up")], tried
