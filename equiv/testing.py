"""Equivalence as a test assertion, for users' own test suites.

    from equiv.testing import assert_equivalent

    def test_my_port(my_torch_module):
        assert_equivalent(my_torch_module, "torchvision/resnet18", input_size=(32, 32))

Each operand is one of:

* a **variant** (a registered name or a `Variant`): its reference, built in its native framework;
* a **model object**: a torch `nn.Module`, a Keras model, or equiv's TF-slim model (what
  `equiv.build(..., "slim")` returns); it runs itself, so its own forward pass is what is tested;
* a **weight file** (a path): loaded into the framework that owns its format.

A model or a file carries its own weights; a variant takes the other operand's (exported to the
canonical form), or seeded random weights when neither operand carries any. Both see the same
input, every tap both give is compared, and on failure the AssertionError names the first tap
that diverged, its worst element and the tolerance it broke, above the per-tap table.

Frames of equiv are hidden from pytest's traceback (`__tracebackhide__`), so a failure points
at the user's line. Nothing is printed unless `progress` is given.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from equiv import canonical as C
from equiv import compare
from equiv.compare import Report, TapResult
from equiv.errors import EquivError, ParamMismatchError
from equiv.frameworks import FRAMEWORKS, adapter, backend_of, loaded
from equiv.variants import Variant, all_variants, get

__all__ = ["NotEquivalentError", "UninformativeError", "assert_equivalent"]

DEFAULT_INPUT_SIZE = (64, 64)


class NotEquivalentError(AssertionError):
    """The two operands are not the same function; `report` holds every tap's comparison."""

    def __init__(self, message: str, report: Report):
        super().__init__(message)
        self.report = report


class UninformativeError(NotEquivalentError):
    """assert_equivalent(..., strict=True): the operands agree, but some compared taps are all zero
    or constant on the reference side, so their agreement proves nothing."""


@dataclass
class _Side:
    """One operand, made runnable: its variant, framework, weights and a way to run it."""

    label: str  # short, for table columns: "a:torch"
    what: str  # long, for the failure message
    variant: Variant
    framework: str
    params: dict[str, np.ndarray] | None  # the weights it carries; None for a bare variant
    run: Callable[[np.ndarray, list[str]], dict[str, np.ndarray]] | None = None
    taps: list[str] | None = None  # the taps it can give
    static_size: tuple[int, int] | None = None  # the only input size it accepts, if any
    notes: list[str] = field(default_factory=list)  # what the comparison must say about it
    stored: list[str] | None = None  # parameters it holds as they are, where not all (an export's folds)
    own: bool = False  # it carries its own weights (a model or a file), not the other operand's


# ---------------------------------------------------------------------------------------
# Recognising an operand


def _kind(obj) -> str:
    if isinstance(obj, Variant):
        return "variant"
    if backend_of(obj):
        return "model"
    if isinstance(obj, os.PathLike):
        return "file"
    if isinstance(obj, str):
        if os.path.exists(obj) or os.path.exists(obj + ".index"):  # a TF checkpoint is a prefix
            return "file"
        return "variant"
    raise EquivError(f"cannot compare a {type(obj).__name__}: pass a variant (name or Variant), a model "
                     f"of a registered framework ({', '.join(FRAMEWORKS)}) or the path of a weight file")


def _as_variant(obj) -> Variant:
    try:
        return get(obj)
    except EquivError as e:
        raise EquivError(f"{obj!r} is neither an existing weight file nor a registered variant ({e})") from None


def _infer_variant(fw: str, model) -> Variant:
    """The one registered variant whose parameters the model holds exactly, else EquivError."""
    ad = adapter(fw)
    keys = ad.model_names(model)
    fits = []
    for v in all_variants():
        if set(ad.framework_names(v).values()) != keys:
            continue
        try:
            ad.model_params(v, model)
        except ParamMismatchError:
            continue
        fits.append(v.name)
    if len(fits) == 1:
        return get(fits[0])
    which = f"it fits {', '.join(fits)}" if fits else "it fits no registered variant as it is"
    raise EquivError(f"cannot tell which variant this {fw} model {type(model).__name__} is ({which}): pass "
                     "variant= (a registered name, equiv.get(name, num_classes=N), or a Variant)")


