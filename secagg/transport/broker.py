"""The MQTT broker side of the transport: a mosquitto configured for mutual TLS, and a handle
that runs it.

Theory of operation. Every party reaches the broker over TLS 1.3 with a certificate from the
deployment CA (``secagg.identity.ca``), and the broker takes the certificate's common name as
the MQTT user name (``use_identity_as_username``): client ``N`` is user ``"N"``, the
aggregation server is user ``secagg-server``. Nothing else authenticates: no passwords, no
anonymous access, a plain-TCP connection never gets past the TLS handshake. The ACL file then
confines each client to its own topics (DEPLOY.md, MQTT section)::

    secagg/{session}/{round}/up/{client}     client -> server   (pattern write .../up/%u)
    secagg/{session}/{round}/down/{client}   server -> client   (pattern read .../down/%u)
    secagg/{session}/{round}/broadcast       server -> clients  (pattern read)
    secagg/lost/{client}                     the client's Last Will (pattern write)

The Last Will has a topic of its own because a client sets it when it connects, before it knows
the session and round. Only ``secagg-server`` reads the up topics and writes the down and
broadcast ones. mosquitto drops a publish the ACL forbids without telling the publisher (an
MQTT 3.1.1 broker has no way to) and delivers nothing the ACL does not let a subscriber read.

Persistence is on, so a subscriber's persistent session (clean session off, QoS 1) and the
messages queued for it survive a broker restart; mosquitto writes its database on a clean
shutdown, which is what ``Mosquitto.stop`` does.

Key type: every certificate here, the broker's TLS server certificate included, holds an
Ed25519 key signed by the Ed25519 CA. mosquitto 2.0.11 on OpenSSL 3.0 serves and verifies
them over TLS 1.3 (RFC 8446 4.2.3 lists ed25519 as a signature scheme; TLS 1.2 clients are
refused anyway by ``tls_version tlsv1.3``). ``server_key="p256"`` gives the broker an ECDSA
P-256 key instead, for clients whose TLS stack lacks Ed25519.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secagg.errors import ConfigurationError
from secagg.identity.ca import CA_CERT_FILE, CertificateAuthority, _check_id, write_private
from secagg.identity.keys import ClientIdentity, client_cert_file, client_key_file

SERVER_USER = "secagg-server"
"""The aggregation server's MQTT user name: the common name of its service certificate."""
LOST_TOPIC = "secagg/lost/{client}"
MIB = 1024 * 1024
DEFAULT_MAX_PACKET_BYTES = 64 * MIB
# MQTT's remaining-length field stops at 268,435,455 bytes (MQTT 5.0 section 1.5.5).
MQTT_MAX_PACKET_BYTES = 268_435_455

CONF_FILE = "mosquitto.conf"
REGISTRY_FILE = "registry.db"
ACL_FILE = "acl"
LOG_FILE = "mosquitto.log"
PERSISTENCE_DIR = "mosquitto-data"
BROKER_CERT_FILE, BROKER_KEY_FILE = "broker.pem", "broker.key"
SERVER_CERT_FILE, SERVER_KEY_FILE = f"{SERVER_USER}.pem", f"{SERVER_USER}.key"

