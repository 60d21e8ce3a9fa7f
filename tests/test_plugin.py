"""The pytest plugin, used as users use it: pytester runs of their own test files.

In-process runs (`runpytest`) where the process can stay as it is; a subprocess only where a
framework must be missing from the start."""

import json
import os
import re
from pathlib import Path

import pytest
import torch
from hypothesis import settings

PLUGIN = ("-p", "equiv.pytest_plugin")
ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

TINY = """\
import equiv
from equiv.testing import assert_equivalent
from equiv.weights import random_params

TINY = equiv.get("torchvision/resnet18").replace(name="tiny18", widths=(8, 8, 16, 16), stem_width=8, num_classes=10)
"""


def test_a_passing_and_a_failing_comparison_with_their_reports(pytester):
    source = TINY + """
def test_same(equiv_torch):
    assert_equivalent(TINY, TINY, input_size=(16, 16), batch=1)

def test_drifted(equiv_torch):
    model = equiv.build(TINY, "torch", weights=random_params(TINY, 0))
    model.layer2[0].bn2.eps = 1e-3
    assert_equivalent(model, TINY, variant=TINY, input_size=(16, 16), batch=1)
"""
    call = "    assert_equivalent(model, TINY, variant=TINY, input_size=(16, 16), batch=1)"
    failing_line = source.splitlines().index(call)
    pytester.makepyfile(test_port=source)
    reports = pytester.path / "reports"
    result = pytester.runpytest(*PLUGIN, f"--equiv-reports={reports}")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "first diverging tap 'stage2/unit1/conv2'" in out
    assert re.search(r"worst element: index \(0, \d+, \d+, \d+\) of shape \(1, 2, 2, 8\)", out)
    assert "allowed: " in out and "stage2/unit1/conv2    │ 2x2x8" in out
    # the traceback ends at the user's line: equiv's frames are hidden
    assert f"test_port.py:{failing_line + 1}: NotEquivalentError" in out
    assert "equiv/testing.py" not in out and "_assert_equivalent" not in out
    # the failing test's reports, and none for the passing one
    stem = "test_port.py_test_drifted"
    assert sorted(p.name for p in reports.iterdir()) == [f"{stem}{s}" for s in (".json", ".md", ".png", ".txt")]
    data = json.loads((reports / f"{stem}.json").read_text())
    assert data["first_divergence"] == "stage2/unit1/conv2" and data["equivalent"] is False
    assert (reports / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "stage2/unit1/conv2" in (reports / f"{stem}.txt").read_text()
    assert f"equiv: per-tap reports of 1 failing comparison(s) in {reports}" in out


def test_fixtures_and_markers_skip_without_the_framework(pytester, monkeypatch):
    """A fresh process where torch, keras, TensorFlow and ONNX Runtime do not import."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    pytester.makeconftest("""
import sys
for name in ("torch", "keras", "tensorflow", "onnx", "onnxruntime"):
    sys.modules[name] = None  # import fails, as when not installed
""")
    pytester.makepyfile("""
import pytest

def test_torch(equiv_torch):
    pass

def test_keras(equiv_keras):
    pass

def test_each(equiv_framework):
    pass

@pytest.mark.cuda
def test_gpu():
    pass
""")
    result = pytester.runpytest_subprocess(*PLUGIN, "-rs")
    result.assert_outcomes(skipped=7)
    out = result.stdout.str()
    assert out.count("torch is not usable here: torch is not installed") == 2  # test_torch, test_each[torch]
    assert out.count("keras is not usable here: keras does not import") == 2
    assert "slim is not usable here" in out
    assert "onnx is not usable here: onnx and onnxruntime are needed" in out
    assert "needs CUDA: PyTorch is not installed" in out


def test_the_cuda_marker_follows_the_gpu(pytester):
    pytester.makepyfile("""
import pytest

@pytest.mark.cuda
def test_gpu():
    import torch
    assert torch.cuda.is_available()
""")
    result = pytester.runpytest(*PLUGIN, "-rs")
    if torch.cuda.is_available():
        result.assert_outcomes(passed=1)
    else:
        result.assert_outcomes(skipped=1)
        assert "needs CUDA: no CUDA GPU visible to PyTorch" in result.stdout.str()


def test_hypothesis_profiles_come_from_the_environment(pytester, monkeypatch):
    pytester.makepyfile("""
from hypothesis import settings

def test_profile():
    assert settings.get_current_profile_name() == "equiv-ci"
    assert settings.default.max_examples == 6 and settings.default.derandomize
""")
    pytester.makepyfile(test_option="""
from hypothesis import settings

def test_option_wins():
    assert settings.get_current_profile_name() == "equiv-thorough"
    assert settings.default.max_examples == 200
""")
    before = settings.get_current_profile_name()
    monkeypatch.setenv("EQUIV_HYPOTHESIS_PROFILE", "ci")
    try:
        pytester.runpytest(*PLUGIN, "test_hypothesis_profiles_come_from_the_environment.py").assert_outcomes(passed=1)
        pytester.runpytest(*PLUGIN, "--hypothesis-profile=equiv-thorough", "test_option.py").assert_outcomes(passed=1)
    finally:
        settings.load_profile(before)  # this process goes on with its own profile
    monkeypatch.setenv("EQUIV_HYPOTHESIS_PROFILE", "nightly")
    result = pytester.runpytest(*PLUGIN)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "EQUIV_HYPOTHESIS_PROFILE='nightly': choose one of ci, dev, thorough" in result.stderr.str()


def test_loaded_twice_it_is_registered_once(pytester):
    """As when the entry point is installed and a conftest names the module too."""
    pytester.makeconftest('pytest_plugins = ["equiv.pytest_plugin"]')
    pytester.makepyfile("def test_fixture_is_there(equiv_torch):\n    assert equiv_torch.__name__ == 'torch'\n")
    result = pytester.runpytest(*PLUGIN, "--equiv-reports=r")
    result.assert_outcomes(passed=1)


def test_the_guide_shows_the_example_file_and_the_example_passes(pytester):
    example = (DOCS / "example" / "test_my_port.py").read_text()
    guide = (DOCS / "testing.md").read_text()
    assert f"```python\n{example}```" in guide
    pytester.makepyfile(test_my_port=example)
    pytester.runpytest(*PLUGIN).assert_outcomes(passed=4)
