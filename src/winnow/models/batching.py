"""Dynamic batching: concurrent requests for one local model are gathered into one padded ``generate``.

Requests queue up while a batch runs; the next batch takes everything compatible that is waiting
(up to ``max_batch_rows`` rows, each prompt x n counts as n rows). Before a batch starts it waits
for as many rows as the last batch had or left waiting (the clients of a batch send their next
requests together, a few at a time as the server reads them): the first up to ``max_wait_ms`` (or
5% of the last batch's run, if longer), then until 2 ms pass without an arrival. So a wave of
concurrent clients lands in one batch and a lone client waits for no one. Items carry their own
max_tokens, n, stop and (for the local engines) sampling parameters and seeds, so any requests may
batch together unless the engine gives a ``key`` that parts them; the batch runs to the longest
max_tokens among them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from winnow import telemetry
from winnow.models.base import SamplingParams

_POLL_S = 0.0005
_LULL_S = 0.002  # 2 ms without an arrival ends the wait for company
_WAIT_SHARE = 0.05  # of the last batch's run time: the longest wait for company, if above max_wait
Item = TypeVar("Item")
Out = TypeVar("Out")


def any_batch(_params: SamplingParams) -> tuple[object, ...]:
    """The default batch key: every request may share a batch."""
    return ()


@dataclass
class _Pending(Generic[Item, Out]):
    items: list[Item]
    params: SamplingParams
    rows: int
    future: asyncio.Future[list[Out]]
    enqueued: float = field(default_factory=time.perf_counter)
    taken: float = 0.0  # when its batch was made, began generating, ended (for traces)
    started: float = 0.0
    ended: float = 0.0
    batch_rows: int = 0


@dataclass
class BatchStats:
    """Generate calls and rows through them (the mean batch size is rows / batches)."""

    batches: int = 0
    rows: int = 0


class BatchingEngine(Generic[Item, Out]):
    """Runs ``run(items, params) -> outputs`` (blocking, on ``executor``) over gathered batches."""

    def __init__(
        self,
        run: Callable[[list[Item], SamplingParams], list[Out]],
        executor: Executor,
        rows_of: Callable[[Item], int],
        max_batch_rows: int = 64,
        max_wait_ms: float = 2.0,
        key: Callable[[SamplingParams], tuple[object, ...]] = any_batch,
    ) -> None:
        """``key``: requests whose params share it may run in one batch (by default, all)."""
        self._run = run
        self._key = key
        self._executor = executor
        self._rows_of = rows_of
        self.max_batch_rows = max_batch_rows
        self.max_wait_s = max_wait_ms / 1000
        self._queue: list[_Pending[Item, Out]] = []
        self._queued_rows = 0
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self.stats = BatchStats()
        self._last_rows = 1  # the company the next batch waits for (see _serve)
        self._last_run_s = 0.0

    @property
    def queue_depth(self) -> int:
        """Rows waiting (kept as a counter: the batcher polls it while a wave of requests arrives)."""
        return self._queued_rows

    async def submit(self, items: Sequence[Item], params: SamplingParams) -> list[Out]:
        """Outputs for ``items`` in order; large submissions are split into batches."""
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            self._wakeup = asyncio.Event()
            self._worker = loop.create_task(self._serve(), name="winnow-batching")
        pending: list[_Pending[Item, Out]] = []
        chunk: list[Item] = []
        rows = 0
        for item in items:
            item_rows = self._rows_of(item)
            if chunk and rows + item_rows > self.max_batch_rows:
                pending.append(_Pending(chunk, params, rows, loop.create_future()))
                chunk, rows = [], 0
            chunk.append(item)
            rows += item_rows
        if chunk:
            pending.append(_Pending(chunk, params, rows, loop.create_future()))
        self._queue.extend(pending)
        self._queued_rows += sum(p.rows for p in pending)
        assert self._wakeup is not None
        self._wakeup.set()
        results = await asyncio.gather(*(p.future for p in pending))
        if telemetry.enabled():
            for p in pending:
                telemetry.engine_spans(p.enqueued, p.taken, p.started, p.ended, p.batch_rows)
        return [out for part in results for out in part]

    async def _gather_company(self) -> None:
        """Wait for the company a batch should have: as many rows as were in the last batch or
        waiting when it ended (a closed loop of clients comes back together; one client waits for
        no one). The first of them may take up to max_wait (or 5% of the last batch's run, if
        longer: a long batch can afford it, and a full batch instead of a half one repays it many
        times over) to arrive; after that, ``_LULL_S`` without an arrival ends the wait."""
        now = time.perf_counter()
        deadline = now + max(self.max_wait_s, _WAIT_SHARE * self._last_run_s)
        target = min(self._last_rows, self.max_batch_rows)
        seen, last_arrival = self.queue_depth, None
        while seen < target and now < deadline and (last_arrival is None or now - last_arrival < _LULL_S):
            # (uvloop's timers count whole milliseconds: a 0.5 ms sleep may return at once, so
            # the waits are measured on the clock, not in polls)
            await asyncio.sleep(_POLL_S)
            now = time.perf_counter()
            if self.queue_depth != seen:
                seen, last_arrival = self.queue_depth, now

    def _take_batch(self) -> list[_Pending[Item, Out]]:
        first = self._queue[0]
        key = self._key(first.params)
        batch: list[_Pending[Item, Out]] = []
        rows = 0
        for pending in self._queue:
            if self._key(pending.params) != key or (batch and rows + pending.rows > self.max_batch_rows):
                continue
            batch.append(pending)
            rows += pending.rows
        taken = {id(p) for p in batch}
        self._queue = [p for p in self._queue if id(p) not in taken]
        self._queued_rows -= rows
        return batch

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wakeup is not None
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._gather_company()
            taken = time.perf_counter()
            batch = self._take_batch()
            items = [item for pending in batch for item in pending.items]
            merged = merge_params([p.params for p in batch])
            started = time.perf_counter()
            try:
                outputs = await loop.run_in_executor(self._executor, self._run, items, merged)
            except Exception as exc:  # the whole batch failed: every caller hears why
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                continue
            self._last_run_s = time.perf_counter() - started
            rows = sum(p.rows for p in batch)
            self.stats.batches += 1
            self.stats.rows += rows
            # The company for the next batch: this batch's callers, who may come back together,
            # and those who arrived while it ran (waiting now). Without the latter a closed loop
            # of 32 clients settles into two cohorts of 16 that never meet.
            self._last_rows = rows + self._queued_rows
            offset = 0
            ended = time.perf_counter()
            for pending in batch:
                pending.taken, pending.started, pending.ended, pending.batch_rows = taken, started, ended, rows
                if not pending.future.done():
                    pending.future.set_result(outputs[offset : offset + len(pending.items)])
                offset += len(pending.items)


def merge_params(params: list[SamplingParams]) -> SamplingParams:
    """The batch's parameters as one (the first's distribution; the longest max_tokens bounds it):
    engines that sample per item read their items' own."""
    first = params[0]
    return SamplingParams(
        max_tokens=max(p.max_tokens for p in params),
        temperature=first.temperature,
        top_p=first.top_p,
        n=1,
        seed=first.seed,
    )
