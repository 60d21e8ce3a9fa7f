"""Porting real weight files, and running them: the file-level face of equiv.

A port is a read into the canonical form and a write out of it; `--verify` then loads both
files into their frameworks and checks them layer by layer on identical random inputs.
"""

from __future__ import annotations

import functools
import gc
import io
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from equiv import canonical as C
from equiv import compare, files, formats, paths, weights
from equiv.compare import Report
from equiv.errors import EquivError, NonFiniteError, ParamMismatchError
from equiv.variants import Variant, get

VERIFY_SIZE = (64, 64)  # the default input of `port --verify` (API and command line)


def owner(fmt: str, v: Variant) -> str:
    """The backend a file of format `fmt` is loaded into: its owner, else (safetensors) the variant's native one."""
    return formats.get(fmt).owner or v.native


def _is_head(name: str) -> bool:
    """A classifier's parameter: `logits/...`, or an auxiliary classifier's (Inception's `aux/logits/...`)."""
    return name.rsplit("/", 1)[0].rsplit("/", 1)[-1] == "logits"


def _head_hint(e: ParamMismatchError, v: Variant) -> str | None:
    """How to port a head of another class count, when the head is all that does not fit."""
    if e.missing or e.unexpected or any(not _is_head(n) for n, _, _ in e.mismatched):
        return None
    for name, _expected, found in e.mismatched:
        if name in ("logits/kernel", "logits/bias"):
            n = found[-1]
            hint = f"`num_classes={n}`"
            if n == v.num_classes + 1:
                hint += f" `drop_background_class=True` (to port the {n}-class head to {v.num_classes} classes)"
            return f"the file has a {n}-class head: pass {hint}"
    return None


def _head_of(e: ParamMismatchError) -> int | None:
    """The class count of a file whose head alone does not fit (both logits parameters, nothing else)."""
    names = {n for n, _, _ in e.mismatched}
    if e.missing or e.unexpected or not {"logits/bias", "logits/kernel"} <= names or not all(map(_is_head, names)):
        return None
    return next(found[-1] for name, _, found in e.mismatched if name == "logits/bias")


def label(cand: Variant, dialect_arg: str = "dialect") -> str:
    """A candidate as a hint names it: its name, and the arguments that place it in its dialect and
    make it headless (a backbone's file: `candidates`)."""
    args = ([f"`{dialect_arg}='{cand.dialect}'`"] if cand.dialect else []) + (
        ["`source_headless=True`"] if headless_of_registered(cand) else [])
    return f"{cand.name} with {' and '.join(args)}" if args else cand.name


def headless_of_registered(v: Variant) -> bool:
    """`v` is a registered network without the head it is registered with (`port(source_headless=True)`)."""
    from equiv.variants import names

    return ("logits/kernel" not in C.param_shapes(v) and v.name in names()
            and "logits/kernel" in C.param_shapes(get(v.name)))


def _as_registered(cand: Variant) -> str:
    """A candidate's name with its own head: a headless one's says so (`source_headless=True`)."""
    return f"{cand.name} with `source_headless=True`" if headless_of_registered(cand) else cand.name


def _headless(v: Variant) -> Variant | None:
    """`v` without its head, where its family describes one (head "none"), else None."""
    try:
        bare = v.replace(head="none", num_classes=0)
    except (TypeError, ValueError, EquivError):
        return None
    return bare if bare != v else None


# The last read's misfits: candidate -> its ParamMismatchError (for "fits nothing": the nearest three)
_MISFITS: dict[Variant, ParamMismatchError] = {}


def _fits(read, cand: Variant) -> str | None:
    """`cand`'s name if `read(cand)` fits it, with the flags for its dialect and another head; else None."""
    try:
        read(cand)
        return label(cand)
    except ParamMismatchError as e:
        head = _head_of(e)
        if head:
            return f"{label(cand)}{' and' if cand.dialect else ' with'} `num_classes={head}`"
        _MISFITS[cand] = e
        return None
    except EquivError:
        return None


