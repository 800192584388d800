"""Client.snapshot / Client.restore: a client that lives as bytes between requests (a Flower
SuperNode may run each message in a new process) finishes the round exactly as one that lived."""

from __future__ import annotations

import numpy as np
import pytest

from secagg import Client, RoundConfig, Server
from secagg.crypto.randomness import DeterministicRandom
from secagg.errors import InvalidInput, LocalProtocolError


def run_restoring(n=20, dim=64, silent=(), seed=0):
    config = RoundConfig.create(n, dim, bits=24, dropout_rate=0.1, rng=DeterministicRandom(f"snap{seed}"))
    server = Server(config)
    gen = np.random.default_rng(seed)
    inputs = {c: gen.uniform(-1, 1, dim) for c in config.clients}
    snaps = {c: Client(c).snapshot() for c in config.clients}
    queue, sizes = server.start(), []
    while queue:
        nxt = []
        for recipient, frame in queue:
            client = Client.restore(snaps[recipient])
            if client.phase == "MaskedInput":
                if recipient in silent:
                    continue
                client.provide_input(inputs[recipient])
            for out in client.receive(frame):
                nxt += server.receive(out.frame, recipient)
            snaps[recipient] = client.snapshot()
            sizes.append(len(snaps[recipient]))
        if not nxt and not server.finished:
            nxt = server.close_phase()
        queue = [] if server.finished else nxt
    return server.result(), inputs, sizes


@pytest.mark.parametrize("silent", [(), (3, 11)])
def test_a_round_of_restored_clients_is_exact(silent):
    result, inputs, sizes = run_restoring(silent=silent)
    assert set(result.contributors) == set(inputs) - set(silent)
    truth = sum(inputs[c] for c in result.contributors)
    assert np.abs(result.values - truth).max() < 1e-4
    assert max(sizes) < 4096  # keys, neighbours' keys and held shares: small, whatever d is


def test_snapshot_refuses_to_carry_an_input_or_a_failed_client():
    config = RoundConfig.create(10, 4, rng=DeterministicRandom("s"))
    server = Server(config)
    (first, *_) = server.start()
    client = Client(first.recipient, np.zeros(4))
    client.receive(first.frame)
    with pytest.raises(LocalProtocolError, match="input"):
        client.snapshot()
    bad = Client(first.recipient, np.full(4, np.nan))
    with pytest.raises(InvalidInput):
        bad.receive(first.frame)


def test_restore_refuses_bytes_that_are_not_a_snapshot():
    with pytest.raises(LocalProtocolError, match="not a client snapshot"):
        Client.restore(b"\x83\x01\x02\x03")
    with pytest.raises(LocalProtocolError, match="not a client snapshot"):
        Client.restore(b"garbage")
