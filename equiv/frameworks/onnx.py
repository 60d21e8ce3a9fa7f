"""ONNX Runtime backend: equiv's ONNX graph of a network, its initializers in and out, runs with
taps in ONNX Runtime, `.onnx` files.

What a network is in ONNX (its graph, written node by node with onnx.helper) is its family's onnx
builder (equiv/families/<family>/onnx.py): `graph(v, params, height, width, outputs)` gives the
onnx.ModelProto with every canonical tap as an output, and `to_onnx` / `to_canonical` convert a
parameter's layout. This adapter keeps a `Model`: the description, its parameters (initializers,
in the graph's layout, by canonical name) and the InferenceSessions made from them, one per
input size (TF SAME pads depend on it), made on first use and dropped when weights are loaded.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from equiv import canonical as C
from equiv import families
from equiv.errors import EquivError, FrameworkError
from equiv.variants import Variant

try:  # absolute imports: the real packages, not this module
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper
    _MISSING = None
except ImportError as exc:  # the adapter must import, and say why, without them
    onnx = ort = numpy_helper = None
    _MISSING = f"onnx and onnxruntime are needed (pip install 'equiv[onnx]'): {exc}"


# What a family's onnx builder defines beyond build, framework_names and DIALECTS (the backend contract's
# BUILDER on main after issue 14): the graph, and each parameter's layout there and back.
BUILDER = ("graph", "to_onnx", "to_canonical")


# ---------------------------------------------------------------------------------------
# What every family's onnx builder shares, and takes from here as it is: no library ships an ONNX
# network, so the graph is always equiv's, its initializers named canonically, conv kernels OIHW.

def own_dialects() -> dict:
    """The one dialect of a family's onnx builder: equiv's own graph, canonical names (identity)."""
    from equiv.families.base import Dialect

    return {"equiv": Dialect("")}


def canonical_names(variant: Variant) -> dict[str, str]:
    """canonical name -> initializer name: the same."""
    return {name: name for name in C.param_shapes(variant)}


def build_own(variant: Variant, dialects, graph: Callable, reference: bool | None) -> Model:
    """The adapter's model of `variant` from its family's `graph`; reference=True is refused with
    the reason (no library ships an ONNX network)."""
    from equiv.families.base import library_build

    library_build(dialects, "onnx", variant, reference)
    return Model(variant, graph)


def kernel_to_onnx(name: str, a: np.ndarray) -> np.ndarray:
    """A canonical parameter in the graph's layout: conv kernels OIHW, the rest as they are."""
    return C.hwio_to_oihw(a) if a.ndim == 4 else a


def kernel_to_canonical(name: str, a: np.ndarray) -> np.ndarray:
    return C.oihw_to_hwio(a) if a.ndim == 4 else a


def available() -> str | None:
    return _MISSING


def _builder(variant: Variant):
    return families.builder(variant, "onnx")


# ---------------------------------------------------------------------------------------
# Writing a graph: what every family's onnx builder shares

OPSET = 17
IR_VERSION = 8  # the IR of opset 17 (onnx 1.12), which every ONNX Runtime since 1.12 reads
INPUT = "x"
BATCH = "batch"


