"""Server blindness (SPEC.md section 9): the server learns only the sum. An honest client refuses
any Unmask request that would let the server hold both secrets of one peer, and an honest
server's whole view never does; a split-view server is tried against real clients."""

import copy
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.codec import decode, encode
from secagg.crypto import kex, prg, shamir
from secagg.errors import Equivocation, InconsistentRequest
from secagg.messages import UnmaskResponse
from secagg.protocol.client import self_mask_commitment
from secagg.protocol.rounds import ClientState, Phase

from harness import Harness, make_config


def _at_unmask(n=20, schedule=None, label="privacy", **kw):
    config = make_config(n, 8, dropout_rate=0.2, label=label, **kw)
    h = Harness(config, label=label, schedule=schedule or {})
    h.run(until=Phase.UNMASK)
    return config, h, h.requests()


def _answer(client, request):
    (reply,) = client.receive(encode(request))
    return decode(reply.frame)


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
        _answer(h.clients[r.recipient], evil)
    assert h.clients[r.recipient].state is ClientState.ERROR


def test_survivor_relabelled_as_dropped_then_asked_again_is_refused(unmask_with_dropout):
    # The classic attack: get the self-mask share of u, then claim u dropped to get its key share.
    config, h, requests = unmask_with_dropout
    r = _some_request_with_dropped(requests)
    client = h.clients[r.recipient]
    assert isinstance(_answer(client, r), UnmaskResponse)
    u = r.survivors[0]
    second = replace(r, survivors=tuple(p for p in r.survivors if p != u),
                     dropped=tuple(sorted(set(r.dropped) | {u})))
    with pytest.raises(Equivocation, match="second, different UnmaskRequest"):
        _answer(client, second)
    assert client.state is ClientState.ERROR


def test_client_never_reveals_both_secrets_even_if_its_state_is_reset(unmask_with_dropout):
    config, h, requests = unmask_with_dropout
    r = _some_request_with_dropped(requests)
    client = h.clients[r.recipient]
    _answer(client, r)
    client.state = ClientState.AWAIT_UNMASK_REQUEST  # a bug elsewhere lets a second request in
    u = r.survivors[0]
    second = replace(r, survivors=tuple(p for p in r.survivors if p != u),
                     dropped=tuple(sorted(set(r.dropped) | {u})))
    with pytest.raises(Equivocation, match="second, different UnmaskRequest"):
        _answer(client, second)


def test_request_naming_a_stranger_is_refused(unmask_with_dropout):
    config, h, requests = unmask_with_dropout
    r = _some_request_with_dropped(requests)
    stranger = next(c for c in config.clients if c not in config.graph.neighbours(r.recipient) and c != r.recipient)
    evil = replace(r, dropped=tuple(sorted(set(r.dropped) | {stranger})))
    with pytest.raises(InconsistentRequest, match="holds no shares of clients"):
        _answer(h.clients[r.recipient], evil)


def test_request_silent_about_a_neighbour_is_refused(unmask_with_dropout):
    config, h, requests = unmask_with_dropout
    r = _some_request_with_dropped(requests)
    evil = replace(r, dropped=r.dropped[1:])
    with pytest.raises(InconsistentRequest, match="says nothing of neighbours"):
        _answer(h.clients[r.recipient], evil)


def test_request_with_fewer_than_t_survivors_is_refused(unmask_with_dropout):
    config, h, requests = unmask_with_dropout
    r = _some_request_with_dropped(requests)
    everyone = sorted(set(r.survivors) | set(r.dropped))
    keep = everyone[: config.threshold - 1]
    evil = replace(r, survivors=tuple(keep), dropped=tuple(p for p in everyone if p not in keep))
    with pytest.raises(InconsistentRequest, match="surviving neighbours; threshold"):
        _answer(h.clients[r.recipient], evil)


def test_request_listing_the_client_itself_is_refused(unmask_with_dropout):
    config, h, requests = unmask_with_dropout
    r = _some_request_with_dropped(requests)
    evil = replace(r, dropped=tuple(sorted(set(r.dropped) | {r.recipient})))
    with pytest.raises(InconsistentRequest, match="its own neighbour"):
        _answer(h.clients[r.recipient], evil)


