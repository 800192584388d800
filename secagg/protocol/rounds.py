"""The rounds of the protocol as one table, and everything derived from it.

Theory of operation. Everything that differs between rounds lives in ``ROUNDS`` (h11's
``_state.py`` is the model): the request the server sends, the response it waits for, the dropout
stage a simulated client can go silent at, and the handler names. From the table come

- ``Phase``: the server's phases, one per round, then ``Completed`` / ``Aborted``;
- ``Stage``: where a client can go silent in a dropout schedule;
- ``ClientState`` and ``CLIENT_TRANSITIONS``: the client waits for each round's request in turn;
- ``PeerState``, ``SERVER_TRANSITIONS`` and ``PHASE_CLOSE``: the server's view of one client;
- :func:`state_diagram`: the text of SPEC.md section 8 (a test compares them).

Handlers are found by convention from a round's ``key``: the client answers a request in
``Client._on_<key>``, the server takes a response in ``Server._accept_<key>`` and closes the phase
in ``Server._close_<key>``. Adding a round (ConsistencyCheck, say) is one row and three methods.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from secagg.messages import (
    Abort,
    ConsistencyCheck,
    ConsistencyCheckRequest,
    AdvertiseKeys,
    AdvertiseKeysRequest,
    MaskedInput,
    MaskedInputRequest,
    Message,
    ShareKeys,
    ShareKeysRequest,
    UnmaskRequest,
    UnmaskResponse,
)


@dataclass(frozen=True, slots=True)
class RoundSpec:
    """One round: the server sends ``request`` to every live client and waits for ``response``.

    ``prunes``: after this round closes, clients left with fewer than t live neighbours are told to
    stop, because their secrets could no longer be recovered (true until inputs enter the sum).
    """

    name: str
    key: str
    stage: str
    request: type[Message]
    response: type[Message]
    prunes: bool
    authenticated_only: bool = False


ROUNDS: tuple[RoundSpec, ...] = (
    RoundSpec("AdvertiseKeys", "advertise_keys", "advertise", AdvertiseKeysRequest, AdvertiseKeys, True),
    RoundSpec("ShareKeys", "share_keys", "share", ShareKeysRequest, ShareKeys, True),
    RoundSpec("MaskedInput", "masked_input", "masked", MaskedInputRequest, MaskedInput, False),
    RoundSpec("ConsistencyCheck", "consistency_check", "consistency", ConsistencyCheckRequest,
              ConsistencyCheck, False, authenticated_only=True),
    RoundSpec("Unmask", "unmask", "unmask", UnmaskRequest, UnmaskResponse, False),
)


def round_table(authenticated: bool) -> tuple[RoundSpec, ...]:
    """The rounds a round of this mode runs, in order."""
    return tuple(r for r in ROUNDS if authenticated or not r.authenticated_only)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


# --- derived: server phases and dropout stages ---------------------------------------------------

Phase = Enum(  # type: ignore[misc]
    "Phase",
    [(_snake(r.name), r.name) for r in ROUNDS] + [("COMPLETED", "Completed"), ("ABORTED", "Aborted")],
    type=str,
    module=__name__,
)
Phase.__doc__ = "The server's phases: one per round in ROUNDS, then Completed or Aborted."

Stage = Enum(  # type: ignore[misc]
    "Stage", [(_snake(r.name), r.stage) for r in ROUNDS], type=str, module=__name__
)
Stage.__doc__ = "Where a client goes silent: it never sends this round's response nor any later one."

STAGE_ORDER: list = list(Stage)
ROUND_OF_PHASE: dict = {Phase(r.name): r for r in ROUNDS}
ROUND_OF_REQUEST: dict[type[Message], int] = {r.request: i for i, r in enumerate(ROUNDS)}
ROUND_OF_RESPONSE: dict[type[Message], int] = {r.response: i for i, r in enumerate(ROUNDS)}


_PHASE_INDEX = {p: min(i, len(ROUNDS)) for i, p in enumerate(Phase)}


def phase_index(phase) -> int:
    """0..len(ROUNDS)-1 for a round's phase; len(ROUNDS) once the round has ended."""
    return _PHASE_INDEX[phase]


# --- derived: the client's states ---------------------------------------------------------------

ClientState = Enum(  # type: ignore[misc]
    "ClientState",
    [(_snake("Await" + r.request.__name__), "Await" + r.request.__name__) for r in ROUNDS]
    + [("DONE", "Done"), ("ABORTED", "Aborted"), ("ERROR", "Error")],
    type=str,
    module=__name__,
)
ClientState.__doc__ = "A client waits for each round's request in turn; Done, Aborted, Error end it."

CLIENT_AWAIT: list = list(ClientState)[: len(ROUNDS)]


def client_transitions(rounds: tuple[RoundSpec, ...]) -> dict[tuple, object]:
    """The client's table for one mode: it waits for each of ``rounds``' requests in turn."""
    table: dict[tuple, object] = {}
    awaits = [CLIENT_AWAIT[ROUNDS.index(r)] for r in rounds]
    for i, r in enumerate(rounds):
        table[(awaits[i], r.request)] = awaits[i + 1] if i + 1 < len(rounds) else ClientState.DONE
    for state in [*awaits, ClientState.DONE]:
        # A client that sent everything still learns that the round produced no aggregate.
        table[(state, Abort)] = ClientState.ABORTED
    return table


