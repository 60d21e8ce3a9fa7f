"""tf_keras (Keras 2) model objects in `assert_equivalent` (issue 17, item 3: "tf_keras models are
accepted"): a `tf_keras.applications.ResNet50` read by its layer names, as keras.applications names
them, and run by tf_keras itself, tapped at its own layers' outputs.

Sides: "tf_keras" is tf_keras.applications.ResNet50(weights=None) built here, its weights drawn at
random; "keras/ResNet50 built in keras" is keras.applications.ResNet50 of Keras 3 (the variant's
native reference build) with the weights equiv read from the tf_keras model. (transformers' TF models,
TFResNetForImageClassification, are not tested: no installed transformers has them; 5.24.0 in the
torchvision stage's venv dropped TensorFlow, and the main venv has no transformers.)
"""

from __future__ import annotations

import numpy as np
import pytest

tf_keras = pytest.importorskip("tf_keras")

from equiv.testing import NotEquivalentError, assert_equivalent  # noqa: E402


@pytest.fixture(scope="module")
def tf_keras_resnet50():
    model = tf_keras.applications.ResNet50(weights=None, input_tensor=tf_keras.Input(shape=(None, None, 3)),
                                           classifier_activation=None)
    rng = np.random.default_rng(0)
    model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) if "variance" in w.name
                       else (rng.standard_normal(w.shape) * 0.05).astype(np.float32) for w in model.weights])
    return model


def test_a_tf_keras_model_is_compared_layer_by_layer(tf_keras_resnet50):
    """native=tf_keras.applications.ResNet50 (its own call) against keras/ResNet50 built in Keras 3
    (keras.applications) at every tap; then one planted fault in one conv's kernel is found at that conv."""
    report = assert_equivalent(tf_keras_resnet50, "keras/ResNet50", input_size=(45, 52))
    assert len(report.taps) > 50 and all(t.ok for t in report.taps)
    assert any("tf_keras" in n and "run by tf_keras itself" in n for n in report.notes)
    kernel = tf_keras_resnet50.get_layer("conv4_block2_2_conv").kernel
    kept = kernel.numpy()
    kernel.assign(kept * np.float32(1.01))
    try:
        with pytest.raises(NotEquivalentError, match="stage3/unit2/conv2"):
            # the variant side runs the faulty weights too: compare with the weights as they were
            assert_equivalent(tf_keras_resnet50, _keras3_resnet50(tf_keras_resnet50, kept), input_size=(45, 52))
    finally:
        kernel.assign(kept)


def _keras3_resnet50(model, kept):
    """keras.applications.ResNet50 of Keras 3 with the tf_keras model's weights as they were before the
    fault (set by position: both applications create their layers in the same order)."""
    import keras

    k3 = keras.applications.ResNet50(weights=None, input_tensor=keras.Input(shape=(None, None, 3)),
                                     classifier_activation=None)
    weights = [w.numpy() for w in model.weights]
    index = [w.name.rsplit(":", 1)[0] for w in model.weights].index("conv4_block2_2_conv/kernel")
    weights[index] = kept
    k3.set_weights(weights)
    return k3
