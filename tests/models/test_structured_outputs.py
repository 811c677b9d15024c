"""Structured outputs on a local transformers model: every answer parses and validates against its
schema (or matches its regex, choice or grammar), constrained and free rows share batches without
touching each other, and a cut at max_tokens says ``length`` — on the thread engine and in an engine
process, batched and streamed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jsonschema
import pytest

from tests.conftest import DEMO_LM
from winnow.config import ModelConfig, Settings
from winnow.errors import InvalidRequest
from winnow.models.base import ChatMessage, Guide, SamplingParams
from winnow.models.providers.transformers import TransformersProvider

QUESTION = [ChatMessage("user", "Describe a person as JSON.")]

# Varied schemas: flat and nested objects, enums, arrays, integers and numbers, optional fields. Each
# is bounded (maxLength, maximum, maxItems): the grammar guarantees the form, not that an untrained
# model ever stops writing digits; an unbounded one may run to max_tokens (finish_reason length).
SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 10},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
        },
        "required": ["name", "age"],
    },
    {
        "type": "object",
        "properties": {
            "color": {"enum": ["red", "green", "blue"]},
            "weight": {"type": "number", "minimum": -5, "maximum": 5},
        },
        "required": ["color", "weight"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "scores": {"type": "array", "items": {"type": "integer", "maximum": 99}, "minItems": 1, "maxItems": 4},
            "passed": {"type": "boolean"},
        },
        "required": ["scores", "passed"],
    },
    {
        "type": "object",
        "properties": {
            "user": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer", "minimum": 1, "maximum": 9999},
                    "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
                },
                "required": ["id", "tags"],
            },
            "note": {"type": ["string", "null"], "maxLength": 8},
        },
        "required": ["user"],
    },
    {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "x": {"type": "integer", "maximum": 9},
                "y": {"type": "integer", "minimum": -9, "maximum": 9},
            },
            "required": ["x", "y"],
            "additionalProperties": False,
        },
        "maxItems": 3,
    },
    {"type": "object", "properties": {"answer": {"const": 42}, "unit": {"enum": ["m", "s"]}}, "required": ["answer"]},
]


def provider(engine: str = "thread") -> TransformersProvider:
    config = ModelConfig(id="demo-lm", path=str(DEMO_LM), options={"engine": engine})
    return TransformersProvider(config, Settings(local_torch_threads=1))


def guided(guide: Guide, **params: Any) -> SamplingParams:
    return SamplingParams(**({"max_tokens": 160, "temperature": 1.0, "n": 4, "guide": guide} | params))


@pytest.mark.parametrize("engine", ["thread", pytest.param("process", marks=pytest.mark.slow)])
def test_every_answer_parses_and_validates_against_its_schema(engine: str) -> None:
    async def go() -> list[Any]:
        p = provider(engine)
        try:  # every schema at once: the calls share batches with each other and with free rows
            calls = [p.generate([QUESTION], guided(Guide.json_schema(s), seed=i)) for i, s in enumerate(SCHEMAS)]
            calls += [p.generate([QUESTION], guided(Guide.json_schema(s), temperature=0.0, n=1)) for s in SCHEMAS]
            calls.append(p.generate([QUESTION], SamplingParams(max_tokens=8, temperature=1.0, n=2)))
            return await asyncio.gather(*calls)
        finally:
            await p.close()

    results = asyncio.run(go())
    for i, ((result,), schema) in enumerate(zip(results[:-1], SCHEMAS + SCHEMAS, strict=True)):
        assert result.error is None
        for completion in result.completions:
            assert completion.finish_reason == "stop", (i, completion.text)
            jsonschema.validate(json.loads(completion.text), schema)
    assert results[-1][0].error is None and len(results[-1][0].completions) == 2


def test_a_free_row_samples_the_same_beside_constrained_rows() -> None:
    free = SamplingParams(max_tokens=12, temperature=1.2, seed=7)

    async def go() -> tuple[str, str]:
        p = provider()
        try:
            (alone,) = await p.generate([QUESTION], free)
            company = await asyncio.gather(
                *(p.generate([QUESTION], guided(Guide.json_schema(s), seed=i)) for i, s in enumerate(SCHEMAS[:3])),
                p.generate([QUESTION], free),
            )
            return alone.completions[0].text, company[-1][0].completions[0].text
        finally:
            await p.close()

    alone, in_company = asyncio.run(go())
    assert alone == in_company


def test_regex_choice_grammar_and_any_json_object() -> None:
    cases: list[tuple[Guide, Any]] = [
        (Guide("regex", r"[a-c]{3}-\d\d"), lambda t: len(t) == 6 and t[3] == "-" and set(t[:3]) <= set("abc")),
        (Guide("choice", json.dumps(["yes", "no", "maybe so"])), lambda t: t in ("yes", "no", "maybe so")),
        (Guide("grammar", 'root ::= "(" [0-9]{1,3} ("+" [0-9]{1,3})? ")"'), lambda t: t[0] == "(" and t[-1] == ")"),
        (Guide("json_object", '{"type": "object"}'), None),
    ]

    async def go() -> list[Any]:
        p = provider()
        try:
            return await asyncio.gather(*(p.generate([QUESTION], guided(g, max_tokens=24, seed=1)) for g, _ in cases))
        finally:
            await p.close()

    for (result,), (guide, check) in zip(asyncio.run(go()), cases, strict=True):
        for c in result.completions:
            if check is not None:
                assert c.finish_reason == "stop" and check(c.text), (guide.kind, c.text)
            else:  # any JSON object: it opens as one; unbounded, an untrained model may run to the limit
                assert c.text.startswith("{")
                if c.finish_reason == "stop":
                    assert isinstance(json.loads(c.text), dict)


def test_a_cut_at_max_tokens_is_length_and_a_stream_follows_the_schema() -> None:
    schema = SCHEMAS[0]

    async def go() -> tuple[Any, list[Any]]:
        p = provider()
        try:
            (cut,) = await p.generate([QUESTION], guided(Guide.json_schema(schema), max_tokens=5, n=1))
            deltas = [d async for d in p.stream(QUESTION, guided(Guide.json_schema(schema), n=1, temperature=0.0))]
            return cut, deltas
        finally:
            await p.close()

    cut, deltas = asyncio.run(go())
    (completion,) = cut.completions
    assert (completion.finish_reason, completion.output_tokens) == ("length", 5)
    with pytest.raises(json.JSONDecodeError):
        json.loads(completion.text)  # honest: the text as far as it got
    assert deltas[-1].finish_reason == "stop"
    jsonschema.validate(json.loads("".join(d.text for d in deltas)), schema)


def test_a_schema_that_cannot_be_enforced_is_an_invalid_request_naming_its_field() -> None:
    bad = Guide.json_schema({"type": "object", "properties": {"a": {"type": "no-such-type"}}}, "guided_json")

    async def go() -> tuple[Any, Any]:
        p = provider()
        try:
            (result,) = await p.generate([QUESTION], guided(bad))
            with pytest.raises(InvalidRequest) as streamed:
                async for _ in p.stream(QUESTION, guided(bad, n=1)):
                    pass
            return result, streamed.value
        finally:
            await p.close()

    result, streamed = asyncio.run(go())
    assert isinstance(result.error, InvalidRequest) and result.error.param == "guided_json"
    assert streamed.param == "guided_json"
