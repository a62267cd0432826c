"""The optimizer family against an independent float64 reference (optimizer_db.py:
the papers' and torch's documented rules, textbook order), 12 steps, every
element, every step. Runs in whichever backend the suite runs in."""
import numpy as np
import pytest

from optimizer_db import CASES, STEPS, Reference, problem

# float64: a few ulps of rearrangement per step; float32 against float64: the
# float32 rounding of a dozen steps of O(1) parameters.
TOL = {np.float64: dict(rtol=1e-11, atol=1e-13), np.float32: dict(rtol=2e-5, atol=2e-6)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_matches_reference(case, dtype):
    params, grads = problem(dtype, seed=hash(case.id) % 2**32)
    ref = Reference(case, params)
    opt = case.make(params)
    for t, g in enumerate(grads, 1):
        assert opt.step(g) is True
        ref.step(g)
        for k in params:
            assert params[k].dtype == dtype
            np.testing.assert_allclose(params[k], ref.p[k], **TOL[dtype],
                                       err_msg=f"{case.id} {k} after step {t}")
    assert opt.t == STEPS


def test_reference_detects_a_wrong_rule():
    """The comparison above can fail: Adam with L2 decay is not AdamW."""
    adamw = next(c for c in CASES if c.id == "AdamW-wd0.2-amsgrad")
    adam_l2 = next(c for c in CASES if c.id == "Adam-wd")
    params, grads = problem(np.float64, 0)
    ref = Reference(adam_l2, params)
    opt = adamw.make(params)
    for g in grads:
        opt.step(g)
        ref.step(g)
    assert not np.allclose(params["W1"], ref.p["W1"], **TOL[np.float64])


def test_lion_moves_each_element_by_exactly_lr():
    """Lion's update is a sign: without decay every element moves by exactly
    learning_rate (or 0 where the interpolation is 0), up to the rounding of p."""
    import fastoptim as fam
    params, grads = problem(np.float64, 3)
    before = {k: a.copy() for k, a in params.items()}
    opt = fam.Lion(params, learning_rate=0.25)
    opt.step(grads[0])
    for k in params:
        np.testing.assert_allclose(np.abs(params[k] - before[k]), 0.25, rtol=1e-12)


def test_lion_sign_of_zero_is_zero():
    """An element whose interpolation b1*v + (1-b1)*g is exactly 0 does not move."""
    import fastoptim as fam
    p = {"W": np.array([1.0, 2.0, 3.0, -4.0])}
    opt = fam.Lion(p, learning_rate=0.5)
    opt.step({"dW": np.array([0.0, -0.0, 1.0, -1.0])})
    np.testing.assert_array_equal(p["W"], [1.0, 2.0, 2.5, -3.5])
    np.testing.assert_array_equal(opt.state["v"]["dW"], [0.0, 0.0, 1 - 0.99, -(1 - 0.99)])
    # the sign and the zero test agree with the NaN rule: NaN stays where it is
    opt.step({"dW": np.array([np.nan, 0.0, 0.0, 0.0])})
    assert np.isnan(p["W"][0]) and not np.isnan(p["W"][1:]).any()