# Debian and most distributions install the broker in sbin, which a user's PATH often lacks.
_SBIN = ("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it; another process may
    still take it before the caller binds it, which ``Mosquitto.start`` reports as an early exit)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_mosquitto() -> str | None:
    """The mosquitto binary: ``$SECAGG_MOSQUITTO``, else on PATH, else in an sbin directory."""
    explicit = os.environ.get("SECAGG_MOSQUITTO")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("mosquitto", path=os.pathsep.join([os.environ.get("PATH", ""), *_SBIN]))


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """What ``write_broker_config`` wrote: paths, the port, and the client ids.

    ``broker_cert``/``broker_key`` are the broker's TLS server identity; ``server_cert``/
    ``server_key`` are the aggregation server's identity at the broker (user ``secagg-server``).
    """

    directory: Path
    port: int
    conf: Path
    acl: Path
    log: Path
    persistence: Path
    ca_cert: Path
    broker_cert: Path
    broker_key: Path
    server_cert: Path
    server_key: Path
    client_certs: Mapping[int, Path] = field(repr=False)
    client_keys: Mapping[int, Path] = field(repr=False)
    host: str = "127.0.0.1"

    @property
    def clients(self) -> tuple[int, ...]:
        return tuple(self.client_certs)

    @classmethod
    def load(cls, directory: str | Path) -> BrokerFiles:
        """The files ``write_broker_config`` wrote into ``directory`` (the port read back from its
        ``mosquitto.conf``; the clients from the ``client-N.pem`` files present)."""
        directory = Path(directory).resolve()
        conf = directory / CONF_FILE
        if not conf.is_file():
            raise ConfigurationError(f"{conf} does not exist: write the deployment with secagg broker-config")
        listener = next((line.split() for line in conf.read_text().splitlines()
                         if line.startswith("listener ")), None)
        if listener is None or len(listener) < 2 or not listener[1].isdigit():
            raise ConfigurationError(f"{conf} has no 'listener PORT HOST' line")
        ids = sorted(int(p.name[len("client-"):-len(".pem")]) for p in directory.glob("client-*.pem")
                     if p.name[len("client-"):-len(".pem")].isdigit())
        return cls.laid_out(directory, port=int(listener[1]), clients=ids,
                            host=listener[2] if len(listener) > 2 else "127.0.0.1")

    @classmethod
    def laid_out(cls, directory: Path, *, port: int, clients, host: str = "127.0.0.1") -> BrokerFiles:
        """The paths ``write_broker_config`` uses under ``directory``."""
        return cls(
            directory=directory, port=port, conf=directory / CONF_FILE, acl=directory / ACL_FILE,
            log=directory / LOG_FILE, persistence=directory / PERSISTENCE_DIR,
            ca_cert=directory / CA_CERT_FILE, broker_cert=directory / BROKER_CERT_FILE,
            broker_key=directory / BROKER_KEY_FILE, server_cert=directory / SERVER_CERT_FILE,
            server_key=directory / SERVER_KEY_FILE,
            client_certs=MappingProxyType({i: directory / client_cert_file(i) for i in clients}),
            client_keys=MappingProxyType({i: directory / client_key_file(i) for i in clients}),
            host=host,
        )

    def client_cert(self, client_id: int) -> Path:
        return self._lookup(self.client_certs, client_id)

    def client_key(self, client_id: int) -> Path:
        return self._lookup(self.client_keys, client_id)

    def client_identity(self, client_id: int) -> ClientIdentity:
        """Client ``client_id``'s Ed25519 identity and certificate (the one the registry enrols)."""
        self._lookup(self.client_keys, client_id)
        return ClientIdentity.load(self.directory, client_id)

    def client_tls_context(self, client_id: int) -> ssl.SSLContext:
        return tls_context(self.ca_cert, self.client_cert(client_id), self.client_key(client_id))

    def server_tls_context(self) -> ssl.SSLContext:
        return tls_context(self.ca_cert, self.server_cert, self.server_key)

    def _lookup(self, paths: Mapping[int, Path], client_id: int) -> Path:
        try:
            return paths[client_id]
        except KeyError:
            raise ConfigurationError(f"client {client_id} has no certificate in {self.directory} "
                                     f"(written for clients {_ranges(self.clients)})") from None


