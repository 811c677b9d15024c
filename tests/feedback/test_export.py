"""An empty feedback export says why (README's example used to export nothing without a hint)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import bearer

EXPORT = "/api/v1/feedback/export"


def _generate(client: TestClient, key: str, prompt: str) -> tuple[str, str]:
    response = client.post(
        "/api/v1/generate",
        json={"model_id": "demo-lm", "prompt": prompt, "max_tokens": 8, "temperature": 0},
        headers=bearer(key),
    )
    assert response.status_code == 200, response.text
    return response.json()["metadata"]["generation_id"], response.json()["text"]


def test_an_empty_export_says_why(client: TestClient, user_key: str) -> None:
    auth = bearer(user_key)
    nothing = client.get(EXPORT, headers=auth)
    assert nothing.status_code == 200 and nothing.content == b""
    assert nothing.headers["X-Winnow-Rows"] == "0"
    assert "no feedback" in nothing.headers["X-Winnow-Empty-Reason"]

    generation, text = _generate(client, user_key, "What is 17+25?")
    # The README's old example: a "correction" equal to the answer makes no pair.
    rated = client.post(
        "/api/v1/feedback",
        json={"generation_id": generation, "rating": "down", "corrected_response": text},
        headers=auth,
    )
    assert rated.status_code == 201, rated.text
    empty = client.get(EXPORT, headers=auth)
    assert empty.content == b"" and empty.headers["X-Winnow-Rows"] == "0"
    reason = empty.headers["X-Winnow-Empty-Reason"]
    assert "1 prompt(s) with feedback" in reason and "the correction equals the response" in reason

    other, _ = _generate(client, user_key, "What is 8+9?")
    fixed = client.post(
        "/api/v1/feedback",
        json={"generation_id": other, "rating": "down", "corrected_response": "seventeen"},
        headers=auth,
    )
    assert fixed.status_code == 201, fixed.text
    pairs = client.get(EXPORT, headers=auth)
    assert pairs.headers["X-Winnow-Rows"] == "1" and "X-Winnow-Empty-Reason" not in pairs.headers
    assert b'"chosen": "seventeen"' in pairs.content
    sft = client.get(EXPORT, params={"format": "sft"}, headers=auth)
    assert sft.headers["X-Winnow-Rows"] == "2"  # both corrections are SFT rows
