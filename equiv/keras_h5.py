"""Keras 3 `.weights.h5` read and written with h5py alone: no Keras, no TensorFlow.

Keras 3's saving_lib (`keras/src/saving/saving_lib.py`) writes a model's weights as one HDF5
group per layer, named not by the layer but by its class, snake-cased and numbered per class in
the order of `model.layers` (`layers/conv2d`, `layers/conv2d_1`, `layers/batch_normalization`,
...), each holding the layer's variables in creation order as `vars/0..n` (a kernel before its
bias; a BatchNormalization's gamma, beta, moving mean and variance) and its name as the `vars`
group's `name` attribute; a nested model (keras-hub's classifier holds its backbone) has its own
layers under its group's `layers`. A functional model lists its layers by depth in its graph
(`keras/src/ops/function.py`, `map_graph`): the longest path to the output first, ties in the
order a depth-first walk from the output first meets them.

So the layout follows from the model's graph, which each family gives without Keras from a
description (`equiv/families/<family>/keras_layout.py`, `graph(v)`): `layout(v)` is the group and
canonical parameters of every weighted layer, or None where the family cannot list its model
(then Keras itself reads and writes: `equiv.frameworks.keras.read_file` and `write_file`).
tests/test_keras_h5.py checks files written here against Keras' own `load_weights`, and files
Keras wrote against the reader here, for every registered variant Keras builds.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from equiv import canonical as C
from equiv.variants import Variant

# A layer's variables in the order Keras creates them (Conv2D, Dense: kernel, bias;
# BatchNormalization: gamma, beta, moving_mean, moving_variance; GroupNormalization: gamma, beta).
FIELDS = ("kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance")


@dataclass
class Node:
    name: str
    cls: str | None  # the Keras layer class; None for an operation that is no layer (keras.ops.pad)
    inputs: tuple[str, ...]
    nested: Graph | None = None  # a model used as a layer


@dataclass
class Graph:
    """A functional Keras model's graph as its family's builder makes it: `add` a layer (its
    name, class and input layers, in call order) and get its name back, to feed the next."""

    names: Mapping[str, str]  # canonical parameter -> Keras variable path ('layer/field')
    nodes: dict[str, Node] = field(default_factory=dict)

    def add(self, name: str, cls: str | None, *inputs: str, nested: Graph | None = None) -> str:
        if name in self.nodes:
            raise ValueError(f"layer {name!r} added twice")
        self.nodes[name] = Node(name, cls, tuple(inputs), nested)
        return name

    @property
    def output(self) -> str:
        return next(reversed(self.nodes))


def snake(name: str) -> str:
    """keras.src.utils.naming.to_snake_case: Conv2D -> conv2d, BatchNormalization -> batch_normalization."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def order(g: Graph) -> list[Node]:
    """The layers of `g` as Keras lists them (`Functional.layers`): by decreasing depth (the
    longest path to the output), ties by when a depth-first walk from the output, inputs in call
    order, first meets them; operations that are no layers left out."""
    index: dict[str, int] = {}
    post: list[str] = []
    done: set[str] = set()
    stack = [(g.output, iter(g.nodes[g.output].inputs))]
    index[g.output] = 0
    while stack:  # iterative: a ResNet-152 is 500 layers deep
        name, pending = stack[-1]
        nxt = next((p for p in pending if p not in done), None)
        if nxt is None:
            stack.pop()
            done.add(name)
            post.append(name)
            continue
        index.setdefault(nxt, len(index))
        stack.append((nxt, iter(g.nodes[nxt].inputs)))
    depth: dict[str, int] = {}
    for name in reversed(post):
        d = depth.setdefault(name, 0)
        for p in g.nodes[name].inputs:
            depth[p] = max(d + 1, depth.get(p, 0))
    return [g.nodes[n] for n in sorted(post, key=lambda n: (-depth[n], index[n])) if g.nodes[n].cls is not None]


@dataclass(frozen=True)
class Entry:
    group: str  # the layer's `vars` group: 'layers/res_net_backbone/layers/conv2d_3/vars'
    layer: str  # the layer's name (the group's `name` attribute)
    params: tuple[str, ...]  # the canonical parameter in vars/0, vars/1, ...


