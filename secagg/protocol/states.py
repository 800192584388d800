"""The transition tables, as data: ``{(state, message type): next state}`` per role.

Anything not in a table is a protocol error (h11 ``_state.py``; h2: "anything not in this map is
invalid"). A client that meets one goes to ``ERROR`` and sends nothing more; the server puts the
offending client in ``ERROR`` and carries on without it while enough clients remain. SPEC.md's
state diagrams are drawn from these tables.
"""

from __future__ import annotations

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


class Phase(str, Enum):
    """The server's round phases, named as in Bonawitz et al. 2017."""

    ADVERTISE_KEYS = "AdvertiseKeys"
    SHARE_KEYS = "ShareKeys"
    MASKED_INPUT = "MaskedInput"
    # CONSISTENCY_CHECK = "ConsistencyCheck"  (authenticated variant: sits here)
    UNMASK = "Unmask"
    COMPLETED = "Completed"
    ABORTED = "Aborted"


class ClientState(str, Enum):
    AWAIT_CONFIG = "AwaitConfig"
    AWAIT_SHARE_KEYS_REQUEST = "AwaitShareKeysRequest"
    AWAIT_MASKED_INPUT_REQUEST = "AwaitMaskedInputRequest"
    AWAIT_UNMASK_REQUEST = "AwaitUnmaskRequest"
    DONE = "Done"
    ABORTED = "Aborted"
    ERROR = "Error"


CLIENT_TRANSITIONS: dict[tuple[ClientState, type[Message]], ClientState] = {
    (ClientState.AWAIT_CONFIG, AdvertiseKeysRequest): ClientState.AWAIT_SHARE_KEYS_REQUEST,
    (ClientState.AWAIT_SHARE_KEYS_REQUEST, ShareKeysRequest): ClientState.AWAIT_MASKED_INPUT_REQUEST,
    (ClientState.AWAIT_MASKED_INPUT_REQUEST, MaskedInputRequest): ClientState.AWAIT_UNMASK_REQUEST,
    (ClientState.AWAIT_UNMASK_REQUEST, UnmaskRequest): ClientState.DONE,
    (ClientState.AWAIT_CONFIG, Abort): ClientState.ABORTED,
    (ClientState.AWAIT_SHARE_KEYS_REQUEST, Abort): ClientState.ABORTED,
    (ClientState.AWAIT_MASKED_INPUT_REQUEST, Abort): ClientState.ABORTED,
    (ClientState.AWAIT_UNMASK_REQUEST, Abort): ClientState.ABORTED,
    # A client that sent everything still learns that the round produced no aggregate.
    (ClientState.DONE, Abort): ClientState.ABORTED,
}


class PeerState(str, Enum):
    """The server's view of one client."""

    AWAIT_KEYS = "AwaitKeys"
    ADVERTISED = "Advertised"
    AWAIT_SHARES = "AwaitShares"
    SHARED = "Shared"
    AWAIT_MASKED_INPUT = "AwaitMaskedInput"
    MASKED = "Masked"
    AWAIT_UNMASK_RESPONSE = "AwaitUnmaskResponse"
    UNMASKED = "Unmasked"
    DROPPED = "Dropped"
    EXCLUDED = "Excluded"
    ERROR = "Error"


SERVER_TRANSITIONS: dict[tuple[PeerState, type[Message]], PeerState] = {
    (PeerState.AWAIT_KEYS, AdvertiseKeys): PeerState.ADVERTISED,
    (PeerState.AWAIT_SHARES, ShareKeys): PeerState.SHARED,
    (PeerState.AWAIT_MASKED_INPUT, MaskedInput): PeerState.MASKED,
    (PeerState.AWAIT_UNMASK_RESPONSE, UnmaskResponse): PeerState.UNMASKED,
}

# At the close of a phase, a client that answered moves on and one that did not has dropped.
PHASE_CLOSE: dict[Phase, tuple[PeerState, PeerState, Phase]] = {
    # phase: (answered, next awaited state, next phase)
    Phase.ADVERTISE_KEYS: (PeerState.ADVERTISED, PeerState.AWAIT_SHARES, Phase.SHARE_KEYS),
    Phase.SHARE_KEYS: (PeerState.SHARED, PeerState.AWAIT_MASKED_INPUT, Phase.MASKED_INPUT),
    Phase.MASKED_INPUT: (PeerState.MASKED, PeerState.AWAIT_UNMASK_RESPONSE, Phase.UNMASK),
    Phase.UNMASK: (PeerState.UNMASKED, PeerState.UNMASKED, Phase.COMPLETED),
}

# What each phase waits for, for error messages.
EXPECTED: dict[Phase, type[Message]] = {
    Phase.ADVERTISE_KEYS: AdvertiseKeys,
    Phase.SHARE_KEYS: ShareKeys,
    Phase.MASKED_INPUT: MaskedInput,
    Phase.UNMASK: UnmaskResponse,
}
