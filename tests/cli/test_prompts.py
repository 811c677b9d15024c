"""``winnow prompts`` and ``client.prompts`` against a real ``winnow serve``: the CLI's local commands
(the server's database, as the key ``--key`` names) and its ``--remote`` ones (through the SDK) see
the same prompts; versions, labels, a diff and delete through the SDK, sync and async; another
key's prompt is an error, not a traceback."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import LiveServer
from winnow.client import AsyncWinnow, NotFound, Winnow

pytestmark = pytest.mark.slow  # a real `winnow serve` and CLI processes


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    server = LiveServer(tmp_path_factory.mktemp("prompts-cli") / "data").start()
    key = server.cli("keys", "create", "writer").stdout.split()[-1]
    yield server, key
    server.stop()


def _run(server: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "winnow", "prompts", *args], env=server.env, capture_output=True, text=True, check=False
    )


def test_local_and_remote_commands_share_the_prompts(served: tuple[LiveServer, str]) -> None:
    server, key = served
    remote = ("--remote", "--url", server.url, "--key", key)
    made = _run(
        server, "create", "qa", "-t", "Q: {question}", "--label", "production", "--temperature", "0", "--key", key
    )
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["labels"] == {"production": 1}
    added = _run(server, "add-version", "qa", "-t", "Question: {question}", "--message", "clearer", *remote)
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["version"] == 2
    moved = _run(server, "label", "qa", "production", "2", "--key", key)
    assert moved.returncode == 0 and json.loads(moved.stdout)["labels"] == {"production": 2}
    listed = _run(server, "list", "--json", *remote)
    assert [p["name"] for p in json.loads(listed.stdout)["data"]] == ["qa"]
    table = _run(server, "versions", "qa", *remote)
    assert table.returncode == 0 and "clearer" in table.stdout and "production" in table.stdout
    shown = _run(server, "show", "qa", "--version", "1", "--key", key)
    assert json.loads(shown.stdout)["template"] == "Q: {question}"


def test_errors_are_one_line(served: tuple[LiveServer, str]) -> None:
    server, key = served
    assert _run(server, "create", "mine", "-t", "hi", "--key", key).returncode == 0
    other = server.cli("keys", "create", "reader").stdout.split()[-1]
    for args in (("show", "mine", "--key", other), ("show", "mine", "--remote", "--url", server.url, "--key", other)):
        failed = _run(server, *args)
        assert failed.returncode == 1 and "No prompt of this name" in failed.stderr and "Traceback" not in failed.stderr
    bad = _run(server, "create", "odd", "-t", "{0}", "--key", key)
    assert bad.returncode == 1 and "plain {field}" in bad.stderr
    gone = _run(server, "unlabel", "mine", "canary", "--key", key)
    assert gone.returncode == 1 and "no label 'canary'" in gone.stderr


def test_the_sdk_versions_labels_diffs_and_deletes(served: tuple[LiveServer, str]) -> None:
    server, key = served
    with Winnow(server.url, key) as client:
        made = client.prompts.create(
            "sdk", "Say {word}", system="Be brief.", labels=["staging"], params={"max_tokens": 5}
        )
        assert made.latest.params.max_tokens == 5 and made.labels == {"staging": 1}
        second = client.prompts.add_version("sdk", "Say {word} twice", metadata={"score": 0.5})
        assert second.version == 2 and second.metadata == {"score": 0.5}
        assert client.prompts.set_label("sdk", "production", 2).labels == {"production": 2, "staging": 1}
        diff = client.prompts.diff("sdk", 1, 2)
        assert [(line.op, line.text) for f in diff.fields if f.field == "template" for line in f.lines] == [
            ("delete", "Say {word}"),
            ("insert", "Say {word} twice"),
        ]
        assert [v.version for v in client.prompts.versions("sdk").data] == [2, 1]
        assert client.prompts.remove_label("sdk", "staging").labels == {"production": 2}
        assert client.prompts.delete("sdk").deleted
        with pytest.raises(NotFound):
            client.prompts.retrieve("sdk")


def test_the_async_sdk(served: tuple[LiveServer, str]) -> None:
    server, key = served

    async def go() -> list[int]:
        async with AsyncWinnow(server.url, key) as client:
            await client.prompts.create("async", "Hi {name}")
            await client.prompts.add_version("async", "Hello {name}")
            version = await client.prompts.version("async", 2)
            assert version.template == "Hello {name}"
            page = await client.prompts.versions("async", limit=1)
            assert page.has_more
            return [v.version for v in page.data]

    assert asyncio.run(go()) == [2]
