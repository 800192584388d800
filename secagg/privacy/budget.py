"""A client's privacy budget: the rounds it took part in, composed, against its (epsilon, delta).

Theory of operation. The client keeps its own ledger of rounds, one row per round it committed
to: the round's session and number, the mechanism parameters the accountant needs (mechanism,
L2 and L1 sensitivity, per-client noise variance, m_min, noised coordinates: a
``RoundMechanism``), the sampling rate, the time, and the epsilon the ledger stood at after it.
Its spent epsilon at its delta is recomputed from those rows, never added up from per-round
figures (epsilons do not add tightly): rounds with the same mechanism and rate are grouped and
self-composed, the groups composed with one another by ``accounting.composed_accounting``: RDP
curves add, dp-accounting's PLD accountant convolves the Gaussians when every round has one, and
the smaller epsilon counts (SPEC section 10.3).

``charge`` is the commitment (the Client calls it through ``DPEncoder.begin_round`` once the
input is known usable and before it sends anything). In one SQLite write transaction it checks
whether this (session, round) is already recorded, computes the epsilon the ledger would reach
with it, and either inserts the row or raises ``PrivacyBudgetExhausted`` and records nothing.
Charging a recorded (session, round) again with the same mechanism is free: a retried message of
a round the client is already in releases nothing new. A round replayed so that the client
encodes again *is* a new release; the ``RoundLedger`` refuses it (SPEC section 14), not this.

Sampling rate: a client that charges only the rounds it was picked for must charge them at
q = 1 (the default). Amplification by subsampling averages over the rounds a client sat out,
so a rate q < 1 is sound only for a ledger that is charged for every round of the population,
picked or not.

SQLite (stdlib ``sqlite3``): a file that survives restarts, or ``":memory:"`` (the default, for
tests and simulations). Time is injected (``clock``) so that tests are reproducible.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from secagg.storage import SQLiteStore, open_versioned, write_transaction
from secagg.errors import ConfigurationError, PrivacyBudgetExhausted
from secagg.privacy.accounting import (
    Accountant,
    Accounting,
    Mechanism,
    RoundMechanism,
    _accountant,
    _is_real,
    composed_accounting,
)

SCHEMA_VERSION = 1
MEMORY = ":memory:"

_SCHEMA = """
CREATE TABLE rounds (
    charge_id      INTEGER PRIMARY KEY,
    session_id     BLOB,                    -- NULL when charged outside a protocol round
    round          BLOB,                    -- u64, big-endian (as in the RoundLedger); or NULL
    mechanism      TEXT NOT NULL,           -- 'ddgauss' or 'skellam'
    l2_sensitivity REAL NOT NULL,           -- integer units, the clipped flag included
    l1_sensitivity REAL NOT NULL,
    local_variance REAL NOT NULL,           -- sigma_c^2 per client and coordinate
    noise_clients  INTEGER NOT NULL,        -- m_min
    dim            INTEGER NOT NULL,        -- coordinates carrying noise
    sampling       REAL NOT NULL CHECK (sampling > 0 AND sampling <= 1),
    charged_at     REAL NOT NULL,           -- POSIX seconds
    epsilon_after  REAL NOT NULL,           -- the ledger's epsilon with this round, at the delta then
    UNIQUE (session_id, round)
)
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetState:
    """What a client reports about its budget. Not secret: it says nothing about any update."""

    client: int | None
    epsilon_spent: float
    delta: float
    epsilon_budget: float
    rounds: int
    remaining: float  # epsilon_budget - epsilon_spent, at least 0
    exhausted: bool  # nothing left, or a round was refused for the budget since the ledger was opened
    accountant: str  # "pld" or "rdp": whichever gave epsilon_spent ("rdp" before any round)

    def as_dict(self) -> dict:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


