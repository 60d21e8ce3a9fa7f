import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# equiv's hypothesis profiles live in its pytest plugin: "ci" (derandomised, what CI runs),
# "dev" (the default here), "thorough" (nightly); choose with EQUIV_HYPOTHESIS_PROFILE.
os.environ.setdefault("EQUIV_HYPOTHESIS_PROFILE", "dev")

# Our own plugin, from this checkout. When equiv is installed its pytest11 entry point has the
# same name, so pytest registers the plugin once either way.
pytest_plugins = ["equiv.pytest_plugin", "pytester"]
