"""The ResNet family in a graph exported by `torch.onnx.export` from a torchvision-layout module
(equiv.frameworks.onnx_export reads it through this): where each canonical tap and parameter is.

Each conv layer is the Conv node whose module path (from the exporter's node name) is the layer's
module, in the torch dialect's names or in those of equiv's own module (`layer1.0.conv1`,
`layer2.0.downsample.0`, a deep stem's `conv1.3`, under any prefix such as a wrapper's `m.`); from it
the graph is followed: a BatchNormalization reading its output (absent where the exporter folded it
into the conv), then a Relu where the canonical tap is after one. A pre-activation (v2) unit's
`preact` is the BatchNormalization of its module (`layer1.0.preact`; never folded: an Add precedes
it) and the Relu after it; `post` is the last BatchNormalization and its Relu. A unit's output is
the Add reading its last conv's tensor (then its Relu, v1); an identity shortcut is the tensor that
Add adds to the branch, which must come from the unit's input (or its pre-activation) through
Slice nodes only (a strided identity). `stem/pool` is the MaxPool after the stem (through the Pad of
a TF SAME or -inf padding), `pool` the global average (ReduceMean, or GlobalAveragePool then Flatten)
before the classifier, `logits` the classifier's Gemm (or its 1x1 Conv and Flatten). A GroupNorm is
read as the exporter writes it (Reshape, InstanceNormalization, Reshape, Mul by gamma, Add of beta), a
weight-standardised conv's raw kernel from the training-mode BatchNormalization that standardises it
at run time.
"""

from __future__ import annotations

import numpy as np

from equiv.families.resnet import plan


def _module(names: dict[str, str], layer: str, field: str = "kernel") -> str:
    return names[f"{layer}/{field}"].rsplit(".", 1)[0]


def _tables(v):
    """The name tables a torch module of `v` may carry: its dialect's (a library's own module), and
    equiv's own module's (torchvision's scheme), where they differ."""
    from equiv.families.resnet import torch as builder
    from equiv.frameworks import torch as T

    tables = [T.framework_names(v)]
    own = builder.module_names
    if own(v) != tables[0]:
        tables.append(own(v))
    return tables


def _choose(v, g, tables):
    """The table whose conv and norm modules name the most Conv (Gemm, norm) nodes, and its prefix."""
    best = None
    for names in tables:  # a conv's module, or its norm's (a Conv the dynamo exporter fused a BatchNorm into)
        modules = {key.rsplit(".", 1)[0] for c, key in names.items() if c.endswith(("/kernel", "/gamma"))}
        prefix = g.prefix(modules)
        convs = {g.module_path(n) for n in g.nodes
                 if n.op_type in ("Conv", "Gemm", "BatchNormalization", "InstanceNormalization")}
        hits = sum(prefix + m in convs for m in modules)
        if best is None or hits > best[0]:
            best = (hits, names, prefix)
    return best[1], best[2]