def candidates(exclude: Variant | None = None, fmt: str | None = None) -> list[Variant]:
    """Every registered variant, and each in every dialect whose library computes it (equiv.dialects)
    and whose names files of format `fmt` use (its backend's; safetensors: a torch library's): what a
    file is tried as."""
    from equiv import dialects
    from equiv.variants import all_variants

    out = []
    for v in all_variants():
        if exclude is None or v.name != exclude.name:
            out.append(v)
        for d in dialects.names():
            try:
                placed = v.in_dialect(d)
            except EquivError:
                continue
            if placed.dialect and placed != exclude and (fmt is None or _names_of(placed, fmt)):
                out.append(placed)
        # a backbone's own file (keras-hub's ResNetBackbone): the headless network, where a library's
        # code computes it (Variant.built_by without importing the library)
        bare = _headless(v)
        for placed in [bare] + [_placed(bare, d) for d in dialects.names()] if bare is not None else []:
            if (placed is not None and placed != exclude and Variant.built_by(placed)
                    and (fmt is None or not placed.dialect or _names_of(placed, fmt))):
                out.append(placed)
    return list(dict.fromkeys(out))


def _placed(v: Variant, d: str) -> Variant | None:
    try:
        placed = v.in_dialect(d)
    except EquivError:
        return None
    return placed if placed.dialect else None


def _names_of(placed: Variant, fmt: str) -> bool:
    """Whether files of format `fmt` of `placed` carry its dialect's names (not the canonical ones, or
    another backend's)."""
    owner_ = formats.get(fmt).owner
    return placed.native == owner_ if owner_ else files.backend_named(placed) is not None


def nearest(n: int = 3) -> list[str]:
    """The `n` candidates of the last `looks_like` that came nearest (fewest names and shapes that
    differ), each with what differs."""
    def size(e: ParamMismatchError) -> int:
        return len(e.missing) + len(e.unexpected) + len(e.mismatched)
    out = []
    for cand, e in sorted(_MISFITS.items(), key=lambda kv: size(kv[1]))[:n]:
        parts = []
        if e.missing:
            parts.append(f"{len(e.missing)} missing ({e.missing[0]})")
        if e.unexpected:
            parts.append(f"{len(e.unexpected)} unexpected ({e.unexpected[0]})")
        if e.mismatched:
            name, exp, got = e.mismatched[0]
            parts.append(f"{len(e.mismatched)} of another shape ({name} {tuple(exp)} vs {tuple(got)})")
        if any(name == "logits/bias" for name, _, _ in e.mismatched):
            got = next(g for name, _, g in e.mismatched if name == "logits/bias")
            parts.append(f"{got[-1]} classes, not {cand.num_classes}")
        out.append(f"{label(cand)}: {'; '.join(parts)}")
    return out


def _by_shapes(shapes: list[tuple[int, ...]], cand: Variant) -> str | None:
    """`cand`'s name if a file's sorted array shapes are its canonical shapes, with its own head."""
    expected = C.param_shapes(cand)
    theirs = sorted(expected.values())
    if shapes == theirs:
        return _as_registered(cand)
    if "logits/kernel" not in expected:  # a headless network: no other head to offer
        return None
    extra, lacking = Counter(shapes) - Counter(theirs), Counter(theirs) - Counter(shapes)
    features, n = expected["logits/kernel"][0], cand.num_classes
    heads = [s[0] for s in extra if len(s) == 1]
    if (len(heads) == 1 and lacking == Counter({(features, n): 1, (n,): 1})
            and extra == Counter({(features, heads[0]): 1, (heads[0],): 1})):
        return f"{cand.name} with `num_classes={heads[0]}`"
    return None


def looks_like(path, fmt: str, exclude: Variant, *, allow_pickle: bool = False,
               classes: Mapping[str, type] | None = None) -> str | None:
    """The registered variant whose parameters a file fits, with its own head size, if any.

    The file is read once, whatever the number of candidates, by its format's `fit` (declared
    shapes only where the format declares them), then loaded once more for each candidate that fits,
    to confirm it (`_loads`); candidates native to the file's framework come first:
    torchvision/resnet50 and slim/resnet_v1_50 share every shape but the head."""
    record = formats.get(fmt)
    pool = sorted(candidates(exclude, fmt), key=lambda c: (c.native != record.owner, bool(c.dialect)))
    _MISFITS.clear()
    try:
        match = record.fit_to()(path, fmt, allow_pickle=allow_pickle, classes=classes)
    except Exception:  # noqa: BLE001 - an unreadable file looks like nothing
        return None
    exact = None
    for cand in pool:
        found = match(cand)
        if not found or not _loads(path, fmt, cand, found, allow_pickle, classes):
            continue
        if found == _as_registered(cand):
            return found
        exact = exact or found
    return exact


