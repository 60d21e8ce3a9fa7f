"""The PNG plot of a report: written, a real PNG of the size asked for, failures drawn in red."""

import struct
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.image import imread

import equiv
from equiv import compare
from equiv import reference as R
from equiv import weights as W
from equiv.compare import Report
from equiv.plot import FAIL_COLOR, write_plot

TINY = equiv.get("torchvision/resnet18").replace(name="tiny", widths=(4, 4, 8, 8), stem_width=4, num_classes=5)


def _report(other) -> Report:
    """TINY against `other` (same weights) in the float64 numpy reference: a real comparison."""
    params, x = W.random_params(TINY, 0), W.random_input(TINY, 1, 20, 19, 0)
    outputs = {"a": R.forward(TINY, params, x), "b": R.forward(other, params, x)}
    taps = list(outputs["a"])
    results = compare.compare_taps(outputs, taps, compare.tap_tolerances(TINY))
    return Report(kind="check", variant=TINY.name, frameworks=["a", "b"], settings={}, tolerance=1e-5, taps=results)


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _red_pixels(path) -> int:
    rgb = imread(path)[..., :3]
    red = np.array([int(FAIL_COLOR[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return int(np.all(np.abs(rgb - red) < 1e-3, axis=-1).sum())


def test_a_failing_report_plots_at_the_asked_size_with_its_failures_in_red(tmp_path):
    failing = _report(TINY.replace(bn_epsilon=1e-3))
    assert not failing.equivalent
    path = tmp_path / "fail.png"
    write_plot(failing, path)
    assert _png_size(path) == (1000, 450)  # 10 x 4.5 inches at 100 dpi
    assert imread(path).shape == (450, 1000, 4)
    assert _red_pixels(path) > 0
    small = tmp_path / "small.png"
    write_plot(failing, small, size=(6, 3), dpi=50)
    assert _png_size(small) == (300, 150)


def test_a_passing_report_has_no_red(tmp_path):
    passing = _report(TINY)
    assert passing.equivalent and passing.worst_rel == 0.0
    write_plot(passing, tmp_path / "pass.png")
    assert _png_size(tmp_path / "pass.png") == (1000, 450)
    assert _red_pixels(tmp_path / "pass.png") == 0


def _cli(*args, code=None):
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "equiv.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)


def test_diff_writes_the_plot(tmp_path):
    out = tmp_path / "d.png"
    r = _cli("diff", "torchvision/resnet18", "torchvision/resnet18", "--framework", "torch", "--input-size", "16", "16",
             "--batch", "1", "--plot", str(out))
    assert r.returncode == 0, r.stderr
    assert _png_size(out) == (1000, 450)


@pytest.mark.parametrize("command", [["check", "torchvision/resnet18", "--frameworks", "torch,keras"],
                                     ["diff", "torchvision/resnet18", "torchvision/resnet34"]])
def test_without_matplotlib_plot_is_refused_before_the_run(tmp_path, command):
    out = tmp_path / "p.png"
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from equiv.cli import main; sys.exit(main(sys.argv[1:]))")
    r = _cli(*command, "--plot", str(out), code=code)
    assert r.returncode == 2
    assert "--plot: plots need matplotlib" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()
