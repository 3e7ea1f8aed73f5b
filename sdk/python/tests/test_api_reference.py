"""The API reference page (API.md) is rendered from the docstrings and must match the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_api_reference_is_current() -> None:
    check = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "api_reference.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
    text = (ROOT / "API.md").read_text()
    for name in ("class `Taskwarden(", "async submit(", "run_inline(", "class `Context("):
        assert name in text, name
