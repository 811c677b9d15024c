"""``/v1/batches`` driven by the official ``openai`` client, unchanged, against a real ``winnow serve``
and its real worker process: a batch created from an uploaded file runs to completion and its output
file reads back in OpenAI's line format, each body a valid OpenAI response; list, cancel; each key
sees only its own batches; bad input refused (400, OpenAI's shape) with nothing queued."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.api.test_openai_fidelity import assert_openai
from tests.api.test_openai_files import _client, _key, batch_line, jsonl
from tests.conftest import LiveServer, bearer, until

pytestmark = pytest.mark.slow  # a real `winnow serve` with a worker process


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        "WINNOW_WORKERS": "1",
        "WINNOW_BATCH_CHUNK_LINES": "4",
        "WINNOW_BATCH_MAX_REQUESTS": "300",
        "WINNOW_LOCAL_TORCH_THREADS": "1",
    }
    live = LiveServer(tmp_path_factory.mktemp("v1batches") / "data", env=env).start(timeout=90)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def admin(server: LiveServer) -> str:
    return server.cli("keys", "create", "admin", "--admin").stdout.split()[-1]


def _upload(client: openai.OpenAI, rows: list[dict[str, Any]], purpose: str = "batch") -> str:
    return client.files.create(file=("in.jsonl", io.BytesIO(jsonl(rows))), purpose=purpose).id  # type: ignore[arg-type]


def _finished(client: openai.OpenAI, batch_id: str) -> Any:
    def ended() -> Any:
        batch = client.batches.retrieve(batch_id)
        return batch if batch.status in ("completed", "failed", "cancelled", "expired") else None

    return until(f"batch {batch_id} to end", ended, timeout=300)


def _lines(client: openai.OpenAI, file_id: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def test_a_batch_of_chat_and_one_of_completions_run_to_completion(server: LiveServer, admin: str) -> None:
    client = _client(server, _key(server, admin, "batcher"))
    rows = [batch_line(n) for n in range(10)]
    rows.append({**batch_line(10), "body": {**batch_line(10)["body"], "model": "no-such-model"}})
    batch = client.batches.create(
        input_file_id=_upload(client, rows),
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"run": "one"},
    )
    assert batch.status == "validating" and batch.request_counts and batch.request_counts.total == 11
    done = _finished(client, batch.id)
    assert done.status == "completed", done
    assert done.request_counts.completed == 10 and done.request_counts.failed == 1
    assert done.metadata == {"run": "one"} and done.completed_at and done.in_progress_at
    answers = _lines(client, done.output_file_id)
    assert sorted(a["custom_id"] for a in answers) == sorted(f"req-{n}" for n in range(10))
    for answer in answers:
        assert answer["error"] is None and answer["response"]["status_code"] == 200
        assert_openai("CreateChatCompletionResponse", answer["response"]["body"])
    (failed,) = _lines(client, done.error_file_id)
    assert failed["custom_id"] == "req-10" and failed["response"]["status_code"] == 404
    assert failed["response"]["body"]["error"]["code"] == "model_not_found"
    assert client.files.retrieve(done.output_file_id).purpose == "batch_output"

    text = [
        {**batch_line(n, "/v1/completions"), "body": {"model": "demo-lm", "prompt": f"{n}+1=", "max_tokens": 3}}
        for n in range(5)
    ]
    second = client.batches.create(
        input_file_id=_upload(client, text), endpoint="/v1/completions", completion_window="24h"
    )
    ended = _finished(client, second.id)
    assert ended.status == "completed" and ended.error_file_id is None
    for answer in _lines(client, ended.output_file_id):
        assert_openai("CreateCompletionResponse", answer["response"]["body"])

    listed = client.batches.list(limit=1)
    assert [b.id for b in listed.data] == [second.id] and listed.has_more
    assert [b.id for b in client.batches.list(after=second.id).data] == [batch.id]


def test_cancel_and_each_key_sees_only_its_own(server: LiveServer, admin: str) -> None:
    owner = _client(server, _key(server, admin, "owner"))
    other = _client(server, _key(server, admin, "other"))
    batch = owner.batches.create(
        # 300 lines of 32 tokens, 4 a chunk: far longer than the few calls before the cancel
        input_file_id=_upload(
            owner, [{**r, "body": {**r["body"], "max_tokens": 32}} for r in map(batch_line, range(300))]
        ),
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    with pytest.raises(openai.NotFoundError):
        other.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        other.batches.cancel(batch.id)
    assert other.batches.list().data == []
    assert owner.batches.cancel(batch.id).status in ("cancelling", "cancelled")
    ended = _finished(owner, batch.id)
    assert ended.status == "cancelled" and ended.cancelled_at
    assert ended.request_counts.completed < 300


def _refused(client: openai.OpenAI, server: LiveServer, key: str, file_id: str, endpoint: str, naming: str) -> None:
    before = httpx.get(f"{server.url}/v1/batches", headers=bearer(key)).json()["data"]
    with pytest.raises(openai.BadRequestError) as refused:
        client.batches.create(input_file_id=file_id, endpoint=endpoint, completion_window="24h")  # type: ignore[arg-type]
    error = refused.value.body
    assert isinstance(error, dict) and naming in f"{error['message']}", error
    assert httpx.get(f"{server.url}/v1/batches", headers=bearer(key)).json()["data"] == before  # nothing queued


def test_bad_input_is_refused_with_nothing_queued(server: LiveServer, admin: str) -> None:
    key, stranger = _key(server, admin, "careless"), _key(server, admin, "stranger")
    client = _client(server, key)
    bad_body = {**batch_line(1), "body": {"model": "demo-lm", "messages": "not a list"}}
    _refused(client, server, key, _upload(client, [batch_line(0), bad_body]), "/v1/chat/completions", "line 2")
    wrong_url = [batch_line(0), batch_line(1, "/v1/completions")]
    _refused(client, server, key, _upload(client, wrong_url), "/v1/chat/completions", "line 2")
    notes = client.files.create(file=("n.jsonl", io.BytesIO(b'{"a": 1}\n')), purpose="user_data").id
    _refused(client, server, key, notes, "/v1/chat/completions", "purpose")
    theirs = _upload(_client(server, stranger), [batch_line(0)])
    _refused(client, server, key, theirs, "/v1/chat/completions", "No such file")
    _refused(client, server, key, _upload(client, [batch_line(0)]), "/v1/moderations", "Unsupported endpoint")
    over_cap = _upload(client, [batch_line(n) for n in range(301)])
    _refused(client, server, key, over_cap, "/v1/chat/completions", "more than 300 (setting batch_max_requests)")
    with pytest.raises(openai.BadRequestError):  # refused at upload: a line no batch may run
        _upload(client, [{**batch_line(0), "url": "/v1/moderations"}])


def test_distilabel_offline_batch_generation(server: LiveServer, admin: str) -> None:
    """distilabel's ``OpenAILLM(use_offline_batch_generation=True)``: files.create, batches.create,
    polling, files.content, each answer parsed as OpenAI's ChatCompletion by distilabel itself."""
    from distilabel.exceptions import DistilabelOfflineBatchGenerationNotFinishedException
    from distilabel.models.llms import OpenAILLM

    llm = OpenAILLM(
        model="demo-lm",
        base_url=f"{server.url}/v1",
        api_key=_key(server, admin, "distilabel"),  # type: ignore[arg-type]
        use_offline_batch_generation=True,
    )
    llm.load()
    prompts = [[{"role": "user", "content": f"What is {n}+1?"}] for n in range(3)]
    with pytest.raises(DistilabelOfflineBatchGenerationNotFinishedException):
        llm.offline_batch_generate(inputs=prompts, max_new_tokens=4)  # type: ignore[arg-type]

    def results() -> Any:
        try:
            return llm.offline_batch_generate()
        except DistilabelOfflineBatchGenerationNotFinishedException:
            return None

    outputs = until("distilabel's batch", results, timeout=300)
    assert len(outputs) == 3
    for output in outputs:
        (text,) = output["generations"]
        assert isinstance(text, str)
        assert output["statistics"]["output_tokens"][0] >= 1