def _loads(path, fmt: str, cand: Variant, found: str, allow_pickle: bool, classes) -> bool:
    """Whether the file really loads as `cand` with the head `found` names: a hint is given only then
    (a fit by sorted shapes alone, as Keras files are matched, is not a load; no hint goes in a circle)."""
    import re

    head = re.search(r"`num_classes=(\d+)`", found)
    v = cand.replace(num_classes=int(head.group(1))) if head else cand
    try:  # which network it is, not whether it needs --unfold-bn (a folded export then says so itself)
        files.read(path, v, fmt, allow_pickle=allow_pickle, classes=classes, unfold_bn=True)
    except EquivError:
        return False
    return True


def detect(path, format: str | None = None, *, allow_pickle: bool = False,
           classes: Mapping[str, type] | None = None) -> dict:
    """What a weight file is, from its content: its format, the dialects (libraries' names) it is in,
    and every registered variant it loads as (each as `looks_like` names it: with the dialect and
    head-size arguments that load it); where none, the nearest three and what differs. The file is
    read once."""
    paths.check_input(path, format)
    fmt = files.detect(path, format)
    record = formats.get(fmt)
    _MISFITS.clear()
    try:
        match = record.fit_to()(path, fmt, allow_pickle=allow_pickle, classes=classes)
    except EquivError as e:
        raise EquivError(f"{path}: cannot be read as {fmt} ({e})") from None
    loads, found_dialects = [], []
    for cand in candidates(fmt=fmt):
        found = match(cand)
        if found and _loads(path, fmt, cand, found, allow_pickle, classes):
            loads.append(found)
            d = cand.dialect or (_own_dialect(cand) if record.owner else "canonical")
            if d and d not in found_dialects:
                found_dialects.append(d)
    return {"path": str(path), "format": fmt, "dialects": found_dialects, "loads_as": loads,
            "nearest": [] if loads else nearest()}


def _own_dialect(v: Variant) -> str:
    """The public dialect of a registered variant's own library ("" for the seed's programs)."""
    from equiv import dialects

    return next((d for d in dialects.names() if v.reference.startswith(dialects.spelling(v, d).library)), "")


# Each format's `fit`: read a file once, return what each candidate variant makes of it (its name,
# with the flag for another head, or None).

def fit_by_sorted_shapes(path, fmt: str, **_):
    """Files of a Keras model, whose names depend on how it was built: by their sorted shapes,
    which Keras keeps in the canonical layout (files.keras_shapes)."""
    shapes = files.keras_shapes(path, fmt)
    return lambda cand: _by_shapes(shapes, cand)


def fit_tf_checkpoint(path, fmt: str, **_):
    """A TF2 object checkpoint of a Keras model by its sorted shapes; a Saver one by slim's names
    and the shapes its index declares."""
    shapes = files.keras_shapes(path, fmt)
    if shapes is not None:
        return lambda cand: _by_shapes(shapes, cand)
    from equiv.frameworks import adapter

    declared, ad = files.declared_shapes(path, fmt), adapter(formats.get(fmt).owner)
    return lambda cand: _fits(lambda c: C.check_shapes(c, ad.checkpoint_params(c, declared)), cand)


def fit_state_dict(path, fmt: str, *, allow_pickle: bool = False, classes=None):
    from equiv.frameworks import adapter

    ad = adapter(formats.get(fmt).owner)
    state = ad.load_state(path, allow_pickle=allow_pickle, classes=classes)
    shapes = {k: tuple(a.shape) for k, a in state.items() if not k.endswith(".num_batches_tracked")}

    def check(c: Variant) -> None:
        # names and shapes first, from the description (cheap); the arrays only for a candidate that fits them
        expected = ad.state_shapes(c)
        if expected != shapes:
            canonical = {key: name for name, key in ad.framework_names(c).items()}
            raise ParamMismatchError(
                c.name, missing=[canonical[k] for k in expected if k not in shapes],
                unexpected=[k for k in shapes if k not in expected],
                mismatched=[(canonical[k], expected[k], shapes[k]) for k in expected
                            if k in shapes and shapes[k] != expected[k]], source=str(path))
        ad.state_to_canonical(c, state, str(path))
    return lambda cand: _fits(check, cand)


