"""The ``Taskwarden`` app: declare tasks with ``@app.task``, submit them with typed calls, await
their results, gather many, and run a worker for them.

A task's kind (its name on the server) is the handler function's plain name (``fetch``), not
``module.function``: the same function imported as ``__main__`` in a script and as ``myapp`` in
a worker then still has one name. Give ``name=`` to choose another; two tasks of one app cannot
share a name.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Concatenate, Generic, Literal, ParamSpec, TypeVar, overload

from .client import AsyncClient, Client, TaskInfo, WorkflowInfo, make_submit_body
from .context import Context
from .convert import Signature
from .errors import QuorumNotReached, TaskFailed, task_failed
from .options import BackoffLike, Duration, TaskOptions
from .workflow import FanOut, Node, Policy, Quorum

if TYPE_CHECKING:
    from .worker import RunSummary, Worker

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

GatherPolicy = Policy


class TaskDef(Generic[P, R]):
    """A declared task: its handler, kind name and default options. Call ``submit`` (or
    ``submit_sync``, ``map``) with the handler's arguments after ``ctx``; they form the payload
    object by parameter name."""

    def __init__(
        self,
        app: Taskwarden,
        fn: Callable[..., Any],
        name: str,
        options: TaskOptions,
        signature: Signature | None = None,
    ) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.options = options
        self.signature = signature or Signature(fn)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", name)
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<TaskDef {self.name} queue={self.queue!r}>"

    @property
    def queue(self) -> str:
        return self.options.queue or self.app.default_queue

    def with_options(
        self,
        *,
        queue: str | None = None,
        priority: int | None = None,
        retries: int | None = None,
        timeout: Duration | None = None,
        lease_timeout: Duration | None = None,
        backoff: BackoffLike | None = None,
        tags: Sequence[str] | None = None,
        resources: Mapping[str, int] | None = None,
        labels: Mapping[str, str] | None = None,
        concurrency_key: str | None = None,
        rate_key: str | None = None,
        idempotency_key: str | None = None,
        delay: Duration | None = None,
        run_at: Any = None,
        expires_in: Duration | None = None,
        expires_at: Any = None,
    ) -> TaskDef[P, R]:
        """This task with options for the next calls: ``fetch.with_options(priority=10,
        delay="5s", idempotency_key="order-42").submit(url=...)``. Options are kept apart from
        the payload's keyword arguments so that no parameter name is taken."""
        options = self.options.merged(
            queue=queue,
            priority=priority,
            retries=retries,
            timeout=timeout,
            lease_timeout=lease_timeout,
            backoff=backoff,
            tags=tags,
            resources=resources,
            labels=labels,
            concurrency_key=concurrency_key,
            rate_key=rate_key,
            idempotency_key=idempotency_key,
            delay=delay,
            run_at=run_at,
            expires_in=expires_in,
            expires_at=expires_at,
        )
        return TaskDef(self.app, self.fn, self.name, options, self.signature)

    # --- payloads ---

    def payload(self, *args: P.args, **kwargs: P.kwargs) -> dict[str, Any]:
        """The payload object a call with these arguments submits."""
        return self.signature.payload(args, kwargs)

    def _item_payload(self, item: Any) -> dict[str, Any]:
        """A ``map``/``each`` item's payload: a mapping is keyword arguments, a tuple positional
        ones, anything else the single argument of a one-parameter task."""
        if isinstance(item, Mapping):
            return self.signature.payload((), dict(item))
        if isinstance(item, tuple):
            return self.signature.payload(item, {})
        return self.signature.payload((item,), {})

    def body(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The submit request for a payload, with this task's options."""
        return make_submit_body(self.name, payload, self.options, queue=self.queue)

    def decode_result(self, data: Any) -> R:
        """A result as the handler's return annotation says (the join's, for ``FanOut[R]``)."""
        value: R = self.signature.decode_result(data)
        return value

    # --- submitting ---

    async def submit(self, *args: P.args, **kwargs: P.kwargs) -> TaskRef[R]:
        """Submits one task; returns a reference to await its result with."""
        info = await self.app.client.submit_body(self.body(self.payload(*args, **kwargs)))
        return TaskRef(self.app, info.id, self)

    def submit_sync(self, *args: P.args, **kwargs: P.kwargs) -> SyncTaskRef[R]:
        """``submit`` from blocking code."""
        info = self.app.sync_client.submit_body(self.body(self.payload(*args, **kwargs)))
        return SyncTaskRef(self.app, info.id, self)

    async def map(self, items: Iterable[Any]) -> list[TaskRef[R]]:
        """Submits one task per item, atomically in batches of up to 10,000 (each item a mapping
        of keyword arguments, a tuple of positional ones, or a one-parameter task's argument)."""
        bodies = [self.body(self._item_payload(item)) for item in items]
        refs: list[TaskRef[R]] = []
        for start in range(0, len(bodies), 10_000):
            infos = await self.app.client.submit_batch(bodies[start : start + 10_000])
            refs.extend(TaskRef(self.app, info.id, self) for info in infos)
        return refs

    def map_sync(self, items: Iterable[Any]) -> list[SyncTaskRef[R]]:
        """``map`` from blocking code."""
        bodies = [self.body(self._item_payload(item)) for item in items]
        refs: list[SyncTaskRef[R]] = []
        for start in range(0, len(bodies), 10_000):
            infos = self.app.sync_client.submit_batch(bodies[start : start + 10_000])
            refs.extend(SyncTaskRef(self.app, info.id, self) for info in infos)
        return refs

    # --- as part of a graph ---

    def node(self, *args: P.args, **kwargs: P.kwargs) -> Node[R]:
        """This task as a node of a workflow or a fan-out (``.named(id)``, ``.after(...)``)."""
        return Node(self.name, self.payload(*args, **kwargs), self.options.merged(queue=self.queue))

    def each(self, items: Iterable[Any]) -> list[Node[R]]:
        """One node per item (as ``map`` reads items): a fan-out's children."""
        options = self.options.merged(queue=self.queue)
        return [Node(self.name, self._item_payload(item), options) for item in items]


class TaskDecorator:
    """What ``@app.task(...)`` with options returns: call it on the handler."""

    def __init__(self, app: Taskwarden, name: str | None, options: TaskOptions) -> None:
        self._app = app
        self._name = name
        self._options = options

    @overload
    def __call__(
        self, fn: Callable[Concatenate[Context, P], Coroutine[Any, Any, FanOut[R]]], /
    ) -> TaskDef[P, R]: ...
    @overload
    def __call__(
        self, fn: Callable[Concatenate[Context, P], Coroutine[Any, Any, R]], /
    ) -> TaskDef[P, R]: ...
    @overload
    def __call__(self, fn: Callable[Concatenate[Context, P], FanOut[R]], /) -> TaskDef[P, R]: ...
    @overload
    def __call__(self, fn: Callable[Concatenate[Context, P], R], /) -> TaskDef[P, R]: ...
    def __call__(self, fn: Callable[..., Any], /) -> TaskDef[Any, Any]:
        return self._app._declare(fn, self._name, self._options)


class TaskRef(Generic[R]):
    """A submitted task: await its result, follow it, cancel it."""

    def __init__(self, app: Taskwarden, id: str, task: TaskDef[Any, R] | None = None) -> None:
        self.app = app
        self.id = id
        self.task = task

    def __repr__(self) -> str:
        kind = self.task.name if self.task else "?"
        return f"TaskRef({kind} {self.id})"

    async def info(self) -> TaskInfo:
        """The task as it is now."""
        return await self.app.client.get(self.id)

    async def wait(self, timeout: float | None = None) -> TaskInfo:
        """Waits until it is decided (through any fan-out's join) and returns the task that
        decided it; raises only ``WaitTimeout``."""
        return await self.app.client.wait_outcome(self.id, timeout)

    async def result(self, timeout: float | None = None) -> R:
        """Its result, converted to the handler's return type, once it succeeded (a task that
        fanned out: its join's result). Raises ``TaskFailed`` (``TaskCancelled``,
        ``TaskExpired``) with the error and attempts if it did not, ``WaitTimeout`` past
        ``timeout`` seconds."""
        return self.app._outcome(await self.wait(timeout), self.task)

    async def cancel(self) -> TaskInfo:
        """Cancels it: at once if it waits; a running handler is stopped."""
        return await self.app.client.cancel(self.id)

    async def retry(self) -> TaskInfo:
        """Runs a failed, cancelled or expired task again."""
        return await self.app.client.retry(self.id)


class SyncTaskRef(Generic[R]):
    """A submitted task, for blocking code."""

    def __init__(self, app: Taskwarden, id: str, task: TaskDef[Any, R] | None = None) -> None:
        self.app = app
        self.id = id
        self.task = task

    def __repr__(self) -> str:
        kind = self.task.name if self.task else "?"
        return f"SyncTaskRef({kind} {self.id})"

    def info(self) -> TaskInfo:
        return self.app.sync_client.get(self.id)

    def wait(self, timeout: float | None = None) -> TaskInfo:
        return self.app.sync_client.wait_outcome(self.id, timeout)

    def result(self, timeout: float | None = None) -> R:
        """Like ``TaskRef.result``, blocking."""
        return self.app._outcome(self.wait(timeout), self.task)

    def cancel(self) -> TaskInfo:
        return self.app.sync_client.cancel(self.id)

    def retry(self) -> TaskInfo:
        return self.app.sync_client.retry(self.id)


@dataclass(frozen=True)
class WorkflowRef:
    """A submitted workflow."""

    app: Taskwarden
    id: str

    async def info(self) -> WorkflowInfo:
        return await self.app.client.get_workflow(self.id)

    async def wait(self, timeout: float | None = None) -> WorkflowInfo:
        return await self.app.client.wait_workflow(self.id, timeout)

    async def result(self, timeout: float | None = None) -> Any:
        """The workflow's result (its sink's, or an object by node id for several sinks) once it
        succeeded; ``TaskFailed`` with its error otherwise."""
        wf = await self.wait(timeout)
        if wf.state != "succeeded":
            raise TaskFailed(self.id, wf.state, wf.error, wf.failed, wf.raw)
        return wf.result

    async def cancel(self) -> WorkflowInfo:
        return await self.app.client.cancel_workflow(self.id)

    async def retry(self) -> WorkflowInfo:
        return await self.app.client.retry_workflow(self.id)


class Taskwarden:
    """An app: the server to talk to, and the tasks declared on it.

    ``url`` may list several server nodes, comma-separated; ``token``, ``ca_cert`` (a PEM file)
    and ``client_cert`` (PEM, or a (cert, key) pair) default to ``TASKWARDEN_TOKEN`` and
    ``TASKWARDEN_CA_CERT``. ``queue`` is the queue of tasks that name none.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        ca_cert: str | None = None,
        client_cert: str | tuple[str, str] | None = None,
        queue: str = "default",
    ) -> None:
        self.url = url
        self.default_queue = queue
        self.tasks: dict[str, TaskDef[Any, Any]] = {}
        self._client_args: dict[str, Any] = {
            "token": token,
            "ca_cert": ca_cert,
            "client_cert": client_cert,
        }
        self._async: tuple[asyncio.AbstractEventLoop, AsyncClient] | None = None
        self._sync: Client | None = None

    def __repr__(self) -> str:
        return f"<Taskwarden {self.url or '(TASKWARDEN_URL)'} tasks={sorted(self.tasks)}>"

    def configure(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        ca_cert: str | None = None,
        client_cert: str | tuple[str, str] | None = None,
    ) -> None:
        """Changes the server or credentials (those given), say from a worker's command line or
        a test fixture; clients made before are dropped and new ones made on next use."""
        if url is not None:
            self.url = url
        for key, value in (("token", token), ("ca_cert", ca_cert), ("client_cert", client_cert)):
            if value is not None:
                self._client_args[key] = value
        self._async = None
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    # --- declaring tasks ---

    @overload
    def task(
        self, fn: Callable[Concatenate[Context, P], Coroutine[Any, Any, FanOut[R]]], /
    ) -> TaskDef[P, R]: ...
    @overload
    def task(
        self, fn: Callable[Concatenate[Context, P], Coroutine[Any, Any, R]], /
    ) -> TaskDef[P, R]: ...
    @overload
    def task(self, fn: Callable[Concatenate[Context, P], FanOut[R]], /) -> TaskDef[P, R]: ...
    @overload
    def task(self, fn: Callable[Concatenate[Context, P], R], /) -> TaskDef[P, R]: ...
    @overload
    def task(
        self,
        *,
        name: str | None = None,
        queue: str | None = None,
        retries: int | None = None,
        timeout: Duration | None = None,
        backoff: BackoffLike | None = None,
        priority: int | None = None,
        lease_timeout: Duration | None = None,
        tags: Sequence[str] | None = None,
        resources: Mapping[str, int] | None = None,
        labels: Mapping[str, str] | None = None,
        concurrency_key: str | None = None,
        rate_key: str | None = None,
        expires_in: Duration | None = None,
    ) -> TaskDecorator: ...
    def task(
        self,
        fn: Any = None,
        *,
        name: str | None = None,
        queue: str | None = None,
        retries: int | None = None,
        timeout: Duration | None = None,
        backoff: BackoffLike | None = None,
        priority: int | None = None,
        lease_timeout: Duration | None = None,
        tags: Sequence[str] | None = None,
        resources: Mapping[str, int] | None = None,
        labels: Mapping[str, str] | None = None,
        concurrency_key: str | None = None,
        rate_key: str | None = None,
        expires_in: Duration | None = None,
    ) -> TaskDef[Any, Any] | TaskDecorator:
        """Declares a task. The handler (``async def`` or plain ``def``) takes a ``Context``
        first, then its payload's fields as typed parameters. ``retries`` is how many times a
        failed attempt is tried again (``retries=5``: at most 6 attempts); ``timeout`` stops an
        attempt (a retryable failure); ``backoff`` is ``"exponential"``, ``"fixed"``, a
        duration or a ``Backoff``. They are sent with each submit, so the server applies them."""
        options = TaskOptions(
            queue=queue,
            retries=retries,
            timeout=timeout,
            backoff=backoff,
            priority=priority,
            lease_timeout=lease_timeout,
            tags=tags,
            resources=resources,
            labels=labels,
            concurrency_key=concurrency_key,
            rate_key=rate_key,
            expires_in=expires_in,
        )
        decorator = TaskDecorator(self, name, options)
        if fn is not None:
            return decorator(fn)
        return decorator

    def _declare(
        self, fn: Callable[..., Any], name: str | None, options: TaskOptions
    ) -> TaskDef[Any, Any]:
        kind = name or fn.__name__
        if kind in self.tasks:
            raise ValueError(f"a task named {kind!r} is declared already: give one name=")
        task: TaskDef[Any, Any] = TaskDef(self, fn, kind, options)
        self.tasks[kind] = task
        return task

    # --- clients ---

    @property
    def client(self) -> AsyncClient:
        """The asyncio client (one per event loop)."""
        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop or loop.is_closed():
            self._async = (loop, AsyncClient(self.url, **self._client_args))
        return self._async[1]

    @property
    def sync_client(self) -> Client:
        """The blocking client."""
        if self._sync is None:
            self._sync = Client(self.url, **self._client_args)
        return self._sync

    async def aclose(self) -> None:
        if self._async is not None:
            await self._async[1].aclose()
            self._async = None

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    def ref(self, task_id: str, task: TaskDef[Any, R] | None = None) -> TaskRef[R]:
        """A reference to a task submitted earlier (by id)."""
        return TaskRef(self, task_id, task)

    def _outcome(self, info: TaskInfo, task: TaskDef[Any, R] | None) -> R:
        if info.state != "succeeded":
            raise task_failed(info.raw)
        if task is None:
            task = self.tasks.get(info.kind)
        value: R = info.result if task is None else task.decode_result(info.result)
        return value

    # --- gathering ---

    @overload
    async def gather(
        self,
        refs: Sequence[TaskRef[R]],
        policy: Literal["fail_fast"] = "fail_fast",
        *,
        timeout: float | None = None,
    ) -> list[R]: ...
    @overload
    async def gather(
        self,
        refs: Sequence[TaskRef[R]],
        policy: Literal["collect"],
        *,
        timeout: float | None = None,
    ) -> list[R | TaskFailed]: ...
    @overload
    async def gather(
        self, refs: Sequence[TaskRef[R]], policy: Quorum, *, timeout: float | None = None
    ) -> list[R | TaskFailed | None]: ...
    async def gather(
        self,
        refs: Sequence[TaskRef[R]],
        policy: GatherPolicy = "fail_fast",
        *,
        timeout: float | None = None,
    ) -> list[Any]:
        """The results of many tasks, in the order of ``refs``.

        - ``"fail_fast"``: every result; the first failure cancels the tasks still unfinished
          and raises its ``TaskFailed``.
        - ``"collect"``: waits for all; a failed task's place holds its ``TaskFailed``.
        - ``Quorum(0.9)`` / ``Quorum(min_successes=n)``: returns as soon as enough succeeded,
          cancelling the rest (their places hold ``None``, a failed one's its ``TaskFailed``);
          raises ``QuorumNotReached`` once too many failed.
        """
        if isinstance(policy, str) and policy not in ("fail_fast", "collect"):
            raise ValueError(f"unknown gather policy {policy!r}")
        results: list[Any] = [None] * len(refs)
        needed = policy.needed(len(refs)) if isinstance(policy, Quorum) else len(refs)
        succeeded = 0
        failures: list[TaskFailed] = []
        # Each wait long-polls the server; bound how many are open at once.
        gate = asyncio.Semaphore(256)

        async def one(i: int) -> tuple[int, TaskInfo]:
            async with gate:
                return i, await refs[i].wait(timeout)

        waits = [asyncio.ensure_future(one(i)) for i in range(len(refs))]
        done_ids: set[int] = set()
        try:
            for next_done in asyncio.as_completed(waits):
                i, info = await next_done
                done_ids.add(i)
                try:
                    results[i] = self._outcome(info, refs[i].task)
                    succeeded += 1
                except TaskFailed as e:
                    if policy == "fail_fast":
                        await self._cancel_rest(refs, done_ids)
                        raise
                    results[i] = e
                    failures.append(e)
                if isinstance(policy, Quorum):
                    if succeeded >= needed:
                        await self._cancel_rest(refs, done_ids)
                        return results
                    if len(failures) > len(refs) - needed:
                        await self._cancel_rest(refs, done_ids)
                        raise QuorumNotReached(needed, succeeded, failures)
            return results
        finally:
            for w in waits:
                w.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def _cancel_rest(self, refs: Sequence[TaskRef[Any]], done: set[int]) -> None:
        """Best-effort: cancel the tasks a gather no longer waits for."""
        rest = [r for i, r in enumerate(refs) if i not in done]
        gate = asyncio.Semaphore(64)

        async def cancel(ref: TaskRef[Any]) -> None:
            async with gate:
                await ref.cancel()

        await asyncio.gather(*(cancel(r) for r in rest), return_exceptions=True)

    # --- workflows ---

    async def submit_workflow(
        self, nodes: Sequence[Node[Any]], *, name: str | None = None, policy: Policy | None = None
    ) -> WorkflowRef:
        """Submits a DAG: ``[split.node(...).named("a"), merge.node().named("m").after("a")]``."""
        wf = await self.client.submit_workflow(nodes, name=name, policy=policy)
        return WorkflowRef(self, wf.id)

    # --- running a worker ---

    def worker(
        self,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int = 16,
        **settings: Any,
    ) -> Worker:
        """A worker for this app's tasks (see ``Worker`` for the settings)."""
        from .worker import Worker

        return Worker(self, queues=queues, concurrency=concurrency, **settings)

    async def run_worker(
        self,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int = 16,
        stop: asyncio.Event | None = None,
        **settings: Any,
    ) -> RunSummary:
        """Runs a worker on this event loop until ``stop`` is set (or the task is cancelled),
        then shuts it down gracefully."""
        return await self.worker(queues=queues, concurrency=concurrency, **settings).run(stop)
