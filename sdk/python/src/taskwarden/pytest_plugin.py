"""The pytest fixtures of ``taskwarden.testing``, loaded by pytest through the package's
``pytest11`` entry point: ``taskwarden_server`` (one real server for the session)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import ServerProcess


@pytest.fixture(scope="session")
def taskwarden_server() -> Iterator[ServerProcess]:
    """A real ``taskwarden server`` on a free port with a temporary data dir, for the session;
    ``taskwarden_server.url`` is its address. Give each test queues of its own."""
    server = ServerProcess.start()
    try:
        yield server
    finally:
        server.stop()
