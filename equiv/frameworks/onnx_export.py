"""Did the export change my network? An ONNX graph that another tool exported (`torch.onnx.export`
of a torchvision-layout module), read layer by layer against a registered variant.

Such a graph has none of equiv's names: its initializers are the exporter's (`onnx::Conv_193` where
it folded a BatchNorm into the conv, the state_dict's `m.conv1.weight` where it kept them), its
outputs are the model's only. So it is read through its nodes: each node's name carries the module
path the exporter saw (`/m/layer1.0/conv1/Conv`), the family's export reader
(equiv/families/<family>/onnx_export.py) finds the node of each canonical layer there (through the
torch dialect's module names) and follows the graph from it (Conv -> [BatchNormalization] -> Relu,
the Add of a unit), and names every canonical tap it cannot place and why. The tensors it placed
are added as graph outputs, the graph runs in ONNX Runtime, 4-D taps come back NHWC.

Parameters are read from the same nodes (a Conv's weight and bias, a BatchNormalization's four
inputs, the Gemm of the classifier), whatever their initializer names. Where the exporter folded
a BatchNorm into the conv, the conv's weight and bias are the folded ones: the canonical form
holds them as an equivalent unfolded layer (the conv's weight as kernel; gamma 1, mean 0,
variance 1 - epsilon, beta the folded bias), which computes what the export computes; each of
those layers is listed in `ExportReading.folded`, and its parameters cannot be compared one by one
with the module's (its taps can: a folded conv's output is the BatchNorm's).
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass, field

import numpy as np

from equiv import canonical as C
from equiv.errors import EquivError
from equiv.variants import Variant

NAME_SCOPES = "pkg.torch.onnx.name_scopes"  # the dynamo exporter's module scopes of a node (its metadata)


@dataclass
class ExportReading:
    """What the family's reader found in an exported graph for a variant."""

    taps: dict[str, str]  # canonical tap -> tensor of the graph (NCHW for 4-D taps)
    missing: dict[str, str]  # canonical tap -> why the graph has no counterpart
    params: dict[str, np.ndarray]  # canonical parameters, in the torch state_dict layout, by torch key
    stored: set[str] = field(default_factory=set)  # torch keys read as the graph stores them (comparable)
    folded: list[str] = field(default_factory=list)  # layers whose BatchNorm the exporter folded into the conv
    named: bool = False  # the initializers carry the state_dict's names (BatchNorm kept)
    remarks: list[str] = field(default_factory=list)  # what differs from the variant's description
    flat: set[str] = field(default_factory=set)  # 4-D tensors whose tap is their NHWC flattening (VGG's flatten)
    dynamo: bool = False  # written by the dynamo exporter (torch.export; node scopes in the metadata)
    # weight-standardised layers whose kernel the graph holds standardised (the dynamo exporter's optimizer
    # computed the standardisation ahead of time): the raw kernel is not in the file
    standardised: list[str] = field(default_factory=list)


def epsilon(node) -> float:
    """A normalisation node's epsilon attribute (ONNX's default, 1e-5, where it has none)."""
    return next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)


def unfolded_bn(shift: np.ndarray, eps: float) -> dict[str, np.ndarray]:
    """The BatchNorm a folded conv's bias stands for, as one that computes the same: gamma 1, mean 0,
    variance 1 - eps (so that variance + eps is 1), beta the folded shift."""
    n = shift.shape[0]
    return {"gamma": np.ones(n, np.float32), "beta": shift, "moving_mean": np.zeros(n, np.float32),
            "moving_variance": np.full(n, 1.0 - eps, np.float32)}


