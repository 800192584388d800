"""Authenticated rounds (SPEC section 12): signed adverts, checked by the server before it relays
them and by every client before it derives a key. A man in the middle or a server that
substitutes a key is caught; the faulty party is named."""

import os
from dataclasses import replace

import numpy as np
import pytest

from secagg import simulate
from secagg.codec import decode, encode
from secagg.config import RoundConfig
from secagg.crypto.randomness import DeterministicRandom
from secagg.identity import ClientIdentity
from secagg.errors import BadSignature, InconsistentRequest
from secagg.messages import AdvertiseKeysRequest, NeighbourKeys
from secagg.protocol.client import Client


def _rewrite(kind, sender_filter, change):
    def tamper(sender, recipient, frame):
        msg = decode(frame)
        if msg.name == kind and sender_filter(sender, recipient):
            return [encode(change(msg))]
        return [frame]
    return tamper


def test_an_honest_authenticated_round_is_exact_with_dropouts():
    report = simulate(30, 200, dropout=0.2, drop_stage="mixed", seed=3, authenticated=True)
    assert not report.aborted and report.exact and not report.excluded and not report.refusals


@pytest.mark.parametrize("attack", ["flipped signature", "unsigned", "substituted mask key",
                                    "substituted encryption key", "signature from another round"])
def test_a_forged_advert_on_the_way_to_the_server_excludes_that_client(attack):
    victim = 5
    other_round = {}

    def change(msg):
        if attack == "flipped signature":
            return replace(msg, signature=msg.signature[:-1] + bytes([msg.signature[-1] ^ 1]))
        if attack == "unsigned":
            return replace(msg, signature=b"")
        if attack == "substituted mask key":
            return replace(msg, mask_key=_fresh_x25519())
        if attack == "substituted encryption key":
            return replace(msg, encryption_key=_fresh_x25519())
        other_round.setdefault("sig", os.urandom(64))
        return replace(msg, signature=other_round["sig"])

    report = simulate(16, 50, seed=4, dropout_rate=0.3, authenticated=True,
                      tamper=_rewrite("AdvertiseKeys", lambda s, r: s == victim, change))
    assert not report.aborted and report.exact
    assert list(report.excluded) == [victim] and not report.refusals
    assert "BadSignature" not in report.excluded[victim]  # the text names what failed
    assert "signature" in report.excluded[victim] or "not signed" in report.excluded[victim]


def _fresh_x25519() -> bytes:
    from secagg.crypto import kex

    return kex.generate_keypair(os.urandom)[1]


def test_a_server_that_substitutes_a_relayed_key_is_refused_by_the_client():
    victim_recipient = 2

    def change(msg):
        first = msg.neighbour_keys[0]
        forged = NeighbourKeys(first.client, first.encryption_key, _fresh_x25519(), first.signature)
        return replace(msg, neighbour_keys=(forged, *msg.neighbour_keys[1:]))

    report = simulate(16, 50, seed=5, dropout_rate=0.3, authenticated=True,
                      tamper=_rewrite("ShareKeysRequest", lambda s, r: r == victim_recipient, change))
    assert victim_recipient in report.refusals
    assert "signature does not verify" in report.refusals[victim_recipient]
    assert report.aborted or report.exact  # the others finish or abort by name, never a wrong sum


def test_a_client_requiring_authentication_refuses_a_downgraded_round():
    config = RoundConfig.create(10, 4, dropout_rate=0.2, rng=DeterministicRandom("downgrade"))
    assert not config.authenticated
    frame = encode(AdvertiseKeysRequest(session_id=config.session_id, round=0, sender=0, recipient=1,
                                        config=config))
    client = Client(1, np.zeros(4), signing_key=ClientIdentity.generate(1),
                    identities=lambda c: b"", require_authenticated=True)
    with pytest.raises(InconsistentRequest, match="without authentication"):
        client.receive(frame)


def test_a_revoked_client_is_excluded_by_name_and_the_round_stays_exact():
    from harness import Harness, make_config

    config = make_config(16, 6, dropout_rate=0.3, label="revoked", authenticated=True)
    h = Harness(config, label="revoked")
    h.registry.revoke(7, "key reported stolen")
    h.run()
    assert list(h.server.excluded) == [7]
    assert "client 7" in str(h.server.excluded[7]) and "revoked" in str(h.server.excluded[7])
    result = h.server.result()
    assert 7 not in result.contributors
    assert np.array_equal(result.ring_sum, h.true_ring_sum(result.contributors))


