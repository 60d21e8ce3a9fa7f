import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from hypothesis import HealthCheck, settings  # noqa: E402

# Profiles: "ci" (fast, derandomised: the same cases every run), "dev" (the default locally),
# "thorough" (nightly). Choose with EQUIV_HYPOTHESIS_PROFILE.
_slow_ok = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("ci", max_examples=6, derandomize=True, deadline=None,
                          suppress_health_check=_slow_ok, print_blob=True)
settings.register_profile("dev", max_examples=12, deadline=None, suppress_health_check=_slow_ok)
settings.register_profile("thorough", max_examples=200, deadline=None, suppress_health_check=_slow_ok)
settings.load_profile(os.environ.get("EQUIV_HYPOTHESIS_PROFILE", "dev"))
