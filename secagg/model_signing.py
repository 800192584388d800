"""Signed global model: the operator signs each model and its round; clients refuse anything else.

Theory of operation (issue 9, item 5; SPEC section 13). The aggregation server relays the global
model, but it is not trusted to choose it: an operator key that is not the server's signs every
model together with its model id and round number, and a client trains only on a model whose
signature verifies, whose arrays hash to the signed digest, whose model id is the one it trains
and whose round is newer than any it accepted before (``ModelGuard``). A server that relays a
tampered model, a model from someone else, or an old model (replay) is refused by name.

Two forms of model, two signatures:

* In-memory arrays (what an FL adapter hands over): Ed25519 (pyca/cryptography) over a
  SHA-256 ``canonical_digest`` of a versioned, length-prefixed encoding of the model id, the
  round and every array's name, canonical little-endian dtype, shape and C-order bytes. The
  ``SignedModel`` record travels with the model as canonical CBOR.
* Model directories (a checkpoint on disk): the ``model-signing`` package (OpenSSF, 1.1.x)
  signs a manifest of every file's SHA-256 with an elliptic-curve key. It only takes EC keys
  (P-256/384/521), so the directory operator key is a separate P-256 key file beside the Ed25519
  one (``write_operator_keys`` makes both). model-signing has no field for a round number, so
  ``sign_directory`` first writes ``BINDING_FILE`` (model id and round, canonical JSON) into the
  directory; the manifest covers it, and ``verify_directory`` reads it only after the manifest
  verified. model-signing is an optional extra (``secagg[signing]``) imported lazily.

Secrets come only from the OS CSPRNG (``Ed25519PrivateKey.generate``, ``ec.generate_private_key``);
``operator_key_from_seed`` is the deterministic path for tests and vectors.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cbor2
import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from secagg.errors import (
    BadModelSignature,
    ConfigurationError,
    ModelDigestMismatch,
    ModelIdMismatch,
    ModelSignatureError,
    SigningUnavailable,
    StaleModel,
    UnsignedModel,
    UnsupportedModelArray,
)

DIGEST_MAGIC = b"secagg/model-digest"
DIGEST_VERSION = 1
# The signature covers this label and the digest: an operator signature over a model digest can
# never be replayed as a signature over some other secagg object (a round config, an advert).
SIGNATURE_LABEL = b"secagg/model-signature/v1\x00"
RECORD_VERSION = 1
MAX_RECORD_BYTES = 4096
MAX_MODEL_ID_BYTES = 256
BINDING_FILE = "secagg-model.json"
# bool, signed and unsigned integers, floats: the kinds whose bytes mean the same on every machine
# once put in little-endian order.
_NUMERIC_KINDS = frozenset("biuf")
_LIST, _DICT = 0, 1


# -- keys ------------------------------------------------------------------------------------

def generate_operator_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 operator key from the OS CSPRNG."""
    return Ed25519PrivateKey.generate()


def operator_key_from_seed(seed: bytes) -> Ed25519PrivateKey:
    """The deterministic path (tests, vectors): the Ed25519 key with this 32-byte seed."""
    return Ed25519PrivateKey.from_private_bytes(bytes(seed))


def private_key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_key_pem(key) -> bytes:
    if hasattr(key, "public_key"):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _pem(source: bytes | str | os.PathLike, what: str) -> bytes:
    if isinstance(source, bytes):
        return source
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the {what} at {source}: {exc.strerror}") from None


def load_operator_key(source: bytes | str | os.PathLike) -> Ed25519PrivateKey:
    """An Ed25519 operator private key from PEM bytes or a PEM file (unencrypted PKCS#8)."""
    try:
        key = serialization.load_pem_private_key(_pem(source, "operator private key"), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"not a PEM private key: {source if not isinstance(source, bytes) else 'bytes'} "
                                 f"({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"the operator key for arrays must be Ed25519, got {type(key).__name__} "
                                 "(an EC key signs model directories: use --dir)")
    return key


