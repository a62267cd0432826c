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


# --- LAMB, Adafactor, Muon: what the database's configurations do not show --------------

import optimizer_db as db  # noqa: E402


def test_lamb_trust_ratio_is_one_for_zero_weights():
    """||W|| = 0 (zero-initialized biases): the ratio is 1, the step Adam's with
    epsilon 1e-6 (the first step moves each element by lr * g/(|g| + eps))."""
    import fastoptim as fam
    g = np.array([0.5, -2.0, 0.0, 4.0])
    p = {"b": np.zeros(4)}
    fam.LAMB(p, learning_rate=0.1, weight_decay=0.0).step({"db": g})
    np.testing.assert_allclose(p["b"], -0.1 * g / (np.abs(g) + 1e-6), rtol=1e-15)


def test_lamb_ratio_is_per_array():
    """Scaling one array scales its own step (the ratio grows with ||W||) and
    leaves the others' unchanged."""
    import fastoptim as fam
    params, grads = problem(np.float64, 2, steps=1)
    twice = {k: a * (2.0 if k == "W1" else 1.0) for k, a in params.items()}
    a = {k: v.copy(order="K") for k, v in params.items()}
    b = {k: v.copy(order="K") for k, v in twice.items()}
    fam.LAMB(a, weight_decay=0.0).step(grads[0])
    fam.LAMB(b, weight_decay=0.0).step(grads[0])
    np.testing.assert_allclose(b["W1"] - twice["W1"], 2.0 * (a["W1"] - params["W1"]), rtol=1e-12)
    np.testing.assert_allclose(b["W2"], a["W2"], rtol=1e-15)


def test_adafactor_state_of_a_matrix_is_its_rows_plus_columns():
    import fastoptim as fam
    opt = fam.Adafactor({"W": np.zeros((300, 200), np.float32), "b": np.zeros(300, np.float32),
                         "K": np.zeros((8, 3, 5, 5), np.float32)})
    sizes = {(name, k): a.size for name, d in opt.state.items() for k, a in d.items()}
    assert sizes == {("row_var", "dW"): 300, ("col_var", "dW"): 200, ("variance", "db"): 300,
                     ("row_var", "dK"): 8 * 3 * 5, ("col_var", "dK"): 8 * 3 * 5}
    assert opt.state["row_var"]["dW"].shape == (300, 1)
    assert opt.state["col_var"]["dK"].shape == (8, 3, 1, 5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_muon_conv_kernels_are_reshaped(dtype):
    """A conv kernel (out, in, kh, kw), which torch.optim.Muon refuses, takes
    Muon's step as the matrix (out, in*kh*kw), scaled by its shape: against the
    float64 reference."""
    import fastoptim as fam
    rng = np.random.default_rng(3)
    shapes = {"K": (8, 3, 3, 3), "W": (5, 4), "b": (5,)}
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    grads = [{"d" + k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
             for _ in range(STEPS)]
    case = db.Case("Muon-conv", "Muon", dict(learning_rate=0.02), None, None, "muon",
                   dict(lr=0.02, weight_decay=0.1, nesterov=True, match=False, maximize=False,
                        momentum=0.95, ns_steps=5, ns_eps=1e-7, beta1=0.9, beta2=0.999,
                        eps=1e-8, muon=lambda k: k in ("K", "W")))
    ref = db.Reference(case, params)
    ref.wd = {k: 0.1 for k in shapes}
    opt = fam.Muon(params, learning_rate=0.02)
    assert opt.muon_keys == ["K", "W"]
    for t, g in enumerate(grads, 1):
        opt.step(g)
        ref.step(g)
        for k in params:
            np.testing.assert_allclose(params[k], ref.p[k], **TOL[dtype],
                                       err_msg=f"{k} after step {t}")


def test_muon_mask():
    import fastoptim as fam
    params = db.params()
    assert fam.Muon(db.params()).muon_keys == ["W1", "W2"]
    assert fam.Muon(db.params(), muon_mask={"W1": True, "b1": False, "W2": False,
                                            "b2": False}).muon_keys == ["W1"]
    opt = fam.Muon(db.params(), muon_mask=lambda k: k == "W2")
    assert set(opt.state) == {"v", "s", "momentum_buffer"}
    assert set(opt.state["momentum_buffer"]) == {"dW2"} and set(opt.state["v"]) == {"dW1", "db1", "db2"}
    with pytest.raises(ValueError, match=r"parameters\['b3'\] of shape \(4,\)"):
        fam.Muon({"b3": np.zeros(4)}, muon_mask=lambda k: True)
    with pytest.raises(KeyError, match="muon_mask has no key 'b2'"):
        fam.Muon(params, muon_mask={"W1": True, "b1": False, "W2": True})
    with pytest.raises(TypeError, match=r"muon_mask\('W1'\)"):
        fam.Muon(params, muon_mask=lambda k: "yes")