def fit_declared(path, fmt: str, **_):
    """Canonical names and the shapes the file declares (safetensors' header); a candidate in a torch
    library's dialect by its names and torch's layout (files.read_safetensors)."""
    declared = files.declared_shapes(path, fmt)

    def check(c: Variant) -> None:
        backend = files.backend_named(c)
        if backend is None:
            C.check_shapes(c, declared)
            return
        from equiv.frameworks import adapter

        state = files.foreign_state(c, {n: s for n, s in declared.items() if not n.endswith(".num_batches_tracked")})
        adapter(backend).state_to_canonical(c, state, str(path))
    return lambda cand: _fits(check, cand)


def load_weights(variant: str | Variant, path, format: str | None = None, *, num_classes: int | None = None,
                 dialect: str | None = None, allow_pickle: bool = False,
                 classes: Mapping[str, type] | None = None, dialect_arg: str = "dialect",
                 unfold_bn: bool = False, lazy: bool = False) -> dict:
    """Canonical parameters of `variant` from the weight file `path` in any supported format
    (`format`: one of equiv.formats.NAMES; default from the name, else the content; `dialect`: the
    library whose names the file uses, equiv.dialects.names(), default the variant's own).

    A file that does not fit names the variant expected, the first parameter with its shape
    expected and found, and the registered variant the file looks like (or the flag for its head).
    `allow_pickle`: see equiv.frameworks.torch.load_state (torch files only, never by default).
    `unfold_bn`: a graph exported by `torch.onnx.export` in eval mode, whose BatchNorms the exporter
    folded into the convs, is read with each folded conv as the conv and an identity BatchNorm holding
    the folded bias (without it, such a file is refused: equiv.frameworks.onnx_export.file_params).
    `lazy`: see equiv.files.read (a mapping whose arrays are read as they are taken, where the format allows)."""
    fmt = format
    v = get(variant, num_classes, dialect)
    paths.check_input(path, fmt)
    fmt = files.detect(path, fmt)
    try:
        return files.read(path, v, fmt, allow_pickle=allow_pickle, classes=classes, unfold_bn=unfold_bn,
                          lazy=lazy)
    except ParamMismatchError as e:
        hint = _head_hint(e, v)
        if hint is None:
            other = looks_like(path, fmt, v, allow_pickle=allow_pickle, classes=classes)
            if other:
                hint = f"the file looks like {other}".replace("`dialect=", f"`{dialect_arg}=")
            elif _MISFITS:
                hint = "it fits no registered variant in any dialect; nearest: " + " | ".join(nearest())
        if hint and e.hint:  # the reader's own reason first (an exported graph's missing layer)
            hint = f"{e.hint}; {hint}"
        raise (e.relabel(hint=hint) if hint else e) from None


