"""Embed secagg the way an FL pipeline would: a server that learns only the sum of the clients'
model updates, over NumPy arrays, with two clients crashing mid-round.

    python examples/fl_round.py

The driver here is the in-process router; over MQTT or Flower only the loop that carries the
frames changes: the core hands out ``Outgoing(recipient, frame)`` and takes
``receive(frame, sender)``, ``close_phase()`` and ``peer_lost(id)``.
"""

import numpy as np

from secagg import Client, RoundConfig, Server
from secagg.protocol.rounds import Stage
from secagg.transport.memory import InMemoryRouter

NUM_CLIENTS, DIM = 12, 1_000
CRASHED = {3: Stage.MASKED_INPUT, 8: Stage.MASKED_INPUT}  # these two crash after sharing keys

# 1. The server fixes the round's public parameters; (k, t) come from the parameter finder.
config = RoundConfig.create(NUM_CLIENTS, DIM, bits=32, value_range=1.0, dropout_rate=0.2)
server = Server(config)

# 2. Local training produces each client's update (here: random numbers in [-1, 1]).
rng = np.random.default_rng(7)
updates = {c: rng.uniform(-1.0, 1.0, DIM) for c in config.clients}
clients = {c: Client(c, updates[c]) for c in config.clients}

# 3. Run the round: each phase ends when everyone answered or, for the crashed, at its deadline.
InMemoryRouter(server, clients, schedule=CRASHED).run()

# 4. The server holds only the sum of the contributors' updates.
result = server.result()
true_sum = sum(updates[c] for c in result.contributors)
print(f"contributors: {len(result.contributors)} of {NUM_CLIENTS} (dropped: {list(result.dropped)})")
print(f"first coordinates of the aggregate: {np.round(result.values[:4], 6)}")
print(f"max |aggregate - true sum| = {np.max(np.abs(result.values - true_sum)):.2e}")
assert set(result.dropped) == set(CRASHED)
assert np.allclose(result.values, true_sum, atol=len(result.contributors) * config.quantizer.step)
