"""Taskwarden's Python SDK: declare typed tasks with ``@app.task``, submit and await them,
gather many, fan out at run time, and run asyncio workers against a Taskwarden server.

```python
from taskwarden import Context, Taskwarden

app = Taskwarden("http://127.0.0.1:7433")

@app.task(queue="web", retries=5, timeout="30s", backoff="exponential")
async def fetch(ctx: Context, url: str) -> Page: ...

ref = await fetch.submit(url="https://example.com/")
page = await ref.result(timeout=30)
```
"""

from .app import SyncTaskRef, TaskDecorator, TaskDef, TaskRef, Taskwarden, WorkflowRef
from .client import AsyncClient, Client, KindInfo, TaskInfo, TaskPage, WorkflowInfo
from .context import Context
from .convert import json_schema
from .errors import (
    ApiError,
    Conflict,
    ConversionError,
    InvalidRequest,
    LeaseLost,
    NotFound,
    Permanent,
    QuorumNotReached,
    RetryAfter,
    TaskCancelled,
    TaskExpired,
    TaskFailed,
    TaskwardenError,
    TransportError,
    Unauthorized,
    Unavailable,
    Unprocessable,
    WaitTimeout,
)
from .options import Backoff, TaskOptions
from .task_logs import TaskLogHandler
from .worker import RunSummary, Worker
from .workflow import FanOut, Node, ParentResult, Quorum

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "AsyncClient",
    "Backoff",
    "Client",
    "Conflict",
    "Context",
    "ConversionError",
    "FanOut",
    "InvalidRequest",
    "KindInfo",
    "LeaseLost",
    "Node",
    "NotFound",
    "ParentResult",
    "Permanent",
    "Quorum",
    "QuorumNotReached",
    "RetryAfter",
    "RunSummary",
    "SyncTaskRef",
    "TaskCancelled",
    "TaskDecorator",
    "TaskDef",
    "TaskExpired",
    "TaskFailed",
    "TaskInfo",
    "TaskLogHandler",
    "TaskOptions",
    "TaskPage",
    "TaskRef",
    "Taskwarden",
    "TaskwardenError",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "Unprocessable",
    "WaitTimeout",
    "Worker",
    "WorkflowInfo",
    "WorkflowRef",
    "json_schema",
]
