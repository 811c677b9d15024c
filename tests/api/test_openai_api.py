"""The OpenAI-compatible /v1 surface, driven by the official openai client against real servers;
and the commercial path: a second Winnow whose model is the first Winnow, through provider openai."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from transformers import AutoTokenizer

from tests.conftest import DEMO_LM, LiveServer, bearer, closed_port
from tests.spec import assert_error, assert_valid

pytestmark = pytest.mark.slow  # real `winnow serve` processes (an upstream and a gateway)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    """A Winnow serving demo-lm on loopback, with a key."""
    server = LiveServer(tmp_path_factory.mktemp("upstream") / "data").start()
    key = server.cli("keys", "create", "client").stdout.split()[-1]
    yield server, key
    server.stop()


@pytest.fixture(scope="module")
def oai(upstream: tuple[LiveServer, str]) -> openai.OpenAI:
    server, key = upstream
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def test_models_list(oai: openai.OpenAI) -> None:
    assert "demo-lm" in [m.id for m in oai.models.list()]


def test_chat_completion(oai: openai.OpenAI) -> None:
    response = oai.chat.completions.create(
        model="demo-lm", messages=[{"role": "user", "content": "What is 17+25?"}], max_tokens=8, temperature=0
    )
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].message.content
    assert response.choices[0].finish_reason in ("stop", "length")
    assert response.usage and response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_chat_with_system_message_n_and_seed(oai: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "You are a calculator."}, {"role": "user", "content": "What is 3+4?"}]
    first = oai.chat.completions.create(model="demo-lm", messages=messages, n=4, seed=11, temperature=1.0, max_tokens=8)
    again = oai.chat.completions.create(model="demo-lm", messages=messages, n=4, seed=11, temperature=1.0, max_tokens=8)
    assert len(first.choices) == 4 and [c.index for c in first.choices] == [0, 1, 2, 3]
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]


def test_chat_streaming(oai: openai.OpenAI) -> None:
    full = oai.chat.completions.create(
        model="demo-lm", messages=[{"role": "user", "content": "What is 63+29?"}], max_tokens=8, temperature=0
    )
    stream = oai.chat.completions.create(
        model="demo-lm",
        messages=[{"role": "user", "content": "What is 63+29?"}],
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [full.choices[0].finish_reason]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == full.usage.completion_tokens  # type: ignore[union-attr]


def test_completions_with_prompt_list_and_stop(oai: openai.OpenAI) -> None:
    response = oai.completions.create(
        model="demo-lm", prompt=[templated("What is 1+1?"), templated("What is 2+2?")], max_tokens=4, temperature=0
    )
    assert [c.index for c in response.choices] == [0, 1]
    streamed = list(
        oai.completions.create(
            model="demo-lm", prompt=templated("What is 1+1?"), max_tokens=4, temperature=0, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == response.choices[0].text


def test_errors_use_openai_shape(upstream: tuple[LiveServer, str], oai: openai.OpenAI) -> None:
    server, _ = upstream
    with pytest.raises(openai.NotFoundError) as missing:
        oai.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wn-" + "x" * 43).models.list()
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model="demo-lm", messages=[{"role": "user", "content": "hi"}], temperature=5)


@pytest.fixture(scope="module")
def gateway(
    upstream: tuple[LiveServer, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, str]]:
    """A second Winnow whose commercial model 'relay' is the first Winnow's demo-lm."""
    up, up_key = upstream
    data = tmp_path_factory.mktemp("gateway") / "data"
    config = data.parent / "gateway.yaml"
    config.write_text(
        json.dumps(
            {
                "models": [
                    {
                        "id": "relay",
                        "name": "Relay",
                        "type": "commercial",
                        "provider": "openai",
                        "base_url": f"{up.url}/v1",
                        "upstream_model": "demo-lm",
                        "api_key_env": "RELAY_KEY",
                    }
                ]
            }
        )
    )
    server = LiveServer(data, env={"WINNOW_CONFIG": str(config), "RELAY_KEY": up_key}).start()
    key = server.cli("keys", "create", "gw").stdout.split()[-1]
    yield server, key
    server.stop()


