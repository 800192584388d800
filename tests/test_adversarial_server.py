"""The authenticated protocol against a malicious server (SPEC section 14), attack by attack, at
several (n, dropout) points. Each attack either fails with a named refusal by the honest clients
or yields the attacker nothing but the sum: ``learned_inputs()`` reconstructs every secret the
attacker holds t shares of and checks whether any client's masked input can be stripped of all
its masks."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest

from secagg.codec import encode
from secagg.config import RoundConfig
from secagg.crypto import kex
from secagg.crypto.randomness import DeterministicRandom
from secagg.errors import BadSignature, InconsistentRequest, ReplayedRound, WeakConfig
from secagg.model_signing import generate_operator_key
from secagg.messages import AdvertiseKeysRequest, NeighbourKeys
from secagg.protocol import keys
from secagg.protocol.ledger import RoundLedger
from secagg.protocol.rounds import Phase

from adversary import Attack, MaliciousServer, dropout_schedule, holders, unmask_request_for, victim
from harness import Harness, make_config

POINTS = [(12, 0.0), (30, 0.1), (60, 0.2)]


def _setup(n, dropout, label):
    config = make_config(n, 8, dropout_rate=max(dropout, 0.05), label=label, authenticated=True)
    schedule = dropout_schedule(config, dropout, label)
    return config, schedule, victim(config, schedule)


def _refused_by_name(mal, kind, *words):
    """At least one honest client refused with ``kind``, naming each of ``words``; and the attacker
    learned no input."""
    hits = [e for e in mal.refusals.values() if isinstance(e, kind)
            and f"client {e.client} refuses" in str(e) and all(w in str(e) for w in words)]
    assert hits, f"no {kind.__name__} naming {words} among the refusals {mal.refusals}"
    assert mal.learned_inputs() == []
    return hits


def _points(f):
    return pytest.mark.parametrize("n,dropout", POINTS, ids=[f"n{n}-d{d}" for n, d in POINTS])(f)


# --- key substitution ---------------------------------------------------------------------------


class SubstituteKey(Attack):
    """Relay u's adverts with the attacker's own mask key (so it could agree u's pairwise seeds),
    under u's signature, or under another client's signature."""

    def __init__(self, u: int, signature: str) -> None:
        self.u, self.signature = u, signature
        self.key = kex.generate_keypair(DeterministicRandom("attacker key"))[1]

    def request(self, msg, mal):
        if msg.name == "ShareKeysRequest" and mal.config.authenticated:
            other = next((k.signature for k in msg.neighbour_keys if k.client != self.u), b"")
            ks = tuple(NeighbourKeys(k.client, k.encryption_key, self.key,
                                     k.signature if self.signature == "own" else other)
                       if k.client == self.u else k for k in msg.neighbour_keys)
            return [replace(msg, neighbour_keys=ks)]
        if msg.name == "ShareKeysRequest":
            ks = tuple(k._replace(mask_key=self.key) if k.client == self.u else k for k in msg.neighbour_keys)
            return [replace(msg, neighbour_keys=ks)]
        return [msg]


@_points
@pytest.mark.parametrize("signature", ["own", "another's"], ids=["u's signature kept", "another's signature"])
def test_key_substitution_is_refused_by_every_neighbour(n, dropout, signature):
    config, schedule, u = _setup(n, dropout, f"subst{n}")
    mal = MaliciousServer(config, SubstituteKey(u, signature), label=f"subst{n}", schedule=schedule).run()
    _refused_by_name(mal, BadSignature, f"client {u}", "does not verify")
    got = {r for r, e in mal.refusals.items() if isinstance(e, BadSignature)}
    assert got == {c for c in holders(config, u) if schedule.get(c, 9) > 1 and c in got} and got


# --- split views, one per round -----------------------------------------------------------------


class SplitShareKeys(Attack):
    """Half of u's neighbours are told u dropped at AdvertiseKeys; the others see u."""

    def __init__(self, u, config):
        self.u, self.told = u, set(holders(config, u)[::2])

    def request(self, msg, mal):
        if msg.name == "ShareKeysRequest" and msg.recipient in self.told:
            return [replace(msg, neighbour_keys=tuple(k for k in msg.neighbour_keys if k.client != self.u))]
        return [msg]


class SplitMaskedInput(Attack):
    """Half of u's neighbours get no shares from u (they mask as if u had dropped at ShareKeys)."""

    def __init__(self, u, config):
        self.u, self.told = u, set(holders(config, u)[::2])

    def request(self, msg, mal):
        if msg.name == "MaskedInputRequest" and msg.recipient in self.told:
            return [replace(msg, encrypted_shares=tuple(e for e in msg.encrypted_shares if e.peer != self.u))]
        return [msg]


class SplitSurvivorSets(Attack):
    """The best split of U3: t of u's holders (group B) are shown U3 without u, everyone else the
    true U3. B's signatures are kept from the server; when Unmask starts, each member of B gets an
    UnmaskRequest that matches what it signed and carries B's signatures, so B reveals its shares
    of s_u, while the rest reveal their shares of b_u."""

    def __init__(self, u, config):
        self.u = u
        self.group = set(holders(config, u)[: config.threshold])
        self.sent = False

    def request(self, msg, mal):
        if msg.name == "ConsistencyCheckRequest" and msg.recipient in self.group:
            self.fake = frozenset(msg.survivors) - {self.u}
            return [replace(msg, survivors=tuple(sorted(self.fake)))]
        if msg.name in ("UnmaskRequest", "Abort") and hasattr(self, "fake") and not self.sent:
            self.sent = True
            signers = [c for c in self.group if c in mal.seen.signatures]
            for r in signers:
                mal.inject(r, unmask_request_for(mal, r, self.fake, signers))
        return [msg]

    def response(self, msg, mal):
        return not (msg.name == "ConsistencyCheck" and msg.sender in self.group)


class SplitUnmask(Attack):
    """After an honest ConsistencyCheck, half of u's holders are told u dropped."""

    def __init__(self, u, config):
        self.u, self.told = u, set(holders(config, u)[::2])

    def request(self, msg, mal):
        if msg.name == "UnmaskRequest" and msg.recipient in self.told and self.u in msg.survivors:
            return [replace(msg, survivors=tuple(p for p in msg.survivors if p != self.u),
                            dropped=tuple(sorted({*msg.dropped, self.u})))]
        return [msg]


@_points
@pytest.mark.parametrize("attack", [SplitShareKeys, SplitMaskedInput, SplitSurvivorSets],
                         ids=["ShareKeys", "MaskedInput", "ConsistencyCheck"])
def test_a_split_view_yields_nothing_but_the_sum(n, dropout, attack):
    config, schedule, u = _setup(n, dropout, f"split{n}")
    mal = MaliciousServer(config, attack(u, config), label=f"split{n}", schedule=schedule).run()
    assert mal.learned_inputs() == []
    assert u not in mal.clients_holding_both()


def test_the_survivor_split_really_harvests_one_secret():
    """The split above is a real attack: the attacker gets u's mask key from its t holders in B;
    b_u stays out of reach because 2t > k leaves fewer than t holders outside B."""
    config, schedule, u = _setup(30, 0.0, "split-harvest")
    mal = MaliciousServer(config, SplitSurvivorSets(u, config), label="split-harvest").run()
    seeds, keys_ = mal.secrets()
    assert u in keys_ and u not in seeds and u in mal.seen.masked
    assert 2 * config.threshold > config.degree


@_points
def test_a_split_view_at_unmask_is_refused_against_the_signed_survivor_set(n, dropout):
    config, schedule, u = _setup(n, dropout, f"split-unmask{n}")
    schedule = {c: s for c, s in schedule.items() if s < 3}  # everyone who signs U3 answers Unmask
    mal = MaliciousServer(config, SplitUnmask(u, config), label=f"split-unmask{n}", schedule=schedule).run()
    _refused_by_name(mal, InconsistentRequest, "contradicts the signed survivor set", str(u))


# --- drop and re-add ------------------------------------------------------------------------------


class DropAndReAdd(Attack):
    """u is shown to every neighbour as dropped at AdvertiseKeys, then re-added: its shares are
    relayed at MaskedInput (so its neighbours would mask with a key they never checked)."""

    def __init__(self, u):
        self.u = u

    def request(self, msg, mal):
        if msg.name == "ShareKeysRequest":
            return [replace(msg, neighbour_keys=tuple(k for k in msg.neighbour_keys if k.client != self.u))]
        return [msg]


class DropFromSurvivorsAndReAdd(Attack):
    """u's masked input is in, but U3 leaves u out (so its neighbours reveal s_u); then u is
    re-added as a survivor in the UnmaskRequests (to get b_u as well)."""

    def __init__(self, u):
        self.u = u

    def request(self, msg, mal):
        if msg.name == "ConsistencyCheckRequest":
            return [replace(msg, survivors=tuple(c for c in msg.survivors if c != self.u))]
        return [msg]


@_points
def test_drop_and_re_add_yields_nothing(n, dropout):
    config, schedule, u = _setup(n, dropout, f"readd{n}")
    mal = MaliciousServer(config, DropAndReAdd(u), label=f"readd{n}", schedule=schedule).run()
    # u's neighbours share nothing with u; the server, which relays u's shares, blames them for
    # leaving u out, or they refuse u's shares as coming from a key they never checked.
    assert mal.learned_inputs() == [] and u not in mal.clients_holding_both()
    assert mal.h.server.excluded or mal.refusals


def test_a_re_added_client_s_shares_are_refused():
    """The re-add itself: a client told at ShareKeys that u dropped refuses u's shares later."""
    config, schedule, u = _setup(30, 0.0, "readd-unit")
    h = Harness(config, label="readd-unit")
    h.run(until=Phase.SHARE_KEYS)
    requests = h.requests()
    r = holders(config, u)[0]
    attacked = copy.deepcopy(h.clients[r])  # r as the attacker shows it the round
    attacked.receive(encode(replace(requests[r], neighbour_keys=tuple(
        k for k in requests[r].neighbour_keys if k.client != u))))
    for c, m in requests.items():
        h.router.deliver(0, c, encode(m))
    h.run(until=Phase.MASKED_INPUT)
    readd = h.requests()[r]  # the re-add: u's shares, relayed to r
    assert u in {e.peer for e in readd.encrypted_shares}
    with pytest.raises(InconsistentRequest, match=rf"shares from clients \[{u}\], whose keys we never received"):
        attacked.receive(encode(readd))


@_points
def test_dropping_a_contributor_from_the_survivor_set_yields_nothing(n, dropout):
    config, schedule, u = _setup(n, dropout, f"drop-u3-{n}")
    mal = MaliciousServer(config, DropFromSurvivorsAndReAdd(u), label=f"drop-u3-{n}", schedule=schedule).run()
    # Everyone signed U3 without u; the server checks the signatures against the U3 it meant and
    # excludes them by name, or the request contradicts what the clients signed: either way
    # nobody reveals both of u's secrets.
    assert mal.learned_inputs() == []
    assert u not in mal.clients_holding_both()


# --- a weakened or forged config ----------------------------------------------------------------


class RewriteConfig(Attack):
    def __init__(self, change, signature=None):
        self.change, self.signature = change, signature

    def request(self, msg, mal):
        if isinstance(msg, AdvertiseKeysRequest):
            config = self.change(msg.config)
            signature = msg.config_signature if self.signature is None else self.signature(config)
            return [replace(msg, config=config, config_signature=signature)]
        return [msg]


def _lower_degree(c: RoundConfig) -> RoundConfig:
    if c.degree == c.num_clients - 1 or c.degree <= 2:  # lower the threshold, or the ratio t / k
        if c.threshold > 2:
            return replace(c, threshold=c.threshold - 1)
        return replace(c, degree=c.degree + 2)
    k = c.degree - 2
    return replace(c, degree=k, threshold=min(c.threshold, k))


_SERVER_KEY = generate_operator_key()  # any Ed25519 key that is not the operator's
CONFIG_ATTACKS = {
    "lower degree, operator's signature kept": (RewriteConfig(_lower_degree), BadSignature, "operator"),
    "lower degree, signed by the server": (
        RewriteConfig(_lower_degree, lambda c: keys.sign_config(c, _SERVER_KEY)), BadSignature, "operator"),
    "unsigned": (RewriteConfig(lambda c: c, lambda c: b""), BadSignature, "not signed by the operator"),
    "other graph seed": (RewriteConfig(lambda c: replace(c, graph_seed=bytes(32))), BadSignature, "operator"),
    "other bit width": (RewriteConfig(lambda c: replace(c, bits=c.bits + 1)), BadSignature, "operator"),
}


@_points
@pytest.mark.parametrize("name", list(CONFIG_ATTACKS))
def test_a_config_the_server_altered_is_refused_by_every_client(n, dropout, name):
    attack, kind, words = CONFIG_ATTACKS[name]
    config, schedule, u = _setup(n, dropout, f"config{n}")
    mal = MaliciousServer(config, attack, label=f"config{n}", schedule=schedule).run()
    _refused_by_name(mal, kind, words)
    assert set(mal.refusals) == {c for c in config.clients if schedule.get(c, 9) > 0}
    assert not mal.seen.adverts and mal.h.server.phase is Phase.ABORTED


@pytest.mark.parametrize("weaken", ["degree", "threshold", "2t <= k", "class"])
def test_a_weak_config_is_refused_even_when_the_operator_signed_it(weaken):
    """The clients recompute the parameter finder: an operator mistake (or a stolen operator key)
    cannot lower the guarantee below what the config's own n, rates and class need."""
    config = make_config(60, 8, dropout_rate=0.1, label="weak", authenticated=True)
    if weaken == "degree":
        config = replace(config, degree=config.degree - 2, threshold=config.threshold - 1)
        text = "below"
    elif weaken == "threshold":
        config = replace(config, threshold=config.threshold - 1)
        text = "threshold"
    elif weaken == "2t <= k":
        config = replace(config, threshold=config.degree // 2)
        text = "2t ="
    else:
        config = replace(config, adversary=type(config.adversary)("semi-malicious"))
        text = "demands at least malicious"
    h = Harness(config, label="weak", require_authenticated=True)
    h.run()
    errors = list(h.router.refusals.values())
    assert len(errors) == config.num_clients and all(isinstance(e, WeakConfig) for e in errors)
    assert text in str(errors[0])


# --- forged survivor signatures ---------------------------------------------------------------------


class ForgeSurvivors(Attack):
    def __init__(self, how):
        self.how = how

    def request(self, msg, mal):
        if msg.name == "UnmaskRequest":
            t = mal.config.threshold
            if self.how == "too few":
                return [replace(msg, consistency=msg.consistency[: t - 1])]
            if self.how == "garbage":
                return [replace(msg, consistency=tuple(s._replace(signature=bytes(64)) for s in msg.consistency))]
            # "moved": one signer's signature presented as another's
            first, second = msg.consistency[:2]
            return [replace(msg, consistency=(first._replace(signature=second.signature), *msg.consistency[1:]))]
        return [msg]


@_points
@pytest.mark.parametrize("how,kind,text", [
    ("too few", InconsistentRequest, "survivor-set signatures"),
    ("garbage", BadSignature, "not over the survivor set"),
    ("moved", BadSignature, "not over the survivor set"),
])
def test_a_forged_survivor_list_is_refused(n, dropout, how, kind, text):
    config, schedule, u = _setup(n, dropout, f"forge{n}")
    schedule = {c: s for c, s in schedule.items() if s < 3}
    mal = MaliciousServer(config, ForgeSurvivors(how), label=f"forge{n}", schedule=schedule).run()
    _refused_by_name(mal, kind, text)
    assert not mal.seen.self_shares and not mal.seen.key_shares  # nothing revealed at all


# --- replay of an old round -------------------------------------------------------------------------


@_points
def test_a_replayed_round_is_refused_by_clients_that_keep_a_ledger(n, dropout):
    config, schedule, u = _setup(n, dropout, f"replay{n}")
    ledgers = {c: RoundLedger(":memory:") for c in config.clients}
    first = Harness(config, label=f"replay{n}", schedule=schedule, ledger_of=ledgers.__getitem__)
    first.run()
    first.server.result()
    # The server replays the same signed config (round and session unchanged) to the same clients,
    # now with fresh keys: two sums over different survivor sets would give away an input.
    again = Harness(config, label=f"replay{n}-again", ledger_of=ledgers.__getitem__)
    again.run()
    joined = {c for c, stage in ((c, schedule.get(c, 9)) for c in config.clients) if stage > 0}
    refused = {c for c, e in again.router.refusals.items() if isinstance(e, ReplayedRound)}
    assert joined <= refused and "already took part" in str(again.router.refusals[u])
    # An older round of the session is refused too; the next one is accepted.
    assert "round 0" in (ledgers[u].fault(config.session_id, 0) or "")
    ledgers[u].record(config.session_id, 5)
    assert "took part in round 5" in ledgers[u].fault(config.session_id, 3)
    assert ledgers[u].fault(config.session_id, 6) is None


def test_the_ledger_survives_a_restart(tmp_path):
    path = tmp_path / "ledger.sqlite"
    ledger = RoundLedger(path)
    ledger.record(b"s" * 16, 2**64 - 1)
    ledger.close()
    assert "already took part" in RoundLedger(path).fault(b"s" * 16, 2**64 - 1)


# --- a model from someone else ----------------------------------------------------------------------


def test_a_model_relayed_from_someone_else_is_refused():
    from secagg.errors import BadModelSignature, StaleModel, UnsignedModel
    from secagg.model_signing import ModelGuard, operator_key_from_seed, sign_model

    operator = operator_key_from_seed(bytes(32))
    stranger = operator_key_from_seed(bytes([1]) * 32)
    model = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    guard = ModelGuard(operator.public_key(), "m")
    guard.accept(model, sign_model(model, 3, "m", operator))
    with pytest.raises(BadModelSignature):
        guard.accept(model, sign_model(model, 4, "m", stranger))
    with pytest.raises(UnsignedModel):
        guard.accept(model, None)
    with pytest.raises(StaleModel):
        guard.accept(model, sign_model(model, 2, "m", operator))


# --- the semi-honest mode, for contrast -------------------------------------------------------------


def test_without_authentication_a_substituted_key_gets_honest_clients_blamed():
    """The control for the key-substitution test. In the semi-honest mode nothing binds a key to
    its owner, so no client refuses the substituted key. The pair session (SPEC 4.2) still keeps
    the sum from going silently wrong: the shares u's neighbours encrypt under the false key do
    not open for u, u complains, and the server blames and excludes those honest neighbours.
    The authenticated mode refuses the substitution instead, naming the attacked key."""
    config = make_config(30, 8, dropout_rate=0.1, label="subst-control")
    u = 1
    mal = MaliciousServer(config, SubstituteKey(u, "own"), label="subst-control").run()
    assert not mal.refusals
    assert sorted(mal.h.server.excluded) == holders(config, u)
    assert all("ciphertext does not open" in str(e) for e in mal.h.server.excluded.values())
    assert mal.learned_inputs() == []
    if mal.h.server.phase is Phase.COMPLETED:
        result = mal.h.server.result()
        assert np.array_equal(result.ring_sum, mal.h.true_ring_sum(result.contributors))


# --- neighbours the graph seed does not give ----------------------------------------------------------


class AddStranger(Attack):
    """Relay to u, beside its real neighbours, the genuine signed advert of a client the graph seed
    does not make its neighbour (to pair u with a colluder of the server's choosing)."""

    def __init__(self, u, config):
        self.u = u
        self.stranger = next(c for c in config.clients if c != u and c not in config.graph.neighbours(u))
        self.adverts: dict[int, NeighbourKeys] = {}

    def request(self, msg, mal):
        if msg.name == "ShareKeysRequest":
            self.adverts.update({k.client: k for k in msg.neighbour_keys})
            if msg.recipient == self.u:
                advert = self.adverts.get(self.stranger)
                if advert is None:  # not relayed to anyone yet: the signed advert the server holds
                    advert = mal.h.server._advertised[self.stranger]
                ks = tuple(sorted((*msg.neighbour_keys, advert), key=lambda k: k.client))
                return [replace(msg, neighbour_keys=ks)]
        return [msg]


@_points
def test_a_neighbour_the_graph_seed_does_not_give_is_refused(n, dropout):
    config, schedule, u = _setup(n, dropout, f"stranger{n}")
    if config.degree == config.num_clients - 1:
        pytest.skip("the full graph makes every client a neighbour")
    schedule = {c: s for c, s in schedule.items() if c != u and s > 1}
    mal = MaliciousServer(config, AddStranger(u, config), label=f"stranger{n}", schedule=schedule).run()
    _refused_by_name(mal, InconsistentRequest, "are not our graph neighbours")
    assert u in mal.refusals
