"""Signed global model (issue 9, item 5; SPEC section 13): clients refuse an unsigned, tampered,
foreign, stale or replayed model, each with a typed error that names what failed."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from secagg.errors import (
    BadModelSignature,
    ConfigurationError,
    ModelDigestMismatch,
    ModelIdMismatch,
    ModelSignatureError,
    StaleModel,
    UnsignedModel,
    UnsupportedModelArray,
)
from secagg.model_signing import (
    BINDING_FILE,
    ModelGuard,
    SignedModel,
    canonical_digest,
    load_operator_key,
    load_operator_public_key,
    operator_key_from_seed,
    private_key_pem,
    public_key_pem,
    sign_directory,
    sign_model,
    verify_directory,
    verify_model,
    write_operator_keys,
)

ROOT = Path(__file__).resolve().parent.parent
HAVE_MODEL_SIGNING = importlib.util.find_spec("model_signing") is not None
needs_model_signing = pytest.mark.skipif(
    not HAVE_MODEL_SIGNING, reason="model-signing not installed (pip install -e '.[test,signing]')")

KEY = operator_key_from_seed(bytes(range(32)))
OTHER = operator_key_from_seed(bytes(range(1, 33)))
PUB = KEY.public_key()


def model():
    return {"dense.w": np.arange(12, dtype=np.float32).reshape(3, 4),
            "dense.b": np.array([0.5, -1.0, 2.0], dtype=np.float32),
            "steps": np.array(7, dtype=np.int64)}


def test_round_trip_dict_and_list():
    signed = sign_model(model(), 3, "mnist-cnn", KEY)
    assert verify_model(model(), signed, PUB, expected_round=3, expected_model_id="mnist-cnn") == signed
    arrays = list(model().values())
    verify_model(arrays, sign_model(arrays, 0, "m", KEY), PUB)


def test_record_round_trips_as_canonical_cbor():
    signed = sign_model(model(), 3, "mnist-cnn", KEY)
    data = signed.to_bytes()
    assert SignedModel.from_bytes(data) == signed
    verify_model(model(), data, PUB, expected_round=3)
    with pytest.raises(UnsignedModel, match="CBOR"):
        SignedModel.from_bytes(data[:-3])


def test_digest_is_independent_of_byte_order_and_layout():
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    big = a.astype(">f8")
    fortran = np.asfortranarray(a)
    d = canonical_digest([a], round=1, model_id="m")
    assert canonical_digest([big], round=1, model_id="m") == d
    assert canonical_digest([fortran], round=1, model_id="m") == d
    assert canonical_digest([a.reshape(3, 2)], round=1, model_id="m") != d
    assert canonical_digest({"0": a}, round=1, model_id="m") != d  # a list is not a dict
    assert canonical_digest([a], round=2, model_id="m") != d
    assert canonical_digest([a], round=1, model_id="n") != d


def test_model_signature_vectors():
    import hashlib

    from conftest import load_vectors
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from secagg.model_signing import canonical_encoding

    v = load_vectors("model_signature.json")
    key = operator_key_from_seed(bytes.fromhex(v["operator_seed"]))
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(v["operator_public_key"]))
    assert key.public_key() == public
    for case in v["vectors"]:
        arrays = [np.array(a["values"], dtype=a["dtype"]).reshape(a["shape"]) for a in case["arrays"]]
        if case["form"] == "dict":
            arrays = {a["name"]: x for a, x in zip(case["arrays"], arrays)}
        encoding = canonical_encoding(arrays, round=case["round"], model_id=case["model_id"])
        assert encoding.hex() == case["encoding"]
        assert hashlib.sha256(encoding).hexdigest() == case["digest"]
        signed = sign_model(arrays, case["round"], case["model_id"], key)  # Ed25519 is deterministic
        assert signed.signature.hex() == case["signature"]
        assert signed.to_bytes().hex() == case["record"]
        verify_model(arrays, bytes.fromhex(case["record"]), public, expected_round=case["round"])


def test_directory_signing_without_model_signing_says_how_to_install(tmp_path, monkeypatch):
    from secagg.errors import SigningUnavailable

    for name in [m for m in sys.modules if m == "model_signing" or m.startswith("model_signing.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "model_signing", None)
    with pytest.raises(SigningUnavailable, match=r"secagg\[signing\]"):
        sign_directory(tmp_path, tmp_path / "k.pem", tmp_path / "s.sig")


def test_digest_known_answer():
    # Recomputed by hand from SPEC section 13.1 for one float32 array [1.0] named "w".
    import hashlib
    import struct

    def lp(b):
        return struct.pack(">Q", len(b)) + b

    q = lambda n: struct.pack(">Q", n)  # noqa: E731
    encoding = (lp(b"secagg/model-digest") + b"\x01" + lp(b"m") + q(5) + b"\x01" + q(1)
                + lp(b"w") + lp(b"<f4") + q(1) + q(1) + q(4) + struct.pack("<f", 1.0))
    assert canonical_digest({"w": np.array([1.0], np.float32)}, round=5, model_id="m") == \
        hashlib.sha256(encoding).digest()


@pytest.mark.parametrize("dtype", [object, np.complex64, "U3", [("a", "<i4")], "datetime64[s]"])
def test_non_numeric_dtypes_are_refused(dtype):
    bad = np.zeros(2, dtype=dtype)
    with pytest.raises(UnsupportedModelArray, match="canonical encoding"):
        canonical_digest({"x": bad}, round=0, model_id="m")


def test_one_flipped_bit_is_refused():
    signed = sign_model(model(), 3, "mnist-cnn", KEY)
    tampered = model()
    tampered["dense.w"].reshape(-1).view(np.uint8)[17] ^= 0x01
    with pytest.raises(ModelDigestMismatch, match="'mnist-cnn' round 3.*do not match the signed digest") as e:
        verify_model(tampered, signed, PUB)
    assert e.value.round == 3 and e.value.model_id == "mnist-cnn"


def test_changed_dtype_is_refused():
    signed = sign_model(model(), 3, "mnist-cnn", KEY)
    changed = model()
    changed["dense.b"] = changed["dense.b"].astype(np.float64)  # same values, other dtype
    with pytest.raises(ModelDigestMismatch):
        verify_model(changed, signed, PUB)


def test_reordered_dict_is_the_same_model_but_renamed_arrays_are_not():
    signed = sign_model(model(), 3, "mnist-cnn", KEY)
    verify_model(dict(reversed(list(model().items()))), signed, PUB)
    swapped = model()
    swapped["dense.w"], swapped["dense.b"] = swapped["dense.b"], swapped["dense.w"]
    with pytest.raises(ModelDigestMismatch):
        verify_model(swapped, signed, PUB)
    with pytest.raises(ModelDigestMismatch):  # a list is ordered
        verify_model(list(reversed(list(model().values()))), sign_model(list(model().values()), 3, "m", KEY),
                     PUB)


def test_another_key_is_refused():
    forged = sign_model(model(), 3, "mnist-cnn", OTHER)
    with pytest.raises(BadModelSignature, match="round 3.*does not verify under the operator key"):
        verify_model(model(), forged, PUB)


def test_a_changed_round_claim_is_refused():
    signed = sign_model(model(), 3, "mnist-cnn", KEY)
    relabelled = SignedModel(model_id="mnist-cnn", round=9, digest=signed.digest, signature=signed.signature)
    with pytest.raises(ModelDigestMismatch, match="round 9"):
        verify_model(model(), relabelled, PUB, min_round=4)


def test_stale_round_is_refused():
    signed = sign_model(model(), 3, "mnist-cnn", KEY)
    with pytest.raises(StaleModel, match="signed for round 3, older than round 4"):
        verify_model(model(), signed, PUB, min_round=4)
    with pytest.raises(StaleModel, match="signed for round 3, expected round 5"):
        verify_model(model(), signed, PUB, expected_round=5)


def test_model_id_mismatch_is_refused():
    signed = sign_model(model(), 3, "someone-else", KEY)
    with pytest.raises(ModelIdMismatch, match="'someone-else'.*expected 'mnist-cnn'"):
        verify_model(model(), signed, PUB, expected_model_id="mnist-cnn")


@pytest.mark.parametrize("record", [None, b"", b"\xa0", "not a record"])
def test_unsigned_model_is_refused(record):
    with pytest.raises(UnsignedModel):
        verify_model(model(), record, PUB)


def test_guard_accepts_increasing_rounds_and_refuses_replays():
    guard = ModelGuard(PUB, "mnist-cnn")
    first = sign_model(model(), 1, "mnist-cnn", KEY)
    assert guard.accept(model(), first) is not None
    with pytest.raises(StaleModel, match="replayed"):
        guard.accept(model(), first)  # the same, correctly signed model again
    second = model()
    second["steps"] = np.array(8, dtype=np.int64)
    guard.accept(second, sign_model(second, 2, "mnist-cnn", KEY).to_bytes())
    with pytest.raises(StaleModel):
        guard.accept(model(), first)
    with pytest.raises(ModelIdMismatch):
        guard.accept(model(), sign_model(model(), 5, "other", KEY))
    with pytest.raises(UnsignedModel):
        guard.accept(model(), None)
    with pytest.raises(BadModelSignature):
        guard.accept(model(), sign_model(model(), 6, "mnist-cnn", OTHER))
    assert guard.failures == 5
    assert guard.last_round == 2
    # A refusal does not move the guard: round 3 is still welcome.
    guard.accept(model(), sign_model(model(), 3, "mnist-cnn", KEY))
    assert isinstance(StaleModel("x"), ModelSignatureError)


def test_keys_save_and_load_as_pem(tmp_path):
    assert load_operator_key(private_key_pem(KEY)).public_key() == PUB
    assert load_operator_public_key(public_key_pem(KEY)) == PUB
    files = write_operator_keys(tmp_path / "keys")
    assert oct(files.ed25519_private.stat().st_mode & 0o777) == "0o600"
    key = load_operator_key(files.ed25519_private)
    verify_model(model(), sign_model(model(), 0, "m", key), load_operator_public_key(files.ed25519_public))
    with pytest.raises(ConfigurationError, match="must be Ed25519"):
        load_operator_key(files.ec_private)
    with pytest.raises(ConfigurationError, match="refusing to overwrite"):
        write_operator_keys(tmp_path / "keys")


# -- model directories --------------------------------------------------------------------

def _model_dir(root: Path) -> Path:
    d = root / "model"
    (d / "sub").mkdir(parents=True)
    (d / "weights.bin").write_bytes(bytes(range(256)) * 4)
    (d / "sub" / "config.json").write_text('{"layers": 2}')
    return d


@needs_model_signing
def test_directory_round_trip_and_tampering(tmp_path):
    keys = write_operator_keys(tmp_path / "keys")
    d = _model_dir(tmp_path)
    sig = tmp_path / "model.sig"
    sign_directory(d, keys.ec_private, sig, round=4, model_id="mnist-cnn")
    binding = verify_directory(d, keys.ec_public, sig, expected_model_id="mnist-cnn", expected_round=4)
    assert (binding.model_id, binding.round) == ("mnist-cnn", 4)
    with pytest.raises(StaleModel):
        verify_directory(d, keys.ec_public, sig, min_round=5)
    with pytest.raises(ModelIdMismatch):
        verify_directory(d, keys.ec_public, sig, expected_model_id="other")

    data = bytearray((d / "weights.bin").read_bytes())
    data[100] ^= 0x80
    (d / "weights.bin").write_bytes(bytes(data))
    with pytest.raises(ModelDigestMismatch, match="weights.bin"):
        verify_directory(d, keys.ec_public, sig)
    data[100] ^= 0x80
    (d / "weights.bin").write_bytes(bytes(data))
    verify_directory(d, keys.ec_public, sig)

    (d / "extra.bin").write_bytes(b"x")
    with pytest.raises(ModelDigestMismatch, match="extra.bin"):
        verify_directory(d, keys.ec_public, sig)
    (d / "extra.bin").unlink()
    (d / "sub" / "config.json").unlink()
    with pytest.raises(ModelDigestMismatch, match="config.json"):
        verify_directory(d, keys.ec_public, sig)
    (d / "sub" / "config.json").write_text('{"layers": 2}')

    # The round is bound: rewriting the binding file is tampering.
    (d / BINDING_FILE).write_text('{"model_id":"mnist-cnn","round":9,"v":1}\n')
    with pytest.raises(ModelDigestMismatch, match=BINDING_FILE):
        verify_directory(d, keys.ec_public, sig)


@needs_model_signing
def test_directory_signed_by_another_key_or_unsigned(tmp_path):
    keys = write_operator_keys(tmp_path / "keys")
    other = write_operator_keys(tmp_path / "other")
    d = _model_dir(tmp_path)
    sig = d / "model.sig"  # inside the directory: left out of the manifest
    (d / ".gitignore").write_text("*.tmp\n")  # git files are outside the manifest, as in model-signing
    sign_directory(d, other.ec_private, sig, round=1, model_id="m")
    verify_directory(d, other.ec_public, sig)
    with pytest.raises(BadModelSignature, match="another key"):
        verify_directory(d, keys.ec_public, sig)
    with pytest.raises(UnsignedModel):
        verify_directory(d, keys.ec_public, tmp_path / "missing.sig")
    (tmp_path / "junk.sig").write_text("{}")
    with pytest.raises(UnsignedModel):
        verify_directory(d, keys.ec_public, tmp_path / "junk.sig")
    with pytest.raises(ConfigurationError, match="EC"):
        sign_directory(d, keys.ed25519_private, tmp_path / "x.sig")


# -- command line -------------------------------------------------------------------------

def run(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "secagg", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=env)


def test_cli_npz_end_to_end(tmp_path):
    out = run("operator-key", "--out", tmp_path / "keys")
    assert out.returncode == 0, out.stderr
    keys = tmp_path / "keys"
    npz = tmp_path / "model.npz"
    np.savez(npz, **model())
    sig = tmp_path / "model.sig"
    out = run("sign-model", "--key", keys / "operator-ed25519.pem", "--round", 3, "--model-id", "mnist-cnn",
              "--npz", npz, "--out", sig)
    assert out.returncode == 0, out.stderr
    common = ["--public-key", keys / "operator-ed25519.pub.pem", "--model-id", "mnist-cnn", "--npz", npz,
              "--signature", sig]
    out = run("verify-model", "--round", 3, *common)
    assert out.returncode == 0, out.stderr
    out = run("verify-model", "--round", 4, *common)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "StaleModel" in out.stderr
    tampered = model()
    tampered["steps"] = np.array(8, dtype=np.int64)
    np.savez(npz, **tampered)
    out = run("verify-model", "--round", 3, *common)
    assert out.returncode == 2 and "ModelDigestMismatch" in out.stderr
    out = run("verify-model", "--round", 3, *common[:-1], tmp_path / "none.sig")
    assert out.returncode == 2 and "UnsignedModel" in out.stderr
    out = run("operator-key", "--out", keys)
    assert out.returncode == 2 and "refusing to overwrite" in out.stderr


@needs_model_signing
def test_cli_directory_end_to_end(tmp_path):
    assert run("operator-key", "--out", tmp_path / "keys").returncode == 0
    keys = tmp_path / "keys"
    d = _model_dir(tmp_path)
    sig = tmp_path / "model.sig"
    out = run("sign-model", "--key", keys / "operator-ec-p256.pem", "--round", 2, "--model-id", "m",
              "--dir", d, "--out", sig)
    assert out.returncode == 0, out.stderr
    common = ["--public-key", keys / "operator-ec-p256.pub.pem", "--model-id", "m", "--dir", d,
              "--signature", sig]
    out = run("verify-model", "--round", 2, *common)
    assert out.returncode == 0, out.stderr
    (d / "weights.bin").write_bytes(b"other weights")
    out = run("verify-model", "--round", 2, *common)
    assert out.returncode == 2 and "ModelDigestMismatch" in out.stderr
    assert out.stderr.strip().count("\n") == 0
