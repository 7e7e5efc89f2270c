"""Priorities: interactive work before batch work, at the gateway's decode workers and at
the engine. The handout's order (units), real decode workers taking jobs by priority, and a
real `arc-serve` running one request at a time behind `arc-gateway`: of two requests
waiting, the one with the lower priority number is served first, whatever their order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from media_factory import make_clip
from pydantic import ValidationError
from servers import free_port, start_engine, start_gateway, stop

from server.config import Settings
from server.errors import invalid_request
from server.metrics import Metrics
from server.priority import BATCH, INTERACTIVE, MAX_PRIORITY, PriorityHandout
from server.schemas import ChatCompletionRequest
from server.video.jobs import PrepareJob
from server.video.workers import DecodeWorkers


def test_handout_serves_the_lowest_priority_first_then_arrival() -> None:
    async def scenario() -> list[str]:
        handout: PriorityHandout[str] = PriorityHandout()
        order: list[str] = []

        async def take(name: str, priority: int) -> None:
            item = await handout.get(priority)
            order.append(name)
            handout.put_nowait(item)

        waiting = []
        for name, priority in (("b1", BATCH), ("i1", INTERACTIVE), ("b2", BATCH), ("i2", 0)):
            waiting.append(asyncio.ensure_future(take(name, priority)))
        await asyncio.sleep(0)
        assert handout.waiting() == 4 and handout.idle() == 0
        handout.put_nowait("worker")
        await asyncio.gather(*waiting)
        assert handout.idle() == 1 and handout.waiting() == 0
        # with an idle item, a newcomer takes it at once, whatever its priority
        assert await handout.get(MAX_PRIORITY) == "worker"
        return order

    assert asyncio.run(scenario()) == ["i1", "i2", "b1", "b2"]


def test_handout_skips_waiters_that_left() -> None:
    async def scenario() -> None:
        handout: PriorityHandout[str] = PriorityHandout()
        gone = asyncio.ensure_future(handout.get(INTERACTIVE))
        late = asyncio.ensure_future(handout.get(BATCH))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0)
        handout.put_nowait("a")
        assert await late == "a"
        # an item handed over just as its waiter is cancelled goes to the next waiter
        first = asyncio.ensure_future(handout.get(INTERACTIVE))
        second = asyncio.ensure_future(handout.get(BATCH))
        await asyncio.sleep(0)
        handout.put_nowait("b")  # first's future now holds "b"...
        first.cancel()  # ...and first is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await second == "b"
        assert handout.idle() == 0 and handout.waiting() == 0

    asyncio.run(scenario())


def test_decode_jobs_wait_by_priority(tmp_path: Path) -> None:
    """One real decode worker, busy; jobs queued batch, interactive, batch, interactive:
    the interactive ones are decoded first, then the batch ones, each in arrival order."""
    busy = make_clip(tmp_path / "busy.mp4", seconds=20, size="320x240")
    clips = {
        name: make_clip(tmp_path / f"{name}.mp4", seconds=2) for name in ("b1", "i1", "b2", "i2")
    }
    priorities = {"b1": BATCH, "i1": INTERACTIVE, "b2": BATCH, "i2": INTERACTIVE}

    async def scenario() -> dict[str, float]:
        settings = Settings(decode_workers=1, files_dir=str(tmp_path / "files"))
        workers = DecodeWorkers(settings, Metrics())
        await workers.warm_up()

        def job(path: Path) -> PrepareJob:
            return workers.job(path, path.with_suffix(".arcz"))

        try:
            jobs = [workers.run(job(busy))]  # takes the idle worker at once
            jobs += [workers.run(job(clips[n]), priority=priorities[n]) for n in clips]
            results = await asyncio.gather(*jobs)
        finally:
            workers.shutdown()
        return {name: summary.started_at for name, summary in zip(["busy", *clips], results)}

    started = asyncio.run(scenario())
    assert sorted(started, key=started.__getitem__) == ["busy", "i1", "i2", "b1", "b2"]


@pytest.mark.parametrize("value", [-1, MAX_PRIORITY + 1, "high", 1.5])
def test_priority_is_a_number_from_interactive_down(value: object) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "priority": value}
    with pytest.raises(ValidationError) as refused:
        ChatCompletionRequest.model_validate(body)
    error = invalid_request(refused.value.errors())
    assert (error.status_code, error.code, error.param) == (400, "invalid_request", "priority")


def test_priority_goes_to_vllm_only_when_below_interactive() -> None:
    def options(**extra: object) -> dict:
        body = {"messages": [{"role": "user", "content": "hi"}], **extra}
        return ChatCompletionRequest.model_validate(body).engine_options()

    assert options() == {} and options(priority=0) == {}
    assert options(priority=BATCH) == {"priority": BATCH}


# -- the real engine ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_at_a_time(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """An `arc-serve` that runs one request at a time (`--max-num-seqs 1`: the others wait
    in its queue), started without a scheduling policy (arc-serve's own default applies),
    and a gateway in front of it: (engine URL, gateway URL)."""
    from vllm_plugin.tiny_checkpoint import write_tiny_checkpoint

    folder = tmp_path_factory.mktemp("one-at-a-time")
    checkpoint = write_tiny_checkpoint(folder / "ckpt")
    engine_port, gateway_port = free_port(), free_port()
    extra = ["--max-num-seqs", "1", "--max-model-len", "4096"]
    engine = start_engine(checkpoint, engine_port, folder / "engine.log", extra)
    engine_url = f"http://127.0.0.1:{engine_port}"
    try:
        gateway = start_gateway(
            engine_url, gateway_port, folder / "files", folder / "gateway.log",
            ["--decode-workers", "1"],
        )  # fmt: skip
    except BaseException:
        stop(engine)
        raise
    yield engine_url, f"http://127.0.0.1:{gateway_port}"
    stop(gateway)
    stop(engine)


def _requests(engine: str, state: str) -> float:
    """vLLM's count of its requests in `state` (running, waiting)."""
    name = f"vllm:num_requests_{state}"
    lines = httpx.get(engine + "/metrics", timeout=10).text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name + "{"))


