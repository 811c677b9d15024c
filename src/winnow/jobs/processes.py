"""The worker processes ``winnow serve`` starts, so that jobs never run on the API's event loop."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys

import yaml

from winnow.config import CONFIG_ENV_VAR, Settings

log = logging.getLogger("winnow.worker")


class WorkerProcesses:
    """``settings.workers`` copies of ``winnow worker --parent-pid <this pid>``, configured like this process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        if not self.settings.workers:
            return
        config = self.settings.data_dir / "worker-config.yaml"
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            yaml.safe_dump(self.settings.dump_for_child(), handle)
        env = {**os.environ, CONFIG_ENV_VAR: str(config)}
        for name in list(env):  # the file holds the effective settings; env must not override them
            if name.startswith("WINNOW_") and name != CONFIG_ENV_VAR:
                del env[name]
        self._command = [sys.executable, "-m", "winnow", "worker", "--parent-pid", str(os.getpid())]
        self._env = env
        self.procs = [self._spawn() for _ in range(self.settings.workers)]
        log.info("started %d worker process(es): %s", len(self.procs), [p.pid for p in self.procs])

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self._command, env=self._env)

    def supervise(self) -> None:
        """Replace workers that died (a killed worker's job is resumed by its successor)."""
        for i, proc in enumerate(self.procs):
            if proc.poll() is not None:
                log.warning("worker %d exited with %s; starting another", proc.pid, proc.returncode)
                self.procs[i] = self._spawn()

    async def supervise_forever(self, every_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(every_s)
            self.supervise()

    def stop(self, timeout: float = 10.0) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs = []
