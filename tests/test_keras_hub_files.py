"""keras-hub's own `.weights.h5` files (issue 17, item 4 and the keras-hub reading): a
`ResNetImageClassifier`'s and a bare `ResNetBackbone`'s, saved by keras-hub's own `save_weights`,
read by equiv unchanged; and what equiv writes with target_dialect="keras-hub" loaded by keras-hub's
own `load_weights`.

Sides, in each test: "keras-hub" is keras_hub.models.ResNetBackbone / ResNetImageClassifier (0.32,
the `hub` extra) built here by the test itself, its variables drawn at random and saved by its own
`save_weights`; "equiv torch module" is equiv's generic torch build (the one the default suite holds to
the float64 reference) with the parameters equiv read from keras-hub's file. Their forwards are
compared on one input; the files equiv writes are loaded by keras-hub's own `load_weights` and every
variable compared bit for bit with the model that saved the source file.
"""

from __future__ import annotations

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")
torch = pytest.importorskip("torch")

from equiv import variants as V  # noqa: E402
from equiv.frameworks import adapter  # noqa: E402
from equiv.porting import load_weights, port  # noqa: E402

R50 = "torchvision/resnet50"


def _backbone():
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 128, 256, 512],
        stackwise_num_blocks=[3, 4, 6, 3], stackwise_num_strides=[1, 2, 2, 2], block_type="bottleneck_block",
        use_pre_activation=False, image_shape=(None, None, 3))


def _randomise(model, seed: int = 0) -> None:
    """Every variable drawn afresh (variances positive), so that a misplaced tensor shows."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        shape = tuple(w.shape)
        if w.path.endswith("moving_variance"):
            w.assign(rng.uniform(0.5, 1.5, shape).astype(np.float32))
        elif w.path.endswith(("gamma", "beta", "moving_mean")):
            w.assign(rng.uniform(-0.5, 0.5, shape).astype(np.float32) + (1.0 if w.path.endswith("gamma") else 0.0))
        else:
            fan_in = int(np.prod(shape[:-1])) or 1
            w.assign((rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32))


def _headless(name: str = R50):
    return V.get(name).replace(head="none", num_classes=0)


def _equiv_torch(v, params, x: np.ndarray) -> np.ndarray:
    """equiv's generic torch build of `v` with `params`, run on NHWC `x`: the last tap (taps are NHWC)."""
    ad = adapter("torch")
    model = ad.build(v, reference=False)
    ad.load_params(v, model, params)
    out = ad.run(v, model, x)
    return out[list(out)[-1]]


def _close(theirs: np.ndarray, ours: np.ndarray) -> None:
    err = float(np.max(np.abs(theirs - ours)) / np.max(np.abs(theirs)))
    assert err < 1e-4, f"keras-hub vs equiv torch module: relative error {err:.2e}"


def _weights_equal(a, b) -> None:
    va, vb = {w.path: np.asarray(w.numpy()) for w in a.weights}, {w.path: np.asarray(w.numpy()) for w in b.weights}
    assert va.keys() == vb.keys()
    differ = [k for k in va if not np.array_equal(va[k], vb[k])]
    assert not differ, f"{len(differ)} variables differ (first: {differ[0]})"


def test_keras_hubs_own_classifier_file_reads_unchanged(tmp_path):
    """keras-hub's ResNetImageClassifier.save_weights file (the backbone nested in the classifier's
    layout: layers/res_net_backbone/layers/...) read as torchvision/resnet50 in the keras-hub dialect;
    equiv torch module with those parameters against keras-hub's own forward."""
    clf = keras_hub.models.ResNetImageClassifier(backbone=_backbone(), num_classes=10, activation=None)
    _randomise(clf)
    path = tmp_path / "classifier.weights.h5"
    clf.save_weights(str(path))
    v = V.get(R50, num_classes=10)
    params = load_weights(v, path, dialect="keras-hub")
    x = np.random.default_rng(1).standard_normal((2, 64, 80, 3)).astype(np.float32)
    _close(np.asarray(clf(x, training=False)), _equiv_torch(v, params, x))


def test_keras_hubs_own_backbone_file_round_trips_through_torchvision(tmp_path):
    """keras-hub's ResNetBackbone.save_weights file -> equiv port (headless, keras-hub -> torchvision
    .pt) -> equiv port (torchvision -> keras-hub .weights.h5) -> keras-hub's ResNetBackbone.load_weights:
    every variable bit for bit; equiv torch module on the .pt against keras-hub's own forward."""
    bb = _backbone()
    _randomise(bb, seed=2)
    own = tmp_path / "backbone.weights.h5"
    bb.save_weights(str(own))
    v = _headless()
    pt, back = tmp_path / "backbone.pt", tmp_path / "back.weights.h5"
    port(v, own, pt, source_dialect="keras-hub", target_dialect="torchvision")
    port(v, pt, back, source_dialect="torchvision", target_dialect="keras-hub")
    fresh = _backbone()
    fresh.load_weights(str(back))  # keras-hub's own loader
    _weights_equal(bb, fresh)
    x = np.random.default_rng(3).standard_normal((2, 64, 64, 3)).astype(np.float32)
    _close(np.asarray(bb(x, training=False)), _equiv_torch(v, load_weights(v, pt, dialect="torchvision"), x))


@pytest.mark.slow
def test_keras_hub_classifier_written_by_equiv_loads_in_keras_hub(tmp_path):
    """(slow; the default run reads keras-hub's classifier file above and writes the backbone's) a
    classifier file through torchvision's names and back, loaded by ResNetImageClassifier.load_weights:
    every variable bit for bit."""
    clf = keras_hub.models.ResNetImageClassifier(backbone=_backbone(), num_classes=7, activation=None)
    _randomise(clf, seed=4)
    own, pt, back = tmp_path / "c.weights.h5", tmp_path / "c.pt", tmp_path / "back.weights.h5"
    clf.save_weights(str(own))
    v = V.get(R50, num_classes=7)
    port(v, own, pt, source_dialect="keras-hub", target_dialect="torchvision")
    port(v, pt, back, source_dialect="torchvision", target_dialect="keras-hub")
    fresh = keras_hub.models.ResNetImageClassifier(backbone=_backbone(), num_classes=7, activation=None)
    fresh.load_weights(str(back))
    _weights_equal(clf, fresh)
