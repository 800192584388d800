"""What a Flower round carries besides secagg's frames: record names, the model layout, errors.

A secagg frame travels in one ``ConfigRecord`` named :data:`RECORD` of a Flower ``Message``:
``frame`` (bytes), and from the server also ``client`` (this node's index 1..n in the round) and
``stage`` (the phase whose request it is). The first request also carries ``layout``: canonical
CBOR of the model's array shapes and dtypes and how updates are encoded (:class:`Layout`). At the
MaskedInput stage the server adds the training instruction (the legacy ``FitIns`` records, or the
Message-API strategy's train content) to the same message, so a client trains once it holds its
neighbours' shares, as in Flower's own SecAgg+.

A client's update is one float vector: its arrays flattened in order, each scaled by its weight
``w / max_weight``, then that weight itself (weighted averaging: the sample count is part of the
secure sum, never sent in the clear). The server divides the summed arrays by the summed weight.
With DP the update is the clipped model delta, unweighted (DP-FedAvg), encoded by the privacy
layer's ``DPEncoder`` under the plan the layout carries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import cbor2
import numpy as np

from secagg import errors
from secagg.codec import canonical_cbor
from secagg.errors import ConfigurationError, InvalidInput, MalformedMessage, SecAggError
from secagg.privacy.encoder import DPPlan, Mechanism

RECORD = "secagg"  # the ConfigRecord that carries a frame, in both directions
STATE = "secagg.client"  # the ConfigRecord in a node's context that keeps its client between messages
LAYOUT_VERSION = 1
FLOAT_DTYPES = ("float32", "float64")

# Flower reports a ClientApp's exception as text; the tag carries the error's class to the server.
_TAG = re.compile(r"\[secagg:(\w+)\]")


def tagged(exc: SecAggError) -> str:
    """``exc``'s message with its class, as the server will read it out of a Flower error reply."""
    return f"[secagg:{type(exc).__name__}] {exc}"


def error_from_reason(reason: str) -> SecAggError:
    """The typed error a client refused with, rebuilt from a Flower error reply's reason (an
    untagged reason, a crash or a timeout, is a ``SecAggError``)."""
    match = _TAG.search(reason or "")
    cls = getattr(errors, match.group(1), None) if match else None
    if not (isinstance(cls, type) and issubclass(cls, SecAggError)):
        cls = SecAggError
    text = reason[match.end():].strip() if match else (reason or "no reason given")
    text = text.removesuffix("'>")  # Flower's runtime writes "<class ...>:<'message'>"
    return cls(text)