class PrivacyBudget(SQLiteStore):
    """A client's own ledger: the epsilon of the rounds it took part in, against its budget.

    ``PrivacyBudget(epsilon_budget, delta)`` keeps it in memory; ``path=`` in an SQLite file
    that a restarted client reopens with the same path.
    """

    def __init__(self, epsilon_budget: float, delta: float, *, path: str | Path = MEMORY,
                 client: int | None = None, accountant: Accountant | str = Accountant.PLD,
                 clock: Callable[[], float] = time.time) -> None:
        if not (_is_real(epsilon_budget) and epsilon_budget > 0) or not (_is_real(delta) and 0 < delta < 1):
            raise ConfigurationError(
                f"privacy budget needs epsilon > 0 and 0 < delta < 1, got epsilon {epsilon_budget!r}, "
                f"delta {delta!r}"
            )
        self.epsilon_budget = epsilon_budget
        self.delta = delta
        self.client = client
        self.accountant = _accountant(accountant)
        self.path = str(path)
        self.refused = 0  # rounds refused for the budget since this handle was opened
        self._clock = clock
        self._spent: tuple[tuple, Accounting] | None = None
        self._db = open_versioned(self.path, schema=_SCHEMA, version=SCHEMA_VERSION,
                                  what="secagg privacy budget", error=ConfigurationError)

    def __deepcopy__(self, memo) -> PrivacyBudget:
        """A copied party (a test's snapshot) shares the ledger: it is the client's storage, not
        part of one round's state; a copy that re-charges the same round is charged once."""
        return self

    # -- the ledger ---------------------------------------------------------------------------

    def charge(self, plan, *, client: int | None = None, round: int | None = None,
               session: bytes | None = None, sampling: float = 1.0) -> float:
        """Commit to one more round of ``plan`` (a ``DPPlan``, or a ``RoundMechanism``); return
        the epsilon spent with it. Raise ``PrivacyBudgetExhausted``, recording nothing, if it would
        exceed the budget. A (session, round) already recorded is not charged again."""
        mech = plan if isinstance(plan, RoundMechanism) else plan.round_mechanism()
        # As stored: plain floats and ints, so a recorded round compares equal to its plan.
        mech = _mechanism((mech.mechanism.value, float(mech.l2_sensitivity), float(mech.l1_sensitivity),
                           float(mech.local_variance), int(mech.noise_clients), int(mech.dim)))
        if not (_is_real(sampling) and 0 < sampling <= 1):
            raise ConfigurationError(f"sampling rate must lie in (0, 1], got {sampling!r}")
        client = self.client if client is None else client
        key = (None if session is None else bytes(session), None if round is None else _u64(round))
        with self._write() as db:
            if key != (None, None):
                row = db.execute("SELECT mechanism, l2_sensitivity, l1_sensitivity, local_variance, "
                                 "noise_clients, dim, sampling FROM rounds WHERE session_id IS ? AND "
                                 "round IS ?", key).fetchone()
                if row is not None:
                    if (_mechanism(row[:6]), row[6]) != (mech, float(sampling)):
                        raise ConfigurationError(
                            f"client {client}, round {round}: this round was charged under another "
                            f"privacy plan; a round's plan cannot change (start a new round)",
                            client=client, round=round)
                    return self.spent
            groups = self._groups()
            groups[(mech, float(sampling))] += 1
            after = self._compose(groups)
            rounds = sum(groups.values())
            if not after.epsilon <= self.epsilon_budget:
                self.refused += 1
                raise PrivacyBudgetExhausted(
                    f"client {client}, round {round}: taking part would bring epsilon to "
                    f"{after.epsilon:.4g} (delta {self.delta}) after {rounds} rounds, over the budget "
                    f"of {self.epsilon_budget}; the client sends nothing",
                    client=client, round=round,
                )
            db.execute("INSERT INTO rounds (session_id, round, mechanism, l2_sensitivity, "
                       "l1_sensitivity, local_variance, noise_clients, dim, sampling, charged_at, "
                       "epsilon_after) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (*key, mech.mechanism.value, mech.l2_sensitivity, mech.l1_sensitivity,
                        mech.local_variance, mech.noise_clients, mech.dim, float(sampling),
                        float(self._clock()), after.epsilon))
        self._spent = None
        return after.epsilon

    def accounting(self) -> Accounting:
        """The spent (epsilon, delta), recomputed from every recorded round (kept until the
        ledger changes, in this process or another)."""
        mark = self._db.execute("SELECT count(*), max(charge_id) FROM rounds").fetchone()
        if self._spent is None or self._spent[0] != mark:
            self._spent = (mark, self._compose(self._groups()))
        return self._spent[1]

    @property
    def spent(self) -> float:
        return self.accounting().epsilon

    @property
    def rounds(self) -> int:
        return self._db.execute("SELECT count(*) FROM rounds").fetchone()[0]

    def history(self) -> list[dict]:
        """The recorded rounds, oldest first."""
        rows = self._db.execute("SELECT session_id, round, mechanism, l2_sensitivity, l1_sensitivity, "
                                "local_variance, noise_clients, dim, sampling, charged_at, epsilon_after "
                                "FROM rounds ORDER BY charge_id").fetchall()
        return [{"session_id": r[0], "round": None if r[1] is None else int.from_bytes(r[1], "big"),
                 "mechanism": _mechanism(r[2:8]), "sampling": r[8], "charged_at": r[9],
                 "epsilon_after": r[10]} for r in rows]

    def report(self) -> BudgetState:
        acc = self.accounting()
        remaining = max(0.0, self.epsilon_budget - acc.epsilon)
        return BudgetState(client=self.client, epsilon_spent=acc.epsilon, delta=self.delta,
                           epsilon_budget=self.epsilon_budget, rounds=self.rounds, remaining=remaining,
                           exhausted=remaining == 0 or self.refused > 0, accountant=acc.accountant)

    # -- internals ----------------------------------------------------------------------------

    def _groups(self) -> Counter:
        rows = self._db.execute("SELECT mechanism, l2_sensitivity, l1_sensitivity, local_variance, "
                                "noise_clients, dim, sampling, count(*) FROM rounds GROUP BY mechanism, "
                                "l2_sensitivity, l1_sensitivity, local_variance, noise_clients, dim, "
                                "sampling").fetchall()
        return Counter({(_mechanism(r[:6]), r[6]): r[7] for r in rows})

    def _compose(self, groups: Counter) -> Accounting:
        return composed_accounting([(mech, q, n) for (mech, q), n in groups.items()],
                                   delta=self.delta, accountant=self.accountant)

    def _write(self) -> write_transaction:
        # Taken before the ledger is read: two processes of one client cannot both see room for
        # one more round.
        return write_transaction(self._db)


