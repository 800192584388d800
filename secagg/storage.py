"""SQLite helpers shared by the stores that must not race: the client registry, a client's
privacy budget and its round ledger."""

from __future__ import annotations

import sqlite3


class SQLiteStore:
    """A store that owns one SQLite connection (``self._db``): closed by ``close()`` or on leaving
    a ``with`` block."""

    _db: sqlite3.Connection

    def close(self) -> None:
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class write_transaction:  # noqa: N801 - used as ``with write_transaction(db):``
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on an exception). IMMEDIATE takes the write
    lock before anything is read, so two processes cannot both read room for one more write (one
    more enrolment, one more round charged) and both write it. The connection must be in
    autocommit mode (``isolation_level=None``)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind, exc, tb) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


def open_versioned(path, *, schema: str, version: int, what: str, error: type[Exception],
                   on_create=None) -> sqlite3.Connection:
    """Open (creating if new) an SQLite store of ``schema`` at ``version`` (``PRAGMA
    user_version``), in autocommit mode, with a 5 s busy timeout and WAL for files. A file that
    holds other tables, or another schema version, is refused with ``error`` naming ``what``.
    ``on_create(db)`` fills a new store, inside the same transaction."""
    path = str(path)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA busy_timeout = 5000")
    if path != ":memory:":
        db.execute("PRAGMA journal_mode = WAL")
    with write_transaction(db):
        found = db.execute("PRAGMA user_version").fetchone()[0]
        if found == 0:
            if db.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]:
                raise error(f"{path} is an SQLite file but not a {what}")
            for statement in statements(schema):  # executescript() would commit the transaction
                db.execute(statement)
            if on_create is not None:
                on_create(db)
            db.execute(f"PRAGMA user_version = {version}")
        elif found != version:
            raise error(f"{what} {path} has schema version {found}; this code reads version {version}")
    return db


def statements(script: str) -> list[str]:
    """The SQL statements of ``script``, split at the semicolons that end one (not those in a
    comment or a string), as ``sqlite3.complete_statement`` tells them."""
    out, buffer = [], ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \n;"):
                out.append(buffer)
            buffer = ""
    return out