class Graph:
    """Nodes of an ONNX graph being written (NCHW inside), with fresh names for the tensors between
    taps, the taps it has reached, and `model()` to close it: every wanted tap a graph output under
    its canonical name, NHWC (a Transpose after each 4-D tap)."""

    def __init__(self):
        from onnx import TensorProto, helper, numpy_helper

        self.h, self.nh, self.tp = helper, numpy_helper, TensorProto
        self.nodes: list = []
        self.taps: dict[str, str] = {}  # tap -> tensor (NCHW for 4-D taps)
        self._n = 0

    def fresh(self, hint: str) -> str:
        self._n += 1
        return f"{hint}#{self._n}"

    def op(self, op: str, inputs, hint: str, out: str | None = None, **attrs) -> str:
        out = out or self.fresh(hint)
        self.nodes.append(self.h.make_node(op, list(inputs), [out], name=f"{op}:{out}", **attrs))
        return out

    def const(self, hint: str, value) -> str:
        out = self.fresh(f"{hint}/const")
        self.nodes.append(self.h.make_node("Constant", [], [out], name=f"Constant:{out}",
                                           value=self.nh.from_array(np.asarray(value), out)))
        return out

    def tap(self, name: str, tensor: str) -> None:
        self.taps[name] = tensor

    def pad(self, x: str, hint: str, tb: tuple[int, int], lr: tuple[int, int], value: float) -> str:
        """An explicit Pad node of `value` (NCHW: tb on H, lr on W); nothing where there is no padding."""
        if tb == (0, 0) and lr == (0, 0):
            return x
        pads = np.array([0, 0, tb[0], lr[0], 0, 0, tb[1], lr[1]], np.int64)
        return self.op("Pad", [x, self.const(f"{hint}/pads", pads), self.const(f"{hint}/value",
                       np.array(value, np.float32))], f"{hint}/pad", mode="constant")

    def conv(self, x: str, hint: str, kernel: str, bias: str | None, k: int, stride: int,
             tb: tuple[int, int], lr: tuple[int, int], groups: int = 1) -> str:
        """A Conv padding through its own `pads` where the amounts are the same on both sides, after an
        explicit Pad node of zeros where they are not (TF SAME with a stride)."""
        pads = [0, 0, 0, 0]
        if tb[0] == tb[1] and lr[0] == lr[1]:
            pads = [tb[0], lr[0], tb[1], lr[1]]
        else:
            x = self.pad(x, hint, tb, lr, 0.0)
        return self.op("Conv", [x, kernel] + ([bias] if bias else []), hint, kernel_shape=[k, k],
                       strides=[stride, stride], pads=pads, dilations=[1, 1], group=groups)

    def dense(self, x: str, name: str, relu: bool = False, out: str | None = None) -> str:
        """x @ {name}/kernel + {name}/bias (the kernel as canonical, (in, out)), then a ReLU if asked."""
        y = self.op("Add", [self.op("MatMul", [x, f"{name}/kernel"], name), f"{name}/bias"], name,
                    out=None if relu else out)
        return self.op("Relu", [y], name, out=out) if relu else y

    def flatten_nhwc(self, x: str, hint: str, out: str | None = None) -> str:
        """An NCHW map flattened in NHWC order (the canonical order of a dense kernel's rows)."""
        return self.op("Flatten", [self.op("Transpose", [x], f"{hint}/nhwc", perm=[0, 2, 3, 1])], hint,
                       out=out, axis=1)

    def model(self, v: Variant, params: Mapping[str, np.ndarray], order, shapes: Mapping[str, tuple],
              wanted, height: int, width: int, initializer=None):
        """The onnx.ModelProto: input x (NHWC, batch free), the taps `wanted` as outputs (NHWC), the
        initializers `params` in the order `order` (canonical names). `initializer(name, array)`
        makes each initializer's TensorProto (default: the array's data in the graph)."""
        helper, tp = self.h, self.tp
        outs = []
        for name in wanted:
            tensor = self.taps[name]
            if len(shapes[name]) == 3:
                self.op("Transpose", [tensor], name, out=name, perm=[0, 2, 3, 1])
            elif tensor != name:
                self.op("Identity", [tensor], name, out=name)
            outs.append(helper.make_tensor_value_info(name, tp.FLOAT, [BATCH, *shapes[name]]))
        make = initializer or (lambda n, a: self.nh.from_array(np.ascontiguousarray(a, np.float32), n))
        inits = [make(n, params[n]) for n in order]
        inp = helper.make_tensor_value_info(INPUT, tp.FLOAT, [BATCH, height, width, v.in_channels])
        gp = helper.make_graph(self.nodes, v.name.replace("/", "_"), [inp], outs, inits)
        model = helper.make_model(gp, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="equiv",
                                  doc_string=f"{v.name}: {height}x{width} NHWC input, canonical taps as outputs (NHWC)")
        model.ir_version = IR_VERSION
        helper.set_model_props(model, {"equiv.variant": v.name, "equiv.input_size": f"{height}x{width}"})
        return model


# ---------------------------------------------------------------------------------------
# Sessions

