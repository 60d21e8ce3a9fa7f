"""The ResNet family in a graph exported by `torch.onnx.export` from a torchvision-layout module
(equiv.frameworks.onnx_export reads it through this): where each canonical tap and parameter is.

Each conv layer is the Conv node whose module path (from the exporter's node name) is the layer's
module in the torch dialect (`layer1.0.conv1`, `layer2.0.downsample.0`, under any prefix such as a
wrapper's `m.`); from it the graph is followed: a BatchNormalization reading its output (absent where
the exporter folded it into the conv), then a Relu where the canonical tap is after one. A unit's
output is the Add reading its last conv's tensor (then its Relu, v1); an identity shortcut is the
tensor that Add adds to the branch. `stem/pool` is the MaxPool after the stem, `pool` the global
average (ReduceMean, or GlobalAveragePool then Flatten) before the classifier, `logits` the
classifier's Gemm. Anything else (a pre-activation unit, a deep stem, a ResNet-D pool) is named as
having no counterpart, with the reason.
"""

from __future__ import annotations

import numpy as np

from equiv.families.resnet import plan


def _module(names: dict[str, str], layer: str) -> str:
    return names[f"{layer}/kernel"].rsplit(".", 1)[0]


def read_export(v, g):
    from equiv.frameworks import torch as T
    from equiv.frameworks.onnx_export import ExportReading

    names = T.framework_names(v)  # canonical -> state_dict key in the variant's torch dialect
    taps: dict[str, str] = {}
    missing: dict[str, str] = {}
    params: dict[str, np.ndarray] = {}
    stored: set[str] = set()
    folded: list[str] = []
    remarks: list[str] = []
    bn_keys = plan.bn_fields(v)
    g.root = g.prefix({key.rsplit(".", 1)[0] for key in names.values()})
    named = False

    def conv_layer(c: plan.Conv) -> str | None:
        """Read conv `c` (its params into `params`); return the tensor of its output after the norm."""
        nonlocal named
        module = _module(names, c.name)
        found = g.by_module("Conv", module)
        if len(found) != 1:
            missing[c.name] = (f"{'no' if not found else len(found)} Conv node named for module {module}")
            return None
        node = found[0]
        kernel_key = names[f"{c.name}/kernel"]
        params[kernel_key] = g.array(node.input[1])
        if not c.norm or g.after(node.output[0], "BatchNormalization") is not None:  # else: folded
            stored.add(kernel_key)
        named = named or g.init_name(node.input[1]) is not None and g.init_name(node.input[1]).endswith(kernel_key)
        bias = g.array(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        out = node.output[0]
        if not c.norm:
            if c.bias:
                params[names[f"{c.name}/bias"]] = bias if bias is not None else np.zeros(c.cout, np.float32)
                stored.add(names[f"{c.name}/bias"])
            return out
        bn = g.after(out, "BatchNormalization")
        prefix = f"{c.name}/bn"
        if bn is not None:
            scale, beta, mean, var = (g.array(t) for t in bn.input[1:5])
            eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
            if not np.isclose(eps, v.bn_epsilon, rtol=1e-3, atol=0):
                remarks.append(f"the BatchNormalization after {c.name} has epsilon {eps:.3g}, {v.name} "
                               f"{v.bn_epsilon:.3g}")
            values = {"gamma": scale, "beta": beta, "moving_mean": mean, "moving_variance": var}
            for f in bn_keys:
                params[names[f"{prefix}/{f}"]] = values[f]
                stored.add(names[f"{prefix}/{f}"])
            if c.bias:
                params[names[f"{c.name}/bias"]] = bias if bias is not None else np.zeros(c.cout, np.float32)
                stored.add(names[f"{c.name}/bias"])
            return bn.output[0]
        # Folded: the conv's bias is the BatchNorm's shift; hold it as an unfolded BatchNorm that
        # computes the same (gamma 1, mean 0, variance 1 - epsilon, beta the folded bias).
        folded.append(c.name)
        shift = bias if bias is not None else np.zeros(c.cout, np.float32)
        values = {"gamma": np.ones(c.cout, np.float32), "beta": shift, "moving_mean": np.zeros(c.cout, np.float32),
                  "moving_variance": np.full(c.cout, 1.0 - v.bn_epsilon, np.float32)}
        for f in bn_keys:
            params[names[f"{prefix}/{f}"]] = values[f]
        if c.bias:
            params[names[f"{c.name}/bias"]] = np.zeros(c.cout, np.float32)
        return out

    def relu_after(c: plan.Conv, t: str | None) -> str | None:
        if t is None or not c.relu:
            return t
        r = g.after(t, "Relu")
        if r is None:
            missing[c.name] = "no Relu reads the conv's output"
            return None
        return r.output[0]

    if v.deep_stem or v.preact or v.projection_pool == "avg" or v.norm == "group" or v.weight_std:
        why = "only the plain torchvision layout (v1, one stem conv, BatchNorm) is read from an export"
        for t in plan.tap_names(v):
            missing[t] = why
        return ExportReading(taps, missing, params, stored, folded, named, remarks)

    stem = plan.stem(v)
    t = relu_after(stem, conv_layer(stem))
    if t is not None:
        taps[stem.name] = t
        pool = g.after(t, "MaxPool")
        if pool is None:
            missing["stem/pool"] = "no MaxPool reads the stem's output"
            t = None
        else:
            t = taps["stem/pool"] = pool.output[0]
    else:
        missing["stem/pool"] = "the stem's output was not found"
    h = t  # the unit's input, as followed along the graph
    for unit in plan.units(v):
        if unit.shortcut is not None:
            sc = relu_after(unit.shortcut, conv_layer(unit.shortcut))
            if sc is not None:
                taps[f"{unit.name}/shortcut"] = sc
        r = None
        for c in unit.convs:
            r = relu_after(c, conv_layer(c))
            if r is not None:
                taps[c.name] = r
        add = g.after(r, "Add") if r is not None else None
        if add is None:
            for name in (f"{unit.name}/shortcut", unit.name):
                if name not in taps:
                    missing.setdefault(name, "no Add reads the unit's last conv")
            h = None
            continue
        if unit.shortcut is None:
            other = [i for i in add.input if i != r]
            if len(other) == 1 and (h is None or other[0] == h):
                taps[f"{unit.name}/shortcut"] = other[0]
            else:
                missing[f"{unit.name}/shortcut"] = "the Add does not add the unit's input"
        out = add.output[0]
        relu = g.after(out, "Relu")
        if relu is None:
            missing[unit.name] = "no Relu reads the unit's Add"
            h = None
            continue
        h = taps[unit.name] = relu.output[0]

    if plan.has_pool(v):
        pooled = None
        if h is not None:
            node = next((n for n in g.consumers.get(h, []) if n.op_type in ("ReduceMean", "GlobalAveragePool")), None)
            if node is not None:
                pooled = node.output[0]
                if node.op_type == "GlobalAveragePool" or any(a.name == "keepdims" and a.i for a in node.attribute) \
                        or not any(a.name == "keepdims" for a in node.attribute):
                    flat = next((n for n in g.consumers.get(pooled, []) if n.op_type in ("Flatten", "Reshape",
                                                                                          "Squeeze")), None)
                    pooled = flat.output[0] if flat is not None else None
        if pooled is None:
            missing["pool"] = "no global average (ReduceMean, or GlobalAveragePool then Flatten) after the last unit"
        else:
            taps["pool"] = pooled
    if plan.has_classifier(v):
        found = g.by_module("Gemm", _module(names, "logits"))
        if len(found) != 1:
            missing[plan.output_tap(v)] = f"{'no' if not found else len(found)} Gemm node named for module fc"
        else:
            node = found[0]
            w = g.array(node.input[1])
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            key, bkey = names["logits/kernel"], names["logits/bias"]
            params[key] = w if trans_b else w.T
            params[bkey] = g.array(node.input[2]) if len(node.input) > 2 else np.zeros(v.num_classes, np.float32)
            stored.update((key, bkey))
            taps[plan.output_tap(v)] = node.output[0]
    return ExportReading(taps, {t: missing[t] for t in plan.tap_names(v) if t in missing}, params, stored,
                         folded, named, remarks)
