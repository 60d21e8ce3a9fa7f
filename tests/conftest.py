import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# equiv's hypothesis profiles live in its pytest plugin: "ci" (derandomised, what CI runs),
# "dev" (the default here), "thorough" (nightly); choose with EQUIV_HYPOTHESIS_PROFILE.
os.environ.setdefault("EQUIV_HYPOTHESIS_PROFILE", "dev")

# Under pytest-xdist (`pytest -n N`) each worker gets its share of the cores, before torch or
# TensorFlow start: N workers each spinning one thread per core wait on each other.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
if _workers:
    _share = str(max(1, (os.cpu_count() or 1) // _workers))
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(_var, _share)
    # numpy's BLAS (the float64 reference) may be loaded already, by the plugin: limit it where it is
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=int(_share), user_api="blas")

# As in the `equiv` command: what importing a framework made is frozen out of the garbage
# collector's scans, so that each model's release (frameworks.loaded) collects in milliseconds.
from equiv import frameworks  # noqa: E402

frameworks.FREEZE_IMPORTS = True

# Our own plugin, from this checkout. When equiv is installed its pytest11 entry point has the
# same name, so pytest registers the plugin once either way.
pytest_plugins = ["equiv.pytest_plugin", "pytester"]
