"""The layer-by-layer check: build, make weights, port, run identical inputs, compare.

`check` proves one variant is the same function in several frameworks; `diff` asks whether
two variants are the same function under one set of weights.
"""

from __future__ import annotations

import ctypes
import gc
import resource
import sys
import time
from contextlib import contextmanager
from typing import Callable, Sequence

import numpy as np

from equiv import canonical as C
from equiv import compare, memory, reference, weights
from equiv.compare import Report
from equiv.errors import EquivError, ResourceError
from equiv.frameworks import adapter, parse_frameworks
from equiv.variants import Variant, get

Progress = Callable[[str], None]


def peak_memory_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB, macOS bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


class _Timer(dict):
    @contextmanager
    def __call__(self, phase: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self[phase] = self.get(phase, 0.0) + time.perf_counter() - t0


def check_input(v: Variant, batch: int, height: int, width: int, *,
                frameworks: Sequence[str] = ("slim", "keras", "torch")) -> None:
    """Refuse, before any work, sizes the network cannot take or the machine cannot hold.

    `frameworks`: those the job runs one after the other (see equiv.memory.estimate)."""
    if batch < 1:
        raise EquivError(f"--batch must be at least 1, got {batch}")
    C.check_input_size(v, height, width)
    need = memory.estimate(v, batch, height, width, frameworks)
    if max(height, width) > 4096:
        raise ResourceError(f"--input-size {height} {width} is too large: at most 4096 per side "
                            f"(this one would need {memory.needs_text(need)})")
    room = memory.available()
    if room is not None and need["total"] > room:
        raise ResourceError(
            f"{v.name} at --batch {batch} --input-size {height} {width} in {', '.join(frameworks)} needs "
            f"{memory.needs_text(need)}; this machine has {memory.human(room)} available: "
            f"lower --batch or --input-size")


def _isolated(v: Variant, params, x, outputs: dict[str, dict[str, np.ndarray]]) -> list[dict]:
    """Each framework's error per segment, split into what it made and what it inherited.

    The float64 numpy reference runs each segment on the framework's own input to that segment:
    `made` is how far the framework's segment output is from that (its own error); `total` is
    how far it is from the reference's end-to-end output (its own error plus what it inherited).
    """
    segs = reference.segments(v, params)
    chained: dict[str, np.ndarray] = {}
    for _, src, fn in segs:
        chained.update(fn(x if src is None else chained[src]))
    rows = []
    for fw, taps in outputs.items():
        for out, src, fn in segs:
            mine = taps[out]
            exact_here = fn(x if src is None else taps[src])[out]
            scale = float(np.abs(chained[out]).max()) or 1.0
            rows.append({
                "segment": out, "framework": fw,
                "made_rel": float(np.abs(mine - exact_here).max() / scale),
                "total_rel": float(np.abs(mine - chained[out]).max() / scale),
            })
    return rows


def _release(model) -> None:
    """Close a model (a slim Session) and give its memory back: a check keeps only each
    framework's taps, so at most one model is alive at a time (README: memory)."""
    if callable(getattr(model, "close", None)):
        model.close()
    gc.collect()
    _trim()


def _trim() -> None:
    """Hand freed heap pages back to the system (glibc keeps them otherwise)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def check(variant: str | Variant, frameworks: Sequence[str] | str = ("slim", "keras", "torch"), *,
          input_size: tuple[int, int] | None = None, batch: int = 2, seed: int = 0, isolated: bool = False,
          dtype: str = "float32", progress: Progress | None = None) -> Report:
    """Build `variant` natively, give it seeded weights, port them to the other frameworks,
    run one input through all, and compare every tap of every pair."""
    v = get(variant)
    weights.check_seed(seed)
    fws = parse_frameworks(frameworks)
    if len(fws) < 2:
        raise EquivError("a check needs at least two frameworks")
    h, w = input_size or v.input_size or (64, 64)
    check_input(v, batch, h, w, frameworks=fws)
    tol = compare.tolerance(dtype)
    say = progress or (lambda msg: None)
    t = _Timer()
    # The native framework goes first: it is the reference of every pair it is in.
    fws.sort(key=lambda f: f != v.native)
    with t("import"):
        adapters = {fw: adapter(fw) for fw in fws}
    with t("weights"):
        params = weights.random_params(v, seed, cache=False)  # the only copy, gone once the native model has it
        x = weights.random_input(v, batch, h, w, seed)
    outputs = {}
    source = None
    for fw in fws:
        ad = adapters[fw]
        say(f"building {v.name} in {fw}")
        with t("build"):
            model = ad.build(v)
        with t("port"):
            if source is None:
                ad.load_params(v, model, params)
                source = ad.export_params(v, model)  # what a port carries: the native export
                if not isolated:
                    del params
            else:
                ad.load_params(v, model, source)
            if fw == fws[-1]:
                del source  # every framework holds its copy now
        say(f"running {fw}")
        with t("forward"):
            outputs[fw] = ad.run(v, model, x)
        _release(model)
        del model
    say("comparing")
    with t("compare"):
        results = compare.compare_taps(outputs, C.tap_names(v), compare.tap_tolerances(v, dtype))
        iso = _isolated(v, params, x, outputs) if isolated else []
    return Report(
        kind="check", variant=v.name, frameworks=fws, tolerance=tol, taps=results,
        settings={"input_size": [h, w], "batch": batch, "seed": seed, "dtype": dtype,
                  "native": v.native, "isolated": isolated},
        timings=dict(t), isolated=iso, peak_memory_mb=peak_memory_mb(),
    )


def diff(variant_a: str | Variant, variant_b: str | Variant, framework: str | None = None, *,
         input_size: tuple[int, int] = (64, 64), batch: int = 2, seed: int = 0,
         dtype: str = "float32") -> Report:
    """Do two variants compute the same function under one set of weights?

    Weights are `variant_a`'s seeded weights. A different class count alone is set aside
    (variant_b takes variant_a's head) and said in the notes. If the parameters still do not
    fit, ParamMismatchError names them.
    """
    a, b = get(variant_a), get(variant_b)
    weights.check_seed(seed)
    notes = []
    if a.num_classes != b.num_classes:
        notes.append(f"class counts differ ({a.num_classes} vs {b.num_classes}): {b.name} compared with "
                     f"{a.num_classes} classes")
        b = b.replace(num_classes=a.num_classes)
    fw = parse_frameworks(framework or a.native)[0]
    ad = adapter(fw)
    h, w = input_size
    check_input(a, batch, h, w, frameworks=[fw, fw])
    check_input(b, batch, h, w, frameworks=[fw, fw])
    differing = {k: (va, b.conventions()[k]) for k, va in a.conventions().items() if b.conventions()[k] != va}
    notes += [f"{k}: {va!r} vs {vb!r}" for k, (va, vb) in differing.items()]
    params = weights.random_params(a, seed)
    C.check_params(b, params, source=f"weights of {a.name}")
    x = weights.random_input(a, batch, h, w, seed)
    t = _Timer()
    outputs = {}
    for label, var in ((a.name, a), (b.name, b)):
        with t("build"):
            m = ad.build(var)
        with t("port"):
            ad.load_params(var, m, params)
        with t("forward"):
            outputs[label] = ad.run(var, m, x)
        if callable(getattr(m, "close", None)):
            m.close()
    common = [n for n in C.tap_names(a) if n in set(C.tap_names(b))]
    tol = compare.tolerance(dtype)
    with t("compare"):
        results = compare.compare_taps(outputs, common, compare.tap_tolerances(a, dtype))
    return Report(kind="diff", variant=f"{a.name} vs {b.name}", frameworks=[fw], tolerance=tol,
                  taps=results, settings={"input_size": [h, w], "batch": batch, "seed": seed,
                                          "framework": fw, "conventions_differing": sorted(differing)},
                  timings=dict(t), notes=notes, peak_memory_mb=peak_memory_mb())