class ExportGraph:
    """An exported graph's nodes, indexed: who makes and who reads each tensor, the module path of
    each node (from the exporter's scope names), the initializers (through the Identity nodes that
    the exporter uses to share equal ones)."""

    def __init__(self, proto):
        from onnx import numpy_helper

        g = proto.graph
        self.proto, self.nodes = proto, list(g.node)
        self.inits = {i.name: i for i in g.initializer}
        self._np = numpy_helper
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers: dict[str, list] = {}
        for n in self.nodes:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.alias = {n.output[0]: n.input[0] for n in self.nodes
                      if n.op_type == "Identity" and n.input and n.input[0] in self.inits}
        self.inputs = [i for i in g.input if i.name not in self.inits]
        self.outputs = [o.name for o in g.output]
        self.elem_types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.value_info, *g.output]}
        self.shapes = {v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim)  # fully known ones
                       for v in [*g.input, *g.value_info, *g.output] if v.type.tensor_type.HasField("shape")
                       and all(d.HasField("dim_value") for d in v.type.tensor_type.shape.dim)}
        self.dynamo = any(p.key == NAME_SCOPES for n in self.nodes for p in n.metadata_props)
        self._paths = {id(n): self._module_path(n) for n in self.nodes}

    @property
    def exporter(self) -> str:
        """Which `torch.onnx.export` wrote the graph, as far as its nodes tell."""
        return "dynamo (torch.export)" if self.dynamo else "TorchScript"

    def module_path(self, node) -> str:
        """The module path of the node (see `_module_path`)."""
        path = self._paths.get(id(node))
        return self._module_path(node) if path is None else path

    @staticmethod
    def _module_path(node) -> str:
        """The module path of a node. The dynamo exporter (`dynamo=True`, torch.export and onnxscript)
        records the module scopes in the node's metadata (`pkg.torch.onnx.name_scopes`: `['', 'm',
        'm.layer1.0', 'm.layer1.0.conv1', 'conv2d_1']`, the last one the operation): the innermost
        module is the path. Where its optimizer fused nodes, the fused node keeps the scopes of the last
        one (a Conv with its BatchNorm folded in is the BatchNorm's: see `conv_of`). The TorchScript
        exporter (`dynamo=False`) names the node by its scopes: `/m/layer2.0/downsample/downsample.0/Conv`
        -> `m.layer2.0.downsample.0` (a Sequential's child repeats its parent's name)."""
        scopes = next((p.value for p in node.metadata_props if p.key == NAME_SCOPES), None)
        if scopes is not None:
            try:  # a literal only (never code); a hostile file's oversized or deeply nested one is ignored
                found = ast.literal_eval(scopes) if len(scopes) <= 4096 else None
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                found = None
            if isinstance(found, list) and all(isinstance(x, str) for x in found):
                return found[-2] if len(found) >= 2 else ""
        parts = [p for p in node.name.split("/") if p][:-1]
        path = ""
        for p in parts:
            last = path.rsplit(".", 1)[-1] if path else ""
            if last and p.startswith(last + "."):  # `downsample` then `downsample.0`
                path += p[len(last):]
            else:
                path = f"{path}.{p}" if path else p
        return path

    def prefix(self, modules) -> str:
        """The module path above the network (a wrapper's `m.`, or none): the one under which the
        most of `modules` name a node."""
        counts: dict[str, int] = {}
        wanted = set(modules)
        for n in self.nodes:
            path = self.module_path(n)
            for m in wanted:
                if path == m or path.endswith("." + m):
                    counts[path[:len(path) - len(m)]] = counts.get(path[:len(path) - len(m)], 0) + 1
        return max(counts, key=lambda p: (counts[p], -len(p))) if counts else ""

    def by_module(self, op: str, module: str) -> list:
        """Nodes of type `op` whose module path is `module` (under `self.root`, set by the reader)."""
        return [n for n in self.nodes if n.op_type == op and self.module_path(n) == getattr(self, "root", "") + module]

    def conv_of(self, module: str, norm: str | None = None) -> list:
        """The Conv nodes of conv module `module`; where there are none and the layer has a norm module
        `norm`, the Conv nodes of that module that no BatchNormalization reads: the dynamo exporter's
        optimizer (`optimize=True`, its default) folds an eval-mode BatchNorm into the conv
        (onnxscript's FuseBatchNormIntoConv) and the fused Conv keeps the BatchNorm's scopes."""
        found = self.by_module("Conv", module)
        if found or norm is None:
            return found
        return [n for n in self.by_module("Conv", norm) if self.after(n.output[0], "BatchNormalization") is None]

    def init_name(self, tensor: str) -> str | None:
        """The initializer a node input names (directly or through an Identity), else None."""
        tensor = self.alias.get(tensor, tensor)
        return tensor if tensor in self.inits else None

    def array(self, tensor: str) -> np.ndarray:
        """The value of `tensor`: an initializer, or a constant the graph computes from initializers and
        Constant nodes only (the dynamo exporter without its optimizer writes a conv's absent bias as
        zeros expanded to the weight's output channels)."""
        a = self.constant(tensor)
        if a is None:
            raise EquivError(f"exported graph: {tensor} is computed from the input, not a constant; its value "
                             "cannot be read")
        return np.asarray(a, np.float32)

    RESHAPING = ("Identity", "Cast", "CastLike", "Reshape", "Unsqueeze", "Squeeze", "Flatten")

    def source(self, tensor: str):
        """The constant `tensor` is made from by reshaping or casting only (its first input through
        `RESHAPING` nodes: the dynamo exporter unsqueezes a GroupNorm's gamma, with axes it computes), as
        the constant holds it; else None. For per-channel vectors, whose values a reshape does not change."""
        for _ in range(16):
            a = self.constant(tensor)
            if a is not None:
                return a
            node = self.producer.get(tensor)
            if node is None or node.op_type not in self.RESHAPING:
                return None
            tensor = node.input[0]
        return None

    CONSTANT_OPS = ("Constant", "Identity", "Shape", "Expand", "Cast", "CastLike", "Reshape", "Concat")

    def constant(self, tensor: str, depth: int = 0):
        """`tensor`'s value where it is an initializer or computed by `CONSTANT_OPS` from constants only
        (CastLike takes only the element type of its second input, which may be the graph's input; Shape
        the static shape the graph declares for a computed tensor); else None."""
        from onnx import helper

        name = self.init_name(tensor)
        if name is not None:
            return self._np.to_array(self.inits[name])
        node = self.producer.get(tensor)
        if node is None or node.op_type not in self.CONSTANT_OPS or depth > 16:
            return None
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Constant":
            if "value" in attrs:
                return self._np.to_array(attrs["value"])
            for key in ("value_float", "value_floats", "value_int", "value_ints"):
                if key in attrs:
                    return np.asarray(attrs[key], np.float32 if "float" in key else np.int64)
            return None
        if node.op_type == "CastLike":
            elem = self.elem_types.get(node.input[1])
            like = None if elem else self.constant(node.input[1], depth + 1)
            dtype = helper.tensor_dtype_to_np_dtype(elem) if elem else (like.dtype if like is not None else None)
            a = self.constant(node.input[0], depth + 1)
            return None if a is None or dtype is None else a.astype(dtype)
        if node.op_type == "Shape" and node.input[0] in self.shapes:  # a computed tensor's static shape
            shape = self.shapes[node.input[0]]
            return np.asarray(shape[attrs.get("start", 0):attrs.get("end", None)], np.int64)
        args = [self.constant(i, depth + 1) if i else None for i in node.input]
        if any(a is None for a in args[:2 if node.op_type in ("Expand", "Reshape") else 1]):
            return None
        a = args[0]
        if node.op_type == "Identity":
            return a
        if node.op_type == "Cast":
            return a.astype(helper.tensor_dtype_to_np_dtype(attrs["to"]))
        if node.op_type == "Concat":
            return None if any(x is None for x in args) else np.concatenate(args, axis=attrs.get("axis", 0))
        if node.op_type == "Shape":
            return np.asarray(a.shape[attrs.get("start", 0):attrs.get("end", None)], np.int64)
        if node.op_type == "Expand":
            shape = np.broadcast_shapes(a.shape, tuple(int(d) for d in args[1]))
            return np.broadcast_to(a, shape).copy()
        shape = [a.shape[i] if d == 0 and not attrs.get("allowzero", 0) else int(d) for i, d in enumerate(args[1])]
        return a.reshape(shape)

    def after(self, tensor: str, op: str):
        """The one node of type `op` reading `tensor`, else None."""
        found = [n for n in self.consumers.get(tensor, []) if n.op_type == op]
        return found[0] if len(found) == 1 else None

    THROUGH = ("Pad", "Slice", "Identity")  # nodes that move or crop values and compute nothing new

    def reach(self, tensor: str, op: str, through=THROUGH):
        """The one node of type `op` reached from `tensor` through `through` nodes only, else None."""
        seen, frontier, found = set(), [tensor], []
        while frontier:
            t = frontier.pop()
            for n in self.consumers.get(t, []):
                if n.op_type == op:
                    found.append(n)
                elif n.op_type in through and n.output[0] not in seen:
                    seen.add(n.output[0])
                    frontier.append(n.output[0])
        return found[0] if len(found) == 1 else None

    def comes_from(self, tensor: str, sources, through=THROUGH) -> bool:
        """`tensor` is one of `sources`, or made from one through `through` nodes only."""
        while tensor not in sources:
            node = self.producer.get(tensor)
            if node is None or node.op_type not in through:
                return False
            tensor = node.input[0]
        return True


