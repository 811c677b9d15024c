"""OpenAI fidelity on /v1, measured against OpenAI's own OpenAPI document and the official client.

One real ``winnow serve`` holds a local model (demo-lm), an upstream model (the fake OpenAI-compatible
server of ``test_passthrough``) and a local model that cannot load. Every body it sends on /v1 is
validated against the schemas of OpenAI's document kept in ``fixtures/openai_schemas.json`` (see
``fixtures/README.md``), and the ``openai`` client, unchanged, gets the exception class, ``type``,
``code`` and ``param`` OpenAI would give it for each error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators
from openai.types.chat import ChatCompletionMessageParam
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.api.test_passthrough import Answer, FakeUpstream
from tests.conftest import ROOT, LiveServer, bearer, in_one_rate_window

pytestmark = pytest.mark.slow  # a real `winnow serve` in front of the fake upstream

FIXTURE = Path(__file__).parent / "fixtures" / "openai_schemas.json"
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is 17+25?"}]


# OpenAI's document is OpenAPI 3.1 (JSON Schema 2020-12) but a few schemas still say ``nullable:
# true`` (3.0's keyword), e.g. a stream chunk's ``finish_reason``: honour it as OpenAI's SDKs do.
def _nullable(check: Callable[..., Iterator[ValidationError]]) -> Callable[..., Iterator[ValidationError]]:
    def checked(validator: Any, value: Any, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
        if instance is None and schema.get("nullable") is True:
            return
        yield from check(validator, value, instance, schema)

    return checked


# Likewise 3.0's boolean ``exclusiveMinimum: true`` (beside ``minimum``), e.g. a fine-tuning job's
# ``learning_rate_multiplier``: 2020-12 would read it as the number 1.
def _exclusive_minimum(validator: Any, value: Any, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    if not isinstance(value, bool):
        yield from Draft202012Validator.VALIDATORS["exclusiveMinimum"](validator, value, instance, schema)
    elif value and validator.is_type(instance, "number") and instance <= schema.get("minimum", float("-inf")):
        yield ValidationError(f"{instance} is less than or equal to the exclusive minimum {schema['minimum']}")


_OpenAPI31 = validators.extend(
    Draft202012Validator,
    {
        **{name: _nullable(Draft202012Validator.VALIDATORS[name]) for name in ("type", "enum")},
        "exclusiveMinimum": _exclusive_minimum,
    },
)


@cache
def _document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(FIXTURE.read_text())
    return document


def assert_openai(schema: str, body: Any) -> None:
    """Raise jsonschema.ValidationError unless ``body`` is a valid ``schema`` of OpenAI's document."""
    uri = "urn:openai-openapi"
    registry: Registry[Any] = Registry().with_resource(uri, Resource.from_contents(_document(), DRAFT202012))
    validator = _OpenAPI31(
        {"$ref": f"{uri}#/components/schemas/{schema}"}, registry=registry, format_checker=FormatChecker()
    )
    validator.validate(body)


def assert_completion_chunk(chunk: dict[str, Any]) -> None:
    """A streamed ``text_completion`` chunk. OpenAI's stream sends ``finish_reason: null`` until the
    last choice chunk, though its document gives chunks the non-streamed schema, whose
    ``finish_reason`` is not nullable; that one field is checked here, the rest by the schema."""
    assert_openai("CreateCompletionResponse", {**chunk, "choices": [_finished(c) for c in chunk["choices"]]})


def _finished(choice: dict[str, Any]) -> dict[str, Any]:
    assert "finish_reason" in choice, choice
    return choice if choice["finish_reason"] is not None else {**choice, "finish_reason": "stop"}


