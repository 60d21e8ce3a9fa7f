"""`equiv bench` on a tiny input: the table is real and self-consistent, CUDA skips clearly."""

import subprocess
import sys

import pytest

from equiv.bench import bench, to_text
from equiv.errors import EquivError

# FLOPs (2 x multiply-adds) of resnet18 on one 32x32 image, counted by hand from torchvision's layers,
# not with equiv's formula: the stem 7x7/2 conv gives 16x16x64 from 3 channels, 2*256*49*3*64 = 4,816,896;
# the pool halves to 8x8; stage 1, four 3x3 convs 64->64 at 8x8, 4 * 2*64*9*64*64 = 18,874,368; stages 2-4
# each halve the size and double the width, so each costs the same: a strided 3x3 conv (2,359,296), three
# 3x3 convs at the new width (3 * 4,718,592) and a 1x1/2 projection (262,144), 16,777,216 per stage;
# fc 2*512*1000 = 1,024,000. 4,816,896 + 18,874,368 + 3 * 16,777,216 + 1,024,000 = 75,046,912.
RESNET18_FLOPS_32 = 75_046_912
# The ceilings' matrix product at a side these tests can afford (the command's 4096x4096 takes 10-20 s
# per engine here): the tests read the table's structure and arithmetic, not the machine's peak.
SMALL_MATMUL = 256


def test_bench_rows_are_self_consistent_and_flops_match_a_hand_count():
    r = bench("torchvision/resnet18", ("torch", "keras"), batches=(1, 2), input_size=(32, 32), repeats=1,
              matmul_n=SMALL_MATMUL)
    assert r.flops_per_image == RESNET18_FLOPS_32
    assert {(row.framework, row.batch) for row in r.rows} == {("torch", 1), ("torch", 2), ("keras", 1), ("keras", 2)}
    assert r.machine_ceiling_gflops == max(r.ceilings_gflops.values()) > 0
    for row in r.rows:
        assert row.images_per_s == pytest.approx(row.batch / row.seconds_per_batch) and row.images_per_s > 0
        # the achieved rate by its definition (plumbing: the figure is what the table says it is)
        assert row.gflops == pytest.approx(r.flops_per_image * row.batch / row.seconds_per_batch / 1e9)
        assert row.of_machine_ceiling <= row.of_framework_ceiling * (1 + 1e-9)
    assert "of machine ceiling" in to_text(r) and f"{SMALL_MATMUL}x{SMALL_MATMUL} matrix product" in to_text(r)
    assert r.settings["matmul_n"] == SMALL_MATMUL


