"""Per-request seeds on local models: a seeded request gets the same tokens whatever shares its batch,
on the thread engine and in an engine process; n > 1 choices derive their seeds from the request's."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import DEMO_LM
from winnow.config import ModelConfig, Settings
from winnow.models.base import ChatMessage, SamplingParams, choice_seed
from winnow.models.providers.transformers import TransformersProvider

QUESTION = [ChatMessage("user", "What is 49+99?")]
SEEDED = SamplingParams(max_tokens=8, temperature=1.5, seed=3)


def provider(engine: str) -> TransformersProvider:
    config = ModelConfig(id="demo-lm", path=str(DEMO_LM), options={"engine": engine})
    return TransformersProvider(config, Settings(local_torch_threads=1))


async def _alone_and_in_company(p: TransformersProvider) -> tuple[list[str], list[str], int]:
    alone = [(await p.generate([QUESTION], SEEDED))[0].completions[0].text for _ in range(3)]
    others = [
        SamplingParams(max_tokens=8, temperature=t, top_p=tp, seed=s)
        for t, tp, s in [(1.5, 1.0, None), (0.7, 0.9, None), (0.0, 1.0, None), (1.5, 1.0, 11)] * 8
    ][:31]
    prompts = [QUESTION if i % 2 else [ChatMessage("user", f"What is {i}+{2 * i}?")] for i in range(31)]
    calls = [([prompt], params) for prompt, params in zip(prompts, others, strict=True)]
    await p.generate([QUESTION], SEEDED)
    before = (await p._running()).engine.stats.batches
    results = await asyncio.gather(
        *(p.generate(*c) for c in calls[:16]), p.generate([QUESTION], SEEDED), *(p.generate(*c) for c in calls[16:])
    )
    batches = (await p._running()).engine.stats.batches - before
    company = [results[16][0].completions[0].text]
    # and once more in a different company
    results = await asyncio.gather(p.generate([QUESTION], SEEDED), *(p.generate(*c) for c in calls[:5]))
    company.append(results[0][0].completions[0].text)
    return alone, company, batches


@pytest.mark.parametrize("engine", ["thread", pytest.param("process", marks=pytest.mark.slow)])
def test_a_seeded_request_answers_the_same_alone_and_inside_31_others(engine: str) -> None:
    async def go() -> tuple[list[str], list[str], int]:
        p = provider(engine)
        try:
            return await _alone_and_in_company(p)
        finally:
            await p.close()

    alone, company, batches = asyncio.run(go())
    assert len(set(alone)) == 1 and alone[0]
    assert company == [alone[0]] * 2
    assert batches <= 3  # the 32 calls (4 temperatures, seeded and not) shared batches


def test_the_engines_agree_on_a_seeded_answer() -> None:
    async def answer(engine: str) -> list[str]:
        p = provider(engine)
        try:
            (result,) = await p.generate([QUESTION], SamplingParams(max_tokens=8, temperature=1.5, seed=5, n=6))
            return [c.text for c in result.completions]
        finally:
            await p.close()

    assert asyncio.run(answer("thread")) == asyncio.run(answer("process"))


def test_choices_of_n_derive_their_seeds_from_the_request_seed() -> None:
    async def go() -> tuple[list[str], list[str], list[str], str]:
        p = provider("thread")
        try:
            params = SamplingParams(max_tokens=8, temperature=1.5, seed=21, n=8)
            first = [c.text for c in (await p.generate([QUESTION], params))[0].completions]
            again = [c.text for c in (await p.generate([QUESTION], params))[0].completions]
            other = [
                c.text for c in (await p.generate([QUESTION], SamplingParams(8, 1.5, seed=22, n=8)))[0].completions
            ]
            one = (await p.generate([QUESTION], SamplingParams(8, 1.5, seed=21)))[0].completions[0].text
            return first, again, other, one
        finally:
            await p.close()

    first, again, other, one = asyncio.run(go())
    assert first == again and first != other
    assert len(set(first)) > 1  # the choices have seeds of their own
    assert first[0] == one  # the first choice uses the request's seed itself
    assert len({choice_seed(21, i) for i in range(8)}) == 8


def test_unseeded_requests_draw_fresh_numbers_in_every_engine() -> None:
    # torch's default generator starts from one fixed seed in every process: unseeded rows must not.
    async def answers(engine: str) -> list[str]:
        p = provider(engine)
        try:
            (result,) = await p.generate([QUESTION], SamplingParams(max_tokens=8, temperature=1.5, n=16))
            return [c.text for c in result.completions]
        finally:
            await p.close()

    assert asyncio.run(answers("thread")) != asyncio.run(answers("thread"))
