"""Porting real weight files, and running them: the file-level face of equiv.

A port is a read into the canonical form and a write out of it; `--verify` then loads both
files into their frameworks and checks them layer by layer on identical random inputs.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from equiv import canonical as C
from equiv import compare, files, weights
from equiv.compare import Report
from equiv.errors import EquivError, ParamMismatchError
from equiv.variants import Variant, get

# The framework that owns each file format; safetensors belongs to none and is verified in
# the variant's native framework.
OWNER = {"tf-checkpoint": "slim", "keras-weights": "keras", "keras-archive": "keras", "keras2-h5": "keras",
         "torch": "torch"}


def _head_hint(e: ParamMismatchError, v: Variant) -> str | None:
    """How to port a head of another class count, when the head is all that does not fit."""
    if e.missing or e.unexpected or any(not n.startswith("logits/") for n, _, _ in e.mismatched):
        return None
    for name, _expected, found in e.mismatched:
        if name in ("logits/kernel", "logits/bias"):
            n = found[-1]
            hint = f"--num-classes {n}"
            if n == v.num_classes + 1:
                hint += f" --drop-background (to port the {n}-class head to {v.num_classes} classes)"
            return f"the file has a {n}-class head: pass {hint}"
    return None


# Formats cheap enough to re-read against every registered variant to say which one a
# mismatched file looks like (a Keras file would need a model built per candidate).
_SNIFFABLE = ("safetensors", "torch", "tf-checkpoint")


def looks_like(path, fmt: str, exclude: Variant) -> str | None:
    """The registered variant whose parameters a file fits, with its own head size, if any."""
    from equiv.variants import all_variants

    for cand in all_variants():
        if cand.name == exclude.name:
            continue
        try:
            files.read(path, cand, fmt)
            return cand.name
        except ParamMismatchError as e:
            head = [found[-1] for name, _, found in e.mismatched if name == "logits/bias"]
            if head and len(e.mismatched) == 2 and not e.missing and not e.unexpected:
                return f"{cand.name} with --num-classes {head[0]}"
        except EquivError:
            continue
    return None


def load_weights(path, variant: str | Variant, fmt: str | None = None, *, num_classes: int | None = None) -> dict:
    """Canonical parameters of `variant` from a weight file in any supported format."""
    v = get(variant, num_classes)
    fmt = files.detect(path, fmt)
    try:
        return files.read(path, v, fmt)
    except ParamMismatchError as e:
        hint = _head_hint(e, v)
        if hint is None and fmt in _SNIFFABLE:
            other = looks_like(path, fmt, v)
            hint = f"the file looks like {other}" if other else None
        if hint:
            raise EquivError(f"{e}; {hint}") from None
        raise


def drop_background(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A 1001-class head (class 0 = background, as slim's ImageNet checkpoints) to 1000 classes."""
    out = dict(params)
    out["logits/kernel"] = np.ascontiguousarray(params["logits/kernel"][:, 1:])
    out["logits/bias"] = np.ascontiguousarray(params["logits/bias"][1:])
    return out


def build(variant: str | Variant, framework: str, weights=None, *, num_classes: int | None = None):
    """The framework's own model object for `variant`, with `weights` (a path or canonical dict)."""
    from equiv.frameworks import adapter

    v = get(variant, num_classes)
    ad = adapter(framework)
    model = ad.build(v)
    if weights is not None:
        params = weights if isinstance(weights, Mapping) else load_weights(weights, v)
        ad.load_params(v, model, params)
    return model


@dataclass
class PortResult:
    variant: str
    source: str
    source_format: str
    target: str
    target_format: str
    written: list[str]
    timings: dict = field(default_factory=dict)
    report: Report | None = None

    def to_json(self) -> dict:
        return {
            "variant": self.variant, "source": self.source, "source_format": self.source_format,
            "target": self.target, "target_format": self.target_format, "written": self.written,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "verify": self.report.to_json() if self.report else None,
        }


