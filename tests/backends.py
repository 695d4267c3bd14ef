"""Database backends for the suite: SQLite (in the index folder) and a real PostgreSQL server.

`pg_server` starts one throw-away server per session (tests/postgres_server.py). With CI=true a
missing or broken server fails the run; elsewhere PostgreSQL tests are skipped.

`db_backend` runs a test once per backend. For PostgreSQL it gives the test a database of its
own and points $XMODAL_DB_URL at it, so every index the test opens in this process (library and
CLI) lives there; child processes get the URL explicitly (see `db_backend.url`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.ci_rules import in_ci
from tests.postgres_server import PostgresServer, start_server

__all__ = ["Backend", "pg_server", "db_backend", "pg_url"]


@dataclass(frozen=True)
class Backend:
    name: str  # "sqlite" or "postgresql"
    url: str | None  # None: SQLite in the index folder

    @property
    def is_postgres(self) -> bool:
        return self.name == "postgresql"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    try:
        server = start_server()
    except (RuntimeError, OSError, ImportError) as e:
        if in_ci():
            pytest.fail(f"PostgreSQL is required in CI: {e}", pytrace=False)
        pytest.skip(f"no PostgreSQL server: {e}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    return pg_server.create_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Backend:
    if request.param == "sqlite":
        monkeypatch.delenv("XMODAL_DB_URL", raising=False)
        return Backend("sqlite", None)
    url = request.getfixturevalue("pg_url")
    monkeypatch.setenv("XMODAL_DB_URL", url)
    return Backend("postgresql", url)
