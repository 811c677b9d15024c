"""``/v1/files`` driven by the official ``openai`` client, unchanged, against a real ``winnow serve``:
create, retrieve, content, list (paging, order, purpose), delete; one store with ``/api/v1/files``;
each key sees only its own; bad input refused in OpenAI's error shape with nothing kept."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.api.test_openai_fidelity import assert_openai
from tests.conftest import LiveServer, bearer
from tests.finetune.test_api import training_rows

pytestmark = pytest.mark.slow  # a real `winnow serve`


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def batch_line(n: int, url: str = "/v1/chat/completions") -> dict[str, Any]:
    body = {"model": "demo-lm", "messages": [{"role": "user", "content": f"What is {n}+1?"}], "max_tokens": 4}
    return {"custom_id": f"req-{n}", "method": "POST", "url": url, "body": body}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("v1files") / "data").start()
    yield live
    live.stop()


def _key(server: LiveServer, admin: str, name: str, **fields: Any) -> str:
    created = httpx.post(f"{server.url}/api/v1/keys", json={"name": name, **fields}, headers=bearer(admin))
    assert created.status_code == 201, created.text
    secret: str = created.json()["key"]
    return secret


@pytest.fixture(scope="module")
def admin(server: LiveServer) -> str:
    return server.cli("keys", "create", "admin", "--admin").stdout.split()[-1]


def _client(server: LiveServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def _files_on_disk(server: LiveServer) -> list[Path]:
    return sorted(p for p in (server.data_dir / "files").rglob("*") if p.is_file())


def _raw(server: LiveServer, key: str, path: str) -> Any:
    response = httpx.get(f"{server.url}/v1{path}", headers=bearer(key))
    assert response.status_code == 200, response.text
    return response.json()


def test_files_round_trip_through_the_openai_client(server: LiveServer, admin: str) -> None:
    key = _key(server, admin, "files-round-trip")
    client = _client(server, key)
    train = jsonl(training_rows(5))
    created = client.files.create(file=("train.jsonl", io.BytesIO(train)), purpose="fine-tune")
    assert created.object == "file" and created.purpose == "fine-tune" and created.status == "processed"
    assert created.bytes == len(train) and created.filename == "train.jsonl" and created.id.startswith("file-")
    assert_openai("OpenAIFile", _raw(server, key, f"/files/{created.id}"))

    batch = client.files.create(file=("in.jsonl", io.BytesIO(jsonl([batch_line(1), batch_line(2)]))), purpose="batch")
    notes = client.files.create(file=("notes.txt", io.BytesIO(b"not json at all\x00\xff")), purpose="user_data")
    assert client.files.retrieve(batch.id).purpose == "batch"
    assert client.files.content(created.id).content == train
    assert client.files.content(notes.id).content == b"not json at all\x00\xff"  # user_data: kept as is

    listed = _raw(server, key, "/files")
    assert_openai("ListFilesResponse", listed)
    assert [f["id"] for f in listed["data"]] == [notes.id, batch.id, created.id]  # newest first
    assert listed["first_id"] == notes.id and listed["last_id"] == created.id and listed["has_more"] is False
    page = client.files.list(limit=2, order="asc")
    assert [f.id for f in page.data] == [created.id, batch.id] and page.has_more
    assert [f.id for f in client.files.list(limit=1)] == [notes.id, batch.id, created.id]  # auto-paged
    assert [f.id for f in client.files.list(purpose="batch")] == [batch.id]

    deleted = client.files.delete(batch.id)
    assert deleted.id == batch.id and deleted.deleted is True and deleted.object == "file"
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(batch.id)
    assert [f.id for f in client.files.list()] == [notes.id, created.id]


def test_one_store_with_api_v1_files(server: LiveServer, admin: str) -> None:
    key = _key(server, admin, "files-one-store")
    uploaded = httpx.post(
        f"{server.url}/api/v1/files",
        files={"file": ("p.jsonl", jsonl([{"id": "p1", "prompt": "What is 1+1?"}]), "application/jsonl")},
        headers=bearer(key),
    )
    assert uploaded.status_code == 201, uploaded.text
    client = _client(server, key)
    seen = client.files.retrieve(uploaded.json()["id"])
    assert seen.id == uploaded.json()["id"] and seen.purpose == "prompts"
    made = client.files.create(file=("t.jsonl", io.BytesIO(jsonl(training_rows(3)))), purpose="fine-tune")
    mine = httpx.get(f"{server.url}/api/v1/files", headers=bearer(key)).json()
    assert [f["id"] for f in mine["data"]] == [made.id, seen.id]
    assert mine["used_bytes"] == made.bytes + seen.bytes  # one quota


def test_another_keys_file_is_not_found(server: LiveServer, admin: str) -> None:
    owner = _client(server, _key(server, admin, "files-owner"))
    other = _client(server, _key(server, admin, "files-other"))
    theirs = owner.files.create(file=("t.jsonl", io.BytesIO(jsonl(training_rows(3)))), purpose="fine-tune")
    for call in (other.files.retrieve, other.files.content, other.files.delete):
        with pytest.raises(openai.NotFoundError) as caught:
            call(theirs.id)
        assert caught.value.body == {  # type: ignore[comparison-overlap]
            "message": f"No file with this id: id={theirs.id!r}",
            "type": "invalid_request_error",
            "param": "file_id",
            "code": "not_found",
        }
    assert list(other.files.list()) == []
    assert owner.files.retrieve(theirs.id).id == theirs.id


@pytest.mark.parametrize(
    ("purpose", "body", "says"),
    [
        ("prompts", jsonl([{"prompt": "hi"}]), "purpose: 'prompts'; expected one of batch, fine-tune"),
        ("assistants", b"{}\n", "purpose: 'assistants'"),
        ("fine-tune", b'{"prompt": "a"}\n', "Not a training file: 1 invalid line(s): line 1:"),
        ("batch", jsonl([batch_line(1), {"custom_id": "x", "method": "POST"}]), "line 2: missing url, body"),
        ("batch", jsonl([batch_line(1), batch_line(1)]), "line 2: custom_id 'req-1' is not unique"),
        ("batch", jsonl([batch_line(1), batch_line(2, "/v1/images/generations")]), "line 2: url: '/v1/images/"),
        ("batch", jsonl([batch_line(1)]) + b"{not json\n", "line 2: invalid JSON"),
        ("batch", b"", "The batch input file has no requests"),
    ],
)
def test_bad_uploads_are_refused_and_nothing_is_kept(
    server: LiveServer, admin: str, purpose: str, body: bytes, says: str
) -> None:
    key = _key(server, admin, f"files-bad-{uuid.uuid4().hex[:8]}")
    client = _client(server, key)
    before = _files_on_disk(server)
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("f.jsonl", io.BytesIO(body)), purpose=purpose)  # type: ignore[arg-type]
    error: dict[str, Any] = caught.value.body  # type: ignore[assignment]
    assert says in error["message"], error
    assert error["type"] == "invalid_request_error"
    assert_openai("ErrorResponse", {"error": error})
    assert list(client.files.list()) == []
    assert _files_on_disk(server) == before


def test_an_upload_without_purpose_or_past_the_quota_is_refused(server: LiveServer, admin: str) -> None:
    key = _key(server, admin, "files-quota", storage_quota_bytes=64)
    missing = httpx.post(f"{server.url}/v1/files", files={"file": ("t.jsonl", b"{}\n")}, headers=bearer(key))
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "purpose", missing.text
    client = _client(server, key)
    with pytest.raises(openai.APIStatusError) as caught:
        client.files.create(file=("t.jsonl", io.BytesIO(jsonl(training_rows(10)))), purpose="fine-tune")
    assert caught.value.status_code == 413
    assert "Storage quota exceeded" in caught.value.message
    assert list(client.files.list()) == []
