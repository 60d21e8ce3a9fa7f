"""Property test: random small variant descriptions, every convention field drawn; all three
frameworks and the numpy reference agree at every tap, and weight round trips are bit-exact."""

import numpy as np
from hypothesis import given, note
from hypothesis import strategies as st

from equiv import canonical as C
from equiv import compare
from equiv import reference as R
from equiv import strategies as es
from equiv import weights as W
from equiv.frameworks import FRAMEWORKS, adapter


@given(v=es.variants(), data=st.data(), seed=st.integers(0, 2**16))
def test_random_variants_agree_everywhere(v, data, seed):
    note(repr(v.conventions()))
    x = data.draw(es.inputs(v, max_side=C.min_input_size(v) + 9))
    note(f"input {x.shape}")
    params = W.random_params(v, seed)
    outputs = {"reference": R.forward(v, params, x)}
    exported = {}
    for fw in FRAMEWORKS:
        ad = adapter(fw)
        m = ad.build(v)
        ad.load_params(v, m, params)
        outputs[fw] = ad.run(v, m, x)
        exported[fw] = ad.export_params(v, m)
        if hasattr(m, "close"):
            m.close()
    results = compare.compare_taps(outputs, C.tap_names(v), compare.tap_tolerances(v),
                                   pairs=[("reference", fw) for fw in FRAMEWORKS]
                                   + [("slim", "keras"), ("slim", "torch"), ("keras", "torch")])
    first = compare.first_divergence(results)
    assert first is None, first
    for fw, params_back in exported.items():
        assert list(params_back) == list(params)
        for k in params:
            assert np.array_equal(params_back[k], params[k]), (fw, k)
