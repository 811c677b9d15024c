"""The prompt registry over HTTP (the app in-process, a real SQLite): versions are numbered and
immutable, labels point at one version and move, another key's prompt is a 404, bad input a 400 in
the spec's ErrorResponse shape, lists page, the OpenAPI document names every route as an extension."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import bearer
from tests.spec import assert_error
from winnow.runtime import Runtime
from winnow.schemas.prompts import PromptRef, PromptVersionCreate

P = "/api/v1/prompts"


@pytest.fixture
def alice(runtime: Runtime) -> dict[str, str]:
    return bearer(runtime.keys.create("alice").key)


def _create(client: TestClient, key: dict[str, str], name: str = "qa", **extra: Any) -> dict[str, Any]:
    body = {"name": name, "template": "Q: {question}\nA:", "system": "Answer in {style}.", **extra}
    response = client.post(P, json=body, headers=key)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def test_versions_are_numbered_and_a_label_moves(client: TestClient, alice: dict[str, str]) -> None:
    created = _create(client, alice, labels=["production"], params={"temperature": 0, "max_tokens": 4})
    assert created["latest_version"] == 1 and created["labels"] == {"production": 1}
    assert created["latest"]["fields"] == ["question"] and created["latest"]["params"]["max_tokens"] == 4
    second = client.post(
        f"{P}/qa/versions", json={"template": "Question: {question}", "labels": ["staging"]}, headers=alice
    )
    assert second.status_code == 201 and second.json()["version"] == 2 and second.json()["labels"] == ["staging"]

    moved = client.put(f"{P}/qa/labels/production", json={"version": 2}, headers=alice)
    assert moved.status_code == 200 and moved.json()["labels"] == {"production": 2, "staging": 2}
    one = client.get(f"{P}/qa/versions/1", headers=alice).json()
    assert one["labels"] == [] and one["template"] == "Q: {question}\nA:"  # the label left version 1

    back = client.put(f"{P}/qa/labels/production", json={"version": 1}, headers=alice).json()
    assert back["labels"] == {"production": 1, "staging": 2}
    assert_error(client.put(f"{P}/qa/labels/production", json={"version": 3}, headers=alice), 404, "not_found")
    assert_error(client.put(f"{P}/qa/labels/latest", json={"version": 1}, headers=alice), 400, "validation_error")
    removed = client.delete(f"{P}/qa/labels/staging", headers=alice).json()
    assert removed["labels"] == {"production": 1}


def test_a_version_cannot_be_changed(client: TestClient, alice: dict[str, str]) -> None:
    _create(client, alice)
    for method in ("PUT", "PATCH", "DELETE"):
        response = client.request(method, f"{P}/qa/versions/1", json={"template": "changed {question}"}, headers=alice)
        assert_error(response, 405, "method_not_allowed")
    again = client.get(f"{P}/qa/versions/1", headers=alice).json()
    assert again["template"] == "Q: {question}\nA:" and again["system"] == "Answer in {style}."


def test_another_keys_prompt_is_a_404(client: TestClient, runtime: Runtime, alice: dict[str, str]) -> None:
    _create(client, alice)
    bob = bearer(runtime.keys.create("bob").key)
    for method, path, body in (
        ("GET", f"{P}/qa", None),
        ("GET", f"{P}/qa/versions", None),
        ("GET", f"{P}/qa/versions/1", None),
        ("POST", f"{P}/qa/versions", {"template": "x"}),
        ("PUT", f"{P}/qa/labels/production", {"version": 1}),
        ("GET", f"{P}/qa/diff?from=1&to=1", None),
        ("DELETE", f"{P}/qa", None),
    ):
        assert_error(client.request(method, path, json=body, headers=bob), 404, "not_found")
    assert client.get(P, headers=bob).json()["data"] == []
    _create(client, bob)  # bob may have a prompt of the same name: names are per key
    assert client.get(f"{P}/qa", headers=alice).json()["latest"]["system"] == "Answer in {style}."
    assert client.delete(f"{P}/qa", headers=alice).json()["deleted"] is True
    assert_error(client.get(f"{P}/qa", headers=alice), 404)
    assert client.get(f"{P}/qa", headers=bob).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"name": "x", "template": "{0} and {1}"}, 400, "plain {field}"),
        ({"name": "x", "template": "{a.b}"}, 400, "plain {field}"),
        ({"name": "x", "template": "{unclosed"}, 400, "does not parse"),
        ({"name": "bad name!", "template": "hi"}, 400, None),
        ({"name": "x", "template": ""}, 400, None),
        ({"name": "x", "template": "hi", "params": {"temperature": 3}}, 400, None),
        ({"name": "x", "template": "hi", "unknown": 1}, 400, None),
        ({"name": "x", "template": "hi", "labels": ["latest"]}, 400, "reserved"),
    ],
)
def test_bad_prompts_are_400s(client: TestClient, alice: dict[str, str], body: Any, status: int, says: Any) -> None:
    error = assert_error(client.post(P, json=body, headers=alice), status, "validation_error")
    if says:
        assert says in error["message"] + (error.get("details") or "")


def test_a_second_prompt_of_one_name_is_a_409(client: TestClient, alice: dict[str, str]) -> None:
    _create(client, alice)
    assert_error(client.post(P, json={"name": "qa", "template": "again"}, headers=alice), 409, "conflict")


def test_lists_page_newest_first(client: TestClient, alice: dict[str, str]) -> None:
    for i in range(3):
        _create(client, alice, name=f"p{i}")
    for i in range(4):
        client.post(f"{P}/p0/versions", json={"template": f"v{i + 2} {{question}}"}, headers=alice)
    first = client.get(f"{P}?limit=2", headers=alice).json()
    assert [p["name"] for p in first["data"]] == ["p2", "p1"] and first["has_more"]
    rest = client.get(f"{P}?limit=2&after={first['last_id']}", headers=alice).json()
    assert [p["name"] for p in rest["data"]] == ["p0"] and not rest["has_more"]
    versions = client.get(f"{P}/p0/versions?limit=3", headers=alice).json()
    assert [v["version"] for v in versions["data"]] == [5, 4, 3] and versions["has_more"]
    older = client.get(f"{P}/p0/versions?limit=3&after={versions['last_id']}", headers=alice).json()
    assert [v["version"] for v in older["data"]] == [2, 1]


def test_diff_compares_two_versions_line_by_line(client: TestClient, alice: dict[str, str]) -> None:
    _create(client, alice, params={"temperature": 0.5})
    client.post(
        f"{P}/qa/versions",
        json={"template": "Q: {question}\nThink, then answer.\nA:", "params": {"temperature": 0}, "model": "demo-lm"},
        headers=alice,
    )
    diff = client.get(f"{P}/qa/diff?from=1&to=2", headers=alice).json()
    by_field = {f["field"]: f for f in diff["fields"]}
    assert by_field["template"]["lines"] == [
        {"op": "equal", "text": "Q: {question}"},
        {"op": "insert", "text": "Think, then answer."},
        {"op": "equal", "text": "A:"},
    ]
    assert by_field["system"]["lines"] == [{"op": "delete", "text": "Answer in {style}."}]
    assert [line["op"] for line in by_field["params"]["lines"]] == ["delete", "insert"]
    assert by_field["model"]["changed"] and by_field["model"]["lines"] == [{"op": "insert", "text": "demo-lm"}]


def test_rendering_needs_exactly_the_templates_fields(
    runtime: Runtime, client: TestClient, alice: dict[str, str]
) -> None:
    _create(client, alice, labels=["production"])
    key_id = runtime.keys.authenticate(alice["Authorization"].split()[1]).id
    rendered = runtime.prompts.resolve(
        key_id, PromptRef(name="qa", label="production", variables={"question": "2+2? {x}", "style": "one word"})
    )
    assert rendered.text == "Q: 2+2? {x}\nA:" and rendered.system == "Answer in one word."  # values are not templates
    with pytest.raises(Exception, match="do not match") as missing:
        runtime.prompts.resolve(key_id, PromptRef(name="qa", variables={"question": "hi"}))
    assert "missing: style" in str(getattr(missing.value, "details", ""))
    with pytest.raises(Exception, match="do not match") as extra:
        runtime.prompts.resolve(key_id, PromptRef(name="qa", variables={"question": "q", "style": "s", "qestion": "t"}))
    assert "not in the template: qestion" in str(getattr(extra.value, "details", ""))


def test_an_optimization_can_record_its_version_with_scores(
    runtime: Runtime, client: TestClient, alice: dict[str, str]
) -> None:
    """The registry's hook for optimization jobs: a version with ``source`` optimization and its scores."""
    _create(client, alice)
    key_id = runtime.keys.authenticate(alice["Authorization"].split()[1]).id
    spec = PromptVersionCreate(template="Solve: {question}", metadata={"validation_score": 0.62, "job": "opt-1"})
    made = runtime.prompts.add_version(key_id, "qa", spec, source="optimization")
    shown = client.get(f"{P}/qa/versions/{made.version}", headers=alice).json()
    assert shown["source"] == "optimization" and shown["metadata"]["validation_score"] == 0.62


