"""The client registry: which client ids hold which Ed25519 keys. The deployment's trust root.

Theory of operation. The enrolment service owns the registry and writes it; the aggregation
server opens it read-only (``Registry.open_read_only``, an SQLite ``mode=ro`` URI, so a
compromised server process cannot add a Sybil or un-revoke a client through this handle;
DEPLOY.md "Authenticated protocol"). The file pins the CA whose certificate it was created
with; opening it with another CA is refused.

Enrolment admits a client only with a certificate from that CA naming its id (checked by
``verify_client_certificate``) and only within ``EnrolmentLimits``. SecAgg's guarantees are
stated for a fraction of corrupt clients (the parameter finder's adversarial rate), so the
registry's job is to keep that fraction honest: an attacker who could enrol thousands of ids
would own any threshold. The limits bound that cost: each enrolment token admits at most
``max_per_token`` clients, at most ``max_per_window`` clients enrol in any ``window_seconds``
(a sliding window, checked at each enrolment), and each client declares at least
``min_declared_examples`` training examples (an operator can audit a declaration; an empty
client adds nothing but a vote). Tokens are stored as SHA-256 digests, never in clear.
Revoked enrolments are kept, so they still count against their token and the window, and their
key can never be enrolled again.

A client id holds at most one unrevoked enrolment (a partial unique index). Enrolling it again
with the same key renews its certificate; with another key it is refused until the old one is
revoked.

``verify_key`` answers for one client, ``enrolled`` for a round's clients in one query. Both
re-check the stored certificate against the pinned CA, its validity at ``now`` and its key
against the stored key, so that a registry file edited behind the enrolment service's back
(a swapped key) is caught: the answer is ``mismatched``/``untrusted``, never a wrong key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from secagg.storage import SQLiteStore, open_versioned, write_transaction
from secagg.errors import ConfigurationError, EnrolmentRefused, IdentityError, RegistryError
from secagg.identity.ca import _aware, _check_id, load_certificate, verify_client_certificate

SCHEMA_VERSION = 1
MEMORY = ":memory:"
_CACHE_LIMIT = 1 << 17

_SCHEMA = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE enrolments (
    enrolment_id      INTEGER PRIMARY KEY,
    client_id         INTEGER NOT NULL CHECK (client_id >= 1),
    public_key        BLOB NOT NULL CHECK (length(public_key) = 32),
    certificate       BLOB NOT NULL,          -- DER
    not_before        REAL NOT NULL,          -- POSIX seconds, from the certificate
    not_after         REAL NOT NULL,
    token_sha256      BLOB NOT NULL CHECK (length(token_sha256) = 32),
    declared_examples INTEGER NOT NULL,
    enrolled_at       REAL NOT NULL,
    revoked_at        REAL,
    revoke_reason     TEXT
);
CREATE UNIQUE INDEX enrolments_one_active ON enrolments (client_id) WHERE revoked_at IS NULL;
CREATE INDEX enrolments_by_client ON enrolments (client_id, enrolment_id);
CREATE INDEX enrolments_by_token ON enrolments (token_sha256);
CREATE INDEX enrolments_by_time ON enrolments (enrolled_at);
CREATE INDEX enrolments_by_key ON enrolments (public_key);
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrolmentLimits:
    """Bounds on enrolment that make bulk Sybil registration slow and costly."""

    max_per_token: int = 1
    window_seconds: float = 3600.0
    max_per_window: int = 100
    min_declared_examples: int = 1

    def __post_init__(self) -> None:
        for name in ("max_per_token", "max_per_window"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"EnrolmentLimits.{name} must be at least 1, got "
                                         f"{getattr(self, name)} (no client could ever enrol)")
        if not self.window_seconds > 0:
            raise ConfigurationError(f"EnrolmentLimits.window_seconds must be positive, got {self.window_seconds}")
        if self.min_declared_examples < 0:
            raise ConfigurationError(f"EnrolmentLimits.min_declared_examples must be at least 0, "
                                     f"got {self.min_declared_examples}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Enrolment:
    client_id: int
    public_key: bytes
    not_before: dt.datetime
    not_after: dt.datetime
    enrolled_at: dt.datetime
    renewed: bool = False


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def _ts(when: dt.datetime) -> float:
    return when.timestamp()


def _dt(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc)


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


class Registry(SQLiteStore):
    """An SQLite registry of enrolled clients. ``Registry(path, ca_certificate=..., limits=...)``
    opens it for enrolment (creating it if new); ``Registry.open_read_only(path)`` for lookups."""

    def __init__(self, path: str | Path, *, ca_certificate: x509.Certificate | bytes | str,
                 limits: EnrolmentLimits = EnrolmentLimits()) -> None:
        ca = load_certificate(ca_certificate)
        self.path = str(path)
        self.limits = limits
        self.read_only = False
        self._verified: dict[bytes, tuple[int, bytes, float, float]] = {}
        self._db = open_versioned(
            self.path, schema=_SCHEMA, version=SCHEMA_VERSION, what="secagg registry", error=RegistryError,
            on_create=lambda db: db.execute("INSERT INTO meta VALUES ('ca_certificate', ?)", (_der(ca),)))
        self.ca_certificate = self._pinned_ca(ca)

    def __deepcopy__(self, memo) -> Registry:
        """A copied party (a test's snapshot) shares the registry: it is an external trust root,
        like a service, not part of any party's state."""
        return self

    @classmethod
    def open_read_only(cls, path: str | Path, *, ca_certificate: x509.Certificate | bytes | str | None = None
                       ) -> Registry:
        """Open an existing registry for lookups only. With ``ca_certificate`` the file must pin
        that CA (recommended: the server then trusts its own copy of the CA, not the file's)."""
        if str(path) == MEMORY:
            raise ConfigurationError("an in-memory registry cannot be opened read-only; pass the Registry itself")
        file = Path(path)
        if not file.is_file():
            raise RegistryError(f"registry {file} not found")
        self = cls.__new__(cls)
        self.path, self.limits, self.read_only = str(path), None, True
        self._verified = {}
        self._db = sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout = 5000")
        self.ca_certificate = self._pinned_ca(None if ca_certificate is None else load_certificate(ca_certificate))
        return self

    def _pinned_ca(self, expected: x509.Certificate | None) -> x509.Certificate:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise RegistryError(f"registry {self.path} has schema version {version}; this code reads "
                                f"version {SCHEMA_VERSION}")
        row = self._db.execute("SELECT value FROM meta WHERE key = 'ca_certificate'").fetchone()
        stored = load_certificate(row[0])
        if expected is not None and _der(expected) != _der(stored):
            raise RegistryError(f"registry {self.path} was created for CA "
                                f"{stored.subject.rfc4514_string()!r}, not {expected.subject.rfc4514_string()!r}")
        return stored

    # -- transactions -------------------------------------------------------------------------

    def _write(self) -> write_transaction:
        if self.read_only:
            raise RegistryError(f"registry {self.path} is open read-only: enrolment and revocation "
                                f"belong to the enrolment service, not the aggregation server")
        # Taken before the limit checks read the counts: two enrolment processes cannot both see
        # room for one more.
        return write_transaction(self._db)

    # -- enrolment ----------------------------------------------------------------------------

    def enroll(self, client_id: int, certificate_pem: bytes | str | x509.Certificate, *, token: str,
               declared_examples: int, now: dt.datetime | None = None) -> Enrolment:
        """Record ``client_id``'s certificate, or raise ``EnrolmentRefused`` saying which rule."""
        now = _aware(now)
        _check_id(client_id)
        if self.read_only:
            self._write()
        limits = self.limits

        def refuse(what: str, reason: str) -> EnrolmentRefused:
            return EnrolmentRefused(f"client {client_id}: enrolment refused: {what}", client=client_id,
                                    reason=reason)

        if not isinstance(token, str) or not token:
            raise refuse("an enrolment token is required", "token")
        if isinstance(declared_examples, bool) or not isinstance(declared_examples, int):
            raise refuse(f"declared examples must be an integer, got {declared_examples!r}", "examples")
        if declared_examples < limits.min_declared_examples:
            raise refuse(f"declares {declared_examples} training examples; at least "
                         f"{limits.min_declared_examples} are required", "examples")
        try:
            _, public = verify_client_certificate(certificate_pem, self.ca_certificate, at=now,
                                                  client_id=client_id)
        except IdentityError as exc:
            raise refuse(f"certificate {exc.reason}: {exc}", f"certificate {exc.reason}") from exc
        cert = load_certificate(certificate_pem)
        key = public.public_bytes_raw()
        digest = token_digest(token)
        t = _ts(now)
        record = Enrolment(client_id=client_id, public_key=key, not_before=cert.not_valid_before_utc,
                           not_after=cert.not_valid_after_utc, enrolled_at=now)

        with self._write() as db:
            active = db.execute("SELECT enrolment_id, public_key FROM enrolments "
                                "WHERE client_id = ? AND revoked_at IS NULL", (client_id,)).fetchone()
            if active is not None:
                if active[1] != key:
                    raise refuse("already enrolled with another key; revoke that enrolment first",
                                 "already enrolled")
                db.execute("UPDATE enrolments SET certificate = ?, not_before = ?, not_after = ? "
                           "WHERE enrolment_id = ?",
                           (_der(cert), _ts(record.not_before), _ts(record.not_after), active[0]))
                return Enrolment(client_id=client_id, public_key=key, not_before=record.not_before,
                                 not_after=record.not_after, enrolled_at=now, renewed=True)
            other = db.execute("SELECT client_id, revoked_at FROM enrolments WHERE public_key = ? "
                               "ORDER BY revoked_at IS NULL DESC LIMIT 1", (key,)).fetchone()
            if other is not None:
                if other[1] is not None:
                    raise refuse(f"this key was revoked (as client {other[0]}) and cannot be enrolled "
                                 f"again; generate a new key", "revoked key")
                raise refuse(f"this key is already enrolled as client {other[0]}", "key in use")
            used = db.execute("SELECT count(*) FROM enrolments WHERE token_sha256 = ?",
                              (digest,)).fetchone()[0]
            if used >= limits.max_per_token:
                raise refuse(f"the enrolment token has already admitted {used} of its "
                             f"{limits.max_per_token} allowed clients", "token limit")
            recent = db.execute("SELECT count(*) FROM enrolments WHERE enrolled_at > ?",
                                (t - limits.window_seconds,)).fetchone()[0]
            if recent >= limits.max_per_window:
                raise refuse(f"{recent} clients enrolled in the last {limits.window_seconds:g} s; at "
                             f"most {limits.max_per_window} may enrol in any such window (try later)",
                             "window limit")
            db.execute("INSERT INTO enrolments (client_id, public_key, certificate, not_before, "
                       "not_after, token_sha256, declared_examples, enrolled_at) VALUES (?,?,?,?,?,?,?,?)",
                       (client_id, key, _der(cert), _ts(record.not_before), _ts(record.not_after),
                        digest, declared_examples, t))
        return record

    def revoke(self, client_id: int, reason: str, *, now: dt.datetime | None = None) -> None:
        """Revoke ``client_id``'s enrolment; ``verify_key`` refuses it from then on."""
        now = _aware(now)
        if not isinstance(reason, str) or not reason.strip():
            raise RegistryError(f"client {client_id}: a revocation needs a reason", client=client_id)
        with self._write() as db:
            done = db.execute("UPDATE enrolments SET revoked_at = ?, revoke_reason = ? "
                              "WHERE client_id = ? AND revoked_at IS NULL",
                              (_ts(now), reason, client_id)).rowcount
            if done == 0:
                raise RegistryError(f"client {client_id}: no enrolment to revoke (unknown or already "
                                    f"revoked)", client=client_id)

    # -- lookups ------------------------------------------------------------------------------

    def _check(self, client_id: int, key: bytes, der: bytes, not_before: float, not_after: float,
               revoked_at: float | None, revoke_reason: str | None, now: dt.datetime,
               check_certificate: bool) -> bytes:
        if revoked_at is not None:
            raise IdentityError(f"client {client_id}: revoked at {_dt(revoked_at).isoformat()} "
                                f"({revoke_reason})", client=client_id, reason="revoked")
        if check_certificate:
            # A certificate that verified once verifies again (its bytes include the CA's
            # signature); only its validity window is re-checked per call, and from the
            # certificate itself, not from columns an editor of the file could change.
            facts = self._verified.get(der)
            if facts is None or facts[0] != client_id:
                cert = load_certificate(der, client=client_id)
                _, public = verify_client_certificate(cert, self.ca_certificate, at=now, client_id=client_id)
                if len(self._verified) >= _CACHE_LIMIT:
                    self._verified.clear()
                ca = self.ca_certificate
                facts = (client_id, public.public_bytes_raw(),
                         _ts(max(cert.not_valid_before_utc, ca.not_valid_before_utc)),
                         _ts(min(cert.not_valid_after_utc, ca.not_valid_after_utc)))
                self._verified[der] = facts
            _, cert_key, not_before, not_after = facts
            if cert_key != key:
                raise IdentityError(f"client {client_id}: registered key does not match its certificate",
                                    client=client_id, reason="mismatched")
        t = _ts(now)
        if t < not_before:
            raise IdentityError(f"client {client_id}: certificate not valid before "
                                f"{_dt(not_before).isoformat()}", client=client_id, reason="not yet valid")
        if t > not_after:
            raise IdentityError(f"client {client_id}: certificate expired at {_dt(not_after).isoformat()}",
                                client=client_id, reason="expired")
        return bytes(key)

    _COLUMNS = "client_id, public_key, certificate, not_before, not_after, revoked_at, revoke_reason"

    def verify_key(self, client_id: int, *, now: dt.datetime | None = None,
                   check_certificate: bool = True) -> bytes:
        """The raw 32-byte Ed25519 key of an enrolled, unrevoked client whose certificate is valid
        at ``now``; else ``IdentityError`` naming the client and why (``reason``: unknown, revoked,
        expired, not yet valid, mismatched, untrusted)."""
        now = _aware(now)
        row = self._db.execute(f"SELECT {self._COLUMNS} FROM enrolments WHERE client_id = ? "
                               f"ORDER BY revoked_at IS NULL DESC, enrolment_id DESC LIMIT 1",
                               (client_id,)).fetchone()
        if row is None:
            raise IdentityError(f"client {client_id}: not enrolled in the registry", client=client_id,
                                reason="unknown")
        return self._check(*row, now, check_certificate)

    def enrolled(self, client_ids, *, now: dt.datetime | None = None,
                 check_certificate: bool = True) -> dict[int, bytes]:
        """``{client id: raw key}`` for those of ``client_ids`` that ``verify_key`` would accept,
        in one query. Ask ``verify_key`` about a missing id for the reason."""
        now = _aware(now)
        ids = [int(c) for c in client_ids]
        rows = self._db.execute(
            f"SELECT {self._COLUMNS} FROM enrolments WHERE revoked_at IS NULL "
            f"AND client_id IN (SELECT value FROM json_each(?))", (json.dumps(ids),)).fetchall()
        keys = {}
        for row in rows:
            try:
                keys[row[0]] = self._check(*row, now, check_certificate)
            except IdentityError:
                pass
        return keys

    def certificate(self, client_id: int) -> x509.Certificate:
        """The certificate of ``client_id``'s unrevoked enrolment (for mTLS pinning, audits)."""
        row = self._db.execute("SELECT certificate FROM enrolments WHERE client_id = ? AND revoked_at "
                               "IS NULL", (client_id,)).fetchone()
        if row is None:
            raise IdentityError(f"client {client_id}: no unrevoked enrolment", client=client_id,
                                reason="unknown")
        return load_certificate(row[0], client=client_id)

    def __len__(self) -> int:
        return self._db.execute("SELECT count(*) FROM enrolments WHERE revoked_at IS NULL").fetchone()[0]
