"""Which server paths a non-admin key may name as input: a fine-tuned model's files under
``<data dir>/models/`` are no key's input, refused before they are opened, as ``training_file`` and as
an SDG job's ``prompts_path``."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from tests.conftest import DEMO_PROMPTS, bearer
from tests.sdg.jobs import SDG, job_body
from tests.spec import assert_error
from winnow.runtime import Runtime

FT = "/api/v1/fine_tuning/jobs"
REFUSED = "names a file this key may not read"


def _model_files(runtime: Runtime) -> list[Path]:
    """Another key's fine-tuned model as training would leave it, plus files in it that would parse
    as valid prompts and training rows: a refusal then cannot come from reading them."""
    folder = runtime.settings.data_dir / "models" / "demo-lm__ft-alice-0123abcd"
    adapter = folder / "adapter"
    adapter.mkdir(parents=True)
    config = adapter / "adapter_config.json"
    config.write_text(json.dumps({"r": 16, "lora_alpha": 32, "target_modules": "all-linear"}, indent=2))
    prompts = folder / "prompts.jsonl"
    prompts.write_text(DEMO_PROMPTS.read_text())
    rows = folder / "train.jsonl"
    rows.write_text(
        "".join(json.dumps({"prompt": f"What is {i}+1?", "completion": str(i + 1)}) + "\n" for i in range(8))
    )
    return [config, prompts, rows, folder / "no-such-file.jsonl", folder]


def test_a_non_admin_key_cannot_name_model_files_as_training_file_or_prompts(
    client: TestClient, runtime: Runtime, user_key: str, admin_key: str
) -> None:
    for path in _model_files(runtime):
        body = {"base_model": "demo-lm", "training_file": str(path), "hyperparameters": {"epochs": 1}}
        refused = assert_error(client.post(FT, json=body, headers=bearer(user_key)), 400)
        assert refused["message"] == f"training_file {REFUSED}", refused
        assert "line" not in refused["details"] and "row" not in refused["details"], refused
        refused = assert_error(client.post(f"{SDG}/submit_job", json=job_body(path), headers=bearer(user_key)), 400)
        assert refused["message"] == f"prompts_path {REFUSED}", refused
        assert "line" not in refused["details"] and "row" not in refused["details"], refused
    assert client.get(FT, headers=bearer(user_key)).json()["data"] == []
    # The files themselves are fine: an admin key (the operator) may use them.
    prompts = runtime.settings.data_dir / "models" / "demo-lm__ft-alice-0123abcd" / "prompts.jsonl"
    allowed = client.post(f"{SDG}/submit_job", json=job_body(prompts, dry_run=True), headers=bearer(admin_key))
    assert allowed.status_code == 200, allowed.text
