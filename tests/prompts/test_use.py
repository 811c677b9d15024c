"""A registered prompt used by the generation routes of a real ``winnow serve`` (demo-lm): the
platform's ``/generate`` with a ``prompt`` object, ``/v1/chat/completions`` and ``/v1/completions``
with ``prompt_ref`` through the official openai client's ``extra_body``, and the SDK. The rendered
messages are what the model sees (the same answer and token count as sending them by hand), the
version's sampling parameters apply unless the request sets its own, a label picks its version, and
bad references are 400s and 404s in each surface's error shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import LiveServer, bearer
from tests.spec import assert_error, assert_valid
from winnow.client import PromptRef, Winnow

pytestmark = pytest.mark.slow  # a real `winnow serve`

SYSTEM = "You are a calculator."
V1 = "What is {a}+{b}?"
V2 = "Compute {a}+{b}."


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    server = LiveServer(tmp_path_factory.mktemp("prompts") / "data").start()
    key = server.cli("keys", "create", "prompter").stdout.split()[-1]
    with httpx.Client(base_url=server.url, headers=bearer(key)) as http:
        made = http.post(
            "/api/v1/prompts",
            json={
                "name": "add",
                "template": V1,
                "system": SYSTEM,
                "labels": ["production"],
                "params": {"temperature": 0, "max_tokens": 3},
            },
        )
        assert made.status_code == 201, made.text
        assert (
            http.post("/api/v1/prompts/add/versions", json={"template": V2, "params": {"temperature": 0}}).status_code
            == 201
        )
    yield server, key
    server.stop()


@pytest.fixture(scope="module")
def oai(served: tuple[LiveServer, str]) -> openai.OpenAI:
    server, key = served
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def _ref(**extra: Any) -> dict[str, Any]:
    return {"name": "add", "variables": {"a": 17, "b": 25}, **extra}


def test_chat_with_a_prompt_ref_is_the_rendered_chat(oai: openai.OpenAI) -> None:
    by_hand = oai.chat.completions.create(
        model="demo-lm",
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is 17+25?"}],
        temperature=0,
        max_tokens=3,
    )
    by_ref = oai.chat.completions.create(
        model="demo-lm", messages=[], extra_body={"prompt_ref": _ref(label="production")}
    )
    assert by_ref.choices[0].message.content == by_hand.choices[0].message.content
    assert by_ref.usage is not None and by_hand.usage is not None
    assert by_ref.usage.prompt_tokens == by_hand.usage.prompt_tokens
    assert by_ref.usage.completion_tokens <= 3  # the version's max_tokens, since the request set none


def test_the_request_overrides_the_versions_system_and_sampling(oai: openai.OpenAI) -> None:
    own = [{"role": "system", "content": "Be terse."}]
    by_hand = oai.chat.completions.create(
        model="demo-lm", messages=[*own, {"role": "user", "content": "What is 17+25?"}], temperature=0, max_tokens=6
    )
    by_ref = oai.chat.completions.create(
        model="demo-lm",
        messages=own,
        max_tokens=6,
        extra_body={"prompt_ref": _ref(version=1)},  # type: ignore[arg-type]
    )
    assert by_ref.usage is not None and by_hand.usage is not None
    assert by_ref.usage.prompt_tokens == by_hand.usage.prompt_tokens
    assert by_ref.choices[0].message.content == by_hand.choices[0].message.content


def test_completions_with_a_prompt_ref(oai: openai.OpenAI) -> None:
    by_hand = oai.completions.create(model="demo-lm", prompt="Compute 17+25.", temperature=0, max_tokens=4)
    by_ref = oai.completions.create(
        model="demo-lm",
        prompt=None,
        max_tokens=4,
        extra_body={"prompt_ref": _ref()},  # type: ignore[arg-type]
    )
    assert by_ref.choices[0].text == by_hand.choices[0].text  # latest: version 2, no system message
    assert by_ref.usage is not None and by_hand.usage is not None
    assert by_ref.usage.prompt_tokens == by_hand.usage.prompt_tokens


def test_bad_references_on_v1_are_openai_errors(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as missing:
        oai.chat.completions.create(
            model="demo-lm", messages=[], extra_body={"prompt_ref": {"name": "add", "variables": {"a": 1}}}
        )
    assert "missing: b" in str(missing.value)
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="demo-lm", messages=[], extra_body={"prompt_ref": _ref(label="canary")})
    with pytest.raises(openai.BadRequestError):
        oai.completions.create(model="demo-lm", prompt="both", extra_body={"prompt_ref": _ref()})
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model="demo-lm", messages=[])


def test_generate_with_a_prompt_object(served: tuple[LiveServer, str]) -> None:
    server, key = served
    with httpx.Client(base_url=server.url, headers=bearer(key)) as http:
        by_hand = http.post(
            "/api/v1/generate", json={"model_id": "demo-lm", "prompt": "Compute 17+25.", "temperature": 0}
        )
        by_ref = http.post("/api/v1/generate", json={"model_id": "demo-lm", "prompt": _ref(version=2)})
        assert by_ref.status_code == 200, by_ref.text
        body = by_ref.json()
        assert_valid("GenerateResponse", body)
        assert body["prompt"] == "Compute 17+25." and body["metadata"]["prompt"] == {"name": "add", "version": 2}
        assert body["parameters"]["temperature"] == 0.0  # the version's
        assert body["text"] == by_hand.json()["text"]
        assert body["metrics"]["input_tokens"] == by_hand.json()["metrics"]["input_tokens"]
        labelled = http.post(
            "/api/v1/generate", json={"model_id": "demo-lm", "prompt": _ref(label="production"), "max_tokens": 5}
        ).json()
        assert labelled["metadata"]["prompt"]["version"] == 1 and labelled["parameters"]["max_tokens"] == 5
        for body_sent, status in (
            ({"model_id": "demo-lm", "prompt": {"name": "add", "variables": {"a": 1, "b": 2, "c": 3}}}, 400),
            ({"model_id": "demo-lm", "prompt": {"name": "add", "version": 1, "label": "production"}}, 400),
            ({"model_id": "demo-lm", "prompt": {"name": "nope"}}, 404),
            ({"model_id": "demo-lm", "prompt": _ref(version=9)}, 404),
        ):
            assert_error(http.post("/api/v1/generate", json=body_sent), status)


def test_the_sdk_generates_through_a_label(served: tuple[LiveServer, str]) -> None:
    server, key = served
    with Winnow(server.url, key) as client:
        answer = client.generate(
            PromptRef(name="add", label="production", variables={"a": 2, "b": 3}), model_id="demo-lm"
        )
    assert answer.prompt == "What is 2+3?" and answer.metadata["prompt"] == {"name": "add", "version": 1}
    assert answer.parameters.max_tokens == 3


def test_an_upstream_model_gets_the_rendered_body(
    served: tuple[LiveServer, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A gateway whose model 'relay' is the first server's demo-lm: prompt_ref is rendered on the
    gateway (the fast path leaves it to the route) and the upstream sees plain messages."""
    upstream, up_key = served
    data = tmp_path_factory.mktemp("gateway") / "data"
    config = data.parent / "gateway.yaml"
    relay = {"id": "relay", "provider": "openai", "base_url": f"{upstream.url}/v1", "upstream_model": "demo-lm"}
    config.write_text(json.dumps({"models": [{**relay, "api_key_env": "RELAY_KEY"}]}))
    gateway = LiveServer(data, env={"WINNOW_CONFIG": str(config), "RELAY_KEY": up_key}).start()
    try:
        key = gateway.cli("keys", "create", "gw").stdout.split()[-1]
        made = httpx.post(
            f"{gateway.url}/api/v1/prompts",
            headers=bearer(key),
            json={"name": "add", "template": V1, "system": SYSTEM, "params": {"temperature": 0, "max_tokens": 3}},
        )
        assert made.status_code == 201, made.text
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)
        by_ref = client.chat.completions.create(model="relay", messages=[], extra_body={"prompt_ref": _ref()})
        direct = openai.OpenAI(base_url=f"{upstream.url}/v1", api_key=up_key, max_retries=0)
        by_hand = direct.chat.completions.create(
            model="demo-lm",
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is 17+25?"}],
            temperature=0,
            max_tokens=3,
        )
        assert by_ref.choices[0].message.content == by_hand.choices[0].message.content
        assert by_ref.usage is not None and by_hand.usage is not None
        assert by_ref.usage.prompt_tokens == by_hand.usage.prompt_tokens
    finally:
        gateway.stop()
