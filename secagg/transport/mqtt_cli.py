"""``secagg serve`` and ``secagg client``: rounds across processes over an MQTT broker with mTLS.

    secagg serve  --broker HOST:PORT --tls DIR --clients N --dim D [--rounds R] [--json]
    secagg client --broker HOST:PORT --tls DIR --id I --input FILE.npy [--rounds R]

``--tls DIR`` is a directory written by ``secagg broker-config`` (the CA, the server's and each
client's certificate and key); ``--ca/--cert/--key`` name the files one by one instead. The server
waits ``--phase-timeout`` seconds per phase, then closes it; a client gives up after
``--idle-timeout`` seconds without a request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from secagg import telemetry
from secagg.errors import ConfigurationError, RoundAborted
from secagg.protocol.rounds import Stage


def _broker_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _tls_files(args, who: str) -> tuple[Path, Path, Path]:
    if args.tls:
        from secagg.transport.broker import BrokerFiles

        files = BrokerFiles.load(args.tls)
        if who == "server":
            return files.ca_cert, files.server_cert, files.server_key
        return files.ca_cert, files.client_cert(args.id), files.client_key(args.id)
    if not (args.ca and args.cert and args.key):
        raise ConfigurationError("give --tls DIR (from secagg broker-config) or all of --ca, --cert, --key")
    return Path(args.ca), Path(args.cert), Path(args.key)


def _broker(args, who: str):
    from secagg.transport.broker import tls_context
    from secagg.transport.mqtt import Broker

    ca, cert, key = _tls_files(args, who)
    host, port = args.broker
    return Broker(host, port, tls_context=tls_context(ca, cert, key))


def _common(p) -> None:
    p.add_argument("--broker", type=_broker_address, required=True, help="HOST:PORT of the MQTT broker")
    p.add_argument("--tls", type=Path, default=None, help="a directory written by secagg broker-config")
    p.add_argument("--ca", default=None)
    p.add_argument("--cert", default=None)
    p.add_argument("--key", default=None)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--connect-timeout", type=float, default=10.0,
                   help="seconds to reach the broker before giving up (exit 2)")


def add_subcommands(sub) -> None:
    serve = sub.add_parser("serve", help="run rounds as the aggregation server over an MQTT broker")
    _common(serve)
    serve.add_argument("--clients", type=int, required=True)
    serve.add_argument("--dim", type=int, required=True)
    serve.add_argument("--bits", type=int, default=32)
    serve.add_argument("--value-range", type=float, default=1.0)
    serve.add_argument("--dropout-rate", type=float, default=0.1, help="dropout rate the graph is planned for")
    serve.add_argument("--phase-timeout", type=float, default=30.0, help="seconds before a phase closes")
    serve.add_argument("--out", type=Path, default=None, help="write each round's sum to OUT/round-R.npy")
    serve.add_argument("--json", action="store_true", help="one JSON object per round")
    serve.add_argument("--no-progress", action="store_true")
    serve.add_argument("--signed-rounds", type=Path, default=None,
                       help="authenticated rounds: a directory of operator-signed configs "
                       "(secagg sign-rounds); --clients, --dim and the like then come from them")
    serve.add_argument("--registry", type=Path, default=None,
                       help="the client registry (read-only), for authenticated rounds")
    telemetry.add_arguments(serve)
    serve.set_defaults(handler=cmd_serve)

    sign = sub.add_parser("sign-rounds", help="the operator: make and sign the configs of R "
                          "authenticated rounds for `secagg serve --signed-rounds`")
    sign.add_argument("--operator-key", type=Path, required=True, help="the operator's Ed25519 private key (PEM)")
    sign.add_argument("--clients", type=int, required=True)
    sign.add_argument("--dim", type=int, required=True)
    sign.add_argument("--rounds", type=int, default=1)
    sign.add_argument("--bits", type=int, default=32)
    sign.add_argument("--value-range", type=float, default=1.0)
    sign.add_argument("--dropout-rate", type=float, default=0.1)
    sign.add_argument("--adversarial-rate", type=float, default=0.05)
    sign.add_argument("--out", type=Path, required=True)
    sign.set_defaults(handler=cmd_sign_rounds)

    client = sub.add_parser("client", help="join rounds as one client over an MQTT broker")
    _common(client)
    client.add_argument("--id", type=int, required=True)
    client.add_argument("--input", type=Path, required=True, help="the update, a .npy file")
    client.add_argument("--idle-timeout", type=float, default=120.0,
                        help="seconds without a request before the client gives up")
    client.add_argument("--operator-public-key", type=Path, default=None,
                        help="authenticated rounds: the operator's Ed25519 public key (PEM); the client "
                        "then refuses any round the operator did not sign")
    client.add_argument("--registry", type=Path, default=None, help="the client registry (read-only)")
    client.add_argument("--ledger", type=Path, default=None,
                        help="a file recording the rounds this client joined (refuses replays)")
    client.add_argument("--crash-at", choices=[s.value for s in Stage], default=None,
                        help=argparse.SUPPRESS)  # tests: exit abruptly on this round's request
    client.set_defaults(handler=cmd_client)


class _Progress:
    """One line on stderr per event: each phase's arrivals against its deadline."""

    def __init__(self, clients: int, timeout: float, enabled: bool) -> None:
        self.clients, self.timeout, self.enabled = clients, timeout, enabled and sys.stderr.isatty()

    def __call__(self, kind: str, log) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - log.started
        end = "\n" if kind == "phase" else ""
        print(f"\r{log.phase:>16}: {log.arrivals:>6} of {self.clients} arrived, "
              f"{elapsed:5.1f} s of {self.timeout:g} s", end=end, file=sys.stderr, flush=True)