def _split_view_attack(config, h, requests, u):
    """The server tells some of u's holders "u survived" and the rest "u dropped", choosing the
    split that gives it the most of both kinds, then tries to recover b_u AND s_u. Returns the
    pair it recovered and verified, or None."""
    t = config.threshold
    holders = [v for v in config.graph.neighbours(u) if v in requests]
    best = None
    for split in range(len(holders) + 1):  # the first `split` holders hear "u survived"
        self_shares, key_shares = [], []
        for i, v in enumerate(holders):
            r = requests[v]
            if i >= split:  # the lie: u dropped
                r = replace(r, survivors=tuple(p for p in r.survivors if p != u),
                            dropped=tuple(sorted(set(r.dropped) | {u})))
            client = copy.deepcopy(h.clients[v])  # each split is tried on fresh honest clients
            try:
                resp = _answer(client, r)
            except InconsistentRequest:
                continue
            self_shares += [(v, s.share) for s in resp.self_mask_shares if s.peer == u]
            key_shares += [(v, s.share) for s in resp.key_shares if s.peer == u]
        assert len(self_shares) + len(key_shares) <= len(holders)  # one share per honest holder
        if len(self_shares) >= t and len(key_shares) >= t:
            b_u = shamir.reconstruct(self_shares[:t], t)
            s_u = shamir.reconstruct(key_shares[:t], t)
            if (self_mask_commitment(b_u, h.server._session, u) == h.server._commitments[u]
                    and kex.public_key(s_u) == h.server._advertised[u].mask_key):
                best = (b_u, s_u)
    return best


def test_split_view_server_unmasks_a_client_under_semi_honest_parameters():
    """The control: with 2t <= k the attack is real (the next test would be empty without it)."""
    config, h, requests = _at_unmask(n=10, label="split-honest", full_graph=True, threshold=3)
    assert 2 * config.threshold <= config.degree
    assert _split_view_attack(config, h, requests, u=1) is not None


def test_semi_malicious_threshold_defeats_a_split_view_server():
    """With the semi-malicious threshold (2t > k) no split of u's holders yields t shares of both
    of u's secrets: every split is tried against the honest clients, and none recovers both."""
    config, h, requests = _at_unmask(n=40, label="split-malicious", adversary="semi-malicious")
    assert 2 * config.threshold > config.degree
    for u in (1, 2, 3):
        assert _split_view_attack(config, h, requests, u) is None


@settings(max_examples=25)
@given(n=st.integers(5, 40), data=st.data())
def test_honest_server_view_never_holds_both_secrets_of_a_client(n, data):
    config = make_config(n, 4, label=f"view{n}")
    schedule = {c: data.draw(st.integers(0, 3)) for c in config.clients if data.draw(st.booleans()) and c % 3 == 0}
    h = Harness(config, label=f"view{n}", schedule=schedule)
    h.run()
    for client, (self_count, key_count) in h.server.revealed_share_counts().items():
        assert self_count == 0 or key_count == 0, f"client {client}: {self_count} / {key_count}"
        assert not (self_count >= config.threshold and key_count >= config.threshold)


def test_unmask_shares_of_a_survivor_alone_do_not_reveal_its_input():
    """With b_u known but all pairwise masks in place, y_u is still uniformly masked: check that the
    server-visible y_u - PRG(b_u) differs from x_u wherever u has a surviving neighbour."""
    config = make_config(12, 64, bits=32, label="mask")
    seen = {}

    def spy(sender, recipient, frame):
        if recipient == 0 and decode(frame).name == "MaskedInput":
            seen[sender] = decode(frame).masked.copy()
        return [frame]

    h = Harness(config, label="mask", tamper=spy)
    h.run()
    u = 1
    shares = sorted(h.server._self_mask_shares[u].items())[: config.threshold]
    b_u = shamir.reconstruct(shares, config.threshold)
    unmasked = seen[u] - prg.expand(b_u, config.dim)
    assert not np.array_equal(unmasked, h.quantized(u))
    assert np.mean(unmasked == h.quantized(u)) < 0.05
