"""Layer 4: at-least-once delivery. Whole rounds over a network that duplicates, delays past the
deadline and reorders frames end with the exact sum or a named abort, and nothing raises."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secagg import simulate
from secagg.errors import RoundAborted
from secagg.transport.memory import Faults

from harness import Harness, make_config


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(4, 30),
    duplicate=st.sampled_from([0.0, 0.2, 1.0]),
    delay=st.sampled_from([0.0, 0.02, 0.1]),
    reorder=st.booleans(),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_rounds_under_duplication_delay_and_reordering_are_exact_or_abort(n, duplicate, delay, reorder, seed, data):
    config = make_config(n, 7, dropout_rate=0.3, label=f"net{n}")
    schedule = {c: data.draw(st.integers(0, 3)) for c in config.clients if data.draw(st.integers(0, 9)) == 0}
    h = Harness(config, label=f"net{n}", schedule=schedule,
                faults=Faults(duplicate=duplicate, delay=delay, reorder=reorder, seed=seed))
    h.run()
    assert h.server.finished
    assert not h.server.excluded  # the network's faults are never blamed on a client
    assert not h.router.refusals  # nor on the server
    try:
        result = h.server.result()
    except RoundAborted as exc:
        assert exc.reason
        assert delay or schedule  # without losses, duplication and reordering never abort a round
        return
    assert np.array_equal(result.ring_sum, h.true_ring_sum(result.contributors))
    if duplicate == 1.0:
        assert h.server.ignored.counts["duplicate"] > 0


def test_duplicates_are_counted_and_late_frames_ignored_not_raised():
    config = make_config(20, 5, dropout_rate=0.3, label="late")
    h = Harness(config, label="late", faults=Faults(duplicate=1.0, delay=0.05, seed=3))
    h.run()
    counts = h.server.ignored.counts
    assert counts["duplicate"] >= 20
    late = sum(v for k, v in counts.items() if k.startswith("from a client that left") or k.startswith("after"))
    assert late > 0  # frames held past their phase's deadline arrived and were ignored


def test_simulate_reports_faults_and_stays_exact():
    report = simulate(30, 50, dropout=0.1, drop_stage="mixed", seed=4,
                      faults=Faults(duplicate=0.5, reorder=True, seed=9))
    assert not report.aborted and report.exact
    assert report.ignored["duplicate"] > 0 and report.network["duplicated"] > 0


def test_frame_fingerprints_recognise_repeats_and_differences():
    import os

    from secagg.crypto.digest import WHOLE_BYTES, FrameDigest

    digest = FrameDigest(os.urandom)
    small, big = os.urandom(1000), bytearray(os.urandom(4 * WHOLE_BYTES))
    assert digest(small) == digest(bytes(small)) and digest(bytes(big)) == digest(bytes(big))
    assert digest(small) != digest(small[:-1] + bytes([small[-1] ^ 1]))
    for position in (0, 100, len(big) - 1):  # header, early payload, last byte: an equivocation
        other = bytearray(big)
        other[position] ^= 1
        assert digest(bytes(other)) != digest(bytes(big))
    middle = bytearray(big)
    middle[len(big) // 2] ^= 1  # documented: counts as a repeat, so it is ignored, never added
    assert digest(bytes(middle)) == digest(bytes(big))
    assert FrameDigest(os.urandom)(small) != digest(small)  # keyed per party