def cmd_serve(args) -> int:
    from secagg import RoundConfig, Server
    from secagg.crypto import shamir
    from secagg.transport.mqtt import Link, serve

    broker = _broker(args, "server")
    session = os.urandom(16)
    status = 0
    signed, registry = _signed_rounds(args)
    metrics = telemetry.from_arguments(args, sys.stderr)

    async def run() -> None:
        nonlocal status
        async with Link(broker, f"secagg-server-{session.hex()}", connect_timeout=args.connect_timeout) as link:
            for rnd in range(len(signed) if signed else args.rounds):
                if signed:
                    config, signature = signed[rnd]
                    server = Server(config, identities=registry, config_signature=signature)
                else:
                    config = RoundConfig.create(args.clients, args.dim, bits=args.bits,
                                                value_range=args.value_range,
                                                dropout_rate=args.dropout_rate, round=rnd, session_id=session)
                    server = Server(config)
                shamir.warm_up_for_round(config.num_clients, config.threshold)
                t0 = time.monotonic()
                logs = await serve(server, link, phase_timeout=args.phase_timeout,
                                   on_event=_Progress(config.num_clients, args.phase_timeout, not args.no_progress))
                if metrics:
                    metrics.observe_round(server, phase_seconds={g.phase: g.seconds for g in logs})
                report = {"round": config.round, "clients": config.num_clients, "dim": config.dim,
                          "authenticated": config.authenticated,
                          "seconds": round(time.monotonic() - t0, 4),
                          "phases": [{"phase": g.phase, "arrivals": g.arrivals, "seconds": round(g.seconds, 4),
                                      "closed_by_deadline": g.closed_by_deadline} for g in logs[:-1]],
                          "excluded": {str(c): str(e) for c, e in sorted(server.excluded.items())},
                          "ignored": server.ignored.as_dict()}
                try:
                    result = server.result()
                except RoundAborted as exc:
                    status = 3
                    report.update(aborted=True, reason=exc.reason)
                else:
                    report.update(aborted=False, contributors=list(result.contributors),
                                  dropped=list(result.dropped),
                                  sum_head=[float(v) for v in result.values[:4]])
                    if args.out:
                        args.out.mkdir(parents=True, exist_ok=True)
                        np.save(args.out / f"round-{config.round}.npy", result.values)
                _print_round(report, args.json)

    try:
        return _run(run, "serve") or status
    finally:
        telemetry.hold_and_stop(metrics, args.metrics_hold, sys.stderr)


def _signed_rounds(args):
    """(list of (config, signature), registry) for --signed-rounds, or ([], None)."""
    if args.signed_rounds is None:
        return [], None
    from secagg.codec import decode_signed_config
    from secagg.identity import Registry

    if args.registry is None:
        raise ConfigurationError("--signed-rounds needs --registry: the server checks every signed advert")
    files = sorted(args.signed_rounds.glob("round-*.cbor"), key=lambda p: int(p.stem.split("-")[1]))
    if not files:
        raise ConfigurationError(f"{args.signed_rounds} holds no round-R.cbor (write them with secagg sign-rounds)")
    ca = _tls_files(args, "server")[0]
    return ([decode_signed_config(p.read_bytes()) for p in files],
            Registry.open_read_only(args.registry, ca_certificate=Path(ca).read_bytes()))


