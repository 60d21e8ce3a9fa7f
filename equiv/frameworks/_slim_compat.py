"""Make tf_slim 1.1.0 (its last release) build on TensorFlow 2.21.

tf_slim's layers import `tf_keras.legacy_tf_layers`, which tf-keras now ships as
`tf_keras.src.legacy_tf_layers`. Upstream fixed this in its repository but never released
it (google-research/tf-slim issue 24). Aliasing the modules before tf_slim first builds a
layer is all it takes. Import this module before `tf_slim`.
"""

import importlib
import sys

_SUBMODULES = ("", ".base", ".convolutional", ".core", ".normalization", ".pooling", ".variable_scope_shim")


def install() -> None:
    for sub in _SUBMODULES:
        alias = "tf_keras.legacy_tf_layers" + sub
        if alias not in sys.modules:
            sys.modules[alias] = importlib.import_module("tf_keras.src.legacy_tf_layers" + sub)


install()
