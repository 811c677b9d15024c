"""A transformers model in an engine process of its own (``options.engine: process``): the same
answers as on the server's own thread, batched, streamed, and what happens when either side dies."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from tests.conftest import DEMO_LM, DEMO_PROMPTS, LiveServer, bearer, until
from winnow.config import ModelConfig, Settings
from winnow.errors import InvalidRequest, ServiceUnavailable
from winnow.models.base import ChatMessage, GenerationResult, Prompt, SamplingParams
from winnow.models.engine_process import EngineProcess
from winnow.models.providers.transformers import TransformersProvider

pytestmark = pytest.mark.slow  # each test starts an engine process (torch and the model: seconds)

PROMPTS = [json.loads(line)["prompt"] for line in DEMO_PROMPTS.read_text().splitlines()[:40]]


def provider(engine: str, **options: object) -> TransformersProvider:
    config = ModelConfig(id="demo-lm", path=str(DEMO_LM), options={"engine": engine, **options})
    return TransformersProvider(config, Settings(local_torch_threads=1))


@pytest.fixture
def in_process() -> Iterator[TransformersProvider]:
    p = provider("process")
    yield p
    asyncio.run(p.close())


def texts(results: list[GenerationResult]) -> list[object]:
    return [
        repr(r.error)
        if r.error
        else [(c.text, c.finish_reason, c.output_tokens) for c in r.completions] + [r.input_tokens]
        for r in results
    ]


def test_the_engine_process_answers_as_the_thread_does() -> None:
    chat: Prompt = [ChatMessage("system", "Answer with a number."), ChatMessage("user", "What is 3+4?")]
    cases: list[tuple[list[Prompt], SamplingParams]] = [
        (list(PROMPTS), SamplingParams(max_tokens=8, temperature=0)),
        (list(PROMPTS[:10]), SamplingParams(max_tokens=8, temperature=1.0, n=4, seed=7)),
        ([chat, "What is 9+9?"], SamplingParams(max_tokens=2, temperature=0)),  # a length finish
        (["What is 12+30?"], SamplingParams(max_tokens=8, temperature=0, stop=("2",))),
        (["x" * 100_000, "What is 1+1?"], SamplingParams(max_tokens=8, temperature=0)),  # one refused
    ]

    async def answers(engine: str) -> list[list[object]]:
        p = provider(engine)
        try:
            return [texts(await p.generate(prompts, params)) for prompts, params in cases]
        finally:
            await p.close()

    thread, process = asyncio.run(answers("thread")), asyncio.run(answers("process"))
    assert process == thread
    assert thread[0][0][0][0] != "" and "context length" in str(thread[4][0])


def test_per_prompt_errors_keep_their_class(in_process: TransformersProvider) -> None:
    async def run() -> list[GenerationResult]:
        return await in_process.generate(["x" * 100_000, ""], SamplingParams(max_tokens=4, temperature=0))

    too_long, _ = asyncio.run(run())
    assert isinstance(too_long.error, InvalidRequest)
    assert too_long.error.status_code == 400 and "context length" in too_long.error.message


def test_concurrent_callers_are_batched_in_the_engine_process(in_process: TransformersProvider) -> None:
    async def run() -> tuple[list[str], list[str], object]:
        params = SamplingParams(max_tokens=8, temperature=0)
        prompts = [f"What is {i}+{i}?" for i in range(48)]
        alone = [(await in_process.generate([p], params))[0].completions[0].text for p in prompts]
        engine = in_process.pool.peek("demo-lm")
        before = engine.stats.batches
        results = await asyncio.gather(*(in_process.generate([p], params) for p in prompts))
        return alone, [r[0].completions[0].text for r in results], engine.stats.batches - before

    alone, together, batches = asyncio.run(run())
    assert together == alone  # each caller gets its own answer, as when it asked alone
    assert sum(a == str(2 * i) for i, a in enumerate(alone)) >= 45
    assert isinstance(batches, int) and 1 <= batches <= 3  # 48 callers, batches of up to 64 rows


def test_a_stream_arrives_in_pieces_and_matches_the_batch_answer(in_process: TransformersProvider) -> None:
    async def run() -> tuple[list[str], int, int, str]:
        params = SamplingParams(max_tokens=12, temperature=0)
        deltas = [d async for d in in_process.stream("What is 17+25?", params)]
        (whole,) = await in_process.generate(["What is 17+25?"], params)
        return [d.text for d in deltas], deltas[-1].input_tokens, deltas[-1].output_tokens, whole.completions[0].text

    pieces, input_tokens, output_tokens, whole = asyncio.run(run())
    assert "".join(pieces) == whole == "42"
    assert len([p for p in pieces if p]) >= 2 and input_tokens > 0 and output_tokens == 3  # 2 digits + EOS


def test_a_stream_closed_early_frees_the_engine_for_the_next_call(in_process: TransformersProvider) -> None:
    async def run() -> str:
        stream = in_process.stream("What is 5+5?", SamplingParams(max_tokens=400, temperature=1.0, seed=1))
        assert isinstance(stream, AsyncIterator)
        await stream.__anext__()
        await stream.aclose()  # the client went away
        (result,) = await asyncio.wait_for(
            in_process.generate(["What is 2+3?"], SamplingParams(max_tokens=8, temperature=0)), 60
        )
        return result.completions[0].text

    assert asyncio.run(run()) == "5"


def test_a_dead_engine_fails_the_calls_in_flight_and_the_next_call_starts_another(
    in_process: TransformersProvider,
) -> None:
    async def run() -> tuple[BaseException | None, str, int, int]:
        params = SamplingParams(max_tokens=8, temperature=0)
        await in_process.generate(["What is 1+1?"], params)
        first = in_process.pool.peek("demo-lm")
        assert isinstance(first, EngineProcess)
        big = SamplingParams(max_tokens=300, temperature=1.0, n=8)  # 2,560 rows: seconds of work
        in_flight = asyncio.gather(*(in_process.generate(PROMPTS * 2, big) for _ in range(4)), return_exceptions=True)
        while first.queue_depth == 0:
            await asyncio.sleep(0.01)
        os.kill(first.pid, signal.SIGKILL)
        outcomes = await asyncio.wait_for(in_flight, 60)
        error = next((o for o in outcomes if isinstance(o, BaseException)), None)
        assert first.exited is not None  # the calls failed because their engine was seen gone
        (again,) = await in_process.generate(["What is 20+22?"], params)
        second = in_process.pool.peek("demo-lm")
        return error, again.completions[0].text, first.pid, second.pid

    error, text, first_pid, second_pid = asyncio.run(run())
    assert isinstance(error, ServiceUnavailable), error
    assert error.status_code == 503 and "engine process" in (error.details or "")
    assert text == "42" and second_pid != first_pid


def test_the_engine_exits_with_its_parent(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from winnow.config import ModelConfig, Settings
        from winnow.models.engine_process import EngineProcess
        engine = EngineProcess(ModelConfig(id="demo-lm", path={str(DEMO_LM)!r}), Settings(local_torch_threads=1))
        print(engine.pid, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert Path(f"/proc/{child}").exists()
        parent.kill()  # kill -9: no atexit, no finally
        parent.wait()

        def gone() -> bool:
            try:
                state = Path(f"/proc/{child}/stat").read_text().split()[2]
            except FileNotFoundError:
                return True
            return state == "Z"

        until("the engine process to exit after its parent", gone, timeout=30)
    finally:
        parent.kill()


def test_a_model_that_cannot_load_says_why() -> None:
    broken = ModelConfig(id="broken", path=str(DEMO_LM), options={"engine": "process"}, dtype="no_such_dtype")

    async def run() -> None:
        p = TransformersProvider(broken, Settings(local_torch_threads=1))
        try:
            await p.generate(["hi"], SamplingParams(max_tokens=2))
        finally:
            await p.close()

    with pytest.raises(ServiceUnavailable) as caught:
        asyncio.run(run())
    assert "no_such_dtype" in (caught.value.details or "")


def test_an_unknown_engine_fails_when_the_config_loads() -> None:
    with pytest.raises(ValueError, match=r"options\.engine must be one of thread, process"):
        provider("proces")


def test_thread_is_the_default_and_the_setting_chooses_process() -> None:
    config = ModelConfig(id="demo-lm", path=str(DEMO_LM))
    assert TransformersProvider(config, Settings()).engine_mode == "thread"
    assert TransformersProvider(config, Settings(local_engine="process")).engine_mode == "process"
    assert (
        TransformersProvider(
            config.model_copy(update={"options": {"engine": "thread"}}), Settings(local_engine="process")
        ).engine_mode
        == "thread"
    )


def test_winnow_serve_with_an_engine_process(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "data", env={"WINNOW_LOCAL_ENGINE": "process"}).start()
    try:
        key = server.cli("keys", "create", "engine").stdout.split()[-1]
        response = httpx.post(
            f"{server.url}/api/v1/generate",
            json={"prompt": "What is 17+25?", "model_id": "demo-lm", "max_tokens": 8, "temperature": 0},
            headers=bearer(key),
            timeout=120,
        )
        assert response.status_code == 200, response.text
        assert response.json()["text"] == "42"
        client = OpenAI(base_url=f"{server.url}/v1", api_key=key)
        stream = client.chat.completions.create(
            model="demo-lm",
            messages=[{"role": "user", "content": "What is 17+25?"}],
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "42"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
        too_long = httpx.post(
            f"{server.url}/api/v1/generate",
            json={"prompt": "7+" * 4000, "model_id": "demo-lm", "max_tokens": 8},
            headers=bearer(key),
            timeout=60,
        )
        assert too_long.status_code == 400 and "context" in too_long.json()["message"]
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
        batches = [line for line in metrics.splitlines() if line.startswith("winnow_local_batches_total")]
        assert batches and float(batches[0].split()[-1]) >= 1, batches
        engines = until(
            "the server's engine process",
            lambda: [p for p in Path("/proc").iterdir() if p.name.isdigit() and _is_engine_of(p, server)],
        )
        assert len(engines) == 1
    finally:
        server.stop()
    until(
        "the engine process to exit with the server", lambda: not (engines[0] / "stat").exists() or _zombie(engines[0])
    )


def _is_engine_of(proc: Path, server: LiveServer) -> bool:
    try:
        cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        status = (proc / "status").read_text()
    except OSError:
        return False
    ppid = next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:"))
    return b"winnow.models.engine_process_main" in cmdline and server.proc is not None and int(ppid) == server.proc.pid


def _zombie(proc: Path) -> bool:
    try:
        return (proc / "stat").read_text().split()[2] == "Z"
    except OSError:
        return True
