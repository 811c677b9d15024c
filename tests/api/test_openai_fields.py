"""The README's OpenAI-compatibility field table, checked against the server: every row's field is
sent to a local model on its route(s) with a value that asks for something; a ``400`` row must
answer 400 naming the field, a ``supported`` or ``accepted`` row 200. The table is the test's only
list of fields and verdicts, so the README cannot drift from what the code does."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ROOT, TEST_KEY_LIMITS, bearer
from winnow.api import create_app
from winnow.config import Settings
from winnow.runtime import Runtime

ROUTES = {
    "chat": ("/v1/chat/completions", {"messages": [{"role": "user", "content": "What is 2+3?"}]}),
    "completions": ("/v1/completions", {"prompt": "<bos><|user|>What is 2+3?<|assistant|>"}),
}
BASE = {"model": "demo-lm", "max_tokens": 4}
_TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}

# A value for each field that asks for something (not the value that asks for nothing).
VALUES: dict[str, Any] = {
    "model": "demo-lm",
    "messages": ROUTES["chat"][1]["messages"],
    "prompt": [[5, 104, 101, 105]],
    "max_tokens": 3,
    "max_completion_tokens": 3,
    "n": 2,
    "stop": ["\n"],
    "stream": True,
    "stream_options": {"include_usage": True},
    "temperature": 0.5,
    "top_p": 0.9,
    "seed": 3,
    "frequency_penalty": 0.5,
    "presence_penalty": 0.5,
    "logit_bias": {"20": 5},
    "logprobs": True,
    "top_logprobs": 2,
    "echo": True,
    "best_of": 3,
    "suffix": "!",
    "user": "u",
    "metadata": {"k": "v"},
    "store": False,
    "service_tier": "auto",
    "prompt_cache_key": "k",
    "safety_identifier": "s",
    "prediction": {"type": "content", "content": "5"},
    "parallel_tool_calls": False,
    "response_format": {"type": "json_object"},
    "tools": [_TOOL],
    "tool_choice": "required",
    "functions": [{"name": "f", "parameters": {"type": "object"}}],
    "function_call": {"name": "f"},
    "audio": {"voice": "alloy", "format": "wav"},
    "modalities": ["text", "audio"],
    "reasoning_effort": "low",
    "verbosity": "low",
    "web_search_options": {},
    "top_k": 5,
    "min_p": 0.1,
    "repetition_penalty": 1.2,
    "min_tokens": 2,
    "ignore_eos": True,
    "stop_token_ids": [6],
    "guided_json": {"type": "object"},
    "guided_regex": "[0-9]+",
    "guided_choice": ["1", "2"],
    "guided_grammar": 'root ::= "1"',
    "structured_outputs": {"choice": ["1", "2"]},
    "structural_tag": "{}",
    "guided_decoding_backend": "xgrammar",
    "guided_whitespace_pattern": " ",
    "use_beam_search": True,
    "length_penalty": 0.5,
    "bad_words": ["4"],
    "allowed_token_ids": [20, 21],
    "truncate_prompt_tokens": 8,
    "prompt_logprobs": 1,
    "include_stop_str_in_output": True,
    "skip_special_tokens": False,
    "spaces_between_special_tokens": False,
    "add_special_tokens": "flip",  # the opposite of the route's default (below)
    "chat_template": "{{ messages[0]['content'] }}",
    "chat_template_kwargs": {"x": 1},
    "add_generation_prompt": False,
    "continue_final_message": True,
    "documents": [{"title": "t", "text": "x"}],
    "mm_processor_kwargs": {"x": 1},
    "logits_processors": ["x"],
    "return_tokens_as_token_ids": True,
    "return_token_ids": True,
    "prompt_embeds": "AAAA",
    "priority": 1,
    "request_id": "r1",
    "cache_salt": "s",
    "kv_transfer_params": {"x": 1},
    "vllm_xargs": {"x": 1},
}


def table() -> list[tuple[str, str, str]]:
    """(field, route, verdict) for each row of the README's field table and each route it names."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### OpenAI compatibility") :]
    lines = section[section.index("| field | routes | local models |") :].splitlines()[2:]
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        field, routes, local, _ = (cell.strip() for cell in line.strip("|").split("|"))
        verdict = re.match(r"(supported|accepted|400)\b", local)
        assert verdict, f"{line}: the local column starts with supported, accepted or 400"
        for route in ("chat", "completions") if routes == "both" else (routes,):
            rows.append((field.strip("`"), route, verdict.group(1)))
    return rows


TABLE = table()


def body(field: str, route: str) -> dict[str, Any]:
    value = VALUES[field]
    if field == "add_special_tokens":
        value = route == "chat"  # chat renders with a template (default false), completions as written (true)
    if field == "logprobs" and route == "completions":
        value = 2
    extra = {"logprobs": True} if field == "top_logprobs" else {}
    return BASE | ROUTES[route][1] | extra | {field: value}


def test_the_table_names_every_field_once_per_route() -> None:
    pairs = [(field, route) for field, route, _ in TABLE]
    assert len(pairs) == len(set(pairs))
    assert {field for field, _ in pairs} == set(VALUES)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str]]:
    """One app (and one loaded demo-lm) for every row."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("fields"), workers=0)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        runtime: Runtime = test_client.app.state.runtime  # type: ignore[attr-defined]
        yield test_client, runtime.keys.create("fields", rate_limits=json.loads(TEST_KEY_LIMITS)).key


@pytest.mark.parametrize(("field", "route", "verdict"), TABLE, ids=[f"{r}-{f}" for f, r, _ in TABLE])
def test_each_field_answers_as_the_readme_says(
    served: tuple[TestClient, str], field: str, route: str, verdict: str
) -> None:
    client, key = served
    response = client.post(ROUTES[route][0], json=body(field, route), headers=bearer(key))
    if verdict == "400":
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == field, response.text
    else:
        assert response.status_code == 200, response.text
