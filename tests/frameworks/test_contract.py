"""The backend contract, checked on every registered backend (equiv.frameworks.base.Backend).

Each case builds one variant in one backend: a registered variant native there (the real
library's network: tf_slim.nets, keras.applications, the torchvision-layout module) and a tiny
description that no library ships (the backend's generic builder). The numpy reference is the
independent side of the tap comparison; the other checks hold the backend to its own contract.
"""

from __future__ import annotations

import numpy as np
import pytest

from equiv import canonical as C
from equiv import compare, reference, weights
from equiv.errors import ParamMismatchError
from equiv.frameworks import FRAMEWORKS, REGISTRY, adapter, backend_of, loaded, module
from equiv.frameworks.base import Backend
from equiv.variants import all_variants
from tests.contract import assert_exports_exactly
from tests.fuzzing import TINY

SIZE = 33  # odd: TF SAME pads differently on each side


def _variants(fw: str):
    """The smallest of the real library's registered variants native to `fw` (the seed's aside), if
    any (a new backend may have none yet), and TINY, which no library ships."""
    native = [v for v in all_variants() if v.native == fw and v.built_by() and not v.name.startswith("seed/")]
    # among the first-registered library's (the reference zoo's: keras.applications, not keras-hub)
    native = [v for v in native if v.framework == native[0].framework]
    native = [v for v in native if C.min_input_size(v) <= SIZE]  # what runs at SIZE (not Inception v3: 75)
    return [min(native, key=C.param_count), TINY] if native else [TINY]


CASES = [pytest.param((fw, v), id=f"{fw}-{v.name}") for fw in FRAMEWORKS for v in _variants(fw)]


@pytest.fixture(scope="module", params=CASES)
def case(request):
    fw, v = request.param
    ad = adapter(fw)
    params = weights.random_params(v, 0)
    with loaded(fw, v, params) as model:
        yield fw, ad, v, model, params


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_registered_module_follows_the_contract(fw):
    mod = module(fw)
    assert mod.__name__ == REGISTRY[fw].module
    assert isinstance(mod, Backend), [m for m in dir(Backend) if not m.startswith("_") and not hasattr(mod, m)]
    assert mod.available() is None
    versions = mod.versions()
    assert versions and all(isinstance(k, str) and isinstance(val, str) and val for k, val in versions.items())
    assert isinstance(mod.engine(), str) and mod.device_name("cpu") is None


def test_export_after_load_is_bit_exact(case):
    fw, ad, v, model, params = case
    assert_exports_exactly(v, ad.export_params(v, model), params, fw)


def test_load_is_strict_and_loads_nothing_on_refusal(case):
    fw, ad, v, model, params = case
    some = next(n for n in C.param_shapes(v) if n.endswith("/kernel"))  # the first conv's
    bad = {
        "missing": {k: a for k, a in params.items() if k != some},
        "unexpected": {**params, f"nowhere/{some}": params[some]},
        "mismatched": {**params, some: params[some][..., :-1]},
    }
    for attr, given in bad.items():
        with pytest.raises(ParamMismatchError) as info:
            ad.load_params(v, model, {**given, "logits/bias": given["logits/bias"] + 1} if attr != "missing"
                           else given)
        named = [m[0] if attr == "mismatched" else m for m in getattr(info.value, attr)]
        assert named == [some if attr != "unexpected" else f"nowhere/{some}"], (fw, attr)
    assert_exports_exactly(v, ad.export_params(v, model), params, f"{fw} after refusals")


def test_taps_match_the_numpy_reference(case):
    fw, ad, v, model, params = case
    x = weights.random_input(v, 2, SIZE, SIZE + 2)
    out = ad.run(v, model, x)
    assert list(out) == C.tap_names(v) and all(a.dtype == np.float32 for a in out.values())
    results = compare.compare_taps({"reference": reference.forward(v, params, x), fw: out}, C.tap_names(v),
                                   compare.tap_tolerances(v))
    first = compare.first_divergence(results)
    assert first is None, f"{fw} diverges from the numpy reference at {first.name}: {first.rel:.3g} > {first.tol:.3g}"


def test_names_are_one_to_one_and_the_models_own(case):
    fw, ad, v, model, params = case
    names = ad.framework_names(v)
    assert list(names) == list(C.param_shapes(v))
    assert len(set(names.values())) == len(names)
    assert set(names.values()) == ad.model_names(model)


def test_adopts_its_own_model(case):
    """A model object of this backend is recognised (by it alone), read and run as a user's model."""
    fw, ad, v, model, params = case
    assert backend_of(model) == fw
    assert [other for other in FRAMEWORKS if module(other).owns(model)] == [fw]
    adopted = ad.model_params(v, model)
    assert all(np.array_equal(adopted[k], params[k]) for k in params)
    run, taps, _ = ad.model_runner(v, model)
    x = weights.random_input(v, 1, SIZE, SIZE)
    wanted = taps or C.tap_names(v)
    got, direct = run(x, wanted), ad.run(v, model, x, wanted)
    assert all(np.array_equal(got[t], direct[t]) for t in wanted)


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_release_is_idempotent(fw):
    ad = adapter(fw)
    with loaded(fw, TINY) as model:
        pass
    ad.release(model)  # a second release (the context already made one) is harmless
    assert backend_of(object()) is None
