"""Multi-step runs against the independent float64 reference (refimpl.py),
every element, for every size class, dtype and memory layout."""
import contextlib

import numpy as np
import pytest

import fastoptim as fo
import refimpl as ref
from _helpers import numpy_step

SIZES = list(range(1, 68)) + [100_003]
# float32 state and parameters carry rounding from every step; float64 nearly none.
TOL = {np.float32: dict(rtol=2e-6, atol=2e-7), np.float64: dict(rtol=1e-13, atol=1e-15)}
STEPS = 7


def make(shape, dtype, seed, layout="C"):
    """Parameters, gradients (one set per step) and nonzero state, in `layout`:
    "C", "F", "strided" (every other element of a bigger array), "reversed"
    (negative strides) or "mixed" (parameter C order, the rest Fortran)."""
    rng = np.random.default_rng(seed)

    def arr(scale=1.0, positive=False, which="p"):
        base = rng.standard_normal(shape) * scale
        if positive:
            base = np.abs(base)
        base = base.astype(dtype)
        if layout == "F" or (layout == "mixed" and which != "p"):
            return np.asfortranarray(base)
        if layout == "strided":
            big = np.zeros(tuple(2 * n for n in shape) or (), dtype)
            view = big[tuple(slice(None, None, 2) for _ in shape)]
            view[...] = base
            return view
        if layout == "reversed":
            rev = tuple(slice(None, None, -1) for _ in shape)
            return np.ascontiguousarray(base[rev])[rev]
        return np.ascontiguousarray(base)

    params = {"W": arr(), "b": arr(which="p")}
    grads = [{"dW": arr(0.5, which="g"), "db": arr(0.5, which="g")} for _ in range(STEPS)]
    m = {"dW": arr(0.1, which="m"), "db": arr(0.1, which="m")}
    v = {"dW": arr(0.05, positive=True, which="v"), "db": arr(0.05, positive=True, which="v")}
    return params, grads, m, v


def shapes_for(n):
    return [(n,), (1, n)] if n < 60 else [(n,)]


CASES = [(n, s) for n in SIZES for s in shapes_for(n)]


def check(actual, expected, dtype, what):
    assert actual.dtype == dtype
    np.testing.assert_allclose(actual, expected, err_msg=what, **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,shape", CASES, ids=[f"{n}-{len(s)}d" for n, s in CASES])
def test_adam_matches_reference(n, shape, dtype):
    params, grads, m, v = make(shape, dtype, seed=n)
    expected = {k: (ref.f64(params[k]), ref.f64(m["d" + k]), ref.f64(v["d" + k])) for k in params}
    for t in range(1, STEPS + 1):
        fo.update_parameters_with_adam(params, grads[t - 1], m, v, t, learning_rate=0.01)
        for k in params:
            expected[k] = ref.adam(*expected[k][:1], ref.f64(grads[t - 1]["d" + k]), *expected[k][1:], t=t, lr=0.01)
    for k in params:
        p_exp, m_exp, v_exp = expected[k]
        check(m["d" + k], m_exp, dtype, f"m[d{k}] n={n}")
        check(v["d" + k], v_exp, dtype, f"v[d{k}] n={n}")
        check(params[k], p_exp, dtype, f"{k} n={n}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100_003])
def test_momentum_and_gd_match_reference(n, dtype):
    params, grads, vel, _ = make((n,), dtype, seed=1000 + n)
    p_exp = {k: ref.f64(a) for k, a in params.items()}
    v_exp = {k: ref.f64(a) for k, a in vel.items()}
    for step in range(STEPS):
        fo.update_parameters_with_momentum(params, grads[step], vel, beta=0.9, learning_rate=0.05)
        for k in params:
            p_exp[k], v_exp["d" + k] = ref.momentum(p_exp[k], ref.f64(grads[step]["d" + k]), v_exp["d" + k], 0.9, 0.05)
    for step in range(STEPS):
        fo.update_parameters_with_gd(params, grads[step], learning_rate=0.03)
        for k in params:
            p_exp[k] = ref.gd(p_exp[k], ref.f64(grads[step]["d" + k]), 0.03)
    for k in params:
        check(vel["d" + k], v_exp["d" + k], dtype, f"v[d{k}]")
        check(params[k], p_exp[k], dtype, k)


@pytest.mark.parametrize("layout", ["F", "strided", "reversed", "mixed"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7, 5), (33, 17), (320, 350)])
def test_layouts_update_the_callers_arrays(layout, dtype, shape):
    params, grads, m, v = make(shape, dtype, seed=7, layout=layout)
    originals = {k: a for k, a in params.items()}
    expected = {k: (ref.f64(params[k]), ref.f64(m["d" + k]), ref.f64(v["d" + k])) for k in params}
    for t in range(1, STEPS + 1):
        # Fortran-ordered throughout takes the C path; the others are NumPy's
        with contextlib.nullcontext() if layout == "F" else numpy_step():
            fo.update_parameters_with_adam(params, grads[t - 1], m, v, t)
        for k in params:
            expected[k] = ref.adam(expected[k][0], ref.f64(grads[t - 1]["d" + k]), *expected[k][1:], t=t)
    for k in params:
        assert params[k] is originals[k]
        check(params[k], expected[k][0], dtype, f"{k} ({layout})")
        check(m["d" + k], expected[k][1], dtype, f"m[d{k}] ({layout})")
        check(v["d" + k], expected[k][2], dtype, f"v[d{k}] ({layout})")


def test_the_seeds_second_moment_slip_is_not_copied():
    # s = s + (1-beta2)*g**2 and s = beta2*s + (1-beta2)*g**2 agree on one step from
    # zero state; two steps tell them apart.
    p, g = {"W": np.array([1.0, -2.0])}, {"dW": np.array([0.3, -0.7])}
    v, s = fo.initialize_adam(p)
    fo.update_parameters_with_adam(p, g, v, s, 1)
    fo.update_parameters_with_adam(p, g, v, s, 2)
    np.testing.assert_allclose(s["dW"], (0.999 * 0.001 + 0.001) * np.square(g["dW"]), rtol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zero_size_and_0d(dtype):
    params = {"e": np.zeros((0, 3), dtype), "s": np.array(2.0, dtype)}
    grads = {"de": np.zeros((0, 3), dtype), "ds": np.array(0.5, dtype)}
    v, s = fo.initialize_adam(params)
    fo.update_parameters_with_adam(params, grads, v, s, 1, learning_rate=0.1)
    exp_p, exp_m, exp_v = ref.adam(2.0, 0.5, 0.0, 0.0, 1, lr=0.1)
    check(params["s"], exp_p, dtype, "0-d")
    assert params["e"].shape == (0, 3)
    assert fo.update_parameters_with_gd({}, {}, 0.1) == {}


@pytest.mark.filterwarnings("error")
def test_nan_and_inf_propagate_only_where_they_touch():
    p = {"W": np.ones(40, np.float32)}
    g = {"dW": np.full(40, 0.5, np.float32)}
    g["dW"][[3, 17, 33]] = [np.nan, np.inf, -np.inf]
    v, s = fo.initialize_adam(p)
    fo.update_parameters_with_adam(p, g, v, s, 1)
    bad = np.zeros(40, bool)
    bad[[3, 17, 33]] = True
    assert np.isnan(p["W"][bad]).all() and np.isfinite(p["W"][~bad]).all()
    assert np.isnan(v["dW"][3]) and np.isposinf(v["dW"][17]) and np.isneginf(v["dW"][33])
