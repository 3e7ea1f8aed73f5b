"""The worker: one asyncio event loop that fetches tasks, runs their handlers, keeps every lease
alive and reports outcomes, the way the Rust SDK does (``docs/worker-protocol.md``).

- **Handlers.** ``async def`` handlers run on the loop. Plain ``def`` handlers run in a thread
  pool of the worker's own (``threads``, default ``concurrency``), never the loop's default
  executor, so sync work cannot starve the loop: fetches, heartbeats and async handlers go on
  while a sync handler blocks.
- **Fetching.** While work flows, each fetch asks with ``wait_ms: 0`` and carries the outcomes
  finished since the last one (one request reports and asks for more); once a fetch comes back
  empty the worker long-polls, and a reporter sends outcomes that no fetch is about to carry.
- **Prefetch.** While tasks are short it leases a few more than it has slots (as many as its
  slots start within 5 ms at the pace tasks have been running, at most ``prefetch``); a
  prefetched task that waits 250 ms for a slot is given back for another worker.
- **Leases.** Every lease held, running or waiting for a slot, is heartbeated a few times per
  lease timeout. A heartbeat answer that the task was cancelled, or that the lease was lost,
  stops its handler (an async one sees ``CancelledError``; a sync one ``ctx.cancelled``). So
  does the attempt's timeout.
- **Outcomes.** A return value is the result; ``Permanent`` fails at once; ``RetryAfter``
  retries after its delay; any other exception is retried per the task's backoff while attempts
  remain. A payload that does not fit the handler's signature fails permanently.
- **Shutdown.** ``stop`` (SIGTERM/SIGINT in the CLI): stop fetching, give back tasks waiting for a
  slot, let running handlers finish within ``shutdown_grace``, then stop the rest and release
  their leases so another worker runs them at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import logging
import os
import signal
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .client import AsyncClient, _Call
from .context import Context
from .errors import (
    ApiError,
    ConversionError,
    Permanent,
    RetryAfter,
    TransportError,
    Unavailable,
)
from .task_logs import running
from .traces import RunSpan
from .workflow import FanOut, ParentResult

if TYPE_CHECKING:
    from .app import TaskDef, Taskwarden

log = logging.getLogger("taskwarden.worker")

PREFETCH_HORIZON = 0.005
"""Seconds: a prefetched task should wait at most about this long for a slot."""
PREFETCH_GIVE_BACK = 0.25
"""Seconds a prefetched task waits for a slot before it is given back."""
CARRY_WITHIN = 0.05
"""Seconds an outcome may wait for a fetch to carry it before the reporter sends it."""
IDLE_HEARTBEAT = 5.0
"""Seconds between heartbeats of an idle worker (the server counts it lost after 30 s)."""
MAX_BATCH = 1000
MAX_CARRIED_BYTES = 256 << 10
MAX_ERROR_CHARS = 8000
MAX_UNSENT_LOG_LINES = 1000
"""Most log lines a task keeps between two heartbeats (the server keeps 1,000 per attempt)."""


@dataclass
class RunSummary:
    """What a run did, for logs and tests."""

    worker_id: str = ""
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    released: int = 0
    abandoned: int = 0
    fetches: int = 0
    fetched: int = 0
    report_requests: int = 0


class _Pace:
    """How long tasks have been taking: a moving average, for prefetch."""

    def __init__(self) -> None:
        self.average: float | None = None

    def record(self, took: float) -> None:
        self.average = took if self.average is None else self.average * 0.9 + took * 0.1

    def at_least(self, waited: float) -> None:
        self.average = waited if self.average is None else max(self.average, waited)

    def may_wait(self, slots: int, cap: int) -> int:
        if self.average is None:
            return 0
        return min(cap, int(slots * PREFETCH_HORIZON / max(self.average, 1e-6)))


@dataclass(eq=False)
class _Execution:
    """One leased task, from its lease until its outcome is queued."""

    task: dict[str, Any]
    ctx: Context
    lease: str
    lease_timeout: float
    reason: str | None = None
    # What stop() wakes: the future of a wait for a slot, the task running an async handler
    # (cancelled), or the future a sync handler's thread completes.
    waiter: asyncio.Future[str] | None = None
    runner: asyncio.Task[Any] | None = None
    job: asyncio.Future[Any] | None = None
    span: RunSpan | None = None

    @property
    def id(self) -> str:
        return str(self.task["id"])

    def stop(self, reason: str) -> None:
        if self.reason is not None:
            return
        self.reason = reason
        self.ctx._cancel(reason)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result("stop")
        if self.runner is not None:
            self.runner.cancel()
        if self.job is not None and not self.job.done():
            self.job.cancel()


class _Outbox:
    """Outcomes waiting to be sent: carried by the next fetch while work flows, sent by the
    reporter when no fetch is about to (or one waited ``CARRY_WITHIN``)."""

    def __init__(self) -> None:
        self.pending: list[tuple[dict[str, Any], float]] = []
        self.carriers = 0
        self.ring = asyncio.Event()
        self.left_behind = False
        self.closed = False

    def push(self, report: dict[str, Any]) -> None:
        self.pending.append((report, time.monotonic()))
        self.ring.set()

    def put_back(self, reports: list[dict[str, Any]]) -> None:
        if not reports:
            return
        now = time.monotonic()
        back = [(r, now - r.pop("done_ago_us", 0) / 1e6) for r in reports]
        self.pending[:0] = back
        self.ring.set()

    def take_for_fetch(self) -> list[dict[str, Any]]:
        size, n = 0, 0
        for report, _ in self.pending[:MAX_BATCH]:
            outcome = report["outcome"]
            size += len(str(outcome.get("result", ""))) + len(outcome.get("error", ""))
            if size > MAX_CARRIED_BYTES and n > 0:
                break
            n += 1
        if n < len(self.pending):
            self.left_behind = True
            self.ring.set()
        taken, self.pending = self.pending[:n], self.pending[n:]
        return [_stamped(r, t) for r, t in taken]

    def take_batch(self) -> list[dict[str, Any]]:
        taken, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
        return [_stamped(r, t) for r, t in taken]

    def close(self) -> None:
        self.closed = True
        self.ring.set()


def _stamped(report: dict[str, Any], queued: float) -> dict[str, Any]:
    """The report as sent: saying how long ago its handler finished."""
    return {**report, "done_ago_us": max(0, int((time.monotonic() - queued) * 1e6))}


def _error_text(e: BaseException) -> str:
    """An exception as a task's error: the message first, then the traceback."""
    head = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    text = f"{head}\n\n{tb}"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def _default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-py"


