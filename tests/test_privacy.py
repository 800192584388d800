"""The privacy layer: rotation, noise, encoding, accounting, budgets, checks and attacks."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from secagg import simulate
from secagg.errors import ConfigurationError, InvalidInput, PrivacyBudgetExhausted
from secagg.privacy import (
    DPDecoder,
    DPEncoder,
    DPPlan,
    PlausibilityChecks,
    PrivacyBudget,
    gaussian_epsilon,
)
from secagg.privacy import noise, rotation
from secagg.privacy.accounting import Mechanism, RoundMechanism, calibrate, epsilon
from secagg.crypto.randomness import DeterministicRandom

# --- rotation and noise -------------------------------------------------------------------------


def test_rotation_is_orthogonal_and_inverts():
    gen = np.random.default_rng(1)
    for d in (1, 7, 64, 1000):
        x = gen.normal(size=d)
        y = rotation.rotate(x, b"\x01" * 32)
        assert y.size == rotation.padded_dim(d)
        assert math.isclose(np.linalg.norm(y), np.linalg.norm(x), rel_tol=1e-12)
        assert np.allclose(rotation.unrotate(y, b"\x01" * 32, d), x, atol=1e-12)


def test_rotation_flattens_a_spike():
    x = np.zeros(1024)
    x[3] = 1.0
    y = rotation.rotate(x, bytes(32))
    assert np.allclose(np.abs(y), 1 / 32)


@pytest.mark.parametrize("sigma", [0.8, 3.0, 25.0])
def test_discrete_gaussian_moments(sigma):
    gen = np.random.Generator(np.random.PCG64(7))
    s = noise.discrete_gaussian(gen, sigma, 400_000)
    assert s.dtype == np.int64
    assert abs(s.mean()) < 5 * sigma / math.sqrt(s.size)
    # Var(N_Z(0, sigma^2)) <= sigma^2, and is within 1e-6 of it once sigma >= 2.
    target = sigma**2 if sigma >= 2 else np.sum(np.arange(-50, 51) ** 2 * np.exp(-np.arange(-50, 51) ** 2 / (2 * sigma**2))) \
        / np.sum(np.exp(-np.arange(-50, 51) ** 2 / (2 * sigma**2)))
    assert abs(s.var() / target - 1) < 0.02


def test_discrete_gaussian_pmf_matches_the_definition():
    gen = np.random.Generator(np.random.PCG64(11))
    sigma = 1.5
    s = noise.discrete_gaussian(gen, sigma, 300_000)
    support = np.arange(-8, 9)
    pmf = np.exp(-(support**2) / (2 * sigma**2))
    pmf /= pmf.sum()
    counts = np.array([(s == k).sum() for k in support])
    assert stats.chisquare(counts, pmf * counts.sum()).pvalue > 1e-4


def test_skellam_moments():
    gen = np.random.Generator(np.random.PCG64(3))
    s = noise.skellam(gen, 50.0, 400_000)
    assert abs(s.mean()) < 0.1 and abs(s.var() / 50 - 1) < 0.02


def test_noise_generator_is_seeded_from_the_randomness_source():
    a = noise.generator(DeterministicRandom("x")).integers(0, 2**62)
    b = noise.generator(DeterministicRandom("x")).integers(0, 2**62)
    c = noise.generator().integers(0, 2**62)
    assert a == b and a != c


# --- plan, encoder, decoder ---------------------------------------------------------------------


def _plan(**kw):
    args = dict(clip=1.0, noise_multiplier=1.0, min_clients=20, max_clients=30,
                rotation_seed=b"\x02" * 32)
    args.update(kw)
    shapes = args.pop("shapes", 100)
    return DPPlan.create(shapes, **args)


def test_auto_bits_is_the_smallest_width_holding_the_sum():
    plan = _plan()
    assert plan.wrap_bound() < 2 ** (plan.bits - 1)
    assert plan.wrap_bound() >= 2 ** (plan.bits - 2)  # one bit fewer would not do
    assert plan.ring_dim == 128 + 1


@pytest.mark.parametrize("clients, dim, z", [(10_000, 100, 1.0), (1000, 10, 0.5), (20, 100_000, 1.0)])
def test_auto_scale_gives_each_client_noise_of_at_least_two_ring_units(clients, dim, z):
    # Below sigma_c ~ 1 the distributed discrete Gaussian's tau term dominates epsilon.
    plan = DPPlan.create(dim, clip=1.0, noise_multiplier=z, min_clients=clients, max_clients=clients,
                         rotation_seed=bytes(32))
    assert math.sqrt(plan.local_variance) >= 2.0 - 1e-9
    assert plan.clip / plan.gamma >= 8 * math.sqrt(plan.noise_dim - 1) - 1e-9


def test_auto_scale_at_ten_thousand_clients_does_not_overshoot_epsilon():
    # Issue 8: at n = m_min = 10,000, d = 100, z = 1 the old scale (sigma_c 0.9) gave 5.78.
    plan = DPPlan.create(100, clip=1.0, noise_multiplier=1.0, min_clients=10_000, max_clients=10_000,
                         rotation_seed=bytes(32))
    acc = plan.accounting(rounds=1, delta=1e-5)
    assert acc.epsilon < 4.5 and acc.accountant == "pld"
    assert acc.rdp_epsilon < 4.91  # the target, even without PLD


def test_default_flag_weight_costs_about_one_percent_of_sensitivity():
    plan = _plan()
    assert plan.flag_weight == 0.1
    mech = plan.round_mechanism()
    assert mech.l2_sensitivity <= 1.01 * plan.norm_bound
    heavier = _plan(flag_weight=0.25)
    assert plan.epsilon(delta=1e-5) < heavier.epsilon(delta=1e-5)


def test_flag_weight_zero_leaves_the_count_out_everywhere():
    plan = _plan(noise_multiplier=0.0, flag_weight=0.0)
    assert not plan.counts_clipping and plan.ring_dim == plan.signal_dim == 128
    assert plan.flag_scale == 0 and plan.clip_count_std(10) is None
    assert plan.round_mechanism().l2_sensitivity == plan.norm_bound
    gen = np.random.default_rng(3)
    updates = [gen.normal(size=100) * (10 if i == 0 else 0.01) for i in range(10)]
    ring = sum(DPEncoder(plan, rng=DeterministicRandom(str(i))).encode(u).astype(np.uint64)
               for i, u in enumerate(updates)) & np.uint64(2**plan.bits - 1)
    agg = DPDecoder(plan).decode(ring, 10)
    true = sum(u * min(1.0, 1.0 / np.linalg.norm(u)) for u in updates)
    assert agg.clipped_count is None
    assert np.linalg.norm(agg.flat - true) <= 10 * plan.gamma * math.sqrt(plan.noise_dim)
    report = PlausibilityChecks(plan, min_aggregate=10).run(agg)
    assert "clipped_count" not in {r.name for r in report.results} and not report.rejected


def test_flag_weight_zero_round_through_the_protocol():
    plan = _plan(flag_weight=0.0, min_clients=15, max_clients=20)
    report = simulate(20, 100, privacy=plan, seed=4)
    assert report.exact and not report.rejected
    assert report.dp["clipped_count"] is None and report.dp["clipped_count_std"] is None
    assert "not counted" in report.summary()
    json.dumps(report.as_dict())  # None, never NaN: valid JSON


def test_given_bits_choose_the_finest_safe_scale():
    plan = _plan(bits=16)
    assert plan.bits == 16
    assert plan.wrap_bound() <= 2**15 - 1
    assert plan.wrap_bound() > 0.99 * (2**15 - 1)


def test_infeasible_plans_are_refused_with_what_to_change():
    with pytest.raises(ConfigurationError, match=r"use bits >= \d+"):
        _plan(bits=6, max_clients=1000)
    with pytest.raises(ConfigurationError, match="clip"):
        _plan(clip=float("nan"))
    with pytest.raises(ConfigurationError, match="min_clients"):
        _plan(min_clients=40, max_clients=30)
    with pytest.raises(ConfigurationError, match="bits"):
        _plan(bits=70)
    with pytest.raises(ConfigurationError, match=r"flag weight must lie in \[0, 1\]"):
        _plan(flag_weight=-0.1)


def test_encoding_without_noise_decodes_to_the_clipped_sum():
    plan = _plan(noise_multiplier=0.0, shapes=((3, 4), (5,)))
    gen = np.random.default_rng(0)
    updates = [[gen.normal(size=(3, 4)) * 0.1, gen.normal(size=5) * 0.1] for _ in range(10)]
    updates[0] = [u * 100 for u in updates[0]]  # this one clips
    encs = [DPEncoder(plan, rng=DeterministicRandom(str(i))) for i in range(10)]
    ring = sum(e.encode(u).astype(np.uint64) for e, u in zip(encs, updates)) & np.uint64(2**plan.bits - 1)
    agg = DPDecoder(plan).decode(ring, 10)
    clipped = []
    for u in updates:
        flat = np.concatenate([t.ravel() for t in u])
        n = np.linalg.norm(flat)
        clipped.append(flat * min(1.0, plan.clip / n))
    true = np.sum(clipped, axis=0)
    assert [t.shape for t in agg.tensors] == [(3, 4), (5,)]
    # Each client's rounding moves each rotated coordinate by under gamma.
    assert np.linalg.norm(agg.flat - true) <= 10 * plan.gamma * math.sqrt(plan.noise_dim)
    assert agg.clipped_count == 1.0
    assert encs[0].clipped and not encs[1].clipped


def test_the_encoder_draws_rounding_and_noise_from_one_stream():
    # Rounding: rounding_uniforms of 32 bytes (the quantiser's PRG); noise: the next 32 bytes.
    from secagg.quantize import rounding_uniforms

    plan = _plan(shapes=64, rotate=False)
    x = np.random.default_rng(5).normal(size=64) * 0.05  # within the clip norm
    got = DPEncoder(plan, rng=DeterministicRandom("one stream")).encode(x).astype(np.int64)
    stream = DeterministicRandom("one stream")
    v = x / plan.gamma
    rounded = np.floor(v) + (rounding_uniforms(stream(32), 64) < v - np.floor(v))
    assert np.linalg.norm(rounded) <= plan.norm_bound  # accepted at the first try
    values = np.append(rounded, 0).astype(np.int64)
    values += noise.discrete_gaussian(noise.generator(stream), math.sqrt(plan.local_variance), values.size)
    assert np.array_equal(got, values & (2**plan.bits - 1))


def test_conditional_rounding_meets_the_published_bound():
    plan = _plan(noise_multiplier=0.0, shapes=64, beta=0.5)
    enc = DPEncoder(plan)
    x = np.ones(64) * 10  # clips to norm C
    for _ in range(20):
        ring = enc.encode(x).astype(np.int64)
        ring[ring >= 2 ** (plan.bits - 1)] -= 2**plan.bits
        assert np.linalg.norm(ring[:-1]) <= plan.norm_bound


@pytest.mark.parametrize(
    "update, message",
    [
        ([np.array([np.nan] + [0.0] * 99)], "non-finite"),
        ([np.zeros(99)], "shape"),
        ([np.zeros(100), np.zeros(3)], "2 tensors"),
        ([np.zeros(100, dtype=complex)], "dtype"),
        ([np.zeros(100, dtype="timedelta64[ms]")], "dtype"),
        ([np.zeros(100, dtype="datetime64[s]")], "dtype"),
        (["not an array"], "NumPy array"),
    ],
)
def test_bad_updates_are_refused_before_anything_is_encoded(update, message):
    with pytest.raises(InvalidInput, match=message):
        DPEncoder(_plan()).encode(update)


# --- accounting ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["ddgauss", "skellam"])
def test_discrete_mechanisms_approach_the_gaussian_at_high_scale(mechanism):
    # Fine resolution (gamma small) and large per-client noise: the discrete mechanism's epsilon
    # is within a few percent of dp-accounting's continuous Gaussian at the same multiplier.
    plan = _plan(mechanism=mechanism, bits=40, shapes=1000, flag_weight=0.01)
    discrete = plan.epsilon(rounds=10, sampling=1.0, delta=1e-5, accountant="rdp")
    continuous = gaussian_epsilon(1.0, rounds=10, sampling=1.0, delta=1e-5, accountant="rdp")
    assert continuous <= discrete <= 1.05 * continuous


def test_pld_is_never_looser_than_rdp_and_names_the_accountant():
    for kw in (dict(rounds=1), dict(rounds=10, sampling=0.3), dict(rounds=50, sampling=0.05)):
        acc = _plan().accounting(delta=1e-5, **kw)
        rdp = _plan().accounting(delta=1e-5, accountant="rdp", **kw)
        assert acc.accountant == "pld" and rdp.accountant == "rdp" and rdp.pld_epsilon is None
        assert acc.pld_epsilon == acc.epsilon < acc.rdp_epsilon == rdp.epsilon
    skellam = _plan(mechanism="skellam").accounting(delta=1e-5)
    assert skellam.accountant == "rdp" and skellam.pld_epsilon is None


def test_pld_gaussian_matches_the_exact_gaussian_curve():
    # One round, no sampling: the Gaussian's exact (epsilon, delta) curve (Balle and Wang 2018,
    # Thm. 8) at noise multiplier 1 puts epsilon 4.3772 at delta 1e-5; RDP gives about 4.73.
    from secagg.privacy.accounting import analytic_gaussian_delta

    eps = gaussian_epsilon(1.0, rounds=1, sampling=1.0, delta=1e-5)
    assert abs(analytic_gaussian_delta(eps, 1.0) - 1e-5) < 1e-7
    assert eps < gaussian_epsilon(1.0, rounds=1, sampling=1.0, delta=1e-5, accountant="rdp") - 0.3


@pytest.mark.parametrize("eps", [0.5, 1.0, 3.0])
def test_analytic_gaussian_calibration_agrees_with_the_pld_accountant(eps):
    from secagg.privacy.accounting import analytic_gaussian_delta, analytic_gaussian_noise_multiplier

    z = analytic_gaussian_noise_multiplier(eps, 1e-5)
    assert math.isclose(analytic_gaussian_delta(eps, z), 1e-5, rel_tol=1e-8)
    # Two independent computations of one curve: Balle and Wang's formula and dp-accounting's PLD.
    assert math.isclose(gaussian_epsilon(z, rounds=1, sampling=1.0, delta=1e-5), eps, rel_tol=2e-3)
    # Tighter than the classical sqrt(2 ln(1.25 / delta)) / eps.
    assert z < math.sqrt(2 * math.log(1.25 / 1e-5)) / eps


def test_ddgauss_pld_at_high_scale_is_the_gaussian_pld():
    plan = _plan(bits=40, shapes=1000, flag_weight=0.01)
    continuous = gaussian_epsilon(1.0, rounds=10, sampling=0.5, delta=1e-5)
    assert continuous <= plan.epsilon(rounds=10, sampling=0.5, delta=1e-5) <= 1.02 * continuous


def test_discrete_gaussian_pld_matches_the_continuous_at_central_sigma_20():
    # What the PLD figure for the distributed discrete Gaussian leans on (accounting docstring):
    # dp-accounting's exact one-dimensional discrete Gaussian PLD against the continuous one.
    from dp_accounting.pld import privacy_loss_distribution as pld

    for sigma in (20.0, 200.0):
        cont = pld.from_gaussian_mechanism(sigma, sensitivity=sigma).get_epsilon_for_delta(1e-5)
        disc = pld.from_discrete_gaussian_mechanism(sigma, sensitivity=int(sigma)).get_epsilon_for_delta(1e-5)
        assert abs(disc / cont - 1) < 2e-4


def test_epsilon_grows_with_rounds_and_shrinks_with_noise_and_sampling():
    plan = _plan()
    e1 = plan.epsilon(rounds=1, delta=1e-5)
    e10 = plan.epsilon(rounds=10, delta=1e-5)
    sampled = plan.epsilon(rounds=10, sampling=0.1, delta=1e-5)
    noisier = _plan(noise_multiplier=2.0).epsilon(rounds=10, delta=1e-5)
    assert e1 < e10 and sampled < e10 and noisier < e10


def test_calibration_inverts_epsilon():
    def eps(z):
        return _plan(noise_multiplier=z).epsilon(rounds=5, sampling=0.5, delta=1e-5)

    z = calibrate(eps, 2.0)
    assert eps(z) <= 2.0 < eps(z * 0.99)


def test_no_noise_means_no_privacy():
    mech = RoundMechanism(mechanism=Mechanism.DISTRIBUTED_DISCRETE_GAUSSIAN, l2_sensitivity=1,
                          l1_sensitivity=1, local_variance=0.0, noise_clients=10, dim=10)
    assert epsilon(mech, rounds=1, sampling=1.0, delta=1e-5) == math.inf


def test_cli_privacy_json():
    out = subprocess.run([sys.executable, "-m", "secagg", "privacy", "--clip", "1", "--noise-multiplier",
                          "1.2", "--clients", "50", "--rounds", "10", "--sampling", "0.5", "--delta",
                          "1e-5", "--dim", "500", "--json"], capture_output=True, text=True, check=True)
    obj = json.loads(out.stdout)
    assert obj["epsilon"] > obj["gaussian_epsilon"] > 0 and obj["bits"] >= 8
    assert obj["accountant"] == "pld" and obj["gaussian_accountant"] == "pld"
    assert obj["epsilon"] <= obj["rdp_epsilon"] and obj["flag_weight"] == 0.1
    out = subprocess.run([sys.executable, "-m", "secagg", "privacy", "--clip", "1", "--target-epsilon",
                          "3", "--clients", "50", "--rounds", "10", "--delta", "1e-5", "--json"],
                         capture_output=True, text=True, check=True)
    obj = json.loads(out.stdout)
    assert obj["epsilon"] <= 3.0 and obj["noise_multiplier"] > 0


# --- budget -------------------------------------------------------------------------------------


def test_budget_refuses_a_round_before_the_client_sends_anything():
    from secagg.config import RoundConfig
    from secagg.messages import AdvertiseKeysRequest
    from secagg.protocol.client import Client
    from secagg.codec import encode
    from secagg.protocol.rounds import ClientState

    plan = _plan()
    one, two = plan.epsilon(rounds=1, delta=1e-6), plan.epsilon(rounds=2, delta=1e-6)
    budget = PrivacyBudget(epsilon_budget=(one + two) / 2, delta=1e-6)  # room for one round
    config = RoundConfig.create(30, plan.ring_dim, bits=plan.bits, levels=0, dropout_rate=0.1)
    req = encode(AdvertiseKeysRequest(session_id=config.session_id, round=0, sender=0, recipient=1, config=config))
    first = Client(1, encoder=DPEncoder(plan, budget=budget))
    assert first.receive(req)  # the first round fits
    # The same (session, round) again is a retry, charged once; the next round is not.
    assert Client(1, encoder=DPEncoder(plan, budget=budget)).receive(req) and budget.rounds == 1
    config = RoundConfig.create(30, plan.ring_dim, bits=plan.bits, levels=0, dropout_rate=0.1, round=1,
                                session_id=config.session_id)
    req = encode(AdvertiseKeysRequest(session_id=config.session_id, round=1, sender=0, recipient=1, config=config))
    second = Client(1, encoder=DPEncoder(plan, budget=budget))
    with pytest.raises(PrivacyBudgetExhausted, match="client 1, round 1: .* over the budget"):
        second.receive(req)
    assert second.state is ClientState.AWAIT_ADVERTISE_KEYS_REQUEST and budget.rounds == 1


def test_a_refused_input_costs_no_budget_and_a_retry_is_charged_once():
    from secagg.config import RoundConfig
    from secagg.codec import encode
    from secagg.messages import AdvertiseKeysRequest
    from secagg.protocol.client import Client

    plan = _plan()
    budget = PrivacyBudget(epsilon_budget=100.0, delta=1e-6)
    config = RoundConfig.create(30, plan.ring_dim, bits=plan.bits, levels=0, dropout_rate=0.1)
    req = encode(AdvertiseKeysRequest(session_id=config.session_id, round=0, sender=0, recipient=1, config=config))
    client = Client(1, np.full(100, np.nan), encoder=DPEncoder(plan, budget=budget))
    with pytest.raises(InvalidInput, match="client 1, round 0: .*non-finite"):
        client.receive(req)
    assert budget.rounds == 0
    client.provide_input(np.zeros(100))
    assert client.receive(req)
    assert budget.rounds == 1


def test_client_with_a_mismatched_plan_refuses_the_round():
    from secagg.config import RoundConfig
    from secagg.codec import encode
    from secagg.messages import AdvertiseKeysRequest
    from secagg.protocol.client import Client

    plan = _plan()
    config = RoundConfig.create(30, plan.ring_dim + 1, bits=plan.bits, levels=0, dropout_rate=0.1)
    req = encode(AdvertiseKeysRequest(session_id=config.session_id, round=0, sender=0, recipient=1, config=config))
    with pytest.raises(ConfigurationError, match="does not match the privacy plan"):
        Client(1, encoder=DPEncoder(plan)).receive(req)


# --- checks and attacks -------------------------------------------------------------------------


def _honest_aggregate(plan, m, gen, seed, aligned=False):
    encs = [DPEncoder(plan, rng=DeterministicRandom(f"{seed}-{i}")) for i in range(m)]
    if aligned:  # the worst case the l2 bound allows for: every client at norm C in one direction
        u = gen.normal(size=plan.dim)
        updates = [u / np.linalg.norm(u) * plan.clip] * m
    else:
        updates = [gen.normal(size=plan.dim) for _ in range(m)]
        updates = [u / np.linalg.norm(u) * plan.clip * gen.uniform(0.5, 2.0) for u in updates]
    ring = sum(e.encode(u).astype(np.uint64) for e, u in zip(encs, updates)) & np.uint64(2**plan.bits - 1)
    return DPDecoder(plan).decode(ring, m)


@pytest.mark.parametrize("rate, aligned", [(1e-2, False), (1e-6, False), (1e-2, True)])
def test_honest_rounds_false_alarm_at_most_at_the_stated_rate(rate, aligned):
    plan = _plan(shapes=32, min_clients=8, max_clients=10)
    checks = PlausibilityChecks(plan, false_alarm=rate)
    gen = np.random.default_rng(5)
    rounds = 1000
    alarms = {name: 0 for name in ("min_contributors", "l2_norm", "linf", "wrap", "clipped_count")}
    for r in range(rounds):
        for res in checks.run(_honest_aggregate(plan, 10, gen, r, aligned)).results:
            alarms[res.name] += not res.passed
    limit = stats.binom.ppf(0.999, rounds, rate)  # what the stated rate allows, with 0.1% slack
    assert all(count <= limit for count in alarms.values()), alarms


def _sim(attack=None, malicious=0, seed=4, **kw):
    plan = DPPlan.create(400, clip=1.0, noise_multiplier=1.0, min_clients=45, max_clients=50)

    def inputs(c):  # updates whose raw norm is at least C, as when C sits below the median
        g = np.random.default_rng([seed, c])
        v = g.normal(size=plan.dim)
        return v / np.linalg.norm(v) * g.uniform(1.0, 2.0)

    return simulate(50, 0, privacy=plan, inputs=inputs, malicious=malicious, attack=attack,
                    seed=seed, **kw)


def test_one_scaling_attacker_among_50_is_rejected():
    report = _sim("scale", 1)
    assert report.exact and report.rejected
    failed = {c["name"] for c in report.checks if not c["passed"]}
    assert "l2_norm" in failed
    assert report.aggregate is None  # a rejected round returns no aggregate


def test_a_noise_attacker_is_rejected():
    # N(0, 10^2) per coordinate gives the sum a norm near 10 sqrt(d) = 200, far past the ~80 an
    # honest round allows; whether a coordinate also crosses the wrap bound is chance.
    report = _sim("noise", 1)
    assert report.rejected and "l2_norm" in {c["name"] for c in report.checks if not c["passed"]}


def test_a_sign_flip_within_the_clip_bound_is_not_detectable():
    report = _sim("signflip", 1)
    assert report.exact and not report.rejected
    assert all(c["passed"] for c in report.checks)


def test_an_unclipped_attacker_sends_its_own_input_past_the_clip_norm():
    # The attack is in the input (what a caller's inputs() gives the attacker); the encoder only
    # skips clipping. Without noise the decoded vector is the input to within rounding.
    from secagg.privacy.simulation import AttackEncoder, RecordingEncoder

    plan = DPPlan.create(64, clip=1.0, noise_multiplier=0.0, min_clients=1, max_clients=10)
    x = np.random.default_rng(3).normal(size=64)
    x *= 5.0 / np.linalg.norm(x)
    decoded = {}
    for name, enc in (("honest", RecordingEncoder(plan, rng=DeterministicRandom("h"))),
                      ("unclipped", AttackEncoder(plan, "unclipped", rng=DeterministicRandom("a")))):
        decoded[name] = DPDecoder(plan).decode(enc.encode(x).astype(np.uint64), 1).flat
    tolerance = 2 * plan.gamma * math.sqrt(plan.signal_dim)
    assert np.linalg.norm(decoded["unclipped"] - x) < tolerance
    assert np.linalg.norm(decoded["honest"] - x / 5.0) < tolerance  # clipped to C = 1


def test_an_unclipped_attacker_with_a_large_input_is_rejected():
    plan = DPPlan.create(400, clip=1.0, noise_multiplier=1.0, min_clients=45, max_clients=50)

    def inputs(c):  # client 7's input is 100 C long
        v = np.random.default_rng([4, c]).normal(size=plan.dim)
        return v / np.linalg.norm(v) * (100.0 if c == 7 else 1.0)

    report = simulate(50, 0, privacy=plan, inputs=inputs, seed=4, attackers=[7], attack="unclipped")
    assert report.malicious == [7] and report.rejected
    assert "l2_norm" in {c["name"] for c in report.checks if not c["passed"]}
    honest = simulate(50, 0, privacy=plan, inputs=inputs, seed=4)  # the same input, clipped to C
    assert not honest.rejected


def test_honest_round_passes_and_reports_every_check():
    report = _sim(dropout=0.05)
    assert not report.rejected and report.aggregate is not None
    assert {c["name"] for c in report.checks} == {"min_contributors", "l2_norm", "linf", "wrap", "clipped_count"}
    for c in report.checks:
        assert set(c) >= {"name", "passed", "value", "bound"}
    # The count carries the round's noise (std about 10 here): a 20 bound failed 1 run in ~25.
    assert abs(report.dp["clipped_count"] - report.dp["clipped_true"]) < 5 * report.dp["clipped_count_std"]


def test_warn_policy_keeps_the_aggregate():
    plan = DPPlan.create(400, clip=1.0, noise_multiplier=1.0, min_clients=45, max_clients=50)
    warn = PlausibilityChecks(plan, policies={"l2_norm": "warn", "wrap": "warn", "linf": "warn"})
    report = simulate(50, 0, privacy=plan, malicious=1, attack="noise", seed=2, checks=warn)
    assert not report.rejected and any(not c["passed"] for c in report.checks)


def test_min_contributors_and_drift_checks():
    plan = _plan(shapes=32, min_clients=8, max_clients=10)
    gen = np.random.default_rng(1)
    agg = _honest_aggregate(plan, 10, gen, 0)
    report = PlausibilityChecks(plan, min_aggregate=11).run(agg, history=[agg.flat * 0.01])
    by_name = {r.name: r for r in report.results}
    assert not by_name["min_contributors"].passed and by_name["min_contributors"].policy == "reject"
    assert not by_name["drift"].passed and by_name["drift"].policy == "warn"


def test_skellam_round_through_the_protocol():
    plan = DPPlan.create(300, clip=1.0, noise_multiplier=1.0, min_clients=18, max_clients=20,
                         mechanism="skellam")
    report = simulate(20, 0, privacy=plan, seed=8)
    assert report.exact and not report.rejected


def test_cli_simulate_attack_json_shows_the_checks():
    out = subprocess.run([sys.executable, "-m", "secagg", "simulate", "--clients", "30", "--dim", "300",
                          "--dp", "--malicious", "1", "--attack", "noise", "--seed", "1", "--json"],
                         capture_output=True, text=True)
    obj = json.loads(out.stdout)
    assert out.returncode == 5 and obj["rejected"] and obj["malicious"]
    assert any(c["name"] == "l2_norm" and not c["passed"] for c in obj["checks"])


def test_privacy_plan_vector():
    from conftest import load_vectors

    v = load_vectors("privacy_plan.json")
    seed = bytes.fromhex(v["rotation_seed"])
    common = dict(clip=v["clip"], noise_multiplier=v["noise_multiplier"], min_clients=v["min_clients"],
                  max_clients=v["max_clients"], rotation_seed=seed)
    plan = DPPlan.create(tuple(map(tuple, v["shapes"])), **common)
    auto = v["auto"]
    assert (plan.bits, plan.flag_scale) == (auto["bits"], auto["flag_scale"])
    for key, value in (("gamma", plan.gamma), ("wrap_bound", plan.wrap_bound()), ("norm_bound", plan.norm_bound)):
        assert math.isclose(value, auto[key], rel_tol=1e-9), key
    for key, kw in (("1_round", dict(rounds=1)), ("10_rounds_q05", dict(rounds=10, sampling=0.5))):
        acc = plan.accounting(delta=1e-5, **kw)
        assert acc.accountant == auto[f"accountant_{key}"]
        assert math.isclose(acc.epsilon, auto[f"epsilon_{key}"], rel_tol=1e-6)
        assert math.isclose(acc.rdp_epsilon, auto[f"rdp_epsilon_{key}"], rel_tol=1e-6)
    fixed = DPPlan.create(tuple(map(tuple, v["shapes"])), bits=20, **common)
    assert math.isclose(fixed.gamma, v["bits_20"]["gamma"], rel_tol=1e-9)
    assert [int(s) for s in rotation.signs(seed, 32)] == v["signs"]
    assert np.allclose(rotation.rotate(np.array(v["input"]), seed), v["rotated"], rtol=1e-12, atol=1e-15)


def test_cli_privacy_names_the_accountant_and_takes_a_flag_weight():
    base = [sys.executable, "-m", "secagg", "privacy", "--clip", "1", "--noise-multiplier", "1",
            "--clients", "10000", "--dim", "100", "--delta", "1e-5"]
    text = subprocess.run(base, capture_output=True, text=True, check=True).stdout
    assert "accountant pld (RDP alone: epsilon 4.79" in text
    assert "continuous Gaussian (PLD)" in text and "epsilon 4.417" in text
    obj = json.loads(subprocess.run(base + ["--flag-weight", "0", "--accountant", "rdp", "--json"],
                                    capture_output=True, text=True, check=True).stdout)
    assert obj["flag_weight"] == 0 and obj["accountant"] == "rdp" and obj["epsilon"] == obj["rdp_epsilon"]
    assert obj["gaussian_accountant"] == "rdp"
    obj = json.loads(subprocess.run(base + ["--noise-multiplier", "0", "--json"],
                                    capture_output=True, text=True, check=True).stdout)
    assert obj["epsilon"] is None and obj["gaussian_epsilon"] is None  # unbounded: null, not Infinity


def test_cli_simulate_dp_json_reports_an_error_std_not_a_bound():
    out = subprocess.run([sys.executable, "-m", "secagg", "simulate", "--clients", "20", "--dim", "200",
                          "--dp", "--seed", "2", "--json"], capture_output=True, text=True, check=True)
    obj = json.loads(out.stdout)
    assert obj["error_bound"] is None and obj["error_std"] > 0
    assert obj["dp"]["accountant"] == "pld" and obj["dp"]["epsilon"] <= obj["dp"]["rdp_epsilon"]
    assert obj["dp"]["flag_weight"] == 0.1
    text = subprocess.run([sys.executable, "-m", "secagg", "simulate", "--clients", "20", "--dim", "200",
                           "--dp", "--seed", "2"], capture_output=True, text=True, check=True).stdout
    assert "one standard deviation of the noise per coordinate" in text


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(clip=0.0), "clip norm must be a finite number > 0"),
        (dict(clip="1"), "clip norm"),
        (dict(noise_multiplier=-1.0), "noise multiplier must be a finite number >= 0"),
        (dict(noise_multiplier=float("inf")), "noise multiplier"),
        (dict(min_clients=0), "min_clients must be at least 1"),
        (dict(min_clients=2.5), "min_clients must be an integer"),
        (dict(min_clients=40, max_clients=30), "raise max_clients to 40"),
        (dict(flag_weight=1.5), "flag weight"),
        (dict(beta=1.0), "beta"),
        (dict(wrap_probability=0.0), "wrap probability"),
        (dict(mechanism="laplace"), "mechanism must be one of"),
        (dict(bits=True), "bits must be"),
    ],
)
def test_bad_dp_parameters_raise_a_configuration_error_naming_them(kw, message):
    with pytest.raises(ConfigurationError, match=message):
        _plan(**kw)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: _plan().epsilon(rounds=0), "rounds must be a positive integer"),
        (lambda: _plan().epsilon(sampling=1.5), "sampling rate"),
        (lambda: _plan().epsilon(delta=0.0), "delta"),
        (lambda: _plan().epsilon(accountant="moments"), "accountant must be one of"),
        (lambda: gaussian_epsilon(-1.0, rounds=1, sampling=1.0, delta=1e-5), "noise multiplier"),
        (lambda: calibrate(lambda z: 1.0, float("nan")), "target epsilon"),
        (lambda: PrivacyBudget(float("nan"), 1e-5), "privacy budget"),
        (lambda: PlausibilityChecks(_plan(), max_clipped_fraction=2.0), "clipped fraction"),
    ],
)
def test_bad_accounting_parameters_raise_a_configuration_error_naming_them(call, message):
    with pytest.raises(ConfigurationError, match=message):
        call()


def test_no_noise_gaussian_baseline_is_unbounded():
    assert gaussian_epsilon(0.0, rounds=1, sampling=1.0, delta=1e-5) == math.inf


@pytest.mark.parametrize(
    "args, message",
    [
        (["privacy", "--clip", "1", "--noise-multiplier", "1", "--clients", "10", "--flag-weight", "2"],
         "flag weight must lie in [0, 1]"),
        (["privacy", "--clip", "1", "--noise-multiplier", "1", "--clients", "10", "--dim", "0"], "--dim"),
        (["privacy", "--clip", "1", "--noise-multiplier", "1", "--clients", "10", "--delta", "2"], "delta"),
        (["simulate", "--clients", "10", "--dim", "10", "--flag-weight", "0.2"], "need --dp"),
    ],
)
def test_cli_refuses_bad_dp_parameters_naming_them(args, message):
    out = subprocess.run([sys.executable, "-m", "secagg", *args], capture_output=True, text=True)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr
