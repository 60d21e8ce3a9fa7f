"""The VGG family in a graph exported by `torch.onnx.export` from a torchvision-layout module
(equiv.frameworks.onnx_export reads it through this): where each canonical tap and parameter is.

Each conv is the Conv node of its module (`features.{i}`, under any prefix such as a wrapper's `m.`);
from it the graph is followed: a BatchNormalization (vgg*_bn; absent where the exporter folded it into
the conv), then the Relu whose output is the conv's tap. A stage's pool is the MaxPool reading its
last conv's tap. `flatten` is the tensor the Flatten reads (after the adaptive average pool, which the
exporter writes as an AveragePool or leaves out where it is the identity): NCHW there, given back as
its canonical NHWC flattening. Each dense layer is the Gemm of its module (`classifier.{3j}`), its tap
after the Relu that follows (the logits: the Gemm itself). A Linear's weight is read as the state_dict
holds it (columns of fc6 in torchvision's NCHW order; the torch adapter permutes them).
"""

from __future__ import annotations

import numpy as np

from equiv.families.vgg import plan
from equiv.families.vgg.torch import framework_names


def read_export(v, g):
    from equiv.frameworks.onnx_export import ExportReading, epsilon, unfolded_bn

    names = framework_names(v)
    taps: dict[str, str] = {}
    missing: dict[str, str] = {}
    params: dict[str, np.ndarray] = {}
    stored: set[str] = set()
    folded: list[str] = []
    remarks: list[str] = []
    g.root = g.prefix({key.rsplit(".", 1)[0] for key in names.values()})
    named = False

    def module(layer: str) -> str:
        return names[f"{layer}/kernel"].rsplit(".", 1)[0]

    def conv(c) -> str | None:
        nonlocal named
        found = g.conv_of(module(c.name), names[f"{c.name}/bn/gamma"].rsplit(".", 1)[0] if v.batch_norm else None)
        if len(found) != 1:
            missing[c.name] = f"{'no' if not found else len(found)} Conv node named for module {module(c.name)}"
            return None
        node = found[0]
        key, bkey = names[f"{c.name}/kernel"], names.get(f"{c.name}/bias")
        params[key] = g.array(node.input[1])
        bias = g.array(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(c.cout, np.float32)
        out = node.output[0]
        bn = g.after(out, "BatchNormalization") if v.batch_norm else None
        if not v.batch_norm or bn is not None:  # (a folded kernel is no parameter of the module's, whatever its name)
            named = named or (g.init_name(node.input[1]) or "").endswith(key)
            stored.add(key)
            if bkey:
                params[bkey] = bias
                stored.add(bkey)
        if bn is not None:
            scale, beta, mean, var = (g.array(t) for t in bn.input[1:5])
            eps = epsilon(bn)
            if not np.isclose(eps, v.bn_epsilon, rtol=1e-3, atol=0):
                remarks.append(f"the BatchNormalization after {c.name} has epsilon {eps:.3g}, {v.name} "
                               f"{v.bn_epsilon:.3g}")
            for f, a in (("gamma", scale), ("beta", beta), ("moving_mean", mean), ("moving_variance", var)):
                params[names[f"{c.name}/bn/{f}"]] = a
                stored.add(names[f"{c.name}/bn/{f}"])
            out = bn.output[0]
        elif v.batch_norm:  # folded: the conv's bias is conv bias and BatchNorm shift in one
            folded.append(c.name)
            if bkey:
                params[bkey] = np.zeros(c.cout, np.float32)
            for f, a in unfolded_bn(bias, v.bn_epsilon).items():
                params[names[f"{c.name}/bn/{f}"]] = a
        relu = g.after(out, "Relu")
        if relu is None:
            missing[c.name] = "no Relu reads the conv's output"
            return None
        return relu.output[0]

    h = None
    for c in plan.convs(v):
        h = conv(c)
        if h is not None:
            taps[c.name] = h
        if c.index == v.convs[c.stage - 1]:
            pool = g.after(h, "MaxPool") if h is not None else None
            if pool is None:
                missing[f"stage{c.stage}/pool"] = "no MaxPool reads the stage's last conv"
                h = None
            else:
                h = taps[f"stage{c.stage}/pool"] = pool.output[0]
    through = ("AveragePool", "GlobalAveragePool", "Identity")  # (the dynamo exporter flattens by a Reshape)
    flat = (g.reach(h, "Flatten", through) or g.reach(h, "Reshape", through)) if h is not None else None
    if flat is None:
        missing["flatten"] = "no Flatten (or Reshape) after the last pool (through its average pool)"
    else:
        taps["flatten"] = flat.input[0]
    dense = None if flat is None else flat.output[0]
    for name, _, cout in plan.dense_layers(v):
        found = g.by_module("Gemm", module(name))
        if len(found) != 1:
            missing[name] = f"{'no' if not found else len(found)} Gemm node named for module {module(name)}"
            continue
        node = found[0]
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        w = g.array(node.input[1])
        key, bkey = names[f"{name}/kernel"], names[f"{name}/bias"]
        params[key] = w if trans_b else w.T
        params[bkey] = g.array(node.input[2]) if len(node.input) > 2 else np.zeros(cout, np.float32)
        stored.update((key, bkey))
        if dense is not None and not g.comes_from(node.input[0], {dense}, ("Identity", "Dropout")):
            remarks.append(f"{name} does not read the layer before it")
        out = node.output[0]
        if name != "logits":
            relu = g.after(out, "Relu")
            if relu is None:
                missing[name] = "no Relu reads the dense layer's output"
                dense = None
                continue
            out = relu.output[0]
        dense = taps[name] = out
    tap_order = plan.tap_names(v)
    return ExportReading(taps, {t: missing[t] for t in tap_order if t in missing}, params, stored, folded, named,
                         remarks, flat={"flatten"} if "flatten" in taps else set())
