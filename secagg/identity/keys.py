"""A client's long-term identity key, and the one signature check the protocol makes.

Theory of operation. A client holds one Ed25519 private key for its whole life in the deployment
(Bonawitz et al. 2017, section 6: the active-adversary variant signs each advertised key pair and
the survivor set with it). The CA binds its public key to its id in a certificate
(``secagg.identity.ca``); the registry hands the raw 32-byte public key to whoever verifies.

Signing goes through pyca/cryptography (which also serialises the key as PKCS#8 PEM);
verification through PyNaCl (libsodium), whose ``crypto_sign_open`` refuses small-order keys and
non-canonical signatures and is the faster of the two here. ``verify_signature`` returns a bool
rather than raising because the protocol treats a bad signature as a fact about a peer, to be
turned into that peer's named ``IdentityError``, never as an exception crossing its loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secagg.crypto import sign
from secagg.errors import ConfigurationError
from secagg.identity.ca import _check_id, load_certificate, load_private_key, private_key_pem, write_private

def client_key_file(client_id: int) -> str:
    return f"client-{client_id}.key"


def client_cert_file(client_id: int) -> str:
    return f"client-{client_id}.pem"


def verify_signature(public_key_bytes: bytes, message: bytes, signature: bytes) -> bool:
    """True iff ``signature`` is a valid Ed25519 signature of ``message`` under the raw key
    (``secagg.crypto.sign.verify``: never raises for bad input)."""
    return sign.verify(public_key_bytes, message, signature)


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """A client id, its Ed25519 private key and (once issued) its certificate."""

    client_id: int
    private_key: Ed25519PrivateKey
    certificate: x509.Certificate | None = None

    def __post_init__(self) -> None:
        _check_id(self.client_id)
        if not isinstance(self.private_key, Ed25519PrivateKey):
            raise ConfigurationError(f"client {self.client_id}: identity key must be Ed25519")

    @classmethod
    def generate(cls, client_id: int) -> ClientIdentity:
        """A fresh identity key from the OS CSPRNG."""
        return cls(client_id, Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, client_id: int, seed: bytes) -> ClientIdentity:
        """The deterministic path (test vectors): the key whose RFC 8032 seed is ``seed``."""
        if len(seed) != 32:
            raise ConfigurationError(f"client {client_id}: an Ed25519 seed is 32 bytes, got {len(seed)}")
        return cls(client_id, Ed25519PrivateKey.from_private_bytes(bytes(seed)))

    @property
    def public_key_bytes(self) -> bytes:
        return self.private_key.public_key().public_bytes_raw()

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return self.private_key.sign(bytes(message))

    def with_certificate(self, certificate: x509.Certificate | bytes | str) -> ClientIdentity:
        cert = load_certificate(certificate, client=self.client_id)
        if cert.public_key().public_bytes_raw() != self.public_key_bytes:
            raise ConfigurationError(f"client {self.client_id}: the certificate is for another key")
        return ClientIdentity(self.client_id, self.private_key, cert)

    def save(self, directory: str | Path, *, passphrase: bytes | None = None) -> tuple[Path, Path | None]:
        """Write ``client-<id>.key`` (PKCS#8 PEM, mode 0600) and, if held, ``client-<id>.pem``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        key_path = directory / client_key_file(self.client_id)
        write_private(key_path, private_key_pem(self.private_key, passphrase))
        cert_path = None
        if self.certificate is not None:
            cert_path = directory / client_cert_file(self.client_id)
            cert_path.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        return key_path, cert_path

    @classmethod
    def load(cls, directory: str | Path, client_id: int, *, passphrase: bytes | None = None) -> ClientIdentity:
        """The identity saved by ``save`` (with its certificate if the file is there)."""
        directory = Path(directory)
        key_path = directory / client_key_file(client_id)
        if not key_path.is_file():
            raise ConfigurationError(f"client {client_id}: {key_path} not found (enrol it with `secagg enroll`)")
        identity = cls(client_id, load_private_key(key_path.read_bytes(), passphrase, str(key_path)))
        cert_path = directory / client_cert_file(client_id)
        if cert_path.is_file():
            identity = identity.with_certificate(cert_path.read_bytes())
        return identity