def tls_context(ca: str | Path, cert: str | Path, key: str | Path) -> ssl.SSLContext:
    """A client-side TLS context for the broker: TLS 1.3 only, the broker's certificate must
    chain to ``ca`` and name the host connected to (127.0.0.1 or localhost), and ``cert``/``key``
    are this party's identity. Pass it to ``aiomqtt.Client(..., tls_context=...)``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        context.load_verify_locations(cafile=str(ca))
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"TLS identity {cert} / {key} with CA {ca}: {exc}") from None
    return context


def write_broker_config(directory: str | Path, *, clients: Iterable[int], port: int,
                        ca: CertificateAuthority | None = None,
                        max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES, persistence: bool = True,
                        valid_days: int = 365, server_key: Literal["ed25519", "p256"] = "ed25519",
                        user: str | None = None) -> BrokerFiles:
    """Write a complete mosquitto deployment into ``directory``: CA certificate, broker and
    aggregation-server certificates, one certificate and Ed25519 key per client, ``acl`` and
    ``mosquitto.conf`` for one TLS listener on 127.0.0.1:``port``.

    With ``ca`` None a new CA is made and saved here (``ca.pem`` and ``ca.key``: move ``ca.key``
    off the broker's machine once the clients are issued); with ``ca`` given only its certificate
    is written. ``user`` is the account mosquitto runs as when started as root (default: the
    account running this, which owns the key files; mosquitto's own default, user
    ``mosquitto``, could not read them). Refuses a directory that already holds a configuration.
    """
    directory = Path(directory).resolve()
    ids = sorted(set(clients))
    for client_id in ids:
        _check_id(client_id)
    if not ids:
        raise ConfigurationError("write_broker_config needs at least one client id")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigurationError(f"port must be in [1, 65535], got {port!r}")
    if not 1024 <= max_packet_bytes <= MQTT_MAX_PACKET_BYTES:
        raise ConfigurationError(f"max_packet_bytes must lie in [1024, {MQTT_MAX_PACKET_BYTES}] "
                                 f"(MQTT's largest packet), got {max_packet_bytes}")
    if server_key not in ("ed25519", "p256"):
        raise ConfigurationError(f"server_key must be 'ed25519' or 'p256', got {server_key!r}")
    if any(c in str(directory) for c in "\n\r"):
        raise ConfigurationError(f"{directory!r}: a line break in the path cannot go into mosquitto.conf")
    user = user or pwd.getpwuid(os.getuid()).pw_name
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / CONF_FILE).exists():
        raise ConfigurationError(f"{directory / CONF_FILE} exists: refusing to overwrite a broker "
                                 f"configuration (choose another directory)")

    if ca is None:
        ca = CertificateAuthority.create("secagg deployment CA", valid_days=max(valid_days, 3650),
                                         path=directory)
    else:
        (directory / CA_CERT_FILE).write_bytes(_pem(ca.certificate))

    broker_private = (ec.generate_private_key(ec.SECP256R1()) if server_key == "p256"
                      else Ed25519PrivateKey.generate())
    broker_cert = ca.issue_server_certificate(broker_private.public_key(), valid_days=valid_days)
    write_private(directory / BROKER_KEY_FILE, _key_pem(broker_private))
    (directory / BROKER_CERT_FILE).write_bytes(_pem(broker_cert))

    server_private = Ed25519PrivateKey.generate()
    server_cert = ca.issue_service_certificate(SERVER_USER, server_private.public_key(),
                                               valid_days=valid_days)
    write_private(directory / SERVER_KEY_FILE, _key_pem(server_private))
    (directory / SERVER_CERT_FILE).write_bytes(_pem(server_cert))

    for client_id in ids:
        identity = ClientIdentity.generate(client_id)
        cert = ca.issue_client_certificate(client_id, identity.public_key_bytes, valid_days=valid_days)
        identity.with_certificate(cert).save(directory)

    files = BrokerFiles.laid_out(directory, port=port, clients=ids)
    files.acl.write_text(acl_text())
    if persistence:
        files.persistence.mkdir(exist_ok=True)
    files.conf.write_text(mosquitto_conf(files, max_packet_bytes=max_packet_bytes,
                                         persistence=persistence, user=user))
    return files


def acl_text() -> str:
    return f"""\
# secagg topic ACL (secagg.transport.broker). User names are certificate common names.
user {SERVER_USER}
topic readwrite secagg/#
# The broker's own counters (bytes, messages, clients), for the server's report and the bench.
topic read $SYS/#

# Each client writes only its own up topic and Last Will, reads only its own down topic and
# the round's broadcast. %u is the client's user name: its id.
pattern write secagg/+/+/up/%u
pattern read secagg/+/+/down/%u
pattern read secagg/+/+/broadcast
pattern write {LOST_TOPIC.format(client="%u")}
"""


def mosquitto_conf(files: BrokerFiles, *, max_packet_bytes: int, persistence: bool, user: str) -> str:
    lines = [
        "# secagg broker (secagg.transport.broker): mutual TLS 1.3 on loopback, CN = user name.",
        f"user {user}",
        f"listener {files.port} {files.host}",
        f"cafile {files.ca_cert}",
        f"certfile {files.broker_cert}",
        f"keyfile {files.broker_key}",
        "require_certificate true",
        "use_identity_as_username true",
        "tls_version tlsv1.3",
        "allow_anonymous false",
        f"acl_file {files.acl}",
        f"max_packet_size {max_packet_bytes}",
        # Queued QoS 1 frames for an offline server must not be dropped at the default 1000
        # messages: a round with many clients queues one frame per client per phase.
        "max_queued_messages 0",
        # $SYS counters (bytes and messages in and out) every second, for reports and the bench.
        "sys_interval 1",
        f"persistence {'true' if persistence else 'false'}",
    ]
    if persistence:
        lines.append(f"persistence_location {files.persistence}/")
    lines += [
        f"log_dest file {files.log}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
    ]
    return "\n".join(lines) + "\n"


class Mosquitto:
    """A mosquitto process running ``files.conf``, for tests and single-machine deployments.

    ``start`` returns once the TLS port accepts connections (at most ``start_timeout`` s);
    ``stop`` ends it with SIGTERM (so it saves its persistence database) and SIGKILL after
    ``stop_timeout`` s; ``kill`` is a crash (SIGKILL, nothing saved). Both can be called any
    number of times, and ``start`` again brings it back on the same port with the same state.
    As a context manager it starts on entry and stops on exit. A process left running when the
    handle is garbage collected or the interpreter exits is killed, and on Linux the broker
    gets SIGKILL if the thread that started it dies (``PR_SET_PDEATHSIG``), so even a killed test
    run leaves no broker behind.
    """

    def __init__(self, files: BrokerFiles, *, binary: str | None = None, start_timeout: float = 10.0,
                 stop_timeout: float = 5.0) -> None:
        self.files = files
        self.binary = binary or find_mosquitto()
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.process: subprocess.Popen | None = None
        self.started_in: float | None = None
        """Seconds the last ``start`` waited for the port."""
        self._finalizer: weakref.finalize | None = None

    @property
    def host(self) -> str:
        return self.files.host

    @property
    def port(self) -> int:
        return self.files.port

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> Mosquitto:
        if self.running:
            return self
        if self.binary is None:
            raise ConfigurationError("mosquitto not found on PATH or in /usr/sbin: install it "
                                     "(Debian: apt-get install -y mosquitto) or set $SECAGG_MOSQUITTO")
        if _accepts(self.host, self.port):  # else the probe below would find the other listener
            raise ConfigurationError(f"{self.host}:{self.port} already accepts connections (another "
                                     f"broker?): stop it, or write the configuration for a free port")
        log_from = self.files.log.stat().st_size if self.files.log.exists() else 0
        began = time.monotonic()
        try:
            self.process = subprocess.Popen(
                [self.binary, "-c", str(self.files.conf)], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_die_with_parent())
        except OSError as exc:
            raise ConfigurationError(f"cannot run {self.binary}: {exc}") from None
        self._finalizer = weakref.finalize(self, _reap, self.process)
        deadline = began + self.start_timeout
        while True:
            if self.process.poll() is not None:
                stderr = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                code = self.process.returncode
                self._forget()
                raise ConfigurationError(
                    f"mosquitto exited with code {code} while starting on {self.host}:{self.port}"
                    f"{_tail(stderr, self.files.log, log_from)}")
            if _accepts(self.host, self.port):
                self.started_in = time.monotonic() - began
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise ConfigurationError(
                    f"mosquitto did not accept connections on {self.host}:{self.port} within "
                    f"{self.start_timeout:g} s{_tail('', self.files.log, log_from)}")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM (mosquitto saves its database), SIGKILL after ``stop_timeout`` s."""
        if self.process is not None:
            _reap(self.process, self.stop_timeout)
            self._forget()

    def kill(self) -> None:
        """SIGKILL: a broker crash (whatever was not saved yet is lost)."""
        if self.process is not None:
            _reap(self.process, 0.0)
            self._forget()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.files.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def _forget(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = self._finalizer = None

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _reap(process: subprocess.Popen, grace: float = 0.0) -> None:
    if process.poll() is not None:
        return
    if grace > 0:
        process.terminate()
        try:
            process.wait(grace)
            return
        except subprocess.TimeoutExpired:
            pass
    process.kill()
    process.wait()


def _die_with_parent():
    """On Linux, a preexec function asking for SIGKILL when the starting thread ends; else None."""
    if not os.uname().sysname == "Linux" or threading.current_thread() is not threading.main_thread():
        return None  # PDEATHSIG follows the thread that forked: only the main thread lives long enough
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    return preexec


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(stderr: str, log: Path, start: int, lines: int = 15) -> str:
    text = stderr.strip()
    try:
        with log.open("rb") as f:
            f.seek(start)
            text = (text + "\n" + f.read().decode(errors="replace")).strip()
    except FileNotFoundError:
        pass
    if not text:
        return " (no output)"
    return ":\n  " + "\n  ".join(text.splitlines()[-lines:])


def _pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _ranges(ids: Iterable[int]) -> str:
    ids = sorted(ids)
    return f"{ids[0]}..{ids[-1]}" if ids == list(range(ids[0], ids[-1] + 1)) else ", ".join(map(str, ids))


def add_subcommands(subparsers) -> None:
    """Register ``broker-config`` on the ``secagg`` parser (it sets ``handler``; the CLI's
    ``main`` maps ``ConfigurationError`` to exit 2)."""
    cmd = subparsers.add_parser("broker-config", help="write a mosquitto configuration with mutual "
                                "TLS, the topic ACL and certificates for the server and clients 1..N")
    cmd.add_argument("--out", required=True, help="directory to write into (must not hold a configuration)")
    cmd.add_argument("--clients", type=int, required=True, help="issue certificates for clients 1..N")
    cmd.add_argument("--port", type=int, default=8883, help="TLS port on 127.0.0.1 (default 8883)")
    cmd.add_argument("--ca", default=None, help="directory holding ca.pem and ca.key from `secagg ca "
                     "init` (default: make a new CA in --out)")
    cmd.add_argument("--passphrase-env", default=None, help="the --ca key is encrypted with $VAR")
    cmd.add_argument("--max-packet-mib", type=int, default=DEFAULT_MAX_PACKET_BYTES // MIB,
                     help=f"largest MQTT packet the broker accepts, MiB (default {DEFAULT_MAX_PACKET_BYTES // MIB})")
    cmd.add_argument("--days", type=int, default=365, help="certificate validity in days (default 365)")
    cmd.add_argument("--registry", action="store_true",
                     help="also enrol every client's certificate in DIR/registry.db (for authenticated "
                     "rounds; in a real deployment the enrolment service does this)")
    cmd.add_argument("--operator", action="store_true",
                     help="also write an operator key pair into DIR/operator/ (it signs round configs "
                     "and models; keep the private key away from the aggregation server)")
    cmd.set_defaults(handler=_cmd_broker_config)


def _cmd_broker_config(args) -> int:
    if args.clients < 1:
        raise ConfigurationError(f"--clients must be at least 1, got {args.clients}")
    ca = None
    if args.ca is not None:
        passphrase = None
        if args.passphrase_env:
            value = os.environ.get(args.passphrase_env)
            if not value:
                raise ConfigurationError(f"--passphrase-env {args.passphrase_env}: the variable is unset or empty")
            passphrase = value.encode("utf-8")
        ca = CertificateAuthority.load(args.ca, passphrase=passphrase)
    files = write_broker_config(args.out, clients=range(1, args.clients + 1), port=args.port, ca=ca,
                                max_packet_bytes=args.max_packet_mib * MIB, valid_days=args.days)
    d = files.directory
    if args.registry:
        from secagg.identity import EnrolmentLimits, Registry

        registry = Registry(d / REGISTRY_FILE, ca_certificate=files.ca_cert.read_bytes(),
                            limits=EnrolmentLimits(max_per_window=max(100, args.clients)))
        for c in files.clients:
            registry.enroll(c, files.client_cert(c).read_bytes(), token=f"broker-config client {c}",
                            declared_examples=1)
        registry.close()
        print(f"  registry:           {d / REGISTRY_FILE} (clients {_ranges(files.clients)} enrolled)")
    if args.operator:
        from secagg.model_signing import write_operator_keys

        keys = write_operator_keys(d / "operator")
        print(f"  operator keys:      {keys.ed25519_private} (private), {keys.ed25519_public}")
    print(f"broker configuration for clients {_ranges(files.clients)} written to {d}")
    print(f"  start the broker:   mosquitto -c {files.conf}")
    print(f"  it listens on:      {files.host}:{files.port} (TLS 1.3, client certificates required)")
    print(f"  every party trusts: {files.ca_cert}")
    print(f"  aggregation server: {files.server_cert.name}, {files.server_key.name} (MQTT user {SERVER_USER})")
    print(f"  client N:           {client_cert_file(1).replace('1', 'N')}, "
          f"{client_key_file(1).replace('1', 'N')} (MQTT user N)")
    if ca is None:
        print(f"  {d / 'ca.key'} signs new certificates: keep it off the broker's machine")
    return 0