def read_export(v, g):
    from equiv.frameworks import torch as T
    from equiv.frameworks.onnx_export import ExportReading, epsilon, unfolded_bn

    taps: dict[str, str] = {}
    missing: dict[str, str] = {}
    params: dict[str, np.ndarray] = {}
    stored: set[str] = set()
    folded: list[str] = []
    standardised: list[str] = []
    remarks: list[str] = []
    bn_keys = plan.bn_fields(v)
    names, g.root = _choose(v, g, _tables(v))
    own_keys = T.framework_names(v)  # the parameters are given back in these keys
    named = False

    def norm_values(t: str, layer: str, module: str | None = None):
        """The norm reading `t` (or, given `module`, the norm node of that module): a BatchNormalization,
        or a GroupNorm as the exporter writes it (Reshape, InstanceNormalization, Reshape, Mul by gamma,
        Add of beta). (its output, {field: array}) or None."""
        if module is not None:
            found = g.by_module("BatchNormalization", module) or g.by_module("InstanceNormalization", module)
            node = found[0] if len(found) == 1 else None
        else:
            node = g.after(t, "BatchNormalization")
            if node is None:
                reshape = g.after(t, "Reshape")
                node = g.after(reshape.output[0], "InstanceNormalization") if reshape is not None else None
        if node is None:
            return None
        eps = epsilon(node)
        if node.op_type == "BatchNormalization":
            scale, beta, mean, var = (g.array(x) for x in node.input[1:5])
            values, out = {"gamma": scale, "beta": beta, "moving_mean": mean, "moving_variance": var}, node.output[0]
        else:
            back = g.after(node.output[0], "Reshape")
            mul = g.after(back.output[0], "Mul") if back is not None else None
            add = g.after(mul.output[0], "Add") if mul is not None else None
            if add is None:
                return None
            gamma = next((g.source(x) for x in mul.input if g.source(x) is not None), None)
            beta = next((g.source(x) for x in add.input if g.source(x) is not None), None)
            if gamma is None or beta is None:
                return None
            gamma, beta = np.asarray(gamma, np.float32), np.asarray(beta, np.float32)
            values, out = {"gamma": gamma.reshape(-1), "beta": beta.reshape(-1)}, add.output[0]
        if not np.isclose(eps, v.bn_epsilon, rtol=1e-3, atol=0):
            remarks.append(f"the norm after {layer} has epsilon {eps:.3g}, {v.name} {v.bn_epsilon:.3g}")
        return out, values

    def keep_norm(prefix: str, values) -> None:
        for f in bn_keys:
            params[names[f"{prefix}/{f}"]] = values[f]
            stored.add(names[f"{prefix}/{f}"])

    def kernel_of(node, c: plan.Conv) -> np.ndarray | None:
        """A Conv's kernel: its initializer, or (a weight-standardised conv, standardised at run time by a
        training-mode BatchNormalization on the reshaped raw kernel) the raw kernel in the Conv's shape."""
        if g.init_name(node.input[1]) is not None:
            if v.weight_std:  # standardised ahead of time (the dynamo exporter's optimizer folds constants)
                standardised.append(c.name)
            return g.array(node.input[1])
        reshape = g.producer.get(node.input[1])
        bn = g.producer.get(reshape.input[0]) if reshape is not None and reshape.op_type == "Reshape" else None
        if bn is None or bn.op_type != "BatchNormalization" or g.constant(bn.input[0]) is None:
            return None
        eps = epsilon(bn)
        if not v.weight_std:
            remarks.append(f"the export standardises the kernel of {c.name}; {v.name} does not")
        elif not np.isclose(eps, v.ws_epsilon, rtol=1e-3, atol=0):
            remarks.append(f"the export standardises the kernel of {c.name} with epsilon {eps:.3g}, {v.name} "
                           f"{v.ws_epsilon:.3g}")
        return g.array(bn.input[0]).reshape(c.cout, c.cin // c.groups, c.kernel, c.kernel)  # (a Reshape of the raw)

    def conv_layer(c: plan.Conv) -> str | None:
        """Read conv `c` (its params into `params`); return the tensor of its output after the norm."""
        nonlocal named
        module = _module(names, c.name)
        found = g.conv_of(module, _module(names, f"{c.name}/bn", bn_keys[0]) if c.norm else None)
        if len(found) != 1:
            missing[c.name] = (f"{'no' if not found else len(found)} Conv node named for module {module}")
            return None
        node = found[0]
        kernel_key = names[f"{c.name}/kernel"]
        kernel = kernel_of(node, c)
        if kernel is None:
            missing[c.name] = f"the Conv of module {module} has a computed kernel that is not read"
            return None
        params[kernel_key] = kernel
        norm = norm_values(node.output[0], c.name) if c.norm else None
        if (not c.norm or norm is not None) and c.name not in standardised:  # else: folded
            stored.add(kernel_key)
        named = named or ((not c.norm or norm is not None)  # a folded kernel is no parameter of the module's,
                          and (g.init_name(node.input[1]) or "").endswith(kernel_key))  # whatever its name
        bias = g.array(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        out = node.output[0]
        if not c.norm:
            if c.bias:
                params[names[f"{c.name}/bias"]] = bias if bias is not None else np.zeros(c.cout, np.float32)
                stored.add(names[f"{c.name}/bias"])
            return out
        prefix = f"{c.name}/bn"
        if norm is not None:
            keep_norm(prefix, norm[1])
            if c.bias:
                params[names[f"{c.name}/bias"]] = bias if bias is not None else np.zeros(c.cout, np.float32)
                stored.add(names[f"{c.name}/bias"])
            return norm[0]
        if v.norm == "group":  # a GroupNorm is never folded: not found
            missing[c.name] = "no GroupNorm (InstanceNormalization between Reshapes, Mul, Add) reads the conv's output"
            return None
        # Folded: the conv's bias is the BatchNorm's shift; hold it as an unfolded BatchNorm that
        # computes the same (gamma 1, mean 0, variance 1 - epsilon, beta the folded bias).
        folded.append(c.name)
        shift = bias if bias is not None else np.zeros(c.cout, np.float32)
        values = unfolded_bn(shift, v.bn_epsilon)
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

    def norm_relu(layer: str, relu: bool) -> str | None:
        """A norm of its own module (a v2 unit's pre-activation, the post-norm), then its Relu."""
        module = _module(names, layer, bn_keys[0])
        found = norm_values(None, layer, module)
        if found is None:
            missing[layer] = f"no BatchNormalization or GroupNorm named for module {module}"
            return None
        out, values = found
        keep_norm(layer, values)
        if relu:
            r = g.after(out, "Relu")
            if r is None:
                missing[layer] = "no Relu reads its norm"
                return None
            out = r.output[0]
        return out

    t = None
    for c in plan.stem_convs(v):
        t = relu_after(c, conv_layer(c))
        if t is None:
            break
        taps[c.name] = t
    if t is not None:
        pool = g.reach(t, "MaxPool")
        if pool is None:
            missing["stem/pool"] = "no MaxPool reads the stem's output"
            t = None
        else:
            t = taps["stem/pool"] = pool.output[0]
    else:
        missing["stem/pool"] = "the stem's output was not found"
    h = t  # the unit's input, as followed along the graph
    for unit in plan.units(v):
        pre = None
        if v.preact:
            pre = norm_relu(f"{unit.name}/preact", v.preact_relu)
            if pre is not None:
                taps[f"{unit.name}/preact"] = pre
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
            sources = {h, pre} - {None} if v.identity_from == "preact" else {h} - {None}
            if len(other) == 1 and (h is None or g.comes_from(other[0], sources)):
                taps[f"{unit.name}/shortcut"] = other[0]
            else:
                missing[f"{unit.name}/shortcut"] = "the Add does not add the unit's input"
        out = add.output[0]
        if not v.preact:  # v1: a Relu after the add
            relu = g.after(out, "Relu")
            if relu is None:
                missing[unit.name] = "no Relu reads the unit's Add"
                h = None
                continue
            out = relu.output[0]
        h = taps[unit.name] = out

    if v.preact:
        h = norm_relu("post", True)
        if h is not None:
            taps["post"] = h
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
        module = _module(names, "logits")
        found = g.by_module("Gemm", module) or g.by_module("Conv", module)
        if len(found) != 1:
            missing[plan.output_tap(v)] = f"{'no' if not found else len(found)} Gemm (or 1x1 Conv) node named for " \
                                          f"module {module}"
        else:
            node = found[0]
            w = g.array(node.input[1])
            key, bkey = names["logits/kernel"], names["logits/bias"]
            if node.op_type == "Gemm":
                trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
                params[key] = w if trans_b else w.T
                out = node.output[0]
            else:  # a 1x1-conv head, then its Flatten
                params[key] = w
                flat = next((n for n in g.consumers.get(node.output[0], []) if n.op_type in ("Flatten", "Reshape",
                                                                                              "Squeeze")), None)
                out = flat.output[0] if flat is not None else None
            params[bkey] = g.array(node.input[2]) if len(node.input) > 2 else np.zeros(v.num_classes, np.float32)
            stored.update((key, bkey))
            if out is None:
                missing[plan.output_tap(v)] = "no Flatten after the 1x1-conv classifier"
            else:
                taps[plan.output_tap(v)] = out
    # the parameters in the variant's own torch keys (equiv.frameworks.torch.state_to_canonical reads those)
    back = {names[c]: own_keys[c] for c in names}
    params = {back.get(k, k): a for k, a in params.items()}
    stored = {back.get(k, k) for k in stored}
    return ExportReading(taps, {t: missing[t] for t in plan.tap_names(v) if t in missing}, params, stored,
                         folded, named, remarks, standardised=standardised)
