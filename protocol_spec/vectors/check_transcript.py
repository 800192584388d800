#!/usr/bin/env python3
"""Check transcript.json independently of secagg: recompute every masked input.

Uses only the standard library and pyca/cryptography. Frames are read as bytes with a CBOR
*skipper* of a dozen lines (it finds where each top-level item of a frame starts and ends; it
builds no values): the AdvertiseKeysRequest's config array and signature, each AdvertiseKeys's
two keys and signature, and each MaskedInput's packed ring vector (SPEC.md sections 6 and 7).
From them it computes the session hash

    H = SHA-256("secagg/1 session" || "secagg/1 config" || 0x83 || sid || round || config || sig)

(in an authenticated transcript it first checks the operator's signature over the config, and
every advert's Ed25519 signature over H and the two keys); then, for each client u whose masked
input is in the transcript,

    q_u = floor(v) + [U < v - floor(v)],  v = (x + R) / (2R) * L,  U = top 53 bits of PRG(rounding_key)
    y_u = q_u + PRG(b_u) + sum_{v != u, v in U2} sign(u, v) PRG(HKDF(X25519(s_u, s_v^PK), pair(H, u, v)))

mod 2^b, and compares it with the frame; then checks ring_sum = sum of q_u over the contributors.

    python3 protocol_spec/vectors/check_transcript.py [transcript.json]
"""

from __future__ import annotations

import hashlib
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


def item_end(data: bytes, pos: int) -> int:
    """Where the CBOR item starting at ``pos`` ends (definite lengths, as canonical CBOR has)."""
    head, pos = data[pos], pos + 1
    major, info = head >> 5, head & 31
    arg = info
    if 24 <= info <= 27:
        width = 1 << (info - 24)
        arg, pos = int.from_bytes(data[pos:pos + width], "big"), pos + width
    elif info > 27:
        raise ValueError("not a definite-length item")
    if major in (2, 3):  # byte or text string
        return pos + arg
    if major == 4:  # array
        for _ in range(arg):
            pos = item_end(data, pos)
    return pos  # integers, floats (their bytes were the argument)


def items(frame: bytes) -> list[bytes]:
    """The encoded top-level items of a frame (a CBOR array)."""
    out, pos = [], 1 + (frame[0] & 31 >= 24)
    while pos < len(frame):
        end = item_end(frame, pos)
        out.append(frame[pos:end])
        pos = end
    return out


def content(item: bytes) -> bytes:
    """The bytes of an encoded byte string."""
    info = item[0] & 31
    return item[1 + (0 if info < 24 else 1 << (info - 24)):]


def pair_session(session: bytes, adverts: dict, a: int, b: int) -> bytes:
    lo, hi = min(a, b), max(a, b)
    return hashlib.sha256(b"secagg/1 pair" + session + lo.to_bytes(4, "big") + b"".join(adverts[lo])
                          + hi.to_bytes(4, "big") + b"".join(adverts[hi])).digest()


def pairwise_seed(private: bytes, peer_public: bytes, pair: bytes, a: int, b: int) -> bytes:
    shared = X25519PrivateKey.from_private_bytes(private).exchange(X25519PublicKey.from_public_bytes(peer_public))
    purpose = b"pairwise-mask"
    info = (b"secagg/1" + bytes((len(purpose),)) + purpose + pair
            + min(a, b).to_bytes(4, "big") + max(a, b).to_bytes(4, "big"))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def verifies(public: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
        return True
    except Exception:  # noqa: BLE001 - any failure is a failure
        return False


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
    modulus = 1 << bits
    signed = params.get("authenticated", False)
    failures = 0
    # [version, type, session label, round, sender, recipient, config, config signature]
    request = items(bytes.fromhex(next(f["frame"] for f in frames if f["type"] == "AdvertiseKeysRequest")))
    config_message = b"secagg/1 config" + b"\x83" + request[2] + request[3] + request[6]
    config_signature = content(request[7])
    session = hashlib.sha256(b"secagg/1 session" + config_message + config_signature).digest()
    if signed:
        ok = verifies(bytes.fromhex(vec["operator_public_key"]), config_signature, config_message)
        failures += not ok
        print(f"round config: operator signature {'verifies' if ok else 'DOES NOT VERIFY'}")
    adverts, advert_signatures = {}, {}
    for f in frames:
        if f["type"] == "AdvertiseKeys":  # [..., encryption key, mask key, signature]
            fields = items(bytes.fromhex(f["frame"]))
            adverts[f["sender"]] = (content(fields[5]), content(fields[6]))
            advert_signatures[f["sender"]] = content(fields[7])
    mask_keys = {u: pair[1] for u, pair in adverts.items()}
    for u in sorted(adverts) if signed else ():
        message = (b"secagg/1 sig" + bytes((6,)) + b"advert" + session + u.to_bytes(4, "big")
                   + adverts[u][0] + adverts[u][1])
        ok = verifies(bytes.fromhex(vec["identity_keys"][str(u)]), advert_signatures[u], message)
        failures += not ok
        print(f"client {u}: advert signature {'verifies' if ok else 'DOES NOT VERIFY'}")
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
            seed = pairwise_seed(bytes.fromhex(secrets["mask_private_key"]), mask_keys[v],
                                 pair_session(session, adverts, u, v), u, v)
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
