"""The Inception v3 family in PyTorch: one nn.Module for any description, in torchvision's exact
layout for Inception v3 itself (torchvision.models.Inception3's state_dict keys and shapes):

    stem/conv{j}                    Conv2d_1a_3x3, Conv2d_2a_3x3, Conv2d_2b_3x3, Conv2d_3b_1x1, Conv2d_4a_3x3
    stem/pool{j}                    maxpool1, maxpool2
    mixed{i}                        Mixed_5b .. Mixed_7c
    mixed{i}/branch{b}/conv{k}      Mixed_5b.branch1x1, .branch5x5_1, ... (torchvision's names)
    mixed{i}/branch{b}/split{j}     Mixed_7b.branch3x3_2a, .branch3x3_2b, .branch3x3dbl_3a, ...
    aux/conv1, aux/conv2, aux/logits   AuxLogits.conv0, AuxLogits.conv1, AuxLogits.fc
    logits                          fc

each conv a torchvision BasicConv2d (`.conv` without bias, `.bn` BatchNorm2d, then a ReLU). Any
other description is named systematically (stem_conv{j}, Mixed_{i}.branch{b}_{k}, ...).

With aux_logits the auxiliary head is computed in eval mode too (torchvision runs it in training
only), for its tap; it changes no other tap. Its layout is torchvision's: AdaptiveAvgPool2d over
conv1's map, then the Linear. transform_input is torchvision's own arithmetic.
"""

from __future__ import annotations

from equiv.errors import EquivError
from equiv.families.base import Dialect
from equiv.families.inception import plan, zoo
from equiv.families.inception.description import Inception as Description
from equiv.frameworks.torch import F, PaddedConv2d, PaddedMaxPool2d, Record, _ignore, nn, torch

_STEM = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3")
_MIXED = ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
          "Mixed_7a", "Mixed_7b", "Mixed_7c")
# Per kind of block, per branch: (its convs' names, its split convs' names)
_BRANCHES = {
    "A": [(["branch1x1"], []), (["branch5x5_1", "branch5x5_2"], []),
          (["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"], []), (["branch_pool"], [])],
    "B": [(["branch3x3"], []), (["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"], []), ([], [])],
    "C": [(["branch1x1"], []), (["branch7x7_1", "branch7x7_2", "branch7x7_3"], []),
          ([f"branch7x7dbl_{k}" for k in range(1, 6)], []), (["branch_pool"], [])],
    "D": [(["branch3x3_1", "branch3x3_2"], []), ([f"branch7x7x3_{k}" for k in range(1, 5)], []), ([], [])],
    "E": [(["branch1x1"], []), (["branch3x3_1"], ["branch3x3_2a", "branch3x3_2b"]),
          (["branch3x3dbl_1", "branch3x3dbl_2"], ["branch3x3dbl_3a", "branch3x3dbl_3b"]), (["branch_pool"], [])],
}


def _torchvision_modules(v: Description) -> dict[str, str]:
    out = {f"stem/conv{j}": name for j, name in enumerate(_STEM, start=1)}
    for blk, mixed, kind in zip(plan.blocks(v), _MIXED, zoo.KINDS):
        out[blk.name] = mixed
        for br, (convs, splits) in zip(blk.branches, _BRANCHES[kind]):
            layers = [c for c in br.layers if isinstance(c, plan.Conv)]
            out.update({c.name: f"{mixed}.{n}" for c, n in zip(layers, convs)})
            out.update({c.name: f"{mixed}.{n}" for c, n in zip(br.split, splits)})
    out.update({"aux/conv1": "AuxLogits.conv0", "aux/conv2": "AuxLogits.conv1", "aux/logits": "AuxLogits.fc",
                "logits": "fc"})
    return out


def _systematic_modules(v: Description) -> dict[str, str]:
    out = {}
    for c in plan.stem(v):
        if isinstance(c, plan.Conv):
            out[c.name] = "stem_" + c.name.split("/")[1]
    for blk in plan.blocks(v):
        out[blk.name] = f"Mixed_{blk.index}"
        for br in blk.branches:
            for c in (*br.layers, *br.split):
                if isinstance(c, plan.Conv):
                    out[c.name] = f"Mixed_{blk.index}.branch{br.index}_{c.name.rsplit('/', 1)[1]}"
    out.update({"aux/conv1": "AuxLogits.conv0", "aux/conv2": "AuxLogits.conv1", "aux/logits": "AuxLogits.fc",
                "logits": "fc"})
    return out


