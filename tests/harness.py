"""An in-memory harness that drives the typed state machines phase by phase (no codec), so tests
can make clients go silent and play a server that tampers with its messages."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from secagg.config import RoundConfig
from secagg.crypto.randomness import DeterministicRandom
from secagg.errors import ConfigurationError
from secagg.messages import MaskedInputRequest, Message
from secagg.protocol.client import Client
from secagg.protocol.server import Server


def make_config(n: int, dim: int, bits: int = 16, dropout_rate: float = 0.3, label: str = "cfg", **kw) -> RoundConfig:
    rng = DeterministicRandom(label)
    try:
        return RoundConfig.create(n, dim, bits=bits, dropout_rate=dropout_rate, rng=rng, **kw)
    except ConfigurationError:
        # Too few clients for a sparse graph: original SecAgg, two thirds threshold.
        return RoundConfig.create(n, dim, bits=bits, full_graph=True, rng=rng,
                                  threshold=max(2, math.ceil(2 * (n - 1) / 3)), **kw)


def make_inputs(config: RoundConfig, seed: int = 0) -> dict[int, np.ndarray]:
    gen = np.random.default_rng(seed)
    r = config.value_range
    return {c: gen.uniform(-r, r, config.dim) for c in config.clients}


class Harness:
    def __init__(self, config: RoundConfig, inputs: dict[int, np.ndarray] | None = None, label: str = "harness",
                 **server_kw) -> None:
        root = DeterministicRandom(label)
        self.config = config
        self.inputs = inputs if inputs is not None else make_inputs(config)
        self.server = Server(config, rng=root.fork("server"), **server_kw)
        self.clients = {c: Client(c, self.inputs[c], rng=root.fork(f"client {c}")) for c in config.clients}
        self.outbox: list[Message] = self.server.start()
        self.quantized: dict[int, np.ndarray] = {}

    def phase(self, silent=(), intercept: Callable[[Message], Message | None] | None = None) -> None:
        """Deliver the outbox; clients in ``silent`` do not answer; then close the phase."""
        phase = self.server.phase
        pending, self.outbox = self.outbox, []
        for msg in pending:
            if intercept is not None:
                msg = intercept(msg)
                if msg is None:
                    continue
            client = self.clients[msg.recipient]
            if msg.recipient in silent or client.finished:
                continue
            if isinstance(msg, MaskedInputRequest):
                self.quantized[msg.recipient] = client.quantized_input
            for reply in client.receive(msg):
                self.outbox += self.server.receive(reply)
        if not self.server.finished and self.server.phase is phase:
            self.outbox += self.server.close_phase()

    def run(self, schedule: dict[int, int] | None = None) -> None:
        """``schedule``: client -> index of the first phase (0..3) in which it is silent."""
        schedule = schedule or {}
        i = 0
        while not self.server.finished:
            self.phase(silent={c for c, s in schedule.items() if s <= i})
            i += 1
        # Deliver the server's last words (Abort notices) to clients still listening.
        for msg in self.outbox:
            client = self.clients[msg.recipient]
            if schedule.get(msg.recipient, 99) >= i and client.state.value not in ("Aborted", "Error"):
                client.receive(msg)
        self.outbox = []

    def true_ring_sum(self, contributors) -> np.ndarray:
        mask = (1 << self.config.bits) - 1
        acc = np.zeros(self.config.dim, dtype=np.uint64)
        for c in contributors:
            acc = (acc + self.quantized[c].astype(np.uint64)) & np.uint64(mask)
        return acc
