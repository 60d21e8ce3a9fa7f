"""The VGG family in PyTorch: one nn.Module for any description, in torchvision's exact layout.

    features.{i}         the convs, BatchNorms, ReLUs and max-pools in order, as torchvision's
                         make_layers lists them (a conv at i, its BatchNorm at i+1 with batch_norm)
    avgpool              AdaptiveAvgPool2d (nn.Identity where the description has none)
    classifier.{3j}      the dense layers (Linear, ReLU, Dropout per hidden layer; the logits last)

For the torchvision/ variants it therefore *is* the reference: its state_dict has exactly
torchvision.models.vgg16's (vgg16_bn's) keys and shapes, and loads into it with strict=True.
Dropout is in eval mode (the identity).

Layout: torchvision flattens NCHW before classifier.0, so its weight's columns run over
(c, h, w) where the canonical kernel's rows run over (h, w, c): `nchw_flattened` names that
kernel and its map, and the torch adapter permutes it (equiv.canonical.dense_rows_*) on the way
in and out. The flatten tap is recorded in canonical NHWC order.
"""

from __future__ import annotations

from equiv.errors import EquivError
from equiv.families.base import Dialect
from equiv.families.vgg import plan
from equiv.families.vgg.description import VGG as Description
from equiv.frameworks.torch import Record, _ignore, nn, torch


def _features(v: Description) -> tuple[list, dict[str, int], dict[str, int]]:
    """The modules of `features`, and canonical conv (BatchNorm) layer -> index, tap -> index of
    the module whose output it is."""
    mods, layers, taps = [], {}, {}
    for c in plan.convs(v):
        layers[c.name] = len(mods)
        mods.append(nn.Conv2d(c.cin, c.cout, 3, padding=1, bias=v.conv_bias))
        if v.batch_norm:
            layers[f"{c.name}/bn"] = len(mods)
            mods.append(nn.BatchNorm2d(c.cout, eps=v.bn_epsilon))
        taps[c.name] = len(mods)
        mods.append(nn.ReLU())  # not in place: a recorded tap must not change
        if c.index == v.convs[c.stage - 1]:
            taps[f"stage{c.stage}/pool"] = len(mods)
            mods.append(nn.MaxPool2d(2, 2))
    return mods, layers, taps


def _classifier(v: Description) -> tuple[list, dict[str, int]]:
    mods, layers = [], {}
    for name, a, b in plan.dense_layers(v):
        layers[name] = len(mods)
        mods.append(nn.Linear(a, b))
        if name != "logits":
            mods += [nn.ReLU(), nn.Dropout()]
    return mods, layers


class VGG(nn.Module):
    """Any description; for torchvision/ variants, torchvision.models.vgg*'s exact layout."""

    def __init__(self, v: Description):
        super().__init__()
        mods, _, taps = _features(v)
        self.features = nn.Sequential(*mods)
        self.avgpool = nn.AdaptiveAvgPool2d(v.adaptive_pool) if v.adaptive_pool is not None else nn.Identity()
        mods, layers = _classifier(v)
        self.classifier = nn.Sequential(*mods)
        self.feature_taps = {i: t for t, i in taps.items()}
        self.dense_taps = {i + (0 if name == "logits" else 1): name for name, i in layers.items()}

    def forward(self, x, record: Record = _ignore):
        for i, m in enumerate(self.features):
            x = m(x)
            if i in self.feature_taps:
                record(self.feature_taps[i], x)
        x = self.avgpool(x)
        record("flatten", x.permute(0, 2, 3, 1).flatten(1))  # the canonical NHWC order
        x = torch.flatten(x, 1)  # torchvision's NCHW order, which classifier.0's columns follow
        for i, m in enumerate(self.classifier):
            x = m(x)
            if i in self.dense_taps:
                record(self.dense_taps[i], x)
        return x


def build(variant: Description, *, reference: bool | None = None):
    """The module for `variant`: equiv's transcription of torchvision's VGG (reference=None, True
    or False build the same thing)."""
    return VGG(variant).eval()


def built_here(model) -> bool:
    return isinstance(model, VGG)


def forward_taps(v: Description, model, t, record: Record) -> None:
    if not isinstance(model, VGG):
        raise EquivError(f"a {type(model).__name__} is not a module equiv built for {v.name}; "
                         "read a foreign module through equiv.frameworks.torch.model_runner")
    model(t, record)


DIALECTS = {
    "torchvision": Dialect("torchvision.models."),  # the generic module is its transcription
}

_FIELDS = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias",
           "moving_mean": "running_mean", "moving_variance": "running_var"}


def modules(v: Description) -> dict[str, str]:
    """Canonical layer -> module path."""
    with torch.device("meta"):  # only the layout is read: no memory, no random initialisation (VGG-16's takes seconds)
        _, layers, _ = _features(v)
        _, dense = _classifier(v)
    out = {layer: f"features.{i}" for layer, i in layers.items()}
    out.update({name: f"classifier.{i}" for name, i in dense.items()})
    return out


def framework_names(variant: Description) -> dict[str, str]:
    where = modules(variant)
    names = {}
    for name in plan.param_shapes(variant):
        layer, field = name.rsplit("/", 1)
        names[name] = f"{where[layer]}.{_FIELDS[field]}"
    return names


def nchw_flattened(v: Description) -> dict[str, tuple[int, int, int]]:
    """Canonical dense kernel -> (h, w, c) of the map torch flattens NCHW before it: the first
    dense layer's (a 1x1 map needs no permutation)."""
    h, w, c = plan.flatten_map(v)
    first = plan.dense_layers(v)[0][0]
    return {f"{first}/kernel": (h, w, c)} if h * w > 1 else {}


def foreign_taps(v: Description) -> dict[str, str]:
    """Canonical tap -> submodule of a torchvision VGG whose output it is (conv: its ReLU)."""
    _, _, taps = _features(v)
    where = {t: f"features.{i}" for t, i in taps.items()}
    _, dense = _classifier(v)
    where.update({name: f"classifier.{i + (0 if name == 'logits' else 1)}" for name, i in dense.items()})
    return where


def preprocessing(v: Description) -> str:
    return "torchvision"
