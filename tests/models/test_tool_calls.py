"""Tool calls on a local model, below HTTP: reading Hermes' blocks, checking tools and tool_choice,
the forced call's grammar on the thread engine, and a template without tools refusing them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from tests.conftest import DEMO_LM, ROOT
from winnow.config import ModelConfig, Settings
from winnow.errors import InvalidRequest, UnsupportedParameter
from winnow.models.base import ChatMessage, SamplingParams, ToolChat
from winnow.models.providers.transformers import TransformersProvider
from winnow.schemas.tool_calls import parse, tool_use

ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer", "maximum": 99}, "b": {"type": "integer", "maximum": 99}},
            "required": ["a", "b"],
        },
    },
}
ASK = [ChatMessage("user", "What is 2+3?")]


def test_blocks_are_read_as_calls_and_anything_else_stays_content() -> None:
    content, calls = parse('Sure. <tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>')
    assert content == "Sure." and calls[0]["function"] == {"name": "add", "arguments": '{"a": 1}'}
    assert parse('<tool_call>{"name": "add", "argu')[1] == []  # cut short: no call
    assert parse("<tool_call>not json</tool_call>") == ("<tool_call>not json</tool_call>", [])
    assert parse("just text") == ("just text", [])


def test_tool_choice_is_checked_against_the_tools() -> None:
    assert tool_use({"tools": [ADD]}).choice == "auto"  # type: ignore[union-attr]
    named = tool_use({"tools": [ADD], "tool_choice": {"type": "function", "function": {"name": "add"}}})
    assert named is not None and named.guide() is not None
    with pytest.raises(InvalidRequest) as unknown:
        tool_use({"tools": [ADD], "tool_choice": {"type": "function", "function": {"name": "sub"}}})
    assert unknown.value.param == "tool_choice"
    with pytest.raises(InvalidRequest) as bare:
        tool_use({"tool_choice": "required"})
    assert bare.value.param == "tool_choice"
    with pytest.raises(InvalidRequest) as bad:
        tool_use({"tools": [{"type": "function", "function": {}}]})
    assert bad.value.param == "tools[0].function.name"


def _generate(path: Path, prompt: ToolChat, params: SamplingParams) -> object:
    async def go() -> object:
        p = TransformersProvider(ModelConfig(id="m", path=str(path)), Settings(local_torch_threads=1))
        try:
            return (await p.generate([prompt], params))[0]
        finally:
            await p.close()

    return asyncio.run(go())


def test_a_required_call_is_written_by_the_grammar_and_a_template_without_tools_refuses(tmp_path: Path) -> None:
    model = tmp_path / "tools"
    subprocess.run([sys.executable, str(ROOT / "examples" / "make_tools_model.py"), str(model)], check=True)
    use = tool_use({"tools": [ADD], "tool_choice": "required"})
    assert use is not None
    params = SamplingParams(max_tokens=80, temperature=1.0, n=4, seed=3, guide=use.guide())
    result = _generate(model, ToolChat(ASK, json.dumps([ADD])), params)
    for completion in result.completions:  # type: ignore[attr-defined]
        _, (call,) = parse(completion.text)
        assert call["function"]["name"] == "add"
        jsonschema.validate(json.loads(call["function"]["arguments"]), ADD["function"]["parameters"])  # type: ignore[index]
    refused = _generate(DEMO_LM, ToolChat(ASK, json.dumps([ADD])), SamplingParams(max_tokens=4))
    assert isinstance(refused.error, UnsupportedParameter) and refused.error.param == "tools"  # type: ignore[attr-defined]
