"""The ResNet family's Keras 3 `.weights.h5` layout (equiv/families/resnet/keras_layout.py), computed
from a drawn description without Keras, against the model Keras builds of it.

Sides: "layout" is `equiv.keras_h5.layout(v)` (the family's `graph(v)` ordered as Keras orders a
functional model's layers); "keras" is equiv's generic Keras model of `v`
(`equiv.frameworks.keras.build(v, reference=False)`), saved by its own `save_weights` and loaded by
its own `load_weights`. Every convention the strategy draws (deep stems, pre-activation, ResNet-D's
average-pool shortcut, weight standardisation, group norm, flattened and 1x1-conv heads, backbones).
The registered variants (keras.applications' and keras-hub's own models too) are tests/test_keras_h5.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings

pytest.importorskip("keras")

from equiv import canonical as C  # noqa: E402
from equiv import files, keras_h5  # noqa: E402
from equiv import strategies as es  # noqa: E402
from equiv.families.resnet import keras_layout  # noqa: E402
from equiv.frameworks import adapter  # noqa: E402


def _saved(path) -> dict[str, tuple[str, int]]:
    """vars group -> (the layer's name, how many variables), for every layer with variables."""
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Group) and name.endswith("/vars") and len(obj) and not name.startswith("optimizer"):
                out[name] = (str(obj.attrs.get("name")), len(obj))
        f.visititems(visit)
    return out


def _check(v, tmp_path) -> None:
    note(repr(v))
    assert keras_layout._library(v) is None  # drawn descriptions: equiv's generic model
    entries = keras_h5.layout(v)
    assert entries is not None
    ad = adapter("keras")
    model = ad.build(v, reference=False)
    theirs = tmp_path / "keras.weights.h5"
    model.save_weights(str(theirs))
    assert {e.group: (e.layer, len(e.params)) for e in entries} == _saved(theirs)
    rng = np.random.default_rng(0)
    params = {n: rng.standard_normal(s).astype(np.float32) for n, s in C.param_shapes(v).items()}
    ours = tmp_path / "ours.weights.h5"
    files.write(dict(params), ours, v, force=True)
    model.load_weights(str(ours))  # Keras' own loader
    back = ad.export_params(v, model)
    assert all(back[n].tobytes() == params[n].tobytes() for n in params)
    ad.release(model)


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(v=es.variants(max_stages=2, max_units=2, max_width=8))
def test_drawn_layout_is_the_one_keras_saves(v, tmp_path_factory):
    _check(v, tmp_path_factory.mktemp("layout"))


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(v=es.variants(max_stages=3, max_units=3, max_width=16))
def test_drawn_layout_is_the_one_keras_saves_many(v, tmp_path_factory):
    """As the default test, at more and larger draws (the default one draws 4)."""
    _check(v, tmp_path_factory.mktemp("layout"))