def is_export(proto, variant: Variant) -> bool:
    """A graph equiv did not write: none of its outputs is a canonical tap of `variant`."""
    taps = set(C.tap_names(variant))
    return not any(o.name in taps for o in proto.graph.output)


def _reader(variant: Variant):
    from equiv import families

    family = families.of(variant)
    try:
        return importlib.import_module(f"{family.__name__}.onnx_export")
    except ModuleNotFoundError as exc:
        if exc.name != f"{family.__name__}.onnx_export":
            raise
        raise EquivError(f"the {variant.family} family has no reader of exported ONNX graphs "
                         f"({family.__name__}.onnx_export does not exist)") from None


def read(variant: Variant, proto) -> ExportReading:
    """The family reader's mapping of `proto` to `variant`'s taps and parameters."""
    graph = ExportGraph(proto)
    reading = _reader(variant).read_export(variant, graph)
    reading.dynamo = graph.dynamo
    return reading


def canonical_params(variant: Variant, reading: ExportReading, source: str) -> dict[str, np.ndarray]:
    """The reading's parameters in canonical names and layout, checked strictly against `variant`."""
    from equiv.errors import ParamMismatchError
    from equiv.frameworks import torch as T

    try:
        return T.state_to_canonical(variant, dict(reading.params), source)
    except ParamMismatchError as e:
        if reading.missing:  # say what the graph lacks
            t = next(iter(reading.missing))
            e.relabel(hint=f"the exported graph has no counterpart of {t} ({reading.missing[t]})")
        raise


