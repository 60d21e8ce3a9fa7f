"""pytest-benchmark set-up: framework versions, device and threads go into the saved machine info."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_benchmark_update_machine_info(config, machine_info):
    # imported so that their versions are recorded
    import keras  # noqa: F401
    import tensorflow  # noqa: F401
    import torch  # noqa: F401

    from equiv.bench import _versions

    machine_info["equiv"] = _versions()
