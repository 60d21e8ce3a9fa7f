"""The ResNet family in PyTorch: one nn.Module that realises any description, and the seed's.

The module is named as torchvision's ResNet is: conv1, bn1, maxpool, layer{s}.{u-1}.conv{k} /
bn{k} / downsample.0 (.1), fc. For the torchvision/ variants it therefore *is* the reference:
its state_dict has exactly torchvision.models.resnetNN's keys, shapes and dtypes, and loads
into it with strict=True. Other variants extend the same scheme: conv biases as `conv.bias`,
a pre-activation BatchNorm as `layer{s}.{u-1}.preact`, the v2 post-norm as `postnorm`, a
projection without BatchNorm as `downsample.0` alone. That naming, the dialect, is the table
`_MODULES` below.

Padding costs nothing where PyTorch can express it (a symmetric `padding=` argument, a
max-pool's implicit -inf padding); only TF SAME with a stride, asymmetric amounts, or a
zero-padded max-pool pad explicitly, in the layer that needs it (equiv.frameworks.torch's
PaddedConv2d and PaddedMaxPool2d).
"""

from __future__ import annotations

import re

from equiv.errors import EquivError
from equiv.families.base import Dialect, dialect, library_build, rename
from equiv.families.resnet import plan
from equiv.families.resnet.description import ResNet as Description
from equiv.frameworks.torch import F, PaddedConv2d, PaddedMaxPool2d, Record, _ignore, _static_padding, nn, torch


def _conv(c: plan.Conv) -> nn.Conv2d:
    pad = _static_padding(c.padding, c.kernel, c.stride)
    if pad is not None and pad[0] == pad[1]:
        return nn.Conv2d(c.cin, c.cout, c.kernel, c.stride, padding=pad[0], bias=c.bias, groups=c.groups)
    return PaddedConv2d(c.cin, c.cout, c.kernel, c.stride, bias=c.bias, groups=c.groups, rule=c.padding)


