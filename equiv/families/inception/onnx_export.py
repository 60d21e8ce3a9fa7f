"""The Inception family in a graph exported by `torch.onnx.export` from a torchvision-layout module
(equiv.frameworks.onnx_export reads it through this): where each canonical tap and parameter is.

The exporter names nodes by the modules whose forward ran: torchvision's Inception3 calls each block
(`/Mixed_5b/branch5x5_1/conv/Conv`), equiv's module calls the convs from its own forward
(`/branch5x5_1/conv_1/Conv`, numbered by repetition), so names do not place a layer. The graph's Conv
nodes are taken in order instead, which is the order both modules run them in and the plan lists them
in, each checked: its kernel's shape (cout, cin, kh, kw) and stride must be the layer's and its input
the layer before it (through a Pad where TF SAME pads explicitly); the first that is not ends the
reading, named. From each conv the graph is followed: a
BatchNormalization (absent where the exporter folded it into the conv), then the Relu whose output is
the layer's tap. A pool (a stem's module, or a branch's functional F.avg_pool2d / F.max_pool2d) is the
MaxPool or AveragePool reading the layer before it (through a Pad). A block's tap is the Concat of its
branches (a split branch's ends concatenated first, or in the block's Concat where the exporter merged
the two), `pool` the global average and its Flatten,
`logits` the classifier's Gemm.

The auxiliary head runs in equiv's module but its output is not the module's: torch.onnx.export leaves
out whatever the outputs do not need, so an export holds no auxiliary head. Its tap and parameters are
named as missing (compare against the variant without it: `variant.replace(aux_logits=False)`).
"""

from __future__ import annotations

import numpy as np

from equiv.families.inception import plan
from equiv.families.inception.torch import framework_names