def load_operator_public_key(source: bytes | str | os.PathLike) -> Ed25519PublicKey:
    """An Ed25519 operator public key from PEM bytes or a PEM file (SubjectPublicKeyInfo)."""
    try:
        key = serialization.load_pem_public_key(_pem(source, "operator public key"))
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"not a PEM public key: {source if not isinstance(source, bytes) else 'bytes'} "
                                 f"({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigurationError(f"the operator public key for arrays must be Ed25519, got "
                                 f"{type(key).__name__} (an EC key verifies model directories: use --dir)")
    return key


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


@dataclass(frozen=True, slots=True, kw_only=True)
class OperatorKeyFiles:
    ed25519_private: Path
    ed25519_public: Path
    ec_private: Path
    ec_public: Path

    def all(self) -> list[Path]:
        return [self.ed25519_private, self.ed25519_public, self.ec_private, self.ec_public]


def write_operator_keys(directory: str | os.PathLike) -> OperatorKeyFiles:
    """Generate both operator key pairs into ``directory``: Ed25519 (arrays) and EC P-256
    (model directories, the only key type model-signing takes). Refuses to overwrite a key."""
    directory = Path(directory)
    files = OperatorKeyFiles(
        ed25519_private=directory / "operator-ed25519.pem",
        ed25519_public=directory / "operator-ed25519.pub.pem",
        ec_private=directory / "operator-ec-p256.pem",
        ec_public=directory / "operator-ec-p256.pub.pem",
    )
    existing = [str(p) for p in files.all() if p.exists()]
    if existing:
        raise ConfigurationError(f"refusing to overwrite existing operator key files: {', '.join(existing)} "
                                 "(choose another --out directory)")
    directory.mkdir(parents=True, exist_ok=True)
    ed = generate_operator_key()
    ecp = ec.generate_private_key(ec.SECP256R1())
    _write_private(files.ed25519_private, private_key_pem(ed))
    files.ed25519_public.write_bytes(public_key_pem(ed))
    _write_private(files.ec_private, private_key_pem(ecp))
    files.ec_public.write_bytes(public_key_pem(ecp))
    return files


# -- canonical digest ------------------------------------------------------------------------

def _u64(n: int) -> bytes:
    return struct.pack(">Q", n)


def _lp(data: bytes) -> bytes:
    return _u64(len(data)) + data


def _check_round(round: int) -> int:
    if isinstance(round, bool) or not isinstance(round, (int, np.integer)) or not 0 <= int(round) < 2**63:
        raise UnsupportedModelArray(f"round must be an integer in [0, 2^63), got {round!r}")
    return int(round)


def _check_model_id(model_id: str) -> bytes:
    if not isinstance(model_id, str) or not model_id:
        raise UnsupportedModelArray(f"model id must be a non-empty string, got {model_id!r}")
    encoded = model_id.encode("utf-8")
    if len(encoded) > MAX_MODEL_ID_BYTES:
        raise UnsupportedModelArray(f"model id is {len(encoded)} bytes; at most {MAX_MODEL_ID_BYTES}")
    return encoded


def _named_arrays(arrays) -> tuple[int, list[tuple[str, np.ndarray]]]:
    if isinstance(arrays, Mapping):
        items = []
        for name, value in arrays.items():
            if not isinstance(name, str):
                raise UnsupportedModelArray(f"array names must be strings, got {name!r}")
            items.append((name, value))
        # Sorted by code point, which is the order of their UTF-8 bytes: a dict's insertion order
        # is not part of the model.
        return _DICT, sorted(items, key=lambda item: item[0])
    if isinstance(arrays, np.ndarray) or not isinstance(arrays, Sequence):
        raise UnsupportedModelArray(f"a model is a list of arrays or a dict name -> array, got "
                                    f"{type(arrays).__name__}")
    return _LIST, [(str(i), value) for i, value in enumerate(arrays)]