def test_commercial_path_end_to_end(gateway: tuple[LiveServer, str]) -> None:
    server, key = gateway
    models = httpx.get(f"{server.url}/api/v1/models", headers=bearer(key)).json()
    assert_valid("ModelsListResponse", models)
    assert (
        models["models"][0] | {"status": "available", "type": "commercial", "provider": "openai"} == models["models"][0]
    )
    response = httpx.post(
        f"{server.url}/api/v1/generate",
        json={"prompt": "What is 17+25?", "model_id": "relay", "max_tokens": 8, "temperature": 0},
        headers=bearer(key),
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert_valid("GenerateResponse", response.json())
    assert response.json()["metrics"]["input_tokens"] > 0
    batch = httpx.post(
        f"{server.url}/api/v1/generate/batch",
        json={"prompts": ["What is 1+1?", "What is 2+3?"], "model_id": "relay", "max_tokens": 4},
        headers=bearer(key),
        timeout=60,
    )
    assert_valid("BatchGenerateResponse", batch.json())
    assert batch.json()["metrics"]["successful_generations"] == 2


def _relay_output_tokens(server: LiveServer, key: str) -> int:
    usage = httpx.get(f"{server.url}/api/v1/usage", params={"group_by": "model"}, headers=bearer(key)).json()
    return sum(r["output_tokens"] for r in usage["rows"] if r["group"] == "relay")


def test_commercial_v1_passthrough_and_streaming(gateway: tuple[LiveServer, str]) -> None:
    server, key = gateway
    before = _relay_output_tokens(server, key)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
    direct = client.chat.completions.create(
        model="relay", messages=[{"role": "user", "content": "What is 8+9?"}], max_tokens=6, temperature=0
    )
    assert direct.model == "relay" and direct.choices[0].message.content
    chunks = list(
        client.chat.completions.create(
            model="relay",
            messages=[{"role": "user", "content": "What is 8+9?"}],
            max_tokens=6,
            temperature=0,
            stream=True,
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == direct.choices[0].message.content
    # The upstream was asked for usage to bill the stream, but the client did not ask: no usage chunk.
    assert all(c.usage is None for c in chunks)
    assert direct.usage is not None
    billed = _relay_output_tokens(server, key) - before
    assert billed == 2 * direct.usage.completion_tokens  # the stream, greedy, billed as the direct call


def _silent_server() -> tuple[int, threading.Event]:
    """A TCP server on loopback that accepts and never answers (an upstream that hangs)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    stop = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue
        for conn in held:
            conn.close()
        sock.close()

    threading.Thread(target=accept, daemon=True).start()
    return sock.getsockname()[1], stop


def test_upstream_failures_map_to_502_and_504(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from winnow.api import create_app
    from winnow.config import ModelConfig, Settings

    port, stop = _silent_server()
    settings = Settings(
        data_dir=tmp_path,
        models=[
            ModelConfig(
                id="refused",
                provider="openai",
                type="commercial",
                base_url=f"http://127.0.0.1:{closed_port()}/v1",
                max_retries=0,
            ),
            ModelConfig(
                id="hangs",
                provider="openai",
                type="commercial",
                base_url=f"http://127.0.0.1:{port}/v1",
                timeout_s=0.5,
                max_retries=0,
            ),
        ],
    )
    try:
        with TestClient(create_app(settings)) as client:
            key = client.app.state.runtime.keys.create("k").key  # type: ignore[attr-defined]
            body = {"prompt": "hi", "max_tokens": 4}
            assert_error(
                client.post("/api/v1/generate", json={**body, "model_id": "refused"}, headers=bearer(key)),
                502,
                "upstream_error",
            )
            assert_error(
                client.post("/api/v1/generate", json={**body, "model_id": "hangs"}, headers=bearer(key)),
                504,
                "upstream_timeout",
            )
            chat = client.post(
                "/v1/chat/completions",
                json={"model": "hangs", "messages": [{"role": "user", "content": "hi"}]},
                headers=bearer(key),
            )
            assert chat.status_code == 504 and chat.json()["error"]["code"] == "upstream_timeout"
    finally:
        stop.set()


def test_streams_of_finished_responses_carry_every_choice(oai: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "What is 5+6?"}]
    chunks = list(
        oai.chat.completions.create(
            model="demo-lm",
            messages=messages,
            n=2,
            max_tokens=4,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert sorted(c.choices[0].index for c in chunks if c.choices) == [0, 1]
    assert all(c.choices[0].delta.content == "11" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    texts = list(
        oai.completions.create(
            model="demo-lm",
            prompt=[templated("What is 1+1?"), templated("What is 2+2?")],
            max_tokens=4,
            temperature=0,
            stream=True,
        )
    )
    assert [(c.choices[0].index, c.choices[0].text) for c in texts if c.choices] == [(0, "2"), (1, "4")]


def templated(question: str) -> str:
    """demo-lm's chat template written out by hand, as a raw completions client writes it."""
    return f"<bos><|user|>{question}<|assistant|>"


def test_completions_send_the_prompt_as_written_and_take_token_ids(oai: openai.OpenAI) -> None:
    tokenizer = AutoTokenizer.from_pretrained(DEMO_LM)
    question = "What is 13+54?"
    chat = oai.chat.completions.create(
        model="demo-lm", messages=[{"role": "user", "content": question}], max_tokens=8, temperature=0
    )
    raw = oai.completions.create(model="demo-lm", prompt=templated(question), max_tokens=8, temperature=0)
    # written out by hand, the template gives the chat's tokens and answer: it was not templated twice
    assert raw.choices[0].text == chat.choices[0].message.content == "67"
    assert raw.usage is not None and chat.usage is not None
    assert raw.usage.prompt_tokens == chat.usage.prompt_tokens
    bare = oai.completions.create(model="demo-lm", prompt=question, max_tokens=8, temperature=0)
    assert bare.usage is not None and bare.usage.prompt_tokens == len(tokenizer(question)["input_ids"])
    # token ids: one prompt, or a list of them
    ids = tokenizer(templated(question), add_special_tokens=False)["input_ids"]
    one = oai.completions.create(model="demo-lm", prompt=ids, max_tokens=8, temperature=0)
    assert one.choices[0].text == "67" and one.usage is not None and one.usage.prompt_tokens == len(ids)
    other = tokenizer(templated("What is 2+2?"), add_special_tokens=False)["input_ids"]
    two = oai.completions.create(model="demo-lm", prompt=[ids, other], max_tokens=8, temperature=0)
    assert [c.text for c in two.choices] == ["67", "4"]
    with pytest.raises(openai.BadRequestError) as caught:
        oai.completions.create(model="demo-lm", prompt=[ids, [len(tokenizer) + 5]], max_tokens=8)
    assert caught.value.param == "prompt" and "vocabulary" in caught.value.message
