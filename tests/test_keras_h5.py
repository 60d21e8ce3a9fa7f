"""Keras 3 `.weights.h5` read and written with h5py alone (equiv.keras_h5), against Keras itself.

Sides, in each test: "h5py" is equiv.keras_h5's writer and reader (the layout computed from the
description by the family's keras_layout module, no Keras imported); "keras" is the model Keras
builds for the variant (`equiv.frameworks.keras.build`: keras.applications' or keras-hub's own
model where the dialect is theirs, `native=...` in the ids; `reference=False`: equiv's generic
functional model), loaded with Keras' own plain `model.load_weights` and saved with its own
`model.save_weights`, and the Keras-model reader (`equiv.frameworks.keras.read_file`: build, load,
export). Every parameter is compared bit for bit.

Every registered ResNet and VGG Keras builds is covered: in the default suite one per dialect and
model kind (keras.applications v1 and v2, keras-hub's classifier and bare backbone, the generic model
at the smallest registered ResNet, two small VGG descriptions), the rest `slow`.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("keras")

from equiv import canonical as C  # noqa: E402
from equiv import dialects, files, keras_h5  # noqa: E402
from equiv import variants as V  # noqa: E402
from equiv.frameworks import adapter  # noqa: E402


def _case(spec: str):
    """'name', 'name@dialect' or 'name@none' (the headless description) -> the description."""
    name, _, how = spec.partition("@")
    v = V.get(name)
    if how == "none":
        return v.replace(head="none", num_classes=0)
    return dialects.place(v, how) if how else v


def _native(v) -> str:
    from equiv.families.resnet import keras_layout

    lib = keras_layout._library(v) if v.family == "resnet" else None
    return {"keras.applications.": "keras.applications", "keras_hub.": "keras_hub"}.get(lib or "", "equiv generic")


# one per dialect and model kind in the default suite; every other registered variant Keras builds, slow
DEFAULT = ("torchvision/resnet18", "keras/ResNet50V2", "keras_hub/resnet_50", "keras_hub/resnet_v2_50@none")


def _all_cases() -> list[str]:
    out = []
    for v in V.all_variants():
        if v.family not in ("resnet", "vgg") or v.reference.startswith("equiv.seed.keras"):
            continue
        out.append(v.name)
    out += ["torchvision/resnet50@keras-hub", "keras_hub/resnet_50@none", "keras_hub/resnet_v2_50@none"]
    return out


CASES = [pytest.param(c, marks=() if c in DEFAULT else pytest.mark.slow, id=c) for c in _all_cases()]


def _params(v, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(s).astype(np.float32) for n, s in C.param_shapes(v).items()}


def _same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for n in a:
        assert a[n].shape == b[n].shape and a[n].tobytes() == b[n].tobytes(), n


@pytest.mark.parametrize("spec", CASES)
def test_h5py_file_loads_in_keras_and_keras_file_reads_in_h5py(spec, tmp_path):
    """h5py-written file -> Keras' own load_weights into the model Keras builds (keras.applications'
    or keras-hub's own where the dialect is theirs, and equiv's generic model for keras.applications'
    variants) -> the same weights; that model's own save_weights -> the h5py reader -> what the
    Keras-model reader gives, bit for bit."""
    v = _case(spec)
    assert keras_h5.layout(v) is not None, f"{spec}: its layout should be computed ({_native(v)})"
    params = _params(v)
    ours = tmp_path / "ours.weights.h5"
    files.write(dict(params), ours, v)
    ad = adapter("keras")
    # equiv's generic model is keras.applications' graph, not keras-hub's (which nests its backbone)
    builds = [None] + ([False] if _native(v) == "keras.applications" else [])
    for reference in builds:
        model = ad.build(v, reference=reference)
        model.load_weights(str(ours))  # Keras' own plain loader
        _same(ad.export_params(v, model), params)
        theirs = tmp_path / f"keras_{reference}.weights.h5"
        model.save_weights(str(theirs))
        with_h5py = keras_h5.read(v, theirs, files.check_hdf5(theirs, v, keras2=False))
        assert with_h5py is not None, f"{spec}: a file Keras wrote ({_native(v) if reference is None else 'generic'}) "\
                                      "fell back to Keras"
        _same(with_h5py, params)
        if reference is None:  # the Keras-model reader builds the model again: once
            _same(with_h5py, ad.read_file(v, theirs))
        ad.release(model)


# VGG (equiv.families.vgg.keras_layout): the registered ones are 138-144 M parameters (slow, above);
# by default, two small descriptions through equiv's generic Keras model: plain, and BatchNorm with
# torchvision's adaptive pool (its own Keras layer)
SMALL_VGG = {
    "vgg-plain": lambda: V.get("keras/VGG16").replace(convs=(1, 2), widths=(4, 6), fc_widths=(8, 7), num_classes=5,
                                                      input_size=(16, 16)),
    "vgg-bn-adaptive": lambda: V.get("torchvision/vgg16_bn").replace(convs=(2, 1), widths=(3, 5), fc_widths=(9,),
                                                                     num_classes=4, adaptive_pool=(2, 2),
                                                                     input_size=None),
}


@pytest.mark.parametrize("make", SMALL_VGG.values(), ids=[f"{k}-native=equiv generic" for k in SMALL_VGG])
def test_small_vgg_h5py_file_loads_in_keras_and_keras_file_reads_in_h5py(make, tmp_path):
    v = make()
    assert keras_h5.layout(v) is not None
    params = _params(v)
    ours = tmp_path / "ours.weights.h5"
    files.write(dict(params), ours, v)
    ad = adapter("keras")
    model = ad.build(v, reference=False)
    model.load_weights(str(ours))  # Keras' own plain loader
    _same(ad.export_params(v, model), params)
    theirs = tmp_path / "keras.weights.h5"
    model.save_weights(str(theirs))
    _same(keras_h5.read(v, theirs, files.check_hdf5(theirs, v, keras2=False)), params)
    ad.release(model)


def test_no_keras_imported(tmp_path):
    """A port to and from a `.weights.h5` of a network whose layout is known imports neither Keras
    nor TensorFlow (a fresh process: sys.modules after write and read)."""
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        from equiv import canonical as C, dialects, files, variants as V
        for v in (V.get("torchvision/resnet18"), dialects.place(V.get("torchvision/resnet50"), "keras-hub")):
            p = {{n: np.full(s, 0.5, np.float32) for n, s in C.param_shapes(v).items()}}
            path = {str(tmp_path)!r} + "/" + v.name.replace("/", "_") + ".weights.h5"
            files.write(p, path, v)
            back = files.read(path, v)
            assert all(back[n].tobytes() == p[n].tobytes() for n in p)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("keras", "tensorflow", "keras_hub", "tf_keras"))
        print("LOADED", loaded)
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "LOADED []" in out.stdout, out.stdout[-2000:]


def test_read_by_position_as_keras_reads(tmp_path):
    """Layer names in the file are not asked, as Keras' own loader does not ask them: a file whose
    groups name other layers (two swapped names) reads as the Keras-model reader reads it; one whose
    datasets do not fit the layout is not read with h5py (Keras reads it and says why)."""
    import h5py

    v = V.get("torchvision/resnet18")
    path = tmp_path / "swapped.weights.h5"
    files.write(_params(v), path, v)
    a, b = keras_h5.layout(v)[1:3]
    with h5py.File(path, "r+") as f:
        f[a.group].attrs["name"], f[b.group].attrs["name"] = b.layer, a.layer
    _same(keras_h5.read(v, path, files.check_hdf5(path, v, keras2=False)), adapter("keras").read_file(v, path))
    assert keras_h5.read(v, path, []) is None


def test_layout_unknown_for_the_seed_and_other_families():
    """The seed's program and the families without a keras_layout module: Keras' own path."""
    assert keras_h5.layout(V.get("seed/keras_resnet_v2_50")) is None
    assert keras_h5.layout(V.get("keras/InceptionV3")) is None
