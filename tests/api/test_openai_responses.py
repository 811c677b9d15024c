"""OpenAI's Responses API on /v1, driven by the official ``openai`` client, unchanged.

One real ``winnow serve`` holds a local model (demo-lm) and an upstream one (the fake
OpenAI-compatible server of ``test_passthrough``, which answers a chat with the request it received,
so a test reads the chat request a Response became). Bodies and stream events are validated against
the schemas of OpenAI's document kept in ``fixtures/openai_responses_schemas.json`` (see
``fixtures/README.md``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from jsonschema import FormatChecker, ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.api.test_openai_fidelity import _OpenAPI31, assert_openai
from tests.api.test_passthrough import ECHO_USAGE, STREAM_PIECES, STREAM_USAGE, FakeUpstream
from tests.conftest import ROOT, LiveServer, bearer

pytestmark = pytest.mark.slow  # a real `winnow serve` in front of the fake upstream

FIXTURE = Path(__file__).parent / "fixtures" / "openai_responses_schemas.json"
QUESTION = "What is 17+25?"

# The semantic events of a streamed text answer, in OpenAI's order (deltas collapsed).
TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]
EVENT_SCHEMAS = {
    "response.created": "ResponseCreatedEvent",
    "response.in_progress": "ResponseInProgressEvent",
    "response.output_item.added": "ResponseOutputItemAddedEvent",
    "response.content_part.added": "ResponseContentPartAddedEvent",
    "response.output_text.delta": "ResponseTextDeltaEvent",
    "response.output_text.done": "ResponseTextDoneEvent",
    "response.content_part.done": "ResponseContentPartDoneEvent",
    "response.output_item.done": "ResponseOutputItemDoneEvent",
    "response.completed": "ResponseCompletedEvent",
    "response.incomplete": "ResponseIncompleteEvent",
    "response.failed": "ResponseFailedEvent",
}


@cache
def _document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(FIXTURE.read_text())
    return document


def assert_responses_schema(schema: str, body: Any) -> None:
    """Raise jsonschema.ValidationError unless ``body`` is a valid ``schema`` of OpenAI's document."""
    uri = "urn:openai-openapi-responses"
    registry: Registry[Any] = Registry().with_resource(uri, Resource.from_contents(_document(), DRAFT202012))
    validator = _OpenAPI31(
        {"$ref": f"{uri}#/components/schemas/{schema}"}, registry=registry, format_checker=FormatChecker()
    )
    validator.validate(body)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def server(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("responses") / "data"
    models = [
        {"id": "demo-lm", "provider": "transformers", "path": str(ROOT / "examples/models/demo-lm")},
        {
            "id": "fake",
            "type": "commercial",
            "provider": "openai",
            "base_url": f"{fake.url}/v1",
            "upstream_model": "up-model-1",
            "api_key_env": "FAKE_UPSTREAM_KEY",
            "max_retries": 0,
        },
    ]
    config = data.parent / "responses.yaml"
    config.write_text(json.dumps({"models": models}))
    live = LiveServer(data, env={"WINNOW_CONFIG": str(config), "FAKE_UPSTREAM_KEY": "sk-fake"}).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def admin(server: LiveServer) -> str:
    return server.cli("keys", "create", "admin", "--admin").stdout.split()[-1]


def _new_key(server: LiveServer, admin: str, name: str) -> str:
    created = httpx.post(f"{server.url}/api/v1/keys", json={"name": name}, headers=bearer(admin))
    assert created.status_code == 201, created.text
    secret: str = created.json()["key"]
    return secret


@pytest.fixture
def key(server: LiveServer, admin: str, fake: FakeUpstream, request: pytest.FixtureRequest) -> str:
    """A fresh key per test (its usage and responses are the test's own), and a fake with nothing received."""
    fake.received.clear()
    fake.answers.clear()
    return _new_key(server, admin, re.sub(r"[^A-Za-z0-9_.@-]", "-", request.node.name)[:60])


@pytest.fixture
def client(server: LiveServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def _usage(server: LiveServer, key: str) -> dict[str, Any]:
    usage = httpx.get(f"{server.url}/api/v1/usage", params={"group_by": "model"}, headers=bearer(key))
    assert usage.status_code == 200, usage.text
    total: dict[str, Any] = usage.json()["total"]
    return total


def _raw_events(server: LiveServer, key: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """A streamed Response's events as sent: each frame's ``event:`` line names its ``data``'s type."""
    with httpx.stream("POST", f"{server.url}/v1/responses", json=body, headers=bearer(key), timeout=60) as reply:
        assert reply.status_code == 200, reply.read()
        text = reply.read().decode()
    events = []
    for frame in filter(None, text.split("\n\n")):
        kind, data = frame.split("\n")
        assert kind.startswith("event: ") and data.startswith("data: "), frame
        event = json.loads(data[len("data: ") :])
        assert event["type"] == kind[len("event: ") :]
        events.append(event)
    return events


def _collapsed(types: list[str]) -> list[str]:
    return [t for i, t in enumerate(types) if i == 0 or t != types[i - 1]]


def test_the_response_schema_refuses_what_openai_refuses(server: LiveServer, key: str) -> None:
    """The fixture and its validator can fail: a Response without ``output``, or with a bad status."""
    reply = httpx.post(
        f"{server.url}/v1/responses",
        json={"model": "demo-lm", "input": QUESTION, "max_output_tokens": 4},
        headers=bearer(key),
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert_responses_schema("Response", body)
    for broken in ({k: v for k, v in body.items() if k != "output"}, {**body, "status": "done"}):
        with pytest.raises(ValidationError):
            assert_responses_schema("Response", broken)


def test_a_string_input_answers_as_the_same_chat_would(server: LiveServer, key: str, client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(model="demo-lm", input=QUESTION, max_output_tokens=8, temperature=0)
    assert_responses_schema("Response", raw.http_response.json())
    response = raw.parse()
    chat = client.chat.completions.create(
        model="demo-lm", messages=[{"role": "user", "content": QUESTION}], max_tokens=8, temperature=0
    )
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status in ("completed", "incomplete") and response.model == "demo-lm"
    (message,) = response.output
    assert message.type == "message" and message.id.startswith("msg_") and message.role == "assistant"
    assert response.output_text == chat.choices[0].message.content
    assert response.usage is not None and chat.usage is not None
    assert response.usage.input_tokens == chat.usage.prompt_tokens > 0
    assert response.usage.output_tokens == chat.usage.completion_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert response.usage.input_tokens_details.cached_tokens == 0
    assert response.usage.output_tokens_details.reasoning_tokens == 0
    if chat.choices[0].finish_reason == "length":
        assert response.status == "incomplete" and response.incomplete_details is not None
        assert response.incomplete_details.reason == "max_output_tokens"
    # Billed once each, as a chat is.
    usage = _usage(server, key)
    assert usage["requests"] == 2
    assert usage["input_tokens"] == 2 * response.usage.input_tokens


def test_items_and_instructions_are_the_chat_messages(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="demo-lm",
        instructions="Answer with a number.",
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": "What is 1+1?"}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "2"}]},
            {"type": "message", "role": "user", "content": QUESTION},
        ],
        max_output_tokens=6,
        temperature=0,
        metadata={"run": "a"},
        user="someone",
    )
    chat = client.chat.completions.create(
        model="demo-lm",
        messages=[
            {"role": "system", "content": "Answer with a number."},
            {"role": "user", "content": "What is 1+1?"},
            {"role": "assistant", "content": "2"},
            {"role": "user", "content": QUESTION},
        ],
        max_tokens=6,
        temperature=0,
    )
    assert response.output_text == chat.choices[0].message.content
    assert response.usage is not None and chat.usage is not None
    assert response.usage.input_tokens == chat.usage.prompt_tokens
    assert response.instructions == "Answer with a number."
    assert response.metadata == {"run": "a"} and response.user == "someone"


def test_an_upstream_model_gets_the_translated_chat_request(
    server: LiveServer, key: str, client: openai.OpenAI, fake: FakeUpstream
) -> None:
    tool = {"type": "function", "name": "add", "description": "Adds", "parameters": {"type": "object"}}
    response = client.responses.create(
        model="fake",
        instructions="Be brief.",
        input=QUESTION,
        max_output_tokens=20,
        temperature=0.5,
        top_p=0.9,
        tools=[tool],  # type: ignore[list-item]
        tool_choice={"type": "function", "name": "add"},
        text={"format": {"type": "json_schema", "name": "sum", "schema": {"type": "object"}, "strict": True}},
    )
    (received,) = fake.received
    assert received["path"] == "/v1/chat/completions"
    assert received["body"] == {
        "model": "up-model-1",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}],
        "max_completion_tokens": 20,
        "temperature": 0.5,
        "top_p": 0.9,
        "tools": [{"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}}],
        "tool_choice": {"type": "function", "function": {"name": "add"}},
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "sum", "schema": {"type": "object"}, "strict": True},
        },
    }
    assert json.loads(response.output_text) == received["body"]  # the fake answers with what it got
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (
        ECHO_USAGE["prompt_tokens"],
        ECHO_USAGE["completion_tokens"],
    )
    assert response.text.format.type == "json_schema"  # type: ignore[union-attr]
    assert _usage(server, key)["requests"] == 1 and _usage(server, key)["input_tokens"] == ECHO_USAGE["prompt_tokens"]


def _streamed(client: openai.OpenAI, **body: Any) -> list[Any]:
    with client.responses.create(stream=True, **body) as stream:
        return list(stream)


@pytest.mark.parametrize("model", ["demo-lm", "fake"])
def test_a_stream_sends_the_semantic_events_in_order(
    server: LiveServer, key: str, client: openai.OpenAI, model: str
) -> None:
    events = _streamed(client, model=model, input=QUESTION, max_output_tokens=8, temperature=0)
    types = [e.type for e in events]
    final = events[-1].response
    assert _collapsed(types) == [*TEXT_EVENTS[:-1], f"response.{final.status}"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    done = next(e for e in events if e.type == "response.output_text.done")
    assert "".join(deltas) == done.text == final.output_text and deltas
    assert final.id.startswith("resp_") and final.id == events[0].response.id
    assert final.output[0].id == events[2].item.id and final.output[0].id.startswith("msg_")
    assert final.usage is not None and final.usage.output_tokens > 0
    if model == "fake":
        assert len(deltas) == len(STREAM_PIECES) and final.output_text == "".join(STREAM_PIECES)
        assert final.usage.input_tokens == STREAM_USAGE["prompt_tokens"]
        assert final.usage.output_tokens == STREAM_USAGE["completion_tokens"]
    assert client.responses.retrieve(final.id).output_text == final.output_text  # stored once finished
    assert _usage(server, key)["requests"] == 1  # billed once
    for event in _raw_events(server, key, {"model": model, "input": QUESTION, "max_output_tokens": 8, "stream": True}):
        assert_responses_schema(EVENT_SCHEMAS[event["type"]], event)


def test_previous_response_id_continues_the_stored_conversation(client: openai.OpenAI, fake: FakeUpstream) -> None:
    first = client.responses.create(model="fake", instructions="First rules.", input="Hi")
    second = client.responses.create(
        model="fake", instructions="Second rules.", input="And then?", previous_response_id=first.id
    )
    assert second.previous_response_id == first.id
    assert fake.received[1]["body"]["messages"] == [
        {"role": "system", "content": "Second rules."},  # instructions are not carried over
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "And then?"},
    ]
    third = client.responses.create(model="fake", input="Last", previous_response_id=second.id)
    assert [m["content"] for m in fake.received[2]["body"]["messages"]] == [
        "Hi",
        first.output_text,
        "And then?",
        second.output_text,
        "Last",
    ]
    assert third.status == "completed"


def test_previous_response_id_on_a_local_model_prompts_with_the_first_turn(client: openai.OpenAI) -> None:
    first = client.responses.create(model="demo-lm", input=QUESTION, max_output_tokens=4, temperature=0)
    second = client.responses.create(
        model="demo-lm", input="Why?", max_output_tokens=4, temperature=0, previous_response_id=first.id
    )
    alone = client.responses.create(model="demo-lm", input="Why?", max_output_tokens=4, temperature=0)
    assert first.usage is not None and second.usage is not None and alone.usage is not None
    assert second.usage.input_tokens >= alone.usage.input_tokens + first.usage.input_tokens


def test_retrieve_and_delete_a_stored_response(server: LiveServer, key: str, client: openai.OpenAI) -> None:
    created = client.responses.create(model="fake", input=QUESTION, metadata={"k": "v"})
    fetched = httpx.get(f"{server.url}/v1/responses/{created.id}", headers=bearer(key))
    assert fetched.status_code == 200
    assert_responses_schema("Response", fetched.json())
    assert client.responses.retrieve(created.id) == created
    deleted = httpx.delete(f"{server.url}/v1/responses/{created.id}", headers=bearer(key))
    assert deleted.json() == {"id": created.id, "object": "response", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError) as continued:
        client.responses.create(model="fake", input="x", previous_response_id=created.id)
    assert continued.value.param == "previous_response_id"


def test_store_false_keeps_nothing(client: openai.OpenAI) -> None:
    created = client.responses.create(model="fake", input=QUESTION, store=False)
    assert created.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def test_another_keys_response_is_not_found_in_openais_shape(
    server: LiveServer, admin: str, client: openai.OpenAI
) -> None:
    created = client.responses.create(model="fake", input=QUESTION)
    other = openai.OpenAI(
        base_url=f"{server.url}/v1", api_key=_new_key(server, admin, "responses-other"), max_retries=0
    )
    reply = httpx.get(f"{server.url}/v1/responses/{created.id}", headers=bearer(other.api_key))
    assert reply.status_code == 404
    assert_openai("ErrorResponse", reply.json())
    assert created.id in reply.json()["error"]["message"]
    for call in (
        lambda: other.responses.retrieve(created.id),
        lambda: other.responses.delete(created.id),
        lambda: other.responses.create(model="fake", input="x", previous_response_id=created.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert client.responses.retrieve(created.id).id == created.id  # still there for its owner


def test_what_a_local_model_cannot_honour_is_a_400_naming_it(
    server: LiveServer, key: str, client: openai.OpenAI
) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}]}, "tools"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input[0].content[0].type",
        ),
        ({"background": True}, "background"),
        ({"input": []}, "input"),
    ]
    for fields, param in cases:
        with pytest.raises(openai.BadRequestError) as refused:
            client.responses.create(**{"model": "demo-lm", "input": QUESTION, **fields})
        assert refused.value.param == param, (fields, refused.value.body)
        assert_openai("ErrorResponse", refused.value.response.json())
    assert _usage(server, key)["requests"] == 0  # refused before any model call


