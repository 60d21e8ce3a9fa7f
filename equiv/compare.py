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


def coarser_dtype(*arrays: np.ndarray) -> str:
    """The least precise dtype among `arrays` that has a tolerance (float64 counts as float32)."""
    names = [str(np.asarray(a).dtype) for a in arrays]
    known = [n for n in names if n in TOLERANCES] or ["float32"]
    return max(known, key=TOLERANCES.__getitem__)


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
    dtype: str = "float32"  # the coarser dtype of the pair, whose tolerance applies
    nonfinite: tuple[int, int] | None = None  # NaN or Inf values in each of the pair
    # Why the reference side of this tap proves nothing (`uninformative`), or None: "all zero",
    # or "constant" (each channel one value whatever the input, as after a zeroed BatchNorm gamma).
    uninformative: str | None = None
    # A pair beyond its tolerance whose two sides are each within it of the float64 reference
    # (`arbitrate`): each side's own relative error there, by framework; None where not arbitrated.
    own_rel: dict[str, float] | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        if d["own_rel"] is None:  # only arbitrated taps carry it
            del d["own_rel"]
        else:
            d["own_rel"] = {k: _json_float(x) for k, x in d["own_rel"].items()}
        for k in ("pair", "shape", "worst_index", "worst_values", "nonfinite"):
            d[k] = list(d[k]) if d[k] is not None else None
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


def uninformative(a: np.ndarray) -> str | None:
    """Why tap `a` (NHWC, or (N, C) for a head) carries no information about its input, or None.

    "all zero" or "constant": every channel (the last axis) holds one value over the batch and
    the positions, so any two implementations that agree on the parameters agree here whatever
    their arithmetic, and a match proves nothing (timm zero-initialises each block's last
    BatchNorm gamma: those taps match at 0.0 on any two sides). With one value per channel
    (a 1x1 tap of a batch of one) only a tap that is constant over all of it counts."""
    a = np.asarray(a)
    if a.size == 0 or not np.isfinite(a).all():
        return None
    if not a.any():
        return "all zero"
    rows = a.reshape(-1, a.shape[-1]) if a.ndim > 1 else a.reshape(-1, 1)
    if rows.shape[0] < 2:
        rows = rows.reshape(-1, 1)
    if (rows.min(axis=0) == rows.max(axis=0)).all():
        return "constant"
    return None


# Taps are compared a slice at a time: a 224x224 stem tap of a batch of 16 is 100 MB in float32,
# and float64 copies of it would multiply that.
_CHUNK = 1 << 20


@dataclass(frozen=True)
class _Side:
    """What one side of a comparison needs of its array alone, computed once however many pairs
    it is in: the flat array, its NaN/Inf count, and (when finite) max |x| and sum x^2 in float64."""

    flat: np.ndarray
    bad: int
    scale: float = 0.0
    norm2: float = 0.0


_UNSET = object()


def _sum_squares(c: np.ndarray) -> float:
    """sum c^2 of a float64 vector by numpy's own loop: a BLAS dot would start its threads for it,
    which cost more than they give on cores that the frameworks (or other jobs) keep busy."""
    return float(np.einsum("i,i->", c, c))


def _side(x: np.ndarray) -> _Side:
    f = np.asarray(x).reshape(-1)
    bad = f.size - int(np.isfinite(f).sum())
    if bad or f.size == 0:
        return _Side(f, bad)
    norm2 = 0.0
    for i in range(0, f.size, _CHUNK):
        c = f[i:i + _CHUNK].astype(np.float64)
        norm2 += _sum_squares(c)
    return _Side(f, 0, float(np.abs(f).max()), norm2)


def _difference(fa: np.ndarray, fb: np.ndarray) -> tuple[float, int, float]:
    """max |a - b|, its first flat index, and sum (a - b)^2 in float64, of two finite flat arrays.
    Two float32 arrays are subtracted in float32: exact wherever the two are within a factor of two
    of each other (Sterbenz), which is everywhere a comparison can pass; any other dtypes in float64."""
    same32 = fa.dtype == np.float32 and fb.dtype == np.float32
    max_abs, worst, d2 = -1.0, 0, 0.0
    for i in range(0, fa.size, _CHUNK):
        ca, cb = fa[i:i + _CHUNK], fb[i:i + _CHUNK]
        diff = ca - cb if same32 else ca.astype(np.float64) - cb.astype(np.float64)
        ad = np.abs(diff)
        j = int(np.argmax(ad))
        if ad[j] > max_abs:
            max_abs, worst = float(ad[j]), i + j
        dd = diff.astype(np.float64, copy=False)
        d2 += _sum_squares(dd)
    return max_abs, worst, d2


