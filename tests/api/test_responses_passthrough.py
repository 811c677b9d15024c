"""``POST /v1/responses`` for an upstream that serves ``/responses`` itself (``options.serves_responses``),
driven by the official ``openai`` client against a real ``winnow serve`` in front of the fake
OpenAI-compatible upstream: the request reaches the upstream's ``/responses`` as sent (unknown fields
included, the model renamed), its Response (or its stream of events) comes back valid and is billed
from its own usage; a model without the option still goes through the chat translation."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest

from tests.api.test_openai_responses import EVENT_SCHEMAS, _usage, assert_responses_schema
from tests.api.test_passthrough import ECHO_USAGE, STREAM_PIECES, FakeUpstream
from tests.conftest import LiveServer, until

pytestmark = pytest.mark.slow  # a real `winnow serve` in front of the fake upstream


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, FakeUpstream, str]]:
    data = tmp_path_factory.mktemp("responses-passthrough") / "data"
    with FakeUpstream() as fake:
        upstream = fake.model_fields()
        models = [{"id": "native", **upstream, "options": {"serves_responses": True}}, {"id": "chat-only", **upstream}]
        config = data.parent / "models.yaml"
        config.write_text(json.dumps({"models": models}))
        live = LiveServer(data, env={"WINNOW_CONFIG": str(config), "FAKE_UPSTREAM_KEY": "sk-fake"}).start()
        try:
            yield live, fake, live.cli("keys", "create", "responder").stdout.split()[-1]
        finally:
            live.stop()


@pytest.fixture
def client(served: tuple[LiveServer, FakeUpstream, str]) -> openai.OpenAI:
    """The openai client on the served key, and a fake upstream with nothing received."""
    live, fake, key = served
    fake.received.clear()
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key=key, max_retries=0)


def test_an_upstream_that_serves_responses_gets_the_request_as_sent(
    served: tuple[LiveServer, FakeUpstream, str], client: openai.OpenAI
) -> None:
    live, fake, key = served
    raw = client.responses.with_raw_response.create(
        model="native", input="What is 17+25?", instructions="Be brief.", extra_body={"x_upstream_only": 1}
    )
    response = raw.parse()
    assert_responses_schema("Response", json.loads(raw.text))
    assert response.model == "native" and response.status == "completed"
    (received,) = fake.received
    assert received["path"] == "/v1/responses"
    assert received["body"] == {
        "model": "up-model-1",
        "input": "What is 17+25?",
        "instructions": "Be brief.",
        "x_upstream_only": 1,
    }
    assert json.loads(response.output_text)["input"] == "What is 17+25?"
    usage = _usage(live, key)
    assert (usage["input_tokens"], usage["output_tokens"]) == (
        ECHO_USAGE["prompt_tokens"],
        ECHO_USAGE["completion_tokens"],
    )


def test_a_stream_passes_through_and_a_chat_only_upstream_is_translated(
    served: tuple[LiveServer, FakeUpstream, str], client: openai.OpenAI
) -> None:
    live, fake, key = served
    before = _usage(live, key)["output_tokens"]
    events = list(client.responses.create(model="native", input="Hi", stream=True))
    assert [e.type for e in events] == [
        "response.created",
        *["response.output_text.delta"] * len(STREAM_PIECES),
        "response.completed",
    ]
    for event in events:
        assert_responses_schema(EVENT_SCHEMAS[event.type], event.model_dump(mode="json", exclude_unset=True))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "".join(STREAM_PIECES)
    assert events[-1].response.model == "native" and events[-1].response.output_text == "".join(STREAM_PIECES)
    assert fake.received[0]["path"] == "/v1/responses" and fake.received[0]["body"]["stream"] is True
    expected = before + ECHO_USAGE["completion_tokens"]  # once, from the last event's usage
    until("the stream billed", lambda: _usage(live, key)["output_tokens"] == expected or None, timeout=30)
    client.responses.create(model="chat-only", input="Hi")
    assert fake.received[1]["path"] == "/v1/chat/completions"
