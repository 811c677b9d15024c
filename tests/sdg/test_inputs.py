"""Prompt files: accepted line shapes, a validation pass that names lines, paths kept inside data roots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from winnow.auth.paths import resolve_inside
from winnow.errors import InvalidRequest
from winnow.sdg.inputs import read_rows, validate_file


def _write(path: Path, lines: list[object]) -> Path:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_all_three_line_shapes_are_read_and_extra_fields_carried(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "p.jsonl",
        [
            {"id": "a", "prompt": "What is 1+1?", "answer": "2"},
            {"id": 7, "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}]},
            {
                "custom_id": "c",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"messages": [{"role": "user", "content": "Yo"}]},
            },
            "",
        ],
    )
    assert validate_file(path).rows == 3
    rows = list(read_rows(path, system_prompt="You are a calculator."))
    assert [r.id for r in rows] == ["a", "7", "c"]
    assert rows[0].messages == [
        {"role": "system", "content": "You are a calculator."},
        {"role": "user", "content": "What is 1+1?"},
    ]
    assert rows[0].fields == {"answer": "2"}
    assert rows[1].messages[0]["content"] == "Be terse."  # its own system message wins
    assert rows[2].messages == [{"role": "user", "content": "Yo"}]
    assert [r.id for r in read_rows(path, skip=2)] == ["c"]


def test_validation_lists_the_first_errors_with_line_numbers(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "bad.jsonl",
        [
            {"id": "a", "prompt": "ok"},
            "{not json",
            {"prompt": "no id"},
            {"id": "a", "prompt": "again"},
            {"id": "e", "prompt": "   "},
            {"id": "m", "messages": []},
        ],
    )
    with pytest.raises(InvalidRequest) as error:
        validate_file(path)
    details = error.value.details or ""
    for expected in (
        "line 2: invalid JSON",
        "line 3: missing id",
        "line 4: duplicate id 'a'",
        "line 5: empty",
        "line 6: messages",
    ):
        assert expected in details, details
    assert "5 invalid line(s)" in error.value.message


def test_empty_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="no prompts"):
        validate_file(_write(tmp_path / "empty.jsonl", [""]))


def test_paths_must_resolve_inside_the_data_roots(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    inside = _write(root / "sub" / "p.jsonl", [{"id": "a", "prompt": "x"}])
    outside = _write(tmp_path / "secret.jsonl", [{"id": "a", "prompt": "x"}])
    assert resolve_inside("sub/p.jsonl", [root]) == inside
    assert resolve_inside(str(inside), [root]) == inside
    with pytest.raises(InvalidRequest):
        resolve_inside("../secret.jsonl", [root])
    with pytest.raises(InvalidRequest):
        resolve_inside(str(outside), [root])
    (root / "link.jsonl").symlink_to(outside)
    with pytest.raises(InvalidRequest):
        resolve_inside("link.jsonl", [root])
