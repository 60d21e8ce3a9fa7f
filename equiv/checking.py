"""The layer-by-layer check: build, make weights, port, run identical inputs, compare.

`check` proves one variant is the same function in several frameworks; `diff` asks whether
two variants are the same function under one set of weights.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Sequence

import numpy as np

from equiv import canonical as C
from equiv import compare, reference, weights
from equiv import preprocessing as P
from equiv.compare import Report
from equiv.errors import EquivError
from equiv.frameworks import FRAMEWORKS, adapter, loaded, parse_frameworks
from equiv.memory import check_input, peak_memory_mb
from equiv.variants import Variant, get

Progress = Callable[[str], None]
# Default input sizes (the API's and the command line's): a check at ImageNet's size, a diff small.
CHECK_SIZE = (224, 224)
DIFF_SIZE = (64, 64)


class _Timer(dict):
    @contextmanager
    def __call__(self, phase: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self[phase] = self.get(phase, 0.0) + time.perf_counter() - t0


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


def _native_note(v: Variant, model) -> list[str]:
    """Which code built the native side where it is not what `v.reference` names: equiv's own module,
    its transcription (where the library does not import: torchvision, timm, transformers beside the
    pinned torch), or, for a description in another dialect, that library's."""
    from equiv import families

    built = f"{type(model).__module__}.{type(model).__qualname__}"
    own = getattr(families.builder(v, v.native), "built_here", None)
    if own is not None and own(model) and v.reference and not v.reference.startswith("equiv."):
        return [f"native build: {built}, equiv's transcription of {v.reference}, not the library's own module"]
    if v.dialect:
        return [f"native build: {built} ({v.name} in the {v.dialect} dialect)"]
    return []


def check(variant: str | Variant, frameworks: Sequence[str] | str = FRAMEWORKS, *,
          input_size: tuple[int, int] | None = None, batch: int = 2, seed: int = 0, isolated: bool = False,
          dtype: str = "float32", raw_images: bool | np.ndarray = False, dialect: str | None = None,
          progress: Progress | None = None) -> Report:
    """Build `variant` natively, give it seeded weights, port them to the other frameworks,
    run one input through all, and compare every tap of every pair.

    `raw_images`: True (seeded uint8 RGB images) or a uint8 RGB NHWC batch (which sets the batch
    and input size): each framework is fed its own library's preprocessing of them
    (equiv.preprocessing.of_framework, computed by the library's own function where it imports),
    and that preprocessed input is compared first, as the tap "input".
    `dialect`: the variant in another library's names and code (equiv.dialects.names()): that library's
    own build is the native one where it imports (torchvision/resnet50 with dialect="hf": transformers')."""
    v = get(variant, dialect=dialect)
    weights.check_seed(seed)
    fws = parse_frameworks(frameworks)
    if len(fws) < 2:
        raise EquivError("a check needs at least two frameworks")
    raw = None
    if raw_images is not False and raw_images is not None:
        if isolated:
            raise EquivError("`isolated=True` runs one input through every framework; with `raw_images` each "
                             "framework has its own: run them apart")
        if v.in_channels != 3:
            raise EquivError(f"raw images are RGB; {v.name} takes {v.in_channels} channels")
        if raw_images is not True:
            raw = P.check_raw(raw_images)
            batch, input_size = raw.shape[0], raw.shape[1:3]
    h, w = input_size or v.input_size or CHECK_SIZE
    check_input(v, batch, h, w, frameworks=fws)
    tol = compare.tolerance(dtype)
    say = progress or (lambda msg: None)
    t = _Timer()
    # The native framework goes first: it is the reference of every pair it is in.
    fws.sort(key=lambda f: f != v.native)
    inputs, notes = {}, []
    if raw_images is not False and raw_images is not None:
        with t("preprocess"):  # before the adapters: see _preprocessed
            if raw is None:
                raw = P.random_raw(batch, h, w, seed)
            inputs, notes = _preprocessed(v, fws, raw)
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
        with loaded(fw, v, phase=t) as model:  # released before the next framework builds
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
            if fw == v.native:
                notes += _native_note(v, model)
            say(f"running {fw}")
            with t("forward"):
                if inputs:
                    outputs[fw] = {"input": inputs[fw], **ad.run(v, model, inputs[fw])}
                else:
                    outputs[fw] = ad.run(v, model, x)
    say("comparing")
    taps, tols = C.tap_names(v), compare.tap_tolerances(v, dtype)
    if inputs:
        taps, tols = ["input", *taps], {"input": compare.tap_tolerance(tol, 0), **tols}
    with t("compare"):
        results = compare.compare_taps(outputs, taps, tols)
        if not inputs and any(r.status == "diverged" for r in results):
            # a pair beyond its tolerance: is either side itself off the exact value? (float64 reference)
            say("arbitrating against the float64 reference")
            exact = reference.forward(v, params if isolated else weights.random_params(v, seed, cache=False), x)
            notes += compare.arbitrate(results, outputs, exact)
            del exact
        iso = _isolated(v, params, x, outputs) if isolated else []
    settings = {"input_size": [h, w], "batch": batch, "seed": seed, "dtype": dtype,
                "native": v.native, "isolated": isolated}
    if inputs:
        settings["raw_images"] = {fw: P.of_framework(fw, v).name for fw in fws}
        notes += _input_verdict(v, fws, results)
    return Report(
        kind="check", variant=v.name, frameworks=fws, tolerance=tol, taps=results,
        settings=settings, timings=dict(t), notes=notes, isolated=iso, peak_memory_mb=peak_memory_mb(),
    )


