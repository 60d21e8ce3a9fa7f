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

from equiv import canonical as C
from equiv.errors import EquivError
from equiv.families.base import Dialect, dialect, library_build, rename
from equiv.families.resnet import plan
from equiv.families.resnet.description import ResNet as Description
from equiv.frameworks.torch import F, PaddedConv2d, PaddedMaxPool2d, Record, _ignore, _static_padding, nn, torch


def _conv(c: plan.Conv, v: Description | None = None) -> nn.Conv2d:
    if v is not None and v.weight_std:
        return _std_conv(c, v.ws_epsilon)
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


def _batch_norm(v: Description, channels: int) -> nn.Module:
    if v.norm == "group":
        return _group_norm(v, channels)
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
            setattr(self, f"conv{k}", _conv(c, v))
            setattr(self, f"bn{k}", _batch_norm(v, c.cout) if c.norm else None)
        self.downsample = None
        if unit.shortcut:
            sc = unit.shortcut
            # ResNet-D (timm's downsample_avg): the pool first, an Identity where the unit is not strided
            pool = [_avg_down(unit)] if v.projection_pool == "avg" else []
            self.downsample = nn.Sequential(*pool, _conv(sc, v), *([_batch_norm(v, sc.cout)] if sc.norm else []))
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
        layers += [_conv(c, v), _batch_norm(v, c.cout), nn.ReLU()]
    return nn.Sequential(*layers, _conv(plan.stem(v), v))


class ResNet(nn.Module):
    """Any variant; for torchvision/ variants, torchvision.models.resnetNN's exact layout (timm's
    for timm/ ones: a deep stem as conv1.0 .. conv1.{3n}, a ResNet-D downsample as pool, conv, bn)."""

    def __init__(self, v: Description):
        super().__init__()
        stem = plan.stem(v)
        self.conv1 = _deep_stem(v) if v.deep_stem else _conv(stem, v)
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
        self.head = v.head
        if plan.has_classifier(v):
            self.fc = _classifier(v)

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
        if self.head == "none":  # a backbone: the last stage is the output
            return h
        pooled = head_features(h, *self.head_pool)
        record("pool", pooled)
        if self.head == "features":
            return pooled
        logits = self.fc(pooled[:, :, None, None]).flatten(1) if self.head == "conv" else self.fc(pooled)
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
    elif _tap_modules(v):  # a library's own module (timm, transformers): hooks
        _hooked_taps(v, model, t, record)
    elif dialect(DIALECTS, v) is DIALECTS["seed"]:  # the seed's own module: taps through hooks
        from equiv.seed import torch_resnet_v2

        torch_resnet_v2.record_taps(model, t, record)
    elif dialect(DIALECTS, v) is DIALECTS["timm"]:  # timm's own ResNet: taps through hooks
        timm_taps(v, model, t, record)
    elif dialect(DIALECTS, v) is DIALECTS["torchvision"] and type(model).__module__.startswith("torchvision."):
        torchvision_taps(v, model, t, record)
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


def _torchvision(v: Description):
    """torchvision's own module (torchvision.models.<name>, its V1.5 ResNets, ResNeXt and Wide ResNet)
    where torchvision imports; equiv's module, its transcription, elsewhere (the pinned torch 2.13 has
    no torchvision that imports: the check's notes say which built it)."""
    from equiv.families.resnet.description import _imports

    if not _imports("torchvision"):
        return ResNet(v)
    import torchvision

    return getattr(torchvision.models, v.reference.rsplit(".", 1)[1])(weights=None, num_classes=v.num_classes)


