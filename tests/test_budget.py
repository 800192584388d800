"""A client's persistent privacy budget (secagg.privacy.budget) and the population's view of it."""

import math
import sqlite3

import dp_accounting
import numpy as np
import pytest
from dp_accounting.pld import PLDAccountant

from secagg import simulate
from secagg.codec import encode
from secagg.config import RoundConfig
from secagg.errors import ConfigurationError, PrivacyBudgetExhausted
from secagg.messages import AdvertiseKeysRequest
from secagg.privacy import DPEncoder, DPPlan, PrivacyBudget, population_budget
from secagg.privacy.accounting import PLD_DISCRETIZATION, rdp_to_epsilon
from secagg.protocol.client import Client
from secagg.protocol.rounds import ClientState

DELTA = 1e-6
SESSION = b"\x05" * 32


def _plan(**kw):
    args = dict(clip=1.0, noise_multiplier=1.0, min_clients=10, max_clients=20, rotation_seed=b"\x02" * 32)
    args.update(kw)
    return DPPlan.create(args.pop("shapes", 100), **args)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


def test_the_ledger_survives_a_restart(tmp_path):
    plan, path = _plan(), tmp_path / "budget.sqlite"
    with PrivacyBudget(50.0, DELTA, path=path, client=7, clock=Clock()) as budget:
        budget.charge(plan, round=0, session=SESSION)
        budget.charge(plan, round=1, session=SESSION)
        spent = budget.spent
    assert spent == pytest.approx(plan.epsilon(rounds=2, delta=DELTA), rel=1e-12)
    with PrivacyBudget(50.0, DELTA, path=path, client=7) as budget:  # the client restarted
        assert budget.rounds == 2 and budget.spent == spent
        assert [(h["session_id"], h["round"], h["charged_at"]) for h in budget.history()] == [
            (SESSION, 0, 1_700_000_001.0), (SESSION, 1, 1_700_000_002.0)]
        assert budget.history()[0]["mechanism"] == plan.round_mechanism()
        budget.charge(plan, round=2, session=SESSION)
    with PrivacyBudget(50.0, DELTA, path=path) as budget:
        assert budget.rounds == 3
        assert budget.spent == pytest.approx(plan.epsilon(rounds=3, delta=DELTA), rel=1e-12)


def test_different_plans_compose_and_match_dp_accounting():
    a, b = _plan(noise_multiplier=1.0), _plan(noise_multiplier=2.0, shapes=300)
    budget = PrivacyBudget(100.0, DELTA)
    budget.charge(a, round=0, session=SESSION)
    budget.charge(b, round=1, session=SESSION)
    budget.charge(b, round=2, session=SESSION)
    both = budget.accounting()
    assert both.epsilon > a.epsilon(delta=DELTA) and both.epsilon > b.epsilon(rounds=2, delta=DELTA)
    # Directly: dp-accounting's PLD of the rounds' Gaussians, and their Renyi curves added.
    za, zb = a.round_mechanism().gaussian_noise_multiplier(), b.round_mechanism().gaussian_noise_multiplier()
    pld = PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    pld.compose(dp_accounting.GaussianDpEvent(za))
    pld.compose(dp_accounting.GaussianDpEvent(zb), 2)
    rdp = rdp_to_epsilon(a.round_mechanism().rdp() + 2 * b.round_mechanism().rdp(), DELTA)
    assert both.pld_epsilon == pytest.approx(pld.get_epsilon(DELTA), rel=1e-9)
    assert both.rdp_epsilon == pytest.approx(rdp, rel=1e-12)
    assert both.epsilon == min(both.pld_epsilon, both.rdp_epsilon) and both.accountant == "pld"
    # The order of the rounds does not matter.
    other = PrivacyBudget(100.0, DELTA)
    for r, plan in enumerate((b, a, b)):
        other.charge(plan, round=r, session=SESSION)
    assert other.spent == pytest.approx(both.epsilon, rel=1e-9)


def test_a_skellam_round_leaves_the_ledger_to_rdp():
    a, s = _plan(), _plan(mechanism="skellam")
    budget = PrivacyBudget(100.0, DELTA)
    budget.charge(a, round=0, session=SESSION)
    budget.charge(s, round=1, session=SESSION)
    acc = budget.accounting()
    assert acc.accountant == "rdp" and acc.pld_epsilon is None
    assert acc.epsilon == pytest.approx(
        rdp_to_epsilon(a.round_mechanism().rdp() + s.round_mechanism().rdp(), DELTA), rel=1e-12)


def test_a_retried_round_is_charged_once():
    plan = _plan()
    one, two = plan.epsilon(rounds=1, delta=DELTA), plan.epsilon(rounds=2, delta=DELTA)
    budget = PrivacyBudget((one + two) / 2, DELTA)  # room for one round
    assert budget.charge(plan, client=3, round=4, session=SESSION) == pytest.approx(one)
    assert budget.charge(plan, client=3, round=4, session=SESSION) == pytest.approx(one)  # no raise
    assert budget.rounds == 1
    with pytest.raises(ConfigurationError, match="client 3, round 4: this round was charged under "
                                                 "another privacy plan"):
        budget.charge(_plan(noise_multiplier=3.0), client=3, round=4, session=SESSION)
    with pytest.raises(PrivacyBudgetExhausted):  # the same round of another session is another round
        budget.charge(plan, client=3, round=4, session=b"\x06" * 32)
    assert budget.rounds == 1


