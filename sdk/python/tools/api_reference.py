"""Renders the SDK's API reference from its docstrings into ``API.md``.

    python tools/api_reference.py          # rewrites API.md
    python tools/api_reference.py --check  # exits 1 if API.md is not what the code says

A test runs the check, so the page never drifts from the code.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Any

# Module, then the public names it documents, in reading order.
MODULES: dict[str, list[str]] = {
    "taskwarden.app": [
        "Taskwarden",
        "TaskDef",
        "TaskDecorator",
        "TaskRef",
        "SyncTaskRef",
        "WorkflowRef",
    ],
    "taskwarden.context": ["Context"],
    "taskwarden.client": [
        "AsyncClient",
        "Client",
        "TaskInfo",
        "TaskPage",
        "WorkflowInfo",
        "KindInfo",
        "make_submit_body",
    ],
    "taskwarden.workflow": ["Node", "FanOut", "ParentResult", "Quorum"],
    "taskwarden.options": ["TaskOptions", "Backoff"],
    "taskwarden.worker": ["Worker", "RunSummary"],
    "taskwarden.task_logs": ["TaskLogHandler"],
    "taskwarden.convert": ["to_json", "from_json", "json_schema"],
    "taskwarden.errors": [
        "TaskwardenError",
        "TaskFailed",
        "TaskCancelled",
        "TaskExpired",
        "QuorumNotReached",
        "WaitTimeout",
        "Permanent",
        "RetryAfter",
        "ConversionError",
        "ApiError",
        "TransportError",
    ],
    "taskwarden.testing": ["ServerProcess", "run_inline", "run_inline_async"],
}

OUT = Path(__file__).resolve().parent.parent / "API.md"


def signature(obj: Any) -> str:
    try:
        text = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"
    return text.replace("'", "")


def doc(obj: Any) -> str:
    text = inspect.getdoc(obj) or ""
    return text.strip()


def members(cls: type) -> list[tuple[str, Any]]:
    """Public methods and properties defined by ``cls`` itself, in source order."""
    out = []
    for name, value in vars(cls).items():
        if name.startswith("_") and name not in ("__init__",):
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if inspect.isfunction(value) or isinstance(value, property):
            out.append((name, value))
    return out


def render() -> str:
    lines = [
        "# Python SDK API reference",
        "",
        "Rendered from the docstrings by `tools/api_reference.py`; do not edit by hand. Everything",
        "here is also importable from `taskwarden` itself.",
        "",
    ]
    for module_name, names in MODULES.items():
        module = importlib.import_module(module_name)
        lines += [f"## `{module_name}`", ""]
        if doc(module):
            lines += [doc(module), ""]
        for name in names:
            obj = getattr(module, name)
            if inspect.isclass(obj):
                lines += [f"### class `{name}{signature(obj)}`", ""]
                if doc(obj):
                    lines += [doc(obj), ""]
                for member, value in members(obj):
                    if member == "__init__":
                        continue
                    if isinstance(value, property):
                        lines.append(f"- **`{member}`** (property)")
                        text = doc(value)
                    else:
                        is_async = inspect.iscoroutinefunction(value)
                        prefix = "async " if is_async else ""
                        lines.append(f"- **`{prefix}{member}{signature(value)}`**")
                        text = doc(value)
                    if text:
                        lines += [
                            "",
                            "  " + text.replace("\n", "\n  ").replace("\n  \n", "\n\n"),
                            "",
                        ]
                lines.append("")
            else:
                prefix = "async " if inspect.iscoroutinefunction(obj) else ""
                lines += [f"### `{prefix}{name}{signature(obj)}`", ""]
                if doc(obj):
                    lines += [doc(obj), ""]
    text = "\n".join(lines)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.rstrip() + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python tools/api_reference.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
