"""Structured-output request fields as a decoding ``Guide``: OpenAI's ``response_format`` (``json_object``,
``json_schema``) and vLLM's ``guided_json`` / ``guided_regex`` / ``guided_choice`` / ``guided_grammar`` and
its newer ``structured_outputs`` object (``json``, ``regex``, ``choice``, ``grammar``, ``json_object``).

A request asks for one of them at most; a malformed one is a 400 naming the field. Whether the
schema itself can be enforced is the engine's to say (models/guided.py), also as a 400.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator

from winnow.errors import InvalidRequest
from winnow.models.base import Guide

GUIDED_FIELDS = ("guided_json", "guided_regex", "guided_choice", "guided_grammar", "structured_outputs")
_STRUCTURED_KEYS = {
    "json": "guided_json",
    "regex": "guided_regex",
    "choice": "guided_choice",
    "grammar": "guided_grammar",
}


def _schema(value: object, param: str) -> Guide:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise InvalidRequest(f"{param} must be a JSON schema", str(exc), param=param) from None
    if not isinstance(value, dict | bool):
        raise InvalidRequest(f"{param} must be a JSON schema (an object)", param=param)
    return Guide.json_schema(value, param)


def _text(value: object, param: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{param} must be a non-empty string", param=param)
    return value


def _guided(name: str, value: object, param: str) -> Guide:
    if name == "guided_json":
        return _schema(value, param)
    if name == "guided_choice":
        if not isinstance(value, list) or not value or not all(isinstance(c, str) and c for c in value):
            raise InvalidRequest(f"{param} must be a non-empty list of non-empty strings", param=param)
        return Guide("choice", json.dumps(value), param)
    if name == "guided_regex":
        return Guide("regex", _text(value, param), param)
    return Guide("grammar", _text(value, param), param)


def response_format_guide(value: object, param: str = "response_format") -> Guide | None:
    """OpenAI's ``response_format``: None for text, else the guide that enforces it."""
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return Guide("json_object", '{"type": "object"}', param)
    if kind == "json_schema" and isinstance(value, dict):
        spec = value.get("json_schema")
        if not isinstance(spec, dict):
            raise InvalidRequest("response_format json_schema needs a json_schema object", param=f"{param}.json_schema")
        schema = spec.get("schema")
        if schema is None:  # OpenAI's schema is optional: then any JSON object
            return Guide("json_object", '{"type": "object"}', param)
        return _schema(schema, param)
    raise InvalidRequest(
        f"{param}.type must be one of text, json_object, json_schema", f"got {kind!r}", param=f"{param}.type"
    )


def _structured(value: object) -> Guide | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest("structured_outputs must be an object", param="structured_outputs")
    asked = [key for key in (*_STRUCTURED_KEYS, "json_object") if value.get(key) not in (None, False)]
    if len(asked) > 1:
        raise InvalidRequest(
            "structured_outputs takes one of json, regex, choice, grammar, json_object", param="structured_outputs"
        )
    if not asked:
        return None
    key = asked[0]
    if key == "json_object":
        return Guide("json_object", '{"type": "object"}', "structured_outputs.json_object")
    return _guided(_STRUCTURED_KEYS[key], value[key], f"structured_outputs.{key}")


def guide_of(fields: dict[str, Any]) -> Guide | None:
    """The one structured-output guide a request's fields ask for (None: free text)."""
    guides: list[Guide] = []
    if (guide := response_format_guide(fields.get("response_format"))) is not None:
        guides.append(guide)
    for name in GUIDED_FIELDS[:-1]:
        if fields.get(name) is not None:
            guides.append(_guided(name, fields[name], name))
    if (guide := _structured(fields.get("structured_outputs"))) is not None:
        guides.append(guide)
    if len(guides) > 1:
        raise InvalidRequest(
            "Ask for one structured output at most",
            f"{', '.join(g.param for g in guides)} were all given",
            param=guides[1].param,
        )
    return guides[0] if guides else None


def _checked(value: dict[str, Any]) -> dict[str, Any]:
    try:
        response_format_guide(value)
    except InvalidRequest as exc:
        raise ValueError(f"{exc.message} ({exc.details})" if exc.details else exc.message) from None
    return value


# ``response_format`` in a job's sampling params (SDG jobs, evaluations): checked at submission.
ResponseFormat = Annotated[dict[str, Any], AfterValidator(_checked)]
RESPONSE_FORMAT_DOC = (
    "Winnow's extension of the SDG spec's sampling params: OpenAI's response_format ({type: json_object} or {type: "
    "json_schema, json_schema: {name, schema, strict}}). Local transformers models enforce it while decoding "
    "(every response parses and validates, unless max tokens cut it short); upstream models get it as sent."
)
