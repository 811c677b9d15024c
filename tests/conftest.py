"""Shared fixtures: isolated settings, the ASGI app with its lifespan, keys, a real server."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from winnow.api import create_app
from winnow.config import CHAT_MODEL_ID, CONFIG_ENV_VAR, Settings, default_models
from winnow.runtime import Runtime
from winnow.sdg.workfiles import FileCheckpoint
from winnow.usage.recorder import UsageEvent

ROOT = Path(__file__).resolve().parents[1]
DEMO_LM = ROOT / "examples" / "models" / "demo-lm"
DEMO_PROMPTS = ROOT / "examples" / "prompts" / "arithmetic.jsonl"
POSTGRES_URL = os.environ.get("WINNOW_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
T = TypeVar("T")
REDIS_URL = os.environ.get("WINNOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


# CI sets this: a test that would skip for want of PostgreSQL, Redis, Ray or the shared specs fails
# instead, so a green CI run means those tests ran. Skips CI cannot avoid (no GPU for vLLM, another
# platform) stay skips.
REQUIRE_SERVICES = os.environ.get("WINNOW_TEST_REQUIRE_SERVICES") == "1"
_SKIPS_CI_MAY_TAKE = ("vLLM", "the +cpu build is Linux's")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--all",
        action="store_true",
        help="also run the tests marked slow (process-level and scale tests; CI runs them all)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The default run is the fast set: tests marked ``slow`` are deselected unless ``--all`` (or a
    ``-m`` expression, which then decides). A test on PostgreSQL is slow wherever it is declared:
    the fast set runs on SQLite."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgresql = "postgres_url" in item.fixturenames or (
            callspec is not None and "postgresql" in callspec.params.values()
        )
        if on_postgresql:
            item.add_marker(pytest.mark.slow)
    if config.getoption("--all") or config.getoption("markexpr"):
        return
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if item.get_closest_marker("slow") is None]


def pytest_report_header(config: pytest.Config) -> str:
    if config.getoption("--all") or config.getoption("markexpr"):
        return "winnow: every selected test runs, slow ones included"
    return "winnow: the fast set (tests marked slow are deselected; scripts/test --all runs them too)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if not (REQUIRE_SERVICES and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if not any(allowed in reason for allowed in _SKIPS_CI_MAY_TAKE):
        report.outcome = "failed"
        report.longrepr = f"would skip where CI must run it (WINNOW_TEST_REQUIRE_SERVICES=1): {reason}"


@pytest.fixture(scope="session")
def demo_only_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded defaults without the shipped chat model (as JSON, which is YAML): demo-lm and
    the embedding model minilm-l6, which loads in a second and only where a test embeds."""
    config = tmp_path_factory.mktemp("config") / "demo-only.yaml"
    demo = [m.model_dump(mode="json", exclude_defaults=True) for m in default_models() if m.id != CHAT_MODEL_ID]
    config.write_text(json.dumps({"models": demo}))
    # Set for the whole session, so that module-scoped servers (started before a test's own
    # fixtures) run on it too; each test restores it (``_isolated_env``).
    os.environ[CONFIG_ENV_VAR] = str(config)
    return config


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, demo_only_config: Path) -> Iterator[None]:
    """No developer's WINNOW_* variables leak into a test, nor a test's into the next
    (``--config`` sets WINNOW_CONFIG for the processes a command starts). An app a test starts
    runs no ``winnow worker`` processes unless the test asks (``workers=N``, or WINNOW_WORKERS in a
    LiveServer's env): the default of one would start a process that loads torch for nothing.
    Tests start with the config ``demo_only_config``, so that their servers do not convert and load
    the shipped chat model (smollm2-135m) unless a test asks for it; a test's own config replaces it."""
    for name in list(os.environ):
        if name.startswith("WINNOW_") and not name.startswith("WINNOW_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("WINNOW_WORKERS", "0")
    monkeypatch.setenv(CONFIG_ENV_VAR, str(demo_only_config))
    yield
    os.environ[CONFIG_ENV_VAR] = str(demo_only_config)  # whatever the test (or a CLI's --config) set


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded defaults in a fresh data dir; no worker processes (tests that need one ask)."""
    return Settings(data_dir=tmp_path / "data", workers=0)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def runtime(client: TestClient) -> Runtime:
    rt: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    return rt


@pytest.fixture
def admin_key(runtime: Runtime) -> str:
    return runtime.keys.create("admin", admin=True).key


@pytest.fixture
def user_key(runtime: Runtime) -> str:
    return runtime.keys.create("user").key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# For keys that a module's tests share: their own explicit limits, so that adding a test never
# pushes a shared key past the default 10 batch calls a minute (tests/auth/test_ratelimit.py tests limits).
TEST_KEY_LIMITS = '{"generation": "100000/minute", "batch": "100000/minute", "other": "100000/minute"}'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_port() -> int:
    """A loopback port nothing listens on: one the OS just handed out and took back (not a fixed
    low port such as 1 or 9, where a discard service or another test may listen)."""
    return free_port()


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def in_one_rate_window(burst_s: float = 40.0) -> None:
    """Return once the current minute has ``burst_s`` seconds left, waiting for the next one if need
    be. A real server's rate limiter counts per-minute windows on the wall clock, which a test cannot
    set (in-process tests freeze the limiter's own clock instead); a burst that straddled a boundary
    would be counted against two windows, and the sliding window counter lets through more than the
    limit then, by design. Call it right before a burst whose 429s a test counts."""
    left = 60.0 - time.time() % 60.0
    if left < burst_s:
        time.sleep(left + 0.01)  # to a point on the clock, not a wait for some event


class LiveServer:
    """A real ``winnow serve`` process on a free loopback port."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.env = {**os.environ, "WINNOW_DATA_DIR": str(data_dir), "WINNOW_WORKERS": "0", **(env or {})}
        self.log_path = data_dir.parent / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0, tries: int = 3) -> LiveServer:
        """Start the server; when another process took the free port in between (free_port can only
        pick a port, not hold it), start again on a new one."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "winnow", "serve", "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if tries > 1 and "address already in use" in self.log_path.read_text().lower():
                    self.port = free_port()
                    self.url = f"http://127.0.0.1:{self.port}"
                    return self.start(timeout, tries - 1)
                raise RuntimeError(f"server exited: {self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.log_path.read_text()}")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "winnow", *args], env=self.env, capture_output=True, text=True, check=True
        )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def log(self) -> str:
        return self.log_path.read_text()


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path / "live").start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL of the local PostgreSQL whose search_path is a fresh schema, dropped afterwards."""
    if not reachable("127.0.0.1", 5432):
        pytest.skip("no PostgreSQL server on 127.0.0.1:5432")
    schema = f"winnow_test_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@contextmanager
def running_worker(settings: Settings) -> Iterator[None]:
    """A real job worker (the one `winnow worker` runs) on a thread of this process, stopped after."""
    from winnow.jobs.worker import Worker

    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    worker = Worker(settings, poll_s=0.1)
    thread = threading.Thread(target=loop.run_until_complete, args=(worker.run_forever(stop),), daemon=True)
    thread.start()
    try:
        yield
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)


