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
    for _var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(_var, _share)

# Our own plugin, from this checkout. When equiv is installed its pytest11 entry point has the
# same name, so pytest registers the plugin once either way.
pytest_plugins = ["equiv.pytest_plugin", "pytester"]
