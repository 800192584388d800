"""Layer 4: whole rounds. Any dropout pattern that leaves enough shares gives the exact sum;
any other aborts cleanly, naming the clients whose secrets were lost."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import RoundAborted, simulate
from secagg.protocol.rounds import Stage

from harness import Harness, make_config

STAGES = list(Stage)


def k_core(members: set[int], graph, t: int) -> set[int]:
    members = set(members)
    while True:
        weak = {c for c in members if sum(v in members for v in graph.neighbours(c)) < t}
        if not weak:
            return members
        members -= weak


def oracle(config, schedule: dict[int, int], min_contributors: int):
    """Independent statement of when a round must succeed, and who is then in the sum."""
    g, t = config.graph, config.threshold
    alive = lambda i: {c for c in config.clients if schedule.get(c, 99) > i}  # noqa: E731
    u1 = k_core(alive(0), g, t)
    if len(u1) < min_contributors:
        return None
    u2 = k_core(u1 & alive(1), g, t)
    if len(u2) < min_contributors:
        return None
    u3 = u2 & alive(2)
    if len(u3) < min_contributors:
        return None
    responders = u3 & alive(3)
    needed = set(u3) | {u for u in u2 - u3 if any(v in u3 for v in g.neighbours(u))}
    for u in needed:
        if sum(v in responders for v in g.neighbours(u)) < t:
            return None
    return u3


@settings(max_examples=120)
@given(
    n=st.integers(3, 60),
    dim=st.sampled_from([1, 7, 64, 257]),
    bits=st.sampled_from([8, 13, 16, 24, 32, 33, 48, 62]),
    data=st.data(),
)
def test_exact_sum_or_clean_abort(n, dim, bits, data):
    if (n * 1).bit_length() > bits:
        bits = 16
    config = make_config(n, dim, bits=bits, label=f"{n}-{dim}-{bits}")
    drop_prob = data.draw(st.sampled_from([0.0, 0.1, 0.3, 0.6]))
    schedule = {
        c: data.draw(st.integers(0, 3))
        for c in config.clients
        if data.draw(st.floats(0, 1)) < drop_prob
    }
    h = Harness(config, label=f"h{n}", schedule=schedule)
    h.run()
    expected = oracle(config, schedule, h.server.min_contributors)
    if expected is None:
        with pytest.raises(RoundAborted) as info:
            h.server.result()
        assert info.value.reason
    else:
        result = h.server.result()
        assert set(result.contributors) == expected
        assert np.array_equal(result.ring_sum, h.true_ring_sum(result.contributors))


@pytest.mark.parametrize("stage", STAGES)
def test_dropout_at_each_stage_through_the_codec(stage):
    report = simulate(40, 300, dropout=0.2, drop_stage=stage.value, bits=20, seed=5)
    assert not report.aborted and report.exact
    assert report.dropped == 8
    assert report.survivors == (40 if stage in (Stage.CONSISTENCY_CHECK, Stage.UNMASK) else 32)
    assert report.max_abs_error <= report.error_bound


def test_mixed_dropouts_through_the_codec():
    report = simulate(60, 500, dropout=0.3, drop_stage="mixed", seed=11)
    assert not report.aborted and report.exact


def test_dropouts_before_masked_input_never_abort_a_round_with_enough_clients():
    # A third of the clients vanish during key sharing; Flower's round aborts here.
    for stage in (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS):
        report = simulate(100, 100, dropout=0.3, drop_stage=stage.value, dropout_rate=0.33,
                          adversarial_rate=0.0, seed=3)
        assert not report.aborted and report.exact and report.survivors == 70


def test_a_client_whose_neighbours_all_left_is_excluded_not_fatal():
    config = make_config(30, 10, dropout_rate=0.1)
    victim = 1
    schedule = {v: 1 for v in config.graph.neighbours(victim)[: config.degree - config.threshold + 1]}
    h = Harness(config, schedule=schedule)
    h.run()
    result = h.server.result()
    assert victim not in result.contributors
    assert h.clients[victim].state.value == "Aborted"
    assert "fewer than t" in h.clients[victim].abort_reason
    assert np.array_equal(result.ring_sum, h.true_ring_sum(result.contributors))


def test_too_many_unmask_dropouts_abort_naming_the_lost_clients():
    config = make_config(20, 10, dropout_rate=0.1)
    victim = 5
    # Every neighbour of the victim sends its masked input, then goes silent in Unmask.
    schedule = {v: 3 for v in config.graph.neighbours(victim)}
    h = Harness(config, schedule=schedule)
    h.run()
    with pytest.raises(RoundAborted) as info:
        h.server.result()
    assert victim in info.value.unrecoverable
    assert str(victim) in info.value.reason
    listening = [c for c in config.clients if c not in schedule]
    assert all(h.clients[c].state.value == "Aborted" for c in listening)
    assert all(str(victim) in h.clients[c].abort_reason for c in listening)


def test_too_few_clients_abort_with_the_count():
    config = make_config(10, 5, dropout_rate=0.3)
    h = Harness(config, min_contributors=8, schedule={1: 0, 2: 0, 3: 0})
    h.run()
    with pytest.raises(RoundAborted, match=r"only \d+ clients remain .* at least 8"):
        h.server.result()


def test_zero_input_rounds_and_extreme_values():
    config = make_config(12, 64, bits=32)
    r = config.value_range
    inputs = {c: np.full(64, r if c % 2 else -r) for c in config.clients}
    h = Harness(config, inputs=inputs)
    h.run()
    result = h.server.result()
    assert np.array_equal(result.ring_sum, h.true_ring_sum(result.contributors))
    assert np.allclose(result.values, 0.0, atol=12 * config.quantizer.step)


def test_1100_clients_at_small_width_are_refused_not_wrong():
    # Flower returns a silently wrong sum here; we refuse before the round starts.
    from secagg.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="use bits >= 11"):
        simulate(1100, 100, bits=10)
