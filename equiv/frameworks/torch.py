"""PyTorch backend: parameters in and out of a module's state_dict, runs with taps, files.

What a network is in torch (its module, its names, where its taps are) is its family's torch
builder (equiv/families/<family>/torch.py); this adapter does the rest the same way for every
family. The layers that pad explicitly (TF SAME with a stride, asymmetric amounts, a zero-padded
max-pool) live here, for every builder to use.
"""

from __future__ import annotations

import functools
import math
import os
import pickle
import re
import sys
import warnings
import zipfile
from collections.abc import Callable, Mapping
from types import SimpleNamespace

import numpy as np

from equiv import canonical as C
from equiv import families
from equiv.errors import EquivError, FrameworkError, UnsafeFileError
from equiv.variants import Variant

try:  # absolute import: the real torch, not this module
    import torch
    import torch.nn.functional as F
    from torch import nn
    _MISSING = None
except ImportError as exc:  # the adapter must import, and say why, without torch
    torch = F = None
    nn = SimpleNamespace(Module=object, Conv2d=object, MaxPool2d=object)  # so the classes define
    _MISSING = f"torch is not installed ({exc})"


# What a family's torch builder provides beyond build, framework_names and DIALECTS: running its module
# with a tap recorder, telling its own modules, the submodules to hook in a foreign one (and,
# optionally, pickle_classes for an opted-in pickle).
BUILDER = ("forward_taps", "built_here", "foreign_taps")

def available() -> str | None:
    return _MISSING


# ---------------------------------------------------------------------------------------
# Layers

# A tap recorder: forward() calls it with each canonical tap name and tensor (NCHW).
Record = Callable[[str, "torch.Tensor"], None]


def _ignore(name: str, t) -> None:
    pass


def _static_padding(rule: str, kernel: int, stride: int) -> tuple[int, int] | None:
    """(before, after) when they do not depend on the input size, else None.

    Only TF SAME with a stride > 1 and a kernel wider than 1 depends on the input size."""
    if rule == "tf_same" and stride > 1 and kernel > 1:
        return None
    return C.pad_amounts(rule, 1, kernel, stride)  # any size gives the same amounts here


