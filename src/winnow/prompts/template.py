"""Prompt templates: plain ``{field}`` placeholders (``{{``/``}}`` for literal braces), the
``str.format`` syntax evaluations use, rendered only with exactly the variables they name."""

from __future__ import annotations

import difflib
import string
from collections.abc import Mapping

from winnow.errors import InvalidRequest


def template_fields(template: str, param: str = "template") -> set[str]:
    """The field names ``template`` uses; InvalidRequest for anything but plain ``{name}``
    (no ``{0}``, ``{a.b}``, ``{x!r}`` nor ``{x:>5}``) or braces that do not pair."""
    names: set[str] = set()
    try:
        for _, field, spec, conversion in string.Formatter().parse(template):
            if field is None:
                continue
            if not field.isidentifier() or spec or conversion:
                raise InvalidRequest(
                    "Templates take plain {field} placeholders",
                    f"got {{{field}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}; "
                    "write {{ and }} for literal braces",
                    param=param,
                )
            names.add(field)
    except ValueError as exc:
        raise InvalidRequest(
            "Template does not parse", f"{exc}; write {{{{ and }}}} for literal braces", param=param
        ) from None
    return names


def render_messages(
    template: str, system: str | None, variables: Mapping[str, object], param: str = "variables"
) -> tuple[str, str | None]:
    """``template`` (and ``system``, which may name fields too) filled from ``variables``: a field
    without a variable, or a variable no field names (a typo would otherwise go unnoticed), is one
    400 naming them all."""
    fields = template_fields(template) | (template_fields(system, param="system") if system else set())
    missing = sorted(fields - variables.keys())
    unknown = sorted(variables.keys() - fields)
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing: {', '.join(missing)}")
        if unknown:
            parts.append(f"not in the template: {', '.join(unknown)}")
        expected = ", ".join(sorted(fields)) or "none"
        raise InvalidRequest(
            "The variables do not match the template's fields",
            f"{'; '.join(parts)} (the template's fields: {expected})",
            param=param,
        )
    values = {name: _text(value) for name, value in variables.items()}
    return template.format_map(values), None if system is None else system.format_map(values)


def _text(value: object) -> str:
    """A variable as the template shows it (JSON's spelling of booleans)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def line_diff(before: str, after: str) -> list[tuple[str, str]]:
    """``before`` → ``after`` line by line (difflib): (op, line) with op equal, delete or insert."""
    old, new = before.splitlines(), after.splitlines()
    out: list[tuple[str, str]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if tag == "equal":
            out += [("equal", line) for line in old[i1:i2]]
            continue
        out += [("delete", line) for line in old[i1:i2]]
        out += [("insert", line) for line in new[j1:j2]]
    return out