def _mechanism(row) -> RoundMechanism:
    name, l2, l1, variance, clients, dim = row
    return RoundMechanism(mechanism=Mechanism(name), l2_sensitivity=l2, l1_sensitivity=l1,
                          local_variance=variance, noise_clients=clients, dim=dim)


def _u64(round: int) -> bytes:
    if isinstance(round, bool) or not isinstance(round, int) or not 0 <= round < 1 << 64:
        raise ConfigurationError(f"round must be an integer in [0, 2^64), got {round!r}")
    return round.to_bytes(8, "big")


# --- the population's view -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetSummary:
    """The population's budget state, from what clients report (``BudgetState``): the server
    builds it without seeing any update."""

    clients: int
    exhausted: int  # clients that refused a round for their budget, or have none left
    exhausted_clients: list[int]
    epsilon_min: float
    epsilon_median: float
    epsilon_max: float
    rounds_max: int
    delta: float | None  # the clients' delta, when they all share one

    def as_dict(self) -> dict:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}

    def summary(self) -> str:
        return (f"privacy budgets of {self.clients} clients: {self.exhausted} exhausted; epsilon "
                f"spent min {self.epsilon_min:.4g}, median {self.epsilon_median:.4g}, max "
                f"{self.epsilon_max:.4g}" + (f" at delta {self.delta}" if self.delta else "")
                + f"; at most {self.rounds_max} rounds")


def population_budget(states: Iterable[BudgetState]) -> BudgetSummary | None:
    """Summarise the clients' reported budget states (None if there are none)."""
    states = list(states)
    if not states:
        return None
    spent = [s.epsilon_spent for s in states]
    deltas = {s.delta for s in states}
    return BudgetSummary(
        clients=len(states),
        exhausted=sum(s.exhausted for s in states),
        exhausted_clients=sorted(s.client for s in states if s.exhausted and s.client is not None),
        epsilon_min=min(spent), epsilon_median=float(statistics.median(spent)), epsilon_max=max(spent),
        rounds_max=max(s.rounds for s in states),
        delta=deltas.pop() if len(deltas) == 1 else None,
    )


__all__ = ["BudgetState", "BudgetSummary", "PrivacyBudget", "population_budget"]
