"""The command line, run as a user runs it: a real process, real exit codes."""

import json
import os
import subprocess
import sys

import pytest


def equiv(*args, timeout=600):
    # as a user runs it: a TF_CPP_MIN_LOG_LEVEL of the test session's own would be honoured as theirs
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-m", "equiv.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_variants_lists_the_registry():
    r = equiv("variants")
    assert r.returncode == 0, r.stderr
    for name in ("slim/resnet_v2_152", "keras/ResNet50V2", "torchvision/resnet18"):
        assert name in r.stdout
    assert "25,557,032" in r.stdout or "25,610,152" in r.stdout  # resnet50 counts, with or without statistics


def test_check_prints_the_per_tap_table_and_writes_json(tmp_path):
    out = tmp_path / "r.json"
    md = tmp_path / "r.md"
    r = equiv("check", "torchvision/resnet18", "--input-size", "33", "32", "--batch", "1",
              "--json", str(out), "--markdown", str(md))
    assert r.returncode == 0, r.stderr + r.stdout
    assert "stage4/unit2/conv2" in r.stdout and "EQUIVALENT" in r.stdout
    data = json.loads(out.read_text())
    assert data["equivalent"] is True and data["variant"] == "torchvision/resnet18"
    assert "| `logits` |" in md.read_text()


def test_diff_exits_1_and_names_the_stem_pool(tmp_path):
    out = tmp_path / "d.json"
    r = equiv("diff", "keras/ResNet50V2", "slim/resnet_v2_50", "--input-size", "32", "32", "--batch", "1",
              "--json", str(out))
    assert r.returncode == 1, r.stderr
    assert "first divergence at tap stem/pool" in r.stdout
    assert json.loads(out.read_text())["first_divergence"] == "stem/pool"


@pytest.mark.parametrize("args,message", [
    (["check", "slim/resnet_v2_5"], "did you mean"),
    (["check", "torchvision/resnet18", "--frameworks", "slim,caffe"], "unknown framework caffe"),
    (["check", "torchvision/resnet18", "--input-size", "0", "32"], "must be positive"),
    (["check", "torchvision/resnet18", "--input-size", "5000", "32"], "too large"),
    (["check", "torchvision/resnet18", "--input-size", "a", "1"], "not an integer"),
    (["check", "torchvision/resnet18", "--frameworks", "torch"], "at least two frameworks"),
    (["diff", "slim/resnet_v2_50", "torchvision/resnet18"], "do not fit"),
    (["check", "torchvision/resnet18", "--seed", "-1"], "argument --seed: must be a non-negative integer: -1"),
    (["port", "torchvision/resnet18", "--from", "/nonexistent.pt", "--to", "o.pt", "-v"],
     "/nonexistent.pt: no such file"),
])
def test_bad_input_exits_2_with_one_line_and_no_traceback(args, message):
    r = equiv(*args)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("equiv"), r.stderr  # nothing else on stderr


@pytest.mark.parametrize("command", ["check", "diff", "port", "run", "bench"])
def test_every_command_that_runs_a_framework_takes_verbose(command):
    r = equiv(command, "--help")
    assert r.returncode == 0 and "-v, --verbose" in r.stdout and "frameworks' own log lines" in r.stdout


@pytest.mark.parametrize("argv", [["port", "torchvision/resnet18", "--from", "e.onnx", "--to", "o.pt"],
                                  ["run", "torchvision/resnet18", "--weights", "e.onnx", "--framework", "torch",
                                   "--input", "x.npy", "--output", "o.npz"]], ids=["port", "run"])
def test_every_command_that_reads_an_exported_onnx_takes_unfold_bn(argv):
    """--unfold-bn wherever an exported .onnx can be read (port --from, run --weights), off by default, one
    help text (what it does for run: tests/test_onnx_export_port.py)."""
    from equiv.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(argv).unfold_bn is False
    assert parser.parse_args([*argv, "--unfold-bn"]).unfold_bn is True
    sub = next(a for a in parser._actions if a.dest == "command").choices[argv[0]]
    help_text = next(a.help for a in sub._actions if a.dest == "unfold_bn")
    assert "folded" in help_text and f"{'write' if argv[0] == 'port' else 'run'} each folded conv" in help_text


def test_api_errors_name_python_arguments_and_the_command_line_its_flags(capsys):
    """One message, two readers: `input_size=(5000, 32)` for a caller of equiv.check, and
    --input-size 5000 32 on the command line."""
    import pytest

    from equiv.checking import check
    from equiv.cli import as_flags, main
    from equiv.errors import EquivError

    with pytest.raises(EquivError, match=r"`input_size=\(5000, 32\)` is too large") as e:
        check("torchvision/resnet18", input_size=(5000, 32))
    assert main(["check", "torchvision/resnet18", "--input-size", "5000", "32", "-q"]) == 2
    assert capsys.readouterr().err == f"equiv: error: {as_flags(str(e.value))}\n"
    assert as_flags(str(e.value)).startswith("--input-size 5000 32 is too large")
    assert as_flags("pass `num_classes=10` `drop_background_class=True`; keep `other=1`") == \
        "pass --num-classes 10 --drop-background; keep `other=1`"


def test_check_strict_passes_where_every_tap_carries_information(tmp_path):
    """equiv's seeded weights carry information at every tap, so --strict changes nothing here; the
    table and the summary say so (the refusal itself: tests/test_testing.py, planted zero gammas)."""
    r = subprocess.run([sys.executable, "-m", "equiv.cli", "check", "torchvision/resnet18", "--frameworks",
                        "keras,torch", "--input-size", "32", "32", "--strict", "-q"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    from equiv import canonical as C
    from equiv import variants as V

    assert f"information: all {len(C.tap_names(V.get('torchvision/resnet18')))} taps carried information" in r.stdout


def test_the_installed_command_flushes_its_output_and_keeps_its_exit_code(tmp_path):
    """`equiv` (the console script, equiv.cli:run) leaves the process with os._exit after main():
    what main printed still arrives whole through a pipe (the same bytes as main() in a process that
    exits normally, both under one environment), and the exit codes are main's."""
    script = os.path.join(os.path.dirname(sys.executable), "equiv")
    if not os.path.exists(script):
        pytest.skip(f"no console script beside {sys.executable} (equiv not installed in this environment)")
    env = dict(os.environ, COLUMNS="160")
    plain = subprocess.run([sys.executable, "-c", "import sys; from equiv.cli import main; sys.exit(main())",
                            "variants"], capture_output=True, text=True, timeout=120, env=env)
    done = subprocess.run([script, "variants"], capture_output=True, text=True, timeout=120, env=env)
    assert plain.returncode == 0 and "registered variants" in plain.stdout
    assert (done.returncode, done.stdout) == (0, plain.stdout)
    bad = subprocess.run([script, "check", "slim/no_such_net"], capture_output=True, text=True, timeout=120, env=env)
    assert bad.returncode == 2 and "equiv: error:" in bad.stderr and "no_such_net" in bad.stderr
