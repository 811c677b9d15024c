"""Secrets kept out of what Winnow passes on or logs (``winnow.redact``): Winnow's own upstream
keys, bearer and basic tokens, ``sk-`` keys and URL userinfo are masked; ordinary words are not."""

from __future__ import annotations

import logging

from winnow.config import ModelConfig, Settings
from winnow.logs import JsonFormatter, PlainFormatter
from winnow.redact import mask_userinfo, redact, redact_json, remember, split_userinfo


def test_known_keys_tokens_and_userinfo_are_masked_and_words_are_not() -> None:
    remember("plain-key-of-winnow-42")
    remember("k")  # too short to mask without blanking out ordinary text
    echoed = "You sent 'Authorization: Bearer plain-key-of-winnow-42' (key plain-key-of-winnow-42)"
    assert redact(echoed) == "You sent 'Authorization: Bearer ***' (key ***)"
    assert redact("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig") == "Authorization: Bearer ***"
    assert redact("auth Basic dXNlcjpwYXNz") == "auth Basic ***"
    assert redact("Incorrect API key provided: sk-proj-abc123XYZ789.") == "Incorrect API key provided: sk-***."
    assert (
        redact("connect to http://user:pw@10.0.0.1:8000/v1 failed") == "connect to http://***@10.0.0.1:8000/v1 failed"
    )
    plain = "A bearer token is required; basic usage is free; keep the kitchen tidy"
    assert redact(plain) == plain
    assert redact_json({"message": "Bearer plain-key-of-winnow-42", "code": None, "list": ["sk-abcdef123"]}) == {
        "message": "Bearer ***",
        "code": None,
        "list": ["sk-***"],
    }


def test_userinfo_is_split_off_for_basic_auth_and_masked_for_show() -> None:
    assert split_userinfo("http://gw%40user:p%3Ass@host:8080/v1") == ("http://host:8080/v1", ("gw@user", "p:ss"))
    assert split_userinfo("https://api.example.com/v1") == ("https://api.example.com/v1", None)
    assert mask_userinfo("http://user:pass@host/v1") == "http://***@host/v1"
    assert mask_userinfo("http://host/v1") == "http://host/v1"


def test_config_show_masks_credentials_in_every_base_url() -> None:
    model = {"id": "m", "provider": "openai", "base_url": "http://u:pw1-secret@one/v1"}
    deployments = [{"id": "d", "base_url": "http://u:pw2-secret@two/v1"}, {"id": "e"}]
    settings = Settings(models=[ModelConfig.model_validate({**model, "deployments": deployments})])
    shown = settings.masked()
    assert "secret" not in repr(shown)
    assert shown["models"][0]["base_url"] == "http://***@one/v1"
    assert [d["base_url"] for d in shown["models"][0]["deployments"]] == ["http://***@two/v1", None]


def test_log_lines_are_redacted_in_both_formats() -> None:
    remember("plain-key-of-winnow-42")
    record = logging.makeLogRecord(
        {
            "name": "winnow.api",
            "levelname": "WARNING",
            "msg": "upstream said %s",
            "args": ("key plain-key-of-winnow-42",),
        }
    )
    for formatter in (PlainFormatter("%(message)s"), JsonFormatter()):
        line = formatter.format(record)
        assert "plain-key-of-winnow-42" not in line and "key ***" in line
