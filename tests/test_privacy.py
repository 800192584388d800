"""Point 7: the server learns only the sum. An honest client refuses any Unmask request that would
let the server hold both secrets of one peer, and an honest server's whole view never does."""

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.crypto import shamir
from secagg.errors import InconsistentRequest, UnexpectedMessage
from secagg.messages import UnmaskRequest, UnmaskResponse
from secagg.protocol.states import ClientState

from harness import Harness, make_config


def _at_unmask(n=20, schedule=None, **kw):
    config = make_config(n, 8, dropout_rate=0.2, label="privacy", **kw)
    h = Harness(config, label="privacy")
    schedule = schedule or {}
    for i in range(3):
        h.phase(silent={c for c, s in schedule.items() if s <= i})
    requests = {m.recipient: m for m in h.outbox if isinstance(m, UnmaskRequest)}
    return config, h, requests


def _some_request_with_dropped(requests):
    return next(r for r in requests.values() if r.dropped and r.survivors)


@pytest.fixture()
def unmask_with_dropout():
    config, h, requests = _at_unmask(schedule={4: 2, 11: 2})
    return config, h, requests


def test_peer_listed_as_both_survivor_and_dropped_is_refused(unmask_with_dropout):
    config, h, requests = unmask_with_dropout
    r = _some_request_with_dropped(requests)
    evil = replace(r, dropped=tuple(sorted(set(r.dropped) | {r.survivors[0]})))
    with pytest.raises(InconsistentRequest, match=f"clients \\[{r.survivors[0]}\\] as both"):
        h.clients[r.recipient].receive(evil)
    assert h.clients[r.recipient].state is ClientState.ERROR


def test_survivor_relabelled_as_dropped_then_asked_again_is_refused(unmask_with_dropout):
    # The classic attack: get the self-mask share of u, then claim u dropped to get its key share.
    config, h, requests = unmask_with_dropout
    r = _some_request_with_dropped(requests)
    client = h.clients[r.recipient]
    (response,) = client.receive(r)
    assert isinstance(response, UnmaskResponse)
    u = r.survivors[0]
    second = replace(r, survivors=tuple(p for p in r.survivors if p != u),
                     dropped=tuple(sorted(set(r.dropped) | {u})))
    with pytest.raises(UnexpectedMessage):
        client.receive(second)
    assert client.state is ClientState.ERROR


def test_client_never_reveals_both_secrets_even_if_its_state_is_reset(unmask_with_dropout):
    config, h, requests = unmask_with_dropout
    r = _some_request_with_dropped(requests)
    client = h.clients[r.recipient]
    client.receive(r)
    client.state = ClientState.AWAIT_UNMASK_REQUEST  # a bug elsewhere lets a second request in
    u = r.survivors[0]
    second = replace(r, survivors=tuple(p for p in r.survivors if p != u),
                     dropped=tuple(sorted(set(r.dropped) | {u})))
    with pytest.raises(InconsistentRequest, match=f"self-mask share of client {u} was revealed"):
        client.receive(second)


def test_request_naming_a_stranger_is_refused(unmask_with_dropout):
    config, h, requests = unmask_with_dropout
    r = _some_request_with_dropped(requests)
    stranger = next(c for c in config.clients if c not in config.graph.neighbours(r.recipient) and c != r.recipient)
    evil = replace(r, dropped=tuple(sorted(set(r.dropped) | {stranger})))
    with pytest.raises(InconsistentRequest, match="never shared keys"):
        h.clients[r.recipient].receive(evil)


def test_request_silent_about_a_neighbour_is_refused(unmask_with_dropout):
    config, h, requests = unmask_with_dropout
    r = _some_request_with_dropped(requests)
    evil = replace(r, dropped=r.dropped[1:])
    with pytest.raises(InconsistentRequest, match="says nothing of neighbours"):
        h.clients[r.recipient].receive(evil)


def test_request_with_fewer_than_t_survivors_is_refused(unmask_with_dropout):
    config, h, requests = unmask_with_dropout
    r = _some_request_with_dropped(requests)
    everyone = sorted(set(r.survivors) | set(r.dropped))
    keep = everyone[: config.threshold - 1]
    evil = replace(r, survivors=tuple(keep), dropped=tuple(p for p in everyone if p not in keep))
    with pytest.raises(InconsistentRequest, match="surviving neighbours; threshold"):
        h.clients[r.recipient].receive(evil)


def test_request_listing_the_client_itself_is_refused(unmask_with_dropout):
    config, h, requests = unmask_with_dropout
    r = _some_request_with_dropped(requests)
    evil = replace(r, dropped=tuple(sorted(set(r.dropped) | {r.recipient})))
    with pytest.raises(InconsistentRequest, match="its own neighbour"):
        h.clients[r.recipient].receive(evil)


def test_semi_malicious_threshold_defeats_a_split_view_server():
    """A server that tells half of u's neighbours 'u survived' and the other half 'u dropped' gets
    at most k shares in all. With the semi-malicious threshold (2t > k) that is never t of both."""
    config, h, requests = _at_unmask(n=40, adversary="semi-malicious")
    assert 2 * config.threshold > config.degree
    u = 1
    holders = [v for v in config.graph.neighbours(u) if v in requests]
    half = len(holders) // 2
    self_shares, key_shares = [], []
    for i, v in enumerate(holders):
        r = requests[v]
        if i >= half:  # lie: u dropped
            r = replace(r, survivors=tuple(p for p in r.survivors if p != u),
                        dropped=tuple(sorted(set(r.dropped) | {u})))
        try:
            (resp,) = h.clients[v].receive(r)
        except InconsistentRequest:
            continue
        self_shares += [(v, s.share) for s in resp.self_mask_shares if s.peer == u]
        key_shares += [(v, s.share) for s in resp.key_shares if s.peer == u]
    assert len(self_shares) + len(key_shares) <= config.degree
    assert min(len(self_shares), len(key_shares)) < config.threshold


@settings(max_examples=25)
@given(n=st.integers(5, 40), data=st.data())
def test_honest_server_view_never_holds_both_secrets_of_a_client(n, data):
    config = make_config(n, 4, label=f"view{n}")
    schedule = {c: data.draw(st.integers(0, 3)) for c in config.clients if data.draw(st.booleans()) and c % 3 == 0}
    h = Harness(config, label=f"view{n}")
    h.run(schedule)
    for client, (self_count, key_count) in h.server.revealed_share_counts().items():
        assert self_count == 0 or key_count == 0, f"client {client}: {self_count} / {key_count}"
        assert not (self_count >= config.threshold and key_count >= config.threshold)


def test_unmask_shares_of_a_survivor_alone_do_not_reveal_its_input():
    """With b_u known but all pairwise masks in place, y_u is still uniformly masked: check that the
    server-visible y_u - PRG(b_u) differs from x_u wherever u has a surviving neighbour."""
    from secagg.crypto import prg

    config = make_config(12, 64, bits=32, label="mask")
    h = Harness(config, label="mask")
    seen = {}
    orig = h.server.receive

    def spy(msg):
        if msg.name == "MaskedInput":
            seen[msg.sender] = msg.masked.copy()
        return orig(msg)

    h.server.receive = spy
    h.run()
    u = 1
    shares = h.server._self_mask_shares[u][: config.threshold]
    b_u = shamir.reconstruct(shares, config.threshold)
    unmasked = seen[u] - prg.expand(b_u, config.dim)
    assert not np.array_equal(unmasked, h.quantized[u])
    assert np.mean(unmasked == h.quantized[u]) < 0.05
