"""The deployment's certificate authority: binds a client id to a long-term Ed25519 key.

Theory of operation. One Ed25519 key pair is the deployment's CA; its self-signed certificate is
the only anchor. A client certificate is issued straight by the CA (a one-hop chain: no
intermediates, so path building is a single signature check) and says exactly one thing: the
holder of this Ed25519 key is client ``N``. N is written twice, as the subject common name (the
decimal id) and as a SubjectAlternativeName URI ``urn:secagg:client:N`` (RFC 5280 4.2.1.6 makes
the SAN the place for identities; the CN is what people and mosquitto's
``use_identity_as_username`` read); the two must agree. KeyUsage digitalSignature and
ExtendedKeyUsage clientAuth make the same certificate usable for mTLS on the MQTT transport.

The same CA also issues the two certificates the MQTT transport needs besides the clients'
(``secagg.transport.broker``): the broker's TLS server certificate (serverAuth, its host names
and addresses as DNS and IP SANs) and the aggregation server's client certificate, a named
service (CN ``secagg-server``, SAN ``urn:secagg:service:secagg-server``, clientAuth). A service
name is never a decimal number, so no service certificate passes for a client's.

``verify_client_certificate`` checks, in order: that the bytes are a certificate, that the CA
signed it (issuer name, Ed25519 signature over the TBS bytes), that both certificates are valid
at the given instant, and that the profile holds (end entity, the id in CN and SAN agree, the
key is Ed25519). Each refusal is an ``IdentityError`` whose ``reason`` names the failed check and
whose message names the client.

Key files: the CA private key is written PKCS#8 PEM with mode 0600, encrypted with the best
available scheme when a passphrase is given; an existing key file is never overwritten.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, SignatureAlgorithmOID

from secagg.errors import ConfigurationError, IdentityError

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
CLIENT_URI_PREFIX = "urn:secagg:client:"
SERVICE_URI_PREFIX = "urn:secagg:service:"
# Client ids are 1..2^32 - 1 on the wire; 0 is the server (spec section 1, secagg.messages).
MAX_CLIENT_ID = 2**32 - 1


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _aware(at: dt.datetime | None) -> dt.datetime:
    if at is None:
        return _utcnow()
    if at.tzinfo is None:
        raise ConfigurationError(f"time {at.isoformat()} has no time zone: pass an aware datetime (UTC)")
    return at


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 and write ``data``; refuse to replace an existing file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigurationError(f"{path} exists: refusing to overwrite a private key "
                                 f"(move it away, or choose another directory)") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def private_key_pem(key: Ed25519PrivateKey, passphrase: bytes | None) -> bytes:
    encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def load_private_key(data: bytes, passphrase: bytes | None, what: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=passphrase or None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"{what}: cannot load the private key ({exc}); "
                                 f"check the passphrase") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"{what}: the private key is {type(key).__name__}, not Ed25519")
    return key


def load_certificate(data: bytes | str | x509.Certificate, *, client: int | None = None) -> x509.Certificate:
    """A certificate from PEM or DER bytes (or one already loaded); ``IdentityError`` if neither."""
    if isinstance(data, x509.Certificate):
        return data
    if isinstance(data, str):
        data = data.encode("ascii", errors="replace")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        who = f"client {client}" if client is not None else "a client"
        raise IdentityError(f"{who}: certificate is malformed ({exc})", client=client,
                            reason="malformed") from None


def _one_name(name: x509.Name) -> str | None:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(values) != 1 or not isinstance(values[0].value, str):
        return None
    return values[0].value


def _parse_id(text: str | None) -> int | None:
    # Canonical decimal only: "017", "+17" or " 17" would let two names denote one client.
    if text is None or not text.isascii() or not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        return None
    value = int(text)
    return value if 1 <= value <= MAX_CLIENT_ID else None


def _check_id(client_id: int) -> None:
    if isinstance(client_id, bool) or not isinstance(client_id, int) or not 1 <= client_id <= MAX_CLIENT_ID:
        raise ConfigurationError(f"client id must be an integer in [1, {MAX_CLIENT_ID}] (0 is the "
                                 f"server), got {client_id!r}")


def as_public_key(key: Ed25519PublicKey | bytes) -> Ed25519PublicKey:
    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, (bytes, bytearray)) and len(key) == 32:
        return Ed25519PublicKey.from_public_bytes(bytes(key))
    raise ConfigurationError(f"client public key must be an Ed25519PublicKey or 32 raw bytes, got {key!r:.60}")


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """The deployment CA: an Ed25519 key and its self-signed certificate."""

    private_key: Ed25519PrivateKey
    certificate: x509.Certificate

    @property
    def name(self) -> str:
        return _one_name(self.certificate.subject) or self.certificate.subject.rfc4514_string()

    @classmethod
    def create(cls, name: str, *, valid_days: int, path: str | Path | None = None,
               passphrase: bytes | None = None, now: dt.datetime | None = None,
               private_key: Ed25519PrivateKey | None = None) -> CertificateAuthority:
        """A fresh CA valid from ``now`` for ``valid_days``; saved under ``path`` if given.

        ``private_key`` is the deterministic path (tests, vectors); by default a new key from
        the OS CSPRNG.
        """
        if not name:
            raise ConfigurationError("CA name must not be empty")
        if valid_days < 1:
            raise ConfigurationError(f"CA validity must be at least 1 day, got {valid_days}")
        now = _aware(now)
        key = private_key or Ed25519PrivateKey.generate()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        public = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, algorithm=None)
        )
        ca = cls(private_key=key, certificate=cert)
        if path is not None:
            ca.save(path, passphrase=passphrase)
        return ca

    def save(self, directory: str | Path, *, passphrase: bytes | None = None) -> tuple[Path, Path]:
        """Write ``ca.pem`` (certificate) and ``ca.key`` (mode 0600) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        key_path, cert_path = directory / CA_KEY_FILE, directory / CA_CERT_FILE
        write_private(key_path, private_key_pem(self.private_key, passphrase))
        cert_path.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        return cert_path, key_path

    @classmethod
    def load(cls, directory: str | Path, *, passphrase: bytes | None = None) -> CertificateAuthority:
        directory = Path(directory)
        key_path, cert_path = directory / CA_KEY_FILE, directory / CA_CERT_FILE
        for p in (key_path, cert_path):
            if not p.is_file():
                raise ConfigurationError(f"{p} not found: create the CA with `secagg ca init --out {directory}`")
        key = load_private_key(key_path.read_bytes(), passphrase, str(key_path))
        cert = load_certificate(cert_path.read_bytes())
        if cert.public_key() != key.public_key():
            raise ConfigurationError(f"{cert_path} does not belong to the key in {key_path}")
        return cls(private_key=key, certificate=cert)

    def issue_client_certificate(self, client_id: int, client_public_key: Ed25519PublicKey | bytes, *,
                                 valid_days: int, now: dt.datetime | None = None) -> x509.Certificate:
        """A certificate binding ``client_id`` to ``client_public_key`` (Ed25519), signed by the CA."""
        _check_id(client_id)
        return self._issue(str(client_id), as_public_key(client_public_key),
                           [x509.UniformResourceIdentifier(f"{CLIENT_URI_PREFIX}{client_id}")],
                           ExtendedKeyUsageOID.CLIENT_AUTH, valid_days=valid_days, now=now)

    def issue_server_certificate(self, public_key: Ed25519PublicKey | EllipticCurvePublicKey, *,
                                 hosts: Sequence[str] = ("localhost", "127.0.0.1"), valid_days: int,
                                 now: dt.datetime | None = None) -> x509.Certificate:
        """A TLS server certificate (serverAuth) for a service reached under ``hosts``, e.g. the
        MQTT broker. Each host that parses as an IP address becomes an IP SAN, any other a DNS
        SAN; the common name is the first host. Ed25519 or ECDSA P-256 keys."""
        if not hosts:
            raise ConfigurationError("a server certificate needs at least one host name or address")
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        return self._issue(hosts[0], _service_key(public_key, hosts[0]), names,
                           ExtendedKeyUsageOID.SERVER_AUTH, valid_days=valid_days, now=now)

    def issue_service_certificate(self, name: str, public_key: Ed25519PublicKey | EllipticCurvePublicKey, *,
                                  valid_days: int, now: dt.datetime | None = None) -> x509.Certificate:
        """A TLS client certificate (clientAuth) for a named service, e.g. ``secagg-server``, the
        aggregation server's identity at the MQTT broker (``use_identity_as_username`` makes the
        common name its user name there).

        The name must not be a decimal number: those name clients, and a service certificate
        must never pass for one (``verify_client_certificate`` refuses it, since it carries no
        ``urn:secagg:client:`` URI either).
        """
        if not name or not name.isascii() or not name.isprintable() or name.isdigit() or any(
                c in name for c in "/+#"):
            raise ConfigurationError(f"service name {name!r}: use printable ASCII that is not a "
                                     f"decimal number (client ids are) and has no '/', '+' or '#' "
                                     f"(it becomes an MQTT user name), e.g. 'secagg-server'")
        return self._issue(name, _service_key(public_key, name),
                           [x509.UniformResourceIdentifier(f"{SERVICE_URI_PREFIX}{name}")],
                           ExtendedKeyUsageOID.CLIENT_AUTH, valid_days=valid_days, now=now)

    def _issue(self, common_name: str, public: Ed25519PublicKey | EllipticCurvePublicKey,
               alt_names: list[x509.GeneralName], usage: x509.ObjectIdentifier, *, valid_days: int,
               now: dt.datetime | None) -> x509.Certificate:
        """An end-entity certificate signed by the CA: one common name, one extended key usage."""
        if valid_days < 1:
            raise ConfigurationError(f"certificate validity must be at least 1 day, got {valid_days}")
        now = _aware(now)
        not_after = min(now + dt.timedelta(days=valid_days), self.certificate.not_valid_after_utc)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.private_key.public_key()), critical=False)
            .sign(self.private_key, algorithm=None)
        )