def torchvision_taps(v: Description, model, t, record: Record) -> None:
    """Run torchvision's own ResNet on NCHW `t`, recording every canonical tap through forward hooks on
    its own modules: a block calls its one ReLU module several times, in tap order (its inner convs,
    then the unit); its last BatchNorm gives the last conv, `downsample` (or the block's input) the
    shortcut; the stem's ReLU, maxpool, avgpool, fc."""
    handles = []

    def on(module, *taps):
        calls = iter(taps)
        handles.append(module.register_forward_hook(lambda m, inputs, output: record(next(calls), output)))

    on(model.relu, "stem/conv")
    on(model.maxpool, "stem/pool")
    for unit in plan.units(v):
        block = getattr(model, f"layer{unit.stage}")[unit.index - 1]
        convs = [c.name for c in unit.convs]
        on(block.relu, *convs[:-1], unit.name)
        on(getattr(block, f"bn{len(convs)}"), convs[-1])
        if block.downsample is not None:
            on(block.downsample, f"{unit.name}/shortcut")
        else:
            handles.append(block.register_forward_pre_hook(
                lambda m, inputs, tap=f"{unit.name}/shortcut": record(tap, inputs[0])))
    handles.append(model.avgpool.register_forward_hook(lambda m, inputs, output: record("pool", output.flatten(1))))
    on(model.fc, "logits")
    try:
        model(t)
    finally:
        for h in handles:
            h.remove()


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
    # the generic module is torchvision's transcription
    "torchvision": Dialect("torchvision.models.", _MODULES, build=_torchvision, key="torchvision"),
    "seed": Dialect("equiv.seed.torch_resnet_v2", _MODULES, build=_seed),
    "timm": Dialect("timm.", _MODULES, build=_timm, key="timm"),
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
    """canonical name -> state_dict key in the dialect of `variant` (its files, its library's modules)."""
    return _names(variant, dialect(DIALECTS, variant).names)


def module_names(variant: Description) -> dict[str, str]:
    """canonical name -> state_dict key of equiv's own module (torchvision's scheme, whatever the
    dialect): what the adapter loads into and reads out of a module this builder built."""
    return _names(variant, _MODULES)


def _names(variant: Description, table) -> dict[str, str]:
    table = _structural_names(variant, table)
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
    if plan.has_classifier(v):
        where["logits"] = names["logits/kernel"].rsplit(".", 1)[0]
    taps = _tap_modules(v)
    if taps:  # a library's module (timm, transformers): its own submodules, outputs only
        where = {tap: path for tap, (path, side) in taps(v).items() if side == "out"
                 and (tap in where or tap == "logits" and plan.has_classifier(v))}
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


# ---------------------------------------------------------------------------------------
# Issue 16 B: normalisation, weight standardisation and heads


class StdConv2d(nn.Conv2d):
    """A weight-standardised Conv2d computed as timm's StdConv2d computes it (F.batch_norm of the
    weight, per output channel, biased variance), from the stored raw weight; padded as
    PaddedConv2d where the rule needs it."""

    def __init__(self, *args, eps: float, rule: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eps, self.rule = eps, rule

    def forward(self, x):
        if self.rule is not None:
            k, s = self.kernel_size[0], self.stride[0]
            top, bottom = C.pad_amounts(self.rule, x.shape[-2], k, s)
            left, right = C.pad_amounts(self.rule, x.shape[-1], k, s)
            x = F.pad(x, (left, right, top, bottom))
        weight = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                              training=True, momentum=0.0, eps=self.eps).reshape_as(self.weight)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eps={self.eps}" + (f", pad={self.rule!r}" if self.rule else "")