@dataclass(frozen=True, slots=True)
class Layout:
    """The model's arrays and how a client turns its result into one vector (SPEC 16)."""

    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    weighted: bool  # FedAvg weighting: arrays scaled by w / max_weight, then the weight itself
    max_weight: float
    weight_key: str  # Message API: the MetricRecord entry that holds the weight; legacy: num_examples
    message_api: bool
    plan: DPPlan | None = None  # DP: the update is the model delta, encoded under this plan

    @property
    def size(self) -> int:
        return sum(int(np.prod(s)) for s in self.shapes)

    @property
    def dim(self) -> int:
        """The length of the vector a client sends (before the privacy layer's padding)."""
        if self.plan is not None:
            return self.plan.ring_dim
        return self.size + (1 if self.weighted else 0)

    @classmethod
    def of(cls, arrays, *, weighted: bool, max_weight: float, weight_key: str, message_api: bool,
           plan: DPPlan | None = None) -> Layout:
        shapes, dtypes = [], []
        for i, a in enumerate(arrays):
            a = np.asarray(a)
            if a.dtype.name not in FLOAT_DTYPES:
                raise ConfigurationError(
                    f"model array {i} is {a.dtype.name}; secure aggregation sums float32/float64 "
                    "arrays (keep integer state such as step counters out of the model)")
            shapes.append(tuple(int(x) for x in a.shape))
            dtypes.append(a.dtype.name)
        if not shapes:
            raise ConfigurationError("the model has no arrays: there is nothing to aggregate")
        return cls(shapes=tuple(shapes), dtypes=tuple(dtypes), weighted=weighted,
                   max_weight=float(max_weight), weight_key=weight_key, message_api=message_api, plan=plan)

    def to_bytes(self) -> bytes:
        plan = None
        if self.plan is not None:
            p = self.plan
            plan = [[list(s) for s in p.shapes], p.clip, p.noise_multiplier, p.mechanism.value,
                    p.min_clients, p.max_clients, p.bits, p.gamma, p.rotate, p.rotation_seed, p.beta,
                    p.wrap_probability, p.flag_weight]
        return canonical_cbor([LAYOUT_VERSION, [list(s) for s in self.shapes], list(self.dtypes),
                               self.weighted, self.max_weight, self.weight_key, self.message_api, plan])

    @classmethod
    def from_bytes(cls, data: bytes) -> Layout:
        try:
            v = cbor2.loads(data)
            if not (isinstance(v, list) and len(v) == 8 and v[0] == LAYOUT_VERSION):
                raise ValueError(f"expected [{LAYOUT_VERSION}, ...7 fields]")
            _, shapes, dtypes, weighted, max_weight, weight_key, message_api, plan = v
            shapes = tuple(tuple(int(x) for x in s) for s in shapes)
            if len(dtypes) != len(shapes) or any(d not in FLOAT_DTYPES for d in dtypes):
                raise ValueError(f"dtypes must be one of {FLOAT_DTYPES} per array")
            if not (isinstance(max_weight, float) and max_weight > 0):
                raise ValueError("max_weight must be a float > 0")
            if plan is not None:
                (pshapes, clip, z, mech, m_min, m_max, bits, gamma, rotate, seed, beta, wrap, flag) = plan
                plan = DPPlan(shapes=tuple(tuple(int(x) for x in s) for s in pshapes), clip=float(clip),
                              noise_multiplier=float(z), mechanism=Mechanism(mech), min_clients=int(m_min),
                              max_clients=int(m_max), bits=int(bits), gamma=float(gamma), rotate=bool(rotate),
                              rotation_seed=bytes(seed), beta=float(beta), wrap_probability=float(wrap),
                              flag_weight=float(flag))
                if plan.shapes != shapes:
                    raise ValueError("the privacy plan's shapes are not the model's")
            return cls(shapes=shapes, dtypes=tuple(dtypes), weighted=bool(weighted), max_weight=max_weight,
                       weight_key=str(weight_key), message_api=bool(message_api), plan=plan)
        except (ValueError, TypeError, KeyError, cbor2.CBORDecodeError) as exc:
            raise MalformedMessage(f"not a model layout: {exc}") from None

    # --- the client's side --------------------------------------------------------------------

    def check_arrays(self, arrays, what: str) -> list[np.ndarray]:
        """``arrays`` as float64, refused by name unless they are this model's shapes, finite."""
        arrays = list(arrays)
        if len(arrays) != len(self.shapes):
            raise InvalidInput(f"{what} has {len(arrays)} arrays; the model has {len(self.shapes)}")
        out = []
        for i, (a, shape) in enumerate(zip(arrays, self.shapes)):
            a = np.asarray(a)
            if a.shape != shape:
                raise InvalidInput(f"{what}: array {i} has shape {a.shape}; the model's is {shape}")
            if a.dtype.kind not in "fiu" or a.dtype.kind == "b":
                raise InvalidInput(f"{what}: array {i} is {a.dtype.name}, not a real number type")
            a = a.astype(np.float64)
            bad = int(np.count_nonzero(~np.isfinite(a)))
            if bad:
                raise InvalidInput(f"{what}: array {i} has {bad} NaN or infinite value(s)")
            out.append(a)
        return out

    def vector(self, arrays: list[np.ndarray], weight: float) -> np.ndarray:
        """The vector a client sends for ``arrays`` (checked) with sample count ``weight``."""
        flat = np.concatenate([a.ravel() for a in arrays])
        if not self.weighted:
            return flat
        if not (np.isfinite(weight) and 0 < weight <= self.max_weight):
            raise InvalidInput(f"weight (sample count) {weight} is outside (0, max_weight = "
                               f"{self.max_weight:g}]; it is refused, not capped")
        u = weight / self.max_weight
        return np.append(flat * u, u)

    # --- the server's side --------------------------------------------------------------------

    def arrays(self, flat: np.ndarray) -> list[np.ndarray]:
        """``flat`` cut into the model's arrays, in the model's dtypes."""
        out, start = [], 0
        for shape, dtype in zip(self.shapes, self.dtypes):
            size = int(np.prod(shape))
            out.append(flat[start:start + size].reshape(shape).astype(dtype))
            start += size
        return out
