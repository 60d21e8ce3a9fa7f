"""Random initial parameters of a ResNet, before equiv.weights calibrates its BatchNorms."""

from __future__ import annotations

import numpy as np

from equiv.families.resnet import plan
from equiv.families.resnet.description import ResNet


def _branch_ends(v: ResNet) -> set[str]:
    """The layer that scales each residual branch's output: its last BatchNorm (v1) or its
    last conv (v2, which has no BatchNorm there)."""
    return {f"{u.convs[-1].name}/bn" if u.convs[-1].norm else u.convs[-1].name for u in plan.units(v)}


def initial_params(v: ResNet, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """He-scaled kernels, small biases and betas, unit statistics (calibrated afterwards by
    equiv.weights); each residual branch's last layer scaled down, as in a trained ResNet."""
    branch_ends = _branch_ends(v)
    params = {}
    for name, shape in plan.param_shapes(v).items():
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
