"""bench/poisoning.py on a tiny federation: the measurement it reports and one defence it compares.

Not a timing: the full grid lives in bench/ (python3 -m bench.poisoning). Without DP noise
(z = 0) a 20-client, 4-round run is deterministic and takes a few seconds.
"""

import numpy as np
import pytest

pytest.importorskip("sklearn")

from bench import poisoning  # noqa: E402

TINY = poisoning.Settings(clients=20, rounds=4, noise_multiplier=0.0)


def test_backdoor_success_counts_triggered_images_of_the_other_classes():
    target = 7
    x = np.zeros((6, 64))
    y = np.array([7, 7, 3, 1, 2, 3])
    x[y == 3, 30] = 1.0  # a feature that keeps class 3 against the trigger
    w, b = np.zeros((64, 10)), np.zeros(10)
    b[1] = 0.5  # untriggered, everything is class 1
    w[list(poisoning.TRIGGER), target] = 2.0  # the trigger is worth 8 logits for the target
    assert poisoning.backdoor_success([w, b], x, y, target) == 1.0  # 4 of 4; the two 7s left out
    w[30, 3] = 20.0
    assert poisoning.backdoor_success([w, b], x, y, target) == 0.5  # the two 3s resist
    w[list(poisoning.TRIGGER), target] = 0.0
    assert poisoning.backdoor_success([w, b], x, y, target) == 0.0
    assert not x[:, list(poisoning.TRIGGER)].any()  # the trigger is applied to a copy


def test_median_of_groups_keeps_training_under_a_x100_scaling_attacker():
    plain = poisoning.run(TINY, "fedavg", "scale", "1")
    median = poisoning.run(TINY, "g=5 median", "scale", "1")
    honest = poisoning.run(TINY, "g=5 median", "none", "0")
    assert median.attackers == plain.attackers and len(median.attackers) == 1
    assert all(median.detected) and all(median.released)  # its group set aside every round
    assert median.accuracy[-1] > plain.accuracy[-1] + 0.25
    assert median.accuracy[-1] > honest.accuracy[-1] - 0.1


def test_aggregate_checks_alone_release_nothing_under_a_scaling_attacker():
    checks = poisoning.run(TINY, "checks only", "scale", "1")
    assert checks.detected == [True] * TINY.rounds and not any(checks.released)
    assert checks.accuracy == [checks.accuracy[0]] * (TINY.rounds + 1)  # the model never moved


def test_the_model_replacement_backdoor_is_caught_and_the_one_fitted_to_the_checks_is_not():
    # What the tightened l2 bound buys, and where it stops: the boosted backdoor (x n) crosses
    # its group's check; the attacker that scales to fit_norm passes every check unseen.
    noisy = poisoning.Settings(clients=20, rounds=2, noise_multiplier=1.0)
    boosted = poisoning.run(noisy, "g=5 none", "backdoor", "1")
    fitted = poisoning.run(noisy, "g=5 none", "backdoor-fit", "1")
    assert boosted.detected == [True, True]
    assert fitted.detected == [False, False] and all(fitted.released)
    assert poisoning.fit_norm(noisy, 5, "none", dim=650) > 4 * noisy.clip  # far past an honest client
