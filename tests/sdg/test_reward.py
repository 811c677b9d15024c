"""Reward models: the local classifier, the same model served over /v1/score and read back by the
openai-score provider, and an llm-judge built on a generation model."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer, bearer
from winnow.config import RewardModelConfig, Settings
from winnow.models.registry import ModelRegistry
from winnow.sdg.reward import RewardModelRegistry, open_registries
from winnow.sdg.rows import Candidate, PromptRow, user_prompt

PAIRS = [("What is 17+25?", "42"), ("What is 17+25?", "43"), ("What is 3+4?", "7"), ("What is 3+4?", "71")]


def _candidates() -> list[Candidate]:
    return [Candidate(PromptRow(str(i), user_prompt(p)), 0, r, "end_of_turn") for i, (p, r) in enumerate(PAIRS)]


def _scores(settings: Settings, reward_model: str) -> list[float]:
    async def go() -> list[float]:
        async with open_registries(settings) as (_, rewards):
            return await rewards.get(reward_model).score(_candidates())

    return asyncio.run(go())


@pytest.fixture(scope="module")
def scorer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    server = LiveServer(tmp_path_factory.mktemp("scorer") / "data").start()
    key = server.cli("keys", "create", "rm").stdout.split()[-1]
    yield server, key
    server.stop()


def test_classifier_prefers_correct_answers(tmp_path: Path) -> None:
    right_17, wrong_17, right_3, wrong_3 = _scores(Settings(data_dir=tmp_path, workers=0), "demo-rm")
    assert right_17 > wrong_17 and right_3 > wrong_3


@pytest.mark.slow  # a real `winnow serve` as the scorer
def test_score_endpoint_and_openai_score_provider_match_the_local_model(
    scorer: tuple[LiveServer, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, key = scorer
    local = _scores(Settings(data_dir=tmp_path / "a", workers=0), "demo-rm")
    response = httpx.post(
        f"{server.url}/v1/score",
        json={"model": "demo-rm", "text_1": [p for p, _ in PAIRS], "text_2": [r for _, r in PAIRS]},
        headers=bearer(key),
        timeout=60,  # the first call loads the reward model: on a busy machine, past httpx's 5 s default
    )
    assert response.status_code == 200, response.text
    assert [d["score"] for d in response.json()["data"]] == pytest.approx(local, abs=1e-4)
    monkeypatch.setenv("SCORER_KEY", key)
    remote = RewardModelConfig(
        id="remote-rm",
        provider="openai-score",
        base_url=f"{server.url}/v1",
        upstream_model="demo-rm",
        api_key_env="SCORER_KEY",
        batch_size=3,
    )
    settings = Settings(data_dir=tmp_path / "b", workers=0, reward_models=[remote])
    assert _scores(settings, "remote-rm") == pytest.approx(local, abs=1e-4)


@pytest.mark.slow  # a real `winnow serve` as the scorer
def test_score_endpoint_errors(scorer: tuple[LiveServer, str]) -> None:
    server, key = scorer
    missing = httpx.post(
        f"{server.url}/v1/score", json={"model": "rm-9", "text_1": "a", "text_2": "b"}, headers=bearer(key)
    )
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    uneven = httpx.post(
        f"{server.url}/v1/score",
        json={"model": "demo-rm", "text_1": ["a", "b"], "text_2": ["c", "d", "e"]},
        headers=bearer(key),
    )
    assert uneven.status_code == 400 and uneven.json()["error"]["type"] == "invalid_request_error"


def test_llm_judge_scores_with_a_generation_model(tmp_path: Path) -> None:
    # demo-lm can only add, so the rubric asks it to add zero to the response: the judge's answer
    # is the response's own number, which proves the prompt, the call and the parsing end to end.
    judge = RewardModelConfig(id="judge", provider="llm-judge", judge_model="demo-lm", rubric="What is {response}+0?")
    settings = Settings(data_dir=tmp_path, workers=0, reward_models=[judge])
    assert _scores(settings, "judge") == [42.0, 43.0, 7.0, 71.0]


def test_a_judge_with_an_unknown_model_is_refused_at_submit(tmp_path: Path) -> None:
    from winnow.errors import InvalidRequest

    judge = RewardModelConfig(id="judge", provider="llm-judge", judge_model="gpt-9")
    settings = Settings(data_dir=tmp_path, workers=0, reward_models=[judge])
    with pytest.raises(InvalidRequest, match="unknown model"):
        RewardModelRegistry(settings, ModelRegistry(settings)).check("judge")
