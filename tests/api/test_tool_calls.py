"""Tool calls on a local model, with the official openai client against a real ``winnow serve``.

``demo-lm-tools`` is demo-lm with a Hermes-style chat template that renders tools (written by
``examples/make_tools_model.py``); it runs in an engine process. A named or required
``tool_choice`` is enforced while decoding, ``auto`` reads a ``<tool_call>`` block when the model
writes one (forced here with a guided regex), streams carry OpenAI's tool_calls deltas, a ``tool``
message goes back through the template, and demo-lm (no tools in its template) answers a 400."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.conftest import DEMO_LM, ROOT, LiveServer, bearer

pytestmark = pytest.mark.slow  # a real `winnow serve`

ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Adds two numbers",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer", "maximum": 999}, "b": {"type": "integer", "maximum": 999}},
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    },
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 10}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TOOLS: list[Any] = [ADD, WEATHER]
ASK: list[Any] = [{"role": "user", "content": "What is 2+3?"}]


def write(out: Path) -> Path:
    """The tools model, made by the script a user would run."""
    script = ROOT / "examples" / "make_tools_model.py"
    subprocess.run([sys.executable, str(script), str(out)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    root = tmp_path_factory.mktemp("tools")
    model = write(root / "demo-lm-tools")
    config = root / "models.json"
    models = [
        {"id": "demo-lm", "provider": "transformers", "path": str(DEMO_LM), "context_length": 64},
        {"id": "demo-lm-tools", "provider": "transformers", "path": str(model)},
    ]
    config.write_text(json.dumps({"models": models}))
    env = {"WINNOW_CONFIG": str(config), "WINNOW_LOCAL_ENGINE": "process"}
    live = LiveServer(root / "data", env=env).start()
    key = live.cli("keys", "create", "client").stdout.split()[-1]
    yield live, key
    live.stop()


@pytest.fixture(scope="module")
def client(server: tuple[LiveServer, str]) -> openai.OpenAI:
    live, key = server
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key=key, max_retries=0)


def _schema(name: str) -> dict[str, Any]:
    return next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == name)


def test_a_named_tool_choice_yields_a_call_with_valid_arguments(client: openai.OpenAI) -> None:
    for temperature in (0.0, 1.0):
        completion = client.chat.completions.create(
            model="demo-lm-tools", messages=ASK, tools=TOOLS, max_tokens=120, n=3, seed=2, temperature=temperature,
            tool_choice={"type": "function", "function": {"name": "weather"}},
        )  # fmt: skip
        for choice in completion.choices:
            assert choice.finish_reason == "tool_calls"
            (call,) = choice.message.tool_calls or []
            assert call.type == "function" and call.function.name == "weather" and call.id.startswith("call_")
            jsonschema.validate(json.loads(call.function.arguments), _schema("weather"))


def test_required_calls_one_of_the_tools(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="demo-lm-tools", messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=120, n=4, temperature=1.0, seed=4
    )  # fmt: skip
    for choice in completion.choices:
        (call,) = choice.message.tool_calls or []
        jsonschema.validate(json.loads(call.function.arguments), _schema(call.function.name))


def test_auto_reads_a_tool_call_block_and_plain_text_stays_content(client: openai.OpenAI) -> None:
    block = r'<tool_call>\{"name": "add", "arguments": \{"a": [0-9], "b": [0-9]\}\}</tool_call>'
    called = client.chat.completions.create(
        model="demo-lm-tools", messages=ASK, tools=TOOLS, max_tokens=120, extra_body={"guided_regex": block}
    )
    (call,) = called.choices[0].message.tool_calls or []
    assert call.function.name == "add" and set(json.loads(call.function.arguments)) == {"a", "b"}
    assert called.choices[0].message.content is None and called.choices[0].finish_reason == "tool_calls"
    plain = client.chat.completions.create(
        model="demo-lm-tools", messages=ASK, tools=TOOLS, max_tokens=8, extra_body={"guided_regex": "[0-9]{2}"}
    )
    assert plain.choices[0].message.tool_calls is None and len(plain.choices[0].message.content or "") == 2


def test_a_stream_sends_tool_calls_as_openai_deltas(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="demo-lm-tools", messages=ASK, tools=TOOLS, max_tokens=120, stream=True,
            tool_choice={"type": "function", "function": {"name": "add"}},
        )
    )  # fmt: skip
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant"
    calls = [d.tool_calls[0] for d in deltas if d.tool_calls]
    assert calls[0].id and calls[0].function and calls[0].function.name == "add"
    arguments = "".join(c.function.arguments or "" for c in calls if c.function)
    jsonschema.validate(json.loads(arguments), _schema("add"))
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_messages_go_back_through_the_template(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model="demo-lm-tools", messages=ASK, tools=TOOLS, max_tokens=120,
        tool_choice={"type": "function", "function": {"name": "add"}},
    )  # fmt: skip
    (call,) = first.choices[0].message.tool_calls or []
    history = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "5"},
    ]
    answer = client.chat.completions.create(
        model="demo-lm-tools",
        messages=history,
        tools=TOOLS,
        tool_choice="none",
        max_tokens=4,  # type: ignore[arg-type]
    )
    assert answer.choices[0].message.tool_calls is None
    assert answer.usage is not None and answer.usage.prompt_tokens > first.usage.prompt_tokens + 40  # type: ignore[union-attr]


def test_a_model_without_a_tools_template_is_a_400_naming_tools(server: tuple[LiveServer, str]) -> None:
    live, key = server
    for stream in (False, True):
        body = {"model": "demo-lm", "messages": ASK, "tools": TOOLS, "max_tokens": 4, "stream": stream}
        refused = httpx.post(f"{live.url}/v1/chat/completions", json=body, headers=bearer(key), timeout=60)
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["param"] == "tools" and "template" in error["message"] + str(error), error
    bad = {
        "model": "demo-lm-tools",
        "messages": ASK,
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "nope"}},
    }
    refused = httpx.post(f"{live.url}/v1/chat/completions", json=bad, headers=bearer(key), timeout=60)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "tool_choice"


def test_langchain_bind_tools_round_trip(server: tuple[LiveServer, str]) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_openai import ChatOpenAI

    live, key = server
    llm = ChatOpenAI(model="demo-lm-tools", base_url=f"{live.url}/v1", api_key=key, max_tokens=120, temperature=0)  # type: ignore[arg-type]
    bound = llm.bind_tools([ADD], tool_choice="add")
    question = HumanMessage("What is 2+3?")
    reply = bound.invoke([question])
    (call,) = reply.tool_calls
    assert call["name"] == "add"
    jsonschema.validate(call["args"], _schema("add"))
    final = llm.bind_tools([ADD]).invoke([question, reply, ToolMessage("5", tool_call_id=call["id"])])
    assert isinstance(final.content, str)


def test_the_script_writes_a_model_with_a_tools_template(tmp_path: Path) -> None:
    model = write(tmp_path / "m")
    assert "tools" in json.loads((model / "tokenizer_config.json").read_text())["chat_template"]


def test_the_responses_api_returns_function_call_items(client: openai.OpenAI) -> None:
    function = ADD["function"]
    tool = {"type": "function", "name": function["name"], "parameters": function["parameters"], "strict": True}
    for stream in (False, True):
        body: dict[str, Any] = {
            "model": "demo-lm-tools", "input": "What is 2+3?", "tools": [tool], "max_output_tokens": 120,
            "tool_choice": {"type": "function", "name": "add"},
        }  # fmt: skip
        if stream:
            with client.responses.create(stream=True, **body) as events:
                response = [e for e in events][-1].response
        else:
            response = client.responses.create(**body)
        (call,) = [item for item in response.output if item.type == "function_call"]
        assert call.name == "add"
        jsonschema.validate(json.loads(call.arguments), _schema("add"))


def test_tool_call_answers_and_chunks_follow_openais_schemas(server: tuple[LiveServer, str]) -> None:
    from tests.api.test_openai_fidelity import assert_openai

    live, key = server
    body = {"model": "demo-lm-tools", "messages": ASK, "tools": TOOLS, "tool_choice": "required", "max_tokens": 120}
    answer = httpx.post(f"{live.url}/v1/chat/completions", json=body, headers=bearer(key), timeout=60)
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["tool_calls"], answer.text
    assert_openai("CreateChatCompletionResponse", answer.json())
    with httpx.stream(
        "POST", f"{live.url}/v1/chat/completions", json={**body, "stream": True}, headers=bearer(key), timeout=60
    ) as stream:
        lines = [line[6:] for line in stream.iter_lines() if line.startswith("data: ") and line != "data: [DONE]"]
    assert len(lines) >= 3
    for line in lines:
        assert_openai("CreateChatCompletionStreamResponse", json.loads(line))
