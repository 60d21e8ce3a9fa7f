"""PyTorch adapter: one nn.Module family that realises any variant from its description.

The module is named as torchvision's ResNet is: conv1, bn1, maxpool, layer{s}.{u-1}.conv{k} /
bn{k} / downsample.0 (.1), fc. For the torchvision/ variants it therefore *is* the reference:
its state_dict has exactly torchvision.models.resnetNN's keys, shapes and dtypes, and loads
into it with strict=True. Other variants extend the same scheme: conv biases as `conv.bias`,
a pre-activation BatchNorm as `layer{s}.{u-1}.preact`, the v2 post-norm as `postnorm`, a
projection without BatchNorm as `downsample.0` alone.

Padding costs nothing where PyTorch can express it (a symmetric `padding=` argument, a
max-pool's implicit -inf padding); only TF SAME with a stride, asymmetric amounts, or a
zero-padded max-pool pad explicitly, in the layer that needs it.
"""

from __future__ import annotations

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


def _conv(c: C.Conv) -> nn.Conv2d:
    pad = _static_padding(c.padding, c.kernel, c.stride)
    if pad is not None and pad[0] == pad[1]:
        return nn.Conv2d(c.cin, c.cout, c.kernel, c.stride, padding=pad[0], bias=c.bias)
    return PaddedConv2d(c.cin, c.cout, c.kernel, c.stride, bias=c.bias, rule=c.padding)