def modules(v: Description) -> dict[str, str]:
    """Canonical layer (and mixed block) -> module path."""
    return _torchvision_modules(v) if zoo.is_inception_v3(v) else _systematic_modules(v)


class BasicConv2d(nn.Module):
    """torchvision's BasicConv2d: conv (no bias), BatchNorm, ReLU (not in place: taps stay)."""

    def __init__(self, v: Description, c: plan.Conv):
        super().__init__()
        if c.padding == "valid" or (c.stride == 1 and c.kh % 2 and c.kw % 2):
            pad = (0, 0) if c.padding == "valid" else (c.kh // 2, c.kw // 2)
            self.conv = nn.Conv2d(c.cin, c.cout, (c.kh, c.kw), stride=c.stride, padding=pad, bias=False)
        else:  # TF SAME with a stride, or an even kernel: padded explicitly
            self.conv = PaddedConv2d(c.cin, c.cout, c.kh, stride=c.stride, bias=False, rule=c.padding)
        self.bn = nn.BatchNorm2d(c.cout, eps=v.bn_epsilon, affine=v.bn_scale)
        if not v.bn_scale:  # beta without gamma: F.batch_norm takes weight=None with a bias
            self.bn.bias = nn.Parameter(torch.zeros(c.cout))

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _pool(v: Description, p: plan.Pool) -> nn.Module:
    if p.kind == "avg":
        pad = 0 if p.padding == "valid" else p.k // 2  # SAME: stride 1, odd k (the description's rule)
        return nn.AvgPool2d(p.k, p.stride, padding=pad, count_include_pad=v.pool_count_pad)
    if p.padding == "valid":
        return nn.MaxPool2d(p.k, p.stride)
    return PaddedMaxPool2d(p.k, p.stride, rule=p.padding, value=float("-inf"))


def _container(root: nn.Module, path: str) -> tuple[nn.Module, str]:
    """The module that holds `path`'s last part (made as an empty nn.Module where missing)."""
    *parents, last = path.split(".")
    m = root
    for p in parents:
        if not hasattr(m, p):
            m.add_module(p, nn.Module())
        m = getattr(m, p)
    return m, last


class Inception3(nn.Module):
    """Any description; for Inception v3 itself, torchvision.models.Inception3's exact layout."""

    def __init__(self, v: Description):
        super().__init__()
        self.v, names = v, modules(v)
        self.paths: dict[str, str] = {}
        self.pools: dict[str, nn.Module] = {}
        pools = 0
        for layer in plan.stem(v):
            if isinstance(layer, plan.Conv):
                self._add(names[layer.name], BasicConv2d(v, layer), layer.name)
            else:
                pools += 1
                self._add(f"maxpool{pools}" if layer.kind == "max" else f"avgpool{pools}", _pool(v, layer),
                          layer.name)
        for blk in plan.blocks(v):
            for br in blk.branches:
                for layer in (*br.layers, *br.split):
                    if isinstance(layer, plan.Conv):
                        self._add(names[layer.name], BasicConv2d(v, layer), layer.name)
                    else:  # torchvision pools in its branches functionally: no module, no name
                        self.pools[layer.name] = _pool(v, layer)
            if v.aux_logits and blk.index == v.aux_from:
                for c in plan.aux_convs(v):
                    self._add(names[c.name], BasicConv2d(v, c), c.name)
                self._add(names["aux/logits"], nn.Linear(plan.aux_convs(v)[-1].cout, v.num_classes), "aux/logits")
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(0.5)
        self._add(names["logits"], nn.Linear(plan.features(v), v.num_classes), "logits")

    def _add(self, path: str, module: nn.Module, layer: str) -> None:
        holder, last = _container(self, path)
        holder.add_module(last, module)
        self.paths[layer] = path

    def layer(self, name: str) -> nn.Module:
        if name in self.pools:
            return self.pools[name]
        return self.get_submodule(self.paths[name])

    def forward(self, x, record: Record = _ignore):
        v = self.v
        if v.transform_input:  # torchvision's Inception3._transform_input, as it is written
            x_ch0 = torch.unsqueeze(x[:, 0], 1) * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
            x_ch1 = torch.unsqueeze(x[:, 1], 1) * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
            x_ch2 = torch.unsqueeze(x[:, 2], 1) * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
            x = torch.cat((x_ch0, x_ch1, x_ch2), 1)
        for layer in plan.stem(v):
            x = self.layer(layer.name)(x)
            record(layer.name, x)
        for blk in plan.blocks(v):
            parts = []
            for br in blk.branches:
                b = x
                for layer in br.layers:
                    b = self.layer(layer.name)(b)
                if br.split:
                    ends = [self.layer(e.name)(b) for e in br.split]
                    for e, y in zip(br.split, ends):
                        record(e.name, y)
                    parts.append(torch.cat(ends, 1))
                else:
                    record(br.layers[-1].name, b)
                    parts.append(b)
            x = torch.cat(parts, 1)
            record(blk.name, x)
            if v.aux_logits and blk.index == v.aux_from:
                a = F.avg_pool2d(x, kernel_size=plan.AUX_POOL.k, stride=plan.AUX_POOL.stride)
                for c in plan.aux_convs(v):
                    a = self.layer(c.name)(a)
                a = torch.flatten(F.adaptive_avg_pool2d(a, (1, 1)), 1)
                record("aux/logits", self.layer("aux/logits")(a))
        x = torch.flatten(self.dropout(self.avgpool(x)), 1)
        record("pool", x)
        x = self.layer("logits")(x)
        record("logits", x)
        return x


def build(variant: Description, *, reference: bool | None = None):
    """The module for `variant`: equiv's transcription of torchvision's Inception3 (reference=None,
    True or False build the same thing)."""
    return Inception3(variant).eval()


def built_here(model) -> bool:
    return isinstance(model, Inception3)


def forward_taps(v: Description, model, t, record: Record) -> None:
    if not isinstance(model, Inception3):
        raise EquivError(f"a {type(model).__name__} is not a module equiv built for {v.name}; "
                         "read a foreign module through equiv.frameworks.torch.model_runner")
    model(t, record)


DIALECTS = {
    "torchvision": Dialect("torchvision.models."),  # the generic module is its transcription
}

_FIELDS = {"gamma": "bn.weight", "beta": "bn.bias", "moving_mean": "bn.running_mean",
           "moving_variance": "bn.running_var"}


def framework_names(variant: Description) -> dict[str, str]:
    where = modules(variant)
    names = {}
    for name in plan.param_shapes(variant):
        layer, field = name.rsplit("/", 1)
        if layer.endswith("/bn"):
            names[name] = f"{where[layer[:-3]]}.{_FIELDS[field]}"
        elif layer in ("logits", "aux/logits"):
            names[name] = f"{where[layer]}.{'weight' if field == 'kernel' else 'bias'}"
        else:
            names[name] = f"{where[layer]}.conv.weight"
    return names


def foreign_taps(v: Description) -> dict[str, str]:
    """Canonical tap -> submodule of a torchvision Inception3 whose output it is: its BasicConv2d
    (after the ReLU), its max-pools, each Mixed block. Not the branches' pools (torchvision calls
    F.max_pool2d / F.avg_pool2d: no module to hook), nor the auxiliary logits (run in training only),
    nor the pooled features (read as the fc's input: no module returns them flattened)."""
    where = modules(v)
    out = {}
    pools = 0
    for layer in plan.stem(v):
        if isinstance(layer, plan.Conv):
            out[layer.name] = where[layer.name]
        else:
            pools += 1
            out[layer.name] = f"maxpool{pools}"
    for blk in plan.blocks(v):
        for br in blk.branches:
            for t in br.taps:
                if t in where:
                    out[t] = where[t]
        out[blk.name] = where[blk.name]
    out["logits"] = where["logits"]
    return out


def preprocessing(v: Description) -> str:
    return "torchvision"