def compare_tap(name: str, a: np.ndarray, b: np.ndarray, pair: tuple[str, str],
                tol: float | None = None) -> TapResult:
    """Compare tap `b` against reference `a`.

    `tol=None` takes the tolerance of the pair's coarser dtype (float16 and bfloat16 arrays get
    their own). NaN or Inf in either is status "nonfinite" with the count in each, never a
    relative error; an all-zero reference is equal only to all zeros (no division by zero)."""
    return _compare(name, np.asarray(a), np.asarray(b), pair, tol)


def _compare(name: str, a: np.ndarray, b: np.ndarray, pair: tuple[str, str], tol: float | None,
             sa: _Side | None = None, sb: _Side | None = None, why: str | None | object = _UNSET) -> TapResult:
    dtype = coarser_dtype(a, b)
    tol = tolerance(dtype) if tol is None else tol
    if a.shape != b.shape:
        return TapResult(name, pair, tuple(a.shape), math.inf, math.inf, math.nan, math.nan, False, tol,
                         status="shape", dtype=dtype)
    sa, sb = sa or _side(a), sb or _side(b)
    if sa.bad or sb.bad:
        return TapResult(name, pair, a.shape, math.nan, math.nan, math.nan, math.nan, False, tol,
                         status="nonfinite", dtype=dtype, nonfinite=(sa.bad, sb.bad))
    if a.size == 0:
        return TapResult(name, pair, a.shape, 0.0, 0.0, 1.0, 0.0, True, tol, dtype=dtype, uninformative="empty")
    max_abs, worst, d2 = _difference(sa.flat, sb.flat)
    scale = sa.scale
    if scale > 0:
        rel = max_abs / scale
    else:  # an all-zero reference tap: equal only if the other is all zero too
        rel = 0.0 if max_abs == 0 else math.inf
    na, nb = math.sqrt(sa.norm2), math.sqrt(sb.norm2)
    # cos = a.b / (|a||b|), with a.b = (|a|^2 + |b|^2 - |a-b|^2) / 2 written so that nothing cancels
    # when a and b nearly agree
    cosine = 1.0 + ((na - nb) ** 2 - d2) / (2 * na * nb) if na > 0 and nb > 0 else (1.0 if na == nb else 0.0)
    ok = rel <= tol
    idx = tuple(int(k) for k in np.unravel_index(worst, a.shape))
    return TapResult(name, pair, a.shape, max_abs, rel, cosine, scale, ok, tol,
                     status="ok" if ok else "diverged", worst_index=idx,
                     worst_values=(float(a[idx]), float(b[idx])), dtype=dtype,
                     uninformative=uninformative(a) if why is _UNSET else why)


def compare_taps(outputs: Mapping[str, Mapping[str, np.ndarray]], taps: Sequence[str],
                 tol: float | Mapping[str, float] | None = None, pairs: Sequence[tuple[str, str]] | None = None,
                 *, depths: Mapping[str, int] | None = None) -> list[TapResult]:
    """Every tap, in network order, for every pair of the frameworks in `outputs`.

    `tol` is one tolerance for every tap, one per tap (`tap_tolerances`), or None: then each
    pair's coarser dtype decides (float16 and bfloat16 outputs get their own), grown with the
    tap's depth from `depths` (`canonical.tap_depths`) when given."""
    names = list(outputs)
    if pairs is None:
        pairs = [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))]
    results = []
    for t in taps:
        arrays = {fw: np.asarray(outputs[fw][t]) for fw in dict.fromkeys(f for p in pairs for f in p)}
        sides = {fw: _side(x) for fw, x in arrays.items()}
        whys: dict[str, str | None] = {}
        for a, b in pairs:
            x, y = arrays[a], arrays[b]
            if tol is None:
                here = tap_tolerance(tolerance(coarser_dtype(x, y)), depths[t]) if depths else None
            else:
                here = tol[t] if isinstance(tol, Mapping) else tol
            if x.shape != y.shape:
                results.append(_compare(t, x, y, (a, b), here))
                continue
            if a not in whys:
                whys[a] = uninformative(x)
            results.append(_compare(t, x, y, (a, b), here, sides[a], sides[b], whys[a]))
    return results