_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
           "all": "ORT_ENABLE_ALL"}


def _threads() -> int:
    """ONNX Runtime's intra-op threads, set explicitly: the CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _providers(device: str, tf32: bool = False) -> list:
    """The execution providers of `device`; on CUDA, TF32 only where asked (`tf32`: ORT's CUDA EP
    uses it by default, which a float32 figure must not)."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return [("CUDAExecutionProvider", {"use_tf32": "1" if tf32 else "0"}), "CPUExecutionProvider"]
    raise FrameworkError(f"no {device} execution provider in this onnxruntime "
                         f"({', '.join(ort.get_available_providers())}; CUDA needs onnxruntime-gpu)")


def _physical_cores() -> int:
    """The physical cores among the CPUs this process may use (SMT siblings counted once)."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for c in cpus:
        try:
            with open(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list") as f:
                cores.add(f.read().strip())
        except OSError:
            cores.add(str(c))
    return max(1, len(cores))


# ONNX Runtime 1.30's Pad_Fusion folds a Pad of zeros into the MaxPool after it, whose own padding
# is -inf: keras.applications' stem (ZeroPadding2D, then MaxPool) then gives negative values where
# zeros are right (found by the numpy reference on keras/ResNet50V2, whose stem has no ReLU).
DISABLED_OPTIMIZERS = ("Pad_Fusion",)


_IN_MEMORY = "equiv-in-memory"


def _reference(name: str, a: np.ndarray):
    """An initializer that names its data instead of holding it: the data is handed to ONNX Runtime
    from memory (`session(..., initializers=)`), so a session costs no serialized copy of the weights."""
    from onnx import TensorProto

    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(a.shape), data_location=TensorProto.EXTERNAL)
    for key, value in (("location", _IN_MEMORY), ("offset", "0"), ("length", str(a.nbytes))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    return t


def session(proto, *, device: str = "cpu", optimization: str = "all", threads: int | None = None,
            spin: bool = False, initializers: Mapping[str, np.ndarray] | None = None, tf32: bool = False,
            profile_prefix: str | None = None):
    """An InferenceSession of ModelProto `proto`: quiet (errors only), `optimization` one of
    _LEVELS, `threads` intra-op threads (default: the CPUs this process may use); its threads
    sleep when idle unless `spin` (a benchmark's choice, not a check's on a shared machine).
    `initializers`: the data of initializers `proto` only refers to (`_reference`), float32 C-contiguous,
    alive as long as the session. `profile_prefix`: ONNX Runtime's own profile of every run, written
    by `sess.end_profiling()` (benchmarks/op_breakdown.py)."""
    so = ort.SessionOptions()
    if profile_prefix:
        so.enable_profiling, so.profile_file_prefix = True, profile_prefix
    held = None
    if initializers:
        names = list(initializers)
        held = [ort.OrtValue.ortvalue_from_numpy(initializers[n]) for n in names], dict(initializers)
        so.add_external_initializers(names, held[0])
    so.log_severity_level = 3
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[optimization])
    so.intra_op_num_threads = threads or _threads()
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    try:
        sess = ort.InferenceSession(proto.SerializeToString(), so, providers=_providers(device, tf32),
                                    disabled_optimizers=list(DISABLED_OPTIMIZERS))
    except Exception as e:  # noqa: BLE001 - ONNX Runtime's own refusal, named
        raise EquivError(f"ONNX Runtime refuses the graph ({type(e).__name__}: {str(e).strip()[:300]})") from None
    sess.equiv_initializers = held  # the memory the session reads its weights from lives as long as it
    return sess


class Model:
    """A network of the onnx backend: its parameters in the graph's layout, by canonical name,
    and the sessions made from them (one per input size and outputs, the last few kept)."""

    KEEP = 2
    # Checks run the graph as written, node by node: every tap is an output anyway, and a session
    # without graph optimisation is made 2-4x faster (a check runs each session once). The benchmark
    # times ONNX Runtime's default (every optimisation) and the other levels (FAST_PATHS).
    OPTIMIZATION = "disable"

    def __init__(self, variant: Variant, graph: Callable):
        self.variant, self._graph = variant, graph
        b = _builder(variant)  # zeros until weights are loaded (np.zeros costs nothing until written)
        keys = framework_names(variant)
        self.params = {keys[name]: np.zeros(b.to_onnx(name, np.empty(shape, np.float32)).shape, np.float32)
                       for name, shape in C.param_shapes(variant).items()}
        self._sessions: OrderedDict = OrderedDict()

    def size(self, height: int | None = None, width: int | None = None) -> tuple[int, int]:
        """The input size a graph is made for: the description's own, else the one asked, else 224."""
        if self.variant.input_size is not None:
            return tuple(self.variant.input_size)
        return (height or 224, width or height or 224)

    def proto(self, height: int, width: int, outputs: list[str] | None = None, *, referenced: bool = False):
        """The graph with the weights in it, or (`referenced`) naming them only, for `session`."""
        return self._graph(self.variant, self.params, height, width, outputs,
                           initializer=_reference if referenced else None)

    def session(self, height: int, width: int, outputs: list[str] | None = None, **options):
        """A session of the graph (the one of every tap, kept, unless outputs or options are given)."""
        proto = self.proto(height, width, outputs, referenced=True)
        if outputs is not None or options:
            return session(proto, initializers=self.params, **{"optimization": self.OPTIMIZATION, **options})
        key = (height, width)
        if key not in self._sessions:
            self._sessions[key] = session(proto, initializers=self.params, optimization=self.OPTIMIZATION)
            while len(self._sessions) > self.KEEP:
                self._sessions.popitem(last=False)
        self._sessions.move_to_end(key)
        return self._sessions[key]

    def drop_sessions(self) -> None:
        self._sessions.clear()

    def __repr__(self) -> str:
        return f"<equiv onnx model of {self.variant.name}, {len(self._sessions)} session(s)>"


