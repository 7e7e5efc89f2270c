"""The batch runner: one per gateway process, started and stopped with the gateway.

Every tick it looks at the batches with work left (in the database, so every replica
sees the same): validates a new one, claims lines of one in progress while it has free
slots, and finalizes one whose lines are all done, cancelled or past its window. A line
is answered by the chat service as an interactive request is, for the batch's key (its
limits and cache salt), at batch priority: its decode waits behind interactive decodes
and the engine schedules it after interactive requests. Retriable failures (the engine
busy or failing, a timeout) are retried with backoff; then the line fails with the reason.

Claims are renewed by the runner while the process lives (`--batch-lease-s`); a process
that dies leaves claims that expire, and its lines run again elsewhere. Results are
written only by the claim that holds the line, so a line run twice is written once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import suppress
from typing import TYPE_CHECKING

from pydantic import ValidationError

from ..chat.service import ChatCall, WholeAnswer
from ..db.models import Batch
from ..errors import APIError, invalid_request
from ..inflight import InFlight
from ..keys.auth import Caller
from ..keys.records import ADMIN_ID
from ..priority import BATCH
from ..schemas import ChatCompletionRequest
from . import objects as o
from . import output, store
from .validate import read_lines

if TYPE_CHECKING:
    from ..state import Gateway

log = logging.getLogger("arc.gateway")

TICK_S = 0.5
COUNT_EVERY_S = 5.0  # the queued-lines gauge (a count over every batch in progress)
MAX_PACE_S = 30.0
RESULTS_PAGE = 1000  # line rows read at once when a batch's files are written
# Codes of a failure worth trying again: the engine may answer later. Anything else is
# the request's own answer (a 429 is waited out, not retried: `_answer`).
RETRIABLE_STATUS = (500, 502, 503, 504)


def retriable(error: APIError) -> bool:
    return error.status_code in RETRIABLE_STATUS


def _retry_after(error: APIError) -> float:
    try:
        return min(MAX_PACE_S, max(0.5, float(error.headers.get("Retry-After", 1))))
    except ValueError:
        return 1.0


class BatchRunner:
    def __init__(self, gateway: Gateway):
        self.gateway = gateway
        self.settings = gateway.settings
        self.db = gateway.db
        self.metrics = gateway.metrics
        self.holder = gateway.leases.holder
        self.slots = self.settings.batch_workers
        self.inflight = InFlight(self.slots, self.metrics.batch_lines_running)
        self._lines: dict[tuple[str, int], asyncio.Task] = {}
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._renewed = 0.0
        self._counted = 0.0
        self._finished: deque[float] = deque()  # when lines finished here (lines per second)
        self._yielding_since: float | None = None  # time.monotonic(): interactive traffic seen

    # -- start, stop, wake -----------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        tasks = list(self._lines.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:  # lines this gateway was running go back to the queue now, not after the lease
            await self.db.run(store.release, self.holder)
        except Exception as exc:  # noqa: BLE001 (then they come back when the lease ends)
            log.warning(json.dumps({"event": "batch_release_failed", "error": repr(exc)}))

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # a database hiccup: try again next tick
                log.exception("batch runner tick failed")
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            self._wake.clear()

    # -- one tick ----------------------------------------------------------------------------

    async def tick(self) -> None:
        s = self.settings
        now = time.time()
        if now - self._renewed > s.batch_lease_s / 3:
            await self.db.run(store.renew, self.holder, s.batch_lease_s)
            self._renewed = now
        if now - self._counted > COUNT_EVERY_S:
            self.metrics.batch_lines_queued.set(await self.db.run(store.queued_lines))
            self._counted = now
        batches = await self.db.run(store.active)
        running_ids = {b.id for b in batches if b.status == o.IN_PROGRESS and b.expires_at > now}
        # Lines of a batch cancelled or expired meanwhile stop here (aborted upstream).
        for (batch_id, _), task in list(self._lines.items()):
            if batch_id not in running_ids:
                task.cancel()
        for batch in batches:
            await self._step(batch, now)
        self._note_metrics(now)

    async def _step(self, batch: Batch, now: float) -> None:
        s = self.settings
        lease = s.batch_lease_s
        if batch.status == o.VALIDATING:
            if await self.db.run(
                store.claim_batch, batch.id, self.holder, lease, o.VALIDATING, o.VALIDATING
            ):
                await self._validate(batch)
        elif batch.status == o.CANCELLING:
            if await self.db.run(
                store.claim_batch, batch.id, self.holder, lease, o.CANCELLING, o.CANCELLING
            ):
                await self._finalize(batch, o.CANCELLED)
        elif batch.status == o.FINALIZING:
            if await self.db.run(
                store.claim_batch, batch.id, self.holder, lease, o.FINALIZING, o.FINALIZING
            ):
                await self._finalize(batch, o.COMPLETED)
        elif batch.expires_at <= now:
            if await self.db.run(
                store.claim_batch, batch.id, self.holder, lease, o.IN_PROGRESS, o.IN_PROGRESS
            ):
                await self._finalize(batch, o.EXPIRED)
        else:
            free = self._slots_now() - len(self._lines)
            if free > 0:
                claimed = await self.db.run(store.claim_lines, batch.id, self.holder, lease, free)
                for line, custom_id, body, claim in claimed:
                    task = asyncio.create_task(
                        self._run_line(batch.id, batch.owner, line, custom_id, body, claim)
                    )
                    self._lines[(batch.id, line)] = task
                    task.add_done_callback(lambda _, k=(batch.id, line): self._lines.pop(k, None))
            if (
                not any(key[0] == batch.id for key in self._lines)
                and not await self.db.run(store.unfinished, batch.id)
                and await self.db.run(
                    store.claim_batch, batch.id, self.holder, lease, o.IN_PROGRESS, o.FINALIZING
                )
            ):
                await self._finalize(batch, o.COMPLETED)

    def _slots_now(self) -> int:
        """Lines that may run now: fewer beside interactive traffic (`--batch-yield-s`),
        and never none for longer than `--batch-max-yield-s`."""
        s = self.settings
        yielding = s.batch_yield_s > 0 and self.gateway.inflight.busy_within(s.batch_yield_s)
        self.metrics.batch_yielding.set(int(yielding))
        if not yielding:
            self._yielding_since = None
            return self.slots
        now = time.monotonic()
        if self._yielding_since is None:
            self._yielding_since = now
        allowed = s.batch_busy_concurrency
        if now - self._yielding_since >= s.batch_max_yield_s:
            allowed = max(allowed, 1)
        return min(self.slots, allowed)

    async def _validate(self, batch: Batch) -> None:
        gateway = self.gateway
        scope = None if batch.owner == ADMIN_ID else batch.owner
        try:
            path = gateway.store.source_path(batch.input_file_id)
            lines, errors = await asyncio.to_thread(
                read_lines, path, scope, gateway.store, self.settings
            )
        except OSError:
            lines, errors = (
                [],
                [
                    {
                        "code": "file_not_found",
                        "message": f"the input file {batch.input_file_id} is gone",
                        "param": "input_file_id",
                        "line": None,
                    }
                ],
            )
        status = await self.db.run(store.start, batch.id, self.holder, lines, errors)
        log.info(
            json.dumps(
                {"event": "batch_validated", "batch_id": batch.id, "status": status,
                 "lines": len(lines), "errors": len(errors)}
            )
        )  # fmt: skip
        self.wake()

    async def _finalize(self, batch: Batch, status: str) -> None:
        if status != o.COMPLETED:
            await self.db.run(store.drop_unfinished, batch.id, self.holder)
        output_id, error_id = await asyncio.to_thread(
            output.write_files,
            self.gateway.store,
            batch.id,
            batch.owner,
            self._result_pages(batch.id),
            status,
        )
        closed = await self.db.run(store.close, batch.id, self.holder, status, output_id, error_id)
        if not closed:  # another replica took it over (this one was too slow): its files stand
            for file_id in (output_id, error_id):
                if file_id is not None:
                    await asyncio.to_thread(self.gateway.store.delete, file_id)
            return
        log.info(json.dumps({"event": "batch_" + status, "batch_id": batch.id}))

    def _result_pages(self, batch_id: str) -> Iterator[Sequence[output.Row]]:
        """The batch's line rows a page at a time (read in the finalizing thread)."""
        after = -1
        while page := self.db.call(store.results, batch_id, after, RESULTS_PAGE):
            yield page
            after = page[-1][0]

    # -- one line ----------------------------------------------------------------------------

    async def _run_line(
        self, batch_id: str, owner: str, line: int, custom_id: str, body: str, claim: str
    ) -> None:
        state, result = await self._answer(batch_id, owner, custom_id, body)
        written = await self.db.run(store.finish_line, batch_id, line, claim, state, result)
        if written:
            status = (result.get("response") or {}).get("status_code")
            self.metrics.batch_lines.labels("completed" if status == 200 else "failed").inc()
            self._finished.append(time.time())
        self.wake()

    async def _answer(
        self, batch_id: str, owner: str, custom_id: str, body: str
    ) -> tuple[str, dict]:
        """(line state, its output line) after retries."""
        attempt = 0
        while True:
            request_id = "req_" + secrets.token_hex(12)
            head = {"id": o.new_line_id(), "custom_id": custom_id}
            try:
                caller = await self.db.run(store.caller_for, owner)
                completion = await self._once(batch_id, caller, body, request_id)
                response = {"status_code": 200, "request_id": request_id, "body": completion}
                return o.DONE, {**head, "response": response, "error": None}
            except APIError as e:
                if e.status_code == 429:
                    # The key's own limits, or a busy engine or decode queue: the line waits
                    # its turn (its retries are for failures); the window bounds the wait.
                    self.metrics.batch_lines.labels("paced").inc()
                    await asyncio.sleep(_retry_after(e))
                    continue
                if not retriable(e):
                    response = {"status_code": e.status_code, "request_id": request_id,
                                "body": e.body()}  # fmt: skip
                    return o.DONE, {**head, "response": response, "error": None}
                if attempt >= self.settings.batch_retries:
                    error = {"code": e.code, "message": f"{e.message} (after {attempt + 1} tries)"}
                    return o.LINE_FAILED, {**head, "response": None, "error": error}
            except Exception as e:  # a bug: the line fails, the batch goes on
                log.exception("batch line failed")
                error = {"code": "internal", "message": f"internal error in the gateway: {e!r}"}
                return o.LINE_FAILED, {**head, "response": None, "error": error}
            self.metrics.batch_lines.labels("retried").inc()
            await asyncio.sleep(self.settings.batch_retry_backoff_s * 2**attempt)
            attempt += 1

    async def _once(self, batch_id: str, caller: Caller, body: str, request_id: str) -> dict:
        gateway = self.gateway
        fields: dict = {"event": "batch_line", "batch_id": batch_id, "request_id": request_id,
                        "key_id": caller.key_id}  # fmt: skip
        t0 = time.perf_counter()
        try:
            async with self.inflight.admit() as held:
                await gateway.tenancy.admit_call(caller, held.cleanup, fields)
                try:
                    req = ChatCompletionRequest.model_validate_json(body)
                except ValidationError as e:
                    raise invalid_request(e.errors()) from None
                # Behind interactive requests, at the engine and in the decode queue.
                priority = max(BATCH, req.priority or 0)
                call = ChatCall(
                    request_id=request_id,
                    held=held,
                    caller=caller,
                    log=fields,
                    extra_body={"priority": priority},
                    decode_priority=BATCH,
                )
                answer = await gateway.chat.answer(req, call)
                assert isinstance(answer, WholeAnswer)  # a batch line is never streamed
                fields["status"] = 200
                return answer.completion
        except APIError as e:
            fields["status"] = e.status_code
            fields["error_code"] = e.code
            raise
        finally:
            fields["duration_s"] = round(time.perf_counter() - t0, 4)
            log.info(json.dumps(fields, default=str))

    def _note_metrics(self, now: float) -> None:
        while self._finished and self._finished[0] < now - 60:
            self._finished.popleft()
        self.metrics.batch_lines_per_second.set(len(self._finished) / 60)