def _max_pool(v: Variant) -> nn.MaxPool2d:
    k, s = v.pool_kernel, v.pool_stride
    pad = _static_padding(v.pool_padding, k, s)
    # MaxPool2d pads implicitly with -inf, symmetrically, at most half the kernel.
    if pad == (0, 0) or (pad is not None and pad[0] == pad[1] <= k // 2 and v.pool_pad_value == "-inf"):
        return nn.MaxPool2d(k, s, padding=pad[0])
    value = float("-inf") if v.pool_pad_value == "-inf" else 0.0
    return PaddedMaxPool2d(k, s, rule=v.pool_padding, value=value)


def _batch_norm(v: Variant, channels: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, eps=v.bn_epsilon, affine=v.bn_scale)
    if not v.bn_scale:  # beta without gamma: F.batch_norm takes weight=None with a bias
        bn.bias = nn.Parameter(torch.zeros(channels))
    return bn


def _conv_norm_relu(conv, bn, relu: bool, x):
    x = conv(x)
    if bn is not None:
        x = bn(x)
    return F.relu(x) if relu else x


# No in-place operation below: a recorded tap must not change after it is recorded.


class Unit(nn.Module):
    """One residual unit, named as torchvision's BasicBlock / Bottleneck."""

    def __init__(self, v: Variant, unit: C.Unit):
        super().__init__()
        self.preact = _batch_norm(v, unit.cin) if v.preact else None
        self.preact_relu, self.identity_from = v.preact_relu, v.identity_from
        for k, c in enumerate(unit.convs, start=1):
            setattr(self, f"conv{k}", _conv(c))
            setattr(self, f"bn{k}", _batch_norm(v, c.cout) if c.norm else None)
        self.downsample = None
        if unit.shortcut:
            sc = unit.shortcut
            self.downsample = nn.Sequential(_conv(sc), *([_batch_norm(v, sc.cout)] if sc.norm else []))
        self.shortcut_relu = bool(unit.shortcut and unit.shortcut.relu)
        self.tap, self.stride = unit.name, unit.stride
        self.steps = [(f"conv{k}", f"bn{k}", c.relu, c.name) for k, c in enumerate(unit.convs, start=1)]

    def forward(self, x, record: Record = _ignore):
        branch = identity = x
        if self.preact is not None:
            branch = self.preact(x)
            branch = F.relu(branch) if self.preact_relu else branch
            record(f"{self.tap}/preact", branch)
            if self.identity_from == "preact":
                identity = branch
        if self.downsample is not None:
            # v2 projects the pre-activated input, v1 the unit's input
            shortcut = self.downsample(x if self.preact is None else branch)
            shortcut = F.relu(shortcut) if self.shortcut_relu else shortcut
        else:
            shortcut = identity[:, :, ::self.stride, ::self.stride] if self.stride > 1 else identity
        record(f"{self.tap}/shortcut", shortcut)
        r = branch
        for conv, bn, relu, tap in self.steps:
            r = _conv_norm_relu(getattr(self, conv), getattr(self, bn), relu, r)
            record(tap, r)
        out = shortcut + r
        if self.preact is None:  # v1: ReLU after the add; v2: none
            out = F.relu(out)
        record(self.tap, out)
        return out


class ResNet(nn.Module):
    """Any variant; for torchvision/ variants, torchvision.models.resnetNN's exact layout."""

    def __init__(self, v: Variant):
        super().__init__()
        stem = C.stem(v)
        self.conv1 = _conv(stem)
        self.bn1 = _batch_norm(v, stem.cout) if stem.norm else None
        self.stem_relu = stem.relu
        self.maxpool = _max_pool(v)
        stages: dict[int, list[Unit]] = {}
        for unit in C.units(v):
            stages.setdefault(unit.stage, []).append(Unit(v, unit))
        for s, blocks in stages.items():
            setattr(self, f"layer{s}", nn.Sequential(*blocks))
        self.stages = [f"layer{s}" for s in stages]
        self.postnorm = _batch_norm(v, C.channels(v)) if v.preact else None
        self.head_pool = (v.head_pool, v.head_pool_stride)
        self.softmax = v.head_activation == "softmax"
        self.fc = nn.Linear(C.features(v), v.num_classes)

    def forward(self, x, record: Record = _ignore):
        """Logits of NCHW `x`; `record(tap, tensor)` sees every canonical tap on the way."""
        h = _conv_norm_relu(self.conv1, self.bn1, self.stem_relu, x)
        record("stem/conv", h)
        h = self.maxpool(h)
        record("stem/pool", h)
        for stage in self.stages:
            for unit in getattr(self, stage):
                h = unit(h, record)
        if self.postnorm is not None:
            h = F.relu(self.postnorm(h))
            record("post", h)
        pooled = head_features(h, *self.head_pool)
        record("pool", pooled)
        logits = self.fc(pooled)
        if self.softmax:
            probs = F.softmax(logits, dim=-1)
            record("probs", probs)
            return probs
        record("logits", logits)
        return logits


def head_features(h, kernel: int = 0, stride: int = 0):
    """The "pool" tap of NCHW `h`: a global mean, or an average pool flattened in NHWC order
    (the canonical order of the dense kernel's rows)."""
    if not kernel:
        return h.mean(dim=(2, 3))
    return F.avg_pool2d(h, kernel, stride).permute(0, 2, 3, 1).flatten(1)


def _is_seed(v: Variant) -> bool:
    """The seed's own network computes `v` (any head size)."""
    return v.built_by() == "equiv.seed.torch_resnet_v2"


def build(variant: Variant, *, reference: bool | None = None):
    """The module for `variant`. For torchvision/ variants the generic module is the reference
    itself, so reference=None/True/False build the same thing; seed/torch_resnet_v2's reference
    (the default) is the seed's own module (equiv.seed.torch_resnet_v2)."""
    if _MISSING:
        raise FrameworkError(_MISSING)
    if reference and variant.native != "torch":
        raise FrameworkError(f"{variant.name} has no PyTorch reference implementation "
                             f"(it is native to {variant.native}); use the generic builder")
    if reference is not False and _is_seed(variant):
        from equiv.seed import torch_resnet_v2

        return torch_resnet_v2.build(variant).eval()
    return ResNet(variant).eval()


# ---------------------------------------------------------------------------------------
# Names and layouts

# canonical field -> attribute of the torch module (Conv2d, BatchNorm2d or Linear)
_FIELDS = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias",
           "moving_mean": "running_mean", "moving_variance": "running_var"}