class _PadsItself:
    """Mixin for a Conv2d or MaxPool2d that pads its input with F.pad first: for padding that
    the layer's own `padding=` cannot express (TF SAME, asymmetric, zeros before a max-pool)."""

    def __init__(self, *args, rule: str, value: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.rule, self.value = rule, value

    def forward(self, x):
        k, s = _first(self.kernel_size), _first(self.stride)
        top, bottom = C.pad_amounts(self.rule, x.shape[-2], k, s)
        left, right = C.pad_amounts(self.rule, x.shape[-1], k, s)
        return super().forward(F.pad(x, (left, right, top, bottom), value=self.value))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pad={self.rule!r} with {self.value}"


def _first(size) -> int:  # Conv2d keeps (k, k), MaxPool2d k
    return size[0] if isinstance(size, tuple) else size


class PaddedConv2d(_PadsItself, nn.Conv2d):
    pass


class PaddedMaxPool2d(_PadsItself, nn.MaxPool2d):
    pass


def build(variant: Variant, *, reference: bool | None = None):
    """The family's module for `variant` in eval mode (equiv/families/<family>/torch.py)."""
    if _MISSING:
        raise FrameworkError(_MISSING)
    return families.builder(variant, "torch").build(variant, reference=reference)


# ---------------------------------------------------------------------------------------
# Names and layouts

def framework_names(variant: Variant) -> dict[str, str]:
    """canonical name -> state_dict key, in the dialect of the family's torch builder (a fresh dict)."""
    try:
        return dict(_framework_names(variant, variant.built_by()))
    except TypeError:  # a description holding an unhashable field: computed afresh
        return families.builder(variant, "torch").framework_names(variant)


@functools.lru_cache(maxsize=64)
def _framework_names(variant: Variant, built_by: str) -> dict[str, str]:
    # a frozen description's names depend on it and on the library code that computes it here (built_by)
    return families.builder(variant, "torch").framework_names(variant)


def _torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of a canonical kernel of `shape` in torch's layout: dense (out, in), conv OIHW;
    others as they are (worked out, not by transposing an array of that size)."""
    if len(shape) == 2:
        return shape[::-1]
    return (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else tuple(shape)


def _torch_layout(variant: Variant, name: str, a: np.ndarray, flattened=None) -> torch.Tensor:
    """Canonical `a` as the tensor torch's module holds (a new tensor; `a` is left as it is): dense
    (out, in) with the rows of a kernel after an NCHW flatten reordered (`nchw_flattened`), conv
    OIHW, reshaped where the family's builder stores a parameter in another shape (its optional
    `torch_shape(v, name, shape)`: a 1x1-conv classifier's (out, in, 1, 1)). The transposes copy tile
    by tile (equiv.canonical.transposed; torch's own for a kernel after an NCHW flatten)."""
    with warnings.catch_warnings():  # a read-only array (a file's) is only read: each path below copies it
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        t = torch.from_numpy(np.require(a, np.float32, "C"))
    t = _to_torch_named(name, t, flattened or {})
    hook = getattr(families.builder(variant, "torch"), "torch_shape", None)
    return t.reshape(hook(variant, name, tuple(t.shape))) if hook else t


def _canonical_layout(variant: Variant, name: str, a: np.ndarray, shape: tuple[int, ...] | None,
                      flattened=None) -> np.ndarray:
    """`_to_canonical`, after undoing the builder's `torch_shape` (a stored shape that is not
    the builder's passes unchanged, for the check to report)."""
    hook = getattr(families.builder(variant, "torch"), "torch_shape", None)
    if hook and shape is not None:
        plain = _torch_shape(tuple(shape))
        stored = tuple(hook(variant, name, plain))
        if stored != plain and tuple(a.shape) == stored:
            a = a.reshape(plain)
    return _to_canonical_named(name, a, shape, flattened or {})


def _to_canonical(name: str, a: np.ndarray, shape: tuple[int, ...] | None) -> np.ndarray:
    """A torch kernel in the canonical layout of `shape` (a kernel of the wrong rank, from a
    file, passes unchanged, for the check to report)."""
    if not name.endswith("/kernel") or shape is None or a.ndim != len(shape):
        return a
    return np.ascontiguousarray(a.T) if a.ndim == 2 else C.oihw_to_hwio(a) if a.ndim == 4 else a


def _nchw_flattened(variant: Variant) -> dict[str, tuple[int, int, int]]:
    """Canonical dense kernel -> (h, w, c) of the map the family's torch module flattens in NCHW
    order before it (a layout rule of its builder, `nchw_flattened`; none by default)."""
    rule = getattr(families.builder(variant, "torch"), "nchw_flattened", None)
    return rule(variant) if rule else {}


def _to_torch_named(name: str, t: torch.Tensor, flattened: Mapping[str, tuple[int, int, int]]) -> torch.Tensor:
    if name in flattened and t.ndim == 2 and t.shape[0] == math.prod(flattened[name]):
        # rows from the canonical NHWC flatten to torch's NCHW one, and (out, in): (h*w*c, out) ->
        # (out, h*w, c) by torch's blocked transpose, then each row to (c, h*w) in place
        h, w, c = flattened[name]
        k = t.T.contiguous()
        _rows_to_channels_first(k.numpy().reshape(k.shape[0], h * w, c))
        return k
    if t.ndim == 2:  # numpy's copies tile by tile (equiv.canonical.transposed): 3-4x torch's threaded
        return torch.from_numpy(C.transposed(t.numpy()))  # ones on the loaded 2-core CI machine
    if t.ndim == 4:
        return torch.from_numpy(C.hwio_to_oihw(t.numpy()))
    return t.clone()


_REORDER_BYTES = 1 << 20  # the buffer an in-place reorder goes through: a few rows, in cache


def _rows_to_channels_first(k: np.ndarray) -> None:
    """Each row of `k` (n, hw, c), a contiguous array, rewritten in place as (c, hw): a VGG's fc6
    (4096 rows of 7*7*512) goes through a 1 MB buffer, not a second 400 MB copy. numpy's copies, one
    thread: torch's threaded ones start a pool per small copy, many times slower on a loaded machine."""
    n, hw, c = k.shape
    step = max(1, _REORDER_BYTES // (k.itemsize * hw * c))
    buf = np.empty((min(step, n), hw, c), k.dtype)
    out = k.reshape(n, c, hw)  # the same memory
    for i in range(0, n, step):
        part = buf[: min(step, n - i)]
        np.copyto(part, k[i:i + len(part)])
        np.copyto(out[i:i + len(part)], part.transpose(0, 2, 1))


def _to_canonical_named(name: str, a: np.ndarray, shape: tuple[int, ...] | None,
                        flattened: Mapping[str, tuple[int, int, int]]) -> np.ndarray:
    a = _to_canonical(name, a, shape)
    return C.dense_rows_nchw_to_nhwc(a, flattened[name]) if name in flattened else a


def state_dict_keys(variant: Variant, model) -> dict[str, str]:
    """canonical name -> state_dict key of `model`: the dialect's names (framework_names), except in
    a module the family's builder built itself where it names it otherwise (its optional
    `module_names`: equiv's own module of a timm variant keeps torchvision's scheme)."""
    fam = families.builder(variant, "torch")
    own = getattr(fam, "module_names", None)
    return own(variant) if own is not None and fam.built_here(model) else framework_names(variant)


def export_params(variant: Variant, model) -> dict[str, np.ndarray]:
    state, shapes, flattened = model.state_dict(), C.param_shapes(variant), _nchw_flattened(variant)
    return {name: _canonical_layout(variant, name, state[key].detach().cpu().float().numpy(), shapes[name],
                                    flattened)
            for name, key in state_dict_keys(variant, model).items()}


def state_shapes(variant: Variant) -> dict[str, tuple[int, ...]]:
    """state_dict key -> shape in the dialect's names and torch's layout, from the description alone
    (no array made): what a file must declare to fit."""
    out, shapes = {}, C.param_shapes(variant)
    hook = getattr(families.builder(variant, "torch"), "torch_shape", None)
    for name, key in framework_names(variant).items():
        s = shapes[name]
        s = s[::-1] if len(s) == 2 else (s[3], s[2], s[0], s[1]) if len(s) == 4 else s
        out[key] = tuple(hook(variant, name, s)) if hook else tuple(s)
    return out


def state_arrays(variant: Variant, params) -> dict[str, np.ndarray]:
    """Canonical `params` as a state_dict of numpy arrays in the dialect's names and torch's layout
    (a library's own safetensors file; no module built)."""
    flattened = _nchw_flattened(variant)
    return {key: _torch_layout(variant, name, np.asarray(params[name]), flattened).numpy()
            for name, key in framework_names(variant).items()}


def load_params(variant: Variant, model, params) -> None:
    C.check_params(variant, params)
    flattened = _nchw_flattened(variant)
    state = {key: _torch_layout(variant, name, np.asarray(params[name]), flattened)
             for name, key in state_dict_keys(variant, model).items()}
    # num_batches_tracked is not canonical: keep the model's own, so the load can be strict
    state.update({k: t for k, t in model.state_dict().items() if k.endswith(".num_batches_tracked")})
    model.load_state_dict(state, strict=True)


# ---------------------------------------------------------------------------------------
# Running


def run(variant: Variant, model, x: np.ndarray, taps=None, *,
        channels_last: bool = False) -> dict[str, np.ndarray]:
    """Taps of NHWC `x`. channels_last=True converts the model (in place) and the input to
    torch.channels_last first; the input goes to the model's device."""
    names = C.resolve_taps(variant, taps)
    wanted, got = set(names), {}

    def record(name, t):  # copied out at once, so all taps never sit twice in memory
        if name in wanted:
            a = t.float().cpu().numpy()
            out = C.nchw_to_nhwc(a)
            # a view of the tensor's own storage (a 1x1 map's transpose, a 2-D tap) is copied: a module may
            # still change that tensor in place (torchvision's `out += identity` on its last BatchNorm's output)
            got[name] = out.copy() if np.shares_memory(out, a) else out

    t = torch.from_numpy(C.nhwc_to_nchw(np.asarray(x, np.float32)))
    t = t.to(next(model.parameters()).device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        t = t.contiguous(memory_format=torch.channels_last)
    model.eval()
    with torch.inference_mode():
        families.builder(variant, "torch").forward_taps(variant, model, t, record)
    return {n: got[n] for n in names}


def _trusted_classes(variant: Variant) -> dict[str, type] | None:
    """Classes an opted-in pickle load of `variant`'s files may find (the seed's `__main__`)."""
    trusted = getattr(families.builder(variant, "torch"), "pickle_classes", None)
    return trusted(variant) if trusted else None


def release(model) -> None:
    """Free a module equiv built, though its caller may still name it (`with loaded(...) as model`
    keeps the name until the next stage has built): every parameter and buffer gives its storage
    back. The module cannot run after; loaded() releases only the modules it built. Idempotent."""
    with torch.no_grad():
        for t in (*model.parameters(), *model.buffers()):
            t.data = torch.empty(0, dtype=t.dtype)


# ---------------------------------------------------------------------------------------
# A user's torch module, and the environment

NAMING = ("a torch module is read through its state_dict, in torchvision's names "
          "(equiv.frameworks.torch.framework_names(variant) lists them)")


def owns(obj) -> bool:
    return torch is not None and isinstance(obj, nn.Module)


def model_names(model) -> set[str]:
    return {k for k in model.state_dict() if not k.endswith(".num_batches_tracked")}


def model_params(variant: Variant, model) -> dict[str, np.ndarray]:
    return state_dict_params(variant, model.state_dict(), source=f"torch module {type(model).__name__}")


def _mode_kept(model, fn):
    """Run fn() with the module in eval mode, then give it back the mode it had."""
    was_training = model.training
    try:
        return fn()
    finally:
        model.train(was_training)


def model_runner(variant: Variant, model):
    """A module of equiv's builder runs with every tap; any other through its own forward, tapped
    by hooks on the submodules that the family's torch dialect names (`foreign_taps`)."""
    fam = families.builder(variant, "torch")
    if fam.built_here(model):
        return (lambda x, taps: _mode_kept(model, lambda: run(variant, model, x, taps))), None, None
    where = fam.foreign_taps(variant)
    modules = dict(model.named_modules())
    lost = [m for m in where.values() if m not in modules]
    if lost:
        raise EquivError(f"torch module {type(model).__name__} has no submodule {lost[0]} (the layout "
                         f"of {variant.name} in its torch dialect); its taps cannot be read")

    def hooked(x, taps):
        got = {}

        def recorder(tap):
            def hook(module, inputs, output):
                if not isinstance(output, torch.Tensor):
                    raise EquivError(f"submodule {where[tap]} of {type(model).__name__} returned a "
                                     f"{type(output).__name__}, not a tensor")
                got[tap] = output.detach().float().cpu().clone()
            return hook

        handles = [modules[where[t]].register_forward_hook(recorder(t)) for t in taps]
        device = next(model.parameters()).device
        t = torch.from_numpy(C.nhwc_to_nchw(np.asarray(x, np.float32))).to(device)
        try:
            model.eval()
            with torch.no_grad():
                model(t)
        finally:
            for h in handles:
                h.remove()
        silent = [where[tap] for tap in taps if tap not in got]
        if silent:
            raise EquivError(f"{type(model).__name__}.forward never called its submodule {silent[0]}")
        return {tap: C.nchw_to_nhwc(got[tap].numpy()) if got[tap].ndim == 4 else got[tap].numpy() for tap in taps}

    return (lambda x, taps: _mode_kept(model, lambda: hooked(x, taps))), list(where), None


def versions() -> dict[str, str]:
    return {"torch": torch.__version__}


def engine() -> str:
    return "torch"


def thread_pools() -> list[dict]:
    """torch's intra-op pool (its own, which threadpoolctl does not list)."""
    return [{"library": "torch", "api": "intra-op", "version": torch.__version__, "kernel": "-",
             "threads": torch.get_num_threads()}]


def device_name(device: str) -> str | None:
    """The GPU that `device` ("cuda") means here, None on the CPU or without one."""
    if device == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return None


# ---------------------------------------------------------------------------------------
# Files: a state_dict saved with torch.save


def write_file(variant: Variant, params: Mapping[str, np.ndarray], path, *, consume: bool = False) -> None:
    """`params` as the state_dict a module of `variant`'s dialect holds (its keys, layouts and each
    BatchNorm's `num_batches_tracked`), saved with torch.save; no module is built, so no time goes
    to a random initialisation that the load would overwrite.
    `consume=True`: each array is dropped from `params` (a dict, or an equiv.files.Lazy that reads
    each when it is taken) once converted (equiv.files.write).

    The conversions run on one torch thread: they are copies into fresh memory, bound by memory and
    page faults, which a second thread only contends for (a VGG-16's kernels, on a loaded 2-core
    machine: 0.9 s with two threads, 0.5 s with one); the caller's setting is restored after."""
    flattened, state = _nchw_flattened(variant), {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, key in framework_names(variant).items():
            state[key] = _torch_layout(variant, name, np.asarray(params[name]), flattened)
            if consume:
                del params[name]
    finally:
        torch.set_num_threads(threads)
    _save_state(state, path)


def write_state_file(variant: Variant, state, path) -> None:
    """A state_dict of arrays already in the dialect's names and torch's layout (a port between two
    files of that layout: equiv.porting), saved as write_file saves."""
    _save_state({k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in state.items()}, path)


def _save_state(state: dict, path) -> None:
    """torch.save of `state` with each BatchNorm's `num_batches_tracked` (0, as in a fresh module)."""
    state.update({k[: -len("running_var")] + "num_batches_tracked": torch.tensor(0) for k in list(state)
                  if k.endswith(".running_var")})
    torch.save(state, path)


def read_file(variant: Variant, path, *, allow_pickle: bool = False,
              classes: Mapping[str, type] | None = None, **_) -> dict[str, np.ndarray]:
    """Canonical parameters from a state_dict file, checked strictly against `variant`.

    Loaded with weights_only=True; a file that needs real unpickling only with allow_pickle
    (see load_state). The seed's pickle names its classes in `__main__`: for
    seed/torch_resnet_v2 they are supplied (equiv.seed.torch_resnet_v2) unless `classes` says."""
    state = load_state(path, allow_pickle=allow_pickle, classes=classes or _trusted_classes(variant), variant=variant)
    return state_to_canonical(variant, state, str(path))


def state_dict_params(variant: Variant, state, source: str | None = None) -> dict[str, np.ndarray]:
    """Canonical parameters from a state_dict of tensors in this adapter's (torchvision's)
    names, checked strictly against `variant`: any module with these names, not only equiv's."""
    arrays = {k: torch.as_tensor(t).detach().cpu().float().numpy() for k, t in state.items()}
    return state_to_canonical(variant, arrays, source or "state_dict")


def state_to_canonical(variant: Variant, state: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """A state_dict (key -> array, as load_state gives it) in canonical names and layout, checked."""
    state = {k: a for k, a in state.items() if not k.endswith(".num_batches_tracked")}
    shapes, flattened = C.param_shapes(variant), _nchw_flattened(variant)
    params = {name: _canonical_layout(variant, name, state.pop(key), shapes[name], flattened)
              for name, key in framework_names(variant).items() if key in state}
    params.update(state)  # keys left over are unexpected: the check reports them by their own name
    C.check_params(variant, params, source=source)
    return params


_PICKLE_ADVICE = (
    "unpickling runs whatever code the file names, so equiv refuses it. In an environment you trust, "
    "convert it once to a plain state_dict: "
    "torch.save(torch.load(f, weights_only=False).state_dict(), 'weights.pt'); "
    "or pass `allow_pickle=True` if you trust whoever made this file")


# What a pickle may not call even with --allow-pickle: functions that act on the system rather
# than build a model. The first four are the modules torch's weights_only loader blocks outright.
REFUSED_GLOBALS = ("os.", "posix.", "nt.", "sys.", "subprocess.", "shutil.", "socket.", "builtins.eval",
                   "builtins.exec", "builtins.compile", "builtins.__import__", "builtins.open")


def _refused(name: str) -> bool:
    return name.startswith(tuple(g for g in REFUSED_GLOBALS if g.endswith("."))) or name in REFUSED_GLOBALS


def _refuse_call(path, name: str) -> UnsafeFileError:
    return UnsafeFileError(f"{path}: a pickle calling {name}, a function equiv refuses even with `allow_pickle=True` "
                           f"(it acts on the system, it does not build a model)")


def load_state(path, *, allow_pickle: bool = False, classes: Mapping[str, type] | None = None,
               variant: Variant | None = None) -> dict[str, np.ndarray]:
    """The state_dict of a torch file as float32 numpy arrays, by its own keys.

    First with weights_only=True, which builds nothing but tensors and plain containers. A file
    that needs more (a whole pickled nn.Module, any class by name) is refused with the way out,
    unless `allow_pickle`: then it is unpickled for real, after a warning (and a line on stderr)
    that names the file, and `classes` ("module.Name" -> class) supplies classes the pickle names
    but this process cannot import (a model pickled by a script run as __main__). `variant`: the
    network the file should hold, whose size bounds it first (equiv.limits)."""
    _check_sizes(path, variant)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        blocked = re.search(r"unsupported GLOBAL (\S+) whose module \S+ is blocked", str(exc))
        if blocked:
            raise _refuse_call(path, blocked.group(1)) from None
        if "Unsupported global" not in str(exc) and "Unsupported class" not in str(exc):
            raise EquivError(f"{path}: not a readable torch file ({_first_line(exc)})") from None
        if not allow_pickle:
            needs = re.search(r"GLOBAL (\S+)", str(exc))
            raise UnsafeFileError(f"{path}: loads only by unpickling{f' {needs.group(1)}' if needs else ''}; "
                                  + _PICKLE_ADVICE) from None
        obj = _trusted_load(path, classes)
    except RuntimeError as exc:
        raise EquivError(f"{path}: not a readable torch file ({_first_line(exc)})") from None
    return _state_arrays(obj, path)


def _check_sizes(path, variant: Variant | None = None) -> None:
    """The bytes a torch file can unpack to, before torch reads it: a zip's members by the sizes
    its central directory declares (a deflate bomb declares gigabytes in a few MB), else the file."""
    from equiv import limits

    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                total = sum(i.file_size for i in z.infolist())
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise EquivError(f"{path}: not a readable torch file ({exc})") from None
        limits.check_bytes(str(path), total, variant, "its zip members unpack to")
    else:
        limits.check_bytes(str(path), os.path.getsize(path), variant, "it holds")


def _first_line(exc: BaseException) -> str:
    """The reader's own first line; for weights_only failures, what the unpickler said."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip() and "Weights only load failed" not in line]
    return (lines or [type(exc).__name__])[0][:300]


def _trusted_load(path, classes: Mapping[str, type] | None):
    """torch.load(weights_only=False), trusted by the user's explicit opt-in; `classes` first."""
    message = (f"{path}: unpickled as asked (--allow-pickle, allow_pickle=True): this file is trusted to run code "
               "in this process")
    warnings.warn(message, UserWarning, stacklevel=3)
    print(f"equiv: warning: {message}", file=sys.stderr, flush=True)
    mapping = dict(classes or {})

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if _refused(f"{module}.{name}"):
                raise _refuse_call(path, f"{module}.{name}")
            found = mapping.get(f"{module}.{name}")
            if found is None:
                found = super().find_class(module, name)
                # by what it is, not what the pickle calls it (protocol 2 names subprocess `commands`)
                real = f"{getattr(found, '__module__', '')}.{getattr(found, '__qualname__', '')}"
                if _refused(real):
                    raise _refuse_call(path, real)
            return found

    pickle_module = SimpleNamespace(__name__="equiv_trusted_pickle", Unpickler=Unpickler,
                                    load=lambda f, **kw: Unpickler(f, **kw).load())
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=pickle_module)
    except EquivError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the trusted unpickling raised is about this file
        raise EquivError(f"{path}: cannot be unpickled ({type(exc).__name__}: {_first_line(exc)})") from None


def _state_arrays(obj, path) -> dict[str, np.ndarray]:
    """A state_dict from what a torch file held: the dict itself, a module's state_dict, or the
    `state_dict` / `model` entry of a training checkpoint."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    elif isinstance(obj, dict):
        for key in ("state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                inner = inner.state_dict()
            if isinstance(inner, dict) and inner and all(torch.is_tensor(t) for t in inner.values()):
                obj = inner
                break
    if not isinstance(obj, dict):
        raise EquivError(f"{path}: holds a {type(obj).__name__}, not a state_dict")
    bad = [k for k, t in obj.items() if not torch.is_tensor(t)]
    if bad:
        raise EquivError(f"{path}: entry {bad[0]!r} is a {type(obj[bad[0]]).__name__}, not a tensor: not a state_dict")
    for k, t in obj.items():  # BatchNorm's step counter is an int64 bookkeeping entry, dropped later
        if not t.is_floating_point() and not str(k).endswith("num_batches_tracked"):
            raise EquivError(f"{path}: parameter {k} is {str(t.dtype).removeprefix('torch.')}; weights must be "
                             f"floating point (float16, bfloat16, float32, float64)")
    return {str(k): t.detach().float().numpy() for k, t in obj.items()}


# ---------------------------------------------------------------------------------------
# Benchmarks

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


# Documented fast paths `equiv bench --best` tries, each checked against the plain path.
FAST_PATHS = {
    "channels_last": {"channels_last": True},
    "jit_freeze": {"channels_last": True, "jit_freeze": True},  # TorchScript freeze: oneDNN conv fusion
    "compile": {"channels_last": True, "compile": True},  # torch.compile (inductor)
    # inductor's freezing: the weights become constants, convs prepacked for oneDNN (CPU inference)
    "compile_freeze": {"channels_last": True, "compile": True, "freezing": True},
    "tf32": {"channels_last": True, "tf32": True},  # CUDA only: TF32 tensor-core matmuls and convs
}


def forward_fn(variant: Variant, model, x: np.ndarray, *, device: str = "cpu",
               dtype: str = "float32", channels_last: bool = False, jit_freeze: bool = False,
               compile: bool = False, freezing: bool = False, tf32: bool = False):
    """A callable running one forward pass and returning the logits: eager, inference mode,
    the model on `device`, half types through autocast; optionally channels_last, a frozen
    TorchScript trace, or torch.compile (with inductor's `freezing`: parameters folded in as
    constants); `tf32` lets CUDA use TF32 for this callable only."""
    if freezing and not compile:
        raise FrameworkError("`freezing` is an option of torch.compile: pass compile=True too")
    if device == "cuda" and not torch.cuda.is_available():
        raise FrameworkError("no CUDA device visible to PyTorch")
    if tf32 and device != "cuda":
        raise FrameworkError("TF32 is a CUDA mode")
    model = model.to(device).eval()
    t = torch.from_numpy(C.nhwc_to_nchw(np.asarray(x, np.float32))).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        t = t.contiguous(memory_format=torch.channels_last)
    half = getattr(torch, _DTYPES[dtype]) if dtype != "float32" else None
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    run = model
    if jit_freeze:
        with torch.no_grad():
            run = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, t).eval()))
    elif compile:
        run = torch.compile(model, options={"freezing": True} if freezing else None)

    def step():
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        try:
            # inductor freezes parameters only under no_grad: inference_mode's tensors bypass it
            with (torch.no_grad() if freezing else torch.inference_mode()), \
                    torch.autocast(device, dtype=half, enabled=half is not None):
                out = run(t)
            sync()
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
        return out
    return step


def matmul_fn(n: int, *, device: str = "cpu", dtype: str = "float32"):
    """A callable multiplying two n x n matrices in PyTorch (the ceiling benchmark)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise FrameworkError("no CUDA device visible to PyTorch")
    dt = getattr(torch, _DTYPES[dtype])
    a = torch.randn(n, n, device=device, dtype=dt)
    b = torch.randn(n, n, device=device, dtype=dt)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        torch.mm(a, b)
        sync()
    return step