# ---------------------------------------------------------------------------------------
# Running an operand


def _native_runner(fw: str, v: Variant, params) -> Callable:
    """Build `v` in `fw` (its reference where `fw` is native to it), load `params`, run."""
    def run(x, taps):
        with loaded(fw, v, params) as model:
            return adapter(fw).run(v, model, x, taps)
    return run


def _side(obj, kind: str, key: str, variant: Variant | None) -> _Side:
    """Make operand `obj` runnable except for a bare variant's weights (filled in later)."""
    if kind == "variant":
        v = _as_variant(obj)
        return _Side(f"{key}:{v.native}", f"{v.name} built in {v.native}", v, v.native, None)
    if kind == "model":
        fw = backend_of(obj)
        ad = adapter(fw)
        v = variant or _infer_variant(fw, obj)
        try:
            params = ad.model_params(v, obj)
        except ParamMismatchError as e:
            raise EquivError(f"{e}; {ad.NAMING}") from None
        run, taps, size = ad.model_runner(v, obj)
        notes = getattr(ad, "model_notes", lambda v, m: [])(v, obj)
        stored = getattr(ad, "model_stored_params", lambda v, m: None)(v, obj)
        return _Side(f"{key}:{fw}", f"{fw} model {type(obj).__name__} read as {v.name}", v, fw, params, run, taps,
                     size, notes, stored, own=True)
    from equiv import files
    from equiv.porting import load_weights, owner

    if variant is None:
        raise EquivError(f"{obj}: a weight file needs variant= (or a variant or model as the other operand) "
                         "to say which network its weights belong to")
    fmt = files.detect(obj)
    fw = owner(fmt, variant)
    as_model = getattr(adapter(fw), "file_model", None)  # a file that is a model another tool exported
    model = as_model(variant, obj) if as_model else None
    if model is not None:
        side = _side(model, "model", key, variant)
        side.what = f"{obj} ({fmt}, exported) run in {fw} as {variant.name}"
        return side
    params = load_weights(variant, obj, fmt)
    return _Side(f"{key}:{fw}", f"{obj} ({fmt}) loaded into {fw} as {variant.name}", variant, fw, params,
                 _native_runner(fw, variant, params), own=True)


def _carried(v: Variant, base: Variant | None) -> Variant:
    """A named operand with the fields `variant=` gives beyond its registered description: its head
    size (a 2-class variant= makes a named torchvision/resnet50 a 2-class one)."""
    if base is None or base.family != v.family:
        return v
    if base.num_classes != v.num_classes:
        v = v.replace(num_classes=base.num_classes)
    return v


def _sides(a, b, variant, seed: int, dialect: str | None = None) -> tuple[_Side, _Side, list[str]]:
    """Both operands made runnable, each with its weights."""
    from equiv import weights

    operands, kinds = (a, b), [_kind(a), _kind(b)]
    notes = []
    if variant is not None and kinds == ["variant", "variant"]:
        raise EquivError("variant= says how to read model objects and weight files; both operands are variants")
    # How to read models and files: variant=, else the variant operand, else what each model's
    # own weights fit (a file is read as the model beside it is).
    given = get(variant, dialect=dialect) if variant is not None else None
    operands = tuple(_carried(_as_variant(o), given) if k == "variant" else o for o, k in zip(operands, kinds))
    named = [o for o, k in zip(operands, kinds) if k == "variant"]
    base = given or (get(named[0], dialect=dialect) if named else None)
    read_as, unread = [], None
    for o, k in zip(operands, kinds):
        try:
            read_as.append(base or (_infer_variant(backend_of(o), o) if k == "model" else None))
        except EquivError as e:  # an exported graph holds no names to tell: the other operand may
            read_as.append(None)
            unread = unread or e
    read_as = [v or next((r for r in read_as if r is not None), None) for v in read_as]
    if unread is not None and None in read_as:
        raise unread
    sa, sb = (_side(o, k, key, v) for o, k, key, v in zip(operands, kinds, "ab", read_as))
    if sa.params is None and sb.params is None:  # two bare variants: a's seeded weights for both
        if sb.variant.num_classes != sa.variant.num_classes:
            notes.append(f"class counts differ ({sa.variant.num_classes} vs {sb.variant.num_classes}): "
                         f"{sb.variant.name} compared with {sa.variant.num_classes} classes")
            sb.variant = sb.variant.replace(num_classes=sa.variant.num_classes)
        sa.params = weights.random_params(sa.variant, seed)
    for side, other in ((sa, sb), (sb, sa)):  # a bare variant runs the other's weights
        if side.run is None:
            source = f"seeded weights of {side.variant.name}"
            if side.params is None:
                side.params, source = other.params, f"weights of {other.what}"
            C.check_params(side.variant, side.params, source=source)
            side.run = _native_runner(side.framework, side.variant, side.params)
    return sa, sb, notes


