"""The console's job page shows the diversity report of a job that ran the semantic filter, as the
API's summary gives it, in Chromium against a real ``winnow serve`` with one job worker."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import LiveServer, bearer, wait_for_job
from tests.sdg.jobs import SDG, job_body, submit, write_prompts
from tests.web.browser import Console, admin, browser, console, expect

pytestmark = pytest.mark.slow  # Chromium against a real `winnow serve` and its worker

__all__ = ["admin", "browser", "console"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("diversity") / "live", env={"WINNOW_WORKERS": "1"}).start()
    yield live
    live.stop()


def test_job_page_shows_the_diversity_report(console: Console, server: LiveServer, admin: str) -> None:
    prompts = write_prompts(server.data_dir / "diverse.jsonl", 12)
    flt = {"name": "semantic_dedupe", "params": {"within": "prompt"}}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        job = submit(client, admin, job_body(prompts, num_generations=3, temperature=1.0, filtering_function=flt))
        assert wait_for_job(client, admin, job["job_id"])["status"] == "completed"
        summary = client.get(f"{SDG}/jobs/{job['job_id']}/summary", headers=bearer(admin)).json()
    diversity = summary["diversity"]
    assert diversity["model"] == "minilm-l6" and diversity["responses"] == summary["counts"]["rows_kept"]
    console.sign_in(admin, then=f"/ui/jobs/{job['job_id']}")
    box = console.page.locator("#summary")
    distance = round(diversity["mean_pairwise_cosine_distance"], 3)  # as the page rounds it
    expect(box).to_contain_text(f"mean pairwise cosine distance {distance:g}")
    expect(box).to_contain_text(f"{diversity['clusters']} at cosine 0.7 (minilm-l6)")
    console.shot("job-diversity")
