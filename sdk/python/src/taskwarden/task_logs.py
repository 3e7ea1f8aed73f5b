"""Records of Python's ``logging`` inside a handler, as its task's log lines.

The worker runs each handler with its context as the running task (a context variable, set in
the handler's own task or pool thread); ``TaskLogHandler``, added to a logger, turns each record
logged while a handler runs into a line of that task's log, as ``ctx.log`` would, and ignores
every other record. Work a handler hands to threads or tasks of its own is not its task's unless
it carries the context along (``contextvars.copy_context``, which ``asyncio`` tasks do).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .context import Context

_running: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "taskwarden_running_task", default=None
)


@contextlib.contextmanager
def running(ctx: Context) -> Iterator[None]:
    """Makes ``ctx`` the task whose log records go to, for the block."""
    token = _running.set(ctx)
    try:
        yield
    finally:
        _running.reset(token)


class TaskLogHandler(logging.Handler):
    """A ``logging`` handler that sends the records a task handler logs to its task's log, as
    ``LEVEL message`` by default (give it a formatter for another form)::

        logging.getLogger().addHandler(taskwarden.TaskLogHandler(logging.INFO))
    """

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.setFormatter(logging.Formatter("%(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        ctx = _running.get()
        if ctx is None:
            return  # outside a handler: not a task's
        try:
            ctx.log(self.format(record))
        except Exception:
            self.handleError(record)
