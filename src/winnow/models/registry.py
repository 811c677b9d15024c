"""The model registry: configured models, each served by a provider found by name.

Providers come from the ``winnow.providers`` entry-point group (Winnow's built-ins register there
too, see pyproject.toml), so a plugin package adds one with::

    [project.entry-points."winnow.providers"]
    my-backend = "my_pkg.provider:MyProvider"
"""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any

from winnow.config import ModelConfig, Settings
from winnow.errors import ModelNotFound
from winnow.models.base import Provider
from winnow.models.pool import ModelPool
from winnow.models.router import Router
from winnow.plugins import load_group
from winnow.schemas.platform import DeploymentStatus, Model

ENTRY_POINT_GROUP = "winnow.providers"


@cache
def provider_classes() -> dict[str, type[Provider]]:
    """Every provider class by name, from the ``winnow.providers`` entry points."""
    return load_group(
        ENTRY_POINT_GROUP, lambda c: isinstance(c, type) and issubclass(c, Provider), "a Provider subclass"
    )


class ModelRegistry:
    """Configured models by id, each with its provider instance (created once, loaded lazily)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool = ModelPool(settings.local_memory_budget_mb * 1024 * 1024)
        classes = provider_classes()
        self._providers: dict[str, Provider] = {}
        self._configs: dict[str, ModelConfig] = {}
        for config in settings.models:
            if config.id in self._configs:
                raise ValueError(f"model id {config.id!r} is configured twice")
            cls = classes.get(config.provider)
            if cls is None:
                raise ValueError(f"model {config.id!r}: unknown provider {config.provider!r}; known: {sorted(classes)}")
            self._configs[config.id] = config
            self._providers[config.id] = cls(config, settings, pool=self.pool)
        self._wire_routers()

    def _wire_routers(self) -> None:
        """Upstream models route over their deployments and may fall back to one another."""
        self.routers: dict[str, Router] = {}
        for model_id, provider in self._providers.items():
            router = getattr(provider, "router", None)
            if isinstance(router, Router):
                self.routers[model_id] = router
                router.peers = self.routers
        for config in self._configs.values():
            for fallback in {*config.fallbacks, *config.context_window_fallbacks, *config.content_policy_fallbacks}:
                if fallback not in self.routers:
                    raise ValueError(
                        f"model {config.id!r}: fallback {fallback!r} is not a configured upstream model; "
                        f"upstream models: {sorted(self.routers)}"
                    )
            if config.id not in self.routers and (config.deployments or config.fallbacks or config.cache):
                raise ValueError(f"model {config.id!r}: deployments, fallbacks and a cache need provider openai")

    def ids(self) -> list[str]:
        return list(self._configs)

    def config(self, model_id: str) -> ModelConfig:
        try:
            return self._configs[model_id]
        except KeyError:
            raise ModelNotFound(f"Model {model_id!r} not found", f"available: {', '.join(self._configs)}") from None

    def provider(self, model_id: str) -> Provider:
        self.config(model_id)
        return self._providers[model_id]

    async def describe(self, model_id: str) -> Model:
        config = self.config(model_id)
        available = await self._providers[model_id].available()
        return Model(
            id=config.id,
            name=config.name or config.id,
            type=config.type,
            provider="local" if config.provider == "transformers" else config.provider,
            description=config.description,
            status="available" if available else "unavailable",
            capabilities=config.capabilities,
            context_length=config.context_length,
            deployments=[DeploymentStatus(**d) for d in self.routers[model_id].status()]
            if model_id in self.routers
            else None,
        )

    async def describe_all(self) -> list[Model]:
        return list(await asyncio.gather(*(self.describe(model_id) for model_id in self._configs)))

    async def any_available(self) -> bool:
        if not self._configs:
            return True
        return any(m.status == "available" for m in await self.describe_all())

    def deployment_figures(self) -> dict[str, dict[tuple[str, ...], float]]:
        """Per (model, deployment) figures of the routed models, for /metrics."""
        figures: dict[str, dict[tuple[str, ...], float]] = {
            k: {} for k in ("cooling", "in_flight", "requests", "failures", "cooldowns")
        }
        for model_id, router in self.routers.items():
            for d in router.status():
                key = (model_id, d["id"])
                figures["cooling"][key] = 1.0 if d["state"] == "cooldown" else 0.0
                for name in ("in_flight", "requests", "failures", "cooldowns"):
                    figures[name][key] = float(d[name])
        return figures

    def _engines(self) -> dict[str, Any]:
        engines = {}
        for model_id in self.pool.loaded():
            engine = getattr(self.pool.peek(model_id), "engine", None)
            if engine is not None:
                engines[model_id] = engine
        return engines

    def queue_depths(self) -> dict[str, float]:
        """Rows waiting per loaded local model (for /metrics)."""
        return {model_id: float(engine.queue_depth) for model_id, engine in self._engines().items()}

    def batch_totals(self) -> tuple[dict[str, float], dict[str, float]]:
        """Generate calls and rows through them, per loaded local model (for /metrics)."""
        engines = self._engines()
        return (
            {m: float(e.stats.batches) for m, e in engines.items()},
            {m: float(e.stats.rows) for m, e in engines.items()},
        )

    async def close(self) -> None:
        await asyncio.gather(*(p.close() for p in self._providers.values()))
        self.pool.clear()
