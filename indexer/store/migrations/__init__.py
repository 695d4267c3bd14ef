"""Schema migrations of the index database (Alembic), run by the library when an index opens.

    versions/0001_baseline.py        the schema of the last release before migrations
    versions/0002_drop_grid.py       images.grid removed
    versions/0003_change_tracking.py row generations, tombstones, database identity
    versions/0004_quantised_tower_features.py  images.features as block-quantised int8
    versions/0005_facts.py           facts: when, where, camera and names of each photo
    versions/0006_photo_text.py      photo_texts: the text read in photos, and its text index
    versions/0007_video_frames.py    images.media, the frames sampled from videos

Opening an index reads its revision (one query); only when it is behind does Alembic load and
upgrade it, in one transaction that also holds a lock, so two processes opening an old index at
once upgrade it once. A revision this code does not know (a newer xmodal wrote it) is refused.
Developers add a revision with `python -m xmodal.indexer.store.migrations revision -m "what"`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from xmodal.indexer.errors import IndexNotFoundError

__all__ = [
    "HEAD",
    "VERSION_TABLE",
    "SchemaTooNewError",
    "SchemaChange",
    "current_revision",
    "upgrade_database",
    "alembic_config",
]

HEAD = "0007"  # the newest revision in versions/ (a test checks they agree)
VERSION_TABLE = "xmodal_alembic_version"  # not alembic_version: a shared database may hold other apps' tables
_HERE = Path(__file__).resolve().parent
# pg_advisory_xact_lock key of the upgrade (any constant: 'xmodal' 'migr' as bytes)
_MIGRATION_LOCK_KEY = 0x786D6F64616C6D67


class SchemaTooNewError(IndexNotFoundError):
    """The database was migrated by a newer xmodal than this one."""


@dataclass(frozen=True)
class SchemaChange:
    """Revisions before and after an upgrade (before is None for a database without a version
    table: empty, or made before migrations)."""

    before: str | None
    after: str


def alembic_config(connection: Connection | None = None):  # noqa: ANN201 - alembic imported lazily
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_HERE))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def current_revision(connection: Connection) -> str | None:
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    return connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def upgrade_database(engine: Engine) -> SchemaChange:
    """Bring the database to HEAD; SchemaTooNewError when it is ahead of this code."""
    with engine.connect() as connection:
        before = current_revision(connection)
        connection.rollback()
    if before == HEAD:
        return SchemaChange(before, HEAD)
    _check_known(before, engine)  # before taking any lock: a newer schema is refused as it is
    upgraded = False
    with _migration_connection(engine) as connection:
        before = current_revision(connection)  # another process may have upgraded meanwhile
        if before != HEAD:
            _check_known(before, engine)
            from alembic import command

            command.upgrade(alembic_config(connection), "head")
            upgraded = True
    if upgraded and engine.dialect.name == "sqlite":
        _vacuum_if_sparse(engine)
    return SchemaChange(before, HEAD)


def _vacuum_if_sparse(engine: Engine) -> None:
    """Give back the pages an upgrade freed (dropped columns, re-encoded blobs): SQLite keeps them
    as free pages otherwise. Best effort: while another connection reads, it is skipped, and the
    next upgrade (or a `VACUUM` by hand) does it."""
    if engine.url.database in (None, "", ":memory:"):
        return
    private = create_engine(engine.url, poolclass=NullPool, connect_args={"timeout": 5, "isolation_level": None})
    try:
        with private.connect() as connection:
            free = connection.exec_driver_sql("PRAGMA freelist_count").scalar() or 0
            total = connection.exec_driver_sql("PRAGMA page_count").scalar() or 1
            if free > 64 and free > total // 4:
                connection.exec_driver_sql("VACUUM")
    except Exception:  # noqa: BLE001 - a busy database stays as it is: correct, only larger
        pass
    finally:
        private.dispose()


def _check_known(revision: str | None, engine: Engine) -> None:
    if revision is None:
        return
    from alembic.script import ScriptDirectory

    known = {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if revision not in known:
        url = engine.url.render_as_string(hide_password=True)
        raise SchemaTooNewError(
            f"the index database '{url}' has schema revision {revision}, newer than this xmodal knows "
            f"(its newest is {HEAD}); upgrade xmodal to use it"
        )


@contextmanager
def _migration_connection(engine: Engine) -> Iterator[Connection]:
    """A connection inside one transaction that only one upgrading process holds at a time."""
    if engine.dialect.name == "sqlite":
        if engine.url.database in (None, "", ":memory:"):
            with engine.begin() as connection:  # a private in-memory database: nobody to race
                yield connection
            return
        # pysqlite runs DDL outside transactions; a connection of its own with an explicit
        # BEGIN IMMEDIATE makes the upgrade atomic and takes the write lock before reading.
        private = create_engine(engine.url, poolclass=NullPool, connect_args={"timeout": 60})

        @event.listens_for(private, "connect")
        def _autocommit_driver(dbapi_connection, record):  # noqa: ANN001, ANN202
            dbapi_connection.isolation_level = None

        @event.listens_for(private, "begin")
        def _begin_immediate(connection):  # noqa: ANN001, ANN202
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        try:
            with private.begin() as connection:
                yield connection
        finally:
            private.dispose()
        return
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
        yield connection