def _max_pool(v: Description) -> nn.MaxPool2d:
    k, s = v.pool_kernel, v.pool_stride
    pad = _static_padding(v.pool_padding, k, s)
    # MaxPool2d pads implicitly with -inf, symmetrically, at most half the kernel.
    if pad == (0, 0) or (pad is not None and pad[0] == pad[1] <= k // 2 and v.pool_pad_value == "-inf"):
        return nn.MaxPool2d(k, s, padding=pad[0])
    value = float("-inf") if v.pool_pad_value == "-inf" else 0.0
    return PaddedMaxPool2d(k, s, rule=v.pool_padding, value=value)


def _batch_norm(v: Description, channels: int) -> nn.BatchNorm2d:
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

    def __init__(self, v: Description, unit: plan.Unit):
        super().__init__()
        self.preact = _batch_norm(v, unit.cin) if v.preact else None
        self.preact_relu, self.identity_from = v.preact_relu, v.identity_from
        for k, c in enumerate(unit.convs, start=1):
            setattr(self, f"conv{k}", _conv(c))
            setattr(self, f"bn{k}", _batch_norm(v, c.cout) if c.norm else None)
        self.downsample = None
        if unit.shortcut:
            sc = unit.shortcut
            # ResNet-D (timm's downsample_avg): the pool first, an Identity where the unit is not strided
            pool = [_avg_down(unit)] if v.projection_pool == "avg" else []
            self.downsample = nn.Sequential(*pool, _conv(sc), *([_batch_norm(v, sc.cout)] if sc.norm else []))
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


def _avg_down(unit: plan.Unit) -> nn.Module:
    """timm's downsample_avg pool: AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False),
    nn.Identity() at stride 1 (equiv.families.resnet.reference.avg_down)."""
    if not unit.avg_down:
        return nn.Identity()
    return nn.AvgPool2d(2, unit.stride, ceil_mode=True, count_include_pad=False)


def _deep_stem(v: Description) -> nn.Sequential:
    """A deep stem's convs but its last norm, as timm's ResNet names them: conv1 = Sequential(conv,
    bn, ReLU, ..., conv), its last BatchNorm `bn1` (inner convs always have BatchNorm and ReLU)."""
    layers = []
    for c in plan.stem_convs(v)[:-1]:
        layers += [_conv(c), _batch_norm(v, c.cout), nn.ReLU()]
    return nn.Sequential(*layers, _conv(plan.stem(v)))


class ResNet(nn.Module):
    """Any variant; for torchvision/ variants, torchvision.models.resnetNN's exact layout (timm's
    for timm/ ones: a deep stem as conv1.0 .. conv1.{3n}, a ResNet-D downsample as pool, conv, bn)."""

    def __init__(self, v: Description):
        super().__init__()
        stem = plan.stem(v)
        self.conv1 = _deep_stem(v) if v.deep_stem else _conv(stem)
        self.stem_taps = [c.name for c in plan.stem_convs(v)]
        self.bn1 = _batch_norm(v, stem.cout) if stem.norm else None
        self.stem_relu = stem.relu
        self.maxpool = _max_pool(v)
        stages: dict[int, list[Unit]] = {}
        for unit in plan.units(v):
            stages.setdefault(unit.stage, []).append(Unit(v, unit))
        for s, blocks in stages.items():
            setattr(self, f"layer{s}", nn.Sequential(*blocks))
        self.stages = [f"layer{s}" for s in stages]
        self.postnorm = _batch_norm(v, plan.channels(v)) if v.preact else None
        self.head_pool = (v.head_pool, v.head_pool_stride)
        self.softmax = v.head_activation == "softmax"
        self.fc = nn.Linear(plan.features(v), v.num_classes)

    def forward(self, x, record: Record = _ignore):
        """Logits of NCHW `x`; `record(tap, tensor)` sees every canonical tap on the way."""
        h = x
        if len(self.stem_taps) > 1:  # a deep stem: conv, bn, ReLU triples, then its last conv
            inner = list(self.conv1)
            for k, tap in enumerate(self.stem_taps[:-1]):
                h = _conv_norm_relu(inner[3 * k], inner[3 * k + 1], True, h)
                record(tap, h)
            h = _conv_norm_relu(inner[-1], self.bn1, self.stem_relu, h)
        else:
            h = _conv_norm_relu(self.conv1, self.bn1, self.stem_relu, h)
        record(self.stem_taps[-1], h)
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


def build(variant: Description, *, reference: bool | None = None):
    """The module for `variant`. For torchvision/ variants the generic module is the reference's
    transcription, so reference=None/True/False build the same thing; seed/torch_resnet_v2's
    reference (the default) is the seed's own module (equiv.seed.torch_resnet_v2)."""
    _, make = library_build(DIALECTS, "torch", variant, reference)
    return (make(variant) if make else ResNet(variant)).eval()


def built_here(model) -> bool:
    """`model` is this builder's generic module (which records its own taps)."""
    return isinstance(model, ResNet)


def forward_taps(v: Description, model, t, record: Record) -> None:
    """Run `model` on NCHW `t`, calling record(tap, tensor) for each canonical tap."""
    if isinstance(model, ResNet):
        model(t, record)
    elif dialect(DIALECTS, v) is DIALECTS["seed"]:  # the seed's own module: taps through hooks
        from equiv.seed import torch_resnet_v2

        torch_resnet_v2.record_taps(model, t, record)
    elif dialect(DIALECTS, v) is DIALECTS["timm"]:  # timm's own ResNet: taps through hooks
        timm_taps(v, model, t, record)
    else:
        raise EquivError(f"a {type(model).__name__} is not a module equiv built for {v.name}; "
                         "read a foreign module through equiv.frameworks.torch.model_runner")


# ---------------------------------------------------------------------------------------
# Dialects: torchvision's names (the seed's module uses them too)

# canonical layer -> torch module path (u0: the unit's index in its nn.Sequential)
_MODULES = {
    r"stem/conv": "conv1",
    r"stem/conv/bn": "bn1",
    r"stage(?P<s>\d+)/unit(?P<u>\d+)/preact": "layer{s}.{u0}.preact",
    r"stage(?P<s>\d+)/unit(?P<u>\d+)/shortcut": "layer{s}.{u0}.downsample.0",
    r"stage(?P<s>\d+)/unit(?P<u>\d+)/shortcut/bn": "layer{s}.{u0}.downsample.1",
    r"stage(?P<s>\d+)/unit(?P<u>\d+)/conv(?P<k>\d+)": "layer{s}.{u0}.conv{k}",
    r"stage(?P<s>\d+)/unit(?P<u>\d+)/conv(?P<k>\d+)/bn": "layer{s}.{u0}.bn{k}",
    r"post": "postnorm",
    r"logits": "fc",
}
# canonical field -> attribute of the torch module (Conv2d, BatchNorm2d or Linear)
_FIELDS = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias",
           "moving_mean": "running_mean", "moving_variance": "running_var"}


def _seed(v: Description):
    from equiv.seed import torch_resnet_v2

    return torch_resnet_v2.build(v)


def _timm(v: Description):
    import timm

    return timm.create_model(v.reference.rsplit(".", 1)[1], pretrained=False, num_classes=v.num_classes)


# timm's ResNet (timm.models.resnet) names its modules as torchvision does, and its deep stem and
# ResNet-D downsample as `_structural_names` adds them; it is built by timm itself only where timm
# imports (ResNet.built_by: not beside the pinned torch, which has no torchvision for timm to import).
DIALECTS = {
    "torchvision": Dialect("torchvision.models.", _MODULES),  # the generic module is its transcription
    "seed": Dialect("equiv.seed.torch_resnet_v2", _MODULES, build=_seed),
    "timm": Dialect("timm.", _MODULES, build=_timm),
}


