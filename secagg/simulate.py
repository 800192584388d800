"""In-process simulation of one round: a scenario, the in-memory router, a report.

The jobs live in their own modules: ``secagg.sim.scenario`` (inputs, dropout schedule, reference
sums), ``secagg.transport.memory`` (the router every test and example also uses) and
``secagg.sim.report``. This module wires them; it reads nothing but public results.

Memory stays O(d + n*k): each client's input is made when its MaskedInputRequest arrives, encoded,
masked, sent and forgotten; the server accumulates.

Clients at scale (``client_workers``): the clients can live in a pool of worker processes
(``secagg.sim.pool``) while the server stays here; frames cross as bytes. By default the pool is
used, with one worker per core, from ``AUTO_POOL_CLIENTS`` clients on when the machine has more
than one core and the round uses nothing the pool cannot do (``POOL_UNSUPPORTED``: those stay in
process); below that a pool's start-up (a fresh interpreter per worker, about a second) is not
worth it.

``seed`` fixes the test data (inputs, which clients drop). Protocol secrets come from the OS CSPRNG
unless ``insecure_deterministic`` is given, which derives every party's randomness from it, forked
by label: for tests and transcript vectors only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from secagg.config import RoundConfig
from secagg.crypto import shamir
from secagg.crypto.randomness import DeterministicRandom, RandomSource, fork, system_random
from secagg.errors import ConfigurationError
from secagg.protocol.client import ClientLimits
from secagg.protocol.rounds import STAGE_ORDER, Stage
from secagg.quantize import RangeEncoder
from secagg.sim.report import SimulationReport, build_report
from secagg.sim.scenario import (
    DROP_STAGE_CHOICES,
    build_parties,
    TruthRecorder,
    dropout_schedule,
    make_input,
)
from secagg.sim.pool import ClientPool, PoolRouter, WorkerSpec, check_workers, worker_blocks
from secagg.transport.memory import Faults, InMemoryRouter

__all__ = [
    "AUTO_POOL_CLIENTS", "DROP_STAGE_CHOICES", "POOL_UNSUPPORTED", "STAGE_ORDER", "Faults",
    "SimulationReport", "Stage", "dropout_schedule", "make_input", "simulate",
]

AUTO_POOL_CLIENTS = 5_000
# What only the in-process router does: the pool's workers make their clients from plain
# parameters, and its network delivers every frame once, in order.
POOL_UNSUPPORTED = ("faults", "tamper", "transcript", "inputs", "privacy", "budgets", "authenticated")


def _client_workers(requested: int | None, clients: int, wanted: list[str]) -> int:
    """How many client worker processes to use (0: the clients run in this process)."""
    if requested is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return cores if cores > 1 and clients >= AUTO_POOL_CLIENTS and not wanted else 0
    check_workers(requested)
    if requested and wanted:
        raise ConfigurationError(
            f"client_workers = {requested}: {', '.join(wanted)} run only with the clients in process; "
            "pass client_workers=0 (or leave it out), or drop " + ", ".join(wanted))
    return min(requested, clients)


def simulate(
    clients: int,
    dim: int,
    *,
    dropout: float = 0.0,
    drop_stage: str = Stage.MASKED_INPUT.value,
    schedule: Mapping[int, Stage | str] | None = None,
    bits: int = 32,
    value_range: float = 1.0,
    levels: int | None = None,
    adversarial_rate: float = 0.05,
    dropout_rate: float | None = None,
    adversary: str | None = None,
    full_graph: bool | str = False,
    threshold: int | None = None,
    seed: int | None = None,
    inputs: Callable[[int], np.ndarray] | None = None,
    raise_on_abort: bool = False,
    progress: bool = False,
    insecure_deterministic: str | None = None,
    transcript: list[tuple[str, int, int, bytes]] | None = None,
    privacy=None,
    malicious: int = 0,
    attack: str | None = None,
    checks=None,
    delta: float = 1e-6,
    faults: Faults | None = None,
    announce_losses: bool = False,
    tamper=None,
    client_limits: ClientLimits | None = None,
    authenticated: bool = False,
    on_round: Callable[[object, InMemoryRouter], None] | None = None,
    budgets: Mapping[int, object] | None = None,
    attackers: Sequence[int] | None = None,
    unmasker=None,
    client_workers: int | None = None,
) -> SimulationReport:
    """Run one round, the server in this process and the clients here or on worker processes
    (``client_workers``). Returns a report; raises ``RoundAborted`` only if asked to.

    ``schedule`` (client -> stage) overrides ``dropout``/``drop_stage``. ``inputs(client)`` overrides
    the generated test data. ``dropout_rate`` is what the parameter finder plans for (default:
    ``max(dropout, 0.05)``). ``transcript``, if given, receives every frame as
    (direction, sender, recipient, bytes).

    ``privacy`` (a ``secagg.privacy.DPPlan``) runs the round through the privacy layer: clients
    clip, round and noise with a ``DPEncoder``, the server decodes with a ``DPDecoder`` and runs
    ``checks`` (default ``PlausibilityChecks(privacy)``). ``malicious`` clients then mount
    ``attack``: ``scale`` (x100, no clipping), ``noise`` (N(0, 10^2) per coordinate, no clipping)
    ``signflip`` (the negated update, clipped like an honest one) or ``unclipped`` (its own input,
    never clipped: the attack is in ``inputs``). ``attackers`` names them
    (default: ``malicious`` clients drawn from ``seed``).

    ``faults`` makes the network duplicate, delay and reorder frames; ``announce_losses`` tells
    the server of silent clients at once (``peer_lost``); ``tamper`` lets a test rewrite frames in
    flight (see ``InMemoryRouter``). ``authenticated`` runs the authenticated mode: a CA, an
    identity key per client, each enrolled in an in-memory SQLite registry, and a round config
    signed by an operator key. ``adversary`` is the class (k, t) are planned against: default
    malicious in authenticated mode, else semi-honest. ``on_round(server, router)`` is called
    once the round has ended, before the report is built (``Telemetry.observe_round``).

    ``budgets`` (client -> ``secagg.privacy.PrivacyBudget``, with ``privacy``) gives clients their
    own budgets: a client whose budget the round would exceed refuses it before sending anything
    (a refusal in the report), and the report summarises what the clients' budgets say.

    ``unmasker``: how the server removes the masks (``secagg.protocol.unmask``; default every core).

    ``client_workers``: worker processes that hold the clients (``secagg.sim.pool``); 0 runs them
    here. Default: one per core from ``AUTO_POOL_CLIENTS`` clients on, if the round needs nothing
    of ``POOL_UNSUPPORTED``; asking for workers together with one of those is a
    ``ConfigurationError``.
    """
    if insecure_deterministic is not None:
        root: RandomSource = DeterministicRandom(insecure_deterministic)
    else:
        root = system_random
    faults = faults or Faults()
    wanted = [name for name, given in (
        ("faults", faults.any), ("tamper", tamper is not None), ("transcript", transcript is not None),
        ("inputs", inputs is not None), ("privacy", privacy is not None), ("budgets", bool(budgets)),
        ("authenticated", authenticated)) if given]
    workers = _client_workers(client_workers, clients, wanted)
    if schedule is None:
        schedule = dropout_schedule(clients, dropout, drop_stage, seed)
    schedule = {int(c): Stage(s) for c, s in schedule.items()}
    if privacy is not None:
        dim, bits, levels = privacy.ring_dim, privacy.bits, 0
    elif malicious or attack or attackers:
        raise ConfigurationError("attacks are simulated on the privacy layer: pass privacy=DPPlan(...)")
    config = RoundConfig.create(
        clients, dim, bits=bits, value_range=value_range, levels=levels,
        adversarial_rate=adversarial_rate,
        dropout_rate=max(dropout, 0.05) if dropout_rate is None else dropout_rate,
        adversary=adversary, full_graph=full_graph, threshold=threshold,
        authenticated=authenticated, rng=fork(root, "config"),
    )
    chosen, attackers = attackers, []
    if privacy is not None:
        from secagg.privacy.simulation import attack_encoders, make_update

        make = inputs or (lambda c: make_update(seed, c, privacy))
        encoders, attackers = attack_encoders(
            privacy, clients, malicious, attack, seed, lambda label: fork(root, label), chosen=chosen)
        value_dim = privacy.dim
        for c, budget in (budgets or {}).items():
            encoders[c].budget = budget
    elif budgets:
        raise ConfigurationError("privacy budgets are charged by the privacy layer: pass privacy=DPPlan(...)")
    else:
        make = inputs or (lambda c: make_input(seed, c, dim, value_range))
        encoders = {} if workers else {c: RangeEncoder(fork(root, "client", c, "quantize")) for c in config.clients}
        value_dim = dim
    recorder = TruthRecorder(config.dim, config.bits, value_dim,
                             keep_each=not workers and (faults.any or tamper is not None
                                                        or clients * config.dim <= 10**6))

    # galois builds its field (and, for a batch big enough to use them, compiles its JIT kernels)
    # once per process: not a per-round cost, so not inside the server's timer.
    shamir.warm_up_for_round(clients, config.threshold)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=8 * clients, unit="frame", desc="round", leave=False, mininterval=5)  # 4 rounds, 2 ways
    if workers:
        server, parties, _ = build_parties(config, root, None, None, unmasker=unmasker, clients=())
        limits = client_limits or ClientLimits()
        specs = [WorkerSpec(first=a, last=b, seed=seed, dim=config.dim, value_range=value_range,
                            bits=config.bits, deterministic=insecure_deterministic,
                            limits=(limits.max_clients, limits.max_dim, limits.max_degree, limits.max_bits))
                 for a, b in worker_blocks(clients, workers)]
        with ClientPool(specs) as pool:
            router = PoolRouter(server, pool, recorder, schedule=schedule,
                                announce_losses=announce_losses, progress=bar)
            router.run()
        expansions, worker_rss = router.mask_expansions.values(), router.worker_peak_rss
    else:
        server, parties, _ = build_parties(
            config, root,
            # The input is made when the round asks for it: memory O(d) per client at a time.
            lambda c: (lambda: np.asarray(make(c))),
            lambda c: recorder.wrap(c, encoders[c]),
            limits=client_limits or ClientLimits(), require_authenticated=authenticated, unmasker=unmasker,
        )
        if bar is not None:
            inner = tamper

            def tamper(sender, recipient, frame):  # counts frames as they are posted
                bar.update(1)
                return [frame] if inner is None else inner(sender, recipient, frame)

        router = InMemoryRouter(server, parties, schedule=schedule, faults=faults,
                                announce_losses=announce_losses, tamper=tamper, transcript=transcript)
        router.run()
        expansions, worker_rss = (p.mask_expansions for p in parties.values()), ()
    if bar is not None:
        bar.close()
    if on_round is not None:
        on_round(server, router)
    return build_report(
        config=config, server=server, router=router, mask_expansions=expansions, recorder=recorder,
        schedule=schedule, dropout=dropout, raise_on_abort=raise_on_abort, privacy=privacy,
        encoders=encoders, attackers=attackers, attack=attack, checks=checks, delta=delta,
        budgets=budgets, worker_peak_rss=worker_rss,
    )