def build(variant: Variant, *, reference: bool | None = None) -> Model:
    """The family's graph of `variant` (equiv/families/<family>/onnx.py) with initial weights."""
    if _MISSING:
        raise FrameworkError(_MISSING)
    return _builder(variant).build(variant, reference=reference)


# ---------------------------------------------------------------------------------------
# Names and parameters

def framework_names(variant: Variant) -> dict[str, str]:
    """canonical name -> initializer name, in the dialect of the family's onnx builder."""
    return dict(_builder(variant).framework_names(variant))


def export_params(variant: Variant, model: Model) -> dict[str, np.ndarray]:
    b = _builder(variant)
    return {name: np.array(b.to_canonical(name, model.params[key]), np.float32)
            for name, key in framework_names(variant).items()}


def load_params(variant: Variant, model: Model, params) -> None:
    C.check_params(variant, params)
    b = _builder(variant)
    model.params = {key: np.ascontiguousarray(b.to_onnx(name, np.asarray(params[name], np.float32)), np.float32)
                    for name, key in framework_names(variant).items()}
    model.drop_sessions()


# ---------------------------------------------------------------------------------------
# Running

def _check_input(variant: Variant, x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, np.float32)
    if x.ndim != 4 or x.shape[-1] != variant.in_channels:
        raise EquivError(f"{variant.name} takes NHWC input with {variant.in_channels} channels, not {x.shape}")
    if variant.input_size is not None and tuple(x.shape[1:3]) != tuple(variant.input_size):
        raise EquivError(f"{variant.name} takes {variant.input_size[0]}x{variant.input_size[1]} input only, "
                         f"not {x.shape[1]}x{x.shape[2]}")
    return x


def run(variant: Variant, model: Model, x: np.ndarray, taps=None) -> dict[str, np.ndarray]:
    """Taps of NHWC `x`, each a graph output (NHWC already)."""
    names = C.resolve_taps(variant, taps)
    x = _check_input(variant, x)
    sess = model.session(*x.shape[1:3])
    out = sess.run(names, {sess.get_inputs()[0].name: x})
    return {n: np.asarray(a, np.float32) for n, a in zip(names, out)}


def release(model) -> None:
    """Drop the model's sessions (ONNX Runtime frees their memory with them); idempotent."""
    if isinstance(model, Model):
        model.drop_sessions()