def timm_taps(v: Description, model, t, record: Record) -> None:
    """Run timm's own ResNet on NCHW `t`, recording every canonical tap through forward hooks on
    its modules: a deep stem's ReLUs conv1[2], conv1[5], ..., then act1 (the stem's last conv),
    maxpool; per block act1 .. act{n-1} (its inner convs), bn{n} (the last conv, before the
    in-place add), downsample or the block's input (the shortcut), act{n} (the unit); global_pool,
    fc. `record` copies each tensor when called, before any in-place op changes it."""
    handles = []

    def on(module, tap, pre=False):
        if pre:
            handles.append(module.register_forward_pre_hook(lambda m, inputs: record(tap, inputs[0])))
        else:
            handles.append(module.register_forward_hook(lambda m, inputs, output: record(tap, output)))

    stem = plan.stem_convs(v)
    for k, c in enumerate(stem[:-1]):
        on(model.conv1[3 * k + 2], c.name)
    on(model.act1, stem[-1].name)
    on(model.maxpool, "stem/pool")
    for unit in plan.units(v):
        block = getattr(model, f"layer{unit.stage}")[unit.index - 1]
        n = len(unit.convs)
        for k, c in enumerate(unit.convs[:-1], start=1):
            on(getattr(block, f"act{k}"), c.name)
        on(getattr(block, f"bn{n}"), unit.convs[-1].name)
        if block.downsample is not None:
            on(block.downsample, f"{unit.name}/shortcut")
        else:
            on(block, f"{unit.name}/shortcut", pre=True)
        on(getattr(block, f"act{n}"), unit.name)
    on(model.global_pool, "pool")
    on(model.fc, "logits")
    try:
        model(t)
    finally:
        for h in handles:
            h.remove()


def framework_names(variant: Description) -> dict[str, str]:
    table = _structural_names(variant, dialect(DIALECTS, variant).names)
    names = {}
    for name in plan.param_shapes(variant):
        layer, field = name.rsplit("/", 1)
        names[name] = f"{rename(table, layer)}.{_FIELDS[field]}"
    return names


def _structural_names(v: Description, table: dict[str, str]) -> dict[str, str]:
    """A dialect's table with the modules that a deep stem and a ResNet-D shortcut add (timm's
    names, in every dialect): stem conv k at conv1.{3(k-1)}, its BatchNorm at conv1.{3(k-1)+1},
    the last one's at bn1; a pooled projection at downsample.1 (.2), after its pool."""
    extra = {}
    if v.deep_stem:
        convs = plan.stem_convs(v)
        for k, c in enumerate(convs[:-1]):
            extra[re.escape(c.name)] = f"conv1.{3 * k}"
            extra[re.escape(f"{c.name}/bn")] = f"conv1.{3 * k + 1}"
        extra[re.escape(convs[-1].name)] = f"conv1.{3 * (len(convs) - 1)}"
        extra[re.escape(f"{convs[-1].name}/bn")] = "bn1"
    if v.projection_pool == "avg":
        extra[r"stage(?P<s>\d+)/unit(?P<u>\d+)/shortcut"] = "layer{s}.{u0}.downsample.1"
        extra[r"stage(?P<s>\d+)/unit(?P<u>\d+)/shortcut/bn"] = "layer{s}.{u0}.downsample.2"
    return {**table, **extra}  # the same pattern keeps its place, with the new module

def foreign_taps(v: Description) -> dict[str, str]:
    """Canonical tap -> submodule path of a module in this dialect that is not equiv's own (a
    user's torchvision model): each unit's output and the logits, read by forward hooks."""
    names = framework_names(v)
    where = {unit.name: names[f"{unit.convs[0].name}/kernel"].rsplit(".", 2)[0] for unit in plan.units(v)}
    where["logits"] = names["logits/kernel"].rsplit(".", 1)[0]
    return where


def pickle_classes(v: Description) -> dict[str, type] | None:
    """The seed's script pickles its whole model from `__main__`; an opted-in load of that
    file finds the classes in equiv.seed.torch_resnet_v2."""
    if dialect(DIALECTS, v) is not DIALECTS["seed"]:
        return None
    from equiv.seed import torch_resnet_v2

    return {"__main__.ResNet_v2": torch_resnet_v2.ResNet_v2, "__main__.Bottleneck": torch_resnet_v2.Bottleneck}


def preprocessing(v: Description) -> str:
    """The input this library feeds a ResNet like `v` by habit (a name of equiv.preprocessing.RECORDS)."""
    return "torchvision"
