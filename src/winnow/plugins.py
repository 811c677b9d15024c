"""Entry-point registries: Winnow's built-ins and users' plugins are found the same way."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any


def load_group(group: str, accept: Callable[[Any], bool], what: str) -> dict[str, Any]:
    """Every object registered under the entry-point ``group``, by name; a TypeError names the
    entry point whose object ``accept`` refuses (e.g. not a subclass of the expected base)."""
    found: dict[str, Any] = {}
    for ep in entry_points(group=group):
        obj = ep.load()
        if not accept(obj):
            raise TypeError(f"entry point {ep.name!r} ({ep.value}) in {group!r} is not {what}")
        found[ep.name] = obj
    return found
