"""Testing helpers: a real ``taskwarden server`` on a free port with a temporary data dir
(``ServerProcess``, and the ``taskwarden_server`` pytest fixture), and ``run_inline`` to call a
handler in process with a real ``Context`` (Celery's ``task_always_eager``, per call).

The server binary is found in ``TASKWARDEN_BIN``, then ``taskwarden`` on ``PATH``, then
``target/debug/taskwarden`` and ``target/release/taskwarden`` of the repository this package
sits in (or the current directory's).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

from .app import TaskDef
from .context import Context
from .convert import to_json
from .errors import TaskCancelled
from .workflow import FanOut, ParentResult, Quorum

R = TypeVar("R")


def find_server_binary() -> str:
    """The ``taskwarden`` binary to run, or ``FileNotFoundError`` saying where it looked."""
    env = os.environ.get("TASKWARDEN_BIN")
    if env:
        return env
    found = shutil.which("taskwarden")
    if found:
        return found
    looked = []
    for start in (Path(__file__).resolve(), Path.cwd().resolve()):
        for root in (start, *start.parents):
            if (root / "Cargo.toml").exists() and (root / "crates").is_dir():
                for build in ("debug", "release"):
                    candidate = root / "target" / build / "taskwarden"
                    looked.append(str(candidate))
                    if candidate.exists():
                        return str(candidate)
                break
    raise FileNotFoundError(
        "no taskwarden binary: set TASKWARDEN_BIN, put taskwarden on PATH, or build it "
        f"(cargo build); looked in {looked or 'no repository'}"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """A ``taskwarden server`` of its own, on the embedded store in a temporary directory.
    ``with ServerProcess.start() as server: ... server.url ...``"""

    def __init__(
        self, process: subprocess.Popen[bytes], url: str, data_dir: str, log: Path
    ) -> None:
        self.process = process
        self.url = url
        self.data_dir = data_dir
        self.log = log

    @classmethod
    def start(
        cls,
        *args: str,
        binary: str | None = None,
        timeout: float = 30.0,
        scheme: str = "http",
        ca_cert: str | None = None,
    ) -> ServerProcess:
        """Starts one (``args``: more ``taskwarden server`` flags) and waits until it answers.
        With ``--tls-cert``, give ``scheme="https"`` and the ``ca_cert`` that signed it."""
        binary = binary or find_server_binary()
        data_dir = tempfile.mkdtemp(prefix="taskwarden-test-")
        port = free_port()
        url = f"{scheme}://127.0.0.1:{port}"
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=ca_cert) if ca_cert else True
        )
        log = Path(data_dir) / "server.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [
                    binary,
                    "server",
                    "--data-dir",
                    str(Path(data_dir) / "data"),
                    "--listen",
                    f"127.0.0.1:{port}",
                    *args,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = cls(process, url, data_dir, log)
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"taskwarden server exited at start: {server.log_tail()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1, verify=verify).status_code == 200:
                    return server
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                server.stop()
                raise TimeoutError(f"taskwarden server did not come up: {server.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- run_inline ---------------------------------------------------------------------------------


class _InlineBackend:
    """A context's calls, in process: a fan-out runs its children and then its join right here,
    one after another, under the fan-out's policy as the server applies it: ``collect`` runs
    every child and gives the join every outcome; ``fail_fast`` stops at the first child that
    fails (the rest and the join never run) and the fan-out's result raises ``TaskCancelled``;
    ``Quorum`` stops once enough children succeeded (the join sees the rest as cancelled), and
    raises ``TaskCancelled`` as soon as too many failed for the quorum to be reached."""

    loop: asyncio.AbstractEventLoop | None = None

    def __init__(self, task: TaskDef[Any, Any], parents: Sequence[ParentResult] = ()) -> None:
        self.task = task
        self.parent_results = list(parents)
        self.stand_in: Any = None
        self.progress_log: list[tuple[float, str | None]] = []
        self.log_lines: list[str] = []

    def progress(self, ctx: Context, fraction: float, message: str | None) -> None:
        self.progress_log.append((fraction, message))

    def log(self, ctx: Context, line: str) -> None:
        self.log_lines.append(line)

    async def fan_out(self, ctx: Context, body: dict[str, Any]) -> FanOut[Any]:
        children = body["children"]
        policy = body.get("failure_policy") or {"kind": "collect"}
        needed = len(children) + 1  # collect and fail_fast: no quorum stops the children
        quorum_kind = policy["kind"] == "quorum"
        if quorum_kind:
            quorum = Quorum(policy.get("fraction"), min_successes=policy.get("min_successes"))
            needed = quorum.needed(len(children))
        parents: list[ParentResult] = []
        succeeded = failed = 0
        join_id = str(uuid.uuid4())
        for i, child in enumerate(children):
            node = f"root/{i:06d}"
            if succeeded >= needed:
                parents.append(
                    ParentResult(node, str(uuid.uuid4()), "cancelled", None, "quorum reached")
                )
                continue
            try:
                result = await _run_json(self._task(child["kind"]), child.get("payload"), ())
            except Exception as e:
                failed += 1
                parents.append(ParentResult(node, str(uuid.uuid4()), "failed", None, repr(e)))
                if policy["kind"] == "fail_fast":
                    why = f"fail_fast: {node} failed: {e!r}"
                    raise TaskCancelled(join_id, "cancelled", why, 0) from e
                if quorum_kind and len(children) - failed < needed:
                    why = f"quorum of {needed} out of reach: {failed} of {len(children)} failed"
                    raise TaskCancelled(join_id, "cancelled", why, 0) from e
                continue
            succeeded += 1
            parents.append(ParentResult(node, str(uuid.uuid4()), "succeeded", result))
        join = body["join"]
        self.stand_in = await _run_json(self._task(join["kind"]), join.get("payload"), parents)
        return FanOut("inline", join_id, len(parents))

    async def parents_page(
        self, ctx: Context, after: str | None, limit: int
    ) -> tuple[list[ParentResult], str | None]:
        return (self.parent_results if after is None else []), None

    def _task(self, kind: str) -> TaskDef[Any, Any]:
        try:
            return self.task.app.tasks[kind]
        except KeyError:
            raise LookupError(f"run_inline: no task {kind!r} in the app") from None


async def _run_json(task: TaskDef[Any, Any], payload: Any, parents: Sequence[ParentResult]) -> Any:
    """Runs a handler in process on a JSON payload; its result as JSON (a fan-out's: its
    join's)."""
    backend = _InlineBackend(task, parents)
    ctx = Context(
        id=str(uuid.uuid4()),
        kind=task.name,
        queue=task.queue,
        attempt=1,
        max_attempts=1,
        parent_count=len(parents),
        backend=backend,
    )
    kwargs = task.signature.decode(payload)
    if task.is_async:
        value = await task.fn(ctx, **kwargs)
    else:
        value = await asyncio.get_running_loop().run_in_executor(
            None, lambda: task.fn(ctx, **kwargs)
        )
    if isinstance(value, FanOut):
        return backend.stand_in
    return task.signature.encode_result(value)


async def run_inline_async(task: TaskDef[Any, R], payload: Any = None, /, **kwargs: Any) -> R:
    """``run_inline`` from async code."""
    if payload is None:
        payload = kwargs
    elif kwargs:
        raise TypeError("give the payload as a dict or as keyword arguments, not both")
    result = await _run_json(task, to_json(payload, "payload"), ())
    return task.decode_result(result)


def run_inline(task: TaskDef[Any, R], payload: Any = None, /, **kwargs: Any) -> R:
    """Runs ``task``'s handler here, now, with a real ``Context``: the payload (a dict, or keyword
    arguments) is checked and converted as a worker would, the result goes through JSON and back
    as a client would see it, exceptions propagate, and ``ctx.fan_out`` runs the children and the
    join in process, one after another, under the fan-out's policy (returning the join's result,
    or raising ``TaskCancelled`` where the server would cancel the join). No server needed."""
    return asyncio.run(run_inline_async(task, payload, **kwargs))