def _modules(v: Variant) -> dict[str, str]:
    """canonical layer -> torch module path."""
    out = {"stem/conv": "conv1", "stem/conv/bn": "bn1", "post": "postnorm", "logits": "fc"}
    for unit in C.units(v):
        m = f"layer{unit.stage}.{unit.index - 1}"
        out[f"{unit.name}/preact"] = f"{m}.preact"
        out[f"{unit.name}/shortcut"] = f"{m}.downsample.0"
        out[f"{unit.name}/shortcut/bn"] = f"{m}.downsample.1"
        for k, c in enumerate(unit.convs, start=1):
            out[c.name] = f"{m}.conv{k}"
            out[f"{c.name}/bn"] = f"{m}.bn{k}"
    return out


def framework_names(variant: Variant) -> dict[str, str]:
    modules = _modules(variant)
    names = {}
    for name in C.param_shapes(variant):
        layer, field = name.rsplit("/", 1)
        names[name] = f"{modules[layer]}.{_FIELDS[field]}"
    return names


def _to_torch(name: str, a: np.ndarray) -> np.ndarray:
    if name == "logits/kernel":
        return np.ascontiguousarray(a.T)  # Linear.weight is (out, in)
    return C.hwio_to_oihw(a) if name.endswith("/kernel") else a


def _to_canonical(name: str, a: np.ndarray) -> np.ndarray:
    if name == "logits/kernel":
        return np.ascontiguousarray(a.T)
    # a kernel of the wrong rank (from a file) passes unchanged, for the check to report
    return C.oihw_to_hwio(a) if name.endswith("/kernel") and a.ndim == 4 else a


def export_params(variant: Variant, model: ResNet) -> dict[str, np.ndarray]:
    state = model.state_dict()
    return {name: _to_canonical(name, state[key].detach().cpu().float().numpy())
            for name, key in framework_names(variant).items()}


def load_params(variant: Variant, model: ResNet, params) -> None:
    C.check_params(variant, params)
    state = {key: torch.tensor(_to_torch(name, np.asarray(params[name], np.float32)))
             for name, key in framework_names(variant).items()}
    # num_batches_tracked is not canonical: keep the model's own, so the load can be strict
    state.update({k: t for k, t in model.state_dict().items() if k.endswith(".num_batches_tracked")})
    model.load_state_dict(state, strict=True)


# ---------------------------------------------------------------------------------------
# Running


