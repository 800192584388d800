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


ROUNDS: tuple[RoundSpec, ...] = (
    RoundSpec("AdvertiseKeys", "advertise_keys", "advertise", AdvertiseKeysRequest, AdvertiseKeys, True),
    RoundSpec("ShareKeys", "share_keys", "share", ShareKeysRequest, ShareKeys, True),
    RoundSpec("MaskedInput", "masked_input", "masked", MaskedInputRequest, MaskedInput, False),
    RoundSpec("Unmask", "unmask", "unmask", UnmaskRequest, UnmaskResponse, False),
)


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
CLIENT_TRANSITIONS: dict[tuple, object] = {}
for _i, _r in enumerate(ROUNDS):
    _next = CLIENT_AWAIT[_i + 1] if _i + 1 < len(ROUNDS) else ClientState.DONE
    CLIENT_TRANSITIONS[(CLIENT_AWAIT[_i], _r.request)] = _next
for _s in [*CLIENT_AWAIT, ClientState.DONE]:
    # A client that sent everything still learns that the round produced no aggregate.
    CLIENT_TRANSITIONS[(_s, Abort)] = ClientState.ABORTED


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

# At the close of a phase, a client that answered moves on and one that did not has dropped.
PHASE_CLOSE: dict = {
    Phase(r.name): (
        PEER_SENT[i],
        PEER_AWAIT[i + 1] if i + 1 < len(ROUNDS) else PEER_SENT[i],
        Phase(ROUNDS[i + 1].name) if i + 1 < len(ROUNDS) else Phase.COMPLETED,
    )
    for i, r in enumerate(ROUNDS)
}


def state_diagram() -> str:
    """The state diagrams of SPEC.md section 8, drawn from the table."""
    lines = ["Server phases:", "    " + " -> ".join(p.value for p in Phase if p is not Phase.ABORTED)]
    lines.append("    any phase -> Aborted (too few clients left, or a secret that cannot be recovered)")
    lines += ["", "Client (one round):"]
    for (state, msg), nxt in CLIENT_TRANSITIONS.items():
        if msg is Abort:
            continue
        reply = ROUNDS[ROUND_OF_REQUEST[msg]].response.__name__
        lines.append(f"    {state.value:<28} --{msg.__name__} / {reply}--> {nxt.value}")
    lines.append(f"    {'any but Aborted, Error':<28} --Abort--> Aborted")
    lines.append(f"    {'any but Done, Aborted':<28} --refused request--> Error")
    lines += ["", "Server's view of one client:"]
    for i, r in enumerate(ROUNDS):
        sent, awaited, nxt = PHASE_CLOSE[Phase(r.name)]
        lines.append(f"    {PEER_AWAIT[i].value:<22} --{r.response.__name__}--> {PEER_SENT[i].value}")
        if nxt is not Phase.COMPLETED:
            lines.append(f"    {sent.value:<22} --close {r.name}--> {awaited.value}")
    lines.append(f"    {'Await*':<22} --close, silent / peer_lost--> Dropped")
    lines.append(f"    {'Sent* (pruning rounds)':<22} --fewer than t live neighbours--> Pruned")
    lines.append(f"    {'any live state':<22} --fault, blamed on the sender--> Excluded")
    return "\n".join(lines)
