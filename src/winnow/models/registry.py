"""The model registry: configured models, each served by a provider found by name, and the models
fine-tuning jobs made (the ``fine_tuned_models`` table, read again every ``SYNC_S`` seconds and on
any unknown id, so every process serves a new model at once and drops a deleted one).

Providers come from the ``winnow.providers`` entry-point group (Winnow's built-ins register there
too, see pyproject.toml), so a plugin package adds one with::

    [project.entry-points."winnow.providers"]
    my-backend = "my_pkg.provider:MyProvider"
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextvars import ContextVar
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from winnow.config import ModelConfig, Settings
from winnow.errors import ModelNotFound
from winnow.models.base import Provider
from winnow.models.embedding import task_of
from winnow.models.pool import ModelPool
from winnow.models.router import Router
from winnow.plugins import load_group
from winnow.requests import context as request_context
from winnow.schemas.platform import DeploymentStatus, Model

if TYPE_CHECKING:
    from winnow.db import Database

ENTRY_POINT_GROUP = "winnow.providers"
SYNC_S = 2.0
log = logging.getLogger("winnow.models")

# The key a request acts for (id, is_admin), set when it authenticates: a fine-tuned model is seen
# only by the key whose job made it, and by admins. Work outside a request (a worker running a job
# whose submit was checked) has none and sees every model.
_CALLER: ContextVar[tuple[int, bool] | None] = ContextVar("winnow_caller", default=None)


def acting_for(key_id: int, is_admin: bool) -> None:
    """Model lookups in this request (this context) are made for this key."""
    _CALLER.set((key_id, is_admin))


@cache
def provider_classes() -> dict[str, type[Provider]]:
    """Every provider class by name, from the ``winnow.providers`` entry points."""
    return load_group(
        ENTRY_POINT_GROUP, lambda c: isinstance(c, type) and issubclass(c, Provider), "a Provider subclass"
    )


def spec_type(config: ModelConfig) -> Literal["commercial", "fine-tuned"]:
    """The platform spec's ``type`` (commercial or fine-tuned): an embedding model is commercial when
    an upstream serves it, else fine-tuned, as every local model is."""
    if config.type != "embedding":
        return config.type
    return "commercial" if config.provider == "openai" else "fine-tuned"


class ModelRegistry:
    """Configured models by id, each with its provider instance (created once, loaded lazily)."""

    def __init__(self, settings: Settings, db: Database | None = None) -> None:
        self.settings = settings
        self.db = db
        self.pool = ModelPool(settings.local_memory_budget_mb * 1024 * 1024)
        self._providers: dict[str, Provider] = {}
        self._configs: dict[str, ModelConfig] = {}
        self._owners: dict[str, int] = {}  # fine-tuned model id -> the key that made it
        self._synced_at = -SYNC_S
        for config in settings.models:
            if config.id in self._configs:
                raise ValueError(f"model id {config.id!r} is configured twice")
            self._add(config)
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

    def _add(self, config: ModelConfig) -> None:
        classes = provider_classes()
        cls = classes.get(config.provider)
        if cls is None:
            raise ValueError(f"model {config.id!r}: unknown provider {config.provider!r}; known: {sorted(classes)}")
        self._configs[config.id] = config
        self._providers[config.id] = cls(config, self.settings, pool=self.pool)

    def sync(self, force: bool = False) -> None:
        """Take in the fine-tuned models added or deleted since the last look (at most every SYNC_S)."""
        now = time.monotonic()
        if self.db is None or (not force and now - self._synced_at < SYNC_S):
            return
        self._synced_at = now
        from sqlalchemy import select

        from winnow.db import FineTunedModel

        with self.db.session() as session:
            rows = session.execute(select(FineTunedModel.id, FineTunedModel.owner_key_id, FineTunedModel.config)).all()
        seen = set()
        for model_id, owner, raw in rows:
            seen.add(model_id)
            if model_id not in self._configs:
                try:
                    self._add(ModelConfig.model_validate(raw))
                except ValueError:
                    log.exception("fine-tuned model %s cannot be served", model_id)
                    continue
                self._owners[model_id] = int(owner)
        for model_id in [m for m in self._owners if m not in seen]:
            self.forget(model_id)

    def forget(self, model_id: str) -> None:
        """Stop serving a fine-tuned model (it was deleted)."""
        self._owners.pop(model_id, None)
        self._configs.pop(model_id, None)
        self._providers.pop(model_id, None)
        self.pool.evict(model_id)

    def owner(self, model_id: str) -> int | None:
        """The key that made a fine-tuned model; None for a configured one."""
        return self._owners.get(model_id)

    def _visible(self, model_id: str) -> bool:
        owner = self._owners.get(model_id)
        caller = _CALLER.get()
        return owner is None or caller is None or caller[1] or caller[0] == owner

    def ids(self) -> list[str]:
        """The models this caller may use (a listing reads the database: it is never stale)."""
        self.sync(force=True)
        return [m for m in self._configs if self._visible(m)]

    def config(self, model_id: str) -> ModelConfig:
        self.sync(force=model_id not in self._configs)
        config = self._configs.get(model_id)
        if config is None or not self._visible(model_id):
            raise ModelNotFound(f"Model {model_id!r} not found", f"available: {', '.join(self.ids())}") from None
        return config

    def provider(self, model_id: str) -> Provider:
        request_context.model(model_id)  # the model a logged request asked for, found or not
        self.config(model_id)
        return self._providers[model_id]

    async def describe(self, model_id: str) -> Model:
        config = self.config(model_id)
        available = await self._providers[model_id].available()
        return Model(
            id=config.id,
            name=config.name or config.id,
            type=spec_type(config),
            task=task_of(config),
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
        return list(await asyncio.gather(*(self.describe(model_id) for model_id in self.ids())))

    async def any_available(self) -> bool:
        if not self._configs:
            return True  # nothing configured: nothing to be unavailable
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