def _std_conv(c: plan.Conv, eps: float) -> StdConv2d:
    pad = _static_padding(c.padding, c.kernel, c.stride)
    if pad is not None and pad[0] == pad[1]:
        return StdConv2d(c.cin, c.cout, c.kernel, c.stride, padding=pad[0], bias=c.bias, eps=eps)
    return StdConv2d(c.cin, c.cout, c.kernel, c.stride, bias=c.bias, eps=eps, rule=c.padding)


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm, with beta alone where the description has no gamma (bn_scale=False)."""

    def __init__(self, groups: int, channels: int, eps: float, scale: bool):
        super().__init__(groups, channels, eps=eps, affine=True)
        if not scale:
            del self.weight
            self.register_parameter("weight", None)

    def forward(self, x):
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


def _group_norm(v: Description, channels: int) -> nn.Module:
    return GroupNorm(v.norm_groups, channels, v.bn_epsilon, v.bn_scale)


def _classifier(v: Description) -> nn.Module:
    if v.head == "conv":  # timm's resnetv2 head.fc
        return nn.Conv2d(plan.features(v), v.num_classes, 1)
    return nn.Linear(plan.features(v), v.num_classes)


def torch_shape(v: Description, name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The state_dict shape of canonical `name` whose plain torch layout is `shape`: a 1x1-conv
    classifier's kernel is (classes, features, 1, 1)."""
    return (*shape, 1, 1) if name == "logits/kernel" and v.head == "conv" else shape


# Dialects of issue 16 B: timm's ResNetV2 and transformers' ResNet. Their modules are built by the
# library where it imports (the torchvision stage's venv); elsewhere by equiv's generic module
# (build falls back, and the variants' notes say so). Their taps are read by hooks: `_TAPS`.

_TIMM_V2 = {
    r"stem/conv": "stem.conv",
    r"stage(?P<s>\d+)/unit(?P<u>\d+)/preact": "stages.{s0}.blocks.{u0}.norm1",
    r"stage(?P<s>\d+)/unit(?P<u>\d+)/shortcut": "stages.{s0}.blocks.{u0}.downsample.conv",
    r"stage(?P<s>\d+)/unit(?P<u>\d+)/conv(?P<k>\d+)": "stages.{s0}.blocks.{u0}.conv{k}",
    r"stage(?P<s>\d+)/unit(?P<u>\d+)/conv1/bn": "stages.{s0}.blocks.{u0}.norm2",
    r"stage(?P<s>\d+)/unit(?P<u>\d+)/conv2/bn": "stages.{s0}.blocks.{u0}.norm3",
    r"post": "norm",
    r"logits": "head.fc",
}


def _hf_names(prefix: str) -> dict[str, str]:
    unit = prefix + "encoder.stages.{s0}.layers.{u0}"
    return {
        r"stem/conv": prefix + "embedder.embedder.convolution",
        r"stem/conv/bn": prefix + "embedder.embedder.normalization",
        r"stage(?P<s>\d+)/unit(?P<u>\d+)/shortcut": unit + ".shortcut.convolution",
        r"stage(?P<s>\d+)/unit(?P<u>\d+)/shortcut/bn": unit + ".shortcut.normalization",
        r"stage(?P<s>\d+)/unit(?P<u>\d+)/conv(?P<k>\d+)": unit + ".layer.{k0}.convolution",
        r"stage(?P<s>\d+)/unit(?P<u>\d+)/conv(?P<k>\d+)/bn": unit + ".layer.{k0}.normalization",
        r"logits": "classifier.1",
    }


def _timm_taps(v: Description) -> dict[str, tuple[str, str]]:
    """Canonical tap -> (submodule of timm's ResNetV2, "out" or "in") holding it."""
    taps = {"stem/conv": ("stem.conv", "out"), "stem/pool": ("stem.pool", "out")}
    for u in plan.units(v):
        p = f"stages.{u.stage - 1}.blocks.{u.index - 1}"
        taps[f"{u.name}/preact"] = (f"{p}.norm1", "out")
        taps[f"{u.name}/shortcut"] = (f"{p}.downsample", "out") if u.shortcut else (p, "in")
        taps.update({c.name: (f"{p}.norm{k + 1}" if c.norm else f"{p}.conv{k}", "out")
                     for k, c in enumerate(u.convs, start=1)})
        taps[u.name] = (p, "out")
    taps.update({"post": ("norm", "out"), "pool": ("head.global_pool", "out"), "logits": ("head.flatten", "out")})
    return taps


