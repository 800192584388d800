"""Write the secagg-defined test vectors (mask PRG, key schedule, Shamir, bit packing, codec,
full-round transcript) from the reference implementation with fixed randomness.

    python protocol_spec/vectors/generate.py          # rewrite the files
    python protocol_spec/vectors/generate.py --check  # exit 1 if any file would change

The standards-derived files (x25519, hkdf_sha256, aes_ctr, aes_gcm, params) are copied by hand
from their documents and are not written here. See README.md in this folder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from secagg import codec
from secagg.config import RoundConfig
from secagg.crypto import kdf, prg, shamir
from secagg.crypto.randomness import DeterministicRandom
from secagg.params import AdversaryClass
from secagg.messages import (
    Abort,
    AdvertiseKeys,
    AdvertiseKeysRequest,
    EncryptedShares,
    ConsistencyCheck,
    ConsistencyCheckRequest,
    SurvivorSignature,
    MaskedInput,
    MaskedInputRequest,
    NeighbourKeys,
    RevealedShare,
    ShareKeys,
    ShareKeysRequest,
    UnmaskRequest,
    UnmaskResponse,
)
from secagg.protocol import keys
from secagg.identity import ClientIdentity
from secagg.sim.scenario import operator_key
from secagg.simulate import Stage, simulate

HERE = Path(__file__).parent
SESSION = bytes(range(16))
TRANSCRIPT_LABEL = "secagg/1 transcript vector"


def mask_prg() -> dict:
    rng = DeterministicRandom("mask-prg vectors")
    vectors = []
    for length, dtype in ((8, "uint32"), (4, "uint64"), (5, "uint32")):
        seed = rng(32)
        words = prg.expand(seed, length, np.dtype(dtype).type)
        vectors.append({"seed": seed.hex(), "dtype": dtype, "words": [int(w) for w in words]})
    zero = prg.expand(bytes(32), 4, np.uint32)
    vectors.append({"seed": "00" * 32, "dtype": "uint32", "words": [int(w) for w in zero]})
    return {
        "source": "secagg reference implementation: AES-256-CTR(key = seed, initial counter block = 0^16) "
        "keystream read as little-endian words. Seeds from DeterministicRandom('mask-prg vectors').",
        "vectors": vectors,
    }


def key_schedule() -> dict:
    rng = DeterministicRandom("key-schedule vectors")
    a_c, a_s, b_c, b_s = rng(32), rng(32), rng(32), rng(32)
    from secagg.crypto import kex
    from secagg.model_signing import operator_key_from_seed

    pub = {name: kex.public_key(k) for name, k in (("a_c", a_c), ("a_s", a_s), ("b_c", b_c), ("b_s", b_s))}
    config = codec_config()
    operator_seed = rng(32)
    operator = operator_key_from_seed(operator_seed)
    signature = keys.sign_config(config, operator)
    session = keys.session_hash(config, signature)
    pair = keys.pair_session(session, 3, (pub["a_c"], pub["a_s"]), 9, (pub["b_c"], pub["b_s"]))
    return {
        "source": "secagg reference implementation (SPEC.md, Key schedule). Private keys and the "
        "operator's Ed25519 seed from DeterministicRandom('key-schedule vectors'); the config is "
        "codec.json's. Client a is 3, client b is 9.",
        "config_message": keys.config_message(config).hex(),
        "operator_seed": operator_seed.hex(),
        "operator_public_key": operator.public_key().public_bytes_raw().hex(),
        "config_signature": signature.hex(),
        "session_hash": session.hex(),
        "session_hash_unsigned": keys.session_hash(config).hex(),
        "client_a": 3,
        "client_b": 9,
        **{f"{name}_private": k.hex() for name, k in (("a_c", a_c), ("a_s", a_s), ("b_c", b_c), ("b_s", b_s))},
        **{f"{name}_public": k.hex() for name, k in pub.items()},
        "pair_session": pair.hex(),
        "pairwise_info": kdf.context_info(kdf.PURPOSE_PAIRWISE_MASK, session=pair, client_a=3, client_b=9).hex(),
        "pairwise_mask_seed": keys.pairwise_mask_seed(a_s, pub["b_s"], session=pair, a=3, b=9).hex(),
        "share_encryption_info_3_to_9": kdf.context_info(
            kdf.PURPOSE_SHARE_ENCRYPTION, session=pair, client_a=3, client_b=9
        ).hex(),
        "sealed_3_to_9": keys.seal_shares(
            bytes(range(72)), encryption_private_key=a_c, recipient_key=pub["b_c"],
            session=pair, sender=3, recipient=9,
        ).hex(),
    }


def shamir_vectors() -> dict:
    rng = DeterministicRandom("shamir vectors")
    secrets = [rng(32), bytes(32), b"\xff" * 32]
    xs = [2, 5, 11, 12, 40]
    shares = shamir.split(secrets, xs, 3, DeterministicRandom("shamir coefficients"))
    return {
        "source": "secagg reference implementation: 31-bit chunks, GF(2^31 + 11), threshold 3 of 5. "
        "Coefficients from DeterministicRandom('shamir coefficients') by rejection sampling of "
        "little-endian 32-bit words below p. Any 3 shares reconstruct each secret.",
        "prime": shamir.PRIME,
        "threshold": 3,
        "xs": xs,
        "secrets": [s.hex() for s in secrets],
        "shares": [[holder[j].hex() for j in range(len(secrets))] for holder in shares],
    }


def bitpack() -> dict:
    vectors = []
    for bits, values in ((1, [1, 0, 1, 1, 0]), (5, [31, 0, 17, 3]), (13, [8191, 1, 4096]), (32, [1, 2**32 - 1]), (62, [2**62 - 1, 5])):
        arr = np.array(values, dtype=np.uint32 if bits <= 32 else np.uint64)
        vectors.append({"bits": bits, "values": values, "packed": codec.pack_bits(arr, bits).hex()})
    return {
        "source": "secagg reference implementation: coordinates little-endian, b bits each, LSB first, zero padded",
        "vectors": vectors,
    }


def codec_config() -> RoundConfig:
    return RoundConfig(
        session_id=SESSION, round=3, num_clients=5, dim=4, bits=13, degree=4, threshold=3,
        graph_seed=bytes(range(32)), value_range=1.0, levels=1638, authenticated=True,
        adversary=AdversaryClass.MALICIOUS, adversarial_rate=0.2, dropout_rate=0.0,
    )


def codec_vectors() -> dict:
    rng = DeterministicRandom("codec vectors")
    config = codec_config()
    head = dict(session_id=SESSION, round=3)
    msgs = [
        AdvertiseKeysRequest(**head, sender=0, recipient=2, config=config, config_signature=rng(64)),
        AdvertiseKeys(**head, sender=2, encryption_key=rng(32), mask_key=rng(32), signature=rng(64)),
        ShareKeysRequest(**head, sender=0, recipient=2, neighbour_keys=(
            NeighbourKeys(client=1, encryption_key=rng(32), mask_key=rng(32), signature=rng(64)),)),
        ShareKeys(**head, sender=2, self_mask_commitment=rng(32),
                  encrypted_shares=(EncryptedShares(peer=1, ciphertext=rng(88)),)),
        MaskedInputRequest(**head, sender=0, recipient=2, encrypted_shares=(
            EncryptedShares(peer=1, ciphertext=rng(88)),)),
        MaskedInput(**head, sender=2, complaints=(3,), bits=13,
                    masked=np.array([0, 1, 4096, 8191], dtype=np.uint32)),
        ConsistencyCheckRequest(**head, sender=0, recipient=2, survivors=(1, 2, 3)),
        ConsistencyCheck(**head, sender=2, signature=rng(64)),
        UnmaskRequest(**head, sender=0, recipient=2, survivors=(1, 3), dropped=(4,),
                      consistency=(SurvivorSignature(peer=1, signature=rng(64)),
                                   SurvivorSignature(peer=3, signature=rng(64)))),
        UnmaskResponse(**head, sender=2,
                       self_mask_shares=(RevealedShare(peer=1, share=rng(36)), RevealedShare(peer=3, share=rng(36))),
                       key_shares=(RevealedShare(peer=4, share=rng(36)),)),
        Abort(**head, sender=0, recipient=2, reason="example"),
    ]
    return {
        "source": "secagg reference implementation: one frame of each message type (SPEC.md, Wire format); "
        "random fields from DeterministicRandom('codec vectors')",
        "vectors": [{"type": m.name, "frame": codec.encode(m).hex()} for m in msgs],
    }


def transcript_inputs() -> dict[int, list[float]]:
    return {c: [round(0.1 * c - 0.05 * i, 6) for i in range(6)] for c in range(1, 6)}


TRANSCRIPT_PARAMS = dict(
    clients=5, dim=6, bits=16, full_graph=True, threshold=3, adversarial_rate=0.0,
    schedule={4: Stage.MASKED_INPUT},
)


def run_transcript(authenticated: bool = False) -> tuple[list, object]:
    inputs = transcript_inputs()
    frames: list = []
    report = simulate(
        **TRANSCRIPT_PARAMS,
        authenticated=authenticated,
        inputs=lambda c: np.array(inputs[c]),
        insecure_deterministic=TRANSCRIPT_LABEL,
        transcript=frames,
    )
    return frames, report


def client_secrets(client: int) -> dict[str, str]:
    """What client ``client`` drew, by label (SPEC.md 4.7): enough to recompute its masked input
    independently (``check_transcript.py``)."""
    root = DeterministicRandom(TRANSCRIPT_LABEL).fork("client", client)
    return {
        "mask_private_key": root.fork("mask_key")(32).hex(),
        "self_mask_seed": root.fork("self_mask_seed")(32).hex(),
        "rounding_key": root.fork("quantize")(32).hex(),
    }


def transcript(authenticated: bool = False) -> dict:
    frames, report = run_transcript(authenticated)
    params = dict(TRANSCRIPT_PARAMS, authenticated=authenticated)
    params["schedule"] = {str(c): s.value for c, s in params["schedule"].items()}
    config = report.result.config
    return {
        "source": "secagg reference implementation, simulate() with all randomness from "
        f"DeterministicRandom({TRANSCRIPT_LABEL!r}) forked by label (SPEC.md 4.7): config, server, "
        "and client c's streams fork('client', c, label). Client 4 drops after ShareKeys, so its "
        "mask key is reconstructed. check_transcript.py recomputes every masked input from "
        "'secrets' with cryptography alone.",
        "parameters": params,
        "session_id": config.session_id.hex(),
        "round": config.round,
        **({"operator_public_key": operator_key(DeterministicRandom(TRANSCRIPT_LABEL))
            .public_key().public_bytes_raw().hex()} if authenticated else {}),
        "levels": config.levels,
        "inputs": {str(c): v for c, v in transcript_inputs().items()},
        "secrets": {str(c): client_secrets(c) for c in range(1, 6)},
        **({"identity_keys": {
            str(c): ClientIdentity.from_seed(
                c, DeterministicRandom(TRANSCRIPT_LABEL).fork("client", c, "identity")(32)).public_key_bytes.hex()
            for c in range(1, 6)}} if authenticated else {}),
        "frames": [
            {"direction": d, "sender": s, "recipient": r,
             "type": codec.decode(f).name, "frame": f.hex()}
            for d, s, r, f in frames
        ],
        "ring_sum": [int(v) for v in report.result.ring_sum],
        "contributors": list(report.result.contributors),
    }


def privacy_plan() -> dict:
    from secagg.privacy import DPPlan, rotation

    seed = bytes(range(32, 64))
    plan = DPPlan.create(((3, 4), (7,)), clip=2.0, noise_multiplier=1.1, min_clients=8,
                         max_clients=10, rotation_seed=seed)
    fixed = DPPlan.create(((3, 4), (7,)), clip=2.0, noise_multiplier=1.1, min_clients=8,
                          max_clients=10, bits=20, rotation_seed=seed)
    x = np.arange(1, 20, dtype=np.float64) / 10
    one = plan.accounting(rounds=1, delta=1e-5)
    ten = plan.accounting(rounds=10, sampling=0.5, delta=1e-5)
    return {
        "source": "secagg reference implementation (SPEC.md section 10): plan derivation, "
        "rotation, accounting. Floats are printed with repr; compare with a relative tolerance "
        "of 1e-9 (epsilon values 1e-6: they come from a numerical optimisation over orders, or "
        "dp-accounting's PLD accountant). epsilon_* is min(PLD, RDP) and accountant_* says "
        "which; rdp_epsilon_* is the RDP figure alone.",
        "shapes": [[3, 4], [7]], "clip": 2.0, "noise_multiplier": 1.1, "min_clients": 8,
        "max_clients": 10, "rotation_seed": seed.hex(),
        "auto": {"bits": plan.bits, "gamma": plan.gamma, "flag_scale": plan.flag_scale,
                 "wrap_bound": plan.wrap_bound(), "norm_bound": plan.norm_bound,
                 "epsilon_1_round": one.epsilon, "accountant_1_round": one.accountant,
                 "rdp_epsilon_1_round": one.rdp_epsilon,
                 "epsilon_10_rounds_q05": ten.epsilon, "accountant_10_rounds_q05": ten.accountant,
                 "rdp_epsilon_10_rounds_q05": ten.rdp_epsilon},
        "bits_20": {"bits": fixed.bits, "gamma": fixed.gamma, "flag_scale": fixed.flag_scale},
        "signs": [int(v) for v in rotation.signs(seed, 32)],
        "input": x.tolist(),
        "rotated": rotation.rotate(x, seed).tolist(),
    }


def model_signature() -> dict:
    """SPEC.md 13: the canonical encoding, digest, Ed25519 signature and CBOR record of two models."""
    from secagg import model_signing as ms

    seed = DeterministicRandom(b"model-signature")(32)
    key = ms.operator_key_from_seed(seed)
    models = [
        ("dict", {"w": np.array([[1.5, -2.0], [0.0, 3.25]], dtype=np.float64),
                  "b": np.array([0.5, -1.5], dtype=np.float32),
                  "steps": np.array(7, dtype=np.int64),
                  "mask": np.array([True, False, True]),
                  "q": np.array([1, 513], dtype=">u2")}, 7, "mnist-cnn"),
        ("list", [np.arange(3, dtype=np.int8), np.zeros((0, 2), dtype=np.float16)], 0, "m"),
    ]
    out = []
    for form, arrays, round_, model_id in models:
        named = arrays.items() if isinstance(arrays, dict) else enumerate(arrays)
        signed = ms.sign_model(arrays, round_, model_id, key)
        out.append({
            "form": form, "model_id": model_id, "round": round_,
            "arrays": [{"name": str(name), "dtype": a.dtype.str, "shape": list(a.shape),
                        "values": a.tolist()} for name, a in named],
            "encoding": ms.canonical_encoding(arrays, round=round_, model_id=model_id).hex(),
            "digest": signed.digest.hex(), "signature": signed.signature.hex(),
            "record": signed.to_bytes().hex(),
        })
    return {
        "source": "secagg generate.py: operator Ed25519 key from seed DeterministicRandom('model-signature'), "
                  "32 bytes; SPEC.md section 13",
        "operator_seed": seed.hex(),
        "operator_public_key": key.public_key().public_bytes_raw().hex(),
        "vectors": out,
    }


FILES = {
    "model_signature.json": model_signature,
    "privacy_plan.json": privacy_plan,
    "mask_prg.json": mask_prg,
    "key_schedule.json": key_schedule,
    "shamir.json": shamir_vectors,
    "bitpack.json": bitpack,
    "codec.json": codec_vectors,
    "transcript.json": transcript,
    "transcript_authenticated.json": lambda: transcript(authenticated=True),
}


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, make in FILES.items():
        text = json.dumps(make(), indent=2) + "\n"
        path = HERE / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print("stale vectors:", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
