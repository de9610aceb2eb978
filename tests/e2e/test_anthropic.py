"""The Anthropic Messages API on a deployment, through the official `anthropic` Python SDK and raw HTTP the way
Claude Code calls it: a real `lyceum server`, real simulator replicas. `model` is the deployment id (or the
`X-Deployment-ID` header names it); the key is an `lk_` key, as `x-api-key` or as a Bearer token.

The simulator's text depends only on the messages and max_tokens, so every answer here is compared with what the
same deployment answers the same conversation on the OpenAI-compatible endpoint: the adapter translates, it does not
make anything up."""
import json

import anthropic
import pytest
import requests
from anthropic import Anthropic

from harness import serve_module

HF_ID = "meta-llama/Llama-3.1-8B-Instruct"
MISSING = "00000000-0000-0000-0000-000000000000"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from serve_module(tmp_path_factory, "anthropic")


@pytest.fixture(scope="module")
def deployment(server):
    d = server.create(hf_model_id=HF_ID, hardware_profile="sim.h100")
    server.wait_status(d, "running")
    yield d
    server.request("DELETE", "/api/v2/external/inference/stop", json={"deployment_id": d})


@pytest.fixture(scope="module")
def client(server):
    return Anthropic(base_url=server.url + "/anthropic", api_key=server.key, max_retries=0, timeout=60)


def openai_answer(server, deployment, messages, max_tokens):
    """The same conversation on the OpenAI-compatible endpoint."""
    r = server.request("POST", "/openai/v1/chat/completions", timeout=60,
                       json={"model": deployment, "messages": messages, "max_tokens": max_tokens})
    assert r.status_code == 200, r.text
    return r.json()


def messages_url(server, query=""):
    return server.url + "/anthropic/v1/messages" + query


def test_a_message_gets_the_deployments_text_with_usage_and_stop_reason(server, deployment, client):
    message = client.messages.create(model=deployment, max_tokens=16,
                                     messages=[{"role": "user", "content": "Hello there"}])
    reference = openai_answer(server, deployment, [{"role": "user", "content": "Hello there"}], 16)
    assert message.type == "message" and message.role == "assistant" and message.id
    assert message.model == deployment
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text and message.content[0].text == reference["choices"][0]["message"]["content"]
    # The simulator spends the whole budget when max_tokens is given (finish_reason "length").
    assert message.stop_reason == "max_tokens" and message.stop_sequence is None
    assert message.usage.input_tokens == reference["usage"]["prompt_tokens"] > 0
    assert message.usage.output_tokens == 16