def _preprocessed(v: Variant, fws: Sequence[str], raw: np.ndarray) -> tuple[dict[str, np.ndarray], list[str]]:
    """Each framework's input: its own library's preprocessing of `raw`, by that library's function
    where it imports (else equiv's record of it, said in the notes).

    torchvision is imported first, before any TensorFlow: its import can load triton (through
    torch._dynamo), which segfaults when loaded after TensorFlow (tox.ini, torch214)."""
    found = {}
    for fw in sorted(fws, key=lambda f: P.of_framework(f, v).name != "torchvision"):
        p = P.of_framework(fw, v)
        fn, by = P.library_function(p)
        found[fw] = (p, fn, by) if fn is not None else (p, p.apply, f"equiv's record of it ({by})")
    inputs, notes = {}, []
    for fw in fws:
        p, fn, by = found[fw]
        inputs[fw] = fn(raw)
        notes.append(f"input of {fw}: {p.describe()}, computed by {by}")
    return inputs, notes


def _input_verdict(v: Variant, fws: Sequence[str], results) -> list[str]:
    """Where the preprocessed inputs differ: which transforms, and what that means."""
    bad = [r for r in results if r.name == "input" and not r.ok]
    if not bad:
        return []
    a, b = bad[0].pair
    pa, pb = P.of_framework(a, v), P.of_framework(b, v)
    return [f"the preprocessings differ at the input: {a} feeds {pa.describe()}, {b} feeds {pb.describe()}; the "
            f"same weights then see different images, so every tap after differs. {v.name}'s weights expect "
            f"{P.of_variant(v).describe()}, in every framework"]


def diff(variant_a: str | Variant, variant_b: str | Variant, framework: str | None = None, *,
         input_size: tuple[int, int] = DIFF_SIZE, batch: int = 2, seed: int = 0,
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
    pa, pb = P.of_variant(a), P.of_variant(b)
    if pa.name != pb.name:  # outside the networks, so not compared, but a user feeding them must know
        notes.append(f"input: {a.name} expects {pa.describe()}, {b.name} {pb.describe()}"
                     + (" (the same numbers)" if pa.same_as(pb) else ""))
    params = weights.random_params(a, seed)
    # a head that variant_b has none of (Inception's auxiliary classifier) is set aside, and said
    aside, params_b = [n for n in params if n not in C.param_shapes(b)], params
    if aside and all(n in params for n in C.param_shapes(b)):
        layers = sorted({n.rsplit("/", 1)[0] for n in aside})
        notes.append(f"{b.name} has no {', '.join(layers[:4])}{', ...' if len(layers) > 4 else ''}: "
                     f"{len(aside)} parameters of {a.name} set aside")
        params_b = {n: params[n] for n in C.param_shapes(b)}
    C.check_params(b, params_b, source=f"weights of {a.name}")
    x = weights.random_input(a, batch, h, w, seed)
    t = _Timer()
    outputs = {}
    # one name for two descriptions (a registered one and a changed copy): told apart in the outputs
    label_b = b.name if b.name != a.name else f"{b.name} (changed)"
    for label, var, p in ((a.name, a, params), (label_b, b, params_b)):
        with loaded(fw, var, p, phase=t) as m, t("forward"):
            outputs[label] = ad.run(var, m, x)
    common = [n for n in C.tap_names(a) if n in set(C.tap_names(b))]
    tol = compare.tolerance(dtype)
    with t("compare"):
        results = compare.compare_taps(outputs, common, compare.tap_tolerances(a, dtype))
    return Report(kind="diff", variant=f"{a.name} vs {b.name}", frameworks=[fw], tolerance=tol,
                  taps=results, settings={"input_size": [h, w], "batch": batch, "seed": seed,
                                          "framework": fw, "conventions_differing": sorted(differing)},
                  timings=dict(t), notes=notes, peak_memory_mb=peak_memory_mb())
