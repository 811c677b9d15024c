"""One fine-tuning job on several processes: PyTorch DDP through transformers' Trainer.

The worker (or ``winnow ft run``) starts ``world`` training processes, one per GPU on a CUDA node
(NCCL) or several on CPU (gloo), with the environment ``torchrun`` would give them (RANK,
LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT); each runs :func:`winnow.finetune.trainer.train` on its
share of every batch (the per-process batch is the job's ``batch_size`` divided by ``world``, so the
effective batch, the steps and the checkpoints are those of one process). Rank 0 reports progress
and checkpoints through a pipe to the parent, which writes them to the job's row as a one-process
run does and answers whether the job was cancelled; rank 0 broadcasts that answer at every step so
all ranks stop together. The ranks die with the parent (PR_SET_PDEATHSIG): a killed worker leaves
no process training on, and the next worker resumes from the last recorded checkpoint.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
import traceback
from multiprocessing.connection import Connection, wait
from typing import Any

from winnow.finetune.trainer import Hooks, TrainingRun, TrainResult, train

log = logging.getLogger("winnow.finetune")


def training_processes(setting: int) -> int:
    """Processes one job trains with: the setting, or (0) one per visible GPU, one on CPU."""
    if setting > 0:
        return setting
    import torch

    return max(1, torch.cuda.device_count())


class _PipeHooks:
    """Rank 0's hooks: each call goes to the parent, which owns the job's row, and waits for it."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def progress(self, progress: dict[str, Any], event: dict[str, Any] | None = None) -> bool:
        self.conn.send(("progress", progress, event))
        return bool(self.conn.recv())

    def saved(self, step: int) -> None:
        self.conn.send(("saved", step))
        self.conn.recv()


class _Silent:
    """The other ranks report nothing: rank 0 speaks for the job."""

    def progress(self, progress: dict[str, Any], event: dict[str, Any] | None = None) -> bool:
        return False

    def saved(self, step: int) -> None:
        return None


def _die_with_parent() -> None:
    """SIGKILL this process when the thread that started it ends (Linux); elsewhere the ranks
    notice a dead parent at their next collective call."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _rank_main(rank: int, world: int, port: int, conn: Connection | None, job: dict[str, Any]) -> None:
    _die_with_parent()
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    from winnow.models.providers.transformers import configure_torch_threads

    configure_torch_threads(job["threads"])
    if rank > 0:  # one process's progress bars are enough
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
    hooks: Hooks = _PipeHooks(conn) if conn is not None else _Silent()
    try:
        result = train(job["run"], hooks)
    except BaseException as exc:
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        raise
    _leave_process_group()
    if conn is not None:
        conn.send(("done", result))


def _leave_process_group() -> None:
    """Every rank waits for the others, then takes the process group down, before it exits: a rank
    that exited with the group still up while its peer was mid-teardown could die of gloo's abort
    (a CI run saw rank 1 exit with SIGABRT after the last checkpoint, failing a finished job)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def train_distributed(world: int, run: TrainingRun, hooks: Hooks, torch_threads: int) -> TrainResult:
    """:func:`train` on ``world`` processes; the parent relays rank 0's progress to ``hooks``.
    Raises what ``hooks`` raise (the job lost, say), or RuntimeError when a rank fails; either way
    every rank is stopped before it returns."""
    if torch_threads <= 0:  # split the cores between the ranks (CPU) instead of each taking them all
        torch_threads = max(1, (os.cpu_count() or 2) // world)
    job = {"run": run, "threads": torch_threads}
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    port = _free_port()
    ranks = [
        context.Process(
            target=_rank_main,
            args=(rank, world, port, child if rank == 0 else None, job),
            name=f"winnow-ft-rank{rank}",
        )
        for rank in range(world)
    ]
    for process in ranks:
        process.start()
    child.close()
    try:
        return _relay(parent, ranks, hooks)
    finally:
        for process in ranks:
            if process.is_alive():
                process.kill()
            process.join()
        parent.close()


def _relay(parent: Connection, ranks: list[Any], hooks: Hooks) -> TrainResult:
    """Pass rank 0's messages to ``hooks`` (answering its questions) until every rank has ended;
    its result, or RuntimeError when a rank failed."""
    result: TrainResult | None = None
    running = {process.sentinel: process for process in ranks}
    listening = True
    while running or listening:
        ready = wait([*running, *([parent] if listening else [])])
        if parent in ready:
            try:
                message = parent.recv()
            except EOFError:  # rank 0 ended; its exit code says how
                listening = False
                continue
            kind = message[0]
            if kind == "progress":
                parent.send(hooks.progress(message[1], message[2]))
            elif kind == "saved":
                hooks.saved(message[1])
                parent.send(True)
            elif kind == "done":
                result = message[1]
            elif kind == "error":
                log.error("training process 0 failed:\n%s", message[2])
                raise RuntimeError(message[1])
            continue
        for sentinel in [s for s in ready if s in running]:
            process = running.pop(sentinel)
            process.join()
            if process.exitcode != 0:
                raise RuntimeError(f"training process {process.name} exited with code {process.exitcode}")
    if result is None:
        raise RuntimeError("the training processes ended without a result")
    return result