def _canonical_array(name: str, value) -> tuple[str, np.ndarray]:
    if not isinstance(value, np.ndarray):
        raise UnsupportedModelArray(f"array {name!r} is a {type(value).__name__}, not a NumPy array")
    dtype = value.dtype
    if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise UnsupportedModelArray(f"array {name!r} has dtype {dtype} ({dtype.kind!r}), which has no canonical "
                                    "encoding: only bool, integer and real floating dtypes are signed")
    little = dtype.newbyteorder("<")
    return little.str, np.ascontiguousarray(value, dtype=little)


def _encoding(arrays, round: int, model_id: str):
    """The pieces of SPEC 13.1's encoding, in order (an array's values as a view, never copied
    again once in canonical form)."""
    round = _check_round(round)
    encoded_id = _check_model_id(model_id)
    kind, items = _named_arrays(arrays)
    yield _lp(DIGEST_MAGIC) + bytes([DIGEST_VERSION])
    yield _lp(encoded_id) + _u64(round) + bytes([kind]) + _u64(len(items))
    for name, value in items:
        dtype_str, array = _canonical_array(name, value)
        yield _lp(name.encode("utf-8")) + _lp(dtype_str.encode("ascii"))
        yield _u64(array.ndim) + b"".join(_u64(n) for n in array.shape) + _u64(array.nbytes)
        if array.nbytes:
            yield array.reshape(-1).view(np.uint8).data


def canonical_encoding(arrays, *, round: int, model_id: str) -> bytes:
    """The bytes ``canonical_digest`` hashes (for test vectors and other implementations)."""
    return b"".join(bytes(piece) for piece in _encoding(arrays, round, model_id))


def canonical_digest(arrays, *, round: int, model_id: str) -> bytes:
    """SHA-256 of the model's canonical encoding (SPEC section 13.1).

    ``arrays`` is a list of NumPy arrays (named by position) or a dict name -> array (in name
    order). The same values give the same digest on every machine, whatever the byte order and
    memory layout they are held in; any change of a value, dtype, shape, name, order, round or
    model id changes it.
    """
    h = hashlib.sha256()
    for piece in _encoding(arrays, round, model_id):
        h.update(piece)
    return h.digest()