def test_signed_adverts_bind_the_signed_config_and_the_signer():
    from secagg.crypto import sign
    from secagg.protocol import keys

    config = RoundConfig.create(10, 4, dropout_rate=0.2, authenticated=True, rng=DeterministicRandom("bind"))
    operator = ClientIdentity.generate(99)
    signed = keys.sign_config(config, operator)
    session = keys.session_hash(config, signed)
    key = ClientIdentity.generate(3)
    c_pk, s_pk = _fresh_x25519(), _fresh_x25519()
    signature = key.sign(keys.advert_message(session, 3, c_pk, s_pk))
    assert sign.verify(key.public_key_bytes, keys.advert_message(session, 3, c_pk, s_pk), signature)
    # Any change to the config (its round, session label, degree) or to its signature is another
    # session hash, under which the advert does not verify.
    others = [keys.session_hash(replace(config, round=1), signed),
              keys.session_hash(replace(config, session_id=bytes(16)), signed),
              keys.session_hash(replace(config, threshold=config.threshold + 1), signed),
              keys.session_hash(config, keys.sign_config(config, ClientIdentity.generate(98))),
              keys.session_hash(config)]
    assert len(set(others) | {session}) == len(others) + 1
    for other in others:
        assert not sign.verify(key.public_key_bytes, keys.advert_message(other, 3, c_pk, s_pk), signature)
    assert not sign.verify(key.public_key_bytes, keys.advert_message(session, 4, c_pk, s_pk), signature)
    assert not sign.verify(key.public_key_bytes, keys.advert_message(session, 3, s_pk, c_pk), signature)
    assert issubclass(BadSignature, Exception)


# --- ConsistencyCheck --------------------------------------------------------------------------


def _auth_harness(label, **kw):
    from harness import Harness, make_config

    config = make_config(14, 6, dropout_rate=0.3, label=label, authenticated=True)
    return config, Harness(config, label=label, **kw)


def test_an_authenticated_round_runs_the_consistency_check_and_is_exact():
    from secagg.protocol.rounds import Phase

    config, h = _auth_harness("cc-honest", schedule={3: 3})  # client 3 is silent from ConsistencyCheck on
    h.run(until=Phase.CONSISTENCY_CHECK)
    requests = h.requests()
    assert {type(m).__name__ for m in requests.values()} == {"ConsistencyCheckRequest"}
    for r, m in requests.items():
        h.router.deliver(0, r, encode(m))
    h.run()
    result = h.server.result()
    assert np.array_equal(result.ring_sum, h.true_ring_sum(result.contributors))
    assert 3 in result.contributors  # its input is in the sum; its b_3 came from its neighbours


def test_a_split_view_of_the_survivor_set_is_refused_by_the_honest_clients():
    """A malicious server shows client a the survivor set without u (to harvest u's key share
    from a) and everyone else the true set. a signs what it was shown; at Unmask the t
    signatures the server can forward are over the true set, so a refuses to reveal anything."""
    from secagg.errors import RemoteProtocolError
    from secagg.messages import UnmaskRequest
    from secagg.protocol.rounds import Phase

    config, h = _auth_harness("cc-split")
    h.run(until=Phase.CONSISTENCY_CHECK)
    requests = h.requests()
    a = sorted(requests)[0]
    u = next(c for c in requests[a].survivors if c != a)
    shown = replace(requests[a], survivors=tuple(c for c in requests[a].survivors if c != u))
    (signed_for_a,) = h.clients[a].receive(encode(shown))  # a signs the forged set; kept from the server
    for r, m in requests.items():
        if r != a:
            h.router.deliver(0, r, encode(m))
    h.run(until=Phase.UNMASK)
    honest = next(iter(h.requests().values()))
    assert len(honest.consistency) >= config.threshold
    forged = UnmaskRequest(session_id=config.session_id, round=config.round, sender=0, recipient=a,
                           survivors=(), dropped=(u,), consistency=honest.consistency)
    with pytest.raises(RemoteProtocolError, match="survivor set"):
        h.clients[a].receive(encode(forged))
    assert decode(signed_for_a.frame).name == "ConsistencyCheck"


def test_an_unmask_request_that_contradicts_the_signed_survivors_is_refused():
    from secagg.protocol.rounds import Phase

    config, h = _auth_harness("cc-contradict")
    h.run(until=Phase.UNMASK)
    requests = h.requests()
    target, request = next((r, m) for r, m in requests.items() if m.survivors)
    lie = replace(request, survivors=request.survivors[1:],
                  dropped=tuple(sorted(set(request.dropped) | {request.survivors[0]})))
    with pytest.raises(InconsistentRequest, match="contradicts the signed survivor set"):
        h.clients[target].receive(encode(lie))


def test_an_unmask_request_with_too_few_or_forged_survivor_signatures_is_refused():
    from secagg.protocol.rounds import Phase

    config, h = _auth_harness("cc-forged")
    h.run(until=Phase.UNMASK)
    requests = h.requests()
    target, request = next(iter(requests.items()))
    spare = copy_of(h.clients[target])
    few = replace(request, consistency=request.consistency[: config.threshold - 1])
    with pytest.raises(InconsistentRequest, match="survivor-set signatures"):
        h.clients[target].receive(encode(few))
    forged = request.consistency[0]._replace(signature=bytes(64))
    bad = replace(request, consistency=(forged, *request.consistency[1:]))
    with pytest.raises(BadSignature, match="not over the survivor set"):
        spare.receive(encode(bad))


def copy_of(client):
    import copy

    return copy.deepcopy(client)