def _service_key(key, name: str) -> Ed25519PublicKey | EllipticCurvePublicKey:
    if isinstance(key, Ed25519PublicKey) or (isinstance(key, EllipticCurvePublicKey)
                                             and isinstance(key.curve, SECP256R1)):
        return key
    raise ConfigurationError(f"{name}: the certificate key must be Ed25519 or ECDSA P-256, "
                             f"got {type(key).__name__}")


def _refuse(who: int | None, what: str, reason: str, cn: str | None = None) -> IdentityError:
    name = f"client {who}" if who is not None else (f"certificate for {cn!r}" if cn else "a client certificate")
    return IdentityError(f"{name}: {what}", client=who, reason=reason)


def verify_client_certificate(cert: x509.Certificate | bytes | str, ca_cert: x509.Certificate, *,
                              at: dt.datetime | None = None,
                              client_id: int | None = None) -> tuple[int, Ed25519PublicKey]:
    """``(client_id, public key)`` of a certificate the CA issued and that is valid at ``at``.

    With ``client_id`` the certificate must name that client. Raises ``IdentityError`` whose
    ``reason`` is malformed, untrusted, expired, not yet valid or mismatched.
    """
    at = _aware(at)
    cert = load_certificate(cert, client=client_id)
    cn = _one_name(cert.subject)
    claimed = _parse_id(cn)
    who = client_id if client_id is not None else claimed

    # Trust first: nothing else in a certificate the CA did not sign means anything.
    ca_public = ca_cert.public_key()
    if not isinstance(ca_public, Ed25519PublicKey):
        raise ConfigurationError("the CA certificate's key is not Ed25519")
    if cert.issuer != ca_cert.subject or cert.signature_algorithm_oid != SignatureAlgorithmOID.ED25519:
        raise _refuse(who, f"certificate not issued by CA {_one_name(ca_cert.subject)!r} "
                           f"(issuer {cert.issuer.rfc4514_string()!r})", "untrusted", cn)
    try:
        ca_public.verify(cert.signature, cert.tbs_certificate_bytes)
    except InvalidSignature:
        raise _refuse(who, f"certificate signature does not verify under CA "
                           f"{_one_name(ca_cert.subject)!r} (forged or tampered)", "untrusted", cn) from None

    for c, label in ((ca_cert, "the CA certificate"), (cert, "certificate")):
        if at < c.not_valid_before_utc:
            raise _refuse(who, f"{label} not valid before {c.not_valid_before_utc.isoformat()} "
                               f"(checked at {at.isoformat()})", "not yet valid", cn)
        if at > c.not_valid_after_utc:
            raise _refuse(who, f"{label} expired at {c.not_valid_after_utc.isoformat()} "
                               f"(checked at {at.isoformat()})", "expired", cn)

    if claimed is None:
        raise _refuse(who, f"certificate subject {cert.subject.rfc4514_string()!r} is not one "
                           f"common name holding a decimal client id", "mismatched", cn)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    ids = [u for u in uris if u.startswith(CLIENT_URI_PREFIX)]
    if ids != [f"{CLIENT_URI_PREFIX}{claimed}"]:
        raise _refuse(who, f"certificate common name {cn!r} and client URIs {ids} disagree",
                      "mismatched", cn)
    if client_id is not None and claimed != client_id:
        raise _refuse(who, f"certificate names client {claimed}, not {client_id}", "mismatched", cn)
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = basic.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if is_ca:
        raise _refuse(who, "certificate is a CA certificate, not a client's", "mismatched", cn)
    public = cert.public_key()
    if not isinstance(public, Ed25519PublicKey):
        raise _refuse(who, f"certificate key is {type(public).__name__}, not Ed25519", "mismatched", cn)
    return claimed, public