def _wait_for(engine: str, state: str, count: int) -> None:
    deadline = time.monotonic() + 60
    while _requests(engine, state) != count:
        assert time.monotonic() < deadline, f"never {count} {state}"
        time.sleep(0.05)


@pytest.mark.engine
def test_waiting_requests_are_served_by_priority(one_at_a_time: tuple[str, str]) -> None:
    """The engine busy; a batch request (priority 10) arrives, then an interactive one (no
    priority), both through the gateway: the interactive one is answered first. First come
    first served, vLLM's default, would answer the batch one first."""
    engine, gateway = one_at_a_time
    finished: dict[str, float] = {}

    def ask(name: str, **extra: object) -> httpx.Response:
        body = {"messages": [{"role": "user", "content": "What is it?"}], "max_tokens": 4}
        reply = httpx.post(gateway + "/v1/chat/completions", json={**body, **extra}, timeout=300)
        finished[name] = time.monotonic()
        return reply

    long_answer = {
        "model": "arc-tiny",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 3000,
        "ignore_eos": True,
        "stream": True,
        "chat_template_kwargs": {"task": "none"},
    }
    with ThreadPoolExecutor(2) as pool:
        with httpx.stream(
            "POST", engine + "/v1/chat/completions", json=long_answer, timeout=300
        ) as busy:
            assert busy.status_code == 200
            _wait_for(engine, "running", 1)
            batch = pool.submit(ask, "batch", priority=BATCH)
            _wait_for(engine, "waiting", 1)
            interactive = pool.submit(ask, "interactive")
            _wait_for(engine, "waiting", 2)
        # the long answer's client is gone: vLLM drops it and takes the next waiting one
        assert batch.result().status_code == 200, batch.result().text
        assert interactive.result().status_code == 200, interactive.result().text
    assert finished["interactive"] < finished["batch"]