CLIENT_TRANSITIONS = client_transitions(round_table(False))
CLIENT_TRANSITIONS_AUTHENTICATED = client_transitions(round_table(True))


# --- derived: the server's view of one client ---------------------------------------------------

PeerState = Enum(  # type: ignore[misc]
    "PeerState",
    [
        item
        for r in ROUNDS
        for item in (
            (_snake("Await" + r.response.__name__), "Await" + r.response.__name__),
            (_snake("Sent" + r.response.__name__), "Sent" + r.response.__name__),
        )
    ]
    + [("DROPPED", "Dropped"), ("PRUNED", "Pruned"), ("EXCLUDED", "Excluded")],
    type=str,
    module=__name__,
)
PeerState.__doc__ = (
    "The server's view of one client. Dropped: silent past a deadline or lost by the transport. "
    "Pruned: told to stop because its secrets could no longer be recovered. Excluded: blamed for "
    "a fault (RemoteProtocolError in Server.excluded)."
)
PEER_AWAIT: list = [PeerState["AWAIT_" + _snake(r.response.__name__)] for r in ROUNDS]
PEER_SENT: list = [PeerState["SENT_" + _snake(r.response.__name__)] for r in ROUNDS]
PEER_ENDED = frozenset({PeerState.DROPPED, PeerState.PRUNED, PeerState.EXCLUDED})

SERVER_TRANSITIONS: dict[tuple, object] = {
    (PEER_AWAIT[i], r.response): PEER_SENT[i] for i, r in enumerate(ROUNDS)
}


def phase_close(rounds: tuple[RoundSpec, ...]) -> dict:
    """phase -> (state of those who answered, state they await next, next phase), for one mode.
    At the close of a phase, a client that answered moves on and one that did not has dropped."""
    table = {}
    for i, r in enumerate(rounds):
        g = ROUNDS.index(r)
        nxt = rounds[i + 1] if i + 1 < len(rounds) else None
        table[Phase(r.name)] = (
            PEER_SENT[g],
            PEER_AWAIT[ROUNDS.index(nxt)] if nxt else PEER_SENT[g],
            Phase(nxt.name) if nxt else Phase.COMPLETED,
        )
    return table


PHASE_CLOSE = phase_close(round_table(False))
PHASE_CLOSE_AUTHENTICATED = phase_close(round_table(True))


def state_diagram() -> str:
    """The state diagrams of SPEC.md section 8, drawn from the table (both modes)."""
    plain, auth = round_table(False), round_table(True)
    lines = ["Server phases:",
             "    " + " -> ".join([r.name for r in plain] + ["Completed"]),
             "    authenticated: " + " -> ".join([r.name for r in auth] + ["Completed"]),
             "    any phase -> Aborted (too few clients left, or a secret that cannot be recovered)"]
    lines += ["", "Client (one round):"]
    seen = set()
    for mode, table in (("", CLIENT_TRANSITIONS), (" (authenticated)", CLIENT_TRANSITIONS_AUTHENTICATED)):
        for (state, msg), nxt in table.items():
            if msg is Abort or (state, msg, nxt) in seen:
                continue
            seen.add((state, msg, nxt))
            reply = ROUNDS[ROUND_OF_REQUEST[msg]].response.__name__
            tag = mode if (state, msg) not in CLIENT_TRANSITIONS or CLIENT_TRANSITIONS[(state, msg)] is not nxt else ""
            lines.append(f"    {state.value:<32} --{msg.__name__} / {reply}--> {nxt.value}{tag}")
    lines.append(f"    {'any but Aborted, Error':<32} --Abort--> Aborted")
    lines.append(f"    {'any but Done, Aborted':<32} --refused request--> Error")
    lines += ["", "Server's view of one client:"]
    for i, r in enumerate(ROUNDS):
        tag = " (authenticated)" if r.authenticated_only else ""
        lines.append(f"    {PEER_AWAIT[i].value:<26} --{r.response.__name__}--> {PEER_SENT[i].value}{tag}")
        for mode, close in (("", PHASE_CLOSE), (" (authenticated)", PHASE_CLOSE_AUTHENTICATED)):
            entry = close.get(Phase(r.name))
            if entry is None or entry[2] is Phase.COMPLETED:
                continue
            if mode and PHASE_CLOSE.get(Phase(r.name)) == entry:
                continue
            lines.append(f"    {entry[0].value:<26} --close {r.name}--> {entry[1].value}{mode or tag}")
    lines.append(f"    {'Await*':<26} --close, silent / peer_lost--> Dropped")
    lines.append(f"    {'Sent* (pruning rounds)':<26} --fewer than t live neighbours--> Pruned")
    lines.append(f"    {'any live state':<26} --fault, blamed on the sender--> Excluded")
    return "\n".join(lines)