# -- signed model ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class SignedModel:
    """The operator's signature over one model: travels with the model (``to_bytes``)."""

    model_id: str
    round: int
    digest: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_model_id(self.model_id)
        _check_round(self.round)
        if not isinstance(self.digest, bytes) or len(self.digest) != 32:
            raise UnsignedModel("signed-model record has no 32-byte digest", round=self.round,
                                model_id=self.model_id)
        if not isinstance(self.signature, bytes) or len(self.signature) != 64:
            raise UnsignedModel(f"model {self.model_id!r} round {self.round}: the record carries no 64-byte "
                                "Ed25519 signature", round=self.round, model_id=self.model_id)

    def to_bytes(self) -> bytes:
        """Canonical CBOR (RFC 8949 section 4.2.1) of a versioned map."""
        return cbor2.dumps({"v": RECORD_VERSION, "model_id": self.model_id, "round": self.round,
                            "digest": self.digest, "signature": self.signature}, canonical=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedModel:
        """Decode a record; anything but exactly a version-1 record is ``UnsignedModel``."""
        if not isinstance(data, (bytes, bytearray)) or not data:
            raise UnsignedModel("no signature came with the model (empty signed-model record)")
        if len(data) > MAX_RECORD_BYTES:
            raise UnsignedModel(f"signed-model record is {len(data)} bytes; at most {MAX_RECORD_BYTES}")
        try:
            obj = cbor2.loads(bytes(data))
        except Exception as exc:  # cbor2 raises several types for malformed input
            raise UnsignedModel(f"signed-model record does not decode as CBOR ({type(exc).__name__})") from None
        keys = {"v", "model_id", "round", "digest", "signature"}
        if not isinstance(obj, dict) or set(obj) != keys or obj["v"] != RECORD_VERSION:
            raise UnsignedModel(f"signed-model record is not a version-{RECORD_VERSION} record with fields "
                                f"{sorted(keys)}")
        try:
            record = cls(model_id=obj["model_id"], round=obj["round"], digest=obj["digest"],
                         signature=obj["signature"])
        except UnsupportedModelArray as exc:
            raise UnsignedModel(f"signed-model record is malformed: {exc}") from None
        if record.to_bytes() != bytes(data):
            raise UnsignedModel("signed-model record is not in canonical CBOR")
        return record


def _message(digest: bytes) -> bytes:
    return SIGNATURE_LABEL + digest


def sign_model(arrays, round: int, model_id: str, operator_key: Ed25519PrivateKey) -> SignedModel:
    """The operator signs ``arrays`` as model ``model_id`` for ``round``."""
    if not isinstance(operator_key, Ed25519PrivateKey):
        raise ConfigurationError(f"sign_model needs an Ed25519 operator key, got {type(operator_key).__name__}")
    digest = canonical_digest(arrays, round=round, model_id=model_id)
    return SignedModel(model_id=model_id, round=int(round), digest=digest,
                       signature=operator_key.sign(_message(digest)))


def _check_claims(model_id: str, round: int, *, expected_model_id, expected_round, min_round) -> None:
    if expected_model_id is not None and model_id != expected_model_id:
        raise ModelIdMismatch(f"model {model_id!r} round {round}: signed for model id {model_id!r}, "
                              f"expected {expected_model_id!r}", round=round, model_id=model_id)
    if expected_round is not None and round != expected_round:
        raise StaleModel(f"model {model_id!r}: signed for round {round}, expected round {expected_round}",
                         round=round, model_id=model_id)
    if min_round is not None and round < min_round:
        raise StaleModel(f"model {model_id!r}: signed for round {round}, older than round {min_round} "
                         "(a stale or replayed model)", round=round, model_id=model_id)


def verify_model(arrays, signed: SignedModel | bytes | None, operator_public_key: Ed25519PublicKey, *,
                 expected_round: int | None = None, min_round: int | None = None,
                 expected_model_id: str | None = None) -> SignedModel:
    """Raise unless ``signed`` is the operator's signature over exactly ``arrays``.

    Checks, in order: a signature is present (``UnsignedModel``); the model id and round are
    those asked for (``ModelIdMismatch``, ``StaleModel``); the signature verifies under the
    operator key (``BadModelSignature``); the arrays hash to the signed digest
    (``ModelDigestMismatch``). Returns the verified record.
    """
    if signed is None:
        raise UnsignedModel("no signature came with the model")
    if isinstance(signed, (bytes, bytearray)):
        signed = SignedModel.from_bytes(signed)
    if not isinstance(signed, SignedModel):
        raise UnsignedModel(f"no signature came with the model (got a {type(signed).__name__})")
    if not isinstance(operator_public_key, Ed25519PublicKey):
        raise ConfigurationError("verify_model needs the operator's Ed25519 public key, got "
                                 f"{type(operator_public_key).__name__}")
    _check_claims(signed.model_id, signed.round, expected_model_id=expected_model_id,
                  expected_round=expected_round, min_round=min_round)
    try:
        operator_public_key.verify(signed.signature, _message(signed.digest))
    except InvalidSignature:
        raise BadModelSignature(f"model {signed.model_id!r} round {signed.round}: the signature does not "
                                "verify under the operator key (signed by another key, or forged)",
                                round=signed.round, model_id=signed.model_id) from None
    digest = canonical_digest(arrays, round=signed.round, model_id=signed.model_id)
    if digest != signed.digest:
        raise ModelDigestMismatch(f"model {signed.model_id!r} round {signed.round}: the arrays do not match the "
                                  "signed digest (a value, dtype, shape, name or order was changed)",
                                  round=signed.round, model_id=signed.model_id)
    return signed


class ModelGuard:
    """What a client runs before it trains: only the operator's model, each round newer.

    ``accept`` verifies a model and returns its arrays; the first model must be at least
    ``min_round``, every later one strictly newer than the last accepted, so a replayed or
    stale model is refused even when its signature is good. ``failures`` counts refusals (the
    ``fl_model_signature_verification_failure_total`` metric).
    """

    def __init__(self, operator_public_key: Ed25519PublicKey, model_id: str, *, min_round: int = 0) -> None:
        if not isinstance(operator_public_key, Ed25519PublicKey):
            raise ConfigurationError("ModelGuard needs the operator's Ed25519 public key, got "
                                     f"{type(operator_public_key).__name__}")
        _check_model_id(model_id)
        self.operator_public_key = operator_public_key
        self.model_id = model_id
        self.min_round = _check_round(min_round)
        self.last_round: int | None = None
        self.failures = 0

    def accept(self, arrays, signed: SignedModel | bytes | None):
        floor = self.min_round if self.last_round is None else self.last_round + 1
        try:
            record = verify_model(arrays, signed, self.operator_public_key, min_round=floor,
                                  expected_model_id=self.model_id)
        except ModelSignatureError:
            self.failures += 1
            raise
        self.last_round = record.round
        return arrays


# -- model directories (model-signing) -------------------------------------------------------

def _model_signing():
    try:
        import model_signing  # noqa: F401  (the OpenSSF package, not this module)
        import model_signing.hashing
        import model_signing.signing
        import model_signing.verifying
    except ImportError as exc:
        raise SigningUnavailable(f"signing model directories needs the model-signing package ({exc}): "
                                 "pip install 'secagg[signing]'") from None
    return model_signing


def _binding_bytes(model_id: str, round: int) -> bytes:
    return json.dumps({"model_id": model_id, "round": round, "v": 1}, sort_keys=True,
                      separators=(",", ":")).encode() + b"\n"


_EC_CURVES = ("secp256r1", "secp384r1", "secp521r1")  # what model-signing 1.1 takes


def _check_ec_key_file(key_path, *, private: bool) -> None:
    """model-signing fails with an AttributeError on a non-EC key: say what is wrong instead."""
    what = "private" if private else "public"
    data = _pem(key_path, f"operator EC {what} key")
    try:
        key = (serialization.load_pem_private_key(data, password=None) if private
               else serialization.load_pem_public_key(data))
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"{key_path} is not a PEM {what} key ({exc})") from None
    expected = ec.EllipticCurvePrivateKey if private else ec.EllipticCurvePublicKey
    if not isinstance(key, expected) or key.curve.name not in _EC_CURVES:
        raise ConfigurationError(f"{key_path}: model directories are signed with an EC P-256 (or P-384/P-521) "
                                 f"key, got {type(key).__name__} (the Ed25519 key signs arrays: use --npz)")