def test_openapi_names_the_prompt_routes_as_extensions(client: TestClient) -> None:
    doc = client.get("/api/v1/openapi.json").json()
    paths = [p for p in doc["paths"] if p.startswith(P)]
    assert {P, f"{P}/{{name}}", f"{P}/{{name}}/versions/{{version}}", f"{P}/{{name}}/labels/{{label}}"} <= set(paths)
    for path in paths:
        for op in doc["paths"][path].values():
            assert op["x-winnow-extension"] is True and "ErrorResponse" in str(op["responses"]["404"])
    generate = doc["components"]["schemas"]["GenerateRequest"]["properties"]["prompt"]
    assert generate["x-winnow-extension"] is True and "PromptRef" in str(generate)


def test_versions_past_an_integer_column_are_400s(client: TestClient, alice: dict[str, str]) -> None:
    _create(client, alice)
    huge = 2**40
    assert_error(client.get(f"{P}/qa/versions/{huge}", headers=alice), 400, "validation_error")
    assert_error(client.put(f"{P}/qa/labels/x", json={"version": huge}, headers=alice), 400, "validation_error")
    assert_error(client.get(f"{P}/qa/diff?from=1&to={huge}", headers=alice), 400, "validation_error")
    body = {"model_id": "demo-lm", "prompt": {"name": "qa", "version": huge}}
    assert_error(client.post("/api/v1/generate", json=body, headers=alice), 400, "validation_error")