def drop_background(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A 1001-class head (class 0 = background, as slim's ImageNet checkpoints) to 1000 classes."""
    out = dict(params)
    for name in params:  # the classifier, and an auxiliary one (Inception's aux/logits) where there is one
        if _is_head(name):
            out[name] = np.ascontiguousarray(params[name][:, 1:] if name.endswith("/kernel") else params[name][1:])
    return out


def build(variant: str | Variant, framework: str, weights=None, *, num_classes: int | None = None,
          dialect: str | None = None):
    """The framework's own model object for `variant`, with `weights` (a path or canonical dict);
    `dialect`: the library whose module and names it has (its own code where it imports)."""
    from equiv.frameworks import adapter

    v = get(variant, num_classes, dialect)
    ad = adapter(framework)
    model = ad.build(v)
    if weights is not None:
        if isinstance(weights, Mapping):
            files.check_finite(weights, "weights")
            params = weights
        else:
            params = load_weights(v, weights)
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
    # The input the weights expect, the one the target's library feeds by habit, and the exact
    # transform to feed where they differ (equiv.preprocessing.port_advice).
    preprocessing: dict = field(default_factory=dict)

    def to_json(self, *, timings: bool = False) -> dict:
        """Byte-identical for the same command; times (and the verify's peak memory) only with `timings`."""
        out = {
            "variant": self.variant, "source": self.source, "source_format": self.source_format,
            "target": self.target, "target_format": self.target_format, "written": self.written,
            "preprocessing": self.preprocessing,
            "verify": self.report.to_json(timings=timings) if self.report else None,
        }
        if timings:
            out["timings_s"] = {k: round(v, 3) for k, v in self.timings.items()}
        return out


def _collector_paused(fn):
    """`fn` run with Python's cyclic garbage collector paused, unless it verifies (builds models): a
    collection that falls in a port scans every object the imports made (torch's alone are some
    100 000), 80 ms of a 0.5 s ResNet-50 port; reading and writing files makes no cycles worth
    collecting meanwhile (reference counting frees the arrays)."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        if kwargs.get("verify") or not gc.isenabled():
            return fn(*args, **kwargs)
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            gc.enable()

    return run


@_collector_paused
def port(variant: str | Variant, source, target, *, source_format: str | None = None,
         target_format: str | None = None, num_classes: int | None = None, drop_background_class: bool = False,
         dialect: str | None = None, source_dialect: str | None = None, target_dialect: str | None = None,
         verify: bool = False, force: bool = False, seed: int = 0, input_size=None, batch: int = 2,
         allow_pickle: bool = False, classes: Mapping[str, type] | None = None, unfold_bn: bool = False,
         headless: bool = False, source_headless: bool = False, progress=None) -> PortResult:
    """Read `source`, write `target` (atomically; an existing one only with force).

    `headless`: write the network without its head (the description's head "none": no pool, no
    classifier), as a backbone's own file holds it (keras-hub's `ResNetBackbone.save_weights`); the
    source's head is read and left out. `source_headless`: the source is such a file (and so is the
    target: a head cannot be made up).

    `allow_pickle` (and `classes`) let a torch source that needs real unpickling be read: see
    equiv.frameworks.torch.load_state. Never by default.
    `dialect`: the names of both files (equiv.dialects.names()); `source_dialect`, `target_dialect`: of
    each (a port from Hugging Face's names to timm's: source_dialect="hf", target_dialect="timm").
    `unfold_bn`: see load_weights (an exported ONNX graph whose BatchNorms were folded); with `verify`,
    such a source runs as the export itself (ONNX Runtime), compared at every tap it has a counterpart for."""
    say = progress or (lambda msg: None)
    own = get(variant, num_classes)
    if source_headless or headless:
        try:
            bare = own.replace(head="none", num_classes=0)
        except (TypeError, ValueError) as e:
            raise EquivError(f"{own.name} has no headless description ({e})") from None
        own = bare if source_headless else own
    v_src = own.in_dialect(source_dialect or dialect) if source_dialect or dialect else own
    weights.check_seed(seed)  # options are checked before anything is written
    if drop_background_class:
        if v_src.num_classes < 2:
            raise EquivError("`drop_background_class=True` needs a head of at least 2 classes")
        v_dst = own.replace(num_classes=own.num_classes - 1)
    else:
        v_dst = own
    if headless and not source_headless:
        if verify:
            raise EquivError("`headless=True` writes a network without the head `verify=True` would compare; "
                             "port without it and check the file read back as the headless description")
        v_dst = bare
    if target_dialect or dialect:
        v_dst = v_dst.in_dialect(target_dialect or dialect)
    dst_fmt = files.detect(target, target_format, reading=False)
    # the source's files are regular (read without opening a FIFO), the target is none of them
    paths.check_job([("`source`", source, source_format)], [("`target`", target, dst_fmt)], force=force)
    src_fmt = files.detect(source, source_format)
    if verify:  # refuse sizes that cannot run before any work
        from equiv.memory import check_input

        owners = [owner(f, v_src) for f in (src_fmt, dst_fmt)]
        exported = _exported_source(v_src, source, src_fmt)
        if exported is not None and exported[2] and input_size and tuple(input_size) != tuple(exported[2]):
            raise EquivError(f"{source}: the exported graph takes {exported[2][0]}x{exported[2][1]} inputs only: "
                             f"pass `input_size=({exported[2][0]}, {exported[2][1]})`")
        check_input(v_src, batch, *(input_size or (exported and exported[2]) or v_src.input_size or VERIFY_SIZE),
                    frameworks=owners)
    t = {}
    t0 = time.perf_counter()
    say(f"reading {source} ({src_fmt})")
    if not verify and not drop_background_class and not (headless and not source_headless):
        written = _rename_port(v_src, source, src_fmt, v_dst, target, dst_fmt, force, allow_pickle, classes, t)
        if written is not None:
            from equiv.preprocessing import port_advice

            return PortResult(v_dst.name, str(source), src_fmt, str(target), dst_fmt, [str(p) for p in written], t,
                              preprocessing=port_advice(v_dst, owner(src_fmt, v_src), formats.get(dst_fmt).owner))
        t0 = time.perf_counter()
    # Without --verify nothing needs the params after the write: a writer that converts each array
    # (a torch state_dict) drops it as it goes (consume) and, where the source can be read a tensor
    # at a time (a slim checkpoint), each is read only when the writer takes it (files.Lazy, which
    # checks it finite then): a VGG-16 port holds its 411 MB fc6 once in the source's layout, not
    # the whole source beside the whole target.
    consume = not verify
    lazy = consume and not drop_background_class and formats.get(dst_fmt).from_params
    source_params = params = load_weights(v_src, source, src_fmt, allow_pickle=allow_pickle, classes=classes,
                                          dialect_arg="source_dialect", unfold_bn=unfold_bn, lazy=lazy)
    if drop_background_class:
        params = drop_background(params)
    if headless and not source_headless:  # the source's head left out (a Lazy source never reads it)
        for name in [n for n in params if n not in C.param_shapes(v_dst)]:
            del params[name]
    t["read"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    say(f"writing {target} ({dst_fmt})")
    try:
        # read checked every value (a Lazy one checks each as the writer takes it)
        written = files.write(params, target, v_dst, dst_fmt, force=force, finite=True,
                              consume=consume and isinstance(params, (dict, files.Lazy)))
    except NonFiniteError as e:
        raise NonFiniteError(e.args[0] if str(e).startswith(f"{source}:") else f"{source}: {e}") from None
    t["write"] = time.perf_counter() - t0
    from equiv.preprocessing import port_advice

    result = PortResult(v_dst.name, str(source), src_fmt, str(target), dst_fmt, [str(p) for p in written], t,
                        preprocessing=port_advice(v_dst, owner(src_fmt, v_src), formats.get(dst_fmt).owner))
    if verify:
        t0 = time.perf_counter()
        say("verifying: loading both files and comparing every tap")
        result.report = verify_files(v_src, source, src_fmt, v_dst, target, dst_fmt, seed=seed,
                                     input_size=input_size, batch=batch, source_params=source_params)
        t["verify"] = time.perf_counter() - t0
    return result


def _rename_port(v_src: Variant, source, src_fmt: str, v_dst: Variant, target, dst_fmt: str, force: bool,
                 allow_pickle: bool, classes, t: dict):
    """A port between two files of one backend's layout (Hugging Face's model.safetensors to timm's or
    torchvision's state_dict, and back): the tensors renamed, not transposed twice. None where the two
    layouts differ or the source does not fit exactly (the full read then says why)."""
    from equiv.frameworks import adapter

    if files.backend_of(v_src, src_fmt) != files.backend_of(v_dst, dst_fmt) or any(
            formats.get(f).owner_on_demand for f in (src_fmt, dst_fmt)):
        return None  # without importing either backend (a Keras file is read and written with h5py)
    backend = files.layout_of(v_src, src_fmt)
    if backend is None or files.layout_of(v_dst, dst_fmt) != backend:
        return None
    t0 = time.perf_counter()
    state = files.read_state(Path(source), v_src, src_fmt, allow_pickle=allow_pickle, classes=classes)
    if state is None:
        return None
    ad = adapter(backend)
    src_names, dst_names, dst_shapes = ad.framework_names(v_src), ad.framework_names(v_dst), ad.state_shapes(v_dst)
    out = {dst_names[n]: state[k].reshape(dst_shapes[dst_names[n]]) for n, k in src_names.items()}
    t["read"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    written = files.write_state(out, target, v_dst, dst_fmt, force=force, finite=True)
    t["write"] = time.perf_counter() - t0
    return written


def _exported_source(v: Variant, path, fmt: str):
    """(run, taps, size, notes) of a source file that is a model another tool exported (an ONNX graph of
    `torch.onnx.export`), run as itself with its taps mapped; None for a weight file."""
    from equiv.frameworks import adapter

    ad = adapter(owner(fmt, v))
    model = ad.file_model(v, path) if hasattr(ad, "file_model") else None
    if model is None:
        return None
    run, taps, size = ad.model_runner(v, model)
    return run, taps, size, list(getattr(ad, "model_notes", lambda v, m: [])(v, model))


def verify_files(v_src: Variant, source, src_fmt: str, v_dst: Variant, target, dst_fmt: str, *,
                 seed: int = 0, input_size=None, batch: int = 2, source_params=None) -> Report:
    """Load each file into its own framework, run one random input, compare every tap (at
    `input_size`, by default the variant's only size or 64x64).

    `source_params`: the source as already read (a pickle is then not unpickled twice). A source that
    is a model another tool exported (an ONNX graph of torch.onnx.export) runs as itself, not as
    equiv's build of what was read from it: the comparison then shows that the written file computes
    what the export computes, at every tap the export has a counterpart for (the others named)."""
    from equiv.frameworks import adapter, loaded
    from equiv.memory import check_input, peak_memory_mb

    exported = _exported_source(v_src, source, src_fmt)
    h, w = input_size or (exported and exported[2]) or v_src.input_size or VERIFY_SIZE
    owners = [owner(fmt, v) for v, fmt in ((v_src, src_fmt), (v_dst, dst_fmt))]
    check_input(v_src, batch, h, w, frameworks=owners)
    x = weights.random_input(v_src, batch, h, w, seed)
    outputs = {}
    labels = []
    names = C.tap_names(v_dst)
    notes: list[str] = []
    for v, path, fmt, role, fw in ((v_src, source, src_fmt, "source", owners[0]),
                                   (v_dst, target, dst_fmt, "target", owners[1])):
        if role == "source" and exported is not None:
            run, taps, _, notes = exported
            notes = [f"the source is the exported graph itself, run in {fw}, not equiv's build of what was read "
                     "from it", *notes]
            label = f"{role}:{fw}"
            names = [t for t in names if t in taps]
            outputs[label] = run(x, names)
            labels.append(label)
            continue
        params = source_params if role == "source" and source_params is not None else files.read(path, v, fmt)
        label = f"{role}:{fw}"
        with loaded(fw, v, params) as model:
            outputs[label] = adapter(fw).run(v, model, x)
        labels.append(label)
    if v_src.num_classes != v_dst.num_classes and "logits" in outputs[labels[0]]:  # dropped background
        outputs[labels[0]]["logits"] = outputs[labels[0]]["logits"][:, 1:]
    tol = compare.tolerance("float32")
    results = compare.compare_taps(outputs, names, compare.tap_tolerances(v_dst))
    if len(names) < len(C.tap_names(v_dst)):
        notes.append(f"the exported graph gives only some taps; compared: {len(names)} of {len(C.tap_names(v_dst))}")
    return Report(kind="port", variant=v_dst.name, frameworks=labels, tolerance=tol, taps=results,
                  settings={"input_size": [h, w], "batch": batch, "seed": seed}, notes=notes,
                  peak_memory_mb=peak_memory_mb())


def run_file(variant: str | Variant, path, framework: str, x: np.ndarray, taps="logits", *,
             format: str | None = None, num_classes: int | None = None, dialect: str | None = None,
             allow_pickle: bool = False, classes: Mapping[str, type] | None = None,
             unfold_bn: bool = False) -> dict[str, np.ndarray]:
    """Run the weight file `path` in one framework on NHWC float32 input `x`; the requested taps.
    `unfold_bn`: see load_weights (an exported ONNX graph whose BatchNorms the exporter folded)."""
    from equiv.frameworks import adapter, loaded
    from equiv.memory import check_input

    v = get(variant, num_classes, dialect)
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[-1] != v.in_channels:
        raise EquivError(f"input must be NHWC with {v.in_channels} channels, got shape {x.shape}")
    if x.dtype != np.float32:
        raise EquivError(f"input must be float32, got {x.dtype}")
    found = files.nonfinite(x)
    if found:
        raise NonFiniteError(f"the input holds NaN or Inf ({found})")
    check_input(v, x.shape[0], x.shape[1], x.shape[2], frameworks=[framework])
    names = C.resolve_taps(v, taps)
    params = load_weights(v, path, format, allow_pickle=allow_pickle, classes=classes, unfold_bn=unfold_bn)
    with loaded(framework, v, params) as model:
        return adapter(framework).run(v, model, x, names)


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()