# ---------------------------------------------------------------------------------------
# A user's model: an onnx.ModelProto (one equiv wrote, or any graph whose initializers carry
# the canonical names), and the environment

NAMING = ("an ONNX model is read through its initializers, by canonical name and in the graph's layout "
          "(conv kernels OIHW), as equiv writes it (equiv.frameworks.onnx.framework_names(variant) lists them)")


def _is_proto(obj) -> bool:
    return onnx is not None and isinstance(obj, onnx.ModelProto)


def owns(obj) -> bool:
    return isinstance(obj, Model) or _is_proto(obj)


def model_names(model) -> set[str]:
    if isinstance(model, Model):
        return set(model.params)
    return {i.name for i in model.graph.initializer}


def _initializers(proto) -> dict[str, np.ndarray]:
    from onnx.external_data_helper import uses_external_data

    out = {}
    for init in proto.graph.initializer:
        if uses_external_data(init):
            raise EquivError(f"initializer {init.name} lies in an external data file; equiv reads only "
                             "initializers stored in the model")
        out[init.name] = numpy_helper.to_array(init)
    return out


def proto_params(variant: Variant, proto, source: str = "ONNX model") -> dict[str, np.ndarray]:
    """Canonical parameters from an ONNX graph's initializers in this backend's names, checked strictly
    (initializers that are not parameters of `variant`: reported as unexpected)."""
    inits = _initializers(proto)
    b, names = _builder(variant), framework_names(variant)
    params = {}
    for name, key in names.items():
        if key in inits:
            a = inits.pop(key)
            if not np.issubdtype(a.dtype, np.floating):
                raise EquivError(f"{source}: initializer {key} is {a.dtype}; weights must be floating point")
            params[name] = np.asarray(b.to_canonical(name, a.astype(np.float32)), np.float32)
    params.update(inits)  # left over: unexpected, reported by their own names
    C.check_params(variant, params, source=source)
    return params


def _exported(variant: Variant, model) -> bool:
    """An onnx.ModelProto that another tool exported (none of its outputs a canonical tap)."""
    from equiv.frameworks import onnx_export

    return _is_proto(model) and onnx_export.is_export(model, variant)


def model_params(variant: Variant, model) -> dict[str, np.ndarray]:
    if isinstance(model, Model):
        return export_params(variant, model)
    if _exported(variant, model):  # read through its nodes (equiv.frameworks.onnx_export)
        from equiv.frameworks import onnx_export

        return onnx_export.canonical_params(variant, onnx_export.read(variant, model),
                                            f"exported ONNX model {model.graph.name!r}")
    return proto_params(variant, model, source=f"ONNX model {model.graph.name!r}")


def model_notes(variant: Variant, model) -> list[str]:
    """What a comparison must say about this model: for an exported graph, the BatchNorms the exporter
    folded and every tap without a counterpart (by name, with the reason)."""
    if not _exported(variant, model):
        return []
    from equiv.frameworks import onnx_export

    return onnx_export.notes(variant, onnx_export.read(variant, model))


def model_stored_params(variant: Variant, model) -> list[str] | None:
    """Canonical names of the parameters a model holds as they are (None: all of them); an exported
    graph's folded BatchNorms are reconstructed, not held, so they are left out."""
    if not _exported(variant, model):
        return None
    from equiv.frameworks import onnx_export

    return onnx_export.stored_names(variant, onnx_export.read(variant, model))


def file_model(variant: Variant, path):
    """An `.onnx` file another tool exported, as a model that runs itself (its weights are its own
    nodes'); None for a graph equiv wrote, which is read as a weight file."""
    proto = load_proto(path)
    from equiv.frameworks import onnx_export

    return proto if onnx_export.is_export(proto, variant) else None


