"""Registry lookups at round scale: what the server pays to learn n clients' identity keys.

A registry file with n enrolled clients (real CA, real certificates, one token each) is opened
read-only, as the aggregation server opens it, and timed (median of --runs, each in this process):

- ``verify_key``: n single lookups; ``cold`` on a fresh handle (every certificate parsed and its
  CA signature verified once), ``warm`` on the same handle again (certificates already verified,
  only revocation and the validity window re-checked);
- ``enrolled``: one bulk query for all n ids, cold and warm;
- ``enrolled_no_cert``: the bulk query trusting the file's columns (``check_certificate=False``);
- ``enrol``: enrolment throughput (issue + enrol, per client) while the file is built;
- ``sign`` / ``verify_signature``: one Ed25519 signature and one check, per call.

    python3 -m bench.identity [--clients 1000] [--runs 5]

writes bench/results/identity.json and identity.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from bench import median_seconds
from secagg.identity import CertificateAuthority, ClientIdentity, EnrolmentLimits, Registry, verify_signature

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    n = args.clients
    ca = CertificateAuthority.create("bench CA", valid_days=30)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "registry.db"
        limits = EnrolmentLimits(max_per_window=n)
        with Registry(path, ca_certificate=ca.certificate, limits=limits) as registry:
            t = time.perf_counter()
            for c in range(1, n + 1):
                identity = ClientIdentity.generate(c)
                cert = ca.issue_client_certificate(c, identity.public_key_bytes, valid_days=30)
                registry.enroll(c, cert, token=f"token-{c}", declared_examples=1)
            enrol = (time.perf_counter() - t) / n
        ids = list(range(1, n + 1))
        rows = {"enrol_per_client_s": enrol}
        for name, call in (("verify_key", lambda r: [r.verify_key(c) for c in ids]),
                           ("enrolled", lambda r: r.enrolled(ids)),
                           ("enrolled_no_cert", lambda r: r.enrolled(ids, check_certificate=False))):
            cold = []
            warm = []
            for _ in range(args.runs):
                with Registry.open_read_only(path, ca_certificate=ca.certificate) as reader:
                    t = time.perf_counter()
                    result = call(reader)
                    cold.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    call(reader)
                    warm.append(time.perf_counter() - t)
                assert len(result) == n
            rows[f"{name}_cold_s"] = statistics.median(cold)
            rows[f"{name}_warm_s"] = statistics.median(warm)
    identity = ClientIdentity.generate(1)
    message = bytes(96)
    signature = identity.sign(message)
    key = identity.public_key_bytes
    rows["sign_s"] = median_seconds(lambda: [identity.sign(message) for _ in range(1000)], args.runs) / 1000
    rows["verify_signature_s"] = median_seconds(lambda: [verify_signature(key, message, signature) for _ in range(1000)],
                                         args.runs) / 1000
    out = {"clients": n, "runs": args.runs, "cpu": platform.processor() or platform.machine(),
           "python": platform.python_version(), **rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "identity.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [f"# Registry lookups, {n} clients (median of {args.runs}, read-only file handle)", "",
             "| measurement | time |", "|---|---|"]
    for k, v in rows.items():
        lines.append(f"| {k[:-2]} | {v * 1e3:.3f} ms |")
    (RESULTS / "identity.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