def _hf_taps(v: Description, prefix: str) -> dict[str, tuple[str, str]]:
    """Canonical tap -> (submodule of transformers' ResNet, "out") holding it."""
    taps = {"stem/conv": (prefix + "embedder.embedder", "out"), "stem/pool": (prefix + "embedder.pooler", "out")}
    for u in plan.units(v):
        p = f"{prefix}encoder.stages.{u.stage - 1}.layers.{u.index - 1}"
        taps[f"{u.name}/shortcut"] = (f"{p}.shortcut", "out")
        taps.update({c.name: (f"{p}.layer.{k - 1}", "out") for k, c in enumerate(u.convs, start=1)})
        taps[u.name] = (p, "out")
    taps.update({"pool": (prefix + "pooler", "out"), "logits": ("classifier.1", "out")})
    return taps


def _library(v: Description, make):
    """The library's own module, or equiv's generic one where the library does not import."""
    try:
        module = make()
    except ImportError:
        return ResNet(v)
    return module


def _timm_v2(v: Description):
    def make():
        import timm

        return timm.create_model(v.reference.rsplit(".", 1)[1], pretrained=False, num_classes=v.num_classes)
    return _library(v, make)


def _hf(v: Description):
    def make():
        import transformers

        from equiv.families.resnet.dialects import hf_config

        config = transformers.ResNetConfig(**hf_config(v))
        return getattr(transformers, v.reference.rsplit(".", 1)[1])(config)
    return _library(v, make)


# before timm's ResNet ("timm."), which would claim every timm reference: dialect() takes the first match
_LATER = {k: DIALECTS.pop(k) for k in list(DIALECTS) if k not in ("torchvision", "seed")}
DIALECTS.update({
    "timm.resnetv2": Dialect("timm.models.resnetv2", _TIMM_V2, build=_timm_v2, key="timm"),
    "transformers.classifier": Dialect("transformers.ResNetForImageClassification", _hf_names("resnet."),
                                       build=_hf, key="hf"),
    "transformers": Dialect("transformers.ResNetModel", _hf_names(""), build=_hf, key="hf"),
    **_LATER,
})
# Where a library's own module holds each tap (read by hooks), per dialect
_TAP_MODULES = {
    "timm.models.resnetv2": _timm_taps,
    "transformers.ResNetForImageClassification": lambda v: _hf_taps(v, "resnet."),
    "transformers.ResNetModel": lambda v: _hf_taps(v, ""),
}


def _tap_modules(v: Description):
    """The tap reader of `v`'s dialect (canonical tap -> (submodule, "in" | "out")), or None."""
    return _TAP_MODULES.get(dialect(DIALECTS, v).library)


def _hooked_taps(v: Description, model, t, record: Record) -> None:
    """Run a library's module on `t`, reading every canonical tap of `v` through forward hooks on
    the submodules its dialect names; record them in network order."""
    where = _tap_modules(v)(v)
    where = {tap: where[tap] for tap in plan.tap_names(v)}
    modules = dict(model.named_modules())
    lost = sorted({m for m, _ in where.values() if m not in modules})
    if lost:
        raise EquivError(f"{type(model).__name__} has no submodule {lost[0]}, where {v.name}'s taps are read")
    got: dict[str, object] = {}
    handles = []
    for tap, (path, side) in where.items():
        def hook(module, inputs, output=None, tap=tap, side=side):
            # a copy: transformers adds the residual in place (hidden_state += residual)
            got[tap] = (inputs[0] if side == "in" else output).clone()
        if side == "in":
            handles.append(modules[path].register_forward_pre_hook(hook))
        else:
            handles.append(modules[path].register_forward_hook(hook))
    try:
        model(t)
    finally:
        for h in handles:
            h.remove()
    for tap in where:
        x = got[tap]
        record(tap, x.flatten(1) if tap in ("pool", "logits") else x)
