"""Which clients form which group: fixed by the round's public seed, never by the server.

Clients 1..n are ordered by SHA-256(label || seed || client) and dealt into g groups round-robin
(sizes differ by at most one). Every client recomputes its group from the seed it was given, so
a server cannot gather chosen clients (say, its Sybils with one victim) into one group; the seed
comes from the operator's signed round config in a deployment, and from the CSPRNG in a
simulation.
"""

from __future__ import annotations

import hashlib

from secagg.errors import ConfigurationError

GROUP_LABEL = b"secagg/1 groups\x00"
SEED_BYTES = 32


def assign_groups(clients: int, groups: int, seed: bytes) -> list[tuple[int, ...]]:
    """The g groups of clients 1..n (each sorted), group 0 first."""
    if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
        raise ConfigurationError(f"the group seed must be {SEED_BYTES} bytes")
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ConfigurationError(f"groups must be a positive integer, got {groups!r}")
    if groups > clients:
        raise ConfigurationError(f"{groups} groups of {clients} clients would leave groups empty")
    order = sorted(range(1, clients + 1),
                   key=lambda c: hashlib.sha256(GROUP_LABEL + seed + c.to_bytes(8, "big")).digest())
    return [tuple(sorted(order[j::groups])) for j in range(groups)]


def group_of(client: int, clients: int, groups: int, seed: bytes) -> int:
    """The group a client belongs to (what each client checks against the config it is sent)."""
    for j, members in enumerate(assign_groups(clients, groups, seed)):
        if client in members:
            return j
    raise ConfigurationError(f"client {client} is not one of clients 1..{clients}")
