"""A local transformers model in an engine process of its own (``options.engine: process``).

On a small model, ``model.generate`` is mostly Python: its loop holds the GIL as much as the forward
passes do. In the server's process it takes turns with the event loop (HTTP, auth, JSON, usage), so
a served model reached a fraction of what one bare batched call does. Here the model runs in a child
process, the way vLLM runs its engine core: the server's event loop sends each call to the child and
awaits the answer, while the child batches concurrent calls with the same ``BatchingEngine``.

Wire: a Unix socket pair, one end in each process, carrying length-prefixed pickled lists of
messages between two processes of the same Winnow on one machine. Each side sends what one turn of
its event loop produced as one frame (``Channel.put``): the 32 requests that a finished batch's clients
send back at once reach the engine together and land in one batch. A socket pair and the event
loops' own transports, not ZeroMQ: measured here, ZeroMQ's I/O threads put two more thread
wake-ups on each leg (a round trip of ~300 us against ~100 us), and a served call at one
connection pays two legs.

    parent -> child   ("generate", rid, prompts, params) | ("stream", rid, prompt, params) | ("abort", rid)
    child -> parent   ("result", rid, results | None, error | None, (batches, rows))
                      ("delta", rid, StreamDelta) | ("end", rid, error | None)

Errors cross as ``(class name, message, details, param)`` and are rebuilt as the same Winnow error.
The child reads its spec from stdin, tells the parent it is ready (or why it failed to load) in one
JSON line on its stdout, and exits when its end of the pair sees the parent's close: when the parent
exits, however it exits. An engine that dies fails the calls in flight with a 503; the next call
starts a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import pickle
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from winnow import errors, telemetry
from winnow.config import ModelConfig, Settings
from winnow.errors import ServiceUnavailable, WinnowError
from winnow.models.base import GenerationResult, Prompt, SamplingParams, StreamDelta
from winnow.models.batching import BatchStats, merge_params
from winnow.models.prompts import requests_for

log = logging.getLogger("winnow.models")

# What the child needs of the settings (the rest of Settings never reaches it).
_CHILD_SETTINGS = ("local_torch_threads", "local_max_batch_rows", "local_batch_wait_ms", "switch_interval_ms")
_HEADER = struct.Struct("<I")

PackedError = tuple[str, str, "str | None", "str | None"]
Message = tuple[Any, ...]


def pack_error(exc: BaseException) -> PackedError:
    """An exception as plain data: Winnow's own keep their class; anything else is an internal error."""
    if isinstance(exc, WinnowError):
        return (type(exc).__name__, exc.message, exc.details, exc.param)
    return ("WinnowError", f"{type(exc).__name__}: {exc}", None, None)


def unpack_error(packed: PackedError) -> WinnowError:
    name, message, details, param = packed
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, WinnowError)):
        cls = WinnowError
    exc = cls.__new__(cls)
    WinnowError.__init__(exc, message, details, param=param)  # the subclasses' own signatures vary
    return exc


