"""Secrets kept out of what Winnow passes on or logs: the credentials in a URL's userinfo, Winnow's
own upstream keys, and anything that looks like a bearer token or an OpenAI-style key.

An upstream may echo a request's ``Authorization`` header in its error text; Winnow passes that
text on to clients and logs it, so both go through ``redact`` first. The upstream keys Winnow
sends are registered with ``remember`` when its deployments are built.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"
_MIN_SECRET = 6  # shorter values (test keys like "k", "not-set") would blank out ordinary words
_TOKEN = r"[A-Za-z0-9._~+/=-]"
_TOKENS = re.compile(
    # a scheme, then something token-like (a digit, a capital or base64 padding in it, or 20
    # characters): not the words in "bearer token required" or "basic usage"
    rf"(?P<scheme>\b(?i:bearer|basic)\s+)(?:(?={_TOKEN}*[0-9A-Z=+/]){_TOKEN}{{6,}}|{_TOKEN}{{20,}})"
    r"|\bsk-[A-Za-z0-9_-]{6,}"
    r"|(?P<userinfo>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@"
)
_known: set[str] = set()
_known_pattern: re.Pattern[str] | None = None


def remember(secret: str | None) -> None:
    """A value Winnow sends upstream (an api key, a URL's password), masked wherever text leaves."""
    global _known_pattern
    if secret and len(secret) >= _MIN_SECRET and secret != "not-set" and secret not in _known:
        _known.add(secret)
        ordered = sorted(_known, key=len, reverse=True)  # the longest first: no half-masked key
        _known_pattern = re.compile("|".join(re.escape(s) for s in ordered))


def _token(match: re.Match[str]) -> str:
    if match.group("scheme"):
        return match.group("scheme") + MASK
    if match.group("userinfo"):
        return match.group("userinfo") + MASK + "@"
    return "sk-" + MASK


_HINTS = ("sk-", "://", "earer", "EARER", "asic", "ASIC")  # in every match of _TOKENS


def redact(text: str) -> str:
    """``text`` with Winnow's upstream keys, bearer/basic tokens, ``sk-...`` keys and URL userinfo masked."""
    # Substring checks first: most lines (every access log line) hold none, and skip the regexes.
    if _known_pattern is not None and any(secret in text for secret in _known):
        text = _known_pattern.sub(MASK, text)
    if any(hint in text for hint in _HINTS):
        text = _TOKENS.sub(_token, text)
    return text


def redact_json(value: Any) -> Any:
    """``redact`` over every string of a JSON value (an upstream's error object)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_json(v) for v in value]
    return value


def split_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """``url`` without its userinfo, and the (user, password) it held, if any."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), (unquote(user), unquote(password))


def mask_userinfo(url: str | None) -> str | None:
    """``url`` with any userinfo shown as ``***`` (``http://***@host/v1``)."""
    if not url:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=f"{MASK}@{parts.netloc.rpartition('@')[2]}"))
