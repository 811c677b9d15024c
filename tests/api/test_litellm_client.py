"""LiteLLM's SDK, unchanged, as a client of Winnow's /v1 with an ``openai/`` model prefix.

A LiteLLM user points ``api_base`` at Winnow and names models ``openai/<winnow model id>``: chat,
a stream with usage, text completions, the model list, and each error as the LiteLLM exception
class it maps OpenAI's status codes to. The server is ``test_openai_fidelity``'s: demo-lm (local),
``fake`` (an upstream on loopback) and a local model that cannot load.
"""

# ruff: noqa: F811  (the fixtures imported below are redefined as test parameters, as pytest wants)
from __future__ import annotations

import asyncio
import os

import pytest

# LiteLLM fetches its model price map from GitHub at import unless told to use the copy it ships.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_TELEMETRY", "False")
litellm = pytest.importorskip("litellm")

from tests.api.test_openai_fidelity import USER, _key, admin, fake, key, server  # noqa: E402,F401
from tests.api.test_passthrough import Answer, FakeUpstream  # noqa: E402
from tests.conftest import LiveServer, in_one_rate_window  # noqa: E402

pytestmark = pytest.mark.slow  # a real `winnow serve`


def _call(server: LiveServer, key: str, **fields: object) -> object:
    return litellm.completion(api_base=f"{server.url}/v1", api_key=key, max_retries=0, **fields)


def test_chat_and_stream_with_usage(server: LiveServer, key: str) -> None:
    whole = _call(server, key, model="openai/demo-lm", messages=USER, max_tokens=8, temperature=0)
    text = whole.choices[0].message.content
    assert text and whole.model.endswith("demo-lm")
    assert whole.usage.prompt_tokens > 0 and whole.usage.completion_tokens > 0
    chunks = list(
        _call(
            server,
            key,
            model="openai/demo-lm",
            messages=USER,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    usage = [getattr(c, "usage", None) for c in chunks if getattr(c, "usage", None)]
    assert usage and usage[-1].completion_tokens == whole.usage.completion_tokens
    rebuilt = litellm.stream_chunk_builder(chunks, messages=USER)
    assert rebuilt.choices[0].message.content == text


def test_an_upstream_model_through_winnow(server: LiveServer, key: str, fake: FakeUpstream) -> None:
    fake.received.clear()
    answer = _call(server, key, model="openai/fake", messages=USER, temperature=0.5, seed=7)
    assert answer.choices[0].message.content
    sent = fake.received[-1]["body"]
    assert (sent["model"], sent["temperature"], sent["seed"]) == ("up-model-1", 0.5, 7)


def test_text_completion(server: LiveServer, key: str) -> None:
    done = litellm.text_completion(
        model="openai/demo-lm",
        prompt="What is 1+1?",
        max_tokens=4,
        temperature=0,
        api_base=f"{server.url}/v1",
        api_key=key,
    )
    assert done.choices[0].text and done.usage.total_tokens > 0


def test_the_model_list(server: LiveServer, key: str) -> None:
    models = litellm.get_valid_models(
        check_provider_endpoint=True, custom_llm_provider="openai", api_key=key, api_base=f"{server.url}/v1"
    )
    assert sorted(m.removeprefix("openai/") for m in models) == ["demo-lm", "fake", "unloadable"]


def test_async_chat(server: LiveServer, key: str) -> None:
    reply = asyncio.run(
        litellm.acompletion(
            model="openai/demo-lm",
            messages=USER,
            max_tokens=4,
            temperature=0,
            api_base=f"{server.url}/v1",
            api_key=key,
            max_retries=0,
        )
    )
    assert reply.choices[0].message.content


def test_each_error_is_litellms_exception(server: LiveServer, admin: str, key: str, fake: FakeUpstream) -> None:
    def raised(cls: type[Exception], **fields: object) -> Exception:
        with pytest.raises(cls) as caught:
            _call(server, fields.pop("api_key", key), **fields)  # type: ignore[arg-type]
        return caught.value

    bad_key = raised(litellm.AuthenticationError, model="openai/demo-lm", messages=USER, api_key="wn-" + "x" * 43)
    assert bad_key.status_code == 401 and "Unknown or revoked API key" in str(bad_key)
    unknown = raised(litellm.NotFoundError, model="openai/gpt-9", messages=USER)
    assert unknown.status_code == 404 and "gpt-9" in str(unknown)
    bad = raised(litellm.BadRequestError, model="openai/demo-lm", messages=USER, max_tokens=0)
    assert bad.status_code == 400 and "max_tokens" in str(bad)
    limited = _key(server, admin, "litellm-limited", rate_limits={"generation": "1/minute"})
    in_one_rate_window(10)
    _call(server, limited, model="openai/demo-lm", messages=USER, max_tokens=2)
    busy = raised(litellm.RateLimitError, model="openai/demo-lm", messages=USER, api_key=limited)
    assert busy.status_code == 429, str(busy)
    fake.answers.append(
        Answer(500, {"error": {"message": "boom", "type": "server_error", "param": None, "code": None}})
    )
    upstream = raised(litellm.BadGatewayError, model="openai/fake", messages=USER)
    assert upstream.status_code == 502
    unloadable = raised(litellm.ServiceUnavailableError, model="openai/unloadable", messages=USER)
    assert unloadable.status_code == 503
