"""A client's record of the rounds it took part in, so that a replayed round is refused.

A server that replays an old round config (correctly signed by the operator, since it is a copy)
makes the client contribute again under fresh masks; if it then claims a different survivor set
than the first time, the difference of the two sums is one client's input. The operator signs
each config with its session label and round, so a client only has to remember them: it refuses
a config for a (session, round) it joined before, or for an older round of a session it has seen
(SPEC section 14, "Replay").

SQLite (stdlib ``sqlite3``) by default, a file that survives restarts; ``":memory:"`` in tests
and simulations. A client records a round when it commits to it (before it sends its advert).
"""

from __future__ import annotations

from pathlib import Path

from secagg.errors import ConfigurationError
from secagg.storage import SQLiteStore, open_versioned, write_transaction

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE joined (
    session_id BLOB NOT NULL PRIMARY KEY,
    last_round BLOB NOT NULL  -- u64, big-endian: rounds go up to 2^64 - 1, past SQLite's integers
)
"""


class RoundLedger(SQLiteStore):
    """The last round this client joined in each session (a session's rounds only go up)."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.path = str(path)
        self._db = open_versioned(self.path, schema=_SCHEMA, version=SCHEMA_VERSION,
                                  what="secagg round ledger", error=ConfigurationError)

    def fault(self, session_id: bytes, round: int) -> str | None:
        """Why joining round ``round`` of ``session_id`` would be a replay, or None."""
        last = self._last(session_id)
        if last is None or round > last:
            return None
        when = "already took part in" if round == last else f"took part in round {last} of"
        return f"this client {when} this session (round {round} is a replay or out of date)"

    def _last(self, session_id: bytes) -> int | None:
        row = self._db.execute("SELECT last_round FROM joined WHERE session_id = ?", (session_id,)).fetchone()
        return None if row is None else int.from_bytes(row[0], "big")

    def record(self, session_id: bytes, round: int) -> None:
        """Remember that the client committed to ``round`` of ``session_id`` (read and written in
        one transaction, so two processes of one client never move the record backwards)."""
        with write_transaction(self._db):
            last = self._last(session_id)
            if last is None or round > last:
                self._db.execute("INSERT OR REPLACE INTO joined (session_id, last_round) VALUES (?, ?)",
                                 (session_id, round.to_bytes(8, "big")))


__all__ = ["RoundLedger"]
