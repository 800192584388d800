"""``secagg ca init``, ``secagg enroll`` and ``secagg revoke``: the enrolment service's commands.

They run where the CA key and the writable registry live, never on the aggregation server.
Each returns an exit code: 0 done, 2 refused or misconfigured (the cause is printed on stderr).
A passphrase for the CA key is read from the environment variable named by ``--passphrase-env``
so that it never appears in a process list.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from secagg.errors import SecAggError
from secagg.identity.ca import CertificateAuthority
from secagg.identity.keys import ClientIdentity
from secagg.identity.registry import EnrolmentLimits, Registry

EXIT_OK = 0
EXIT_REFUSED = 2
_DEFAULTS = EnrolmentLimits()


def _passphrase(args) -> bytes | None:
    name = getattr(args, "passphrase_env", None)
    if not name:
        return None
    value = os.environ.get(name)
    if not value:
        raise SecAggError(f"--passphrase-env {name}: the variable is unset or empty")
    return value.encode("utf-8")


def _limits(args) -> EnrolmentLimits:
    return EnrolmentLimits(max_per_token=args.max_per_token, window_seconds=args.window_seconds,
                           max_per_window=args.max_per_window, min_declared_examples=args.min_examples)


def cmd_ca(args) -> int:
    ca = CertificateAuthority.create(args.name, valid_days=args.days, path=args.out,
                                     passphrase=_passphrase(args))
    print(f"CA {ca.name!r} written to {Path(args.out) / 'ca.pem'} and {Path(args.out) / 'ca.key'} "
          f"(valid until {ca.certificate.not_valid_after_utc.date()})")
    return EXIT_OK


def cmd_enroll(args) -> int:
    ca = CertificateAuthority.load(args.ca, passphrase=_passphrase(args))
    out = Path(args.out or ".")
    identity = ClientIdentity.generate(args.id)
    cert = ca.issue_client_certificate(args.id, identity.private_key.public_key(), valid_days=args.days)
    with Registry(args.registry, ca_certificate=ca.certificate, limits=_limits(args)) as registry:
        registry.enroll(args.id, cert, token=args.token, declared_examples=args.examples)
    # Written only after the registry accepted it: a refused client leaves no key behind.
    key_path, cert_path = identity.with_certificate(cert).save(out)
    print(f"client {args.id} enrolled in {args.registry}; key {key_path}, certificate {cert_path} "
          f"(valid until {cert.not_valid_after_utc.date()})")
    return EXIT_OK


def cmd_revoke(args) -> int:
    with Registry.open_read_only(args.registry) as probe:
        ca_certificate = probe.ca_certificate
    with Registry(args.registry, ca_certificate=ca_certificate) as registry:
        registry.revoke(args.id, args.reason)
    print(f"client {args.id} revoked in {args.registry}: {args.reason}")
    return EXIT_OK


def _guarded(command):
    def run(args) -> int:
        try:
            return command(args)
        except SecAggError as exc:
            print(f"secagg {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_REFUSED
    return run


COMMANDS = {"ca": _guarded(cmd_ca), "enroll": _guarded(cmd_enroll), "revoke": _guarded(cmd_revoke)}


def add_subcommands(subparsers) -> dict:
    """Register ``ca``, ``enroll`` and ``revoke``; returns ``COMMANDS``, ``{command: handler(args)
    -> exit code}``, for the caller's dispatch."""
    ca = subparsers.add_parser("ca", help="the deployment's certificate authority")
    ca_sub = ca.add_subparsers(dest="ca_command", required=True)
    init = ca_sub.add_parser("init", help="create a CA key (ca.key, mode 0600) and certificate (ca.pem)")
    init.add_argument("--out", required=True, help="directory to write ca.pem and ca.key into")
    init.add_argument("--name", default="secagg deployment CA")
    init.add_argument("--days", type=int, default=3650, help="validity in days (default 3650)")
    init.add_argument("--passphrase-env", default=None, help="encrypt ca.key with $VAR")

    enr = subparsers.add_parser("enroll", help="issue a client identity and enrol it in the registry")
    enr.add_argument("--ca", required=True, help="directory holding ca.pem and ca.key")
    enr.add_argument("--registry", required=True, help="registry SQLite file (created if new)")
    enr.add_argument("--id", type=int, required=True, help="client id")
    enr.add_argument("--token", required=True, help="enrolment token")
    enr.add_argument("--examples", type=int, required=True, help="declared number of training examples")
    enr.add_argument("--out", default=None, help="directory for client-ID.pem and client-ID.key (default .)")
    enr.add_argument("--days", type=int, default=365, help="certificate validity in days (default 365)")
    enr.add_argument("--passphrase-env", default=None, help="ca.key is encrypted with $VAR")
    enr.add_argument("--max-per-token", type=int, default=_DEFAULTS.max_per_token)
    enr.add_argument("--window-seconds", type=float, default=_DEFAULTS.window_seconds)
    enr.add_argument("--max-per-window", type=int, default=_DEFAULTS.max_per_window)
    enr.add_argument("--min-examples", type=int, default=_DEFAULTS.min_declared_examples)

    rev = subparsers.add_parser("revoke", help="revoke a client's enrolment")
    rev.add_argument("--registry", required=True)
    rev.add_argument("--id", type=int, required=True)
    rev.add_argument("--reason", required=True)
    return COMMANDS