def model_runner(variant: Variant, model):
    """equiv's model runs with every tap; an onnx.ModelProto in ONNX Runtime, with the canonical
    taps that are among its graph outputs (all of them in a graph equiv wrote) at its input size."""
    if isinstance(model, Model):
        return (lambda x, taps: run(variant, model, x, taps)), None, None
    if _exported(variant, model):  # its intermediate tensors mapped to taps and added as outputs
        from equiv.frameworks import onnx_export

        return onnx_export.runner(variant, model, onnx_export.read(variant, model))
    outputs = [o.name for o in model.graph.output]
    taps = [t for t in C.tap_names(variant) if t in outputs]
    if not taps:
        raise EquivError(f"ONNX model {model.graph.name!r} has no output named as a tap of {variant.name} "
                         f"(its outputs: {', '.join(outputs[:5])})")
    dims = [d.dim_value or None for d in model.graph.input[0].type.tensor_type.shape.dim]
    size = tuple(dims[1:3]) if len(dims) == 4 and all(dims[1:3]) else None
    sess = session(model)

    def run_it(x, wanted):
        x = np.ascontiguousarray(x, np.float32)
        out = sess.run(list(wanted), {sess.get_inputs()[0].name: x})
        return {t: np.asarray(a, np.float32) for t, a in zip(wanted, out)}
    return run_it, taps, size


def versions() -> dict[str, str]:
    return {"onnx": onnx.__version__, "onnxruntime": ort.__version__}


def engine() -> str:
    return "onnxruntime"


def thread_pools() -> list[dict]:
    """ONNX Runtime's intra-op pool, as equiv sets it (its own, which threadpoolctl does not list)."""
    return [{"library": "onnxruntime", "api": "intra-op", "version": ort.__version__, "kernel": "-",
             "threads": _threads()}]


def device_name(device: str) -> str | None:
    """The accelerator `device` ("cuda") means here, None on the CPU or without one."""
    if device == "cuda" and ort is not None and "CUDAExecutionProvider" in ort.get_available_providers():
        return "CUDA (onnxruntime CUDAExecutionProvider)"
    return None


# ---------------------------------------------------------------------------------------
# Files: `.onnx`, the graph equiv writes, with its weights as initializers

def write_file(variant: Variant, model: Model, path) -> None:
    """The graph at the description's input size (224x224 where it takes any), every tap an output;
    checked by onnx.checker before it is written."""
    proto = model.proto(*model.size())
    onnx.checker.check_model(proto, full_check=True)
    onnx.save_model(proto, str(path))


