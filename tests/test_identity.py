"""Identities: the deployment CA, client certificates, the SQLite registry and its Sybil limits,
client keys and signatures, and the ``ca init`` / ``enroll`` / ``revoke`` commands.

Everything is real: real Ed25519 keys, real X.509 certificates, a real SQLite database
(``:memory:`` and a file), the CLI in a subprocess. Time is injected where a test needs it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from secagg.errors import (ConfigurationError, EnrolmentRefused, IdentityError, LocalProtocolError,
                           RegistryError, RemoteProtocolError)
from secagg.identity import (CertificateAuthority, ClientIdentity, EnrolmentLimits, Registry,
                             verify_client_certificate, verify_signature)

ROOT = Path(__file__).resolve().parent.parent
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
LOOSE = EnrolmentLimits(max_per_token=1000, max_per_window=1000, window_seconds=3600, min_declared_examples=1)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("test CA", valid_days=365, now=NOW - dt.timedelta(days=30))


def issue(ca, client_id, *, days=30, now=NOW, identity=None):
    identity = identity or ClientIdentity.generate(client_id)
    cert = ca.issue_client_certificate(client_id, identity.private_key.public_key(), valid_days=days, now=now)
    return identity, cert


# -- the CA and certificates ------------------------------------------------------------------


def test_ca_profile_save_and_load_round_trip(tmp_path):
    ca = CertificateAuthority.create("deployment", valid_days=10, path=tmp_path, passphrase=b"pw")
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600
    assert b"ENCRYPTED" in (tmp_path / "ca.key").read_bytes()
    basic = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    usage = ca.certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert basic.ca and usage.key_cert_sign
    loaded = CertificateAuthority.load(tmp_path, passphrase=b"pw")
    assert loaded.certificate == ca.certificate
    assert loaded.private_key.private_bytes_raw() == ca.private_key.private_bytes_raw()
    with pytest.raises(ConfigurationError, match="passphrase"):
        CertificateAuthority.load(tmp_path, passphrase=b"wrong")
    with pytest.raises(ConfigurationError, match="refusing to overwrite"):
        CertificateAuthority.create("again", valid_days=10, path=tmp_path)
    plain = CertificateAuthority.create("plain", valid_days=10, path=tmp_path / "plain")
    assert CertificateAuthority.load(tmp_path / "plain").certificate == plain.certificate


def test_issued_certificate_binds_the_id_to_the_key(ca):
    identity, cert = issue(ca, 17)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "17"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:secagg:client:17"]
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH in eku
    client_id, public = verify_client_certificate(pem(cert), ca.certificate, at=NOW)
    assert client_id == 17 and public.public_bytes_raw() == identity.public_key_bytes
    assert verify_client_certificate(cert, ca.certificate, at=NOW, client_id=17)[0] == 17


def test_openssl_accepts_the_certificate_for_client_auth_only(tmp_path, ca):
    # The same certificate will authenticate mTLS (mosquitto and Python's ssl are OpenSSL).
    # pyca's own x509.verification refuses it: its profile (CA/Browser Forum) forbids Ed25519.
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl binary")
    _, cert = issue(ca, 17)
    (tmp_path / "ca.pem").write_bytes(pem(ca.certificate))
    (tmp_path / "client.pem").write_bytes(pem(cert))

    def verify(purpose):
        return subprocess.run([openssl, "verify", "-attime", str(int(NOW.timestamp())), "-CAfile",
                               "ca.pem", "-purpose", purpose, "client.pem"], cwd=tmp_path,
                              capture_output=True, text=True)

    assert verify("sslclient").returncode == 0
    assert verify("sslserver").returncode != 0


def _refusal(cert, ca_cert, reason, client=17, **kw):
    with pytest.raises(IdentityError) as info:
        verify_client_certificate(cert, ca_cert, **kw)
    assert info.value.reason == reason, info.value
    assert info.value.client == client and f"client {client}" in str(info.value)
    assert isinstance(info.value, RemoteProtocolError)
    return info.value


def test_certificate_from_another_ca_is_refused(ca):
    other_name = CertificateAuthority.create("rogue CA", valid_days=365, now=NOW - dt.timedelta(days=1))
    same_name = CertificateAuthority.create("test CA", valid_days=365, now=NOW - dt.timedelta(days=1))
    for rogue in (other_name, same_name):
        _, cert = issue(rogue, 17)
        err = _refusal(cert, ca.certificate, "untrusted", at=NOW)
        assert "test CA" in str(err)


def test_expired_and_not_yet_valid_certificates_are_refused(ca):
    _, cert = issue(ca, 17, days=10, now=NOW - dt.timedelta(days=20))
    assert "expired" in str(_refusal(cert, ca.certificate, "expired", at=NOW))
    _, cert = issue(ca, 17, days=10, now=NOW + dt.timedelta(days=3))
    _refusal(cert, ca.certificate, "not yet valid", at=NOW)


def test_certificate_for_another_id_is_refused(ca):
    _, cert = issue(ca, 17)
    err = _refusal(cert, ca.certificate, "mismatched", client=18, at=NOW, client_id=18)
    assert "names client 17, not 18" in str(err)
    with pytest.raises(ConfigurationError, match="0 is the server"):
        ca.issue_client_certificate(0, Ed25519PrivateKey.generate().public_key(), valid_days=1)


def test_common_name_and_uri_that_disagree_are_refused(ca):
    key = Ed25519PrivateKey.generate().public_key()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "17")]))
            .issuer_name(ca.certificate.subject).public_key(key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier("urn:secagg:client:18")]),
                           critical=False)
            .sign(ca.private_key, algorithm=None))
    assert "disagree" in str(_refusal(cert, ca.certificate, "mismatched", at=NOW))


def test_tampered_certificate_is_refused(ca):
    identity, cert = issue(ca, 17)
    der = bytearray(cert.public_bytes(serialization.Encoding.DER))
    at = bytes(der).index(identity.public_key_bytes)
    der[at] ^= 1  # another key, same id, the CA's signature left as it was
    err = _refusal(bytes(der), ca.certificate, "untrusted", at=NOW)
    assert "does not verify" in str(err)
    _refusal(b"\x30\x03garbage", ca.certificate, "malformed", at=NOW, client_id=17)


# -- client identities and signatures ---------------------------------------------------------


def test_server_and_service_certificates_for_the_mqtt_broker(ca):
    import ipaddress

    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    broker_key = Ed25519PrivateKey.generate().public_key()
    cert = ca.issue_server_certificate(broker_key, valid_days=30, now=NOW)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH]
    p256 = ca.issue_server_certificate(ec.generate_private_key(ec.SECP256R1()).public_key(),
                                       hosts=["broker.example"], valid_days=30, now=NOW)
    assert p256.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "broker.example"
    with pytest.raises(ConfigurationError, match="Ed25519 or ECDSA P-256"):
        ca.issue_server_certificate(ec.generate_private_key(ec.SECP384R1()).public_key(), valid_days=1)

    service = ca.issue_service_certificate("secagg-server", broker_key, valid_days=30, now=NOW)
    assert service.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "secagg-server"
    assert list(service.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(IdentityError) as refused:  # a service never passes for a client
        verify_client_certificate(service, ca.certificate, at=NOW)
    assert refused.value.reason == "mismatched"
    for name in ("17", "", "a/b", "lost+", "#"):
        with pytest.raises(ConfigurationError, match="service name"):
            ca.issue_service_certificate(name, broker_key, valid_days=30, now=NOW)


def test_client_identity_signs_and_verify_signature_never_raises(tmp_path, ca):
    identity = ClientIdentity.generate(3)
    message = b"session|round|c_pk|s_pk"
    signature = identity.sign(message)
    assert len(signature) == 64 and len(identity.public_key_bytes) == 32
    assert verify_signature(identity.public_key_bytes, message, signature)
    assert not verify_signature(identity.public_key_bytes, message + b"x", signature)
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    assert not verify_signature(identity.public_key_bytes, message, flipped)
    assert not verify_signature(ClientIdentity.generate(4).public_key_bytes, message, signature)
    assert not verify_signature(identity.public_key_bytes[:31], message, signature)
    assert not verify_signature(identity.public_key_bytes, message, signature[:63])
    assert not verify_signature(bytes(32), message, signature)  # a small-order key
    assert not verify_signature(None, message, signature)  # type: ignore[arg-type]

    _, cert = issue(ca, 3, identity=identity)
    identity.with_certificate(cert).save(tmp_path, passphrase=b"pw")
    assert stat.S_IMODE((tmp_path / "client-3.key").stat().st_mode) == 0o600
    loaded = ClientIdentity.load(tmp_path, 3, passphrase=b"pw")
    assert loaded.public_key_bytes == identity.public_key_bytes and loaded.certificate == cert
    assert verify_signature(loaded.public_key_bytes, message, loaded.sign(message))
    with pytest.raises(ConfigurationError, match="another key"):
        ClientIdentity.generate(3).with_certificate(cert)


def test_identity_from_seed_is_deterministic():
    # RFC 8032 section 7.1, test 1: the seed and its public key.
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    identity = ClientIdentity.from_seed(1, seed)
    assert identity.public_key_bytes.hex() == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    assert identity.sign(b"").hex() == (
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")


# -- the registry -----------------------------------------------------------------------------


def test_enrol_look_up_revoke_and_re_enrol(ca):
    registry = Registry(":memory:", ca_certificate=ca.certificate, limits=LOOSE)
    identity, cert = issue(ca, 17)
    record = registry.enroll(17, pem(cert), token="t-17", declared_examples=50, now=NOW)
    assert record.public_key == identity.public_key_bytes and not record.renewed
    assert registry.verify_key(17, now=NOW) == identity.public_key_bytes
    assert registry.certificate(17) == cert

    with pytest.raises(IdentityError) as info:
        registry.verify_key(99, now=NOW)
    assert info.value.reason == "unknown" and "client 99" in str(info.value)

    # Another key for an enrolled id is refused until the old one is revoked.
    newcomer, new_cert = issue(ca, 17)
    with pytest.raises(EnrolmentRefused) as refused:
        registry.enroll(17, new_cert, token="t-17b", declared_examples=50, now=NOW)
    assert refused.value.reason == "already enrolled" and "client 17" in str(refused.value)
    assert isinstance(refused.value, LocalProtocolError)

    # Same key, new certificate: a renewal.
    _, renewed = issue(ca, 17, identity=identity, days=60)
    assert registry.enroll(17, renewed, token="t-17c", declared_examples=50, now=NOW).renewed
    assert registry.certificate(17) == renewed

    registry.revoke(17, "device lost", now=NOW)
    with pytest.raises(IdentityError) as info:
        registry.verify_key(17, now=NOW)
    assert info.value.reason == "revoked" and "client 17" in str(info.value) and "device lost" in str(info.value)
    assert registry.enrolled([17], now=NOW) == {}
    with pytest.raises(RegistryError, match="client 17: no enrolment to revoke"):
        registry.revoke(17, "again", now=NOW)

    # The revoked key never comes back; a new key does.
    _, old_again = issue(ca, 17, identity=identity)
    with pytest.raises(EnrolmentRefused) as refused:
        registry.enroll(17, old_again, token="t-17d", declared_examples=50, now=NOW)
    assert refused.value.reason == "revoked key"
    registry.enroll(17, new_cert, token="t-17e", declared_examples=50, now=NOW)
    assert registry.verify_key(17, now=NOW) == newcomer.public_key_bytes


def test_enrolment_refuses_bad_certificates(ca):
    registry = Registry(":memory:", ca_certificate=ca.certificate, limits=LOOSE)
    rogue = CertificateAuthority.create("rogue", valid_days=365, now=NOW - dt.timedelta(days=1))
    identity, cert_for_5 = issue(ca, 5)
    cases = [
        (issue(rogue, 4)[1], 4, "certificate untrusted"),
        (cert_for_5, 6, "certificate mismatched"),
        (issue(ca, 7, days=1, now=NOW - dt.timedelta(days=5))[1], 7, "certificate expired"),
        (b"not a certificate", 8, "certificate malformed"),
    ]
    for cert, client_id, reason in cases:
        with pytest.raises(EnrolmentRefused) as info:
            registry.enroll(client_id, cert, token=f"t{client_id}", declared_examples=5, now=NOW)
        assert info.value.reason == reason and f"client {client_id}" in str(info.value)
    # One key, two ids (a CA that issued both): the second is refused.
    _, cert_for_9 = issue(ca, 9, identity=ClientIdentity(9, identity.private_key))
    registry.enroll(5, cert_for_5, token="t5", declared_examples=5, now=NOW)
    with pytest.raises(EnrolmentRefused, match="already enrolled as client 5"):
        registry.enroll(9, cert_for_9, token="t9", declared_examples=5, now=NOW)
    assert len(registry) == 1


def test_sybil_limit_per_token(ca):
    limits = EnrolmentLimits(max_per_token=2, max_per_window=1000, window_seconds=60)
    registry = Registry(":memory:", ca_certificate=ca.certificate, limits=limits)
    for c in (1, 2):
        registry.enroll(c, issue(ca, c)[1], token="shared", declared_examples=5, now=NOW)
    with pytest.raises(EnrolmentRefused) as info:
        registry.enroll(3, issue(ca, 3)[1], token="shared", declared_examples=5, now=NOW)
    assert info.value.reason == "token limit" and "client 3" in str(info.value)
    # Revoking does not give the token its use back.
    registry.revoke(1, "test", now=NOW)
    with pytest.raises(EnrolmentRefused):
        registry.enroll(3, issue(ca, 3)[1], token="shared", declared_examples=5, now=NOW)
    registry.enroll(3, issue(ca, 3)[1], token="another", declared_examples=5, now=NOW)


def test_sybil_limit_per_sliding_window(ca):
    limits = EnrolmentLimits(max_per_token=1, max_per_window=3, window_seconds=60)
    registry = Registry(":memory:", ca_certificate=ca.certificate, limits=limits)
    for c, seconds in ((1, 0), (2, 20), (3, 40)):
        registry.enroll(c, issue(ca, c)[1], token=f"t{c}", declared_examples=5,
                        now=NOW + dt.timedelta(seconds=seconds))
    with pytest.raises(EnrolmentRefused) as info:  # (0, 50] holds three already
        registry.enroll(4, issue(ca, 4)[1], token="t4", declared_examples=5, now=NOW + dt.timedelta(seconds=50))
    assert info.value.reason == "window limit" and "client 4" in str(info.value)
    # At 61 s the first has left the window (1, 61]: room for one, and only one.
    registry.enroll(4, issue(ca, 4)[1], token="t4", declared_examples=5, now=NOW + dt.timedelta(seconds=61))
    with pytest.raises(EnrolmentRefused):
        registry.enroll(5, issue(ca, 5)[1], token="t5", declared_examples=5, now=NOW + dt.timedelta(seconds=62))


def test_sybil_limit_minimum_declared_examples(ca):
    registry = Registry(":memory:", ca_certificate=ca.certificate,
                        limits=EnrolmentLimits(min_declared_examples=100))
    with pytest.raises(EnrolmentRefused) as info:
        registry.enroll(1, issue(ca, 1)[1], token="t1", declared_examples=99, now=NOW)
    assert info.value.reason == "examples" and "client 1" in str(info.value) and "100" in str(info.value)
    registry.enroll(1, issue(ca, 1)[1], token="t1", declared_examples=100, now=NOW)
    with pytest.raises(ConfigurationError):
        EnrolmentLimits(max_per_token=0)


def test_verify_key_checks_validity_and_catches_an_edited_file(tmp_path, ca):
    path = tmp_path / "registry.db"
    registry = Registry(path, ca_certificate=ca.certificate, limits=LOOSE)
    ids = {c: issue(ca, c, days=10) for c in range(1, 6)}
    for c, (_, cert) in ids.items():
        registry.enroll(c, cert, token=f"t{c}", declared_examples=5, now=NOW)
    later = NOW + dt.timedelta(days=11)
    with pytest.raises(IdentityError) as info:
        registry.verify_key(2, now=later)
    assert info.value.reason == "expired" and "client 2" in str(info.value)

    # Someone with write access to the file swaps client 3's key for their own, and moves
    # client 4's expiry: the certificates (signed by the CA) give both away.
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE enrolments SET public_key = ? WHERE client_id = 3",
                    (ClientIdentity.generate(3).public_key_bytes,))
        raw.execute("UPDATE enrolments SET not_after = not_after + 1e8 WHERE client_id = 4")
    reader = Registry.open_read_only(path, ca_certificate=ca.certificate)
    with pytest.raises(IdentityError) as info:
        reader.verify_key(3, now=NOW)
    assert info.value.reason == "mismatched" and "client 3" in str(info.value)
    with pytest.raises(IdentityError) as info:
        reader.verify_key(4, now=later)
    assert info.value.reason == "expired"
    assert reader.enrolled(range(1, 10), now=NOW) == {c: ids[c][0].public_key_bytes for c in (1, 2, 4, 5)}


def test_enrolled_is_a_bulk_lookup(ca):
    registry = Registry(":memory:", ca_certificate=ca.certificate, limits=LOOSE)
    identities = {}
    for c in range(1, 21):
        identities[c], cert = issue(ca, c)
        registry.enroll(c, cert, token=f"t{c}", declared_examples=5, now=NOW)
    registry.revoke(7, "compromised", now=NOW)
    found = registry.enrolled([*range(2, 30, 2), 7], now=NOW)
    assert found == {c: identities[c].public_key_bytes for c in range(2, 21, 2)}
    assert registry.enrolled([], now=NOW) == {}


def test_read_only_registry_cannot_write(tmp_path, ca):
    path = tmp_path / "registry.db"
    writer = Registry(path, ca_certificate=ca.certificate, limits=LOOSE)
    identity, cert = issue(ca, 1)
    writer.enroll(1, cert, token="t1", declared_examples=5, now=NOW)
    reader = Registry.open_read_only(path, ca_certificate=ca.certificate)
    assert reader.verify_key(1, now=NOW) == identity.public_key_bytes
    with pytest.raises(RegistryError, match="read-only"):
        reader.enroll(2, issue(ca, 2)[1], token="t2", declared_examples=5, now=NOW)
    with pytest.raises(RegistryError, match="read-only"):
        reader.revoke(1, "server wants it gone", now=NOW)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):  # not even by SQL
        reader._db.execute("UPDATE enrolments SET revoked_at = NULL")
    # The reader sees what the enrolment service writes after it opened.
    writer.revoke(1, "lost", now=NOW)
    with pytest.raises(IdentityError, match="client 1: revoked"):
        reader.verify_key(1, now=NOW)
    writer.close()
    reader.close()
    # A server that pins another CA is refused; so is a writer with another CA.
    other = CertificateAuthority.create("other", valid_days=10)
    with pytest.raises(RegistryError, match="created for CA"):
        Registry.open_read_only(path, ca_certificate=other.certificate)
    with pytest.raises(RegistryError, match="created for CA"):
        Registry(path, ca_certificate=other.certificate)
    with pytest.raises(RegistryError, match="not found"):
        Registry.open_read_only(tmp_path / "missing.db")


def test_tokens_are_not_stored_in_clear(tmp_path, ca):
    path = tmp_path / "registry.db"
    token = "enrolment-token-0c4f9a7e"
    with Registry(path, ca_certificate=ca.certificate, limits=LOOSE) as registry:
        registry.enroll(1, issue(ca, 1)[1], token=token, declared_examples=5, now=NOW)
        raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())  # the file and its WAL
        assert token.encode() not in raw
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert token.encode() not in raw
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT token_sha256 FROM enrolments").fetchone()[0] == hashlib.sha256(token.encode()).digest()
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# -- the command line -------------------------------------------------------------------------


def _secagg(*args, cwd, env=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", "secagg", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


def test_cli_ca_init_enroll_revoke(tmp_path):
    env = {"CA_PASS": "correct horse"}
    done = _secagg("ca", "init", "--out", "ca", "--name", "test deployment", "--days", "30",
                   "--passphrase-env", "CA_PASS", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE((tmp_path / "ca" / "ca.key").stat().st_mode) == 0o600
    again = _secagg("ca", "init", "--out", "ca", cwd=tmp_path)
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr

    enrol = ["enroll", "--ca", "ca", "--registry", "reg.db", "--passphrase-env", "CA_PASS", "--out", "clients"]
    done = _secagg(*enrol, "--id", "5", "--token", "tok-a", "--examples", "10", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    identity = ClientIdentity.load(tmp_path / "clients", 5)
    ca = CertificateAuthority.load(tmp_path / "ca", passphrase=b"correct horse")
    assert verify_client_certificate(identity.certificate, ca.certificate)[0] == 5
    reader = Registry.open_read_only(tmp_path / "reg.db", ca_certificate=ca.certificate)
    assert reader.verify_key(5) == identity.public_key_bytes

    refused = _secagg(*enrol, "--id", "6", "--token", "tok-a", "--examples", "10", cwd=tmp_path, env=env)
    assert refused.returncode == 2 and "client 6" in refused.stderr and "token" in refused.stderr
    assert not (tmp_path / "clients" / "client-6.key").exists()
    refused = _secagg(*enrol, "--id", "7", "--token", "tok-b", "--examples", "0", cwd=tmp_path, env=env)
    assert refused.returncode == 2 and "client 7" in refused.stderr and "examples" in refused.stderr
    wrong = _secagg(*enrol, "--id", "8", "--token", "tok-c", "--examples", "3", cwd=tmp_path, env={"CA_PASS": "no"})
    assert wrong.returncode == 2 and "passphrase" in wrong.stderr

    done = _secagg("revoke", "--registry", "reg.db", "--id", "5", "--reason", "lost", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with pytest.raises(IdentityError, match="client 5: revoked"):
        reader.verify_key(5)
    again = _secagg("revoke", "--registry", "reg.db", "--id", "5", "--reason", "lost", cwd=tmp_path)
    assert again.returncode == 2 and "client 5" in again.stderr


def test_registry_refuses_a_file_it_does_not_know(tmp_path, ca):
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(RegistryError, match="not a secagg registry"):
        Registry(foreign, ca_certificate=ca.certificate)
    future = tmp_path / "future.db"
    Registry(future, ca_certificate=ca.certificate).close()
    with sqlite3.connect(future) as db:
        db.execute("PRAGMA user_version = 2")
    with pytest.raises(RegistryError, match="schema version 2"):
        Registry.open_read_only(future)