def test_function_call_items_reach_an_upstream_as_tool_calls(client: openai.OpenAI, fake: FakeUpstream) -> None:
    client.responses.create(
        model="fake",
        input=[
            {"role": "user", "content": QUESTION},
            {"type": "function_call", "call_id": "call_1", "name": "add", "arguments": '{"a": 17, "b": 25}'},
            {"type": "function_call", "call_id": "call_2", "name": "log", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "42"},
            {"type": "function_call_output", "call_id": "call_2", "output": "ok"},
        ],
    )
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 17, "b": 25}'}},
        {"id": "call_2", "type": "function", "function": {"name": "log", "arguments": "{}"}},
    ]
    assert fake.received[0]["body"]["messages"] == [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": None, "tool_calls": calls},  # one answer's calls: one message
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        {"role": "tool", "tool_call_id": "call_2", "content": "ok"},
    ]


def test_input_items_list_pages_through_the_stored_items(client: openai.OpenAI) -> None:
    created = client.responses.create(
        model="fake",
        input=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "One"},
            {"role": "assistant", "content": "1"},
            {"role": "user", "content": [{"type": "input_text", "text": "Two"}]},
        ],
    )
    newest_first = client.responses.input_items.list(created.id)
    texts = [item.content[0].text for item in newest_first.data]  # type: ignore[union-attr]
    assert texts == ["Two", "1", "One", "Be brief."]
    assert all(item.id.startswith("msg_") for item in newest_first.data)  # type: ignore[union-attr]
    page = client.responses.input_items.list(created.id, order="asc", limit=3)
    assert [item.content[0].text for item in page.data] == ["Be brief.", "One", "1"]  # type: ignore[union-attr]
    assert page.has_more is True
    rest = client.responses.input_items.list(created.id, order="asc", after=page.last_id)
    assert [item.content[0].text for item in rest.data] == ["Two"] and rest.has_more is False  # type: ignore[union-attr]
    assert [item.id for item in client.responses.input_items.list(created.id, order="asc")] == [  # type: ignore[union-attr]
        *(item.id for item in page.data),  # type: ignore[union-attr]
        *(item.id for item in rest.data),  # type: ignore[union-attr]
    ]


def test_a_stream_the_client_leaves_is_billed_once(server: LiveServer, key: str) -> None:
    body = {"model": "demo-lm", "input": QUESTION, "max_output_tokens": 200, "temperature": 1.0, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/responses", json=body, headers=bearer(key), timeout=60) as reply:
        assert reply.status_code == 200
        for line in reply.iter_lines():
            if line == "event: response.output_text.delta":
                break  # leave after the first token
    deadline = time.monotonic() + 30
    while _usage(server, key)["requests"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)  # the server notices the client left on its next write
    usage = _usage(server, key)
    assert usage["requests"] == 1 and usage["output_tokens"] >= 1