def test_system_prompts_content_blocks_and_earlier_turns_reach_the_model_as_given(server, deployment, client):
    conversation = [{"role": "user", "content": "What is a replica?"},
                    {"role": "assistant", "content": "A copy of the model."},
                    {"role": "user", "content": "And a deployment?"}]
    expected = openai_answer(server, deployment, [{"role": "system", "content": "You are terse."}, *conversation],
                             12)["choices"][0]["message"]["content"]
    as_string = client.messages.create(model=deployment, max_tokens=12, system="You are terse.", messages=conversation)
    assert as_string.content[0].text == expected
    # Claude Code sends the system prompt and user turns as lists of text blocks, some with cache_control.
    as_blocks = client.messages.create(
        model=deployment, max_tokens=12,
        system=[{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": m["role"], "content": [{"type": "text", "text": m["content"]}]} for m in conversation])
    assert as_blocks.content[0].text == expected
    without_system = client.messages.create(model=deployment, max_tokens=12, messages=conversation)
    assert without_system.content[0].text != expected, "the system prompt is part of what the model sees"


def test_a_stop_sequence_ends_the_text_before_it_and_is_reported(server, deployment, client):
    prompt = [{"role": "user", "content": "Tell me about the gateway"}]
    full = client.messages.create(model=deployment, max_tokens=24, messages=prompt).content[0].text
    words = [w for w in full.split() if w.isalpha() and len(w) >= 4]
    stop = next((" " + w for w in words if full.find(" " + w) > 0), None)
    assert stop, f"no usable stop sequence in {full!r}"
    cut = client.messages.create(model=deployment, max_tokens=24, messages=prompt, stop_sequences=[stop, "#never#"])
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == stop
    assert cut.content[0].text == full[:full.find(stop)], (full, stop, cut.content[0].text)
    assert cut.usage.output_tokens > 0
    unmatched = client.messages.create(model=deployment, max_tokens=24, messages=prompt, stop_sequences=["#never#"])
    assert unmatched.content[0].text == full and unmatched.stop_reason == "max_tokens"


def test_the_sdk_stream_helper_yields_the_text_and_a_final_message_with_usage(server, deployment, client):
    prompt = [{"role": "user", "content": "Stream to me"}]
    expected = client.messages.create(model=deployment, max_tokens=12, messages=prompt).content[0].text
    with client.messages.stream(model=deployment, max_tokens=12, messages=prompt) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1, "text arrives in pieces, as generated"
    assert "".join(pieces) == expected == final.content[0].text
    assert final.stop_reason == "max_tokens" and final.model == deployment
    assert final.usage.input_tokens > 0 and final.usage.output_tokens == 12


def test_raw_stream_events_come_in_the_documented_order_with_event_names(server, deployment, client):
    prompt = [{"role": "user", "content": "Events please"}]
    events = list(client.messages.create(model=deployment, max_tokens=8, messages=prompt, stream=True))
    kinds = [e.type for e in events if e.type != "ping"]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop", kinds
    assert kinds[-2] == "message_delta" and kinds.count("message_delta") == 1, kinds
    assert kinds[1] == "content_block_start" and kinds[-3] == "content_block_stop", kinds
    assert set(kinds[2:-3]) == {"content_block_delta"}, kinds
    start = events[0].message
    assert start.role == "assistant" and start.content == [] and start.model == deployment
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text == client.messages.create(model=deployment, max_tokens=8, messages=prompt).content[0].text
    delta = next(e for e in events if e.type == "message_delta")
    assert delta.delta.stop_reason == "max_tokens" and delta.usage.output_tokens == 8

    # On the wire: server-sent events, each named by an `event:` line matching its data's type (the SDK skips
    # unnamed ones).
    raw = requests.post(messages_url(server), stream=True, timeout=60,
                        headers={"x-api-key": server.key, "anthropic-version": "2023-06-01"},
                        json={"model": deployment, "max_tokens": 8, "messages": prompt, "stream": True})
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("text/event-stream")
    named = []
    for block in raw.text.replace("\r\n", "\n").strip().split("\n\n"):
        fields = {name: value.removeprefix(" ") for name, _, value in (line.partition(":") for line in block.splitlines())}
        if "data" not in fields:
            continue  # a comment line (keep-alive)
        assert fields.get("event") == json.loads(fields["data"])["type"], block
        named.append(fields["event"])
    assert [k for k in named if k != "ping"] == kinds


def test_models_lists_the_deployment_in_one_page(server, deployment, client):
    page = client.models.list()
    assert deployment in [m.id for m in page.data]
    assert page.has_more is False, "without has_more: false the SDK asks for the next page forever"
    assert deployment in [m.id for m in client.models.list()], "iterating pages ends"
    raw = requests.get(server.url + "/anthropic/v1/models", timeout=10, headers={"Authorization": f"Bearer {server.key}"})
    mine = next(m for m in raw.json()["data"] if m["id"] == deployment)
    assert mine["type"] == "model" and mine["display_name"] and mine["created_at"]


def test_the_key_is_accepted_as_x_api_key_or_bearer_and_the_header_can_name_the_deployment(server, deployment, client):
    prompt = [{"role": "user", "content": "Which auth?"}]
    expected = client.messages.create(model=deployment, max_tokens=6, messages=prompt).content[0].text
    body = {"model": deployment, "max_tokens": 6, "messages": prompt}
    for headers in ({"x-api-key": server.key}, {"Authorization": f"Bearer {server.key}"}):
        r = requests.post(messages_url(server), json=body, timeout=60, headers={"anthropic-version": "2023-06-01", **headers})
        assert r.status_code == 200, (headers.keys(), r.text)
        assert r.json()["content"][0]["text"] == expected
    by_token = Anthropic(base_url=server.url + "/anthropic", auth_token=server.key, max_retries=0, timeout=60)
    assert by_token.messages.create(model=deployment, max_tokens=6, messages=prompt).content[0].text == expected
    # `lyceum code --deployment ID`: Claude Code asks for its configured model name, on the beta path, with the
    # deployment in a custom header.
    claude_code = requests.post(messages_url(server, "?beta=true"), timeout=60,
                                json=dict(body, model="moonshotai/kimi-k3"),
                                headers={"x-api-key": server.key, "anthropic-version": "2023-06-01",
                                         "anthropic-beta": "claude-code-20250219", "X-Deployment-ID": deployment})
    assert claude_code.status_code == 200, claude_code.text
    assert claude_code.json()["content"][0]["text"] == expected


def test_errors_arrive_as_the_sdks_exception_classes_in_anthropics_shape(server, deployment, client):
    prompt = [{"role": "user", "content": "hi"}]
    with pytest.raises(anthropic.NotFoundError) as unknown:
        client.messages.create(model=MISSING, max_tokens=4, messages=prompt)
    assert unknown.value.body["type"] == "error" and unknown.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.AuthenticationError) as wrong:
        Anthropic(base_url=server.url + "/anthropic", api_key="lk_wrong", max_retries=0).messages.create(
            model=deployment, max_tokens=4, messages=prompt)
    assert wrong.value.body["error"]["type"] == "authentication_error"
    unauthenticated = requests.post(messages_url(server), timeout=10, json={"model": deployment, "max_tokens": 4,
                                                                            "messages": prompt})
    assert unauthenticated.status_code == 401 and unauthenticated.json()["error"]["type"] == "authentication_error"
    other_key = server.request("POST", "/api/v2/external/admin/keys", json={"org": "elsewhere"}).json()["api_key"]
    with pytest.raises(anthropic.NotFoundError):
        Anthropic(base_url=server.url + "/anthropic", api_key=other_key, max_retries=0).messages.create(
            model=deployment, max_tokens=4, messages=prompt)

    # The SDK insists on max_tokens, so this one goes raw; the API requires it too.
    no_budget = requests.post(messages_url(server), timeout=10, headers={"x-api-key": server.key},
                              json={"model": deployment, "messages": prompt})
    assert no_budget.status_code == 400, no_budget.text
    error = no_budget.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in error["error"]["message"]
    with pytest.raises(anthropic.BadRequestError):
        client.post("/v1/messages", body={"model": deployment, "messages": prompt}, cast_to=object)
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model=deployment, max_tokens=4, messages=[])
