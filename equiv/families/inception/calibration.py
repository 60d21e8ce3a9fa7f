"""Random initial parameters of an Inception v3, before equiv.weights calibrates its BatchNorms."""

from __future__ import annotations

import numpy as np

from equiv.families.inception import plan
from equiv.families.inception.description import Inception


def initial_params(v: Inception, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """He-scaled kernels, small biases, gammas near 1 (where bn_scale), unit statistics
    (calibrated by equiv.weights), and betas near 0.5: most ReLUs pass (about 70%).

    With betas near 0 (half the ReLUs off) a random Inception v3 is chaotic: a perturbation grows
    by about 1.3x per mixed block, and float32 rounding alone reaches 2.5x the float32 tolerance
    (1e-5 sqrt(depth)) by Mixed_7c at 299x299 between any two frameworks (measured: torch against
    the float64 reference, slim against Keras). With betas near 0.5 the worst is 0.29 of it."""
    params = {}
    for name, shape in plan.param_shapes(v).items():
        field = name.rsplit("/", 1)[1]
        if field == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            a = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        elif field == "bias":
            a = rng.normal(0.0, 0.05, shape)
        elif field == "gamma":
            a = rng.uniform(0.7, 1.3, shape)
        elif field == "beta":
            a = rng.normal(0.5, 0.1, shape)  # see the docstring
        elif field == "moving_mean":
            a = np.zeros(shape)
        elif field == "moving_variance":
            a = np.ones(shape)
        else:  # pragma: no cover - canonical names are closed
            raise AssertionError(name)
        params[name] = a.astype(np.float32)
    return params


def calibration_size(v: Inception) -> int:
    """The smallest side from max(its smallest input, 48) at which every map is at least 3x3:
    at least 36 values per channel and image for each BatchNorm's statistics (Inception v3 at its
    smallest, 75, ends in 1x1 maps, whose 4 values per channel calibrate nothing)."""
    n = max(plan.min_body_size(v), 48)
    while n < 4096 and min(min(s[:2]) for s in plan.tap_shapes(v, n, n).values() if len(s) == 3) < 3:
        n += 1
    return n
