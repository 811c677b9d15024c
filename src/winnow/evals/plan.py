"""An evaluation checked before it starts (every problem a 400 at submit) and resolved into a plan."""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

from winnow.auth.paths import resolve_inside
from winnow.config import Settings
from winnow.errors import InvalidRequest, ModelNotFound
from winnow.models.base import Provider
from winnow.models.registry import ModelRegistry
from winnow.schemas.evals import Baseline, EvaluationRequest, PromptTemplate
from winnow.sdg.inputs import MAX_REPORTED_ERRORS, TOKEN_BATCH, PromptFile, read_rows, validate_file
from winnow.sdg.reward import RewardModel, RewardModelRegistry
from winnow.sdg.rows import PromptRow
from winnow.sdg.scoring import ScoringFn, resolve_scoring
from winnow.usage.prices import Price, PriceBook
from winnow.usage.tokens import PromptTokens, prompt_tokens


def context(row: PromptRow) -> dict[str, Any]:
    """What a template may name: the row's fields, its id, and ``prompt`` (its last user message)."""
    users = [m["content"] for m in row.messages if m["role"] == "user"]
    return {**row.fields, "id": row.id, "prompt": users[-1] if users else ""}


def placeholders(template: str) -> set[str]:
    """The field names a template uses; InvalidRequest for anything but plain ``{name}``."""
    names: set[str] = set()
    try:
        for _, field, spec, conversion in string.Formatter().parse(template):
            if field is None:
                continue
            if not field.isidentifier() or spec or conversion:
                raise InvalidRequest("Templates take plain {field} placeholders", f"got {{{field}}} in {template!r}")
            names.add(field)
    except ValueError as exc:
        raise InvalidRequest("Template does not parse", f"{exc} in {template!r}") from None
    return names


def render(template: PromptTemplate, row: PromptRow) -> list[dict[str, Any]]:
    text = template.template.format_map(context(row))
    messages: list[dict[str, Any]] = [{"role": "system", "content": template.system}] if template.system else []
    return [*messages, {"role": "user", "content": text}]


def baseline(spec: EvaluationRequest) -> Baseline:
    return spec.baseline or Baseline(template=spec.templates[0].name, model=spec.models[0])


def check_eval(
    spec: EvaluationRequest, settings: Settings, models: ModelRegistry, rewards: RewardModelRegistry
) -> PromptFile:
    names = [t.name for t in spec.templates]
    if len(set(names)) != len(names):
        raise InvalidRequest("Template names must be unique", ", ".join(names))
    if len(set(spec.models)) != len(spec.models):
        raise InvalidRequest("Models must be unique", ", ".join(spec.models))
    for model in spec.models:
        try:
            models.config(model)
        except ModelNotFound as exc:
            raise InvalidRequest(exc.message, exc.details) from None
    if spec.reward_model is None and spec.scoring_function in (None, "raw", "sigmoid"):
        raise InvalidRequest(
            "Nothing to score with", "name a reward_model, or a scoring_function that needs none (e.g. exact_match)"
        )
    if spec.reward_model is not None:
        rewards.check(spec.reward_model)
    resolve_scoring(spec.scoring_function or "raw")
    base = baseline(spec)
    if base.template not in names or base.model not in spec.models:
        raise InvalidRequest("The baseline must be one of the templates and models", f"{base.template} x {base.model}")
    prompts = validate_file(resolve_inside(spec.dataset_path, settings.effective_data_roots, "dataset_path"))
    needed = {t.name: placeholders(t.template) for t in spec.templates}
    for row in read_rows(prompts.path):
        have = context(row)
        for template, fields in needed.items():
            missing = fields - have.keys()
            if missing:
                raise InvalidRequest(
                    f"Template {template!r} names fields a dataset row lacks",
                    f"row {row.id!r} (line {row.line}) has no {', '.join(sorted(missing))}",
                )
    for model in spec.models:
        _check_context(spec, prompts, model, prompt_tokens(models.config(model)))
    return prompts


def _check_context(spec: EvaluationRequest, prompts: PromptFile, model: str, tokens: PromptTokens) -> None:
    """Some row of every template fits ``model``'s context, counted as SDG's submit counts prompts (the
    model's own tokenizer): a 400 naming the pair, not an evaluation whose rows of that pair all fail
    at run time. A pair that can serve some rows runs; the others count as its errors (comparing
    models of different contexts on one dataset is a fair question)."""
    served = dict.fromkeys((t.name for t in spec.templates), False)
    refused: dict[str, list[str]] = {t.name: [] for t in spec.templates}
    batch: list[tuple[PromptRow, str, PromptRow]] = []

    def measure() -> None:
        counted = tokens.measure([rendered.chat() for _, _, rendered in batch])
        for (row, template, _), result in zip(batch, counted, strict=True):
            if not isinstance(result, InvalidRequest):
                served[template] = True
            elif len(refused[template]) < MAX_REPORTED_ERRORS:
                reason = f"{result.message} ({result.details})" if result.details else result.message
                refused[template].append(f"line {row.line}: {reason[:1].lower() + reason[1:]}")
        batch.clear()

    for row in read_rows(prompts.path):
        if all(served.values()):
            return
        for template in spec.templates:
            if not served[template.name]:
                batch.append((row, template.name, PromptRow(row.id, render(template, row), row.fields, row.line)))
        if len(batch) >= TOKEN_BATCH:
            measure()
    if batch:
        measure()
    _refuse_unserved(served, refused, model)


def _refuse_unserved(served: dict[str, bool], refused: dict[str, list[str]], model: str) -> None:
    for name, ok in served.items():
        if not ok:
            raise InvalidRequest(
                f"No prompt of template {name!r} fits the context of {model}: every row would fail",
                "; ".join(refused[name]),
            )


@dataclass
class EvalPlan:
    spec: EvaluationRequest
    prompts: PromptFile
    providers: dict[str, Provider]
    prices: dict[str, Price]
    reward: RewardModel | None
    scoring: ScoringFn
    scoring_arg: str | None
    baseline: Baseline
    meters: dict[str, Any]  # model id -> winnow.sdg.stages.Meter (usage and budget), may be empty


def build_eval_plan(
    spec: EvaluationRequest,
    prompts: PromptFile,
    models: ModelRegistry,
    rewards: RewardModelRegistry,
    prices: PriceBook,
) -> EvalPlan:
    scoring, arg = resolve_scoring(spec.scoring_function or "raw")
    return EvalPlan(
        spec=spec,
        prompts=prompts,
        providers={m: models.provider(m) for m in spec.models},
        prices={m: prices.for_model(m) for m in spec.models},
        reward=rewards.get(spec.reward_model) if spec.reward_model else None,
        scoring=scoring,
        scoring_arg=arg,
        baseline=baseline(spec),
        meters={},
    )