class Channel(asyncio.Protocol):
    """One end of the pair on an event loop: frames in, each frame's messages to ``on_message``;
    ``put`` queues a message, and a turn's messages leave as one frame at the turn's end."""

    def __init__(self, on_message: Callable[[Message], None], on_lost: Callable[[], None]) -> None:
        self._on_message = on_message
        self._on_lost = on_lost
        self._buffer = bytearray()
        self._outbox: list[Message] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        while len(buffer) - start >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buffer, start)
            end = start + _HEADER.size + size
            if len(buffer) < end:
                break
            messages = pickle.loads(memoryview(buffer)[start + _HEADER.size : end])
            start = end
            for message in messages:
                try:
                    self._on_message(message)
                except Exception:  # one bad message must not stop the channel
                    log.exception("engine channel: could not handle %r", message[:2])
        del buffer[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._on_lost()

    def put(self, message: Message) -> None:
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append(message)

    def _flush(self) -> None:
        messages, self._outbox = self._outbox, []
        if self.transport is not None and not self.transport.is_closing():
            payload = pickle.dumps(messages, pickle.HIGHEST_PROTOCOL)
            self.transport.write(_HEADER.pack(len(payload)) + payload)


class EngineProcess:
    """The parent's handle on one model's engine process; it stands in the ModelPool where a
    ``LoadedModel`` would, with the same ``generate`` and ``stream``."""

    def __init__(self, config: ModelConfig, settings: Settings) -> None:
        self.model_id = config.id
        self._sock, child_end = socket.socketpair()
        spec = {
            "config": config.model_dump(mode="json"),
            "settings": {name: getattr(settings, name) for name in _CHILD_SETTINGS},
            "fd": child_end.fileno(),
        }
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "winnow.models.engine_process_main"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                pass_fds=(child_end.fileno(),),
            )
        finally:
            child_end.close()
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(spec).encode() + b"\n")
        self._proc.stdin.close()
        hello_line = self._proc.stdout.readline()  # blocks until the model is loaded (or failed)
        self._proc.stdout.close()
        hello = json.loads(hello_line) if hello_line.strip() else None
        if not hello or not hello.get("ok"):
            self._proc.kill()
            self._proc.wait()
            self._sock.close()
            raise RuntimeError(hello["error"] if hello else f"the engine process exited ({self._proc.returncode})")
        self.nbytes: int = int(hello["nbytes"])
        self.pid = self._proc.pid
        self.exited: str | None = None  # why the engine is gone, once it is
        self.stats = BatchStats()  # the child's batch counts, as its answers report them
        self._rows_in_flight = 0
        self._ids = itertools.count()
        self._pending: dict[int, asyncio.Future[list[GenerationResult]]] = {}
        self._streams: dict[int, asyncio.Queue[Message]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._channel: Channel | None = None

    # -- what the registry's metrics read (as from a BatchingEngine) ------------------------------
    @property
    def engine(self) -> EngineProcess:
        return self

    @property
    def queue_depth(self) -> int:
        """Rows sent to the engine process and not answered yet (waiting or running)."""
        return self._rows_in_flight

    # -- the provider interface ---------------------------------------------------------------------
    async def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[GenerationResult]:
        channel = await self._connected()
        rid = next(self._ids)
        future: asyncio.Future[list[GenerationResult]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        rows = len(prompts) * params.n
        self._rows_in_flight += rows
        try:
            with telemetry.span("engine.process", {"winnow.batch.rows": rows}):  # the round trip to the engine
                channel.put(("generate", rid, list(prompts), params))
                return await future
        finally:
            self._pending.pop(rid, None)
            self._rows_in_flight -= rows

    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[StreamDelta]:
        channel = await self._connected()
        rid = next(self._ids)
        queue: asyncio.Queue[Message] = asyncio.Queue()
        self._streams[rid] = queue
        finished = False
        try:
            channel.put(("stream", rid, prompt, params))
            while True:
                message = await queue.get()
                if message[0] == "delta":
                    yield message[2]
                    continue
                finished = True
                if message[2] is not None:
                    raise unpack_error(message[2])
                return
        finally:
            self._streams.pop(rid, None)
            if not finished and self.exited is None:  # the client went away: stop generating
                channel.put(("abort", rid))

    def close(self) -> None:
        """Stop the engine process (the pool calls it on eviction and at shutdown)."""
        self.exited = self.exited or "was stopped"
        if self._proc.poll() is None:
            self._proc.terminate()
        with_loop, channel = self._loop, self._channel
        if with_loop is not None and channel is not None and channel.transport is not None:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                with_loop.call_soon_threadsafe(channel.transport.close)
        self._sock.close()

    # -- plumbing -----------------------------------------------------------------------------------
    async def _connected(self) -> Channel:
        if self.exited is not None:
            raise ServiceUnavailable(f"Model {self.model_id!r} is unavailable", f"its engine process {self.exited}")
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._channel is None or self._channel.transport is None:
            # A transport belongs to one loop: each loop that calls gets its own duplicate of the
            # socket; whatever an earlier loop was waiting for is answered there no more.
            if self._channel is not None and self._channel.transport is not None and self._loop is not None:
                self._fail_all("was called from another event loop")
                old = self._channel.transport
                with_loop = self._loop
                if not with_loop.is_closed():
                    with_loop.call_soon_threadsafe(old.close)
            self._loop = loop
            channel = Channel(self._dispatch, lambda: self._lost(channel))
            self._channel = channel
            await loop.create_connection(lambda: channel, sock=self._sock.dup())
        return self._channel

    def _dispatch(self, message: Message) -> None:
        kind, rid = message[0], message[1]
        if kind == "result":
            _, _, results, error, (batches, rows) = message
            self.stats.batches, self.stats.rows = batches, rows
            future = self._pending.get(rid)
            if future is None or future.done():
                return
            if error is not None:
                future.set_exception(unpack_error(error))
                return
            for result in results:
                if result.error is not None:
                    result.error = unpack_error(result.error)
            future.set_result(results)
        elif (queue := self._streams.get(rid)) is not None:
            queue.put_nowait(message)

    def _lost(self, channel: Channel) -> None:
        """A channel's socket closed: the child exited (or was stopped), unless this is a channel
        an earlier event loop used."""
        if channel is not self._channel:
            return
        self._channel = None
        if self.exited is None:
            code = self._proc.poll()
            self.exited = f"exited with code {code}" if code is not None else "closed its channel"
            log.error("engine process of %s (pid %s) %s", self.model_id, self._proc.pid, self.exited)
            if code is None:
                self._proc.kill()
        self._fail_all(self.exited)

    def _fail_all(self, why: str) -> None:
        error = ServiceUnavailable(f"Model {self.model_id!r} is unavailable", f"its engine process {why}")
        for future in list(self._pending.values()):
            if not future.done():
                future.set_exception(error)
        for queue in list(self._streams.values()):
            queue.put_nowait(("end", -1, pack_error(error)))


# -- the child ---------------------------------------------------------------------------------------
Call = tuple[int, list[Prompt], SamplingParams]


class _Engine:
    """The child's side: the generate calls a frame brought go to the batching engine as one
    submission (one future, not a task per call; each request keeps its own sampling parameters
    and seed), and their results go back split per call; streams run one task each."""

    def __init__(self, model: Any, done: asyncio.Future[None]) -> None:
        self.model = model
        self.done = done
        self.channel = Channel(self.on_message, self.on_lost)
        self.streams: dict[int, asyncio.Task[None]] = {}
        self.calls: list[Call] = []

    def on_message(self, message: Message) -> None:
        kind, rid = message[0], message[1]
        loop = asyncio.get_running_loop()
        if kind == "generate":
            if not self.calls:
                loop.call_soon(self._submit_calls)  # after the rest of this frame's messages
            self.calls.append((rid, message[2], message[3]))
        elif kind == "stream":
            self.streams[rid] = loop.create_task(self.stream(rid, message[2], message[3]))
        elif kind == "abort" and (task := self.streams.pop(rid, None)) is not None:
            task.cancel()  # a generate call's batch runs on: the parent drops its answer

    def on_lost(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def _submit_calls(self) -> None:
        calls, self.calls = self.calls, []
        asyncio.get_running_loop().create_task(self.generate(calls))

    async def generate(self, calls: list[Call]) -> None:
        stats, send = self.model.engine.stats, self.channel.put
        requests = [request for _, prompts, params in calls for request in requests_for(prompts, params)]
        try:
            results = await self.model.submit(requests, merge_params([params for _, _, params in calls]))
        except Exception as exc:
            for rid, _, _ in calls:
                send(("result", rid, None, pack_error(exc), (stats.batches, stats.rows)))
            return
        for result in results:
            if result.error is not None:
                result.error = pack_error(result.error)
        offset = 0
        for rid, prompts, _ in calls:
            send(("result", rid, results[offset : offset + len(prompts)], None, (stats.batches, stats.rows)))
            offset += len(prompts)

    async def stream(self, rid: int, prompt: Prompt, params: SamplingParams) -> None:
        error = None
        try:
            async for delta in self.model.stream(prompt, params):
                self.channel.put(("delta", rid, delta))
        except asyncio.CancelledError:
            return  # aborted: the parent stopped listening
        except Exception as exc:
            error = pack_error(exc)
        finally:
            self.streams.pop(rid, None)
        self.channel.put(("end", rid, error))


async def serve_model(model: Any, fd: int) -> None:
    loop = asyncio.get_running_loop()
    engine = _Engine(model, loop.create_future())
    await loop.create_connection(lambda: engine.channel, sock=socket.socket(fileno=fd))
    await engine.done  # the parent closed its end, or exited