def file_params(variant: Variant, proto, source: str, *, unfold_bn: bool = False) -> dict[str, np.ndarray]:
    """The canonical parameters of an exported graph read as a weight file (`equiv port --from
    exported.onnx`, `equiv.load_weights`): never silently another network. A graph whose layers the
    family's reader cannot place is refused naming the first and why; a graph whose exporter folded
    BatchNorm into the convs is refused naming the first folded layer, unless `unfold_bn`: then each
    folded conv is written as the conv and an identity BatchNorm carrying the folded bias (gamma 1,
    mean 0, variance 1 - epsilon), which computes what the export computes but is not the module's
    BatchNorm (its statistics are gone from the export)."""
    reading = read(variant, proto)
    params = canonical_params(variant, reading, source)  # a graph of another network: what differs, named
    if reading.standardised:
        raise EquivError(f"{source}: the exporter standardised the kernels of {len(reading.standardised)} weight-"
                         f"standardised layers ahead of time (first: {reading.standardised[0]}); their raw kernels are "
                         "not in the file, so what was read would be another network: export with optimize=False")
    if reading.folded and not unfold_bn:
        raise EquivError(f"{source}: the exporter folded BatchNorm into the conv in {len(reading.folded)} layers "
                         f"(first: {reading.folded[0]}); their BatchNorm statistics are not in the file, so what "
                         f"was read would be another network: export with {keep_bn(reading)}, or "
                         "pass `unfold_bn=True` to write each as the conv and an identity BatchNorm holding the "
                         "folded bias")
    return params


def keep_bn(reading: ExportReading) -> str:
    """The `torch.onnx.export` option that keeps BatchNorm unfolded, for the exporter that wrote the graph:
    the dynamo exporter folds in its optimizer whatever the training mode."""
    return "optimize=False (the dynamo exporter's optimizer folds BatchNorm)" if reading.dynamo else \
        "training=torch.onnx.TrainingMode.PRESERVE"


