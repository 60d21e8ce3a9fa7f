"""Forward throughput of each framework's build of a variant (pytest-benchmark).

Not part of the default test run. Run, save and compare:

    .venv/bin/python -m pytest benchmarks --benchmark-autosave --benchmark-group-by=group,param:framework
    .venv/bin/python -m pytest benchmarks --benchmark-compare

Images per second and the fraction of the framework's own 4096x4096 matrix product are in
each benchmark's extra_info.
"""

from __future__ import annotations

import pytest

from equiv import canonical as C
from equiv import variants as V
from equiv import weights
from equiv.bench import matmul_gflops
from equiv.errors import FrameworkError
from equiv.frameworks import adapter

VARIANTS = ["torchvision/resnet50", "slim/resnet_v2_50"]
BATCH, SIZE = 16, 224


@pytest.fixture(scope="session")
def ceilings():
    return {}


def _ceiling(ceilings, fw, device):
    if (fw, device) not in ceilings:
        ceilings[(fw, device)] = matmul_gflops(fw, device=device)
    return ceilings[(fw, device)]


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("framework", ["slim", "keras", "torch"])
@pytest.mark.parametrize("name", VARIANTS)
def test_forward(benchmark, name, framework, device, ceilings):
    v = V.get(name)
    benchmark.group = name
    try:
        ad = adapter(framework)
        ceiling = _ceiling(ceilings, framework, device)
    except FrameworkError as e:
        pytest.skip(str(e))
    model = ad.build(v)
    ad.load_params(v, model, weights.random_params(v, 0))
    x = weights.random_input(v, BATCH, SIZE, SIZE)
    try:
        fn = ad.forward_fn(v, model, x, device=device)
    except FrameworkError as e:
        pytest.skip(str(e))
    fn()  # warm-up (graph compilation, caches)
    benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)
    seconds = benchmark.stats.stats.median
    gflops = C.flops(v, SIZE, SIZE) * BATCH / seconds / 1e9
    benchmark.extra_info.update(images_per_s=BATCH / seconds, gflops=gflops, matmul_ceiling_gflops=ceiling,
                                of_own_matmul=gflops / ceiling, batch=BATCH, input_size=SIZE, device=device)


@pytest.mark.parametrize("framework", ["torch"])  # a param of its own, for --benchmark-group-by=param:framework
@pytest.mark.parametrize("pool_padding", ["tf_same", "symmetric"])
def test_cost_of_emulating_tf_same_padding(benchmark, pool_padding, framework):
    """slim/resnet_v1_50 in PyTorch, whose max-pool pads TF's asymmetric way (an explicit
    F.pad), against the same network padding symmetrically (the pool's own argument): the
    emulation should cost under 5%. Compare the two medians in the `tf_same emulation` group."""
    v = V.get("slim/resnet_v1_50").replace(pool_padding=pool_padding)
    benchmark.group = "tf_same emulation (torch, slim/resnet_v1_50)"
    ad = adapter(framework)
    model = ad.build(v)
    ad.load_params(v, model, weights.random_params(V.get("slim/resnet_v1_50"), 0))
    fn = ad.forward_fn(v, model, weights.random_input(v, BATCH, SIZE, SIZE), channels_last=True)
    fn()
    benchmark.pedantic(fn, rounds=7, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(images_per_s=BATCH / benchmark.stats.stats.median, pool_padding=pool_padding)
