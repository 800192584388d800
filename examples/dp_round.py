"""Secure aggregation with distributed differential privacy, as an FL pipeline embeds it.

    python examples/dp_round.py

Each client clips its model update, adds its share of discrete Gaussian noise and masks it; the
server learns only the noised sum of the tensors, checks it for plausibility, and never sees an
individual update. The guarantee (epsilon, delta) holds as long as at least m_min clients
contribute, however many drop.
"""

import numpy as np

from secagg import Client, RoundConfig, Server
from secagg.protocol.rounds import Stage
from secagg.transport.memory import InMemoryRouter
from secagg.privacy import DPDecoder, DPEncoder, DPPlan, PlausibilityChecks, PrivacyBudget

SHAPES = [(16, 8), (8,)]  # a tiny model: one weight matrix and a bias
NUM_CLIENTS, M_MIN = 30, 25

# 1. Public per-round plan: clip norm, noise, and the ring width chosen automatically.
plan = DPPlan.create(SHAPES, clip=1.0, noise_multiplier=1.0, min_clients=M_MIN, max_clients=NUM_CLIENTS)
print(f"plan: {plan.bits} bits per coordinate, epsilon {plan.epsilon(rounds=1, delta=1e-6):.2f} "
      f"at delta 1e-6 for this round")

# 2. The SecAgg round carries the privacy layer's ring vectors (levels = 0).
config = RoundConfig.create(NUM_CLIENTS, plan.ring_dim, bits=plan.bits, levels=0, dropout_rate=0.1)
server = Server(config)
rng = np.random.default_rng(1)
clients = {}
for c in config.clients:
    budget = PrivacyBudget(epsilon_budget=20.0, delta=1e-6)  # each client guards its own budget
    clients[c] = Client(c, encoder=DPEncoder(plan, budget=budget))
    update = [rng.normal(0, 0.1, s) for s in SHAPES]  # local training's output
    clients[c].provide_input(update)

# 3. Run the round through the in-process router; clients 4 and 9 crash after sharing keys.
InMemoryRouter(server, clients, schedule={4: Stage.MASKED_INPUT, 9: Stage.MASKED_INPUT}).run()

# 4. Decode and check the aggregate: the only thing the server ever sees.
result = server.result()
aggregate = DPDecoder(plan).decode(result.ring_sum, len(result.contributors))
report = PlausibilityChecks(plan).run(aggregate)
for check in report.results:
    print(f"  {check.name:<16} {'pass' if check.passed else 'FAIL'}  value {check.value:.3g}, bound {check.bound:.3g}")
assert not report.rejected
print(f"aggregate of {len(result.contributors)} clients: weight matrix {aggregate.tensors[0].shape}, "
      f"bias {aggregate.tensors[1].shape}; clipped clients (noised count) "
      f"{aggregate.clipped_count:.1f} +- {plan.clip_count_std(len(result.contributors)):.1f}")