class CrashAfter(FileCheckpoint):
    """Saves ``n`` checkpoints, then dies on the next, after that chunk's rows were written."""

    def __init__(self, path: Path, n: int) -> None:
        super().__init__(path)
        self.n = n

    def save(self, state: dict[str, Any], stage: str, usage: Sequence[UsageEvent] = ()) -> None:
        if self.n == 0:
            raise KeyboardInterrupt("crash")
        self.n -= 1
        super().save(state, stage, usage)


JOB_STATUS = "/api/v1/synthetic_data_generation/job_status"


def until(what: str, check: Callable[[], T | None], timeout: float = 120.0) -> T:
    """Poll ``check`` until it returns something true, and return that: a wait on a condition that
    another thread or process makes true (``timeout`` only stops a hang)."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)
    return value


def wait_for(
    client: TestClient | httpx.Client,
    key: str,
    path: str,
    until: tuple[str, ...] = ("completed", "failed"),
    timeout: float = 120.0,
    params: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Poll ``path`` (a job's or evaluation's status) until its ``status`` is one of ``until``."""
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = client.get(path, params=params, headers=bearer(key)).json()
        if status["status"] in until:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} {params or ''} did not reach {until}: {status}")
        time.sleep(0.1)


def wait_for_job(
    client: TestClient | httpx.Client,
    key: str,
    job_id: str,
    until: tuple[str, ...] = ("completed", "failed"),
    timeout: float = 120.0,
) -> dict[str, Any]:
    return wait_for(client, key, JOB_STATUS, until, timeout, {"job_id": job_id})