def test_cuda_without_a_gpu_is_refused_with_the_reason():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(EquivError, match="nothing can run on cuda.*torch: no CUDA device"):
        bench("torchvision/resnet18", ("torch",), batches=(1,), input_size=(32, 32), device="cuda", repeats=1)
    r = subprocess.run([sys.executable, "-m", "equiv.cli", "bench", "torchvision/resnet18", "--device", "cuda",
                        "--frameworks", "torch", "-q"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "no CUDA device" in r.stderr and "Traceback" not in r.stderr


def test_half_types_are_torch_only_and_say_so():
    r = bench("torchvision/resnet18", ("torch", "slim"), batches=(1,), input_size=(32, 32), dtype="bfloat16",
              repeats=1, matmul_n=SMALL_MATMUL)
    assert [row.framework for row in r.rows] == ["torch"]
    assert "slim" in r.skipped


def test_best_checks_every_fast_path_against_the_plain_one(monkeypatch):
    from equiv.frameworks import torch as T

    plain_forward = T.forward_fn

    def forward_fn(*args, perturb=False, **kwargs):
        fn = plain_forward(*args, **kwargs)
        return (lambda: fn() * 1.01) if perturb else fn

    # a planted fast path that is 20x faster on paper and wrong by 1%: it must not be used
    monkeypatch.setattr(T, "forward_fn", forward_fn)
    monkeypatch.setattr(T, "FAST_PATHS", {"channels_last": {"channels_last": True},
                                          "jit_freeze": {"jit_freeze": True}, "perturbed": {"perturb": True}})
    r = bench("torchvision/resnet18", ("torch",), batches=(2,), input_size=(32, 32), best=True, repeats=1,
              matmul_n=SMALL_MATMUL)
    rows = {row.path: row for row in r.rows}
    assert set(rows) == {"plain", "channels_last", "jit_freeze", "perturbed"}
    assert rows["perturbed"].rel_error == pytest.approx(0.01, rel=1e-3) and not rows["perturbed"].used
    assert all(rows[p].used and rows[p].rel_error < 1e-5 for p in ("plain", "channels_last", "jit_freeze"))
    assert sum(row.best for row in r.rows) == 1 and not rows["perturbed"].best


def test_best_on_cpu_reports_cuda_only_paths_as_skipped():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from equiv.frameworks import torch as T

    r = bench("torchvision/resnet18", ("torch",), batches=(1,), input_size=(32, 32), paths=["tf32"], repeats=1,
              matmul_n=SMALL_MATMUL)
    assert r.skipped == {"torch:tf32": "TF32 is a CUDA mode"}
    assert [row.path for row in r.rows] == ["plain"] and "tf32" in T.FAST_PATHS


# VGG-16's FLOPs on one 32x32 image, counted by hand from torchvision's layers (2 x multiply-adds):
# block 1 at 32x32: 3->64 and 64->64 3x3 convs, 2*1024*9*(3*64 + 64*64) = 79,036,416; block 2 at 16x16:
# 2*256*9*(64*128 + 128*128) = 113,246,208; block 3 at 8x8: 2*64*9*(128*256 + 2*256*256) = 188,743,680;
# block 4 at 4x4: 2*16*9*(256*512 + 2*512*512) = 188,743,680; block 5 at 2x2: 2*4*9*3*512*512 = 56,623,104;
# the adaptive pool repeats the 1x1 map to 7x7, so fc6 is 2*25088*4096 = 205,520,896; fc7 2*4096*4096 =
# 33,554,432; fc8 2*4096*1000 = 8,192,000. Sum: 873,660,416.
VGG16_FLOPS_32 = 873_660_416


def test_vgg_flops_match_a_hand_count():
    from equiv import canonical as C
    from equiv.variants import get

    assert C.flops(get("torchvision/vgg16"), 32, 32) == VGG16_FLOPS_32


@pytest.mark.slow  # VGG-16's 138M seeded weights; the FLOP count above is the default run's check
def test_bench_runs_a_vgg():
    r = bench("torchvision/vgg16", ("torch",), batches=(1,), input_size=(32, 32), repeats=1, matmul_n=SMALL_MATMUL)
    assert r.flops_per_image == VGG16_FLOPS_32 and [row.path for row in r.rows] == ["plain"]


@pytest.mark.slow
def test_onnx_best_tries_its_levels_and_threads_and_says_why_cuda_paths_are_skipped():
    """Slow (15 s here under load; CI budget): in the default run tests/frameworks/test_onnx.py runs every
    onnx path's forward_fn against the plain one, and tests/test_cuda_script.py an onnx bench end to end."""
    pytest.importorskip("onnxruntime")
    r = bench("torchvision/resnet18", ("onnx",), batches=(2,), input_size=(32, 32), best=True, repeats=1,
              matmul_n=SMALL_MATMUL)
    paths = {row.path for row in r.rows}
    assert {"plain", "disable", "basic", "extended", "spin"} <= paths
    assert all(row.used for row in r.rows)  # every optimisation level and thread setting: the plain path's logits
    assert sum(row.best for row in r.rows) == 1
    for cuda_only in ("onnx:tf32", "onnx:fp16"):
        assert "CUDA path" in r.skipped[cuda_only]
    assert "physical_cores" in paths or "physical core" in r.skipped["onnx:physical_cores"]
    load = r.settings["load_average"]
    assert len(load["before"]) == len(load["after"]) == 3 and load["cpus"] >= 1
    assert "load average (1 min) before" in to_text(r)


def test_the_runs_own_threads_do_not_make_the_machine_busy():
    """The load average after a run counts the run's own threads: only what is left above them is other jobs."""
    from types import SimpleNamespace

    from equiv.bench import _busy

    def line(before, after, own):
        return _busy(SimpleNamespace(settings={"load_average": {"before": [before] * 3, "after": [after] * 3,
                                                                "cpus": 2, "own": own}}))
    assert line(0.5, 1.6, 1.7).endswith(": quiet")  # a 2-core run on a quiet 2-CPU machine
    assert "BUSY" in line(0.5, 3.6, 1.7)  # two more cores' worth of other jobs
    assert "BUSY" in line(2.0, 1.6, 1.7)  # busy before it started
    assert "kept 1.70 busy" in line(0.5, 1.6, 1.7)
