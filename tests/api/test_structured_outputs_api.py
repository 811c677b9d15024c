"""Structured outputs on /v1 with real clients against a real ``winnow serve`` (demo-lm in an engine
process): the openai SDK's ``chat.completions.parse``, LangChain's ``with_structured_output``, vLLM's
guided fields (top level and ``extra_body``), streams, the Responses API's ``text.format``, and the
400s that name the field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Literal

import httpx
import openai
import pytest
from pydantic import BaseModel, Field

from tests.conftest import LiveServer, bearer

pytestmark = pytest.mark.slow  # a real `winnow serve`

# demo-lm is served with a context of 64 tokens: short questions, short answers
ASK = [{"role": "user", "content": "Who?"}]


class Person(BaseModel):
    name: str = Field(max_length=4)
    age: int = Field(ge=0, le=99)
    color: Literal["red", "blue"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    live = LiveServer(tmp_path_factory.mktemp("structured") / "data", env={"WINNOW_LOCAL_ENGINE": "process"}).start()
    key = live.cli("keys", "create", "client").stdout.split()[-1]
    yield live, key
    live.stop()


@pytest.fixture(scope="module")
def client(server: tuple[LiveServer, str]) -> openai.OpenAI:
    live, key = server
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key=key, max_retries=0)


def test_the_openai_sdk_parses_a_pydantic_model(client: openai.OpenAI) -> None:
    for temperature in (0.0, 1.0):
        completion = client.chat.completions.parse(
            model="demo-lm", messages=ASK, response_format=Person, max_tokens=80, temperature=temperature, n=3, seed=5
        )  # type: ignore[call-overload]
        for choice in completion.choices:
            assert choice.finish_reason == "stop"
            assert isinstance(choice.message.parsed, Person), choice.message.content


def test_langchain_with_structured_output(server: tuple[LiveServer, str]) -> None:
    from langchain_openai import ChatOpenAI

    live, key = server
    llm = ChatOpenAI(model="demo-lm", base_url=f"{live.url}/v1", api_key=key, max_tokens=80, temperature=0.7)  # type: ignore[arg-type]
    answer = llm.with_structured_output(Person).invoke("Who?")
    assert isinstance(answer, Person)


def test_vllm_guided_fields_on_chat_and_completions(client: openai.OpenAI) -> None:
    choice = client.completions.create(
        model="demo-lm", prompt="Yes or no?", max_tokens=8, n=4, temperature=1.0,
        extra_body={"guided_choice": ["yes", "no"]},
    )  # fmt: skip
    assert {c.text for c in choice.choices} <= {"yes", "no"}
    regex = client.chat.completions.create(
        model="demo-lm", messages=ASK, max_tokens=12, extra_body={"structured_outputs": {"regex": r"[0-9]{3}-[a-z]{2}"}}
    )  # type: ignore[call-overload]
    text = regex.choices[0].message.content or ""
    assert len(text) == 6 and text[:3].isdigit() and text[3] == "-"
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    guided = client.chat.completions.create(
        model="demo-lm", messages=ASK, max_tokens=20, extra_body={"guided_json": schema}
    )
    assert isinstance(json.loads(guided.choices[0].message.content or "")["ok"], bool)


def test_a_stream_and_a_cut_at_max_tokens(client: openai.OpenAI) -> None:
    form = {"type": "json_schema", "json_schema": {"name": "p", "schema": Person.model_json_schema(), "strict": True}}
    chunks = list(
        client.chat.completions.create(
            model="demo-lm",
            messages=ASK,
            max_tokens=80,
            temperature=0,
            stream=True,
            response_format=form,  # type: ignore[arg-type]
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason == "stop"
    Person.model_validate_json(text)
    cut = client.chat.completions.create(model="demo-lm", messages=ASK, max_tokens=4, response_format=form)  # type: ignore[arg-type]
    assert cut.choices[0].finish_reason == "length" and len(cut.choices[0].message.content or "") < 10


def test_responses_text_format_json_schema(client: openai.OpenAI) -> None:
    schema = Person.model_json_schema() | {"additionalProperties": False}
    response = client.responses.create(
        model="demo-lm", input="Who?", max_output_tokens=80, temperature=0,
        text={"format": {"type": "json_schema", "name": "person", "schema": schema, "strict": True}},
    )  # fmt: skip
    Person.model_validate_json(response.output_text)
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(
            model="demo-lm", input="Who?", max_output_tokens=8,
            text={"format": {"type": "json_schema", "name": "x", "schema": {"type": "nope"}}},
        )  # fmt: skip
    assert refused.value.param == "text.format"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}},
            "response_format",
        ),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"guided_choice": "yes"}, "guided_choice"),
        ({"guided_regex": "a", "guided_choice": ["a"]}, "guided_choice"),
        ({"extra_body": {"structured_outputs": {"regex": "a", "choice": ["a"]}}}, "structured_outputs"),
    ],
)
def test_a_structured_output_that_cannot_be_enforced_is_a_400_naming_it(
    server: tuple[LiveServer, str], fields: dict[str, object], param: str
) -> None:
    live, key = server
    for stream in (False, True):
        body = {"model": "demo-lm", "messages": ASK, "max_tokens": 8, "stream": stream, **fields}
        refused = httpx.post(f"{live.url}/v1/chat/completions", json=body, headers=bearer(key), timeout=60)
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert (error["type"], error["param"]) == ("invalid_request_error", param), error