def graph(v: Variant) -> Graph | None:
    """The family's graph of `v`'s Keras model, or None where it gives none."""
    from equiv import families

    try:
        mod = importlib.import_module(f"{families.of(v).__name__}.keras_layout")
    except ModuleNotFoundError as e:
        if not e.name or not e.name.endswith(".keras_layout"):
            raise
        return None
    return mod.graph(v)


_LAYOUTS: dict[Variant, tuple[Entry, ...] | None] = {}


def layout(v: Variant) -> tuple[Entry, ...] | None:
    """Every weighted layer of `v`'s Keras model as Keras 3 saves it, or None where the family
    cannot list its model or a parameter would be left out."""
    if v not in _LAYOUTS:
        _LAYOUTS[v] = _layout(v)
    return _LAYOUTS[v]


def _layout(v: Variant) -> tuple[Entry, ...] | None:
    g = graph(v)
    if g is None:
        return None
    fields: dict[str, list[tuple[int, str]]] = {}
    for canonical, path in g.names.items():
        layer, _, name = path.rpartition("/")
        if name not in FIELDS:
            return None
        fields.setdefault(layer, []).append((FIELDS.index(name), canonical))
    entries: list[Entry] = []
    _walk(g, "layers", fields, entries)
    covered = [p for e in entries for p in e.params]
    if sorted(covered) != sorted(C.param_shapes(v)):
        return None
    return tuple(entries)


def _walk(g: Graph, where: str, fields: dict, entries: list[Entry]) -> None:
    used: dict[str, int] = {}
    for node in order(g):
        key = snake(node.cls)
        used[key] = used.get(key, -1) + 1
        group = key if used[key] == 0 else f"{key}_{used[key]}"
        if node.nested is not None:
            _walk(node.nested, f"{where}/{group}/layers", fields, entries)
        elif node.name in fields:
            entries.append(Entry(f"{where}/{group}/vars", node.name, tuple(c for _, c in sorted(fields[node.name]))))


# ---------------------------------------------------------------------------------------
# Reading and writing


def read(v: Variant, path: Path, declared) -> dict[str, np.ndarray] | None:
    """Canonical parameters of `v` from a `.weights.h5` whose datasets (`declared`: equiv.hdf5.walk's,
    checked) are exactly `layout(v)`'s, float32 in their shapes; None otherwise (Keras reads it then,
    and says what does not fit). As Keras' own `load_weights`, by position: the layer names the file
    keeps (its `vars` groups' `name`) are not asked, so a file of another model of the same layout
    (keras-hub's backbone read as equiv's generic headless ResNet) reads as Keras would read it."""
    import h5py

    entries = layout(v)
    if entries is None:
        return None
    expected = {f"/{e.group}/{i}": p for e in entries for i, p in enumerate(e.params)}
    shapes = C.param_shapes(v)
    found = {d.name: d for d in declared}
    if set(found) != set(expected) or any(
            d.dtype != np.float32 or d.shape != shapes[expected[d.name]] for d in found.values()):
        return None
    params: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        for e in entries:  # h5py's low-level calls: its high-level lookups cost more than the data
            gid = h5py.h5o.open(f.id, e.group.encode())
            for i, p in enumerate(e.params):
                a = np.empty(shapes[p], np.float32)
                if a.size:
                    h5py.h5d.open(gid, str(i).encode()).read(h5py.h5s.ALL, h5py.h5s.ALL, a)
                params[p] = a
    return params


def write_file(variant: Variant, params, path, *, consume: bool = False) -> None:
    """`params` as Keras 3's `save_weights` lays them out (`layout`), written with h5py; where the
    layout is not known, by Keras itself from the model built and loaded with them."""
    import h5py

    entries = layout(variant)
    if entries is None:
        from equiv.frameworks import adapter, loaded

        with loaded("keras", variant, params) as model:
            adapter("keras").write_file(variant, model, path)
        return
    with h5py.File(path, "w") as f:
        for e in entries:
            group = f.create_group(e.group)
            group.attrs["name"] = e.layer
            for i, p in enumerate(e.params):
                group.create_dataset(str(i), data=np.asarray(params[p], np.float32))
                if consume:
                    del params[p]
