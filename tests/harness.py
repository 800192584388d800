"""Test rounds on the one in-process router: a deterministic round whose clients go silent on a
schedule, with the reference sums of an encoder-level recorder, and the router at hand for tests
that play a malicious network or server (``tamper``, ``run(until=...)``, ``pending()``)."""

from __future__ import annotations

import math

import numpy as np

from secagg.codec import decode
from secagg.config import RoundConfig
from secagg.crypto.randomness import DeterministicRandom
from secagg.errors import ConfigurationError
from secagg.protocol.rounds import STAGE_ORDER
from secagg.quantize import RangeEncoder
from secagg.sim.scenario import TruthRecorder, build_parties
from secagg.transport.memory import Faults, InMemoryRouter


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
    """``schedule``: client -> index (0..3) of the first round in which it is silent."""

    def __init__(self, config: RoundConfig, inputs: dict[int, np.ndarray] | None = None,
                 label: str = "harness", schedule: dict[int, int] | None = None,
                 faults: Faults = Faults(), tamper=None, announce_losses: bool = False,
                 **server_kw) -> None:
        root = DeterministicRandom(label)
        self.config = config
        self.inputs = inputs if inputs is not None else make_inputs(config)
        self.recorder = TruthRecorder(config.dim, config.bits, config.dim, keep_each=True)
        self.server, self.clients, self.registry = build_parties(
            config, root, self.inputs.__getitem__,
            lambda c: self.recorder.wrap(c, RangeEncoder(root.fork("client", c, "quantize"))),
            **server_kw,
        )
        self.router = InMemoryRouter(
            self.server, self.clients, faults=faults, tamper=tamper, announce_losses=announce_losses,
            schedule={c: STAGE_ORDER[i] for c, i in (schedule or {}).items() if i < len(STAGE_ORDER)},
        )

    def run(self, until=None) -> None:
        self.router.run(until)

    def requests(self) -> dict[int, object]:
        """At a stop of ``run(until=...)``: the server's requests in flight, decoded, by recipient
        (taken off the network: a test delivers them, altered or not)."""
        return {r: decode(f) for s, r, f in self.router.pending() if s == 0}

    def quantized(self, client: int) -> np.ndarray:
        return self.recorder._each[client][0]

    def true_ring_sum(self, contributors) -> np.ndarray:
        return self.recorder.truth(contributors)[0]