# ---------------------------------------------------------------------------------------
# The assertion


def _check_tolerance(name: str, value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise EquivError(f"{name}={value!r} must be a non-negative finite number")
    return float(value)


def _with_atol(r: TapResult, atol: float) -> TapResult:
    """Allow `atol` on top of the relative tolerance: ok when max_abs <= atol + tol * scale."""
    if r.status not in ("ok", "diverged") or not atol:
        return r
    allowed = atol + r.tol * r.scale
    ok = r.max_abs <= allowed
    return replace(r, ok=ok, status="ok" if ok else "diverged", tol=allowed / r.scale if r.scale > 0 else math.inf)


def _taps(taps, sa: _Side, sb: _Side) -> list[str]:
    """The requested taps that both sides give, in network order; EquivError for a tap one lacks."""
    known = C.tap_names(sa.variant)
    have = [t for t in known if (sa.taps is None or t in sa.taps) and (sb.taps is None or t in sb.taps)
            and t in set(C.tap_names(sb.variant))]
    if taps is None or taps == "all":
        return have
    wanted = C.resolve_taps(sa.variant, taps)
    lacking = [t for t in wanted if t not in have]
    if lacking:
        raise EquivError(f"tap {lacking[0]} is not given by both operands; they both give: {', '.join(have)}")
    return wanted


def _compare_stored(sa: _Side, sb: _Side, notes: list[str]) -> list[str]:
    """Where one operand holds only some parameters as they are (an exported graph whose BatchNorms were
    folded) and both carry their own: compare those that both hold, name the ones that differ beyond the
    float32 tolerance (max|a - b| / max|a|), and say so in the notes. Nothing otherwise."""
    if not (sa.own and sb.own) or (sa.stored is None and sb.stored is None):
        return []
    names = [n for n in sa.params if (sa.stored is None or n in sa.stored) and (sb.stored is None or n in sb.stored)
             and n in sb.params]
    tol = compare.tolerance("float32")
    bad = []
    for n in names:
        a, b = np.asarray(sa.params[n], np.float64), np.asarray(sb.params[n], np.float64)
        scale = float(np.abs(a).max()) if a.size else 0.0
        if a.shape != b.shape or float(np.abs(a - b).max(initial=0.0)) > tol * max(scale, np.finfo(np.float32).tiny):
            bad.append(n)
    left = len(set(sa.params) | set(sb.params)) - len(names)
    notes.append(f"parameters compared one by one, as held: {len(names)}, {len(bad)} differ"
                 + (f" ({', '.join(bad[:5])})" if bad else "")
                 + (f"; {left} not comparable (reconstructed from a folded BatchNorm)" if left else ""))
    return bad


def _fmt(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else str(x)


def _message(report: Report, first: TapResult, sa: _Side, sb: _Side, outputs, atol: float) -> str:
    a, b = first.pair
    lines = [f"not equivalent: first diverging tap {first.name!r}",
             f"  {a} = {sa.what}", f"  {b} = {sb.what}"]
    if first.status == "shape":
        lines.append(f"  shapes differ: {a} {outputs[a][first.name].shape}, {b} {outputs[b][first.name].shape}")
    elif first.status == "nonfinite":
        bad = [s for s in (a, b) if not np.isfinite(outputs[s][first.name]).all()]
        lines.append(f"  NaN or Inf in {' and '.join(bad)}: the weights or the input hold them, or a layer overflowed")
    else:
        va, vb = first.worst_values
        lines += [
            (f"  worst element: index {tuple(first.worst_index)} of shape {tuple(first.shape)} (NHWC): "
             f"{a} = {va:.7g}, {b} = {vb:.7g}, |difference| = {_fmt(first.max_abs)}"),
            f"  error: {_fmt(first.rel)} = max|{a} - {b}| / max|{a}| (max|{a}| = {_fmt(first.scale)})",
            f"  allowed: {_fmt(first.tol)}" + (f" (scale_rtol plus atol {_fmt(atol)} / max|{a}|)" if atol else ""),
        ]
    failing = [r for r in report.taps if not r.ok]
    lines.append(f"  {len(failing)} of {len(report.taps)} taps diverge; worst relative error {_fmt(report.worst_rel)}")
    lines += [f"  note: {n}" for n in report.notes]
    from equiv import report as R

    return "\n".join(lines) + "\n\n" + R.to_text(report, color=False)


def assert_equivalent(a: Any, b: Any, *, variant: str | Variant | None = None,
                      taps: str | Sequence[str] | None = "all", scale_rtol: float | None = None,
                      atol: float | None = None, input_size: tuple[int, int] | None = None, batch: int = 2,
                      seed: int = 0, x: np.ndarray | None = None,
                      progress: Callable[[str], None] | None = None, strict: bool = False,
                      dialect: str | None = None) -> Report:
    """Assert that `a` and `b` compute the same function, tap by tap; return the Report.

    * a, b: variants (registered names or `Variant`s), model objects (torch `nn.Module`, Keras
      model, equiv's slim model) or weight-file paths; see the module docstring.
    * variant: how to read model objects and weight files (their parameter names and taps).
      Default: the variant operand, else the one registered variant each model's weights fit
      (a weight file is read as the model beside it).
      A head of another size: ``equiv.get(name, num_classes=N)``; its head size carries over to a
      named operand (a file of a 2-class head against "torchvision/resnet50").
    * dialect: the library whose names the model objects and files use (equiv.dialects.names():
      "hf", "timm", "keras-hub", ...), when not the variant's own.
    * taps: "all" (every tap both give), "logits", or a list of tap names.
    * scale_rtol: the error allowed at every tap as a fraction of the tap's scale:
      max|a-b| / max|a|, `a` the reference (not torch's element-wise rtol).
      Default: float32's tolerance grown with the tap's depth (`equiv.compare.tap_tolerances`).
    * atol: an absolute error allowed on top: a tap passes when max|a-b| <= atol + scale_rtol * max|a|.
    * input_size, batch, seed: the seeded NHWC input (default 64x64, or a Keras model's fixed size);
      seed also seeds the weights when neither operand carries any.
    * x: an explicit NHWC float32 input instead (from `equiv.strategies.inputs`, say).
    * progress: called with a line per step; quiet by default.
    * strict: also fail (UninformativeError, a NotEquivalentError) when a compared tap is all zero
      or constant on `a`'s side: such a tap matches whatever the arithmetic, so it proves nothing
      (`report.uninformative` names them either way).

    Raises NotEquivalentError (an AssertionError) naming the first diverging tap, its worst
    element and the tolerance, and EquivError for operands that cannot be compared.
    """
    __tracebackhide__ = True
    try:
        return _assert_equivalent(a, b, variant, taps, _check_tolerance("scale_rtol", scale_rtol),
                                  _check_tolerance("atol", atol), input_size, batch, seed, x,
                                  progress or (lambda msg: None), strict, dialect)
    except (EquivError, NotEquivalentError) as e:
        raise e.with_traceback(None) from None  # the user's line, not equiv's insides


def _assert_equivalent(a, b, variant, taps, scale_rtol, atol, input_size, batch, seed, x, say,
                       strict=False, dialect=None) -> Report:
    from equiv import weights
    from equiv.memory import check_input, peak_memory_mb

    say("preparing both operands")
    sa, sb, notes = _sides(a, b, variant, seed, dialect)
    fixed = {s.static_size for s in (sa, sb)} - {None}
    if x is None:
        h, w = input_size or (next(iter(fixed)) if fixed else DEFAULT_INPUT_SIZE)
        check_input(sa.variant, batch, h, w)
        x = weights.random_input(sa.variant, batch, h, w, seed)
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[-1] != sa.variant.in_channels:
        raise EquivError(f"x must be NHWC with {sa.variant.in_channels} channels, got shape {x.shape}")
    for size in fixed:
        if tuple(x.shape[1:3]) != size:
            which = next(s.what for s in (sa, sb) if s.static_size == size)  # a Keras model, an export's file
            raise EquivError(f"{which}: takes {size[0]}x{size[1]} inputs only: pass input_size={size}")
    x = x.astype(np.float32)
    names = _taps(taps, sa, sb)
    outputs = {}
    for side in (sa, sb):
        say(f"running {side.what}")
        outputs[side.label] = side.run(x, names)
    base = compare.tap_tolerances(sa.variant)
    tols = {t: scale_rtol if scale_rtol is not None else base[t] for t in names}
    results = [_with_atol(r, atol or 0.0) for r in compare.compare_taps(outputs, names, tols)]
    if (sa.taps is not None or sb.taps is not None) and len(names) < len(C.tap_names(sa.variant)):
        notes.append(f"a model outside equiv gives only some taps; compared: {len(names)}")
    notes += sa.notes + sb.notes
    bad_params = _compare_stored(sa, sb, notes)
    report = Report(kind="assert", variant=sa.variant.name if sa.variant == sb.variant else
                    f"{sa.variant.name} vs {sb.variant.name}", frameworks=[sa.label, sb.label],
                    settings={"input_shape": list(x.shape), "seed": seed, "scale_rtol": scale_rtol, "atol": atol or 0.0,
                              "a": sa.what, "b": sb.what},
                    tolerance=scale_rtol if scale_rtol is not None else compare.tolerance("float32"), taps=results,
                    notes=notes, peak_memory_mb=peak_memory_mb())
    first = report.first
    if first is not None:
        raise NotEquivalentError(_message(report, first, sa, sb, outputs, atol or 0.0), report)
    if bad_params:
        from equiv import report as R

        raise NotEquivalentError(f"not equivalent: parameter {bad_params[0]!r} differs between {sa.what} and "
                                 f"{sb.what} (every tap agrees)\n  note: " + "\n  note: ".join(notes)
                                 + "\n\n" + R.to_text(report, color=False), report)
    if strict and report.uninformative:
        from equiv import report as R

        raise UninformativeError(f"{sa.what} and {sb.what} agree, but not strictly: "
                                 f"{R.information_line(report)}", report)
    return report


def write_reports(report: Report, folder: str | os.PathLike, stem: str) -> list[Path]:
    """The per-tap report of a comparison as text, Markdown, JSON and (with matplotlib) a PNG
    plot, in `folder`, each written atomically; returns the paths written."""
    from equiv import report as R

    folder = Path(folder)
    written = []
    for suffix, text in ((".txt", R.to_text(report, color=False)), (".md", R.to_markdown(report)),
                         (".json", R.to_json_text(report))):
        R.write_atomic(folder / f"{stem}{suffix}", text, force=True)  # this run's report replaces the last
        written.append(folder / f"{stem}{suffix}")
    from equiv import plot

    if plot.available() is None:
        plot.write_plot(report, folder / f"{stem}.png", force=True)
        written.append(folder / f"{stem}.png")
    return written

