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
