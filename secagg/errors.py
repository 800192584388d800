"""One error hierarchy for the whole library.

Split the way h11 splits it: ``LocalProtocolError`` means *this* side was misused (bad
configuration, bad input, an API call in the wrong state); ``RemoteProtocolError`` means a peer
sent something the protocol does not allow. Every error carries the client id, the round number,
the protocol phase (the round's name: AdvertiseKeys, ShareKeys, ...) and the party's state as
attributes, and says them in words.

The server never raises for a peer's fault: it blames the peer, excludes it, and keeps the
``RemoteProtocolError`` in ``Server.excluded``. A client raises when it refuses a request.

Cryptographic failures are deliberately uninformative (Fernet's ``InvalidToken`` rule): a failed
decryption says only that it failed, never which check.
"""

from __future__ import annotations

from collections.abc import Iterable


class SecAggError(Exception):
    """Root of every error secagg raises."""

    def __init__(
        self,
        message: str,
        *,
        client: int | None = None,
        round: int | None = None,
        state: str | None = None,
        phase: str | None = None,
    ) -> None:
        super().__init__(message)
        self.client = client
        self.round = round
        self.state = state
        self.phase = phase


class LocalProtocolError(SecAggError):
    """This side was misused: an API call in the wrong state, or a bad local argument."""


class ConfigurationError(LocalProtocolError):
    """A configuration that cannot work, refused before anything is sent.

    The message names the smallest change that would make it work.
    """


class InvalidInput(LocalProtocolError):
    """A client's input vector is unusable (NaN, wrong shape or dtype, out of the declared range)."""


class PrivacyBudgetExhausted(LocalProtocolError):
    """Taking part in this round would exceed the client's privacy budget; it sends nothing."""


class RegistryError(LocalProtocolError):
    """The client registry was misused: a write through a read-only handle, an unknown client
    revoked, a file whose schema version or CA this code does not recognise."""


class EnrolmentRefused(RegistryError):
    """The registry refused to enrol a client: an enrolment limit (per token, per time window,
    minimum declared examples), a client id already bound to another key, or a certificate that
    does not verify. ``reason`` names the rule in a few words."""

    def __init__(self, message: str, *, client: int | None = None, reason: str) -> None:
        super().__init__(message, client=client)
        self.reason = reason


class RemoteProtocolError(SecAggError):
    """A peer sent something the protocol does not allow."""


class MalformedMessage(RemoteProtocolError):
    """Bytes that do not decode to a valid message (truncated, oversized, wrong types)."""


class UnexpectedMessage(RemoteProtocolError):
    """A well-formed message that the transition table does not allow here (wrong round, replay)."""


class InconsistentRequest(RemoteProtocolError):
    """An honest client refuses a server request that contradicts what it saw."""


class Equivocation(RemoteProtocolError):
    """Two different frames for one slot (one party, one round): the sender is blamed."""


class WeakConfig(InconsistentRequest):
    """A round config weaker than the parameter finder gives for its n and adversary class (a
    lowered degree or threshold, 2t <= k), or of a weaker adversary class than the client demands."""


class ReplayedRound(InconsistentRequest):
    """A round config for a (session, round) the client already took part in, or older: a server
    replaying an old round to make the client contribute twice under fresh masks."""


class InvalidPublicKey(RemoteProtocolError):
    """An advertised key that is not a canonical X25519 point, or is a low-order point."""


class BadSignature(RemoteProtocolError):
    """A signature that does not verify under the signer's registered identity key, a missing
    one in an authenticated round, or a signer the registry does not vouch for."""


class BadShare(RemoteProtocolError):
    """A revealed Shamir share that does not lie on its secret's polynomial, or a share
    ciphertext that does not open: the client that made it is blamed."""


class IdentityError(RemoteProtocolError):
    """A client's identity does not check out: its certificate is malformed, not issued by the
    deployment's CA, expired or not yet valid, or names another client; or the registry does not
    hold a usable key for it (unknown, revoked, expired, mismatched). ``reason`` is one of
    ``IDENTITY_REASONS``; the message names the client and what failed."""

    def __init__(self, message: str, *, client: int | None = None, reason: str) -> None:
        super().__init__(message, client=client)
        self.reason = reason


IDENTITY_REASONS = ("malformed", "untrusted", "expired", "not yet valid", "mismatched", "unknown",
                    "revoked")


class WorkerFailed(SecAggError):
    """A worker process (the simulator's clients, or the server's unmasking pool) failed or
    vanished: a bug or the machine, not a peer's fault."""


class CryptoError(SecAggError):
    """A cryptographic check failed. Deliberately says nothing about which check."""


class ShamirError(SecAggError):
    """Shares that cannot be used: too few, duplicated, out of range or of the wrong length."""


class RoundAborted(SecAggError):
    """The round ended without a result. ``reason`` says why; ``unrecoverable`` names clients;
    ``cause`` is one of ``ABORT_CAUSES``, the kind of reason in a word (for metrics and logs,
    whose labels must not carry free text)."""

    def __init__(
        self,
        message: str,
        *,
        round: int | None = None,
        state: str | None = None,
        phase: str | None = None,
        unrecoverable: Iterable[int] = (),
        cause: str = "other",
    ) -> None:
        super().__init__(message, round=round, state=state, phase=phase or state)
        self.reason = message
        self.unrecoverable = tuple(sorted(unrecoverable))
        self.cause = cause


# too_few_clients: fewer than min_contributors left after a phase; too_few_holders: a needed
# secret has fewer than t live holders of its shares; too_few_signatures: fewer than t survivor-set
# signatures (authenticated); unrecoverable_secret: shares that do not recover a secret that
# verifies.
ABORT_CAUSES = ("too_few_clients", "too_few_holders", "too_few_signatures", "unrecoverable_secret",
                "other")


class UnsupportedModelArray(InvalidInput):
    """A model array whose dtype has no canonical byte encoding (object, complex, string,
    structured, datetime), or a model whose names or shape cannot be encoded."""


class ModelSignatureError(SecAggError):
    """A global model the operator did not sign as presented: the client must not train on it.

    ``model_id`` and ``round`` are the values the model claims (or ``None`` if unknown).
    Unlike ``CryptoError`` the message names what failed: the checks are on public data
    (an operator's signature over a public digest), so naming them gives nothing away.
    """

    def __init__(self, message: str, *, round: int | None = None, model_id: str | None = None) -> None:
        super().__init__(message, round=round)
        self.model_id = model_id


class UnsignedModel(ModelSignatureError):
    """No signature came with the model (or the signature record is empty or unreadable)."""


class ModelDigestMismatch(ModelSignatureError):
    """The arrays (or files) differ from those the operator signed: the model was tampered with."""


class BadModelSignature(ModelSignatureError):
    """The signature does not verify under the operator's public key (another key, or forged)."""


class StaleModel(ModelSignatureError):
    """A correctly signed model for another round: older than the client accepts, or a replay."""


class ModelIdMismatch(ModelSignatureError):
    """A correctly signed model, but of another model id than the client trains."""


class SigningUnavailable(ConfigurationError):
    """Directory signing needs the optional ``model-signing`` package (``pip install secagg[signing]``)."""
