"""A deployment of the authenticated mode in one script: who holds which key, and what each
party checks (protocol_spec/SPEC.md sections 5.5, 12-14).

    python examples/authenticated_round.py

- The enrolment service runs a CA and writes the client registry (an SQLite file).
- The operator holds an Ed25519 key the aggregation server never sees: it signs each round's
  config and each global model.
- The aggregation server opens the registry read-only and relays the operator's signature.
- Each client holds its identity key, the operator's public key and a ledger of the rounds it
  joined; it trains only on a model the operator signed.

Then the server replays the round: every client refuses it.
"""

import tempfile
from pathlib import Path

import numpy as np

from secagg import Client, RoundConfig, Server
from secagg.errors import ReplayedRound
from secagg.identity import CertificateAuthority, ClientIdentity, EnrolmentLimits, Registry
from secagg.model_signing import ModelGuard, generate_operator_key, sign_model
from secagg.protocol.keys import sign_config
from secagg.protocol.ledger import RoundLedger
from secagg.protocol.rounds import Stage
from secagg.transport.memory import InMemoryRouter

NUM_CLIENTS, DIM = 40, 1_000
CRASHED = {5: Stage.MASKED_INPUT, 11: Stage.CONSISTENCY_CHECK}

work = Path(tempfile.mkdtemp(prefix="secagg-deployment-"))

# 1. Enrolment service: a CA, and one enrolled identity per client (tokens are one-use).
ca = CertificateAuthority.create("example deployment CA", valid_days=30)
enrolment = Registry(work / "registry.db", ca_certificate=ca.certificate,
                     limits=EnrolmentLimits(max_per_window=NUM_CLIENTS))
identities = {}
for c in range(1, NUM_CLIENTS + 1):
    identities[c] = ClientIdentity.generate(c)
    certificate = ca.issue_client_certificate(c, identities[c].public_key_bytes, valid_days=7)
    enrolment.enroll(c, certificate, token=f"one-time token {c}", declared_examples=500)
enrolment.close()

# 2. Operator: fixes and signs the round config ((k, t) against a malicious server), and the model.
operator = generate_operator_key()
operator_public = operator.public_key().public_bytes_raw()
config = RoundConfig.create(NUM_CLIENTS, DIM, dropout_rate=0.1, authenticated=True)
config_signature = sign_config(config, operator)
global_model = {"w": np.zeros(DIM, dtype=np.float32)}
signed_model = sign_model(global_model, round=config.round, model_id="example", operator_key=operator)

# 3. Aggregation server: reads the registry, relays the operator's signature, holds no key.
registry = Registry.open_read_only(work / "registry.db", ca_certificate=ca.certificate)


def make_clients(updates):
    clients = {}
    for c in config.clients:
        ModelGuard(operator.public_key(), "example").accept(global_model, signed_model)  # train on it
        clients[c] = Client(c, updates[c], signing_key=identities[c], identities=registry,
                            operator_key=operator_public, ledger=ledgers[c], require_authenticated=True)
    return clients


rng = np.random.default_rng(3)
updates = {c: rng.uniform(-1, 1, DIM) for c in config.clients}
ledgers = {c: RoundLedger(work / f"ledger-{c}.db") for c in config.clients}
server = Server(config, identities=registry, config_signature=config_signature)
InMemoryRouter(server, make_clients(updates), schedule=CRASHED).run()
result = server.result()
true_sum = sum(updates[c] for c in result.contributors)
print(f"{config.describe()}")
print(f"contributors: {len(result.contributors)} of {NUM_CLIENTS} (dropped: {list(result.dropped)})")
print(f"max |aggregate - true sum| = {np.max(np.abs(result.values - true_sum)):.2e}")
assert np.allclose(result.values, true_sum, atol=len(result.contributors) * config.quantizer.step)

# 4. The server replays the same (correctly signed) round to the same clients: refused by all.
replay = Server(config, identities=registry, config_signature=config_signature)
router = InMemoryRouter(replay, make_clients(updates))
router.run()
refused = [c for c, e in router.refusals.items() if isinstance(e, ReplayedRound)]
print(f"replayed round: refused by {len(refused)} of {NUM_CLIENTS} clients "
      f"({router.refusals[1]})")
assert len(refused) == NUM_CLIENTS  # the crashed clients had joined (and recorded) it too
