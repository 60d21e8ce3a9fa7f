"""Comparison of tap outputs: per-tap metrics, tolerances by dtype, the first divergence.

Errors are relative to the tap's scale (max |reference|), not element-wise: a ResNet tap has
many values near zero, where an element-wise relative error means nothing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np

from equiv.errors import EquivError

# Largest error allowed after one layer, relative to the tap's scale, keyed by the dtype the
# frameworks compute in. Rounding error then accumulates like a random walk along the network,
# so a tap `d` convolutions deep is allowed `base * sqrt(d)` (`tap_tolerance`).
#
# Measured (float32, CPU, calibrated random weights): two frameworks differ by at most 2e-6 at
# the stem and 4.9e-5 deep in a 152-layer network, where even numpy in float32 is 5.6e-5 from
# float64. So a flat 1e-5 would fail honest depth-152 ports, while sqrt(151) * 1e-5 = 1.2e-4 still
# sits far below what a convention change gives (an epsilon of 1e-3 instead of 1e-5: 5e-4 at
# the very first BatchNorm; a pad on the wrong side or a transposed kernel: order one).
# The half types keep torch.testing's spirit (bfloat16 looser).
TOLERANCES: dict[str, float] = {"float32": 1e-5, "float16": 1e-3, "bfloat16": 8e-3}


def tap_tolerance(base: float, depth: int) -> float:
    return base * math.sqrt(max(depth, 1))


def tolerance(dtype: str) -> float:
    try:
        return TOLERANCES[str(dtype)]
    except KeyError:
        raise EquivError(f"no tolerance for dtype {dtype!r}; known: {', '.join(TOLERANCES)}") from None


@dataclass
class TapResult:
    name: str
    pair: tuple[str, str]
    shape: tuple[int, ...]
    max_abs: float
    rel: float
    cosine: float
    scale: float
    ok: bool
    tol: float
    status: str = "ok"  # ok | diverged | nonfinite | shape
    worst_index: tuple[int, ...] | None = None
    worst_values: tuple[float, float] | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        d["pair"] = list(self.pair)
        d["shape"] = list(self.shape)
        d["worst_index"] = list(self.worst_index) if self.worst_index is not None else None
        d["worst_values"] = list(self.worst_values) if self.worst_values is not None else None
        for k in ("max_abs", "rel", "cosine", "scale", "tol"):
            d[k] = _json_float(d[k])
        if d["worst_values"]:
            d["worst_values"] = [_json_float(x) for x in d["worst_values"]]
        return d


def _json_float(x: float):
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def compare_tap(name: str, a: np.ndarray, b: np.ndarray, pair: tuple[str, str], tol: float) -> TapResult:
    """Compare tap `b` against reference `a`."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a64.shape != b64.shape:
        return TapResult(name, pair, tuple(a64.shape), math.inf, math.inf, math.nan, math.nan, False, tol,
                         status="shape")
    if not (np.isfinite(a64).all() and np.isfinite(b64).all()):
        return TapResult(name, pair, a64.shape, math.nan, math.nan, math.nan, math.nan, False, tol,
                         status="nonfinite")
    diff = np.abs(a64 - b64)
    idx = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.size else ()
    max_abs = float(diff[idx]) if diff.size else 0.0
    scale = float(np.abs(a64).max()) if a64.size else 0.0
    if scale > 0:
        rel = max_abs / scale
    else:  # an all-zero reference tap: equal only if the other is all zero too
        rel = 0.0 if max_abs == 0 else math.inf
    na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
    cosine = float(np.vdot(a64, b64) / (na * nb)) if na > 0 and nb > 0 else (1.0 if na == nb else 0.0)
    ok = rel <= tol
    return TapResult(name, pair, a64.shape, max_abs, rel, cosine, scale, ok, tol,
                     status="ok" if ok else "diverged",
                     worst_index=tuple(int(i) for i in idx) if diff.size else None,
                     worst_values=(float(a64[idx]), float(b64[idx])) if diff.size else None)


def compare_taps(outputs: Mapping[str, Mapping[str, np.ndarray]], taps: Sequence[str],
                 tol: float | Mapping[str, float], pairs: Sequence[tuple[str, str]] | None = None) -> list[TapResult]:
    """Every tap, in network order, for every pair of the frameworks in `outputs`.

    `tol` is one tolerance for every tap, or one per tap (`tap_tolerances`)."""
    names = list(outputs)
    if pairs is None:
        pairs = [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))]
    tols = tol if isinstance(tol, Mapping) else {t: tol for t in taps}
    return [compare_tap(t, outputs[a][t], outputs[b][t], (a, b), tols[t]) for t in taps for (a, b) in pairs]


def tap_tolerances(v, dtype: str = "float32") -> dict[str, float]:
    """The tolerance of every tap of variant `v`: the dtype's base, grown with depth."""
    from equiv.canonical import tap_depths

    base = tolerance(dtype)
    return {t: tap_tolerance(base, d) for t, d in tap_depths(v).items()}


def first_divergence(results: Sequence[TapResult]) -> TapResult | None:
    """The first failing tap in network order (results are in network order)."""
    return next((r for r in results if not r.ok), None)


def worst(results: Sequence[TapResult]) -> float:
    finite = [r.rel for r in results if not math.isnan(r.rel)]
    if any(math.isnan(r.rel) for r in results):
        return math.nan
    return max(finite, default=0.0)


@dataclass
class Report:
    """What a check or a diff found; `to_json` is the stable, documented form."""

    kind: str  # check | diff | port
    variant: str
    frameworks: list[str]
    settings: dict
    tolerance: float  # the base (one layer deep); each tap carries its own `tol`
    taps: list[TapResult]
    timings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    isolated: list[dict] = field(default_factory=list)
    peak_memory_mb: float | None = None

    @property
    def first(self) -> TapResult | None:
        return first_divergence(self.taps)

    @property
    def equivalent(self) -> bool:
        return self.first is None

    @property
    def worst_rel(self) -> float:
        return worst(self.taps)

    @property
    def nonfinite(self) -> list[TapResult]:
        return [r for r in self.taps if r.status == "nonfinite"]

    def to_json(self) -> dict:
        first = self.first
        return {
            "kind": self.kind,
            "variant": self.variant,
            "frameworks": self.frameworks,
            "equivalent": self.equivalent,
            "worst_rel": _json_float(self.worst_rel),
            "first_divergence": first.name if first else None,
            "first_divergence_pair": list(first.pair) if first else None,
            "tolerance": self.tolerance,
            "settings": self.settings,
            "notes": self.notes,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "peak_memory_mb": round(self.peak_memory_mb, 1) if self.peak_memory_mb else None,
            "taps": [r.to_json() for r in self.taps],
            "isolated": self.isolated,
        }
