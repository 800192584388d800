"""What the sans-IO core and a driver exchange (ROUNDS.md, "What the core hands a driver").

In: ``receive(frame, sender)``, ``close_phase()`` (a deadline passed), ``peer_lost(id)`` (the
transport saw a disconnect). Out: lists of :class:`Outgoing`, and at the end a result or a
``RoundAborted``. A driver moves bytes; it never encodes, decodes or routes by message type.

Delivery is at-least-once: a byte-identical repeat of an accepted frame, a frame from a party
that left, and a frame for a phase that closed are ignored and counted in :class:`Ignored`, never
raised.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import NamedTuple


class Outgoing(NamedTuple):
    """One frame for the driver to deliver: ``recipient`` 0 is the server."""

    recipient: int
    frame: bytes


class Ignored:
    """Frames a party ignored, counted by reason; the last few kept with their sender."""

    __slots__ = ("counts", "recent")

    def __init__(self, keep: int = 64) -> None:
        self.counts: Counter[str] = Counter()
        self.recent: deque[tuple[int, str]] = deque(maxlen=keep)

    def add(self, sender: int, reason: str) -> None:
        self.counts[reason] += 1
        self.recent.append((sender, reason))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))