def port(variant: str | Variant, source, target, *, source_format: str | None = None,
         target_format: str | None = None, num_classes: int | None = None, drop_background_class: bool = False,
         verify: bool = False, force: bool = False, seed: int = 0, input_size=None, batch: int = 2,
         progress=None) -> PortResult:
    """Read `source`, write `target` (atomically; an existing one only with force)."""
    say = progress or (lambda msg: None)
    v_src = get(variant, num_classes)
    if drop_background_class:
        if v_src.num_classes < 2:
            raise EquivError("--drop-background needs a head of at least 2 classes")
        v_dst = v_src.replace(num_classes=v_src.num_classes - 1)
    else:
        v_dst = v_src
    src_fmt = files.detect(source, source_format)
    dst_fmt = files.detect(target, target_format, reading=False)
    if Path(os.path.abspath(source)) == Path(os.path.abspath(target)):
        raise EquivError(f"{target}: the target is the source file")
    t = {}
    t0 = time.perf_counter()
    say(f"reading {source} ({src_fmt})")
    params = load_weights(source, v_src, src_fmt)
    if drop_background_class:
        params = drop_background(params)
    t["read"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    say(f"writing {target} ({dst_fmt})")
    try:
        written = files.write(params, target, v_dst, dst_fmt, force=force)
    except files.NonFiniteError as e:
        raise EquivError(f"{source}: {e}") from None
    t["write"] = time.perf_counter() - t0
    result = PortResult(v_dst.name, str(source), src_fmt, str(target), dst_fmt, [str(p) for p in written], t)
    if verify:
        t0 = time.perf_counter()
        say("verifying: loading both files and comparing every tap")
        result.report = verify_files(v_src, source, src_fmt, v_dst, target, dst_fmt,
                                     seed=seed, input_size=input_size, batch=batch)
        t["verify"] = time.perf_counter() - t0
    return result


def verify_files(v_src: Variant, source, src_fmt: str, v_dst: Variant, target, dst_fmt: str, *,
                 seed: int = 0, input_size=None, batch: int = 2) -> Report:
    """Load each file into its own framework, run one random input, compare every tap
    (at `input_size`, by default the variant's only size or 64x64)."""
    from equiv.checking import check_input, peak_memory_mb
    from equiv.frameworks import adapter

    h, w = input_size or v_src.input_size or (64, 64)
    check_input(v_src, batch, h, w)
    x = weights.random_input(v_src, batch, h, w, seed)
    outputs = {}
    labels = []
    for v, path, fmt, role in ((v_src, source, src_fmt, "source"), (v_dst, target, dst_fmt, "target")):
        fw = OWNER.get(fmt, v.native)
        ad = adapter(fw)
        model = ad.build(v)
        ad.load_params(v, model, files.read(path, v, fmt))
        label = f"{role}:{fw}"
        outputs[label] = ad.run(v, model, x)
        labels.append(label)
        if callable(getattr(model, "close", None)):
            model.close()
    if v_src.num_classes != v_dst.num_classes:  # dropped background: compare the classes kept
        outputs[labels[0]]["logits"] = outputs[labels[0]]["logits"][:, 1:]
    tol = compare.tolerance("float32")
    results = compare.compare_taps(outputs, C.tap_names(v_dst), compare.tap_tolerances(v_dst))
    return Report(kind="port", variant=v_dst.name, frameworks=labels, tolerance=tol, taps=results,
                  settings={"input_size": [h, w], "batch": batch, "seed": seed},
                  peak_memory_mb=peak_memory_mb())


def run_file(variant: str | Variant, weights_path, framework: str, x: np.ndarray, taps="logits", *,
             fmt: str | None = None, num_classes: int | None = None) -> dict[str, np.ndarray]:
    """Run a weight file in one framework on NHWC float32 input `x`; the requested taps."""
    from equiv.checking import check_input
    from equiv.frameworks import adapter

    v = get(variant, num_classes)
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[-1] != v.in_channels:
        raise EquivError(f"input must be NHWC with {v.in_channels} channels, got shape {x.shape}")
    if x.dtype != np.float32:
        raise EquivError(f"input must be float32, got {x.dtype}")
    if not np.isfinite(x).all():
        raise EquivError("input holds NaN or Inf")
    check_input(v, x.shape[0], x.shape[1], x.shape[2])
    names = C.resolve_taps(v, taps)
    ad = adapter(framework)
    model = ad.build(v)
    ad.load_params(v, model, load_weights(weights_path, v, fmt))
    out = ad.run(v, model, x, names)
    if callable(getattr(model, "close", None)):
        model.close()
    return out


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()
