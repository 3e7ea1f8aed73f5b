"""The pytest fixtures of ``taskwarden.testing``, loaded by pytest through the package's
``pytest11`` entry point: ``taskwarden_server`` (one real server for the session)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from .testing import ServerProcess


@pytest.fixture(scope="session")
def taskwarden_server() -> Iterator[ServerProcess]:
    """A real ``taskwarden server`` on a free port with a temporary data dir, for the session;
    ``taskwarden_server.url`` is its address. Give each test queues of its own.

    With ``TASKWARDEN_TEST_POSTGRES`` set to a PostgreSQL URL, the server runs on that database
    instead, in a schema of its own that is dropped at the end (needs ``psycopg``)."""
    database = os.environ.get("TASKWARDEN_TEST_POSTGRES")
    if not database:
        server = ServerProcess.start()
        try:
            yield server
        finally:
            server.stop()
        return
    schema = f"py_test_{os.getpid()}_{secrets.token_hex(4)}"
    server = ServerProcess.start("--database", database, "--database-schema", schema)
    try:
        yield server
    finally:
        server.stop()
        import psycopg

        with psycopg.connect(database, autocommit=True) as db:
            db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
