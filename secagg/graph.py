"""The SecAgg+ communication graph: a Harary graph H(k, n) on a per-round permuted ring.

Clients 1..n are placed on a ring in the order of SHA-256("secagg/1 graph" || graph_seed ||
id:u32) (ties are impossible in practice and broken by id); each client's neighbours are the k/2
nearest clients on either side. The seed is public and fresh per round, so every party computes
the same graph, and no one can place itself next to a chosen victim without controlling the seed
(Bell et al. 2020, Sec. 4: the graph must be random, not chosen by the server). With k >= n - 1
the graph is complete: original SecAgg.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

GRAPH_LABEL = b"secagg/1 graph"
GRAPH_SEED_BYTES = 32


def ring_order(num_clients: int, graph_seed: bytes) -> np.ndarray:
    """Client ids in ring order."""
    prefix = hashlib.sha256(GRAPH_LABEL + graph_seed)
    keys = []
    for cid in range(1, num_clients + 1):
        h = prefix.copy()
        h.update(cid.to_bytes(4, "big"))
        keys.append((h.digest(), cid))
    keys.sort()
    return np.fromiter((cid for _, cid in keys), dtype=np.int64, count=num_clients)


@dataclass(frozen=True, slots=True)
class Graph:
    num_clients: int
    degree: int
    graph_seed: bytes
    order: np.ndarray = field(repr=False, compare=False)
    position: np.ndarray = field(repr=False, compare=False)
    _cache: dict[int, tuple[int, ...]] = field(default_factory=dict, repr=False, compare=False)

    def neighbours(self, client: int) -> tuple[int, ...]:
        """The clients ``client`` shares keys with, ascending by id."""
        cached = self._cache.get(client)
        if cached is None:
            cached = self._cache[client] = self._compute_neighbours(client)
        return cached

    def _compute_neighbours(self, client: int) -> tuple[int, ...]:
        n = self.num_clients
        if self.degree >= n - 1:
            return tuple(c for c in range(1, n + 1) if c != client)
        half = self.degree // 2
        pos = int(self.position[client])
        offsets = np.concatenate((np.arange(-half, 0), np.arange(1, half + 1)))
        return tuple(sorted(int(c) for c in self.order[(pos + offsets) % n]))

    def are_neighbours(self, a: int, b: int) -> bool:
        if a == b:
            return False
        if self.degree >= self.num_clients - 1:
            return True
        gap = abs(int(self.position[a]) - int(self.position[b]))
        return min(gap, self.num_clients - gap) <= self.degree // 2


@lru_cache(maxsize=8)
def harary_graph(num_clients: int, degree: int, graph_seed: bytes) -> Graph:
    if degree % 2 and degree < num_clients - 1:
        raise ValueError(f"a Harary graph below the complete graph needs an even degree, got {degree}")
    order = ring_order(num_clients, graph_seed)
    position = np.empty(num_clients + 1, dtype=np.int64)
    position[order] = np.arange(num_clients)
    return Graph(num_clients, degree, graph_seed, order, position)