class Worker:
    """Runs an app's tasks. Usually made by ``app.worker(...)`` / ``app.run_worker(...)`` or the
    ``taskwarden-py worker`` command.

    - ``queues``: the queues to serve (default: every queue the app's tasks name).
    - ``concurrency``: most handlers running at once.
    - ``threads``: the size of the sync handlers' own thread pool (default ``concurrency``).
    - ``prefetch``: most tasks leased beyond ``concurrency`` while tasks are short (default
      ``4 * concurrency``; 0 turns it off; none with ``capacity``).
    - ``shutdown_grace``: seconds running handlers get to finish after ``stop``.
    - ``capacity`` (``{"cpu": 8}``) and ``labels`` (``{"region": "eu"}``), as on the server.
    - ``tasks``: serve only these of the app's tasks (default: all).
    - ``register_schemas``: register each kind's payload JSON Schema (default True).
    """

    def __init__(
        self,
        app: Taskwarden,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int = 16,
        threads: int | None = None,
        prefetch: int | None = None,
        max_fetch: int = 256,
        fetch_wait: float = 20.0,
        shutdown_grace: float = 30.0,
        capacity: Mapping[str, int] | None = None,
        labels: Mapping[str, str] | None = None,
        name: str | None = None,
        startup_wait: float = 60.0,
        tasks: Sequence[TaskDef[Any, Any]] | None = None,
        register_schemas: bool = True,
    ) -> None:
        if not 1 <= concurrency <= 100_000:
            raise ValueError("concurrency must be between 1 and 100000")
        if not 1 <= max_fetch <= 1000:
            raise ValueError("max_fetch must be between 1 and 1000")
        if not 0 <= fetch_wait <= 60:
            raise ValueError("fetch_wait must be at most 60 s")
        self.app = app
        chosen = list(tasks) if tasks is not None else list(app.tasks.values())
        if not chosen:
            raise ValueError("the app declares no tasks: nothing to run")
        self.handlers: dict[str, TaskDef[Any, Any]] = {t.name: t for t in chosen}
        self.queues = list(queues) if queues else sorted({t.queue for t in chosen})
        self.concurrency = concurrency
        self.threads = threads or concurrency
        self.capacity = dict(capacity or {})
        self.labels = dict(labels or {})
        self.prefetch = 0 if self.capacity else (4 * concurrency if prefetch is None else prefetch)
        self.max_fetch = max_fetch
        self.fetch_wait = fetch_wait
        self.shutdown_grace = shutdown_grace
        self.name = name or _default_name()
        self.startup_wait = startup_wait
        self.register_schemas = register_schemas
        self.summary = RunSummary()
        self.worker_id: str | None = None
        self.busy_threads = 0
        """Sync handlers still running in a thread (some may have been abandoned)."""
        self.loop: asyncio.AbstractEventLoop | None = None
        # Set up in run(), on its loop.
        self._active: dict[str, _Execution] = {}
        self._executions: set[asyncio.Task[None]] = set()
        self._progress: dict[str, dict[str, Any]] = {}
        # Log lines not sent yet, by task; under the same lock as progress.
        self._logs: dict[str, list[dict[str, str]]] = {}
        self._progress_lock = threading.Lock()
        self._in_flight: set[str] = set()
        self._pace = _Pace()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    # --- registration ---

    def registration(self) -> dict[str, Any]:
        """The ``POST /v1/workers`` body: queues, concurrency, kinds and their payload schemas."""
        body: dict[str, Any] = {
            "name": self.name,
            "queues": self.queues,
            "concurrency": self.concurrency,
            "kinds": sorted(self.handlers),
        }
        if self.capacity:
            body["capacity"] = self.capacity
        if self.labels:
            body["labels"] = self.labels
        if self.register_schemas:
            schemas = {}
            for kind, task in self.handlers.items():
                try:
                    schemas[kind] = task.signature.schema()
                except (ConversionError, TypeError) as e:
                    log.warning("no payload schema for %s: %s", kind, e)
            body["schemas"] = schemas
        return body

    async def _register(self, client: AsyncClient, stop: asyncio.Event) -> str | None:
        """Registers, retrying while the server cannot be reached, up to ``startup_wait``."""
        deadline = time.monotonic() + self.startup_wait
        body = self.registration()
        while True:
            try:
                info = await client.raw("POST", "/v1/workers", body)
                return str(info["id"])
            except (TransportError, Unavailable) as e:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                log.warning(
                    "the server is not reachable yet (%s); retrying for %.0fs more", e, left
                )
                if await _sleep_or(stop, min(1.0, left)):
                    return None

    # --- the run ---

    async def run(
        self, stop: asyncio.Event | None = None, *, handle_signals: bool = False
    ) -> RunSummary:
        """Runs until ``stop`` is set (or this coroutine is cancelled), then shuts down
        gracefully. With ``handle_signals``, SIGTERM and SIGINT set ``stop``; a second one skips
        the rest of the grace period."""
        stop = stop or asyncio.Event()
        force = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        if handle_signals:

            def on_signal() -> None:
                if stop.is_set():
                    force.set()
                stop.set()

            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    self.loop.add_signal_handler(sig, on_signal)
                    installed.append(sig)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.threads, thread_name_prefix="taskwarden-sync"
        )
        client = AsyncClient(self.app.url, **self.app._client_args)
        try:
            worker_id = await self._register(client, stop)
            if worker_id is None:
                return self.summary
            return await self._serve(client, worker_id, stop, force)
        except asyncio.CancelledError:
            # Cancelled from outside: nothing graceful is possible any more; the leases expire.
            raise
        finally:
            for sig in installed:
                self.loop.remove_signal_handler(sig)
            self._pool.shutdown(wait=False, cancel_futures=True)
            await client.aclose()

    async def _serve(
        self, client: AsyncClient, worker_id: str, stop: asyncio.Event, force: asyncio.Event
    ) -> RunSummary:
        self.worker_id = worker_id
        self.summary.worker_id = worker_id
        log.info(
            "worker %s registered: queues %s, concurrency %d",
            worker_id,
            self.queues,
            self.concurrency,
        )
        self._client = client
        self._stop = stop
        self._free_slots = self.concurrency
        self._slot_waiters: deque[asyncio.Future[str]] = deque()
        self._moved = asyncio.Event()
        self._outbox = _Outbox()
        stop_background = asyncio.Event()
        self._beat_sooner = asyncio.Event()
        self._beat_interval = 1.0
        reporter = asyncio.ensure_future(self._reporter())
        heartbeats = asyncio.ensure_future(self._keep_leases(stop_background))
        fetcher = asyncio.ensure_future(self._fetch_loop())
        try:
            await fetcher
            self._wake_waiters()
        except asyncio.CancelledError:
            # Cancelled from outside: no graceful shutdown; the leases expire on the server.
            for t in (fetcher, reporter, heartbeats, *self._executions):
                t.cancel()
            raise
        # Graceful shutdown: running handlers get the grace period (a second signal ends it)...
        deadline = time.monotonic() + self.shutdown_grace
        forced = asyncio.ensure_future(force.wait())
        while self._executions and not force.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            await asyncio.wait(
                {*self._executions, forced}, timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
        forced.cancel()
        # ...then the rest are stopped, and their leases given back for another worker.
        for ex in list(self._active.values()):
            del self._active[ex.id]
            ex.stop("shutdown")
            self._outbox.push(
                {"task_id": ex.id, "lease": ex.lease, "outcome": {"status": "released"}}
            )
            self.summary.released += 1
        if self._executions:
            await asyncio.wait(set(self._executions), timeout=1.0)
        stop_background.set()
        self._beat_sooner.set()
        await heartbeats
        self._outbox.close()
        try:
            self.summary.report_requests = await asyncio.wait_for(reporter, 10)
        except asyncio.TimeoutError:
            log.warning("some outcomes could not be delivered before the worker stopped")
        log.info("worker stopped: %s", self.summary)
        return self.summary

    def _room(self) -> int:
        may_wait = self._pace.may_wait(self.concurrency, self.prefetch)
        return self.concurrency + may_wait - len(self._active)

    async def _fetch_loop(self) -> None:
        flowing = False
        failures = 0
        while not self._stop.is_set():
            room = min(self._room(), self.max_fetch)
            if room <= 0:
                # Long tasks fill every slot: lease nothing to wait behind them.
                self._moved.clear()
                self._outbox.carriers = 0
                if self._outbox.pending:
                    self._outbox.ring.set()
                await _wait_any(self._moved, self._stop)
                continue
            wait_ms = 0 if flowing else int(self.fetch_wait * 1000)
            self._outbox.carriers = 1 if flowing else 0
            if not flowing and self._outbox.pending:
                self._outbox.ring.set()
            reports = self._outbox.take_for_fetch() if flowing else []
            body: dict[str, Any] = {"queues": self.queues, "limit": room, "wait_ms": wait_ms}
            if reports:
                body["reports"] = reports
            if self._in_flight:
                body["finished"] = list(self._in_flight)[:10_000]
            call: _Call[Any] = _Call(
                "POST",
                f"/v1/workers/{self.worker_id}/fetch",
                lambda d: d,
                body,
                timeout=wait_ms / 1000 + 30,
            )
            request = asyncio.ensure_future(self._client.call(call))
            if wait_ms:
                # A long-poll is abandoned on shutdown: the server leases nothing to a closed call.
                stopping = asyncio.ensure_future(self._stop.wait())
                await asyncio.wait({request, stopping}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if not request.done():
                    request.cancel()
                    with contextlib.suppress(BaseException):
                        await request
                    return
            try:
                # A fetch answered at once is awaited even through a shutdown: the outcomes it
                # carries are then known to be delivered, and the tasks it leased are run.
                answer = await asyncio.shield(request)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self._outbox.put_back(reports)
                self._outbox.carriers = 0
                flowing = False
                failures += 1
                pause = min(6.4, 0.1 * 2**failures)
                log.warning("fetch failed (%s); retrying in %.1fs", e, pause)
                if isinstance(e, ApiError) and e.status == 404:
                    log.error("the server no longer knows this worker; re-registering")
                    new_id = await self._register(self._client, self._stop)
                    if new_id:
                        self.worker_id = new_id
                await _sleep_or(self._stop, pause)
                continue
            failures = 0
            self._note_refusals(answer.get("reports") or [])
            for r in reports:
                self._in_flight.discard(r["task_id"])
            tasks = answer.get("tasks") or []
            self.summary.fetches += 1
            self.summary.fetched += len(tasks)
            for task in tasks:
                self._in_flight.discard(task["id"])
                execution = asyncio.ensure_future(self._execute(task))
                self._executions.add(execution)
                execution.add_done_callback(self._executions.discard)
            flowing = bool(tasks)
        self._outbox.carriers = 0

    # --- executing one task ---

    async def _execute(self, task: dict[str, Any]) -> None:
        task_id = str(task["id"])
        lease = str(task["lease"])
        ctx = Context(
            id=task_id,
            kind=str(task["kind"]),
            queue=str(task["queue"]),
            attempt=int(task.get("attempt") or 1),
            max_attempts=int(task.get("max_attempts") or 1),
            parent_count=int(task.get("parent_count") or 0),
            backend=_WorkerBackend(self, lease),
            worker_id=self.worker_id,
        )
        ex = _Execution(
            task, ctx, lease, max(0.1, int(task.get("lease_timeout_ms") or 30_000) / 1000)
        )
        # Registered before it waits for a slot, so heartbeats keep its lease while it waits.
        self._active[task_id] = ex
        if ex.lease_timeout / 3 < self._beat_interval:
            self._beat_sooner.set()
        leased_at = time.monotonic()
        try:
            if not await self._take_slot(ex):
                return
            try:
                await self._run_handler(ex, leased_at)
            finally:
                self._release_slot()
        finally:
            self._moved.set()

    def _release_slot(self) -> None:
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result("slot")
                return
        self._free_slots += 1

    async def _take_slot(self, ex: _Execution) -> bool:
        """Waits for a free slot; False when the task must not run after all (then reported:
        cancelled, or released for another worker: shutdown, or it waited too long)."""
        if self._free_slots > 0:
            self._free_slots -= 1
            return True
        assert self.loop is not None
        waiter: asyncio.Future[str] = self.loop.create_future()
        if self._stop.is_set():
            waiter.set_result("shutdown")
        self._slot_waiters.append(waiter)
        ex.waiter = waiter
        give_back = self.loop.call_later(PREFETCH_GIVE_BACK, _resolve, waiter, "give back")
        try:
            why = await waiter
        finally:
            give_back.cancel()
            ex.waiter = None
        if why == "slot":
            return True
        if why == "give back":
            # The tasks ahead turned out slow: let another worker run this one now.
            self._pace.at_least(PREFETCH_GIVE_BACK)
        status = "cancelled" if ex.reason == "cancelled" else "released"
        if self._active.get(ex.id) is ex:
            del self._active[ex.id]
            if status == "released":
                self.summary.released += 1
            self._outbox.push({"task_id": ex.id, "lease": ex.lease, "outcome": {"status": status}})
        return False

    def _wake_waiters(self) -> None:
        """Shutdown: tasks waiting for a slot are given back at once."""
        for waiter in self._slot_waiters:
            if not waiter.done():
                waiter.set_result("shutdown")
        self._slot_waiters.clear()

    async def _run_handler(self, ex: _Execution, leased_at: float) -> None:
        handler = self.handlers.get(ex.ctx.kind)
        started = time.monotonic()
        ex.span = span = RunSpan(ex.task, self.worker_id)
        ex.ctx.traceparent = span.traceparent
        outcome: dict[str, Any] | None
        if handler is None:
            outcome = {
                "status": "failed",
                "error": f"no handler for kind {ex.ctx.kind!r} on worker {self.worker_id}",
            }
        else:
            outcome = await self._outcome(handler, ex, leased_at)
        ran = time.monotonic() - started
        self._pace.record(ran)
        run_span = span.end(outcome or {"status": ex.reason or "lease lost"})
        # Still ours? If not, the lease was lost or released: someone else owns the task now.
        if outcome is None or self._active.get(ex.id) is not ex:
            return
        del self._active[ex.id]
        with self._progress_lock:
            self._progress.pop(ex.id, None)
            logs = self._logs.pop(ex.id, None)
        status = outcome["status"]
        if status == "succeeded":
            self.summary.succeeded += 1
        elif status == "cancelled":
            self.summary.cancelled += 1
        else:
            self.summary.failed += 1
        if self.capacity:
            self._in_flight.add(ex.id)
        if log.isEnabledFor(logging.INFO):
            fields = {
                "task_id": ex.id,
                "kind": ex.ctx.kind,
                "attempt": ex.ctx.attempt,
                "outcome": status + (" permanently" if outcome.get("permanent") else ""),
                "run_ms": round(ran * 1000, 3),
            }
            log.info(
                "task %(task_id)s (%(kind)s) attempt %(attempt)d %(outcome)s in %(run_ms).1f ms",
                fields,
                extra=fields,
            )
        report: dict[str, Any] = {
            "task_id": ex.id,
            "lease": ex.lease,
            "outcome": outcome,
            "ran_us": int(ran * 1e6),
        }
        if logs:
            report["logs"] = logs
        if run_span is not None:
            report["traceparent"] = run_span
        self._outbox.push(report)

    async def _outcome(
        self, handler: TaskDef[Any, Any], ex: _Execution, leased_at: float
    ) -> dict[str, Any] | None:
        """Runs the handler under its timeout and stop signal; the outcome to report, or None
        when nothing may be reported (the lease is gone)."""
        try:
            kwargs = handler.signature.decode(ex.task.get("payload"))
        except ConversionError as e:
            # A payload that does not fit will not fit on a retry either.
            return {"status": "failed", "error": f"invalid payload: {e}", "permanent": True}
        except Exception as e:  # an annotation that cannot be resolved, say
            return {"status": "failed", "error": f"cannot read the payload: {e}", "permanent": True}
        timeout = int(ex.task.get("timeout_ms") or 300_000) / 1000
        if handler.options.timeout is not None:
            from .options import seconds

            timeout = min(timeout, seconds(handler.options.timeout))
        # The server's deadline runs from the lease: time spent waiting for a slot comes off.
        timeout = max(0.0, timeout - (time.monotonic() - leased_at))
        if handler.is_async:
            return await self._run_async(handler, ex, kwargs, timeout)
        job = self._start_sync(handler, ex, kwargs)
        ex.job = job
        assert self.loop is not None
        timer = self.loop.call_later(timeout, ex.stop, "timed out")
        try:
            # A sync handler cannot be interrupted: when stopped, stop waiting for its thread.
            await asyncio.wait({job})
        finally:
            timer.cancel()
            ex.job = None
        if ex.reason is None:
            return self._finished(handler, ex.ctx, job)
        return self._stopped(ex, timeout)

    async def _run_async(
        self, handler: TaskDef[Any, Any], ex: _Execution, kwargs: dict[str, Any], timeout: float
    ) -> dict[str, Any] | None:
        """Runs an async handler in this execution's own task: a stop cancels the task, and the
        handler sees CancelledError at its next await."""
        assert self.loop is not None
        runner = asyncio.current_task()
        timer = self.loop.call_later(timeout, ex.stop, "timed out")
        ex.runner = runner
        try:
            assert ex.span is not None
            with ex.span.current(), running(ex.ctx):
                value = await handler.fn(ex.ctx, **kwargs)
        except asyncio.CancelledError:
            if ex.reason is None:
                raise  # not ours: the worker itself is being cancelled
            if runner is not None and hasattr(runner, "uncancel"):
                runner.uncancel()
            return self._stopped(ex, timeout)
        except Exception as e:
            ex.runner = None
            return self._failed(handler, ex.ctx, e)
        finally:
            ex.runner = None
            timer.cancel()
        return self._succeeded(handler, value)

    def _stopped(self, ex: _Execution, timeout: float) -> dict[str, Any] | None:
        if ex.reason == "timed out":
            return {"status": "failed", "error": f"timed out after {timeout:.3f} s"}
        if ex.reason == "cancelled":
            return {"status": "cancelled"}
        return None  # lease lost, or released on shutdown: reported elsewhere if at all

    def _start_sync(
        self, handler: TaskDef[Any, Any], ex: _Execution, kwargs: dict[str, Any]
    ) -> asyncio.Future[Any]:
        assert self._pool is not None and self.loop is not None and ex.span is not None
        self.busy_threads += 1
        thread_job = self._pool.submit(_in_span, ex.span, handler.fn, ex.ctx, kwargs)
        loop = self.loop

        def done(_: concurrent.futures.Future[Any]) -> None:
            self.busy_threads -= 1

        thread_job.add_done_callback(lambda f: loop.call_soon_threadsafe(done, f))
        job = asyncio.wrap_future(thread_job, loop=loop)
        # A handler abandoned (cancelled, timed out) may still end with an exception: read it,
        # so asyncio does not complain that nobody did.
        job.add_done_callback(_consume)
        return job

    def _finished(
        self, handler: TaskDef[Any, Any], ctx: Context, job: asyncio.Future[Any]
    ) -> dict[str, Any]:
        if job.cancelled():
            return {"status": "failed", "error": "the handler was cancelled"}
        e = job.exception()
        if e is None:
            return self._succeeded(handler, job.result())
        if isinstance(e, Exception):
            return self._failed(handler, ctx, e)
        return {"status": "failed", "error": _error_text(e)}

    def _succeeded(self, handler: TaskDef[Any, Any], value: Any) -> dict[str, Any]:
        try:
            if isinstance(value, FanOut):
                result = value.to_json()
            else:
                result = handler.signature.encode_result(value)
        except ConversionError as err:
            return {
                "status": "failed",
                "error": f"result does not serialize: {err}",
                "permanent": True,
            }
        return {"status": "succeeded", "result": result}

    def _failed(self, handler: TaskDef[Any, Any], ctx: Context, e: Exception) -> dict[str, Any]:
        if isinstance(e, Permanent):
            return {"status": "failed", "error": _error_text(e), "permanent": True}
        if isinstance(e, RetryAfter):
            return {
                "status": "failed",
                "error": _error_text(e),
                "retry_after_ms": max(0, round(e.seconds * 1000)),
            }
        # The traceback goes with the outcome (the task's error); the log gets one line.
        log.warning("task %s (%s) attempt %d failed: %r", ctx.id, ctx.kind, ctx.attempt, e)
        return {"status": "failed", "error": _error_text(e)}

    # --- heartbeats ---

    async def _keep_leases(self, stop: asyncio.Event) -> None:
        last_beat = time.monotonic()
        while True:
            interval = min((ex.lease_timeout / 3 for ex in self._active.values()), default=1.0)
            self._beat_interval = min(10.0, max(0.02, interval))
            self._beat_sooner.clear()
            # Woken early when a task with a shorter lease arrives (or on stop).
            await _sleep_or(self._beat_sooner, self._beat_interval)
            if stop.is_set():
                return
            if self._beat_sooner.is_set():
                elapsed = time.monotonic() - last_beat
                shortest = min((ex.lease_timeout / 3 for ex in self._active.values()), default=1.0)
                if elapsed < shortest:
                    await _sleep_or(stop, shortest - elapsed)
                    if stop.is_set():
                        return
            held = list(self._active.values())
            if not held and time.monotonic() - last_beat < IDLE_HEARTBEAT:
                continue
            last_beat = time.monotonic()
            with self._progress_lock:
                progress = {
                    ex.id: self._progress.pop(ex.id) for ex in held if ex.id in self._progress
                }
                logs = {ex.id: self._logs.pop(ex.id) for ex in held if ex.id in self._logs}
            sent = {ex.id: ex for ex in held}
            statuses: list[dict[str, Any]] = []
            failed = False
            for start in range(0, max(1, len(held)), 10_000):  # the server's most per request
                leases = []
                for ex in held[start : start + 10_000]:
                    lease: dict[str, Any] = {"task_id": ex.id, "lease": ex.lease}
                    if ex.id in progress:
                        lease["progress"] = progress[ex.id]
                    if ex.id in logs:
                        lease["logs"] = logs[ex.id]
                    leases.append(lease)
                call: _Call[Any] = _Call(
                    "POST",
                    f"/v1/workers/{self.worker_id}/heartbeat",
                    lambda d: d,
                    {"leases": leases},
                )
                try:
                    statuses += (await self._client.call(call)).get("leases") or []
                except Exception as e:
                    log.warning("heartbeat failed: %s", e)
                    failed = True
            if failed and not statuses:
                continue
            for st in statuses:
                beat = sent.get(st["task_id"])
                # The answer is about the lease we sent; the task may have moved on since.
                if beat is None or self._active.get(beat.id) is not beat:
                    continue
                ex = beat
                if st["status"] == "ok":
                    if st.get("cancel_requested"):
                        ex.stop("cancelled")
                else:
                    log.warning("task %s: lease lost; abandoning the execution", ex.id)
                    del self._active[ex.id]
                    ex.stop("lease lost")
                    self.summary.abandoned += 1
                    self._moved.set()

    # --- reports ---

    async def _reporter(self) -> int:
        sent = 0
        outbox = self._outbox
        while True:
            overdue = False
            if outbox.pending:
                overdue = not await _sleep_or(outbox.ring, CARRY_WITHIN)
            else:
                await outbox.ring.wait()
            outbox.ring.clear()
            while True:
                left_behind, outbox.left_behind = outbox.left_behind, False
                if not (outbox.closed or left_behind or overdue) and outbox.carriers > 0:
                    break  # a fetch will carry them
                batch = outbox.take_batch()
                if not batch:
                    if outbox.closed:
                        return sent
                    break
                await self._send(batch)
                sent += 1
                for r in batch:
                    self._in_flight.discard(r["task_id"])

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        """Delivers one batch, retrying while the server is unreachable or unavailable and
        splitting it when too large; outcomes the server refuses for good are dropped (their
        tasks run again once their leases expire)."""
        pending = [batch]
        failures = 0
        while pending:
            part = pending.pop()
            call: _Call[Any] = _Call(
                "POST", f"/v1/workers/{self.worker_id}/reports", lambda d: d, {"reports": part}
            )
            try:
                answer = await self._client.call(call)
                failures = 0
                self._note_refusals(answer.get("results") or [])
            except ApiError as e:
                if e.status == 413:
                    if len(part) > 1:
                        half = len(part) // 2
                        pending += [part[half:], part[:half]]
                    else:
                        outcome = {
                            "status": "failed",
                            "error": "the result is larger than the server accepts",
                            "permanent": True,
                        }
                        pending.append([{**part[0], "outcome": outcome}])
                elif 400 <= e.status < 500:
                    log.error("reports refused by the server: %s", e)
                else:
                    failures += 1
                    pending.append(part)
                    await asyncio.sleep(min(6.4, 0.05 * 2**failures))
            except TransportError as e:
                failures += 1
                log.warning("report failed (%s); retrying", e)
                pending.append(part)
                await asyncio.sleep(min(6.4, 0.05 * 2**failures))

    def _note_refusals(self, results: list[dict[str, Any]]) -> None:
        for r in results:
            if r.get("status") != "ok":
                log.warning("report for task %s refused: %s", r.get("task_id"), r.get("status"))


class _WorkerBackend:
    """A context's calls, made by the worker on its task's lease."""

    def __init__(self, worker: Worker, lease: str) -> None:
        self.worker = worker
        self.lease = lease
        self.loop = worker.loop

    def progress(self, ctx: Context, fraction: float, message: str | None) -> None:
        entry: dict[str, Any] = {"fraction": fraction}
        if message is not None:
            entry["message"] = message[:4096]
        with self.worker._progress_lock:
            self.worker._progress[ctx.id] = entry

    def log(self, ctx: Context, line: str) -> None:
        at = datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")
        with self.worker._progress_lock:
            lines = self.worker._logs.setdefault(ctx.id, [])
            # Bounded between heartbeats: the server keeps 1,000 lines per attempt anyway.
            if len(lines) < MAX_UNSENT_LOG_LINES:
                lines.append({"at": at, "line": line[:4096]})

    async def fan_out(self, ctx: Context, body: dict[str, Any]) -> FanOut[Any]:
        answer = await self.worker._client.raw(
            "POST", f"/v1/tasks/{ctx.id}/fan-out", {**body, "lease": self.lease}, timeout=120
        )
        return FanOut(str(answer["workflow_id"]), str(answer["join_id"]), int(answer["children"]))

    async def parents_page(
        self, ctx: Context, after: str | None, limit: int
    ) -> tuple[list[ParentResult], str | None]:
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        call: _Call[Any] = _Call("GET", f"/v1/tasks/{ctx.id}/parents", lambda d: d, params=params)
        answer = await self.worker._client.call(call)
        parents = [
            ParentResult(
                node=p["node"],
                task_id=p["task_id"],
                state=p["state"],
                result=p.get("result"),
                error=p.get("error"),
            )
            for p in answer["parents"]
        ]
        return parents, answer.get("next")


def _in_span(span: RunSpan, fn: Any, ctx: Context, kwargs: dict[str, Any]) -> Any:
    """Runs a sync handler in its pool thread with the run span and its task current."""
    with span.current(), running(ctx):
        return fn(ctx, **kwargs)


def _resolve(future: asyncio.Future[str], value: str) -> None:
    if not future.done():
        future.set_result(value)


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


async def _sleep_or(event: asyncio.Event, seconds: float) -> bool:
    """Sleeps up to ``seconds`` or until ``event`` is set; True if it was set."""
    if event.is_set():
        return True
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except asyncio.TimeoutError:
        return event.is_set()
    return True


async def _wait_any(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
