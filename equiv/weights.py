"""Random weights that behave like trained ones, deterministic from a seed.

Kernels are He-scaled. BatchNorm statistics are then calibrated, layer by layer in network
order, on a small random batch pushed through the numpy reference: each moving mean and
variance is set (with a little noise) to what that BatchNorm actually sees. So every
normalised activation is of order one through the whole depth, as in a trained network,
and an error at depth means something. The last BatchNorm of each residual branch gets a
small gamma (a v2 branch's last conv a small kernel), as trained ResNets have, so the
residual stream grows slowly with depth.
"""

from __future__ import annotations

import functools
import operator

import numpy as np

from equiv import canonical as C
from equiv import reference
from equiv.errors import EquivError
from equiv.variants import Variant

CALIBRATION_BATCH = 4


def _branch_ends(v: Variant) -> set[str]:
    """The layer that scales each residual branch's output: its last BatchNorm (v1) or its
    last conv (v2, which has no BatchNorm there)."""
    return {f"{u.convs[-1].name}/bn" if u.convs[-1].norm else u.convs[-1].name for u in C.units(v)}


def _uncalibrated(v: Variant, rng: np.random.Generator) -> dict[str, np.ndarray]:
    branch_ends = _branch_ends(v)
    params = {}
    for name, shape in C.param_shapes(v).items():
        layer, field = name.rsplit("/", 1)
        if field == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            a = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in) * (0.3 if layer in branch_ends else 1.0)
        elif field == "bias":
            a = rng.normal(0.0, 0.05, shape)
        elif field == "gamma":
            a = rng.uniform(0.2, 0.5, shape) if layer in branch_ends else rng.uniform(0.7, 1.3, shape)
        elif field == "beta":
            a = rng.normal(0.0, 0.1, shape)
        elif field == "moving_mean":
            a = np.zeros(shape)
        elif field == "moving_variance":
            a = np.ones(shape)
        else:  # pragma: no cover - canonical names are closed
            raise AssertionError(name)
        params[name] = a.astype(np.float32)
    return params


def calibration_size(v: Variant) -> int:
    return max(C.min_body_size(v), 48)


def _calibrate(v: Variant, params: dict[str, np.ndarray], rng: np.random.Generator) -> None:
    size = calibration_size(v)
    x = rng.standard_normal((CALIBRATION_BATCH, size, size, v.in_channels)).astype(np.float32)
    base = reference.inference_bn(v, params)

    def measuring_bn(prefix: str, h: np.ndarray) -> np.ndarray:
        mean = h.mean(axis=(0, 1, 2))
        var = h.var(axis=(0, 1, 2))
        # A little noise so that mean and variance are not exactly the batch's; rounded to
        # float32 so the weights do not depend on the last bits of the BLAS used.
        params[f"{prefix}/moving_mean"] = (mean + rng.normal(0, 0.05, mean.shape) * np.sqrt(var)).astype(np.float32)
        params[f"{prefix}/moving_variance"] = (var * rng.uniform(0.8, 1.25, var.shape) + 1e-3).astype(np.float32)
        return base(prefix, h)

    # Up to the head, which has no BatchNorm (and may take only one input size).
    taps = {}
    for out, src, fn in reference.segments(v, params, bn=measuring_bn, dtype=np.float32):
        if out == "pool":
            break
        taps.update(fn(x if src is None else taps[src]))


def _make(v: Variant, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    params = _uncalibrated(v, rng)
    _calibrate(v, params, rng)
    return params


@functools.lru_cache(maxsize=2)  # a 152-layer set is 240 MB
def _cached(v: Variant, seed: int) -> tuple[tuple[str, np.ndarray], ...]:
    params = _make(v, seed)
    for a in params.values():
        a.setflags(write=False)
    return tuple(params.items())


def check_seed(seed) -> int:
    """A seed is a non-negative integer (numpy's generators refuse others, and too late: after a
    port has written its file)."""
    try:
        n = operator.index(seed)
    except TypeError:
        raise EquivError(f"--seed must be an integer, got {seed!r}") from None
    if n < 0:
        raise EquivError(f"--seed must be a non-negative integer, got {n}")
    return n


def random_params(v: Variant, seed: int = 0, *, cache: bool = True) -> dict[str, np.ndarray]:
    """Canonical float32 parameters for `v`, the same for the same (variant, seed).

    `cache=False` makes them afresh and keeps no copy (a one-off check of a 152-layer variant
    then holds 240 MB less)."""
    if not cache:
        return _make(v, seed)
    return {k: a.copy() for k, a in _cached(v, seed)}


def random_input(v: Variant, batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """A NHWC float32 batch of roughly unit scale (like normalised images)."""
    rng = np.random.default_rng([seed, 1])
    return rng.standard_normal((batch, height, width, v.in_channels)).astype(np.float32)
