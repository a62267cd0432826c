"""A step that the compiled backend hands to NumPy says so: a
fastoptim.PerformanceWarning that names the array or argument and why, raised
at the caller's line; the result is the C path's, bitwise. The fast path, and
the NumPy backend (NumPy by choice), say nothing."""
import collections
import warnings

import numpy as np
import pytest

import fastoptim as fo
import optimizer_db as db
from _helpers import numpy_step

COMPILED = fo.BACKEND == "c"
SHAPES = {"W1": (6, 5), "b1": (6, 1), "W2": (3, 6)}


def problem(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}
    grads = {"d" + k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}
    return params, grads


def fortran(a):
    return np.asfortranarray(a)


def strided(a):
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    wide[..., ::2] = a
    return wide[..., ::2]


# (id, how the last gradient is made slow, the reason the message gives)
SLOW_GRADS = [
    ("fortran", fortran, "grads['dW2'] is Fortran-ordered and parameters['W2'] C-ordered"),
    ("strided", strided, "grads['dW2'] is not contiguous (a strided view)"),
    ("dtype", lambda a: a.astype(np.float64),
     "grads['dW2'] is float64 and parameters['W2'] float32"),
    ("swapped", lambda a: a.astype(a.dtype.newbyteorder()),
     "grads['dW2'] is byte-swapped (>f4)"),
]


@pytest.mark.parametrize("make", [m for _, m, _ in SLOW_GRADS], ids=[i for i, _, _ in SLOW_GRADS])
def test_course_adam_says_why_and_matches_the_fast_path(make):
    reason = next(r for _, m, r in SLOW_GRADS if m is make)
    params, grads = problem()
    v, s = fo.initialize_adam(params)
    fast = db.copy(params), db.copy(v), db.copy(s)
    fo.update_parameters_with_adam(fast[0], grads, fast[1], fast[2], 2, 0.01)
    slow_grads = dict(grads, dW2=make(grads["dW2"]))
    with numpy_step(reason) as record:
        fo.update_parameters_with_adam(params, slow_grads, v, s, 2, 0.01)
    if COMPILED:
        assert record[0].filename == __file__  # the caller's line, not fastoptim's
    for got, want in zip((params, v, s), fast):
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)


@pytest.mark.parametrize("make", [m for _, m, _ in SLOW_GRADS], ids=[i for i, _, _ in SLOW_GRADS])
def test_optimizer_step_says_why_and_matches_the_fast_path(make):
    reason = next(r for _, m, r in SLOW_GRADS if m is make)
    params, grads = problem()
    fast, slow = fo.AdamW(db.copy(params)), fo.AdamW(db.copy(params))
    fast.step(grads)
    with numpy_step(reason) as record:
        slow.step(dict(grads, dW2=make(grads["dW2"])))
    if COMPILED:
        assert record[0].filename == __file__
        assert str(record[0].message).startswith("AdamW.step() ran in NumPy, not in C")
    for k in params:
        np.testing.assert_array_equal(slow.parameters[k], fast.parameters[k], err_msg=k)
    assert slow.step(grads) and fast.step(grads)  # the next step is fast again, same result
    for k in params:
        np.testing.assert_array_equal(slow.parameters[k], fast.parameters[k], err_msg=k)


def test_gradient_that_is_a_parameter_is_named():
    params, grads = problem()
    opt = fo.Adam(params)
    with numpy_step("grads['dW2'] shares memory with parameters['W2'], which the step writes"):
        opt.step(dict(grads, dW2=opt.parameters["W2"]))
    p, g = problem()
    v, s = fo.initialize_adam(p)
    with numpy_step("grads['db1'] shares memory with v['db1'], which the step writes"):
        fo.update_parameters_with_adam(p, dict(g, db1=v["db1"]), v, s, 1)


def test_dict_subclass_and_mixed_dtypes_are_named():
    params, grads = problem()
    opt = fo.Adam(db.copy(params))
    with numpy_step("grads is of type OrderedDict, not dict"):
        opt.step(collections.OrderedDict(grads))
    p = dict(params, W2=params["W2"].astype(np.float64))
    g = dict(grads, dW2=grads["dW2"].astype(np.float64))
    with numpy_step("parameters['W2'] is float64 and parameters['W1'] float32 "
                    "(one call, one dtype)"):
        fo.update_parameters_with_gd(p, g, 0.1)


def test_parameters_the_kernel_cannot_take_are_named_at_every_step():
    params, grads = problem()
    params["W2"] = strided(params["W2"])
    opt = fo.SGD(params, learning_rate=0.1, arena=False)
    for _ in range(2):
        with numpy_step("parameters['W2'] is not contiguous (a strided view)"):
            opt.step(grads)


def test_the_fast_path_says_nothing():
    params, grads = problem()
    v, s = fo.initialize_adam(params)
    opt = fo.Adam(problem()[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fo.update_parameters_with_adam(params, grads, v, s, 1)
        fo.update_parameters_with_momentum(params, grads, v, 0.9, 0.1)
        opt.step(grads)
        # a column is C- and Fortran-ordered at once: it matches either layout
        opt.step(dict(grads, db1=fortran(grads["db1"])))
        assert opt._compiled == COMPILED


def test_counts_past_2_62_are_named():
    params, grads = problem(np.float64)
    opt = fo.Adam(params)
    state = opt.state_dict()
    state["t"] = 2**62
    opt.load_state_dict(state)
    with numpy_step("Adam.step() ran in NumPy, not in C, because the step count is past 2**62"):
        opt.step(grads)
    assert opt.t == 2**62 + 1


@pytest.mark.skipif(not COMPILED, reason="the compiled backend's warning")
def test_an_error_filter_refuses_the_step_and_changes_nothing():
    """Turned into an error, the warning comes before anything is written."""
    params, grads = problem()
    v, s = fo.initialize_adam(params)
    opt = fo.Adam(problem()[0])
    slow = dict(grads, dW2=fortran(grads["dW2"]))
    before = [db.copy(d) for d in (params, v, s, opt.parameters, *opt.state.values())]
    with warnings.catch_warnings():
        warnings.simplefilter("error", fo.PerformanceWarning)
        with pytest.raises(fo.PerformanceWarning, match="Fortran-ordered"):
            fo.update_parameters_with_adam(params, slow, v, s, 1)
        with pytest.raises(fo.PerformanceWarning, match="Fortran-ordered"):
            opt.step(slow)
    after = [db.copy(d) for d in (params, v, s, opt.parameters, *opt.state.values())]
    for b, a in zip(before, after):
        for k in b:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert opt.t == 0


def test_bad_input_raises_its_own_error_without_a_warning():
    """Invalid input is refused as before, with no PerformanceWarning first."""
    params, grads = problem()
    opt = fo.Adam(db.copy(params))
    with warnings.catch_warnings():
        warnings.simplefilter("error", fo.PerformanceWarning)
        with pytest.raises(KeyError, match="dW2"):
            opt.step({k: fortran(g) for k, g in grads.items() if k != "dW2"})
        v, s = fo.initialize_adam(params)
        with pytest.raises(ValueError, match="learning_rate"):
            fo.update_parameters_with_adam(params, dict(grads, dW2=fortran(grads["dW2"])),
                                           v, s, 1, learning_rate=-1.0)
