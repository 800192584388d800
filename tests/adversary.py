"""A malicious server to test the authenticated protocol against (SPEC section 14).

``MaliciousServer`` runs a real round (the honest ``Server``'s bookkeeping, real clients, the one
in-process router) with an attacker between the server and the clients: every frame either way
passes through it. An ``Attack`` rewrites the server's requests per recipient, may swallow a
client's answers, and may inject requests of its own. The attacker records everything the clients
send, and ``learned_inputs()`` says whose individual input it could now compute: it reconstructs
every secret it holds t shares of (verified against the owner's commitment or advertised key)
and unmasks any masked input whose self mask and every pairwise mask it can remove. An attack has
failed when the honest clients refused it by name, or when it learned no input.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


from secagg.codec import decode, encode
from secagg.crypto import kex, shamir
from secagg.crypto.randomness import DeterministicRandom
from secagg.messages import (
    AdvertiseKeys,
    ConsistencyCheck,
    MaskedInput,
    Message,
    ShareKeys,
    SurvivorSignature,
    UnmaskRequest,
    UnmaskResponse,
)
from secagg.protocol.client import self_mask_commitment
from secagg.protocol.rounds import STAGE_ORDER
from secagg.sim import scenario

from harness import Harness


class Attack:
    """Default: relay everything unchanged. Subclasses override the hooks."""

    def request(self, msg: Message, mal: MaliciousServer) -> list[Message]:
        return [msg]

    def response(self, msg: Message, mal: MaliciousServer) -> bool:
        """Whether to pass a client's answer on to the server."""
        return True


@dataclass
class Seen:
    adverts: dict[int, AdvertiseKeys] = field(default_factory=dict)
    commitments: dict[int, bytes] = field(default_factory=dict)
    masked: dict[int, MaskedInput] = field(default_factory=dict)
    masked_with: dict[int, tuple[int, ...]] = field(default_factory=dict)  # u -> peers in its request
    signatures: dict[int, bytes] = field(default_factory=dict)  # ConsistencyCheck, by signer
    self_shares: dict[int, dict[int, bytes]] = field(default_factory=dict)  # owner -> holder -> share
    key_shares: dict[int, dict[int, bytes]] = field(default_factory=dict)


class MaliciousServer:
    def __init__(self, config, attack: Attack, *, label: str, schedule=None, **kw) -> None:
        self.config = config
        self.attack = attack
        self.seen = Seen()
        self.h = Harness(config, label=label, schedule=schedule, tamper=self._relay, **kw)
        self.session = self.h.server._session  # public: a hash of the signed config

    # --- the attacker's position: every frame passes here ------------------------------------

    def _relay(self, sender: int, recipient: int, frame: bytes) -> list[bytes]:
        msg = decode(frame)
        if sender == 0:
            out = self.attack.request(msg, self)
            for m in out:
                self._note_request(m)
            return [encode(m) for m in out]
        self._note_response(msg)
        return [frame] if self.attack.response(msg, self) else []

    def inject(self, recipient: int, msg: Message) -> None:
        """Send a request of the attacker's own making to ``recipient`` now."""
        self._note_request(msg)
        self.h.router.deliver(0, recipient, encode(msg))

    def _note_request(self, msg: Message) -> None:
        if msg.name == "MaskedInputRequest":
            self.seen.masked_with[msg.recipient] = tuple(e.peer for e in msg.encrypted_shares)

    def _note_response(self, msg: Message) -> None:
        s = self.seen
        if isinstance(msg, AdvertiseKeys):
            s.adverts[msg.sender] = msg
        elif isinstance(msg, ShareKeys):
            s.commitments[msg.sender] = msg.self_mask_commitment
        elif isinstance(msg, MaskedInput):
            s.masked[msg.sender] = msg
        elif isinstance(msg, ConsistencyCheck):
            s.signatures[msg.sender] = msg.signature
        elif isinstance(msg, UnmaskResponse):
            for r in msg.self_mask_shares:
                s.self_shares.setdefault(r.peer, {})[msg.sender] = r.share
            for r in msg.key_shares:
                s.key_shares.setdefault(r.peer, {})[msg.sender] = r.share

    # --- running and judging -----------------------------------------------------------------

    def run(self) -> MaliciousServer:
        self.h.run()
        return self

    @property
    def refusals(self) -> dict:
        return self.h.router.refusals

    def _recover(self, shares: dict[int, bytes], check) -> bytes | None:
        t = self.config.threshold
        if len(shares) < t:
            return None
        secret = shamir.reconstruct(sorted(shares.items())[:t], t)
        return secret if check(secret) else None

    def secrets(self) -> tuple[dict[int, bytes], dict[int, bytes]]:
        """The self-mask seeds and mask private keys the attacker can reconstruct and verify."""
        s = self.seen
        seeds = {u: b for u, shares in s.self_shares.items()
                 if u in s.commitments and (b := self._recover(
                     shares, lambda x, u=u: self_mask_commitment(x, self.session, u) == s.commitments[u]))}
        keys = {u: k for u, shares in s.key_shares.items()
                if u in s.adverts and (k := self._recover(
                    shares, lambda x, u=u: kex.public_key(x) == s.adverts[u].mask_key))}
        return seeds, keys

    def learned_inputs(self) -> list[int]:
        """Clients whose masked input the attacker holds and can strip of every mask: it knows
        b_u, and for each peer v that u masked with, s_u or s_v."""
        seeds, keys = self.secrets()
        return [u for u in sorted(self.seen.masked)
                if u in seeds and all(u in keys or v in keys for v in self.seen.masked_with.get(u, ()))]

    def clients_holding_both(self) -> list[int]:
        seeds, keys = self.secrets()
        return sorted(set(seeds) & set(keys) & set(self.seen.masked))


def victim(config, schedule) -> int:
    """The client attacked: the lowest id that never drops."""
    return next(c for c in config.clients if c not in (schedule or {}))


def dropout_schedule(config, rate: float, label: str) -> dict[int, int]:
    """``sim.scenario.dropout_schedule`` ("mixed" stages, seeded by ``label``) as the harness's
    client -> index of the first silent round."""
    seed = int.from_bytes(DeterministicRandom(label)(4), "big")
    return {c: STAGE_ORDER.index(stage)
            for c, stage in scenario.dropout_schedule(config.num_clients, rate, "mixed", seed).items()}


def holders(config, u: int) -> list[int]:
    return sorted(config.graph.neighbours(u))


def unmask_request_for(mal: MaliciousServer, r: int, survivors: frozenset[int], signers: list[int]) -> UnmaskRequest:
    """The UnmaskRequest an attacker makes for client r to match the survivor set ``survivors``,
    carrying the ConsistencyCheck signatures of ``signers`` (captured from their answers)."""
    held = [p for p in mal.seen.masked_with.get(r, ()) if p != r]
    cfg = mal.config
    return UnmaskRequest(
        session_id=cfg.session_id, round=cfg.round, sender=0, recipient=r,
        survivors=tuple(p for p in held if p in survivors),
        dropped=tuple(p for p in held if p not in survivors),
        consistency=tuple(SurvivorSignature(p, mal.seen.signatures[p]) for p in sorted(signers)),
    )


__all__ = ["Attack", "MaliciousServer", "dropout_schedule", "holders", "replace", "unmask_request_for", "victim"]
