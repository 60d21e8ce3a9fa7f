"""equiv's pytest plugin, for users' own test suites (and ours).

Installed with equiv as the `pytest11` entry point `equiv.pytest_plugin`; a project that runs
from a checkout loads it with ``-p equiv.pytest_plugin`` or ``pytest_plugins = ["equiv.pytest_plugin"]``
in its root conftest. The entry point bears the module's own name so that both ways together
register it once, not twice.

It gives:

* fixtures `equiv_<backend>` for each registered backend (its library's module: `equiv_slim` gives
  tf_slim with equiv's fix for TF 2.21, `equiv_keras` keras, `equiv_torch` torch) and `equiv_framework`
  (each backend's name in turn),
  each skipping the test, with the reason, where the framework cannot be used;
* markers `cuda` (skipped unless PyTorch sees a CUDA GPU) and `slow` (for ``-m "not slow"``);
* ``--equiv-reports DIR``: the per-tap report (text, Markdown, JSON, PNG plot) of every test
  that fails an equiv comparison, named after the test;
* hypothesis profiles `equiv-ci`, `equiv-dev`, `equiv-thorough`, loaded when the environment
  variable EQUIV_HYPOTHESIS_PROFILE says ci, dev or thorough (and no --hypothesis-profile is given).

Importing this module imports no framework and not hypothesis: it costs a user's suite nothing
until a fixture or marker is used.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import os
import re
import sys

import pytest

from equiv.frameworks import FRAMEWORKS, REGISTRY, module

PROFILE_ENV = "EQUIV_HYPOTHESIS_PROFILE"
# name -> settings; "ci" is derandomised (the same cases every run) and small enough for CI.
PROFILES = {
    "ci": {"max_examples": 6, "derandomize": True, "database": None, "print_blob": True},
    "dev": {"max_examples": 12},
    "thorough": {"max_examples": 200},
}
REPORT_PROPERTY = "equiv_report"


def pytest_addoption(parser):
    group = parser.getgroup("equiv", "equiv: layer-by-layer equivalence")
    group.addoption("--equiv-reports", metavar="DIR", default=None,
                    help="write the per-tap report (text, Markdown, JSON, PNG plot) of every test that fails an "
                         "equiv comparison to DIR, named after the test")


@pytest.hookimpl(tryfirst=True)  # before hypothesis' own plugin loads a --hypothesis-profile equiv-*
def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU visible to PyTorch (skipped without one)")
    config.addinivalue_line("markers", "slow: a long run; deselect with -m 'not slow'")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
    _profiles(config)


def _profiles(config) -> None:
    """Register equiv's hypothesis profiles and load the one EQUIV_HYPOTHESIS_PROFILE names;
    hypothesis is imported only when either asks for one."""
    choice = os.environ.get(PROFILE_ENV, "")
    option = config.getoption("hypothesis_profile", None) or ""
    if not choice and not option.startswith("equiv-"):
        return
    name = choice.removeprefix("equiv-")
    if choice and name not in PROFILES:
        raise pytest.UsageError(f"{PROFILE_ENV}={choice!r}: choose one of {', '.join(PROFILES)}")
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:
        return  # no hypothesis, no property tests to configure
    slow_ok = [HealthCheck.too_slow, HealthCheck.data_too_large]
    for key, options in PROFILES.items():
        settings.register_profile(f"equiv-{key}", deadline=None, suppress_health_check=slow_ok, **options)
    if choice and not option:
        settings.load_profile(f"equiv-{name}")


# ---------------------------------------------------------------------------------------
# Fixtures and markers


def _usable(framework: str):
    why = module(framework).available()
    if why:
        pytest.skip(f"{framework} is not usable here: {why}")


def _library_fixture(name: str):
    library = REGISTRY[name].library

    @pytest.fixture(scope="session", name=f"equiv_{name}")
    def fixture():
        _usable(name)  # also puts equiv's fixes in place (tf_slim on TF 2.21) before the import
        return importlib.import_module(library)

    fixture.__doc__ = f"The {library} module; skips the test, with the reason, where {name} cannot be used."
    return fixture


# equiv_slim (tf_slim), equiv_keras, equiv_torch: one per registered backend
for _name in FRAMEWORKS:
    globals()[f"_equiv_{_name}"] = _library_fixture(_name)


@pytest.fixture(params=FRAMEWORKS)
def equiv_framework(request):
    """Each registered framework's name in turn (`equiv.frameworks.FRAMEWORKS`), skipped where not usable."""
    _usable(request.param)
    return request.param


@functools.cache
def _no_cuda() -> str | None:
    try:
        import torch
    except ImportError:
        return "needs CUDA: PyTorch is not installed, so no GPU can be seen"
    if not torch.cuda.is_available():
        return "needs CUDA: no CUDA GPU visible to PyTorch"
    return None


@pytest.fixture(autouse=True)
def _equiv_cuda_marker(request):
    """Skips a test marked `cuda` where no GPU is visible (a fixture, so the skip is reported
    at the test's own line)."""
    if request.node.get_closest_marker("cuda"):
        why = _no_cuda()
        if why:
            pytest.skip(why)


# ---------------------------------------------------------------------------------------
# Reports of failing comparisons


def _not_equivalent(exc) -> list:
    """The NotEquivalentErrors in `exc` (hypothesis may group several failures)."""
    testing = sys.modules.get("equiv.testing")
    if testing is None:  # never imported: nothing could have raised one
        return []
    if isinstance(exc, testing.NotEquivalentError):
        return [exc]
    if isinstance(exc, BaseExceptionGroup):
        return [e for sub in exc.exceptions for e in _not_equivalent(sub)]
    return []


def _stem(nodeid: str) -> str:
    """A file name for a test id: safe characters, bounded length, unique."""
    stem = re.sub(r"[^\w.-]+", "_", nodeid).strip("_")
    if len(stem) > 120:
        stem = stem[:100] + "-" + hashlib.sha1(nodeid.encode()).hexdigest()[:12]
    return stem


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    folder = item.config.getoption("equiv_reports")
    if folder and call.excinfo is not None and report.failed:
        from equiv.testing import write_reports

        # A test that fails several comparisons (hypothesis runs its minimal example last)
        # keeps the last one's report.
        for i, failure in enumerate(_not_equivalent(call.excinfo.value)):
            stem = _stem(item.nodeid) + (f"-{i + 1}" if i else "")
            paths = write_reports(failure.report, folder, stem)
            report.user_properties.append((REPORT_PROPERTY, str(paths[0])))
            report.sections.append(("equiv report", "\n".join(str(p) for p in paths)))
    return report


class _Summary:
    """Counts the reports written (in this process, or by xdist workers) for the summary."""

    def __init__(self):
        self.written = []

    def pytest_runtest_logreport(self, report):
        self.written += [v for k, v in report.user_properties if k == REPORT_PROPERTY]

    def pytest_terminal_summary(self, terminalreporter):
        if self.written:
            folder = os.path.dirname(self.written[0])
            terminalreporter.write_line(f"equiv: per-tap reports of {len(self.written)} failing comparison(s) "
                                        f"in {folder}")


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session):
    if session.config.getoption("equiv_reports"):
        session.config.pluginmanager.register(_Summary(), "equiv-summary")
