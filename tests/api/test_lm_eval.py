"""lm-evaluation-harness, unchanged, against a real Winnow server on loopback (demo-lm).

``local-completions`` runs a loglikelihood multiple-choice task (prompt and choice as token ids,
``echo`` + ``logprobs`` on /v1/completions) and ``local-chat-completions`` a generate_until task on
/v1/chat/completions, each on a tiny task shipped in ``tests/api/lm_eval_tasks`` (a YAML and a
JSONL dataset loaded with ``dataset_path: json``), with several requests in flight at once. Nothing
is downloaded: the tokenizer is demo-lm's own directory and the hub is switched off.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DEMO_LM, TEST_KEY_LIMITS, LiveServer

lm_eval = pytest.importorskip("lm_eval")

pytestmark = pytest.mark.slow  # a real `winnow serve`

TASKS = Path(__file__).parent / "lm_eval_tasks"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    live = LiveServer(tmp_path_factory.mktemp("lm-eval") / "data").start()
    key = live.cli("keys", "create", "eval", "--rate-limits", TEST_KEY_LIMITS).stdout.split()[-1]
    yield live, key
    live.stop()


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, served: tuple[LiveServer, str]) -> None:
    """lm-eval's API models read the key from OPENAI_API_KEY. No hub: datasets and tokenizers come from disk or not at all; caches in the test's folder.
    The task YAMLs name their data files relative to their folder, as datasets resolves them."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    monkeypatch.chdir(TASKS)
    monkeypatch.setenv("OPENAI_API_KEY", served[1])


def _evaluate(
    served: tuple[LiveServer, str], caplog: pytest.LogCaptureFixture, model: str, task: str, route: str, **options: Any
) -> dict[str, Any]:
    """Run ``task`` with lm-eval's ``model`` against ``route`` of the live server, four requests in
    flight (``num_concurrent``); a request that failed (lm-eval logs and retries it) fails the test."""
    from lm_eval.tasks import TaskManager

    live, _ = served
    caplog.set_level(logging.WARNING)
    model_args = {"model": "demo-lm", "base_url": f"{live.url}/v1/{route}", "num_concurrent": 4, "max_retries": 1}
    results = lm_eval.simple_evaluate(
        model=model,
        model_args=model_args | options.pop("model_args", {}),
        tasks=[task],
        task_manager=TaskManager(include_path=str(TASKS), include_defaults=False),
        log_samples=True,
        **options,
    )
    assert results is not None
    assert not [r for r in caplog.records if "API request failed" in r.getMessage()]
    assert len(results["samples"][task]) == len(_docs(f"{task.removeprefix('winnow_')}.jsonl"))
    return results  # type: ignore[no-any-return]


@cache
def _demo_lm() -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(DEMO_LM), AutoModelForCausalLM.from_pretrained(DEMO_LM).eval()


@cache
def _loglikelihood(context: str, continuation: str) -> tuple[float, bool]:
    """The continuation's summed log-probability after the context, and whether greedy decoding
    would write it, from one forward pass of demo-lm in this process."""
    import torch

    tokenizer, model = _demo_lm()
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    cont = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ctx + cont])).logits[0, len(ctx) - 1 : -1].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    picked = logprobs[torch.arange(len(cont)), torch.tensor(cont)]
    return float(picked.sum()), bool((logprobs.argmax(-1) == torch.tensor(cont)).all())


def _docs(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (TASKS / name).read_text().splitlines()]


def test_local_completions_runs_a_loglikelihood_multiple_choice_task(
    served: tuple[LiveServer, str], offline: None, caplog: pytest.LogCaptureFixture
) -> None:
    model_args = {
        "tokenizer_backend": "huggingface",
        "tokenizer": str(DEMO_LM),  # demo-lm's own directory: lm-eval counts the context's tokens
        "batch_size": 2,  # two prompts (token-id lists) in one request
        "max_length": 256,
    }
    results = _evaluate(served, caplog, "local-completions", "winnow_arith_mc", "completions", model_args=model_args)
    samples = results["samples"]["winnow_arith_mc"]
    checked = 0
    for sample in samples:
        doc = sample["doc"]
        context = f"<bos><|user|>{doc['question']}<|assistant|>"
        for choice, response in zip(doc["choices"], sample["resps"], strict=True):
            logprob, greedy = response[0]
            # each choice's every token scored: the log-probability a forward pass gives it
            assert logprob == pytest.approx(_loglikelihood(context, choice)[0], abs=1e-3), (doc, choice)
            assert greedy == _loglikelihood(context, choice)[1]
            checked += 1
    assert checked == 4 * len(samples)
    assert results["results"]["winnow_arith_mc"]["acc,none"] >= 0.5, results["results"]  # demo-lm knows sums


def test_local_chat_completions_runs_a_generate_until_task(
    served: tuple[LiveServer, str], offline: None, caplog: pytest.LogCaptureFixture
) -> None:
    import openai

    results = _evaluate(
        served, caplog, "local-chat-completions", "winnow_arith_gen", "chat/completions", apply_chat_template=True
    )
    samples = results["samples"]["winnow_arith_gen"]
    live, key = served
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key=key)
    for sample in samples:
        # what lm-eval kept is the answer the openai client gets for the same greedy request
        direct = client.chat.completions.create(
            model="demo-lm",
            messages=[{"role": "user", "content": sample["doc"]["question"]}],
            max_tokens=8,
            temperature=0,
            stop=["\n"],
        )
        assert sample["filtered_resps"][0] == direct.choices[0].message.content
    assert results["results"]["winnow_arith_gen"]["exact_match,none"] >= 0.5, results["results"]
