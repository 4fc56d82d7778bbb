"""Provider adapters (issue 16): an Azure OpenAI credential (`"provider": "azure_openai"`, the
resource endpoint as base URL) reached as Azure expects — the route's deployment model in the
path, `api-version` in the query, the key in `api-key`, never `Authorization` — by the official
`openai` SDK through the gateway: plain, streamed, a tool call, and embeddings."""
import json

import pytest

from conftest import CHUNKS, UPSTREAM_KEY, Gateway


@pytest.fixture(scope="module")
def azure(fake_provider):
    gw = Gateway(fake_provider, "sqlite-up")
    r = gw.admin("POST", "/credentials", {"name": "azure", "provider": "azure_openai", "api_key": UPSTREAM_KEY,
                                          "base_url": gw.fake_url})
    assert r.status_code == 201, r.text
    r = gw.admin("POST", "/models", {"name": "gpt-azure", "deployments": [{"credential": "azure",
                                                                          "model": "my-gpt/deployment"}]})
    assert r.status_code == 201, r.text
    r = gw.admin("POST", "/models", {"name": "embed-azure", "deployments": [{"credential": "azure",
                                                                            "model": "my-embedder"}]})
    assert r.status_code == 201, r.text
    issued = gw.new_key(models=["gpt-azure", "embed-azure"])
    gw.wait_for_key(issued["key"])
    yield gw, gw.client(issued["key"])
    gw.close()


def test_plain_streamed_and_tool_calls_reach_an_azure_deployment(azure):
    _, client = azure
    plain = client.chat.completions.create(model="gpt-azure", messages=[{"role": "user", "content": "say:hello"}])
    # The fake answers as the deployment named in the path (encoded: it stays one segment).
    assert plain.choices[0].message.content == "hello" and plain.model == "my-gpt/deployment"
    chunks = list(client.chat.completions.create(model="gpt-azure", stream=True,
                                                 messages=[{"role": "user", "content": "say:streamed text"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "streamed text" and len([c for c in chunks if c.choices]) == CHUNKS + 1
    arguments = json.dumps({"city": "Paris"})
    called = client.chat.completions.create(model="gpt-azure", messages=[{"role": "user", "content": f"call:{arguments}"}],
                                            tools=[{"type": "function", "function": {
                                                "name": "weather", "parameters": {"type": "object"}}}])
    assert json.loads(called.choices[0].message.tool_calls[0].function.arguments) == {"city": "Paris"}
    embedded = client.embeddings.create(model="embed-azure", input=["one", "two"])
    assert len(embedded.data) == 2 and embedded.model == "my-embedder"


def test_unknown_providers_are_refused(azure):
    gw, _ = azure
    r = gw.admin("POST", "/credentials", {"name": "other", "provider": "bedrock", "api_key": "k",
                                          "base_url": gw.fake_url})
    assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_provider", r.text