def run(variant: Variant, model: ResNet, x: np.ndarray, taps=None, *,
        channels_last: bool = False) -> dict[str, np.ndarray]:
    """Taps of NHWC `x`. channels_last=True converts the model (in place) and the input to
    torch.channels_last first; the input goes to the model's device."""
    names = C.resolve_taps(variant, taps)
    wanted, got = set(names), {}

    def record(name, t):  # copied out at once, so all taps never sit twice in memory
        if name in wanted:
            got[name] = C.nchw_to_nhwc(t.float().cpu().numpy())

    t = torch.from_numpy(C.nhwc_to_nchw(np.asarray(x, np.float32)))
    t = t.to(next(model.parameters()).device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        t = t.contiguous(memory_format=torch.channels_last)
    model.eval()
    with torch.inference_mode():
        if isinstance(model, ResNet):
            model(t, record)
        else:  # the seed's own module: taps through hooks
            from equiv.seed import torch_resnet_v2

            torch_resnet_v2.record_taps(model, t, record)
    return {n: got[n] for n in names}


def release(model) -> None:
    """Nothing to close: a module is freed with its last reference."""


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
    """equiv's own module runs with every tap; any other through its own forward, tapped by hooks
    on its named modules: each unit's output (`layer{s}.{u-1}`) and the logits (`fc`)."""
    if isinstance(model, ResNet):
        return (lambda x, taps: _mode_kept(model, lambda: run(variant, model, x, taps))), None, None
    names = framework_names(variant)
    where = {unit.name: names[f"{unit.convs[0].name}/kernel"].rsplit(".", 2)[0] for unit in C.units(variant)}
    where["logits"] = names["logits/kernel"].rsplit(".", 1)[0]
    modules = dict(model.named_modules())
    lost = [m for m in where.values() if m not in modules]
    if lost:
        raise EquivError(f"torch module {type(model).__name__} has no submodule {lost[0]} (torchvision's layout "
                         f"of {variant.name}); its taps cannot be read")

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


def write_file(variant: Variant, model: ResNet, path) -> None:
    torch.save(model.state_dict(), path)


def read_file(variant: Variant, path, *, allow_pickle: bool = False,
                    classes: Mapping[str, type] | None = None) -> dict[str, np.ndarray]:
    """Canonical parameters from a state_dict file, checked strictly against `variant`.

    Loaded with weights_only=True; a file that needs real unpickling only with allow_pickle
    (see load_state). The seed's pickle names its classes in `__main__`: for
    seed/torch_resnet_v2 they are supplied (equiv.seed.torch_resnet_v2) unless `classes` says."""
    state = load_state(path, allow_pickle=allow_pickle, classes=classes or _seed_classes(variant))
    return state_to_canonical(variant, state, str(path))


def _seed_classes(v: Variant) -> dict[str, type] | None:
    """The seed's script pickles its whole model from `__main__`; an opted-in load of that
    file finds the classes in equiv.seed.torch_resnet_v2."""
    if not _is_seed(v):
        return None
    from equiv.seed import torch_resnet_v2

    return {"__main__.ResNet_v2": torch_resnet_v2.ResNet_v2, "__main__.Bottleneck": torch_resnet_v2.Bottleneck}


def state_dict_params(variant: Variant, state, source: str | None = None) -> dict[str, np.ndarray]:
    """Canonical parameters from a state_dict of tensors in this adapter's (torchvision's)
    names, checked strictly against `variant`: any module with these names, not only equiv's."""
    arrays = {k: torch.as_tensor(t).detach().cpu().float().numpy() for k, t in state.items()}
    return state_to_canonical(variant, arrays, source or "state_dict")


def state_to_canonical(variant: Variant, state: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """A state_dict (key -> array, as load_state gives it) in canonical names and layout, checked."""
    state = {k: a for k, a in state.items() if not k.endswith(".num_batches_tracked")}
    params = {name: _to_canonical(name, state.pop(key))
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


def load_state(path, *, allow_pickle: bool = False, classes: Mapping[str, type] | None = None) -> dict[str, np.ndarray]:
    """The state_dict of a torch file as float32 numpy arrays, by its own keys.

    First with weights_only=True, which builds nothing but tensors and plain containers. A file
    that needs more (a whole pickled nn.Module, any class by name) is refused with the way out,
    unless `allow_pickle`: then it is unpickled for real, after a warning (and a line on stderr)
    that names the file, and `classes` ("module.Name" -> class) supplies classes the pickle names
    but this process cannot import (a model pickled by a script run as __main__)."""
    _check_sizes(path)
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


def _check_sizes(path) -> None:
    """The bytes a torch file can unpack to, before torch reads it: a zip's members by the sizes
    its central directory declares (a deflate bomb declares gigabytes in a few MB), else the file."""
    from equiv import limits

    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                total = sum(i.file_size for i in z.infolist())
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise EquivError(f"{path}: not a readable torch file ({exc})") from None
        limits.check_bytes(str(path), total, None, "its zip members unpack to")
    else:
        limits.check_bytes(str(path), os.path.getsize(path), None, "it holds")


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
    "tf32": {"channels_last": True, "tf32": True},  # CUDA only: TF32 tensor-core matmuls and convs
}


def forward_fn(variant: Variant, model: ResNet, x: np.ndarray, *, device: str = "cpu",
               dtype: str = "float32", channels_last: bool = False, jit_freeze: bool = False,
               compile: bool = False, tf32: bool = False):
    """A callable running one forward pass and returning the logits: eager, inference mode,
    the model on `device`, half types through autocast; optionally channels_last, a frozen
    TorchScript trace, or torch.compile; `tf32` lets CUDA use TF32 for this callable only."""
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
        run = torch.compile(model)

    def step():
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        try:
            with torch.inference_mode(), torch.autocast(device, dtype=half, enabled=half is not None):
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