def read_export(v, g):
    from equiv.frameworks.onnx_export import ExportReading, epsilon, unfolded_bn

    names = framework_names(v)
    taps: dict[str, str] = {}
    missing: dict[str, str] = {}
    params: dict[str, np.ndarray] = {}
    stored: set[str] = set()
    folded: list[str] = []
    remarks: list[str] = []
    fields = plan.bn_fields(v)
    g.root = g.prefix({key.rsplit(".", 1)[0] for key in names.values()})
    named = False

    def module(layer: str) -> str:
        return names[f"{layer}/kernel"].rsplit(".", 1)[0]

    conv_nodes = iter([n for n in g.nodes if n.op_type == "Conv"])
    broken: list[str] = []  # the reason the order was lost, once

    def conv(c, x: str | None) -> str | None:
        nonlocal named
        if broken:
            missing[c.name] = broken[0]
            return None
        node = next(conv_nodes, None)
        if node is None:
            broken.append(f"the export has fewer Conv nodes than {v.name} has convs (none left for {c.name})")
            missing[c.name] = broken[0]
            return None
        shape = tuple(g.array(node.input[1]).shape) if g.init_name(node.input[1]) else None
        strides = next((tuple(a.ints) for a in node.attribute if a.name == "strides"), (1, 1))
        if shape != (c.cout, c.cin, c.kh, c.kw) or strides != (c.stride, c.stride):
            broken.append(f"Conv node {node.name} (kernel {shape}, strides {strides}) is not {c.name} "
                          f"(kernel {(c.cout, c.cin, c.kh, c.kw)}, stride {c.stride}): from it on nothing is placed")
            missing[c.name] = broken[0]
            return None
        if x is not None and not g.comes_from(node.input[0], {x}):
            broken.append(f"Conv node {node.name} ({c.name}) does not read the layer before it: from it on nothing "
                          "is placed")
            missing[c.name] = broken[0]
            return None
        key = names[f"{c.name}/kernel"]
        params[key] = g.array(node.input[1])
        out = node.output[0]
        bn = g.after(out, "BatchNormalization")
        if bn is not None:  # (a folded kernel is no parameter of the module's, whatever its name)
            named = named or (g.init_name(node.input[1]) or "").endswith(key)
            stored.add(key)
            scale, beta, mean, var = (g.array(t) for t in bn.input[1:5])
            eps = epsilon(bn)
            if not np.isclose(eps, v.bn_epsilon, rtol=1e-3, atol=0):
                remarks.append(f"the BatchNormalization after {c.name} has epsilon {eps:.3g}, {v.name} "
                               f"{v.bn_epsilon:.3g}")
            values = {"gamma": scale, "beta": beta, "moving_mean": mean, "moving_variance": var}
            if not v.bn_scale and not np.array_equal(scale, np.ones_like(scale)):
                remarks.append(f"the BatchNormalization after {c.name} scales; {v.name}'s has no gamma")
            for f in fields:
                params[names[f"{c.name}/bn/{f}"]] = values[f]
                stored.add(names[f"{c.name}/bn/{f}"])
            out = bn.output[0]
        else:  # folded: the conv's bias is the BatchNorm's shift (an unscaled one keeps gamma 1 anyway)
            folded.append(c.name)
            shift = g.array(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(c.cout, np.float32)
            values = unfolded_bn(shift, v.bn_epsilon)
            for f in fields:
                params[names[f"{c.name}/bn/{f}"]] = values[f]
        relu = g.after(out, "Relu")
        if relu is None:
            missing[c.name] = "no Relu reads the conv's output"
            return None
        return relu.output[0]

    def pool(p, x: str | None) -> str | None:
        op = "MaxPool" if p.kind == "max" else "AveragePool"
        node = g.reach(x, op) if x is not None else None
        if node is None:
            missing[p.name] = f"no single {op} reads the layer before it"
            return None
        return node.output[0]

    def layer(item, x: str | None) -> str | None:
        return conv(item, x) if isinstance(item, plan.Conv) else pool(item, x)

    x = g.inputs[0].name if g.inputs else None
    for item in plan.stem(v):
        x = layer(item, x)
        if x is not None:
            taps[item.name] = x
    for blk in plan.blocks(v):
        ends, flat = [], []  # each branch's output; the same with a split branch's ends in its place
        for br in blk.branches:
            b = x
            for item in br.layers:
                b = layer(item, b)
            if br.split:
                outs = [layer(e, b) for e in br.split]
                for e, y in zip(br.split, outs):
                    if y is not None:
                        taps[e.name] = y
                inner = g.after(outs[0], "Concat") if outs[0] is not None else None
                ends.append(inner.output[0] if inner is not None else None)
                flat += outs
            else:
                if b is not None:
                    taps[br.layers[-1].name] = b
                ends.append(b)
                flat.append(b)
        # the exporter may merge a split branch's Concat into the block's
        cat = next((n for n in g.consumers.get(flat[0], []) if n.op_type == "Concat"), None) \
            if flat[0] is not None else None
        if cat is None or list(cat.input) not in (ends, flat):
            missing[blk.name] = "no Concat of the block's branches, in order"
            x = None
        else:
            x = taps[blk.name] = cat.output[0]
    if v.aux_logits:
        missing["aux/logits"] = ("the export holds no auxiliary head (torch.onnx.export leaves out what the "
                                 "module's output does not need); compare with variant.replace(aux_logits=False)")
    pooled = None
    if x is not None:
        node = next((n for n in g.consumers.get(x, []) if n.op_type in ("GlobalAveragePool", "ReduceMean")), None)
        through = ("Identity", "Dropout")  # the dynamo exporter flattens by a Reshape (torch's view)
        flat = (g.reach(node.output[0], "Flatten", through) or g.reach(node.output[0], "Reshape", through)) \
            if node is not None else None
        pooled = flat.output[0] if flat is not None else None
    if pooled is None:
        missing["pool"] = "no global average (GlobalAveragePool or ReduceMean, then Flatten or Reshape) after the " \
                          "last block"
    else:
        taps["pool"] = pooled
    found = [n for n in g.consumers.get(pooled, []) if n.op_type == "Gemm"] if pooled is not None else []
    if len(found) != 1:
        missing["logits"] = "no Gemm reads the pooled features"
    else:
        node = found[0]
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        w = g.array(node.input[1])
        params[names["logits/kernel"]] = w if trans_b else w.T
        params[names["logits/bias"]] = g.array(node.input[2]) if len(node.input) > 2 else \
            np.zeros(v.num_classes, np.float32)
        stored.update((names["logits/kernel"], names["logits/bias"]))
        taps["logits"] = node.output[0]
    return ExportReading(taps, {t: missing[t] for t in plan.tap_names(v) if t in missing}, params, stored, folded,
                         named, remarks)
