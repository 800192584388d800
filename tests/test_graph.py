"""The Harary graph on a permuted ring."""

import pytest

from secagg.graph import harary_graph, ring_order


@pytest.mark.parametrize("n, k", [(5, 2), (10, 4), (31, 8), (100, 16), (7, 6)])
def test_regular_symmetric_and_loop_free(n, k):
    g = harary_graph(n, k, bytes(32))
    for u in range(1, n + 1):
        nb = g.neighbours(u)
        assert len(nb) == k and u not in nb and len(set(nb)) == k
        for v in nb:
            assert u in g.neighbours(v)
            assert g.are_neighbours(u, v)


def test_order_is_a_permutation_fixed_by_the_seed():
    a = ring_order(50, b"\x01" * 32)
    assert sorted(a.tolist()) == list(range(1, 51))
    assert a.tolist() == ring_order(50, b"\x01" * 32).tolist()
    assert a.tolist() != ring_order(50, b"\x02" * 32).tolist()
    assert a.tolist() != list(range(1, 51))


def test_neighbours_are_ring_neighbours_in_the_permuted_order():
    g = harary_graph(20, 4, b"\x05" * 32)
    order = g.order.tolist()
    i = order.index(7)
    expected = {order[(i + d) % 20] for d in (-2, -1, 1, 2)}
    assert set(g.neighbours(7)) == expected


def test_odd_degree_below_full_is_refused():
    with pytest.raises(ValueError):
        harary_graph(10, 3, bytes(32))
