"""The client's privacy pipeline and the server's decoder (distributed DP in the ring).

Client, in order (Kairouz et al. 2021; TFF's DistributedDpSumFactory, with its weak points fixed):
1. validate the update: the agreed tensor shapes, a real dtype, every value finite;
2. flatten, and (default) rotate with a randomized Hadamard transform under the round's public seed;
3. L2-clip to C; whether the client clipped becomes one extra coordinate of weight w C (default
   w = 0.1; w = 0 leaves the coordinate out), so the server learns only the (noised) number of
   clients that clipped;
4. scale by 1/gamma and round stochastically, resampling until the rounded vector's norm is within
   the published inflated bound (conditional rounding: the sensitivity the accountant uses);
5. add discrete noise (discrete Gaussian or Skellam) of variance sigma_c^2 = (z C / gamma)^2 / m_min
   per coordinate;
6. wrap into Z_(2^b).
Randomness: one stream, the encoder's injected ``rng`` (the OS CSPRNG in production, a labelled
fork in tests and the simulator). Each rounding try takes 32 bytes and expands them into uniforms
with the quantiser's own ``rounding_uniforms`` (the mask PRG, SPEC section 4.3); the next 32 bytes
seed the noise sampler. Nothing else draws.

The server takes the exact ring sum from SecAgg and maps it back: centred lift, times gamma,
inverse rotation, reshape.

The plan (gamma, b) is chosen so that no coordinate of the sum of up to n clients wraps, except
with probability ``wrap_probability`` per round: per coordinate the aligned signal of n clients
(a rotated coordinate of a norm-C vector exceeds C sqrt(2 ln(4nD/p)/D) with probability below
p/(2nD), by Hoeffding), plus n for rounding, plus a Bernstein bound on the summed noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from secagg.crypto import prg
from secagg.crypto.randomness import RandomSource, system_random
from secagg.errors import ConfigurationError, InvalidInput, SecAggError
from secagg.privacy import noise, rotation
from secagg.privacy.budget import PrivacyBudget
from secagg.privacy.accounting import (
    DEFAULT_BETA,
    Accountant,
    Accounting,
    Mechanism,
    RoundMechanism,
    _is_real,
    accounting,
    inflated_l2,
    log_bisect,
)
from secagg.quantize import MAX_BITS, real_values, ring_dtype, rounding_uniforms

MAX_ROUNDING_TRIES = 1000
DEFAULT_FLAG_WEIGHT = 0.1


def _wrap_bound(*, clients, clip, gamma, dim, rotate, local_variance, wrap_probability,
                flag_weight) -> float:
    """A bound (integer units) on any coordinate of the sum of ``clients`` encodings."""
    c = clip / gamma
    if rotate:
        per_client = c * math.sqrt(2 * math.log(4 * clients * dim / wrap_probability) / dim)
    else:
        per_client = c
    total_variance = clients * local_variance
    log_term = math.log(4 * (dim + 1) / wrap_probability)
    noise_bound = log_term / 3 + math.sqrt(log_term**2 / 9 + 2 * total_variance * log_term)
    flag = max(1, round(flag_weight * c)) if flag_weight > 0 else 0
    return clients * max(per_client, flag, 1.0) + clients + noise_bound


MIN_LOCAL_STD = 2.0


def auto_gamma(clip: float, noise_multiplier: float, min_clients: int, padded_dim: int) -> float:
    """The scale of ``bits="auto"``: the coarser of two needs.

    - C/gamma >= 8 sqrt(D): rounding inflates the sensitivity by under 1%;
    - sigma_c = z C / (gamma sqrt(m_min)) >= 2: each client's discrete noise is wide enough for
      the sum of m_min of them to behave as one discrete Gaussian (Kairouz et al. 2021's tau term
      decays as exp(-2 pi^2 sigma_c^2 k / (k + 1))); below about 1 that term dominates epsilon.
    Both hold at gamma = min(C / (8 sqrt(D)), z C / (2 sqrt(m_min))).
    """
    gamma = clip / (8 * math.sqrt(padded_dim))
    if noise_multiplier > 0:
        gamma = min(gamma, noise_multiplier * clip / (MIN_LOCAL_STD * math.sqrt(min_clients)))
    return gamma


@dataclass(frozen=True, slots=True, kw_only=True)
class DPPlan:
    """The public parameters of the privacy layer for one round (every party computes the same)."""

    shapes: tuple[tuple[int, ...], ...]
    clip: float
    noise_multiplier: float
    mechanism: Mechanism
    min_clients: int  # m_min: the guarantee holds with this many contributors
    max_clients: int  # n: the ring must hold the sum of this many
    bits: int
    gamma: float
    rotate: bool
    rotation_seed: bytes = field(repr=False)
    beta: float = DEFAULT_BETA
    wrap_probability: float = 1e-9
    flag_weight: float = DEFAULT_FLAG_WEIGHT  # the clipped flag counts as this fraction of C; 0: no flag

    @property
    def dim(self) -> int:
        return sum(int(np.prod(s)) for s in self.shapes)

    @property
    def counts_clipping(self) -> bool:
        """Whether the ring vector carries the clipped-flag coordinate (flag weight > 0)."""
        return self.flag_weight > 0

    @property
    def signal_dim(self) -> int:
        """D: the (padded) update's coordinates, without the clipped flag."""
        return rotation.padded_dim(self.dim) if self.rotate else self.dim

    @property
    def noise_dim(self) -> int:
        """Coordinates carrying signal and noise: the (padded) vector plus the clipped flag, if any."""
        return self.signal_dim + int(self.counts_clipping)

    @property
    def ring_dim(self) -> int:
        return self.noise_dim

    @property
    def local_variance(self) -> float:
        """sigma_c^2: each client's noise variance per coordinate, in integer units."""
        return (self.noise_multiplier * self.clip / self.gamma) ** 2 / self.min_clients

    def error_proxy(self, contributors: int) -> float:
        """V: the per-coordinate variance proxy, in real units, of the decoded sum's error (discrete
        noise plus rounding) over ``contributors`` clients, m (sigma_c^2 + 1/4) gamma^2."""
        return contributors * (self.local_variance + 0.25) * self.gamma**2

    @property
    def norm_bound(self) -> float:
        """The inflated L2 bound a rounded client vector (without the flag) must meet."""
        return inflated_l2(self.clip, self.gamma, self.signal_dim, self.beta)

    @property
    def flag_scale(self) -> int:
        """The integer a clipping client puts in the flag coordinate: flag_weight * C / gamma
        (0 when the count is off).

        Weighted like the signal, so the noise on the count is z / w clients (10 at z = 1, w = 0.1),
        not thousands; it adds flag_scale^2 to the squared sensitivity, a factor 1 + w^2 (1% at
        the default; 6% at the old 1/4)."""
        if not self.counts_clipping:
            return 0
        return max(1, round(self.flag_weight * self.clip / self.gamma))

    def clip_count_std(self, contributors: int) -> float | None:
        """Standard deviation of the noised clipped-client count over ``contributors`` clients
        (None when the plan does not count clipping)."""
        if not self.counts_clipping:
            return None
        return math.sqrt(contributors * self.local_variance) / self.flag_scale

    def round_mechanism(self) -> RoundMechanism:
        l2 = math.sqrt(self.norm_bound**2 + self.flag_scale**2)
        return RoundMechanism(
            mechanism=self.mechanism, l2_sensitivity=l2,
            l1_sensitivity=l2 * min(math.sqrt(self.noise_dim), l2),
            local_variance=self.local_variance, noise_clients=self.min_clients, dim=self.noise_dim,
        )

    def accounting(self, *, rounds: int = 1, sampling: float = 1.0, delta: float = 1e-6,
                   accountant: Accountant | str = Accountant.PLD) -> Accounting:
        """epsilon after ``rounds`` rounds, the accountant that gave it and the RDP figure."""
        return accounting(self.round_mechanism(), rounds=rounds, sampling=sampling, delta=delta,
                          accountant=accountant)

    def epsilon(self, *, rounds: int = 1, sampling: float = 1.0, delta: float = 1e-6,
                accountant: Accountant | str = Accountant.PLD) -> float:
        return self.accounting(rounds=rounds, sampling=sampling, delta=delta, accountant=accountant).epsilon

    def wrap_bound(self) -> float:
        return _wrap_bound(
            clients=self.max_clients, clip=self.clip, gamma=self.gamma, dim=self.signal_dim,
            rotate=self.rotate, local_variance=self.local_variance,
            wrap_probability=self.wrap_probability, flag_weight=self.flag_weight,
        )

    @classmethod
    def create(
        cls,
        shapes: Sequence[Sequence[int]] | int,
        *,
        clip: float,
        noise_multiplier: float,
        min_clients: int,
        max_clients: int,
        mechanism: Mechanism | str = Mechanism.DISTRIBUTED_DISCRETE_GAUSSIAN,
        bits: int | str = "auto",
        rotate: bool = True,
        wrap_probability: float = 1e-9,
        beta: float = DEFAULT_BETA,
        flag_weight: float = DEFAULT_FLAG_WEIGHT,
        rotation_seed: bytes | None = None,
        rng: RandomSource = system_random,
    ) -> DPPlan:
        """Choose gamma and (with ``bits="auto"``) the smallest safe bit width; refuse what cannot work."""
        if isinstance(shapes, int):
            shapes = ((shapes,),)
        shapes = tuple(tuple(int(x) for x in s) for s in shapes)
        if not shapes or any(any(x < 1 for x in s) for s in shapes):
            raise ConfigurationError(f"shapes must be non-empty positive tensor shapes, got {shapes}")
        if not (_is_real(clip) and math.isfinite(clip) and clip > 0):
            raise ConfigurationError(f"clip norm must be a finite number > 0, got {clip!r}")
        if not (_is_real(noise_multiplier) and math.isfinite(noise_multiplier) and noise_multiplier >= 0):
            raise ConfigurationError(
                f"noise multiplier must be a finite number >= 0 (0: no privacy), got {noise_multiplier!r}"
            )
        for name, value in (("min_clients", min_clients), ("max_clients", max_clients)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ConfigurationError(f"{name} must be an integer, got {value!r}")
        if min_clients < 1:
            raise ConfigurationError(f"min_clients must be at least 1, got {min_clients}")
        if min_clients > max_clients:
            raise ConfigurationError(
                f"need 1 <= min_clients ({min_clients}) <= max_clients ({max_clients}): the "
                f"guarantee's m_min cannot exceed the clients the ring holds; raise max_clients "
                f"to {max(min_clients, 1)} or lower min_clients"
            )
        if not (_is_real(beta) and 0 <= beta < 1):
            raise ConfigurationError(f"beta (conditional rounding's slack) must lie in [0, 1), got {beta!r}")
        if not (_is_real(flag_weight) and 0 <= flag_weight <= 1):
            raise ConfigurationError(
                f"flag weight must lie in [0, 1] (0 turns the clipped count off), got {flag_weight!r}"
            )
        if not (_is_real(wrap_probability) and 0 < wrap_probability < 1):
            raise ConfigurationError(f"wrap probability must lie in (0, 1), got {wrap_probability!r}")
        try:
            mechanism = Mechanism(mechanism)
        except ValueError:
            raise ConfigurationError(
                f"mechanism must be one of {[m.value for m in Mechanism]}, got {mechanism!r}"
            ) from None
        dim = sum(int(np.prod(s)) for s in shapes)
        padded = rotation.padded_dim(dim) if rotate else dim

        def bound(gamma: float) -> float:
            local_var = (noise_multiplier * clip / gamma) ** 2 / min_clients
            return _wrap_bound(clients=max_clients, clip=clip, gamma=gamma, dim=padded, rotate=rotate,
                               local_variance=local_var, wrap_probability=wrap_probability,
                               flag_weight=flag_weight)

        if bits == "auto":
            gamma = auto_gamma(clip, noise_multiplier, min_clients, padded)
            need = math.ceil(math.log2(bound(gamma) + 1)) + 1
            if need > MAX_BITS:
                raise ConfigurationError(
                    f"no bit width up to {MAX_BITS} holds the sum of {max_clients} clients at this "
                    f"resolution (needs {need}); lower max_clients or the noise multiplier"
                )
            bits = max(need, 2)
        else:
            if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= MAX_BITS:
                raise ConfigurationError(f"bits must be 'auto' or an integer in [2, {MAX_BITS}], got {bits!r}")
            limit = 2 ** (bits - 1) - 1
            coarsest = clip  # beyond this a clipped update rounds to a handful of levels
            if bound(coarsest) > limit:
                need = math.ceil(math.log2(bound(coarsest) + 1)) + 1
                raise ConfigurationError(
                    f"{bits} bits cannot hold the sum of {max_clients} clients without wrapping "
                    f"(probability target {wrap_probability}); use bits >= {need} or fewer clients"
                )
            # bound() decreases as gamma grows: the finest gamma that fits.
            gamma = log_bisect(lambda g: bound(g) <= limit, clip * 1e-12, coarsest)[1]
        return cls(
            shapes=shapes, clip=float(clip), noise_multiplier=float(noise_multiplier),
            mechanism=mechanism, min_clients=min_clients, max_clients=max_clients, bits=bits,
            gamma=gamma, rotate=rotate, beta=beta, wrap_probability=wrap_probability,
            flag_weight=flag_weight,
            rotation_seed=rotation_seed if rotation_seed is not None else rng(32),
        )


class DPEncoder:
    """One client's privacy pipeline. Plug into ``Client(encoder=...)``."""

    def __init__(self, plan: DPPlan, *, budget: PrivacyBudget | None = None,
                 rng: RandomSource = system_random) -> None:
        self.plan = plan
        self.budget = budget
        self._rng = rng
        self.clipped: bool | None = None

    # The Client calls these two.
    def begin_round(self, config, client: int) -> None:
        plan = self.plan
        if (config.dim, config.bits, config.levels) != (plan.ring_dim, plan.bits, 0):
            raise ConfigurationError(
                f"client {client}, round {config.round}: the round config (dim {config.dim}, "
                f"{config.bits} bits, levels {config.levels}) does not match the privacy plan "
                f"(dim {plan.ring_dim}, {plan.bits} bits, levels 0)"
            )
        if self.budget is not None:
            self.budget.charge(plan, client=client, round=config.round, session=config.session_id)

    def encode(self, update, *, clip: bool = True) -> np.ndarray:
        """The ring vector for ``update`` (a list of arrays in the plan's shapes, or one array).

        ``clip=False`` exists only to simulate a client that skips clipping (an attack).
        """
        plan = self.plan
        x = self.flatten(update)
        norm = float(np.linalg.norm(x))
        self.clipped = norm > plan.clip
        if clip and self.clipped:
            x = x * (plan.clip / norm)
        y = rotation.rotate(x, plan.rotation_seed) if plan.rotate else x
        v = y / plan.gamma
        floor = np.floor(v)
        frac = v - floor
        for _ in range(MAX_ROUNDING_TRIES):
            rounded = floor + (rounding_uniforms(self._rng(prg.SEED_BYTES), v.size) < frac)
            if not clip or float(np.linalg.norm(rounded)) <= plan.norm_bound:
                break
        else:
            raise SecAggError("conditional rounding did not meet the norm bound; raise beta")
        if plan.counts_clipping:
            rounded = np.append(rounded, plan.flag_scale if self.clipped else 0)
        values = rounded.astype(np.int64)
        sampler = noise.skellam if plan.mechanism is Mechanism.SKELLAM else noise.discrete_gaussian
        scale = plan.local_variance if plan.mechanism is Mechanism.SKELLAM else math.sqrt(plan.local_variance)
        values += sampler(noise.generator(self._rng), scale, values.size)
        limit = 2 ** (plan.bits - 1) - 1
        if clip and np.abs(values).max() > limit:
            raise SecAggError(
                f"an encoded coordinate ({int(np.abs(values).max())}) exceeds the ring's half range "
                f"{limit}; the plan's bit width is wrong"
            )
        return (values & ((1 << plan.bits) - 1)).astype(ring_dtype(plan.bits))

    def flatten(self, update) -> np.ndarray:
        plan = self.plan
        parts = list(update) if isinstance(update, (list, tuple)) else [update]
        if len(parts) != len(plan.shapes):
            raise InvalidInput(f"update has {len(parts)} tensors; the plan expects {len(plan.shapes)}")
        flat = []
        for i, (part, shape) in enumerate(zip(parts, plan.shapes)):
            flat.append(real_values(part, shape, f"tensor {i}"))
        return np.concatenate(flat)


@dataclass(frozen=True, slots=True)
class DPAggregate:
    """The decoded sum: tensors in the plan's shapes, the flat vector, the (noised) clip count."""

    tensors: list[np.ndarray]
    flat: np.ndarray
    clipped_count: float | None  # None when the plan does not count clipping (flag weight 0)
    centred: np.ndarray = field(repr=False)  # the centred-lifted ring sum, integer units
    contributors: int = 0


class DPDecoder:
    def __init__(self, plan: DPPlan) -> None:
        self.plan = plan

    def decode(self, ring_sum: np.ndarray, contributors: int) -> DPAggregate:
        plan = self.plan
        if ring_sum.shape != (plan.ring_dim,):
            raise InvalidInput(f"ring sum has shape {ring_sum.shape}; expected ({plan.ring_dim},)")
        centred = ring_sum.astype(np.int64)
        half = 1 << (plan.bits - 1)
        centred[centred >= half] -= 1 << plan.bits
        body = centred[: plan.signal_dim].astype(np.float64) * plan.gamma
        flat = rotation.unrotate(body, plan.rotation_seed, plan.dim) if plan.rotate else body
        tensors, start = [], 0
        for shape in plan.shapes:
            size = int(np.prod(shape))
            tensors.append(flat[start : start + size].reshape(shape))
            start += size
        count = float(centred[-1] / plan.flag_scale) if plan.counts_clipping else None
        return DPAggregate(tensors=tensors, flat=flat, clipped_count=count,
                           centred=centred, contributors=contributors)
