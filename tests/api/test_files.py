"""A key's files: recorded uploads listed a page at a time, read and deleted by their owner only,
a per-key storage quota (413 while the upload streams, no partial file left), admins setting a
key's quota, and uploads from before uploads were recorded adopted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from starlette.types import Message

from tests.conftest import bearer
from tests.spec import assert_error
from winnow.api import create_app
from winnow.config import Settings
from winnow.runtime import Runtime

FILES = "/api/v1/files"
BOUNDARY = "winnow-files-boundary"


def _lines(rows: int, start: int = 0) -> bytes:
    return b"".join(
        json.dumps({"id": f"p{i}", "prompt": f"What is {i}+1?"}).encode() + b"\n" for i in range(start, start + rows)
    )


def _upload(client: TestClient, key: str, data: bytes, name: str = "p.jsonl", **form: str) -> Any:
    return client.post(FILES, files={"file": (name, data, "application/jsonl")}, data=form, headers=bearer(key))


def _multipart(data: bytes) -> bytes:
    head = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
        "Content-Type: application/jsonl\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def _post_in_chunks(
    client: TestClient, path: str, headers: dict[str, str], body: bytes, size: int
) -> tuple[int, dict[str, Any], int]:
    """POST ``body`` to the app, ``size`` bytes a message, on the TestClient's own event loop (the
    TestClient itself hands the app the whole body at once): the status, the JSON answer, and how
    many bytes of the body the app read."""
    read = 0
    answer: list[Message] = []

    async def receive() -> Message:
        nonlocal read
        chunk = body[read : read + size]
        read += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": read < len(body)}

    async def send(message: Message) -> None:
        answer.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 50000),
    }
    assert client.portal is not None  # inside `with TestClient(...)`
    client.portal.call(client.app, scope, receive, send)
    status = next(m["status"] for m in answer if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in answer if m["type"] == "http.response.body")
    return status, json.loads(payload), read


def _on_disk(settings: Settings) -> list[str]:
    return sorted(p.name for p in (settings.data_dir / "files").rglob("*") if p.is_file())


def test_uploads_are_listed_read_and_deleted_by_their_owner_only(
    client: TestClient, runtime: Runtime, settings: Settings, user_key: str
) -> None:
    other = runtime.keys.create("other").key
    mine = _upload(client, user_key, _lines(3), "three.jsonl")
    assert mine.status_code == 201, mine.text
    info = mine.json()
    assert (info["filename"], info["purpose"], info["rows"], info["bytes"]) == (
        "three.jsonl",
        "prompts",
        3,
        len(_lines(3)),
    )
    theirs = _upload(client, other, _lines(2)).json()

    listed = client.get(FILES, headers=bearer(user_key)).json()
    assert [f["id"] for f in listed["data"]] == [info["id"]]
    assert listed["has_more"] is False and listed["used_bytes"] == info["bytes"]
    assert listed["quota_bytes"] == settings.storage_quota_bytes == 1024**3
    assert client.get(f"{FILES}/{info['id']}", headers=bearer(user_key)).json() == info

    # Another key's file is not there for this key: 404, and it stays.
    assert_error(client.get(f"{FILES}/{theirs['id']}", headers=bearer(user_key)), 404, "not_found")
    assert_error(client.delete(f"{FILES}/{theirs['id']}", headers=bearer(user_key)), 404, "not_found")
    assert Path(theirs["path"]).exists()

    deleted = client.delete(f"{FILES}/{info['id']}", headers=bearer(user_key))
    assert deleted.status_code == 200 and deleted.json() == {"id": info["id"], "object": "file", "deleted": True}
    assert not Path(info["path"]).exists()
    assert_error(client.get(f"{FILES}/{info['id']}", headers=bearer(user_key)), 404)
    assert_error(client.delete(f"{FILES}/{info['id']}", headers=bearer(user_key)), 404)
    assert client.get(FILES, headers=bearer(user_key)).json()["used_bytes"] == 0
    assert _on_disk(settings) == [Path(theirs["path"]).name]


def test_the_list_pages_with_limit_after_and_has_more(client: TestClient, user_key: str) -> None:
    ids = [_upload(client, user_key, _lines(1, i)).json()["id"] for i in range(5)]
    pages, after = [], None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"after": after} if after else {})
        page = client.get(FILES, params=params, headers=bearer(user_key)).json()
        pages.append(([f["id"] for f in page["data"]], page["has_more"]))
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert [len(ids_) for ids_, _ in pages] == [2, 2, 1]
    assert [more for _, more in pages] == [True, True, False]
    assert [i for ids_, _ in pages for i in ids_] == ids[::-1]  # newest first, each once
    assert_error(client.get(FILES, params={"after": "file-nope"}, headers=bearer(user_key)), 400)
    assert_error(client.get(FILES, params={"limit": 0}, headers=bearer(user_key)), 400)


def test_an_upload_past_the_quota_stops_while_streaming_and_leaves_nothing(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", workers=0, storage_quota_bytes=4000)
    with TestClient(create_app(settings)) as client:
        key = client.app.state.runtime.keys.create("uploader").key  # type: ignore[attr-defined]
        first = _upload(client, key, _lines(40))
        assert first.status_code == 201, first.text
        used = first.json()["bytes"]
        assert 1000 < used < 4000

        whole = _multipart(_lines(2000))  # ~80 KB: twenty times what is left
        headers = {**bearer(key), "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
        status, body, read = _post_in_chunks(client, FILES, headers, whole, 1000)
        assert status == 413 and body["error"] == "payload_too_large", body
        assert body["message"] == "Storage quota exceeded"
        assert f"{used} of its 4000 bytes" in body["details"] and "DELETE /api/v1/files/" in body["details"]
        assert read <= 4000 - used + 1000 + 200, f"the server read {read} of {len(whole)} bytes, past the quota"
        assert _on_disk(settings) == [Path(first.json()["path"]).name]  # no partial file

        # What is left still takes a file that fits, and a delete frees the space.
        assert _upload(client, key, _lines(3)).status_code == 201
        assert_error(_upload(client, key, _lines(60)), 413, "payload_too_large")
        assert client.delete(f"{FILES}/{first.json()['id']}", headers=bearer(key)).status_code == 200
        assert _upload(client, key, _lines(60)).status_code == 201


def test_admins_set_and_clear_a_keys_storage_quota(client: TestClient, runtime: Runtime, admin_key: str) -> None:
    user = runtime.keys.create("small").key
    admin = bearer(admin_key)
    set_ = client.put("/api/v1/keys/small/storage_quota", json={"bytes": 100}, headers=admin)
    assert set_.status_code == 200 and set_.json()["storage_quota_bytes"] == 100
    assert client.get(FILES, headers=bearer(user)).json()["quota_bytes"] == 100
    assert_error(_upload(client, user, _lines(10)), 413, "payload_too_large")
    assert_error(client.put("/api/v1/keys/small/storage_quota", json={"bytes": 100}, headers=bearer(user)), 403)
    assert_error(client.put("/api/v1/keys/nobody/storage_quota", json={"bytes": 1}, headers=admin), 404)
    assert_error(client.put("/api/v1/keys/small/storage_quota", json={"bytes": -1}, headers=admin), 400)
    cleared = client.delete("/api/v1/keys/small/storage_quota", headers=admin)
    assert cleared.json()["storage_quota_bytes"] is None
    assert _upload(client, user, _lines(10)).status_code == 201
    made = client.post("/api/v1/keys", json={"name": "tiny", "storage_quota_bytes": 5}, headers=admin).json()
    assert made["storage_quota_bytes"] == 5
    assert_error(_upload(client, made["key"], _lines(1)), 413)


def test_a_bad_purpose_or_content_leaves_no_file(client: TestClient, settings: Settings, user_key: str) -> None:
    assert_error(_upload(client, user_key, _lines(2), purpose="weights"), 400, "validation_error")
    assert_error(_upload(client, user_key, b"not json\n"), 400, "validation_error")
    no_file = client.post(FILES, data={"purpose": "prompts"}, files={"x": ("a", b"")}, headers=bearer(user_key))
    assert_error(no_file, 400)
    assert not (settings.data_dir / "files").exists() or _on_disk(settings) == []
    assert client.get(FILES, headers=bearer(user_key)).json()["data"] == []


def test_uploads_from_before_the_files_table_are_adopted(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", workers=0, storage_quota_bytes=3000)
    with TestClient(create_app(settings)) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        created = runtime.keys.create("veteran")
        old = settings.data_dir / "files" / str(created.id) / "file-0123456789abcdef01234567.jsonl"
        old.parent.mkdir(parents=True)
        old.write_bytes(_lines(50))
        listed = client.get(FILES, headers=bearer(created.key)).json()
        assert [(f["id"], f["purpose"], f["rows"], f["bytes"]) for f in listed["data"]] == [
            (old.stem, "unknown", 50, old.stat().st_size)
        ]
        assert listed["used_bytes"] == old.stat().st_size > 1500
        assert_error(_upload(client, created.key, _lines(40)), 413)  # the old file counts
        assert client.delete(f"{FILES}/{old.stem}", headers=bearer(created.key)).status_code == 200
        assert not old.exists()
        assert _upload(client, created.key, _lines(40)).status_code == 201