def tap_tolerances(v, dtype: str = "float32") -> dict[str, float]:
    """The tolerance of every tap of variant `v`: the dtype's base, grown with depth."""
    from equiv.canonical import tap_depths

    base = tolerance(dtype)
    return {t: tap_tolerance(base, d) for t, d in tap_depths(v).items()}


def arbitrate(results: Sequence[TapResult], outputs: Mapping[str, Mapping[str, np.ndarray]],
              exact: Mapping[str, np.ndarray]) -> list[str]:
    """Judge each framework pair beyond its tolerance by each side's own error against `exact`
    (the float64 reference's taps, on the same weights and input), and say what was found.

    A tap's tolerance bounds one float32 computation's distance from the exact value. Two sides that
    each stay within it may still differ by up to twice it, where their rounding walks run in opposite
    directions: then the pair is accepted (`ok`, its `own_rel` recorded, a note). A side beyond the
    tolerance on its own keeps the pair failed: a wrong convention moves its side away from the
    reference by far more than rounding. Returns the notes; changes `results` in place."""
    notes = []
    for r in results:
        if r.ok or r.status != "diverged" or r.name not in exact or any(p not in outputs for p in r.pair):
            continue
        ref = np.asarray(exact[r.name], np.float64)
        scale = float(np.abs(ref).max())
        if scale == 0:
            continue
        own = {p: float(np.abs(np.asarray(outputs[p][r.name], np.float64) - ref).max() / scale) for p in r.pair}
        if all(e <= r.tol for e in own.values()):
            r.ok, r.status, r.own_rel = True, "ok", own
            a, b = r.pair
            notes.append(f"{a}~{b} at {r.name}: {r.rel / r.tol:.2f}x its tolerance, but each side is within it of "
                         f"the float64 reference ({a} {own[a] / r.tol:.2f}x, {b} {own[b] / r.tol:.2f}x): float32 "
                         "rounding in opposite directions, accepted")
    return notes


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
    def uninformative(self) -> dict[str, str]:
        """tap -> why its reference side proves nothing ("all zero", "constant"), in network order."""
        out: dict[str, str] = {}
        for r in self.taps:
            if r.uninformative and r.name not in out:
                out[r.name] = r.uninformative
        return out

    @property
    def tap_names(self) -> list[str]:
        return list(dict.fromkeys(r.name for r in self.taps))

    @property
    def nonfinite(self) -> list[TapResult]:
        return [r for r in self.taps if r.status == "nonfinite"]

    @property
    def status(self) -> str:
        """"equivalent", "non-finite" (NaN or Inf: no relative error means anything), or "not equivalent"."""
        if self.equivalent:
            return "equivalent"
        return "non-finite" if self.nonfinite else "not equivalent"

    def to_json(self, *, timings: bool = False) -> dict:
        """The documented JSON form. It depends only on the inputs (the same command and seed give
        the same bytes); the time of each phase and the peak memory, which vary from run to run,
        are added only with `timings=True` (`--timings` on the command line)."""
        first = self.first
        out = {
            "kind": self.kind,
            "variant": self.variant,
            "frameworks": self.frameworks,
            "equivalent": self.equivalent,
            "status": self.status,
            "worst_rel": _json_float(self.worst_rel),
            "first_divergence": first.name if first else None,
            "first_divergence_pair": list(first.pair) if first else None,
            "informative_taps": len(self.tap_names) - len(self.uninformative),
            "uninformative_taps": self.uninformative,
            "tolerance": self.tolerance,
            "settings": self.settings,
            "notes": self.notes,
            "taps": [r.to_json() for r in self.taps],
            "isolated": self.isolated,
        }
        if timings:
            out["timings_s"] = {k: round(v, 3) for k, v in self.timings.items()}
            out["peak_memory_mb"] = round(self.peak_memory_mb, 1) if self.peak_memory_mb else None
        return out
