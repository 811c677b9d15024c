"""What every local-model provider shares: files on disk, a lazy load into the ModelPool, status."""

from __future__ import annotations

import abc
import asyncio
import logging
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from winnow.config import ModelConfig, Settings
from winnow.errors import ServiceUnavailable, WinnowError
from winnow.models.base import Provider
from winnow.models.pool import ModelPool

log = logging.getLogger("winnow.models")


def weights_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.safetensors")) + sum(f.stat().st_size for f in path.glob("*.bin"))


def local_files_present(config: ModelConfig) -> bool:
    """The model directory has a config and weights (and the adapter directory exists, if any)."""
    from winnow.models.gguf import gguf_present

    source = config.path or config.base_model
    if not source:
        return False
    if gguf_present(config):
        return True  # converted on first use
    path = Path(source)
    if not path.is_dir() or not (path / "config.json").is_file() or weights_bytes(path) == 0:
        return False
    return not config.adapter_path or Path(config.adapter_path).is_dir()


class Loaded(Protocol):
    nbytes: int


M = TypeVar("M", bound=Loaded)


class LocalProvider(Provider, Generic[M], abc.ABC):
    """A provider whose model loads (blocking, in a thread, once) into the shared ModelPool."""

    def __init__(self, config: ModelConfig, settings: Settings, pool: ModelPool | None = None) -> None:
        super().__init__(config, settings, pool)
        self._load_error: str | None = None

    @abc.abstractmethod
    def open(self) -> M:
        """Load the model (blocking); raise to report why it cannot be."""

    def missing(self) -> str | None:
        """What this process lacks to load the model (a package), or None."""
        return None

    def loaded(self) -> M:
        """The loaded model (blocking load on first use)."""

        def load() -> tuple[M, int]:
            try:
                model = self.open()
            except Exception as exc:
                self._load_error = f"{type(exc).__name__}: {exc}"
                log.exception("failed to load %s (%s)", self.config.id, self.name)
                raise
            self._load_error = None
            return model, model.nbytes

        expected = weights_bytes(Path(self.config.path or self.config.base_model or "."))
        loaded: M = self.pool.get(self.config.id, load, expected)
        return loaded

    async def _model(self) -> M:
        resident: M | None = self.pool.peek(self.config.id)
        if resident is not None:  # the hot path: no thread hop
            return resident
        if (missing := self.missing()) is not None:
            raise ServiceUnavailable(f"Model {self.config.id!r} cannot be loaded here", missing)
        try:
            return await asyncio.to_thread(self.loaded)
        except WinnowError:
            raise
        except Exception as exc:
            raise ServiceUnavailable(f"Model {self.config.id!r} could not be loaded", str(exc)) from exc

    async def available(self) -> bool:
        if self.missing() is not None or not local_files_present(self.config):
            return False
        if self.config.id in self.pool.loaded():
            return True
        return self._load_error is None

    async def warm(self) -> None:
        await self._model()

    async def close(self) -> None:
        self.pool.evict(self.config.id)