def _ignored(path: Path, signature_path: Path) -> list[str]:
    try:
        return [str(signature_path.resolve().relative_to(path.resolve()))]
    except ValueError:
        return []


def sign_directory(path, private_key_path, signature_path, *, round: int | None = None,
                   model_id: str | None = None) -> None:
    """Sign every file under ``path`` with the EC (P-256) operator key via model-signing.

    With ``round`` and ``model_id`` (both or neither), first writes ``BINDING_FILE`` into the
    directory so that the signed manifest covers them. A signature file inside the directory and
    git files (``.git/``, ``.gitignore``, ``.gitattributes``, ``.github/``) are left out of the
    manifest, as model-signing's own verifier expects.
    """
    ms = _model_signing()
    path, signature_path = Path(path), Path(signature_path)
    if not path.is_dir():
        raise ConfigurationError(f"no model directory at {path}")
    if (round is None) != (model_id is None):
        raise ConfigurationError("give both round and model_id to bind them to the directory, or neither")
    _check_ec_key_file(private_key_path, private=True)  # before anything is written
    if round is None and (path / BINDING_FILE).exists():
        raise ConfigurationError(f"{path / BINDING_FILE} holds an earlier model id and round: give round and "
                                 "model_id, or remove the file, so that the signature does not bind a stale round")
    if round is not None:
        (path / BINDING_FILE).write_bytes(_binding_bytes(_check_model_id(model_id).decode(), _check_round(round)))
    # model-signing's verifier rebuilds its hashing settings from the manifest and always leaves
    # git files (.git/, .gitignore, .gitattributes, .github/) out, so signing must too.
    hashing = ms.hashing.Config().set_ignored_paths(paths=_ignored(path, signature_path), ignore_git_paths=True)
    try:
        ms.signing.Config().use_elliptic_key_signer(private_key=str(private_key_path)).set_hashing_config(
            hashing).sign(path, signature_path)
    except OSError as exc:
        raise ConfigurationError(f"cannot sign {path}: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"cannot sign {path} with {private_key_path}: {exc} (model-signing takes an "
                                 "EC P-256/384/521 private key in PEM)") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectoryBinding:
    model_id: str
    round: int


def verify_directory(path, public_key_path, signature_path, *, expected_model_id: str | None = None,
                     expected_round: int | None = None, min_round: int | None = None) -> DirectoryBinding | None:
    """Raise unless ``signature_path`` is the operator's model-signing signature over exactly the
    files under ``path``; then check the signed model id and round if asked. Returns the signed
    binding, or ``None`` for a directory signed without one."""
    ms = _model_signing()
    path, signature_path = Path(path), Path(signature_path)
    if not path.is_dir():
        raise ConfigurationError(f"no model directory at {path}")
    if not signature_path.is_file():
        raise UnsignedModel(f"model directory {path}: no signature at {signature_path}")
    _check_ec_key_file(public_key_path, private=False)
    try:
        verifier = ms.verifying.Config().use_elliptic_key_verifier(public_key=str(public_key_path))
    except OSError as exc:
        raise ConfigurationError(f"cannot read the operator public key at {public_key_path}: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"{public_key_path} is not an EC public key model-signing takes: {exc}") from None
    try:
        verifier.verify(path, signature_path)
    except InvalidSignature:
        raise BadModelSignature(f"model directory {path}: the signature does not verify under the operator "
                                "key (signed by another key, or forged)") from None
    except ValueError as exc:
        text = str(exc)
        if text.startswith("Signature mismatch"):
            raise ModelDigestMismatch(f"model directory {path}: files differ from those signed: "
                                      f"{text.removeprefix('Signature mismatch: ')}") from None
        if text.startswith("Key mismatch"):
            raise BadModelSignature(f"model directory {path}: signed by another key than the operator's") from None
        raise UnsignedModel(f"model directory {path}: {signature_path} is not a usable signature ({text})") from None
    except Exception as exc:  # a signature file that does not parse (JSON, protobuf errors)
        raise UnsignedModel(f"model directory {path}: {signature_path} is not a usable signature "
                            f"({type(exc).__name__})") from None
    binding_path = path / BINDING_FILE
    if not binding_path.exists():
        if expected_model_id is not None or expected_round is not None or min_round is not None:
            raise UnsignedModel(f"model directory {path}: signed without a model id and round ({BINDING_FILE}), "
                                "so its round cannot be checked")
        return None
    try:
        obj = json.loads(binding_path.read_bytes())
        binding = DirectoryBinding(model_id=obj["model_id"], round=_check_round(obj["round"]))
        _check_model_id(binding.model_id)
    except (ValueError, KeyError, TypeError, UnsupportedModelArray) as exc:
        raise UnsignedModel(f"model directory {path}: signed {BINDING_FILE} is malformed ({exc})") from None
    _check_claims(binding.model_id, binding.round, expected_model_id=expected_model_id,
                  expected_round=expected_round, min_round=min_round)
    return binding


# -- command line ----------------------------------------------------------------------------

def _load_npz(file) -> dict[str, np.ndarray]:
    try:
        with np.load(file, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except OSError as exc:
        raise ConfigurationError(f"cannot read {file}: {exc}") from None
    except ValueError as exc:  # object arrays need pickle: refused
        raise UnsupportedModelArray(f"{file}: {exc}") from None


def _cmd_operator_key(args) -> int:
    files = write_operator_keys(args.out)
    print(f"Ed25519 operator key (arrays, --npz): {files.ed25519_private} (public {files.ed25519_public})")
    print(f"EC P-256 operator key (model directories, --dir): {files.ec_private} (public {files.ec_public})")
    return 0


def _cmd_sign_model(args) -> int:
    if args.npz is not None:
        record = sign_model(_load_npz(args.npz), args.round, args.model_id, load_operator_key(args.key))
        Path(args.out).write_bytes(record.to_bytes())
    else:
        sign_directory(args.dir, args.key, args.out, round=args.round, model_id=args.model_id)
    print(f"signed model {args.model_id!r} round {args.round}: {args.out}")
    return 0


def _cmd_verify_model(args) -> int:
    if args.npz is not None:
        public = load_operator_public_key(args.public_key)
        try:
            data = Path(args.signature).read_bytes()
        except OSError:
            raise UnsignedModel(f"no signature at {args.signature}") from None
        verify_model(_load_npz(args.npz), data, public, expected_round=args.round, min_round=args.min_round,
                     expected_model_id=args.model_id)
    else:
        verify_directory(args.dir, args.public_key, args.signature, expected_model_id=args.model_id,
                         expected_round=args.round, min_round=args.min_round)
    print(f"ok: model {args.model_id!r} round {args.round} is signed by the operator")
    return 0


def _nonnegative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
    return value


def add_subcommands(subparsers) -> None:
    """Register ``operator-key``, ``sign-model`` and ``verify-model`` on the ``secagg`` parser.
    Each sets ``handler``; the CLI's ``main`` calls it and maps ``SecAggError`` to exit 2."""
    key = subparsers.add_parser("operator-key", help="generate the operator key pairs (Ed25519 and EC P-256)")
    key.add_argument("--out", required=True, help="directory for the key files (must not hold keys already)")
    key.set_defaults(handler=_cmd_operator_key)

    def model_source(p) -> None:
        source = p.add_mutually_exclusive_group(required=True)
        source.add_argument("--npz", help="model as a NumPy .npz (arrays by name; Ed25519 key)")
        source.add_argument("--dir", help="model directory, signed with model-signing (EC P-256 key)")
        p.add_argument("--model-id", required=True)

    sign = subparsers.add_parser("sign-model", help="sign a global model and its round with the operator key")
    sign.add_argument("--key", required=True, help="operator private key (PEM)")
    sign.add_argument("--round", type=_nonnegative, required=True)
    model_source(sign)
    sign.add_argument("--out", required=True, help="signature file to write")
    sign.set_defaults(handler=_cmd_sign_model)

    verify = subparsers.add_parser("verify-model", help="check a global model's signature, model id and round")
    verify.add_argument("--public-key", required=True, help="operator public key (PEM)")
    verify.add_argument("--round", type=_nonnegative, default=None, help="the round the model must be for")
    verify.add_argument("--min-round", type=_nonnegative, default=None, help="refuse a model older than this")
    model_source(verify)
    verify.add_argument("--signature", required=True)
    verify.set_defaults(handler=_cmd_verify_model)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run: secagg sign-model | verify-model | operator-key")
