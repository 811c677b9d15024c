"""The job kinds: what the store and the worker need to know of each (id prefix, how to run it,
how to show it), filled by each kind's own package. A new kind is one module in its package that
defines a ``JobKind`` and one line in ``REGISTRY``; nothing in ``winnow.jobs`` imports a kind."""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from winnow.db import Job
    from winnow.jobs.shards import ShardClaim
    from winnow.jobs.worker import Worker

# One line per kind: the name stored in ``jobs.kind`` -> "module:attribute" of its JobKind (imported
# when first needed, so that the job core never imports a kind).
REGISTRY: dict[str, str] = {
    "sdg": "winnow.sdg.job:SDG",
    "eval": "winnow.evals.job:EVALUATION",
    "ft": "winnow.finetune.job:FINE_TUNING",
    "batch": "winnow.batches.job:BATCH",
}

RunWhole = Callable[["Worker", "Job", threading.Event], Awaitable[None]]
RunShard = Callable[["Worker", "ShardClaim", "Job"], Awaitable[None]]
Merge = Callable[["Worker", "Job"], Awaitable[None]]


def id_pattern(prefix: str) -> str:
    """The pattern of a kind's ids: ``<prefix>-`` and 24 hex digits."""
    return rf"^{prefix}-[0-9a-f]{{24}}$"


@dataclass(frozen=True)
class JobKind:
    """One kind of job. A whole job (``run``) is held by one worker under the job's lease; a sharded one
    (``run_shard`` and ``merge``) is cut into shards that workers claim, then merged by one of them.
    ``run`` gets an event that the heartbeat sets when the job's cancellation is requested."""

    name: str
    prefix: str
    noun: str  # what people call it: "Fine-tuning job"
    output: str  # the output's name in the job's folder
    render: Callable[[Job], Any]  # the job's row as the API shows it
    run: RunWhole | None = None
    run_shard: RunShard | None = None
    merge: Merge | None = None
    on_failure: Callable[[Worker, Job, Exception], None] | None = None  # before the job is marked failed

    @property
    def sharded(self) -> bool:
        return self.run_shard is not None

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile(id_pattern(self.prefix))


@cache
def kind(name: str) -> JobKind:
    """The registered kind called ``name`` (imported on first use)."""
    module, _, attribute = REGISTRY[name].partition(":")
    found: JobKind = getattr(importlib.import_module(module), attribute)
    return found


def names(sharded: bool) -> tuple[str, ...]:
    """The kinds whose jobs are sharded (or, ``sharded`` False, held whole)."""
    return tuple(name for name in REGISTRY if kind(name).sharded == sharded)
