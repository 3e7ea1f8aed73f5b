"""HTTP clients for the Taskwarden API: ``AsyncClient`` (asyncio) and ``Client`` (blocking).

Both speak the same calls, built once here as plain request descriptions (``_Call``) and sent by
each client's own transport, so the two cannot drift apart. Errors come back typed
(``NotFound``, ``Unprocessable`` with the JSON path in ``field``, ...; see ``errors``).

Several server nodes can be given comma-separated (``"http://a:7433,http://b:7433"``): a request
that surely did not run (connection refused, 503) moves on to the next node.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx

from .errors import (
    ApiError,
    TaskwardenError,
    TransportError,
    Unavailable,
    WaitTimeout,
    api_error,
)
from .options import TaskOptions
from .traces import with_traceparent
from .transport import BrokenResponse, ConnectFailed, Pool
from .workflow import Node, Policy, as_nodes, policy_json

T = TypeVar("T")

TERMINAL = frozenset({"succeeded", "failed", "cancelled", "expired"})
"""Task states a task never leaves on its own."""

_POLL_MS = 30_000  # one long-poll of a wait; the server allows up to 60 s


@dataclass(frozen=True)
class TaskInfo:
    """A task as the server returns it. ``raw`` holds every field, these the ones most used."""

    id: str
    queue: str
    kind: str
    state: str
    payload: Any = None
    result: Any = None
    error: str | None = None
    attempts: int = 0
    max_attempts: int = 0
    workflow_id: str | None = None
    node: str | None = None
    progress: dict[str, Any] | None = None
    unschedulable: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TaskInfo:
        return cls(
            id=d["id"],
            queue=d.get("queue", ""),
            kind=d.get("kind", ""),
            state=d.get("state", ""),
            payload=d.get("payload"),
            result=d.get("result"),
            error=d.get("error"),
            attempts=int(d.get("attempts") or 0),
            max_attempts=int(d.get("max_attempts") or 0),
            workflow_id=d.get("workflow_id"),
            node=d.get("node"),
            progress=d.get("progress"),
            unschedulable=d.get("unschedulable"),
            raw=d,
        )


@dataclass(frozen=True)
class TaskPage:
    """One page of a task list, newest first; pass ``next_cursor`` as ``cursor`` for more."""

    tasks: list[TaskInfo]
    next_cursor: str | None


@dataclass(frozen=True)
class WorkflowInfo:
    """A workflow: its state, result (its sink's), nodes and, once run, the speedup report."""

    id: str
    state: str
    name: str | None = None
    result: Any = None
    error: str | None = None
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    nodes: list[dict[str, Any]] = field(default_factory=list)
    speedup: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> WorkflowInfo:
        return cls(
            id=d["id"],
            state=d.get("state", ""),
            name=d.get("name"),
            result=d.get("result"),
            error=d.get("error"),
            total=int(d.get("total") or 0),
            succeeded=int(d.get("succeeded") or 0),
            failed=int(d.get("failed") or 0),
            nodes=list(d.get("nodes") or []),
            speedup=d.get("speedup"),
            raw=d,
        )

    def node_task(self, node: str) -> str | None:
        """The task id of a node, by its id in the graph."""
        for n in self.nodes:
            if n.get("node") == node:
                return str(n["task_id"])
        return None


@dataclass(frozen=True)
class KindInfo:
    """A kind as the server knows it: live workers with a handler, ready tasks, its schema."""

    kind: str
    workers: int
    queues: list[str]
    ready: int
    schema: Any = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> KindInfo:
        return cls(
            kind=d["kind"],
            workers=int(d.get("workers") or 0),
            queues=list(d.get("queues") or []),
            ready=int(d.get("ready") or 0),
            schema=d.get("schema"),
            raw=d,
        )


def make_submit_body(
    kind: str, payload: Any = None, options: TaskOptions | None = None, **changes: Any
) -> dict[str, Any]:
    """The body of a submit: kind, payload and options (queue ``default`` unless set)."""
    opts = (options or TaskOptions()).merged(**changes)
    body: dict[str, Any] = {"queue": opts.queue or "default", "kind": kind}
    if payload is not None:
        body["payload"] = payload
    body.update(opts.to_json())
    return body


@dataclass(frozen=True)
class _Call(Generic[T]):
    """One request, and how to read its answer."""

    method: str
    path: str
    decode: Callable[[Any], T]
    body: Any = None
    params: Mapping[str, Any] | None = None
    timeout: float = 30.0


def _query(**params: Any) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def _event_filters(types: Sequence[str] | None = None, **filters: Any) -> dict[str, Any]:
    """The query of ``GET /v1/events``: ``types`` (a list) goes as the comma-separated ``type``."""
    params = _query(**filters)
    if types:
        params["type"] = ",".join(types)
    return params


def _same(x: Any) -> Any:
    return x


class _Calls:
    """The API's calls, as request descriptions both clients send."""

    @staticmethod
    def submit(body: dict[str, Any]) -> _Call[TaskInfo]:
        return _Call("POST", "/v1/tasks", TaskInfo.from_json, with_traceparent(body))

    @staticmethod
    def submit_batch(bodies: Sequence[dict[str, Any]]) -> _Call[list[TaskInfo]]:
        def decode(d: Any) -> list[TaskInfo]:
            return [TaskInfo.from_json(t) for t in d["tasks"]]

        tasks = [with_traceparent(b) for b in bodies]
        return _Call("POST", "/v1/tasks/batch", decode, {"tasks": tasks}, timeout=120.0)

    @staticmethod
    def get(task_id: str) -> _Call[TaskInfo]:
        return _Call("GET", f"/v1/tasks/{task_id}", TaskInfo.from_json)

    @staticmethod
    def events(after: str | None, limit: int | None, **filters: Any) -> _Call[dict[str, Any]]:
        params = _event_filters(after=after, limit=limit, **filters)
        return _Call("GET", "/v1/events", lambda d: dict(d), params=params)

    @staticmethod
    def logs(task_id: str, after: int, timeout_ms: int) -> _Call[dict[str, Any]]:
        return _Call(
            "GET",
            f"/v1/tasks/{task_id}/logs",
            lambda d: dict(d),
            params={"after": after, "timeout_ms": timeout_ms},
            timeout=timeout_ms / 1000 + 30,
        )

    @staticmethod
    def wait_once(task_id: str, timeout_ms: int) -> _Call[TaskInfo]:
        return _Call(
            "GET",
            f"/v1/tasks/{task_id}/wait",
            TaskInfo.from_json,
            params={"timeout_ms": timeout_ms},
            timeout=timeout_ms / 1000 + 30,
        )

    @staticmethod
    def cancel(task_id: str) -> _Call[TaskInfo]:
        return _Call("POST", f"/v1/tasks/{task_id}/cancel", TaskInfo.from_json)

    @staticmethod
    def retry(task_id: str) -> _Call[TaskInfo]:
        return _Call("POST", f"/v1/tasks/{task_id}/retry", TaskInfo.from_json)

    @staticmethod
    def list_tasks(**filters: Any) -> _Call[TaskPage]:
        def decode(d: Any) -> TaskPage:
            return TaskPage([TaskInfo.from_json(t) for t in d["tasks"]], d.get("next_cursor"))

        return _Call("GET", "/v1/tasks", decode, params=_query(**filters))

    @staticmethod
    def submit_workflow(
        nodes: Sequence[Node[Any]], name: str | None, policy: Policy | None
    ) -> _Call[WorkflowInfo]:
        body: dict[str, Any] = with_traceparent({"tasks": as_nodes(nodes)})
        if name is not None:
            body["name"] = name
        if policy is not None:
            body["failure_policy"] = policy_json(policy)
        return _Call("POST", "/v1/workflows", WorkflowInfo.from_json, body)

    @staticmethod
    def get_workflow(workflow_id: str) -> _Call[WorkflowInfo]:
        return _Call("GET", f"/v1/workflows/{workflow_id}", WorkflowInfo.from_json)

    @staticmethod
    def wait_workflow_once(workflow_id: str, timeout_ms: int) -> _Call[WorkflowInfo]:
        return _Call(
            "GET",
            f"/v1/workflows/{workflow_id}/wait",
            WorkflowInfo.from_json,
            params={"timeout_ms": timeout_ms},
            timeout=timeout_ms / 1000 + 30,
        )

    @staticmethod
    def cancel_workflow(workflow_id: str) -> _Call[WorkflowInfo]:
        return _Call("POST", f"/v1/workflows/{workflow_id}/cancel", WorkflowInfo.from_json)

    @staticmethod
    def retry_workflow(workflow_id: str) -> _Call[WorkflowInfo]:
        return _Call("POST", f"/v1/workflows/{workflow_id}/retry", WorkflowInfo.from_json)

    @staticmethod
    def workflows(**filters: Any) -> _Call[list[WorkflowInfo]]:
        def decode(d: Any) -> list[WorkflowInfo]:
            return [WorkflowInfo.from_json(w) for w in d["workflows"]]

        return _Call("GET", "/v1/workflows", decode, params=_query(**filters))

    @staticmethod
    def kinds() -> _Call[list[KindInfo]]:
        def decode(d: Any) -> list[KindInfo]:
            return [KindInfo.from_json(k) for k in d["kinds"]]

        return _Call("GET", "/v1/kinds", decode)

    @staticmethod
    def workers() -> _Call[list[dict[str, Any]]]:
        return _Call("GET", "/v1/workers", lambda d: list(d["workers"]))

    @staticmethod
    def queues() -> _Call[list[dict[str, Any]]]:
        return _Call("GET", "/v1/queues", lambda d: list(d["queues"]))


def _join_of(task: TaskInfo) -> str | None:
    """The join that stands in for a task that fanned out, if its result says so (a task fanned
    out by this SDK returns its ``FanOut``)."""
    result = task.result
    if isinstance(result, dict) and isinstance(result.get("fan_out"), dict):
        join = result["fan_out"].get("join_id")
        return str(join) if join else None
    return None


def _ssl_context(ca_cert: str | None, client_cert: str | tuple[str, str] | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_cert)
    if isinstance(client_cert, tuple):
        ctx.load_cert_chain(client_cert[0], client_cert[1])
    elif client_cert is not None:
        ctx.load_cert_chain(client_cert)
    return ctx


class _Settings:
    """What both clients share: the server URLs, the token and the TLS settings. ``token`` and
    ``ca_cert`` default to ``TASKWARDEN_TOKEN`` and ``TASKWARDEN_CA_CERT``."""

    def __init__(
        self,
        url: str | None,
        token: str | None,
        ca_cert: str | None,
        client_cert: str | tuple[str, str] | None,
    ) -> None:
        url = url or os.environ.get("TASKWARDEN_URL") or "http://127.0.0.1:7433"
        self.urls = [u.strip().rstrip("/") for u in url.split(",") if u.strip()]
        if not self.urls:
            raise ValueError("no server URL given")
        for u in self.urls:
            if not u.startswith(("http://", "https://")):
                raise ValueError(f"server URL {u!r} must start with http:// or https://")
        # token="" asks for none, whatever TASKWARDEN_TOKEN says.
        self.token = (token if token is not None else os.environ.get("TASKWARDEN_TOKEN")) or None
        if self.token is not None and not all(33 <= ord(c) < 127 for c in self.token):
            raise ValueError("the token must be printable ASCII with no spaces")
        ca_cert = ca_cert or os.environ.get("TASKWARDEN_CA_CERT") or None
        self.verify: ssl.SSLContext | bool = (
            _ssl_context(ca_cert, client_cert) if (ca_cert or client_cert) else True
        )
        self.current = 0
        self.headers = {"user-agent": "taskwarden-python/0.1"}
        if self.token:
            self.headers["authorization"] = f"Bearer {self.token}"

    @property
    def url(self) -> str:
        return self.urls[self.current % len(self.urls)]

    def request_args(self, call: _Call[Any], node: int) -> dict[str, Any]:
        args: dict[str, Any] = {
            "method": call.method,
            "url": self.urls[node] + call.path,
            "params": call.params,
            "timeout": call.timeout,
        }
        if call.method != "GET":
            # The server wants every write to say it is JSON, even an empty one.
            args["json"] = call.body if call.body is not None else {}
        return args

    def read(self, call: _Call[T], status: int, content: bytes) -> T:
        if status >= 400:
            raise _error_of(status, content)
        data = json.loads(content) if content else None
        try:
            return call.decode(data)
        except (KeyError, TypeError) as e:
            raise TaskwardenError(f"unexpected answer from {call.path}: {e!r}") from None

    def fail_over(self, node: int) -> bool:
        """Moves on to the next node after ``node``; False when there is only one."""
        if len(self.urls) == 1:
            return False
        self.current = (node + 1) % len(self.urls)
        return True


def _error_of(status: int, content: bytes) -> ApiError:
    try:
        detail = json.loads(content)["error"]
        return api_error(
            status,
            str(detail.get("code", "http")),
            str(detail.get("message", "")),
            detail.get("field"),
        )
    except (ValueError, KeyError, TypeError):
        return api_error(status, "http", content[:500].decode("utf-8", "replace"))


def _limits() -> httpx.Limits:
    # Many waits may be long-polling at once (gather): allow enough connections for them.
    return httpx.Limits(max_connections=512, max_keepalive_connections=64)


class AsyncClient:
    """An asyncio client. Use it as ``async with AsyncClient(url) as client: ...``, or keep one
    for the life of the program and ``await client.aclose()`` at the end."""

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        ca_cert: str | None = None,
        client_cert: str | tuple[str, str] | None = None,
    ) -> None:
        self._s = _Settings(url, token, ca_cert, client_cert)
        context = self._s.verify if isinstance(self._s.verify, ssl.SSLContext) else None
        self._pools = [Pool(u, self._s.headers, context) for u in self._s.urls]

    @property
    def url(self) -> str:
        return self._s.url

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()

    async def call(self, call: _Call[T]) -> T:
        """Sends one request (trying the next node while a node cannot take it)."""
        body = None if call.method == "GET" else json.dumps(call.body or {}).encode()
        params = dict(call.params) if call.params else None
        for _ in range(len(self._s.urls)):
            node = self._s.current % len(self._s.urls)
            try:
                status, content = await self._pools[node].request(
                    call.method, call.path, params, body, call.timeout
                )
            except ConnectFailed as e:
                if self._s.fail_over(node):
                    continue
                raise TransportError(str(e)) from e
            except (BrokenResponse, OSError) as e:  # TimeoutError is an OSError
                self._s.fail_over(node)
                raise TransportError(f"{call.method} {call.path} failed: {e!r}") from e
            try:
                return self._s.read(call, status, content)
            except Unavailable:
                if self._s.fail_over(node):
                    continue
                raise
        raise TransportError("no server node could take the request")

    async def raw(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
        """Any API call, answered as parsed JSON (for what this client has no method for)."""
        return await self.call(_Call(method, path, _same, body, timeout=timeout))

    # --- tasks ---

    async def submit(
        self, kind: str, payload: Any = None, options: TaskOptions | None = None, **opts: Any
    ) -> TaskInfo:
        """Submits one task; returns it once durably stored (with an idempotency key already
        used, the first task). ``opts`` are ``TaskOptions`` fields: ``queue``, ``priority``,
        ``delay``, ``run_at``, ``retries``, ``timeout``, ``idempotency_key``, ``tags``, ..."""
        return await self.call(_Calls.submit(make_submit_body(kind, payload, options, **opts)))

    async def submit_body(self, body: dict[str, Any]) -> TaskInfo:
        """Submits one task from a request body as ``submit_body`` makes it."""
        return await self.call(_Calls.submit(body))

    async def submit_batch(self, tasks: Sequence[dict[str, Any]]) -> list[TaskInfo]:
        """Submits up to 10,000 tasks atomically (bodies as ``submit_body`` makes them)."""
        return await self.call(_Calls.submit_batch(tasks))

    async def get(self, task_id: str) -> TaskInfo:
        return await self.call(_Calls.get(task_id))

    async def logs(self, task_id: str, after: int = 0, timeout: float = 0.0) -> dict[str, Any]:
        """A page of the task's log after line ``after`` (a ``seq``): ``{"lines": [{"seq",
        "attempt", "at", "line"}, ...], "next": seq, "finished": bool}``. With ``timeout``,
        waits up to that many seconds for a new line unless the task has finished."""
        return await self.call(_Calls.logs(task_id, after, int(timeout * 1000)))

    # --- events ---

    async def events(
        self,
        after: str | None = None,
        *,
        limit: int | None = None,
        queue: str | None = None,
        kind: str | None = None,
        task: str | None = None,
        workflow: str | None = None,
        tag: str | None = None,
        types: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """A page of the event log after event id ``after`` (``"now"``: the last one; ``None``:
        from the oldest kept): ``{"events": [...], "next": id}``. Pass ``next`` as ``after`` to go
        on. Filters as ``follow_events``."""
        filters = dict(queue=queue, kind=kind, task=task, workflow=workflow, tag=tag, types=types)
        return await self.call(_Calls.events(after, limit, **filters))

    async def follow_events(
        self,
        after: str | None = None,
        *,
        queue: str | None = None,
        kind: str | None = None,
        task: str | None = None,
        workflow: str | None = None,
        tag: str | None = None,
        types: Sequence[str] | None = None,
        reconnect_delay: float = 0.5,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every event after ``after`` (``"now"``, an event id, or ``None`` for the oldest kept),
        then each new one as it happens, for as long as you iterate: the ``GET /v1/events``
        Server-Sent Events stream. Should the connection break (a server restart, a node gone),
        it reconnects, to the next node of a cluster, with the last id seen as
        ``Last-Event-ID``: no event still kept is missed or given twice. ``types`` are event
        types (``["task.failed"]``); the other filters match the event's field."""
        filters = dict(queue=queue, kind=kind, task=task, workflow=workflow, tag=tag, types=types)
        params = _event_filters(after=after, **filters)
        last: str | None = None
        while True:
            node = self._s.current % len(self._s.urls)
            headers = {"accept": "text/event-stream"}
            if last is not None:
                headers["last-event-id"] = last
            try:
                event_id: str | None = None
                data: list[bytes] = []
                async for line in self._pools[node].stream_lines("/v1/events", params, headers):
                    if line.startswith(b"id:"):
                        event_id = line[3:].strip().decode()
                    elif line.startswith(b"data:"):
                        data.append(line[5:].lstrip(b" "))
                    elif not line and data:
                        event = json.loads(b"\n".join(data))
                        data = []
                        last = event_id or last
                        yield event
            except BrokenResponse as e:
                # Refused (a bad filter, a token that may not read): no use trying again. A
                # server that is stopping or not ready (5xx) is tried again.
                if len(e.args) == 2 and isinstance(e.args[0], int) and e.args[0] < 500:
                    raise _error_of(e.args[0], e.args[1]) from None
            except ConnectFailed:
                pass
            self._s.fail_over(node)
            await asyncio.sleep(reconnect_delay)

    async def list_tasks(
        self,
        *,
        queue: str | None = None,
        state: str | None = None,
        kind: str | None = None,
        tag: str | None = None,
        query: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> TaskPage:
        """One page of tasks, newest first. ``query`` is a search such as
        ``'state:failed payload.customer_id=42'`` (see docs/search.md); a page may come
        out short with a ``next_cursor`` to search on from."""
        return await self.call(
            _Calls.list_tasks(
                queue=queue, state=state, kind=kind, tag=tag, q=query, limit=limit, cursor=cursor
            )
        )

    async def wait(self, task_id: str, timeout: float | None = None) -> TaskInfo:
        """Waits until the task finishes (succeeded, failed, cancelled or expired), at most
        ``timeout`` seconds (``None``: as long as it takes); ``WaitTimeout`` past it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left_ms = _POLL_MS if deadline is None else int((deadline - time.monotonic()) * 1000)
            task = await self.call(_Calls.wait_once(task_id, max(0, min(left_ms, _POLL_MS))))
            if task.finished:
                return task
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(task_id, timeout or 0)

    async def wait_outcome(self, task_id: str, timeout: float | None = None) -> TaskInfo:
        """Like ``wait``, but should the task have fanned out, waits for its join too (whose
        outcome stands in for the task's), and that join's join, and so on. Returns the task
        that decided the outcome."""
        deadline = None if timeout is None else time.monotonic() + timeout
        task = await self.wait(task_id, timeout)
        while task.state == "succeeded":
            join = _join_of(task) or await self._workflow_join(task)
            if join is None:
                break
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            task = await self.wait(join, left)
        return task

    async def _workflow_join(self, task: TaskInfo) -> str | None:
        if not task.workflow_id or not task.node:
            return None
        workflow = await self.get_workflow(task.workflow_id)
        return workflow.node_task(f"{task.node}/join")

    async def cancel(self, task_id: str) -> TaskInfo:
        """Cancels a task: at once if it waits; a running one is asked to stop."""
        return await self.call(_Calls.cancel(task_id))

    async def retry(self, task_id: str) -> TaskInfo:
        """Sends a failed, cancelled or expired task back to the queue with a fresh budget."""
        return await self.call(_Calls.retry(task_id))

    # --- workflows ---

    async def submit_workflow(
        self, nodes: Sequence[Node[Any]], *, name: str | None = None, policy: Policy | None = None
    ) -> WorkflowInfo:
        """Submits a DAG of nodes (each named, with ``after(...)`` for its parents)."""
        return await self.call(_Calls.submit_workflow(nodes, name, policy))

    async def get_workflow(self, workflow_id: str) -> WorkflowInfo:
        return await self.call(_Calls.get_workflow(workflow_id))

    async def wait_workflow(self, workflow_id: str, timeout: float | None = None) -> WorkflowInfo:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left_ms = _POLL_MS if deadline is None else int((deadline - time.monotonic()) * 1000)
            wf = await self.call(
                _Calls.wait_workflow_once(workflow_id, max(0, min(left_ms, _POLL_MS)))
            )
            if wf.state != "running":
                return wf
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(workflow_id, timeout or 0)

    async def cancel_workflow(self, workflow_id: str) -> WorkflowInfo:
        return await self.call(_Calls.cancel_workflow(workflow_id))

    async def retry_workflow(self, workflow_id: str) -> WorkflowInfo:
        return await self.call(_Calls.retry_workflow(workflow_id))

    async def workflows(
        self, *, state: str | None = None, name: str | None = None, limit: int | None = None
    ) -> list[WorkflowInfo]:
        return await self.call(_Calls.workflows(state=state, name=name, limit=limit))

    # --- what the server knows ---

    async def kinds(self) -> list[KindInfo]:
        """Kinds with their live workers, ready tasks and registered payload schema."""
        return await self.call(_Calls.kinds())

    async def workers(self) -> list[dict[str, Any]]:
        return await self.call(_Calls.workers())

    async def queues(self) -> list[dict[str, Any]]:
        return await self.call(_Calls.queues())


class Client:
    """A blocking client, with the same calls as ``AsyncClient``. Use it as a context manager or
    ``close()`` it at the end."""

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        ca_cert: str | None = None,
        client_cert: str | tuple[str, str] | None = None,
    ) -> None:
        self._s = _Settings(url, token, ca_cert, client_cert)
        self._http = httpx.Client(headers=self._s.headers, verify=self._s.verify, limits=_limits())

    @property
    def url(self) -> str:
        return self._s.url

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def call(self, call: _Call[T]) -> T:
        for _ in range(len(self._s.urls)):
            node = self._s.current % len(self._s.urls)
            try:
                response = self._http.request(**self._s.request_args(call, node))
            except httpx.ConnectError as e:
                if self._s.fail_over(node):
                    continue
                raise TransportError(f"cannot reach {self._s.urls[node]}: {e}") from e
            except httpx.TransportError as e:
                self._s.fail_over(node)
                raise TransportError(f"{call.method} {call.path} failed: {e!r}") from e
            try:
                return self._s.read(call, response.status_code, response.content)
            except Unavailable:
                if self._s.fail_over(node):
                    continue
                raise
        raise TransportError("no server node could take the request")

    def raw(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> Any:
        return self.call(_Call(method, path, _same, body, timeout=timeout))

    def submit(
        self, kind: str, payload: Any = None, options: TaskOptions | None = None, **opts: Any
    ) -> TaskInfo:
        return self.call(_Calls.submit(make_submit_body(kind, payload, options, **opts)))

    def submit_body(self, body: dict[str, Any]) -> TaskInfo:
        return self.call(_Calls.submit(body))

    def submit_batch(self, tasks: Sequence[dict[str, Any]]) -> list[TaskInfo]:
        return self.call(_Calls.submit_batch(tasks))

    def get(self, task_id: str) -> TaskInfo:
        return self.call(_Calls.get(task_id))

    def events(
        self,
        after: str | None = None,
        *,
        limit: int | None = None,
        queue: str | None = None,
        kind: str | None = None,
        task: str | None = None,
        workflow: str | None = None,
        tag: str | None = None,
        types: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """A page of the event log (see ``AsyncClient.events``)."""
        filters = dict(queue=queue, kind=kind, task=task, workflow=workflow, tag=tag, types=types)
        return self.call(_Calls.events(after, limit, **filters))

    def logs(self, task_id: str, after: int = 0, timeout: float = 0.0) -> dict[str, Any]:
        """See ``AsyncClient.logs``."""
        return self.call(_Calls.logs(task_id, after, int(timeout * 1000)))

    def list_tasks(
        self,
        *,
        queue: str | None = None,
        state: str | None = None,
        kind: str | None = None,
        tag: str | None = None,
        query: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> TaskPage:
        return self.call(
            _Calls.list_tasks(
                queue=queue, state=state, kind=kind, tag=tag, q=query, limit=limit, cursor=cursor
            )
        )

    def wait(self, task_id: str, timeout: float | None = None) -> TaskInfo:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left_ms = _POLL_MS if deadline is None else int((deadline - time.monotonic()) * 1000)
            task = self.call(_Calls.wait_once(task_id, max(0, min(left_ms, _POLL_MS))))
            if task.finished:
                return task
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(task_id, timeout or 0)

    def wait_outcome(self, task_id: str, timeout: float | None = None) -> TaskInfo:
        deadline = None if timeout is None else time.monotonic() + timeout
        task = self.wait(task_id, timeout)
        while task.state == "succeeded":
            join = _join_of(task)
            if join is None and task.workflow_id and task.node:
                join = self.get_workflow(task.workflow_id).node_task(f"{task.node}/join")
            if join is None:
                break
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            task = self.wait(join, left)
        return task

    def cancel(self, task_id: str) -> TaskInfo:
        return self.call(_Calls.cancel(task_id))

    def retry(self, task_id: str) -> TaskInfo:
        return self.call(_Calls.retry(task_id))

    def submit_workflow(
        self, nodes: Sequence[Node[Any]], *, name: str | None = None, policy: Policy | None = None
    ) -> WorkflowInfo:
        return self.call(_Calls.submit_workflow(nodes, name, policy))

    def get_workflow(self, workflow_id: str) -> WorkflowInfo:
        return self.call(_Calls.get_workflow(workflow_id))

    def wait_workflow(self, workflow_id: str, timeout: float | None = None) -> WorkflowInfo:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left_ms = _POLL_MS if deadline is None else int((deadline - time.monotonic()) * 1000)
            wf = self.call(_Calls.wait_workflow_once(workflow_id, max(0, min(left_ms, _POLL_MS))))
            if wf.state != "running":
                return wf
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(workflow_id, timeout or 0)

    def cancel_workflow(self, workflow_id: str) -> WorkflowInfo:
        return self.call(_Calls.cancel_workflow(workflow_id))

    def retry_workflow(self, workflow_id: str) -> WorkflowInfo:
        return self.call(_Calls.retry_workflow(workflow_id))

    def workflows(
        self, *, state: str | None = None, name: str | None = None, limit: int | None = None
    ) -> list[WorkflowInfo]:
        return self.call(_Calls.workflows(state=state, name=name, limit=limit))

    def kinds(self) -> list[KindInfo]:
        return self.call(_Calls.kinds())

    def workers(self) -> list[dict[str, Any]]:
        return self.call(_Calls.workers())

    def queues(self) -> list[dict[str, Any]]:
        return self.call(_Calls.queues())