def cmd_sign_rounds(args) -> int:
    """The operator's side: R configs for one session, each signed; the server only relays them."""
    from secagg import RoundConfig
    from secagg.codec import encode_signed_config
    from secagg.model_signing import load_operator_key
    from secagg.protocol.keys import sign_config

    key = load_operator_key(args.operator_key)
    session = os.urandom(16)
    args.out.mkdir(parents=True, exist_ok=True)
    for rnd in range(args.rounds):
        config = RoundConfig.create(args.clients, args.dim, bits=args.bits, value_range=args.value_range,
                                    dropout_rate=args.dropout_rate, adversarial_rate=args.adversarial_rate,
                                    round=rnd, session_id=session, authenticated=True)
        (args.out / f"round-{rnd}.cbor").write_bytes(encode_signed_config(config, sign_config(config, key)))
    print(f"{args.rounds} signed round config(s) for session {session.hex()} in {args.out}: "
          f"{config.describe()}")
    return 0


def _print_round(report: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report), flush=True)
        return
    head = f"round {report['round']}: "
    if report["aborted"]:
        print(head + f"ABORTED: {report['reason']}", flush=True)
    else:
        print(head + f"sum of {len(report['contributors'])} of {report['clients']} clients in "
              f"{report['seconds']:.2f} s (dropped {report['dropped'] or 'none'}); first coordinates "
              f"{np.round(report['sum_head'], 6).tolist()}", flush=True)
    for g in report["phases"]:
        print(f"  {g['phase']:>16}: {g['arrivals']} arrivals in {g['seconds']:.3f} s"
              + (" (closed by its deadline)" if g["closed_by_deadline"] else ""))
    for c, why in report["excluded"].items():
        print(f"  excluded client {c}: {why}")


def cmd_client(args) -> int:
    from secagg import Client
    from secagg.transport.mqtt import Link, participate

    update = np.load(args.input, allow_pickle=False)
    broker = _broker(args, "client")
    crash = Stage(args.crash_at) if args.crash_at else None
    auth = _client_authentication(args)

    async def run() -> int:
        async with Link(broker, f"secagg-client-{args.id}", will_client=args.id,
                        connect_timeout=args.connect_timeout) as link:
            status = 0
            for _ in range(args.rounds):
                client = Client(args.id, update, **auth)
                if crash is not None:
                    _crash_on(client, crash)
                await participate(client, link, idle_timeout=args.idle_timeout)
                if client.error is not None:
                    print(f"secagg client {args.id}: refused: {client.error}", file=sys.stderr)
                    status = 4
                elif client.abort_reason:
                    print(f"secagg client {args.id}: round ended without it: {client.abort_reason}",
                          file=sys.stderr)
                    status = 3
            return status

    return _run(run, f"client {args.id}")


def _client_authentication(args) -> dict:
    """Client keyword arguments for authenticated rounds (with --operator-public-key)."""
    if args.operator_public_key is None:
        return {}
    from secagg.identity import ClientIdentity, Registry
    from secagg.model_signing import load_operator_public_key
    from secagg.protocol.ledger import RoundLedger

    if args.registry is None or not args.tls:
        raise ConfigurationError("an authenticated client needs --registry and --tls (its identity key)")
    operator = load_operator_public_key(args.operator_public_key).public_bytes_raw()
    ca = _tls_files(args, "client")[0]
    return dict(signing_key=ClientIdentity.load(args.tls, args.id),
                identities=Registry.open_read_only(args.registry, ca_certificate=Path(ca).read_bytes()),
                operator_key=operator, require_authenticated=True,
                ledger=RoundLedger(args.ledger) if args.ledger else None)


def _run(main, who: str) -> int:
    """Run the driver; a broker that cannot be reached ends the process with one line, exit 2."""
    from secagg.transport.mqtt import BrokerUnreachable

    try:
        return asyncio.run(main()) or 0
    except BrokerUnreachable as exc:
        print(f"secagg {who}: {exc}", file=sys.stderr)
        return 2


def _crash_on(client, stage: Stage) -> None:
    """Make the process die abruptly (no MQTT DISCONNECT, so the broker sends the Last Will) when
    the request of ``stage``'s round arrives: a client killed in that phase."""
    from secagg.protocol.rounds import ROUNDS

    index = [s.value for s in Stage].index(stage.value)
    request = ROUNDS[index].request
    receive = client.receive

    def dying_receive(frame, sender=0):
        from secagg.codec import decode

        if type(decode(frame)) is request:
            os._exit(9)
        return receive(frame, sender)

    client.receive = dying_receive


__all__ = ["add_subcommands", "cmd_client", "cmd_serve", "cmd_sign_rounds"]