def test_an_exhausted_client_refuses_before_sending_and_records_nothing(tmp_path):
    plan, path = _plan(), tmp_path / "client-1.sqlite"
    one, two = plan.epsilon(rounds=1, delta=DELTA), plan.epsilon(rounds=2, delta=DELTA)
    budget_eps = (one + two) / 2
    with PrivacyBudget(budget_eps, DELTA, path=path) as earlier:
        earlier.charge(plan, round=0, session=b"\x01" * 32)  # an earlier session spent most of it
    budget = PrivacyBudget(budget_eps, DELTA, path=path)
    config = RoundConfig.create(20, plan.ring_dim, bits=plan.bits, levels=0, dropout_rate=0.1, round=3)
    req = encode(AdvertiseKeysRequest(session_id=config.session_id, round=3, sender=0, recipient=1,
                                      config=config))
    client = Client(1, np.zeros(100), encoder=DPEncoder(plan, budget=budget))
    with pytest.raises(PrivacyBudgetExhausted) as info:
        client.receive(req)
    err = info.value
    assert (err.client, err.round) == (1, 3)
    assert f"client 1, round 3: taking part would bring epsilon to {two:.4g}" in str(err)
    assert f"over the budget of {budget_eps}" in str(err) and "sends nothing" in str(err)
    assert client.state is ClientState.AWAIT_ADVERTISE_KEYS_REQUEST and client.config is None
    state = budget.report()
    assert state.rounds == 1 and state.exhausted and state.epsilon_spent == pytest.approx(one)
    budget.close()
    with PrivacyBudget(budget_eps, DELTA, path=path) as reopened:
        assert reopened.rounds == 1


def test_the_round_completes_without_the_exhausted_client():
    plan = _plan()
    one, two = plan.epsilon(rounds=1, delta=DELTA), plan.epsilon(rounds=2, delta=DELTA)
    budgets = {c: PrivacyBudget(10 * two, DELTA, client=c) for c in range(1, 21)}
    budgets[4] = PrivacyBudget((one + two) / 2, DELTA, client=4)
    budgets[4].charge(plan, round=0, session=b"\x01" * 32)
    report = simulate(20, 0, privacy=plan, seed=3, budgets=budgets, delta=DELTA)
    assert list(report.refusals) == [4] and "over the budget" in report.refusals[4]
    assert not report.aborted and report.exact and report.survivors == 19
    assert 4 not in report.result.contributors
    assert all(budgets[c].rounds == 1 for c in budgets)  # client 4's one round is the earlier one
    b = report.budgets
    assert (b["clients"], b["exhausted"], b["exhausted_clients"]) == (20, 1, [4])
    assert b["epsilon_min"] == b["epsilon_median"] == b["epsilon_max"] == pytest.approx(one)
    assert b["rounds_max"] == 1 and b["delta"] == DELTA
    assert "privacy budgets: 1 of 20 clients exhausted" in report.summary()
    assert simulate(20, 0, privacy=plan, seed=3).budgets is None


def test_the_report_and_the_population_view():
    plan = _plan()
    budget = PrivacyBudget(5.0, DELTA, client=2)
    empty = budget.report()
    assert (empty.epsilon_spent, empty.rounds, empty.remaining, empty.exhausted) == (0.0, 0, 5.0, False)
    budget.charge(plan, round=0, session=SESSION)
    state = budget.report()
    assert state.epsilon_spent == pytest.approx(plan.epsilon(delta=DELTA))
    assert state.remaining == pytest.approx(5.0 - state.epsilon_spent) and state.rounds == 1
    assert state.as_dict()["client"] == 2 and state.delta == DELTA and not state.exhausted
    spent = PrivacyBudget(0.1, DELTA, client=9)
    with pytest.raises(PrivacyBudgetExhausted, match="client 9, round None"):
        spent.charge(plan)
    summary = population_budget([state, spent.report(), empty])
    assert (summary.clients, summary.exhausted, summary.exhausted_clients) == (3, 1, [9])
    assert (summary.epsilon_min, summary.epsilon_max) == (0.0, state.epsilon_spent)
    assert summary.epsilon_median == 0.0 and "1 exhausted" in summary.summary()
    assert population_budget([]) is None


def test_two_handles_on_one_file_see_each_others_rounds(tmp_path):
    plan, path = _plan(), tmp_path / "b.sqlite"
    first, second = PrivacyBudget(50.0, DELTA, path=path), PrivacyBudget(50.0, DELTA, path=path)
    assert second.spent == 0.0
    first.charge(plan, round=0, session=SESSION)
    assert second.spent == pytest.approx(first.spent) and second.rounds == 1
    second.charge(plan, round=0, session=SESSION)  # the same round through the other handle
    assert first.rounds == 1
    first.close(), second.close()


def test_bad_budgets_are_refused(tmp_path):
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.commit(), db.close()
    with pytest.raises(ConfigurationError, match="not a secagg privacy budget"):
        PrivacyBudget(1.0, DELTA, path=other)
    for eps, delta in ((0, DELTA), (math.nan, DELTA), (1.0, 0), (1.0, 1.5)):
        with pytest.raises(ConfigurationError, match="privacy budget needs"):
            PrivacyBudget(eps, delta)
    budget = PrivacyBudget(1.0, DELTA)
    with pytest.raises(ConfigurationError, match="sampling rate"):
        budget.charge(_plan(), sampling=0)
    with pytest.raises(ConfigurationError, match="round must be"):
        budget.charge(_plan(), round=-1, session=SESSION)
    with pytest.raises(ConfigurationError, match="privacy budgets are charged by the privacy layer"):
        simulate(5, 10, budgets={1: budget})