def _events(response: httpx.Response) -> list[dict[str, Any]]:
    """A server-sent event stream's JSON chunks; it must end with ``[DONE]``."""
    data = [line[len("data: ") :] for line in response.text.splitlines() if line.startswith("data: ")]
    assert data and data[-1] == "[DONE]", response.text
    return [json.loads(d) for d in data[:-1]]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def server(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("fidelity") / "data"
    models = [
        {
            "id": "demo-lm",
            "provider": "transformers",
            "path": str(ROOT / "examples/models/demo-lm"),
            "context_length": 64,
        },
        {
            "id": "fake",
            "type": "commercial",
            "provider": "openai",
            "base_url": f"{fake.url}/v1",
            "upstream_model": "up-model-1",
            "api_key_env": "FAKE_UPSTREAM_KEY",
            "max_retries": 0,
        },
        {"id": "unloadable", "provider": "transformers", "path": str(data.parent / "no-such-model")},
    ]
    config = data.parent / "fidelity.yaml"
    config.write_text(json.dumps({"models": models}))
    live = LiveServer(data, env={"WINNOW_CONFIG": str(config), "FAKE_UPSTREAM_KEY": "sk-fake"}).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def admin(server: LiveServer) -> str:
    return server.cli("keys", "create", "admin", "--admin").stdout.split()[-1]


def _key(server: LiveServer, admin: str, name: str, **fields: Any) -> str:
    created = httpx.post(f"{server.url}/api/v1/keys", json={"name": name, **fields}, headers=bearer(admin))
    assert created.status_code == 201, created.text
    secret: str = created.json()["key"]
    return secret


@pytest.fixture(scope="module")
def key(server: LiveServer, admin: str) -> str:
    return _key(server, admin, "fidelity")


@pytest.fixture(scope="module")
def client(server: LiveServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def _post(server: LiveServer, key: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}/v1{path}", json=body, headers=bearer(key), timeout=60)


def test_the_schemas_refuse_what_openai_refuses() -> None:
    """The fixture and its validator can fail: each body here breaks one rule of OpenAI's schemas."""
    message = {"role": "assistant", "content": "42", "refusal": None}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
    chat = {"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [choice]}
    assert_openai("CreateChatCompletionResponse", chat)
    without_refusal = {**choice, "message": {"role": "assistant", "content": "42"}}
    for broken in (
        {**chat, "choices": [without_refusal]},  # Winnow's messages before this issue
        {**chat, "choices": [{**choice, "finish_reason": None}]},  # only a chunk's may be null
        {**chat, "object": "chat.completion.chunk"},
    ):
        with pytest.raises(ValidationError):
            assert_openai("CreateChatCompletionResponse", broken)
    chunk_choice = {"index": 0, "delta": {"content": "4"}, "finish_reason": None}
    assert_openai(
        "CreateChatCompletionStreamResponse", {**chat, "object": "chat.completion.chunk", "choices": [chunk_choice]}
    )
    with pytest.raises(ValidationError):  # nullable, yet still one of the enum when set
        assert_openai(
            "CreateChatCompletionStreamResponse",
            {**chat, "object": "chat.completion.chunk", "choices": [{**chunk_choice, "finish_reason": "done"}]},
        )
    error = {"message": "m", "type": "invalid_request_error", "param": None, "code": None}
    assert_openai("ErrorResponse", {"error": error})
    with pytest.raises(ValidationError):
        assert_openai("ErrorResponse", {"error": {k: v for k, v in error.items() if k != "param"}})


def test_local_chat_completion_is_openai_valid_with_refusal_null(
    server: LiveServer, key: str, client: openai.OpenAI
) -> None:
    response = _post(server, key, "/chat/completions", {"model": "demo-lm", "messages": USER, "max_tokens": 8, "n": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert_openai("CreateChatCompletionResponse", body)
    assert [c["message"]["refusal"] for c in body["choices"]] == [None, None]
    typed = client.chat.completions.create(model="demo-lm", messages=USER, max_tokens=8, temperature=0)
    assert typed.choices[0].message.refusal is None and typed.choices[0].message.content


def test_local_chat_stream_with_usage_is_openai_valid_chunk_by_chunk(
    server: LiveServer, key: str, client: openai.OpenAI
) -> None:
    body = {"model": "demo-lm", "messages": USER, "max_tokens": 8, "temperature": 0, "stream": True}
    chunks = _events(_post(server, key, "/chat/completions", {**body, "stream_options": {"include_usage": True}}))
    for chunk in chunks:
        assert_openai("CreateChatCompletionStreamResponse", chunk)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    for n_chunk in _events(_post(server, key, "/chat/completions", {**body, "n": 2})):  # whole choices as chunks
        assert_openai("CreateChatCompletionStreamResponse", n_chunk)
    # The official client reads the same stream, usage included.
    whole = client.chat.completions.create(model="demo-lm", messages=USER, max_tokens=8, temperature=0)
    streamed = list(
        client.chat.completions.create(
            model="demo-lm",
            messages=USER,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == whole.choices[0].message.content
    assert streamed[-1].usage is not None and whole.usage is not None
    assert streamed[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_local_completions_are_openai_valid(server: LiveServer, key: str, client: openai.OpenAI) -> None:
    body = {"model": "demo-lm", "prompt": ["What is 1+1?", "What is 2+2?"], "max_tokens": 4, "temperature": 0}
    response = _post(server, key, "/completions", body)
    assert response.status_code == 200, response.text
    assert_openai("CreateCompletionResponse", response.json())
    one = {**body, "prompt": "What is 1+1?", "stream": True, "stream_options": {"include_usage": True}}
    chunks = _events(_post(server, key, "/completions", one))
    for chunk in chunks:
        assert_completion_chunk(chunk)
    assert chunks[-1]["usage"]["total_tokens"] > 0
    for chunk in _events(_post(server, key, "/completions", {**body, "stream": True})):
        assert_completion_chunk(chunk)
    typed = client.completions.create(model="demo-lm", prompt="What is 1+1?", max_tokens=4, temperature=0)
    assert typed.choices[0].text == response.json()["choices"][0]["text"]


def test_models_list_and_retrieve(server: LiveServer, key: str, client: openai.OpenAI) -> None:
    listed = httpx.get(f"{server.url}/v1/models", headers=bearer(key))
    assert_openai("ListModelsResponse", listed.json())
    assert [m.id for m in client.models.list()] == ["demo-lm", "fake", "unloadable"]
    raw = httpx.get(f"{server.url}/v1/models/fake", headers=bearer(key))
    assert raw.status_code == 200, raw.text
    assert_openai("Model", raw.json())
    model = client.models.retrieve("demo-lm")
    assert (model.id, model.object, model.owned_by) == ("demo-lm", "model", "winnow")
    assert model.model_dump(exclude_unset=True) in listed.json()["data"]
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-9")
    assert (missing.value.code, missing.value.type, missing.value.param) == (
        "model_not_found",
        "invalid_request_error",
        None,
    )
    assert_openai("ErrorResponse", missing.value.response.json())
    anonymous = httpx.get(f"{server.url}/v1/models/demo-lm")
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_api_key"


def test_upstream_bodies_are_openai_valid(server: LiveServer, key: str, fake: FakeUpstream) -> None:
    chat = _post(server, key, "/chat/completions", {"model": "fake", "messages": USER})
    assert chat.status_code == 200, chat.text
    assert_openai("CreateChatCompletionResponse", chat.json())
    body = {"model": "fake", "messages": USER, "stream": True, "stream_options": {"include_usage": True}}
    chunks = _events(_post(server, key, "/chat/completions", body))
    for chunk in chunks:
        assert_openai("CreateChatCompletionStreamResponse", chunk)
    assert chunks[-1]["usage"] is not None and all(c["model"] == "fake" for c in chunks)
    legacy = _post(server, key, "/completions", {"model": "fake", "prompt": "2+2="})
    assert_openai("CreateCompletionResponse", legacy.json())
    fake.answers.append(
        Answer(500, {"error": {"message": "boom", "type": "server_error", "param": None, "code": None}})
    )
    failed = _post(server, key, "/chat/completions", {"model": "fake", "messages": USER})
    assert failed.status_code == 502
    assert_openai("ErrorResponse", failed.json())


@pytest.mark.parametrize(
    ("path", "fields", "param", "code"),
    [
        (
            "/chat/completions",
            {"tools": [{"type": "function", "function": {"name": "add"}}]},
            "tools",
            "unsupported_parameter",
        ),
        (  # demo-lm's chat template renders no tools
            "/chat/completions",
            {"tools": [{"type": "function", "function": {"name": "add"}}], "tool_choice": "required"},
            "tools",
            "unsupported_parameter",
        ),
        ("/chat/completions", {"functions": [{"name": "add"}]}, "functions", "unsupported_parameter"),
        (
            "/chat/completions",
            {"extra_body": {"allowed_token_ids": [7, 8]}},
            "allowed_token_ids",
            "unsupported_parameter",
        ),
        ("/chat/completions", {"reasoning_effort": "high"}, "reasoning_effort", "unsupported_parameter"),
        (
            "/chat/completions",
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]},
            "messages[0].content[0].type",
            "unsupported_value",
        ),
        ("/completions", {"suffix": "!"}, "suffix", "unsupported_parameter"),
        ("/completions", {"best_of": 3}, "best_of", "unsupported_parameter"),
        ("/completions", {"bad_words": ["a"]}, "bad_words", "unsupported_parameter"),
        ("/completions", {"extra_body": {"use_beam_search": True}}, "use_beam_search", "unsupported_parameter"),
    ],
)
def test_parameters_a_local_model_cannot_honour_are_a_400_naming_them(
    server: LiveServer, key: str, fake: FakeUpstream, path: str, fields: dict[str, Any], param: str, code: str
) -> None:
    body = {"messages": USER} if path == "/chat/completions" else {"prompt": "What is 1+1?"}
    body = {**body, "max_tokens": 4, **fields}
    for stream in (False, True):
        refused = _post(server, key, path, {**body, "model": "demo-lm", "stream": stream})
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
        assert_openai("ErrorResponse", refused.json())
    # An upstream model gets them as sent.
    fake.received.clear()
    forwarded = _post(server, key, path, {**body, "model": "fake"})
    assert forwarded.status_code == 200, forwarded.text
    assert fake.received[-1]["body"] == {**body, "model": "up-model-1"}


def test_values_that_ask_for_nothing_are_accepted_by_a_local_model(server: LiveServer, key: str) -> None:
    neutral = {
        "logprobs": False,
        "tool_choice": "none",
        "tools": [],
        "response_format": {"type": "text"},
        "frequency_penalty": 0,
        "presence_penalty": 0.0,
        "logit_bias": {},
        "modalities": ["text"],
        "parallel_tool_calls": True,
        "user": "someone",
        "metadata": {"team": "a"},
        "store": False,
    }
    chat = _post(server, key, "/chat/completions", {"model": "demo-lm", "messages": USER, "max_tokens": 4, **neutral})
    assert chat.status_code == 200, chat.text
    text = _post(
        server,
        key,
        "/completions",
        {"model": "demo-lm", "prompt": "1+1=", "max_tokens": 4, "echo": False, "best_of": 1},
    )
    assert text.status_code == 200, text.text


def test_each_error_is_the_official_clients_exception_with_openais_type_code_and_param(
    server: LiveServer, admin: str, key: str, client: openai.OpenAI, fake: FakeUpstream
) -> None:
    def raised(cls: type[openai.APIStatusError], call: Callable[[], object]) -> openai.APIStatusError:
        with pytest.raises(cls) as caught:
            call()
        assert_openai("ErrorResponse", caught.value.response.json())
        return caught.value

    # 401: a wrong key, and no key, are OpenAI's invalid_api_key.
    stranger = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wn-" + "x" * 43, max_retries=0)
    bad_key = raised(
        openai.AuthenticationError, lambda: stranger.chat.completions.create(model="demo-lm", messages=USER)
    )
    assert (bad_key.status_code, bad_key.type, bad_key.code) == (401, "invalid_request_error", "invalid_api_key")
    no_key = httpx.post(f"{server.url}/v1/chat/completions", json={"model": "demo-lm", "messages": USER})
    assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "invalid_api_key"

    # 404: an unknown model.
    unknown = raised(openai.NotFoundError, lambda: client.chat.completions.create(model="gpt-9", messages=USER))
    assert (unknown.type, unknown.code, unknown.param) == ("invalid_request_error", "model_not_found", None)

    # 400: the offending field is the param, with OpenAI's code for the mistake.
    chat = client.chat.completions.create
    robot: Any = [{"role": "robot", "content": "hi"}]  # values the client's types would refuse
    two: Any = "two"
    for call, param, code in (
        (lambda: chat(model="demo-lm", messages=USER, temperature=5), "temperature", "decimal_above_max_value"),
        (lambda: chat(model="demo-lm", messages=USER, max_tokens=0), "max_tokens", "integer_below_min_value"),
        (lambda: chat(model="demo-lm", messages=[]), "messages", "empty_array"),
        (lambda: chat(model="demo-lm", messages=robot), "messages[0].role", "invalid_value"),
        (lambda: chat(model="demo-lm", messages=USER, n=two), "n", "invalid_type"),
        (lambda: client.completions.create(model="demo-lm", prompt=None), "prompt", "invalid_type"),
    ):
        bad = raised(openai.BadRequestError, call)
        assert (bad.type, bad.param, bad.code) == ("invalid_request_error", param, code), bad.body
    missing = _post(server, key, "/chat/completions", {"model": "demo-lm"})
    assert missing.status_code == 400
    assert (missing.json()["error"]["param"], missing.json()["error"]["code"]) == (
        "messages",
        "missing_required_parameter",
    )
    unparsable = httpx.post(
        f"{server.url}/v1/chat/completions", content=b"{", headers={**bearer(key), "Content-Type": "application/json"}
    )
    assert unparsable.status_code == 400 and unparsable.json()["error"]["param"] is None

    # 429: the key's rate limit (OpenAI's type "requests"), with Retry-After.
    limited = openai.OpenAI(
        base_url=f"{server.url}/v1",
        api_key=_key(server, admin, "limited", rate_limits={"generation": "1/minute"}),
        max_retries=0,
    )
    in_one_rate_window(10)
    limited.chat.completions.create(model="demo-lm", messages=USER, max_tokens=2)
    busy = raised(openai.RateLimitError, lambda: limited.chat.completions.create(model="demo-lm", messages=USER))
    assert (busy.type, busy.code) == ("requests", "rate_limit_exceeded")
    assert int(busy.response.headers["retry-after"]) >= 1

    # 429 insufficient_quota: the key's budget is spent, and the client is told not to retry.
    broke_key = _key(server, admin, "broke", budget={"tokens": 1, "period": "day"})
    broke = openai.OpenAI(base_url=f"{server.url}/v1", api_key=broke_key, max_retries=2)
    before = _budget_rejections(server)
    spent = raised(openai.RateLimitError, lambda: broke.chat.completions.create(model="demo-lm", messages=USER))
    assert (spent.status_code, spent.type, spent.code) == (429, "insufficient_quota", "insufficient_quota")
    assert spent.response.headers["x-should-retry"] == "false"
    assert _budget_rejections(server) == before + 1  # one request: the client did not retry

    # 5xx: an upstream failing (502), a local model that cannot load (503): APIStatusError's
    # InternalServerError, type server_error, Winnow's code.
    fake.answers.append(
        Answer(500, {"error": {"message": "boom", "type": "server_error", "param": None, "code": None}})
    )
    upstream = raised(openai.InternalServerError, lambda: chat(model="fake", messages=USER))
    assert (upstream.status_code, upstream.type, upstream.code) == (502, "server_error", "upstream_error")
    down = raised(openai.InternalServerError, lambda: chat(model="unloadable", messages=USER))
    assert (down.status_code, down.type, down.code) == (503, "server_error", "service_unavailable")
    assert isinstance(down, openai.APIStatusError)


def test_an_upstreams_400_and_429_keep_its_type_code_and_param(
    server: LiveServer, key: str, client: openai.OpenAI, fake: FakeUpstream
) -> None:
    """A forwarded request that the upstream refuses gets the upstream's own error fields, as a
    client talking to the upstream directly would (a context-length 400 names ``messages``)."""
    too_long = {
        "message": "This model's maximum context length is 8192 tokens.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
    fake.answers.append(Answer(400, {"error": too_long}))
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="fake", messages=USER)
    assert (refused.value.type, refused.value.param, refused.value.code) == (
        "invalid_request_error",
        "messages",
        "context_length_exceeded",
    )
    assert too_long["message"] in refused.value.message
    assert_openai("ErrorResponse", refused.value.response.json())
    tokens = {
        "message": "Rate limit reached on tokens per min (TPM)",
        "type": "tokens",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    fake.answers.append(Answer(429, {"error": tokens}, {"Retry-After": "3"}))
    with pytest.raises(openai.RateLimitError) as limited:
        client.completions.create(model="fake", prompt="2+2=")
    assert (limited.value.type, limited.value.code, limited.value.param) == ("tokens", "rate_limit_exceeded", None)
    assert limited.value.response.headers["retry-after"] == "3"
    assert_openai("ErrorResponse", limited.value.response.json())


def _budget_rejections(server: LiveServer) -> float:
    metrics = httpx.get(f"{server.url}/metrics").text
    found = re.search(r'^winnow_budget_rejections_total\{model="demo-lm"\} (\S+)$', metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_a_prompt_over_the_context_is_context_length_exceeded_naming_its_field(
    server: LiveServer, key: str, client: openai.OpenAI
) -> None:
    # demo-lm is served here with a 64-token context; a huge prompt is refused from its length alone.
    for long in ("What is 1+1? " * 20, "What is 1+1? " * 40_000):
        long_chat: list[ChatCompletionMessageParam] = [{"role": "user", "content": long}]
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as caught:
                client.chat.completions.create(model="demo-lm", messages=long_chat, stream=stream)
            error = caught.value
            assert (error.type, error.code, error.param) == (
                "invalid_request_error",
                "context_length_exceeded",
                "messages",
            )
            assert "context length" in error.message
            assert_openai("ErrorResponse", error.response.json())
            with pytest.raises(openai.BadRequestError) as caught:
                client.completions.create(model="demo-lm", prompt=["1+1=", long], stream=stream)
            assert (caught.value.code, caught.value.param) == ("context_length_exceeded", "prompt")
    # /api/v1 keeps its documented validation_error
    native = httpx.post(
        f"{server.url}/api/v1/generate",
        json={"model_id": "demo-lm", "prompt": "What is 1+1? " * 20, "max_tokens": 4},
        headers=bearer(key),
    )
    assert native.status_code == 400 and native.json()["error"] == "validation_error"


VLLM_FIELDS: dict[str, Any] = {
    "top_k": 1,
    "min_p": 0.05,
    "repetition_penalty": 1.1,
    "presence_penalty": 0.5,
    "frequency_penalty": 0.5,
    "min_tokens": 1,
    "ignore_eos": False,
    "stop_token_ids": [2],
    "logit_bias": {"7": 1.5},
}


def test_vllms_sampling_fields_work_top_level_or_in_extra_body_and_reach_upstreams_as_sent(
    server: LiveServer, key: str, client: openai.OpenAI, fake: FakeUpstream
) -> None:
    greedy = client.chat.completions.create(model="demo-lm", messages=USER, max_tokens=8, temperature=0)
    # the openai SDK sends extra_body's fields at the top level
    top_k = client.chat.completions.create(
        model="demo-lm", messages=USER, max_tokens=8, temperature=1.5, n=4, extra_body={"top_k": 1}
    )
    assert [c.message.content for c in top_k.choices] == [greedy.choices[0].message.content] * 4
    # a client that sends an extra_body object itself
    nested = _post(
        server,
        key,
        "/completions",
        {
            "model": "demo-lm",
            "prompt": "<bos><|user|>What is 17+25?<|assistant|>",
            "max_tokens": 8,
            "temperature": 1.5,
            "n": 4,
            "extra_body": {"top_k": 1, "ignore_eos": True},
        },
    )
    assert nested.status_code == 200, nested.text
    choices = nested.json()["choices"]
    assert {c["text"] for c in choices} == {choices[0]["text"]} and choices[0]["text"].startswith("42")
    assert nested.json()["usage"]["completion_tokens"] == 4 * 8  # ignore_eos: every choice ran to max_tokens
    every = client.chat.completions.create(
        model="demo-lm", messages=USER, max_tokens=8, temperature=0.8, seed=1, extra_body=VLLM_FIELDS
    )
    assert every.choices[0].message.content
    # out of range, or not a token id: a 400 naming the field
    for fields, param in (
        ({"top_k": -2}, "top_k"),
        ({"min_p": 1.5}, "min_p"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"min_tokens": 9}, "min_tokens"),
        ({"logit_bias": {"seven": 1}}, "logit_bias"),
        ({"stop_token_ids": [-1]}, "stop_token_ids[0]"),
    ):
        refused = _post(
            server, key, "/chat/completions", {"model": "demo-lm", "messages": USER, "max_tokens": 8, **fields}
        )
        assert refused.status_code == 400, (fields, refused.text)
        assert refused.json()["error"]["param"] == param, refused.json()
    # an upstream model gets them as sent, top level or nested
    for body in ({**VLLM_FIELDS}, {"extra_body": VLLM_FIELDS}):
        fake.received.clear()
        sent = {"model": "fake", "messages": USER, "max_tokens": 4, **body}
        assert _post(server, key, "/chat/completions", sent).status_code == 200
        assert fake.received[-1]["body"] == {**sent, "model": "up-model-1"}


def test_logprobs_come_in_openais_shapes_streamed_or_not(server: LiveServer, key: str, client: openai.OpenAI) -> None:
    chat = client.chat.completions.create(
        model="demo-lm", messages=USER, max_tokens=8, temperature=0, logprobs=True, top_logprobs=3
    )
    assert_openai("CreateChatCompletionResponse", chat.model_dump(mode="json", exclude_unset=True))
    content = chat.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and "".join(t.token for t in content).startswith(chat.choices[0].message.content or "?")
    assert all(len(t.top_logprobs) == 3 and t.top_logprobs[0].logprob >= t.logprob - 1e-6 for t in content)
    assert all(t.bytes == list(t.token.encode()) for t in content)
    chunks = list(
        client.chat.completions.create(
            model="demo-lm", messages=USER, max_tokens=8, temperature=0, logprobs=True, top_logprobs=3, stream=True
        )
    )
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content or []]
    assert [(t.token, t.logprob) for t in streamed] == [(t.token, t.logprob) for t in content]
    for chunk in chunks:
        assert_openai("CreateChatCompletionStreamResponse", chunk.model_dump(mode="json", exclude_unset=True))
    plain = client.chat.completions.create(model="demo-lm", messages=USER, max_tokens=8, temperature=0, logprobs=True)
    assert plain.choices[0].logprobs is not None and plain.choices[0].logprobs.content
    assert all(t.top_logprobs == [] for t in plain.choices[0].logprobs.content)

    prompt = "<bos><|user|>What is 17+25?<|assistant|>"
    text = client.completions.create(model="demo-lm", prompt=prompt, max_tokens=4, temperature=0, logprobs=2)
    assert_openai("CreateCompletionResponse", text.model_dump(mode="json", exclude_unset=True))
    logprobs = text.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens and logprobs.token_logprobs and logprobs.top_logprobs
    assert all(len(top) <= 2 for top in logprobs.top_logprobs)
    echoed = client.completions.create(
        model="demo-lm", prompt=prompt, max_tokens=4, temperature=0, logprobs=2, echo=True
    )
    choice = echoed.choices[0]
    assert choice.text == prompt + text.choices[0].text
    assert choice.logprobs is not None and choice.logprobs.token_logprobs is not None
    assert choice.logprobs.token_logprobs[0] is None and choice.logprobs.top_logprobs[0] is None  # type: ignore[index]
    # the stop token (EOS) ends the tokens with its entry, as in vLLM's answers, but not the text
    assert choice.finish_reason == "stop" and (choice.logprobs.tokens or [])[-1] == "<eos>"
    assert "".join(choice.logprobs.tokens or []) == choice.text + "<eos>"
    assert choice.logprobs.text_offset == [
        sum(len(t) for t in (choice.logprobs.tokens or [])[:i]) for i in range(len(choice.logprobs.tokens or []))
    ]
    assert choice.logprobs.token_logprobs[-len(logprobs.token_logprobs) :] == logprobs.token_logprobs
    only_echo = client.completions.create(model="demo-lm", prompt=prompt, max_tokens=4, temperature=0, echo=True)
    assert only_echo.choices[0].text == choice.text and only_echo.choices[0].logprobs is None
    for fields, param in (
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
    ):
        refused = _post(server, key, "/chat/completions", {"model": "demo-lm", "messages": USER, **fields})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == param, refused.text
    refused = _post(server, key, "/completions", {"model": "demo-lm", "prompt": "1", "logprobs": 21})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "logprobs"