def stored_names(variant: Variant, reading: ExportReading) -> list[str]:
    """Canonical names of the parameters read as the graph stores them (not reconstructed from a fold)."""
    from equiv.frameworks import torch as T

    return [name for name, key in T.framework_names(variant).items() if key in reading.stored]


def notes(variant: Variant, reading: ExportReading) -> list[str]:
    out = [f"read as a graph of torch.onnx.export's {'dynamo (torch.export)' if reading.dynamo else 'TorchScript'} "
           "exporter"]
    if reading.folded:
        out.append(f"the exporter folded BatchNorm into the conv in {len(reading.folded)} layers "
                   f"({', '.join(reading.folded[:3])}{', ...' if len(reading.folded) > 3 else ''}): their "
                   "parameters are compared as the export holds them only where unfolded; their taps are compared "
                   "(a folded conv's output is its BatchNorm's)")
    if reading.standardised:
        out.append(f"the exporter standardised the kernel ahead of time in {len(reading.standardised)} weight-"
                   f"standardised layers ({', '.join(reading.standardised[:3])}"
                   f"{', ...' if len(reading.standardised) > 3 else ''}): their raw kernels are not in the file and "
                   "are not compared one by one (standardised again by the variant, the held kernel computes "
                   "the same up to the standardisation's epsilon); their taps are compared")
    out += reading.remarks
    if reading.missing:
        out.append(f"taps with no counterpart in the exported graph, not compared ({len(reading.missing)}): "
                   + "; ".join(f"{t} ({why})" for t, why in reading.missing.items()))
    return out


def tapped(proto, tensors) -> object:
    """A copy of `proto` with `tensors` added as graph outputs (float, shape left to ONNX Runtime)."""
    import onnx
    from onnx import TensorProto, helper

    p = onnx.ModelProto()
    p.CopyFrom(proto)
    have = {o.name for o in p.graph.output}
    for t in dict.fromkeys(tensors):
        if t not in have:
            p.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
    return p


def runner(variant: Variant, proto, reading: ExportReading):
    """(run, taps, size) as an adapter's model_runner gives them: the export in ONNX Runtime with
    the mapped tensors as outputs, fed NCHW from the NHWC input, its 4-D taps given back NHWC."""
    from equiv.frameworks import onnx as O

    graph = ExportGraph(proto)
    taps = [t for t in C.tap_names(variant) if t in reading.taps]
    if not taps:
        raise EquivError(f"ONNX model {proto.graph.name!r} has no output named as a tap of {variant.name}, and "
                         f"none of its nodes maps to one as an export of it (first: {next(iter(reading.missing), '-')}"
                         f": {next(iter(reading.missing.values()), '-')})")
    if len(graph.inputs) != 1:
        raise EquivError(f"exported graph {proto.graph.name!r} has {len(graph.inputs)} inputs; equiv feeds one")
    dims = [d.dim_value or None for d in graph.inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] not in (None, variant.in_channels):
        raise EquivError(f"exported graph {proto.graph.name!r}: input {graph.inputs[0].name} is not NCHW with "
                         f"{variant.in_channels} channels (its dims: {dims})")
    size = tuple(dims[2:4]) if all(dims[2:4]) else None
    sess = O.session(tapped(proto, [reading.taps[t] for t in taps]), optimization="disable")
    name = graph.inputs[0].name

    fixed = dims[0]  # an export without dynamic axes takes its example's batch only: fed in slices of it

    def run(x, wanted):
        x = np.ascontiguousarray(C.nhwc_to_nchw(np.asarray(x, np.float32)))
        step = fixed or len(x)
        if len(x) % step:
            raise EquivError(f"exported graph {proto.graph.name!r} takes batches of {step} only, not {len(x)}")
        parts = [sess.run([reading.taps[t] for t in wanted], {name: x[i:i + step]}) for i in range(0, len(x), step)]
        out = [np.concatenate([p[k] for p in parts]) for k in range(len(wanted))]
        out = {t: np.asarray(C.nchw_to_nhwc(a) if a.ndim == 4 else a, np.float32) for t, a in zip(wanted, out)}
        return {t: a.reshape(len(a), -1) if t in reading.flat else a for t, a in out.items()}
    return run, taps, size
