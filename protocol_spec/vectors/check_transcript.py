#!/usr/bin/env python3
"""Check transcript.json independently of secagg: recompute every masked input.

Uses only the standard library and pyca/cryptography, and reads the frames as bytes (no CBOR
decoder): an AdvertiseKeys frame ends with the sender's 32-byte mask public key and then its
signature (an empty byte string, one byte of CBOR, or 64 bytes behind a 2-byte head in an
authenticated round), and a MaskedInput frame ends with its packed ring vector (SPEC.md sections 6
and 7). In an authenticated transcript it also checks every advert's Ed25519 signature. For each client u
whose masked input is in the transcript it computes

    q_u = floor(v) + [U < v - floor(v)],  v = (x + R) / (2R) * L,  U = top 53 bits of PRG(rounding_key)
    y_u = q_u + PRG(b_u) + sum_{v != u, v in U2} sign(u, v) PRG(HKDF(X25519(s_u, s_v^PK)))  mod 2^b

and compares it with the frame; then checks ring_sum = sum of q_u over the contributors.

    python3 protocol_spec/vectors/check_transcript.py [transcript.json]
"""

from __future__ import annotations

import json
import math
import struct
import sys
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def keystream(key: bytes, nbytes: int) -> bytes:
    return Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(nbytes))


def prg_words(seed: bytes, count: int, bits: int) -> list[int]:
    width = 4 if bits <= 32 else 8
    raw = keystream(seed, count * width)
    words = struct.unpack(f"<{count}{'I' if width == 4 else 'Q'}", raw)
    return [w & ((1 << bits) - 1) for w in words]


def pairwise_seed(private: bytes, peer_public: bytes, session: bytes, rnd: int, a: int, b: int) -> bytes:
    shared = X25519PrivateKey.from_private_bytes(private).exchange(X25519PublicKey.from_public_bytes(peer_public))
    purpose = b"pairwise-mask"
    info = (b"secagg/1" + bytes((len(purpose),)) + purpose + session + rnd.to_bytes(8, "big")
            + min(a, b).to_bytes(4, "big") + max(a, b).to_bytes(4, "big"))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def quantise(x: list[float], value_range: float, levels: int, rounding_key: bytes) -> list[int]:
    raw = keystream(rounding_key, 8 * len(x))
    uniforms = [(w >> 11) * 2.0**-53 for w in struct.unpack(f"<{len(x)}Q", raw)]
    out = []
    for xi, u in zip(x, uniforms):
        v = (xi + value_range) / (2 * value_range) * float(levels)
        f = math.floor(v)
        out.append(f + (1 if u < v - f else 0))
    return out


def main(path: str) -> int:
    vec = json.loads(Path(path).read_text())
    params, frames = vec["parameters"], vec["frames"]
    bits, dim, levels = params["bits"], params["dim"], vec["levels"]
    session, rnd = bytes.fromhex(vec["session_id"]), vec["round"]
    modulus = 1 << bits
    signed = params.get("authenticated", False)
    tail = 2 + 64 if signed else 1  # the signature field after the mask key
    adverts = {f["sender"]: bytes.fromhex(f["frame"]) for f in frames if f["type"] == "AdvertiseKeys"}
    mask_keys = {u: frame[-(tail + 32):-tail] for u, frame in adverts.items()}
    failures = 0
    for u, frame in adverts.items() if signed else ():
        context = (b"secagg/1 sig" + bytes((6,)) + b"advert" + session + rnd.to_bytes(8, "big")
                   + u.to_bytes(4, "big"))
        message = context + frame[-(tail + 32 + 2 + 32):-(tail + 32 + 2)] + mask_keys[u]
        public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(vec["identity_keys"][str(u)]))
        try:
            public.verify(frame[-64:], message)
            print(f"client {u}: advert signature verifies")
        except Exception:  # noqa: BLE001 - any failure is a failure
            failures += 1
            print(f"client {u}: advert signature DOES NOT VERIFY")
    u2 = sorted(f["sender"] for f in frames if f["type"] == "ShareKeys")
    packed_bytes = -(-dim * bits // 8)
    total = [0] * dim
    for f in frames:
        if f["type"] != "MaskedInput":
            continue
        u = f["sender"]
        secrets = vec["secrets"][str(u)]
        packed = int.from_bytes(bytes.fromhex(f["frame"])[-packed_bytes:], "little")
        sent = [(packed >> (bits * i)) & (modulus - 1) for i in range(dim)]
        q = quantise(vec["inputs"][str(u)], params.get("value_range", 1.0), levels, bytes.fromhex(secrets["rounding_key"]))
        y = [(qi + m) % modulus for qi, m in zip(q, prg_words(bytes.fromhex(secrets["self_mask_seed"]), dim, bits))]
        for v in u2:
            if v == u:
                continue
            seed = pairwise_seed(bytes.fromhex(secrets["mask_private_key"]), mask_keys[v], session, rnd, u, v)
            sign = 1 if u < v else -1
            y = [(yi + sign * m) % modulus for yi, m in zip(y, prg_words(seed, dim, bits))]
        ok = y == sent
        failures += not ok
        print(f"client {u}: masked input {'matches' if ok else 'DIFFERS'}")
        total = [(a + b) % modulus for a, b in zip(total, q)]
    ok = total == vec["ring_sum"]
    failures += not ok
    print(f"ring sum of the contributors' quantised inputs: {'matches' if ok else 'DIFFERS'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).with_name("transcript.json"))))
