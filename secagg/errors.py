"""One error hierarchy for the whole library.

Split the way h11 splits it: ``LocalProtocolError`` means *this* side was misused (bad
configuration, bad input, an API call in the wrong state); ``RemoteProtocolError`` means a peer
sent something the protocol does not allow. Every error carries the client id, the round and the
protocol state as attributes, and says them in words.

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
    ) -> None:
        super().__init__(message)
        self.client = client
        self.round = round
        self.state = state


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


class RemoteProtocolError(SecAggError):
    """A peer sent something the protocol does not allow."""


class MalformedMessage(RemoteProtocolError):
    """Bytes that do not decode to a valid message (truncated, oversized, wrong types)."""


class UnexpectedMessage(RemoteProtocolError):
    """A well-formed message that the transition table does not allow here (wrong round, replay)."""


class InconsistentRequest(RemoteProtocolError):
    """An honest client refuses a server request that contradicts what it saw."""


class CryptoError(SecAggError):
    """A cryptographic check failed. Deliberately says nothing about which check."""


class ShamirError(SecAggError):
    """Shares that cannot be used: too few, duplicated, out of range or of the wrong length."""


class RoundAborted(SecAggError):
    """The round ended without a result. ``reason`` says why; ``unrecoverable`` names clients."""

    def __init__(
        self,
        message: str,
        *,
        round: int | None = None,
        state: str | None = None,
        unrecoverable: Iterable[int] = (),
    ) -> None:
        super().__init__(message, round=round, state=state)
        self.reason = message
        self.unrecoverable = tuple(sorted(unrecoverable))
