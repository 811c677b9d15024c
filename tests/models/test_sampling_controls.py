"""vLLM's sampling controls on a local transformers model, each shown to do what vLLM's does:
top_k, min_p, repetition / presence / frequency penalties, logit_bias, min_tokens, ignore_eos and
stop_token_ids, in batches and in streams."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from tests.conftest import DEMO_LM
from winnow.config import ModelConfig, Settings
from winnow.models.base import ChatMessage, Completion, SamplingParams
from winnow.models.providers.transformers import LoadedModel

QUESTIONS = ["What is 49+99?", "What is 13+54?", "What is 7+8?"]


@pytest.fixture(scope="module")
def model() -> Iterator[LoadedModel]:
    loaded = LoadedModel(ModelConfig(id="demo-lm", path=str(DEMO_LM)), Settings(local_torch_threads=1))
    yield loaded
    loaded.close()


def chat(question: str) -> list[ChatMessage]:
    return [ChatMessage("user", question)]


def generate(model: LoadedModel, question: str, **params: Any) -> list[Completion]:
    sampling = SamplingParams(**({"max_tokens": 8, "temperature": 0.0} | params))
    (result,) = asyncio.run(model.generate([chat(question)], sampling))
    assert result.error is None
    return result.completions


def texts(model: LoadedModel, question: str, **params: Any) -> list[str]:
    return [c.text for c in generate(model, question, **params)]


def token_id(model: LoadedModel, text: str) -> int:
    (token,) = model.prompts.tokenizer(text, add_special_tokens=False)["input_ids"]
    return int(token)


@pytest.mark.parametrize("question", QUESTIONS)
def test_top_k_1_and_min_p_1_are_greedy_at_any_temperature(model: LoadedModel, question: str) -> None:
    (greedy,) = texts(model, question)
    assert texts(model, question, temperature=1.5, n=8, top_k=1) == [greedy] * 8
    assert texts(model, question, temperature=1.5, n=8, min_p=1.0) == [greedy] * 8
    assert len(set(texts(model, question, temperature=1.5, n=8, seed=1))) > 1  # without them it samples


def reference(model: LoadedModel, question: str, steps: int, rep: float = 1, pres: float = 0, freq: float = 0) -> str:
    """Greedy decoding with vLLM's penalties written out over full forward passes, one row, no cache."""
    prompt = model.prompts.prepare_all([model_request(question)])[0].input_ids  # type: ignore[union-attr]
    out: list[int] = []
    with torch.inference_mode():
        for _ in range(steps):
            logits = model.model(input_ids=torch.tensor([prompt + out])).logits[0, -1].float()
            seen = set(prompt) | set(out)
            for token in seen:
                value = logits[token]
                logits[token] = value / rep if value > 0 else value * rep
            for token in set(out):
                logits[token] -= pres + freq * out.count(token)
            out.append(int(logits.argmax()))
    return model.prompts.decode(out)


def model_request(question: str) -> Any:
    from winnow.models.prompts import PromptRequest

    return PromptRequest(chat(question), 8, 1, ())


@pytest.mark.parametrize(
    "penalties",
    [
        {"repetition_penalty": 3.0},
        {"repetition_penalty": 0.5},
        {"frequency_penalty": 2.0},
        {"presence_penalty": 2.0, "frequency_penalty": 0.5},
    ],
)
def test_penalties_are_vllms(model: LoadedModel, penalties: dict[str, float]) -> None:
    names = {"repetition_penalty": "rep", "presence_penalty": "pres", "frequency_penalty": "freq"}
    for question in QUESTIONS:
        expected = reference(model, question, 16, **{names[k]: v for k, v in penalties.items()})
        assert texts(model, question, max_tokens=16, ignore_eos=True, **penalties) == [expected]
    plain = [texts(model, q, max_tokens=16, ignore_eos=True)[0] for q in QUESTIONS]
    penalised = [texts(model, q, max_tokens=16, ignore_eos=True, **penalties)[0] for q in QUESTIONS]
    assert plain != penalised  # they changed something


def test_logit_bias_pushes_and_bans_tokens(model: LoadedModel) -> None:
    seven = token_id(model, "7")
    assert texts(model, "What is 49+99?", max_tokens=6, logit_bias=((seven, 100.0),)) == ["777777"]
    (greedy,) = texts(model, "What is 49+99?")
    banned = texts(model, "What is 49+99?", logit_bias=((token_id(model, greedy[0]), -100.0),))
    assert banned[0] and not banned[0].startswith(greedy[0])


def test_min_tokens_never_stops_early(model: LoadedModel) -> None:
    (short,) = generate(model, "What is 49+99?")
    assert short.finish_reason == "stop" and short.output_tokens == 4  # "148" + EOS
    for completion in generate(model, "What is 49+99?", min_tokens=5, temperature=1.0, n=16, seed=4):
        assert completion.output_tokens >= 5
        assert completion.finish_reason == "length" or completion.output_tokens >= 6  # 5 tokens, then EOS


def test_ignore_eos_runs_to_max_tokens(model: LoadedModel) -> None:
    (completion,) = generate(model, "What is 49+99?", max_tokens=12, ignore_eos=True)
    assert (completion.finish_reason, completion.output_tokens) == ("length", 12)
    assert completion.text.startswith("148")


def test_stop_token_ids_end_a_row_without_their_text(model: LoadedModel) -> None:
    (completion,) = generate(model, "What is 49+99?", stop_token_ids=(token_id(model, "4"),))
    assert (completion.text, completion.finish_reason, completion.output_tokens) == ("1", "stop", 2)


@pytest.mark.parametrize(
    "params",
    [
        {"min_tokens": 6},
        {"ignore_eos": True, "max_tokens": 10},
        {"stop_token_ids": (9,)},
        {"temperature": 1.5, "top_k": 1},
        {"temperature": 1.2, "seed": 9, "top_p": 0.8, "repetition_penalty": 1.3},
    ],
)
def test_a_stream_honours_them_as_a_batch_does(model: LoadedModel, params: dict[str, Any]) -> None:
    sampling = SamplingParams(**({"max_tokens": 8, "temperature": 0.0} | params))
    (whole,) = generate(model, "What is 13+54?", **params)

    async def stream() -> tuple[str, str | None, int]:
        text, finish, tokens = "", None, 0
        async for delta in model.stream(chat("What is 13+54?"), sampling):
            text += delta.text
            finish, tokens = delta.finish_reason or finish, delta.output_tokens or tokens
        return text, finish, tokens

    assert asyncio.run(stream()) == (whole.text, whole.finish_reason, whole.output_tokens)
