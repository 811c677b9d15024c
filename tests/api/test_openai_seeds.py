"""A seeded request through the official openai client answers the same alone and inside 31
concurrent others (AsyncOpenAI, one burst of 32), on a real ``winnow serve`` with either engine:
the model on the server's thread or in an engine process of its own (``local_engine``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import TEST_KEY_LIMITS, LiveServer

pytestmark = pytest.mark.slow  # real `winnow serve` processes

QUESTION = [{"role": "user", "content": "What is 49+99?"}]
SEEDED: dict[str, Any] = {"model": "demo-lm", "messages": QUESTION, "temperature": 1.5, "max_tokens": 8, "seed": 3}


@pytest.fixture(scope="module", params=["thread", "process"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    data: Path = tmp_path_factory.mktemp(f"seeds-{request.param}") / "data"
    live = LiveServer(data, env={"WINNOW_LOCAL_ENGINE": request.param}).start()
    key = live.cli("keys", "create", "seeds", "--rate-limits", TEST_KEY_LIMITS).stdout.split()[-1]
    yield live.url, key
    live.stop()


def _others() -> list[dict[str, Any]]:
    """31 requests unlike the seeded one: other prompts, temperatures, seeds or none, top_p, n."""
    others = []
    for i in range(31):
        question = QUESTION if i % 3 == 0 else [{"role": "user", "content": f"What is {i}+{2 * i + 7}?"}]
        fields: dict[str, Any] = {"temperature": (1.5, 0.7, 0.0, 1.0)[i % 4], "max_tokens": 4 + i % 6}
        if i % 4 == 3:
            fields["seed"] = 100 + i
        if i % 5 == 1:
            fields["top_p"] = 0.9
        if i % 7 == 2:
            fields["n"] = 2
        others.append({"model": "demo-lm", "messages": question, **fields})
    return others


async def _burst(url: str, key: str) -> str:
    """The seeded request sent 16th of 32 at once; its text."""
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120) as client:
        calls = [client.chat.completions.create(**body) for body in _others()]
        calls.insert(15, client.chat.completions.create(**SEEDED))
        answers = await asyncio.gather(*calls)
    assert all(a.choices for a in answers)
    return answers[15].choices[0].message.content or ""


def _batches(url: str) -> tuple[float, float]:
    """The server's local generate calls and the rows they carried, from /metrics."""
    lines = httpx.get(f"{url}/metrics", timeout=30).text.splitlines()

    def total(name: str) -> float:
        return sum(float(line.split()[-1]) for line in lines if line.startswith(f"{name}{{"))

    return total("winnow_local_batches_total"), total("winnow_local_batch_rows_total")


def test_a_seeded_request_answers_the_same_alone_and_inside_31_others(served: tuple[str, str]) -> None:
    url, key = served
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)
    alone = [client.chat.completions.create(**SEEDED).choices[0].message.content for _ in range(2)]
    assert alone[0] and alone == [alone[0]] * 2
    shared = False
    for _ in range(3):  # the text must match in every burst; at least one must have shared batches
        before = _batches(url)
        assert asyncio.run(_burst(url, key)) == alone[0]
        after = _batches(url)
        calls, rows = after[0] - before[0], after[1] - before[1]
        assert rows >= 32, (before, after)
        shared = calls < 32  # the 32 requests took fewer generate calls: some shared one
        if shared:
            break
    assert shared, "no burst of 32 concurrent requests ever shared a batch"
    # another seed, another answer (the seed is used, not ignored)
    others = {client.chat.completions.create(**(SEEDED | {"seed": s})).choices[0].message.content for s in range(8)}
    assert len(others) > 1
