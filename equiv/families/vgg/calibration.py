"""Random initial parameters of a VGG, before equiv.weights calibrates its BatchNorms."""

from __future__ import annotations

import numpy as np

from equiv.families.vgg import plan
from equiv.families.vgg.description import VGG


def initial_params(v: VGG, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """He-scaled kernels (drawn in float32: fc6 of vgg16 has 103 M), small biases and betas,
    unit statistics (calibrated by equiv.weights where there is a BatchNorm)."""
    params = {}
    for name, shape in plan.param_shapes(v).items():
        field = name.rsplit("/", 1)[1]
        if field == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            a = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        elif field == "bias":
            a = rng.normal(0.0, 0.05, shape)
        elif field == "gamma":
            a = rng.uniform(0.7, 1.3, shape)
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