def load_proto(path):
    """The ModelProto of an `.onnx` file, its size checked first, no external data followed."""
    from equiv import limits

    if _MISSING:
        raise FrameworkError(_MISSING)
    limits.check_bytes(str(path), os.path.getsize(path), None, "it holds")
    try:
        return onnx.load_model(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf's refusal, named
        raise EquivError(f"{path}: not a readable ONNX model ({type(e).__name__}: {str(e)[:200]})") from None


def read_file(variant: Variant, path, *, unfold_bn: bool = False, **_) -> dict[str, np.ndarray]:
    """Canonical parameters of an `.onnx` file: the initializers of a graph equiv wrote, by canonical
    name; or, for a graph another tool exported (`torch.onnx.export` of a torchvision-layout module),
    read through its nodes (equiv.frameworks.onnx_export.file_params: a folded BatchNorm is refused
    unless `unfold_bn`)."""
    proto = load_proto(path)
    from equiv.frameworks import onnx_export

    if onnx_export.is_export(proto, variant):
        return onnx_export.file_params(variant, proto, str(path), unfold_bn=unfold_bn)
    return proto_params(variant, proto, source=str(path))


def fit_file(path, fmt: str, **_):
    """(equiv.formats) whether an `.onnx` file's initializers fit a candidate variant."""
    proto = load_proto(Path(path))

    from equiv.frameworks import onnx_export

    def fits(cand) -> str | None:
        try:
            if onnx_export.is_export(proto, cand):
                onnx_export.file_params(cand, proto, str(path), unfold_bn=True)
            else:
                proto_params(cand, proto)
            return cand.name
        except EquivError:
            return None
    return fits


# ---------------------------------------------------------------------------------------
# Benchmarks

# Documented fast paths `equiv bench --best` tries, each checked against the plain path (ORT's default:
# every graph optimisation, intra-op threads on every CPU this process may use, threads that sleep):
# the other optimisation levels, threads on the physical cores only, threads that spin between kernels;
# on CUDA, TF32 and a float16 graph (refused on the CPU, with the reason).
FAST_PATHS = {
    "disable": {"optimization": "disable"},
    "basic": {"optimization": "basic"},
    "extended": {"optimization": "extended"},
    "physical_cores": {"threads": "physical"},
    "spin": {"spin": True},
    "tf32": {"tf32": True},
    "fp16": {"fp16": True},
}


def float16(proto):
    """A copy of ModelProto `proto` computing in float16: every float initializer and Constant cast,
    the input cast to float16 on the way in and every output to float32 on the way out."""
    from onnx import TensorProto, helper

    p = onnx.ModelProto()
    p.CopyFrom(proto)
    g = p.graph
    for t in g.initializer:
        if t.data_type == TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
    for n in g.node:
        for a in n.attribute:
            if n.op_type == "Constant" and a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
    x = g.input[0].name
    for n in g.node:
        n.input[:] = [f"{x}/fp16" if i == x else i for i in n.input]
    outs = {o.name for o in g.output}
    for n in g.node:
        n.output[:] = [f"{o}/fp16" if o in outs else o for o in n.output]
        n.input[:] = [f"{i}/fp16" if i in outs else i for i in n.input]
    casts = [helper.make_node("Cast", [x], [f"{x}/fp16"], to=TensorProto.FLOAT16)]
    casts_out = [helper.make_node("Cast", [f"{o}/fp16"], [o], to=TensorProto.FLOAT) for o in outs]
    nodes = casts + list(g.node) + casts_out
    del g.node[:]
    g.node.extend(nodes)
    return p


def forward_fn(variant: Variant, model: Model, x: np.ndarray, *, device: str = "cpu", dtype: str = "float32",
               channels_last: bool = False, optimization: str = "all", spin: bool = False,
               threads: int | str | None = None, tf32: bool = False, fp16: bool = False):
    """A callable running one forward pass and returning the logits: a session of the graph with
    the output tap only (so nothing is kept for the taps), at `optimization` (ONNX Runtime's default:
    all; its CPU provider picks its own blocked layout for convolutions), `threads` intra-op threads
    ("physical": one per physical core), spinning or not; on CUDA, TF32 (`tf32`) or a float16 graph (`fp16`)."""
    if dtype != "float32" or channels_last:
        raise FrameworkError("the onnx benchmark runs float32 graphs in ONNX Runtime's own layouts "
                             "(a float16 graph: its fp16 path, on CUDA)")
    if (tf32 or fp16) and device != "cuda":
        raise FrameworkError(f"{'TF32' if tf32 else 'a float16 graph'} is a CUDA path (ONNX Runtime's CUDA "
                             "execution provider); not tried on the CPU")
    x = _check_input(variant, x)
    if threads == "physical":
        threads = _physical_cores()
        if threads == _threads():
            raise FrameworkError(f"every CPU this process may use is a physical core ({threads}): "
                                 "the same threads as the plain path")
    options = dict(device=device, optimization=optimization, threads=threads, spin=spin, tf32=tf32)
    if fp16:
        proto = float16(model.proto(*x.shape[1:3], [C.output_tap(variant)]))
        sess = session(proto, **options)
    else:
        sess = model.session(*x.shape[1:3], [C.output_tap(variant)], **options)
    name = sess.get_inputs()[0].name
    return lambda: sess.run(None, {name: x})[0]


def matmul_fn(n: int, *, device: str = "cpu", dtype: str = "float32"):
    """A callable multiplying two n x n matrices in ONNX Runtime (the ceiling benchmark): one MatMul
    of two inputs, no optimisation (so nothing is folded)."""
    if dtype != "float32":
        raise FrameworkError("the onnx matmul runs float32")
    from onnx import TensorProto, helper

    a, b = (helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in "ab")
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])
    g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "matmul", [a, b], [y])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    sess = session(proto, device=device, optimization="disable", spin=True)
    rng = np.random.default_rng(0)
    feeds = {k: rng.standard_normal((n, n)).astype(np.float32) for k in "ab"}
    return lambda: sess.run(None, feeds)[0]
