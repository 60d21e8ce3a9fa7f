"""Naming dialects chosen apart from the variant (issue 17): placement, files in a library's names,
detection from content, hints that load, the nearest three, the command line.

Sides, in each test: "equiv torch module" (equiv's generic build, the one the default suite holds to
the float64 reference) writes and reads every file here; the libraries' own loaders (timm,
transformers, torchvision) take them in tests/test_torchvision.py, in the torchvision stage, where
they import. The names a dialect expects are the builders' tables; that those are the libraries' own
names is checked there, against the libraries' real state_dicts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from equiv import dialects, files, reference, weights  # noqa: E402
from equiv import variants as V  # noqa: E402
from equiv.errors import EquivError, ParamMismatchError  # noqa: E402
from equiv.families.resnet.dialects import _same_function  # noqa: E402
from equiv.frameworks import adapter  # noqa: E402
from equiv.porting import detect, load_weights, port  # noqa: E402
from equiv.testing import assert_equivalent  # noqa: E402

R18 = "torchvision/resnet18"


def test_a_dialect_places_the_same_network_under_its_librarys_code():
    v = V.get("torchvision/resnet50")
    hf = v.in_dialect("hf")
    assert (hf.reference, hf.native, hf.dialect) == ("transformers.ResNetForImageClassification", "torch", "hf")
    assert hf.conventions() == v.conventions() and hf.reference_differences() == []
    assert V.get("torchvision/resnet50", dialect="timm").reference == "timm.models.resnet.resnet50"
    assert V.get("hf/resnet-50") == hf  # the old name: an alias of the one description
    assert "hf/resnet-50" not in V.names()
    assert hf.in_dialect("torchvision") == v  # back to its own library: the registered description
    with pytest.raises(EquivError, match="transformers' ResNetConfig has no groups"):
        V.get("torchvision/resnext50_32x4d", dialect="hf")
    with pytest.raises(EquivError, match="unknown dialect 'tf'.*knows torchvision, timm, hf, keras-hub"):
        V.get(R18, dialect="tf")
    assert dialects.names()[:6] == ["torchvision", "timm", "hf", "keras-hub", "keras", "slim"]


def test_a_changed_description_in_a_dialect_is_no_longer_its_librarys():
    hf = V.get("torchvision/resnet50", dialect="hf")
    assert hf.replace(bn_epsilon=1e-3).reference_differences() == ["bn_epsilon"]
    assert hf.replace(bn_epsilon=1e-3).built_by() == ""


@pytest.mark.parametrize("ours, theirs, same", [
    ("torchvision/resnet50", "keras_hub/resnet_50", True),  # projection and zero max-pool padding after a ReLU
    ("timm/resnetv2_50", "keras_hub/resnet_v2_50", True),  # a 1x1-conv head on the global mean
    ("torchvision/resnet50", "keras/ResNet50", False),
])
def test_same_function_is_what_the_float64_reference_computes(ours, theirs, same):
    """The rule that lets keras-hub's code stand for torchvision's ResNet-50 (and timm's v2) against
    the float64 reference of both descriptions with one set of weights (shortened to one unit per
    stage, at 37x45, so that it costs little): equal where the rule says so, different where not."""
    a, b = (V.get(n).replace(depths=(1, 1, 1, 1)) for n in (ours, theirs))
    assert _same_function(a, b) is same
    if not same:
        return
    params = weights.random_params(a, 0)
    x = weights.random_input(a, 2, 37, 45, 0)
    ra, rb = reference.forward(a, params, x), reference.forward(b, params, x)
    out = list(ra)[-1]
    assert np.array_equal(ra[out], rb[out])


def test_same_function_refuses_a_basic_block_with_first_unit_projections():
    a = V.get(R18)
    assert not _same_function(a, a.replace(projection="first_unit"))  # a projection where torchvision has none


@pytest.fixture(scope="module")
def r18(tmp_path_factory):
    """torchvision/resnet18's seeded weights, and the same in Hugging Face's names as a torch file
    (written by equiv's torch module, renamed by the dialect's table)."""
    folder = tmp_path_factory.mktemp("dialects")
    v = V.get(R18)
    params = weights.random_params(v, 0)
    hf = folder / "hf.pt"
    files.write(params, hf, v.in_dialect("hf"))
    return folder, v, params, hf


def test_a_file_in_hugging_faces_names_reads_as_the_network(r18):
    folder, v, params, hf = r18
    state = torch.load(hf, weights_only=True)
    assert "resnet.embedder.embedder.convolution.weight" in state and "classifier.1.weight" in state
    assert "resnet.encoder.stages.1.layers.0.shortcut.normalization.num_batches_tracked" in state
    back = load_weights(R18, hf, dialect="hf")
    assert all(np.array_equal(back[k], params[k]) for k in params)
    # Hugging Face's safetensors (its state_dict, torch layout) and the folder from_pretrained reads
    (folder / "hfdir").mkdir()
    port(R18, hf, folder / "hfdir" / "model.safetensors", source_dialect="hf", target_dialect="hf")
    config = json.loads((folder / "hfdir" / "config.json").read_text())
    assert (config["model_type"], config["layer_type"], config["depths"]) == ("resnet", "basic", [2, 2, 2, 2])
    back = load_weights(R18, folder / "hfdir" / "model.safetensors", dialect="hf")
    assert all(np.array_equal(back[k], params[k]) for k in params)


def test_detection_names_the_dialect_and_hints_only_what_loads(r18):
    folder, v, params, hf = r18
    found = detect(hf)
    assert found["dialects"] == ["hf"] and found["format"] == "torch"
    assert found["loads_as"] == [f"{R18} with `dialect='hf'`"]
    with pytest.raises(ParamMismatchError, match=r"the file looks like torchvision/resnet18 with `dialect='hf'`"):
        load_weights(R18, hf)
    with pytest.raises(ParamMismatchError, match=r"looks like torchvision/resnet18 with `dialect='hf'`"):
        load_weights("torchvision/resnet34", hf)
    # the hint, taken, loads (no circle)
    assert set(load_weights(R18, hf, dialect="hf")) == set(params)


def test_a_file_that_fits_nothing_names_the_three_nearest_and_what_differs(r18):
    folder, v, params, hf = r18
    state = torch.load(hf, weights_only=True)
    del state["resnet.embedder.embedder.convolution.weight"]
    state["classifier.1.weight"], state["classifier.1.bias"] = state["classifier.1.weight"][:2], state[
        "classifier.1.bias"][:2]
    bad = folder / "bad.pt"
    torch.save(state, bad)
    found = detect(bad)
    assert found["loads_as"] == [] and len(found["nearest"]) == 3
    assert found["nearest"][0].startswith(f"{R18} with `dialect='hf'`: 1 missing (stem/conv/kernel)")
    assert "2 classes, not 1000" in found["nearest"][0]
    with pytest.raises(ParamMismatchError, match="fits no registered variant in any dialect; nearest: "
                                                 "torchvision/resnet18 with `dialect='hf'`"):
        load_weights(R18, bad)


def test_variant_fields_carry_over_to_a_named_operand(r18):
    """A 2-class file against the named torchvision/resnet18: variant= gives the head size to both
    (equiv torch module on each side; the file read in Hugging Face's names)."""
    folder, v, params, hf = r18
    two = V.get(R18, num_classes=2)
    p2 = weights.random_params(two, 1)
    path = folder / "two.pt"
    files.write(p2, path, two.in_dialect("hf"))
    report = assert_equivalent(path, R18, variant=two, dialect="hf", input_size=(32, 32), taps="logits")
    assert report.equivalent and report.taps[-1].shape[-1] == 2


@pytest.mark.slow
def test_the_command_line_ports_between_dialects_and_refuses_in_one_line(r18, tmp_path):
    """Two processes of the command line (slow: their start-up is most of it; the default run holds the
    same port and hint through the API above, and test_cli the one-line, exit-2 contract)."""
    folder, v, params, hf = r18
    cmd = [sys.executable, "-c", "import sys; from equiv.cli import main; sys.exit(main())", "port", R18]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user runs it (test_cli)
    out = tmp_path / "timm.pt"
    done = subprocess.run(cmd + ["--from", str(hf), "--to", str(out), "--from-dialect", "hf", "--to-dialect",
                                 "timm", "-q"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    state = torch.load(out, weights_only=True)
    assert set(state) == set(adapter("torch").build(v).state_dict())  # timm's ResNet: torchvision's names
    wrong = tmp_path / "never.pt"
    done = subprocess.run(cmd + ["--from", str(hf), "--to", str(wrong), "-q"], capture_output=True, text=True, env=env)
    assert done.returncode == 2 and not wrong.exists()
    assert done.stderr.count("\n") == 1 and str(hf) in done.stderr
    assert "looks like torchvision/resnet18 with --from-dialect hf" in done.stderr
