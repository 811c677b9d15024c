"""Log-probabilities of a local model equal a direct forward pass's log_softmax, batched or not."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import torch

from tests.conftest import DEMO_LM
from winnow.config import ModelConfig, Settings
from winnow.models.base import ChatMessage, GenerationResult, RawPrompt, SamplingParams
from winnow.models.providers.transformers import LoadedModel


@pytest.fixture(scope="module")
def model() -> Iterator[LoadedModel]:
    loaded = LoadedModel(ModelConfig(id="demo-lm", path=str(DEMO_LM)), Settings(local_torch_threads=1))
    yield loaded
    loaded.close()


def direct(model: LoadedModel, ids: list[int]) -> torch.Tensor:
    """log_softmax of one unpadded forward pass: row k predicts token k + 1."""
    with torch.inference_mode():
        return torch.log_softmax(model.model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)


def test_logprobs_equal_a_direct_forward_pass_inside_a_batch(model: LoadedModel) -> None:
    tokenizer = model.prompts.tokenizer
    ids_of = {model.token_text(i): i for i in range(len(tokenizer))}
    questions = [
        f"What is {a}+{b}?" for a, b in ((49, 99), (7, 8), (123, 456), (1, 1), (60, 7), (5, 55), (9, 90), (3, 4))
    ]

    async def run() -> list[GenerationResult]:
        calls = [
            model.generate(
                [[ChatMessage("user", q)]],
                SamplingParams(max_tokens=6, temperature=1.0, seed=i, logprobs=5 if i % 2 else None, n=1 + i % 3),
            )
            for i, q in enumerate(questions)
        ]
        raw = model.generate(
            [RawPrompt("<bos><|user|>What is 4+5?<|assistant|>")],
            SamplingParams(max_tokens=3, temperature=0, logprobs=2, prompt_logprobs=4),
        )
        before = model.engine.stats.batches
        results = [r for rs in await asyncio.gather(*calls, raw) for r in rs]
        assert model.engine.stats.batches - before <= 2  # batched with the others
        return results

    results = asyncio.run(run())
    checked = 0
    for i, result in enumerate(results[:-1]):
        prompt = model.prompts.prepare_all([_request(questions[i])])[0].input_ids  # type: ignore[union-attr]
        for completion in result.completions:
            if i % 2 == 0:
                assert completion.logprobs is None
                continue
            # every generated token, a stop token (EOS) too: it has no text but an entry, as in vLLM
            assert completion.logprobs is not None and len(completion.logprobs) == completion.output_tokens
            tokens = [ids_of[t.token] for t in completion.logprobs]
            expected = direct(model, prompt + tokens)[len(prompt) - 1 :]
            for step, entry in enumerate(completion.logprobs):
                assert entry.logprob == pytest.approx(expected[step, tokens[step]].item(), abs=1e-4)
                values, top = expected[step].topk(5)
                assert [ids_of[t] for t, _ in entry.top] == top.tolist()
                assert [v for _, v in entry.top] == pytest.approx(values.tolist(), abs=1e-4)
                checked += 1
    assert checked > 10
    echo = results[-1]
    assert echo.prompt_logprobs is not None and echo.completions[0].logprobs is not None
    ids = [ids_of[t.token] for t in echo.prompt_logprobs]
    assert ids == tokenizer("<bos><|user|>What is 4+5?<|assistant|>", add_special_tokens=False)["input_ids"]
    expected = direct(model, ids)
    assert echo.prompt_logprobs[0].logprob is None
    for k, entry in enumerate(echo.prompt_logprobs[1:]):
        assert entry.logprob == pytest.approx(expected[k, ids[k + 1]].item(), abs=1e-4)
        assert [ids_of[t] for t, _ in entry.top] == expected[k].topk(4).indices.tolist()


def _request(question: str) -> object:
    from winnow.models.prompts import PromptRequest

    return PromptRequest([ChatMessage("user", question)], 6, 1, ())
