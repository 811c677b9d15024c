"""What a model costs per token: its own configured prices, else the config's price table, else
Winnow's default table for well-known commercial models (``prices.json``, dated), else nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from winnow.config import ModelConfig, Settings


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float = 0.0
    output: float = 0.0

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input + output_tokens * self.output) / 1e6


@lru_cache(maxsize=1)
def default_table() -> dict[str, Any]:
    """The shipped table: ``{"as_of": date, "models": {name: {"input", "output"}}}``."""
    loaded: dict[str, Any] = json.loads(resources.files("winnow.usage").joinpath("prices.json").read_text())
    return loaded


class PriceBook:
    def __init__(self, settings: Settings) -> None:
        table = {name: Price(**p) for name, p in default_table()["models"].items()}
        table.update({name: Price(p.input, p.output) for name, p in settings.prices.items()})
        self.table = table
        self.as_of: str = default_table()["as_of"]
        self._by_model = {config.id: self._resolve(config) for config in settings.models}

    def _resolve(self, config: ModelConfig) -> Price:
        listed = self.table.get(config.upstream_model or config.id) or self.table.get(config.id) or Price()
        return Price(
            listed.input if config.input_price_per_mtok is None else config.input_price_per_mtok,
            listed.output if config.output_price_per_mtok is None else config.output_price_per_mtok,
        )

    def for_model(self, model_id: str) -> Price:
        return self._by_model.get(model_id) or self.table.get(model_id) or Price()
