"""Embed secagg the way an FL pipeline would: a server that learns only the sum of the clients'
model updates, over NumPy arrays, with two clients crashing mid-round.

    python examples/fl_round.py

The "network" here is a list of encoded frames; with MQTT or Flower only `deliver` changes.
"""

import numpy as np

from secagg import Client, RoundConfig, Server, codec
from secagg.protocol.states import Phase

NUM_CLIENTS, DIM = 12, 1_000
CRASHED = {3, 8}  # these two crash after sharing their keys

# 1. The server fixes the round's public parameters; (k, t) come from the parameter finder.
config = RoundConfig.create(NUM_CLIENTS, DIM, bits=32, value_range=1.0, dropout_rate=0.2)
server = Server(config)
clients = {c: Client(c) for c in config.clients}

# 2. Local training produces each client's update (here: random numbers in [-1, 1]).
rng = np.random.default_rng(7)
updates = {c: rng.uniform(-1.0, 1.0, DIM) for c in config.clients}
for c, client in clients.items():
    client.provide_input(updates[c])


def deliver(frames: list[bytes], phase: Phase) -> list[bytes]:
    """Hand each server frame to its client; pass the replies back. Returns the server's next frames."""
    out = []
    for frame in frames:
        msg = codec.decode(frame)
        if msg.recipient in CRASHED and phase in (Phase.MASKED_INPUT, Phase.UNMASK):
            continue  # a crashed client never answers
        for reply in clients[msg.recipient].receive(msg):
            out += [codec.encode(m) for m in server.receive_data(msg.recipient, codec.encode(reply))]
    return out


# 3. Run the round: each phase ends when everyone answered or, here at once, at its deadline.
frames = [codec.encode(m) for m in server.start()]
while not server.finished:
    phase = server.phase
    frames = deliver(frames, phase)
    if not server.finished and server.phase is phase:
        frames += [codec.encode(m) for m in server.close_phase()]

# 4. The server holds only the sum of the contributors' updates.
result = server.result()
true_sum = sum(updates[c] for c in result.contributors)
print(f"contributors: {len(result.contributors)} of {NUM_CLIENTS} (dropped: {list(result.dropped)})")
print(f"first coordinates of the aggregate: {np.round(result.values[:4], 6)}")
print(f"max |aggregate - true sum| = {np.max(np.abs(result.values - true_sum)):.2e}")
assert set(result.dropped) == CRASHED
assert np.allclose(result.values, true_sum, atol=len(result.contributors) * config.quantizer.step)
