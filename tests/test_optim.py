"""Optimizer objects (fastoptim.optim): the arena, steps against the dict API
and an independent float64 reference, learning-rate and hyperparameter changes,
state_dict, and the error contract of DESIGN.md (nothing modified on bad input).
Runs under whichever backend the suite was started with."""
import numpy as np
import pytest

import fastoptim as fo
import refimpl as ref
from _helpers import numpy_step
from fastoptim import optimizers as optim, schedules

try:
    from fastoptim import _core
except ImportError:
    _core = None

TOL = {np.float32: dict(rtol=2e-6, atol=2e-7), np.float64: dict(rtol=1e-13, atol=1e-15)}
SHAPES = {"W1": (5, 2), "b1": (5, 1), "W2": (3, 5), "b2": (3, 1), "W3": (1, 3), "b3": (1, 1)}
CLASSES = [fo.GD, fo.Momentum, fo.Adam]


def make(dtype=np.float64, shapes=SHAPES, seed=0, steps=6):
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    grads = [{"d" + k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
             for _ in range(steps)]
    return params, grads


def copy(d):
    return {k: np.array(a, copy=True) for k, a in d.items()}


def dict_api_run(cls, params, grads_seq, lrs, **hyper):
    """The same run with the course's dict API, on copies."""
    p = copy(params)
    v, s = fo.initialize_adam(p)
    for t, (g, lr) in enumerate(zip(grads_seq, lrs), start=1):
        if cls is fo.GD:
            fo.update_parameters_with_gd(p, g, lr)
        elif cls is fo.Momentum:
            fo.update_parameters_with_momentum(p, g, v, hyper.get("beta", 0.9), lr)
        else:
            fo.update_parameters_with_adam(p, g, v, s, t, lr, hyper.get("beta1", 0.9),
                                           hyper.get("beta2", 0.999), hyper.get("epsilon", 1e-8))
    state = {fo.GD: {}, fo.Momentum: {"v": v}, fo.Adam: {"v": v, "s": s}}[cls]
    return p, state


def reference_run(cls, params, grads_seq, lrs, **hyper):
    """The same run with refimpl's float64 formulas."""
    p = {k: ref.f64(a) for k, a in params.items()}
    m = {"d" + k: np.zeros(a.shape) for k, a in params.items()}
    v = {"d" + k: np.zeros(a.shape) for k, a in params.items()}
    for t, (g, lr) in enumerate(zip(grads_seq, lrs), start=1):
        for k in p:
            dk = "d" + k
            gk = ref.f64(g[dk])
            if cls is fo.GD:
                p[k] = ref.gd(p[k], gk, lr)
            elif cls is fo.Momentum:
                p[k], m[dk] = ref.momentum(p[k], gk, m[dk], hyper.get("beta", 0.9), lr)
            else:
                p[k], m[dk], v[dk] = ref.adam(p[k], gk, m[dk], v[dk], t, lr,
                                              hyper.get("beta1", 0.9), hyper.get("beta2", 0.999),
                                              hyper.get("epsilon", 1e-8))
    state = {fo.GD: {}, fo.Momentum: {"v": m}, fo.Adam: {"v": m, "s": v}}[cls]
    return p, state


def assert_bitwise(actual, expected, what=""):
    assert actual.keys() == expected.keys()
    for k in expected:
        np.testing.assert_array_equal(actual[k], expected[k], err_msg=f"{what}{k}", strict=True)


def assert_close(actual, expected, dtype, what=""):
    for k in expected:
        assert actual[k].dtype == dtype, k
        np.testing.assert_allclose(actual[k], expected[k], err_msg=f"{what}{k}", **TOL[dtype])


# --- the arena ----------------------------------------------------------------------

def test_arena_replaces_values_with_views_of_one_buffer_per_dtype():
    rng = np.random.default_rng(1)
    params = {
        "W1": rng.standard_normal((4, 3)),
        "F": np.asfortranarray(rng.standard_normal((3, 5)).astype(np.float32)),
        "strided": rng.standard_normal((6, 4))[::2, ::-1],
        "scalar": np.array(2.5),
        "empty": np.zeros((0, 3)),
        "b1": rng.standard_normal((4, 1)).astype(np.float32),
    }
    originals = dict(params)
    saved = copy(params)
    opt = fo.Adam(params)
    assert list(params) == list(saved)
    for k, a in params.items():
        assert a is not originals[k]
        assert a.shape == saved[k].shape and a.dtype == saved[k].dtype
        np.testing.assert_array_equal(a, saved[k], strict=True)
        assert a.flags.writeable and (a.flags.c_contiguous or a.flags.f_contiguous)
        if a.size:
            assert a.ctypes.data % 64 == 0, k
    assert params["F"].flags.f_contiguous and not params["F"].flags.c_contiguous
    assert params["W1"].flags.c_contiguous
    for dtype in (np.float32, np.float64):
        same = [a for a in params.values() if a.dtype == dtype]
        assert len({id(a.base) for a in same}) == 1, dtype
    assert not np.shares_memory(params["W1"], params["b1"])
    assert opt.arena is True
    assert all(params[k] is a for k, a in opt.parameters.items())
    # the state has matching layouts, zeroed
    for name in ("v", "s"):
        for k, a in opt.state[name].items():
            p = params[k[1:]]
            assert a.shape == p.shape and a.dtype == p.dtype
            assert a.flags.f_contiguous == p.flags.f_contiguous
            assert not np.any(a)


def test_arena_step_updates_the_views_not_the_original_arrays():
    params, grads = make()
    originals = dict(params)
    saved = copy(params)
    opt = fo.Adam(params)
    opt.step(grads[0])
    for k in params:
        np.testing.assert_array_equal(originals[k], saved[k])  # detached, untouched
        assert not np.array_equal(params[k], saved[k])


def test_arena_false_keeps_and_updates_the_users_arrays():
    params, grads = make()
    originals = dict(params)
    opt = fo.Adam(params, arena=False)
    opt.step(grads[0])
    assert all(params[k] is originals[k] for k in params)
    expected, _ = dict_api_run(fo.Adam, make()[0], grads[:1], [0.01])
    assert_bitwise(params, expected)
    assert opt.arena is False


# --- steps against the dict API and the reference -------------------------------------

@pytest.mark.parametrize("arena", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls", CLASSES)
def test_steps_equal_dict_api_and_reference(cls, dtype, arena):
    params, grads = make(dtype)
    start = copy(params)
    lrs = [0.01, 0.01, 0.003, 0.003, 0.02, 0.0]
    opt = cls(params, learning_rate=lrs[0], arena=arena)
    for g, lr in zip(grads, lrs):
        opt.learning_rate = lr
        opt.step(g)
    assert opt.t == len(grads)
    exp_p, exp_state = dict_api_run(cls, start, grads, lrs)
    assert_bitwise(params, exp_p)
    for name, d in exp_state.items():
        assert_bitwise(opt.state[name], d, what=f"{name}/")
    ref_p, ref_state = reference_run(cls, start, grads, lrs)
    assert_close(params, ref_p, dtype)
    for name, d in ref_state.items():
        assert_close(opt.state[name], d, dtype, what=f"{name}/")


@pytest.mark.parametrize("n", [1, 7, 16, 33, 8191, 8192, 70_001, 300_000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_sizes_around_vector_widths_and_thresholds(n, dtype):
    shapes = {"W": (n,), "b": (max(1, n // 3), 1)}
    params, grads = make(dtype, shapes, seed=n, steps=3)
    start = copy(params)
    opt = fo.Adam(params, learning_rate=0.003, beta1=0.8, beta2=0.99, epsilon=1e-6)
    for g in grads:
        opt.step(g)
    exp_p, exp_state = dict_api_run(fo.Adam, start, grads, [0.003] * 3, beta1=0.8, beta2=0.99,
                                    epsilon=1e-6)
    assert_bitwise(params, exp_p)
    assert_bitwise(opt.state["s"], exp_state["s"])
    ref_p, _ = reference_run(fo.Adam, start, grads, [0.003] * 3, beta1=0.8, beta2=0.99,
                             epsilon=1e-6)
    assert_close(params, ref_p, dtype)


def test_hyperparameters_can_change_between_steps():
    params, grads = make()
    start = copy(params)
    opt = fo.Adam(params)
    opt.step(grads[0])
    opt.beta1, opt.beta2, opt.epsilon = 0.5, 0.9, 1e-3
    opt.step(grads[1])
    p = copy(start)
    v, s = fo.initialize_adam(p)
    fo.update_parameters_with_adam(p, grads[0], v, s, 1)
    fo.update_parameters_with_adam(p, grads[1], v, s, 2, 0.01, 0.5, 0.9, 1e-3)
    assert_bitwise(params, p)
    mom_params, _ = make()
    mom = fo.Momentum(mom_params, beta=0.9)
    mom.step(grads[0])
    mom.beta = 0.0  # plain gradient descent from here on
    before = copy(mom_params)
    mom.step(grads[1])
    for k in mom_params:
        np.testing.assert_array_equal(mom_params[k], before[k] - 0.01 * grads[1]["d" + k])


def test_mixed_dtypes_one_group_each():
    p32, g32 = make(np.float32, {"W1": (4, 3), "b1": (4, 1)}, seed=3)
    p64, g64 = make(np.float64, {"W2": (2, 4), "b2": (2, 1)}, seed=4)
    params = {**p32, **p64}
    grads = [{**a, **b} for a, b in zip(g32, g64)]
    start = copy(params)
    opt = fo.Adam(params)
    for g in grads:
        opt.step(g)
    exp32, _ = dict_api_run(fo.Adam, {k: start[k] for k in p32}, g32, [0.01] * 6)
    exp64, _ = dict_api_run(fo.Adam, {k: start[k] for k in p64}, g64, [0.01] * 6)
    assert_bitwise(params, {**exp32, **exp64})


def test_float16_parameters_take_the_fallback():
    params, grads = make(np.float16, {"W": (3, 4)}, steps=3)
    start = copy(params)
    opt = fo.Momentum(params)
    for g in grads:
        opt.step(g)
    exp, _ = dict_api_run(fo.Momentum, start, grads, [0.01] * 3)
    assert_bitwise(params, exp)
    assert params["W"].dtype == np.float16


def unusual_grads(params, g):
    """Gradients the C path does not take: each must still give the dict API's result."""
    k0, k1 = list(params)[:2]
    yield "non-contiguous", {**g, "d" + k0: np.repeat(g["d" + k0], 2, axis=-1)[..., ::2]}
    yield "fortran", {**g, "d" + k0: np.asfortranarray(g["d" + k0])}
    yield "other dtype", {**g, "d" + k1: g["d" + k1].astype(np.float32)}


@pytest.mark.parametrize("case", ["non-contiguous", "fortran", "other dtype"])
@pytest.mark.filterwarnings("ignore::fastoptim.PerformanceWarning")  # NumPy's, on purpose
def test_unusual_gradients_give_the_dict_api_result(case):
    params, grads = make()
    start = copy(params)
    g = dict(unusual_grads(params, grads[0]))[case]
    opt = fo.Adam(params)
    opt.step(g)
    exp, _ = dict_api_run(fo.Adam, start, [g], [0.01])
    assert_bitwise(params, exp)


def test_gradient_that_is_its_parameter_equals_a_copy():
    params, _ = make()
    opt = fo.Adam(params)
    twin = copy(params)
    twin_opt = fo.Adam(twin)
    with numpy_step("shares memory with parameters["):
        opt.step({"d" + k: a for k, a in params.items()})  # aliases the arena
    twin_opt.step({"d" + k: a.copy(order="K") for k, a in twin.items()})
    assert_bitwise(params, twin)


def test_empty_dict_and_zero_size_arrays():
    opt = fo.Adam({})
    opt.step({})
    assert opt.t == 1
    params = {"W": np.zeros((0, 4)), "x": np.ones(())}
    opt = fo.Adam(params)
    opt.step({"dW": np.zeros((0, 4)), "dx": np.array(2.0)})
    exp, _ = dict_api_run(fo.Adam, {"W": np.zeros((0, 4)), "x": np.ones(())},
                          [{"dW": np.zeros((0, 4)), "dx": np.array(2.0)}], [0.01])
    assert_bitwise(params, exp)


@pytest.mark.skipif(_core is None or fo.BACKEND != "c", reason="compares the C plan with the fallback")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls", CLASSES)
def test_c_plan_and_fallback_agree_bitwise(cls, dtype):
    p_c, grads = make(dtype, {"W": (70, 33), "b": (70, 1)}, seed=9)
    p_f = copy(p_c)
    c, f = cls(p_c), cls(p_f)
    assert c._compiled
    f._unbind()  # every step through fastoptim._fallback
    assert not f._compiled
    for g in grads:
        c.step(g)
        f.step(g)
    assert_bitwise(p_c, p_f)
    for name in c.state:
        assert_bitwise(c.state[name], f.state[name])


# --- learning rates and schedules ---------------------------------------------------

def test_schedule_is_called_with_the_steps_taken():
    calls = []

    def schedule(step):
        calls.append(step)
        return 0.5 ** step

    params = {"W": np.zeros(3)}
    opt = fo.GD(params, learning_rate=schedule)
    assert opt.learning_rate is schedule
    for _ in range(4):
        before = params["W"].copy()
        opt.step({"dW": np.ones(3)})
        np.testing.assert_array_equal(before - params["W"], 0.5 ** calls[-1])
    assert calls == [0, 1, 2, 3]


def test_schedule_object_equals_dict_api_with_its_rates():
    params, grads = make()
    start = copy(params)
    sched = schedules.CosineDecay(0.01, decay_steps=5, warmup_steps=2)
    opt = fo.Adam(params, learning_rate=sched)
    for g in grads:
        opt.step(g)
    lrs = [sched(n) for n in range(len(grads))]
    exp, _ = dict_api_run(fo.Adam, start, grads, lrs)
    assert_bitwise(params, exp)
    opt.learning_rate = 0.5
    assert opt.learning_rate == 0.5


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "0.1", None])
def test_bad_schedule_value_raises_and_changes_nothing(bad):
    params, grads = make()
    opt = fo.Adam(params, learning_rate=lambda step: 0.01 if step < 1 else bad)
    opt.step(grads[0])
    before = copy(params), copy(opt.state["v"]), copy(opt.state["s"])
    with pytest.raises((TypeError, ValueError), match="schedule at step 1"):
        opt.step(grads[1])
    assert opt.t == 1
    for saved, now in zip(before, (params, opt.state["v"], opt.state["s"])):
        assert_bitwise(now, saved)


# --- errors: constructor -------------------------------------------------------------

def zero_stride(shape):
    row = np.zeros(shape[1])
    return np.lib.stride_tricks.as_strided(row, shape, (0, row.itemsize))


def readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


BAD_PARAMETERS = [
    ("int", lambda p: p.update(W2=p["W2"].astype(np.int64)), TypeError, r"parameters\['W2'\]"),
    ("complex", lambda p: p.update(W2=p["W2"].astype(complex)), TypeError, r"parameters\['W2'\]"),
    ("list", lambda p: p.update(W2=p["W2"].tolist()), TypeError, r"parameters\['W2'\]"),
    ("readonly", lambda p: p.update(W2=readonly(p["W2"])), ValueError, r"parameters\['W2'\].*read-only"),
    ("zero-stride", lambda p: p.update(W2=zero_stride(p["W2"].shape)), ValueError, r"parameters\['W2'\]"),
    ("overlap", lambda p: p.update(W2=p["W1"][:3, :1].T), ValueError, "share memory"),
    ("key", lambda p: p.update({3: np.zeros(2)}), TypeError, "keys must be str"),
]


@pytest.mark.parametrize("arena", [True, False])
@pytest.mark.parametrize("case", BAD_PARAMETERS, ids=[c[0] for c in BAD_PARAMETERS])
def test_constructor_rejects_bad_parameters_and_leaves_the_dict_alone(case, arena):
    _, mutate, exc, match = case
    params, _ = make(shapes={"W1": (4, 3), "b1": (4, 1), "W2": (2, 4)})
    mutate(params)
    values = dict(params)
    with pytest.raises(exc, match=match):
        fo.Adam(params, arena=arena)
    assert params.keys() == values.keys() and all(params[k] is values[k] for k in values)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(learning_rate=-1.0), ValueError, "learning_rate"),
    (dict(learning_rate=float("nan")), ValueError, "learning_rate"),
    (dict(learning_rate="0.1"), TypeError, "learning_rate"),
    (dict(beta1=1.0), ValueError, "beta1"),
    (dict(beta2=-0.1), ValueError, "beta2"),
    (dict(epsilon=float("nan")), ValueError, "epsilon"),
    (dict(epsilon=True), TypeError, "epsilon"),
    (dict(arena="yes"), TypeError, "arena"),
])
def test_constructor_rejects_bad_hyperparameters(kwargs, exc, match):
    params, _ = make()
    values = dict(params)
    with pytest.raises(exc, match=match):
        fo.Adam(params, **kwargs)
    assert all(params[k] is values[k] for k in values)


def test_constructor_rejects_non_dict():
    with pytest.raises(TypeError, match="parameters must be a dict"):
        fo.GD([np.zeros(3)])
    with pytest.raises(ValueError, match="beta"):
        fo.Momentum({"W": np.zeros(2)}, beta=1.5)


def test_hyperparameters_are_keyword_only():
    with pytest.raises(TypeError):
        fo.Momentum({"W": np.zeros(2)}, 0.01, 0.9)


@pytest.mark.parametrize("name,value,exc", [
    ("learning_rate", -0.5, ValueError), ("learning_rate", [0.1], TypeError),
    ("beta1", 1.0, ValueError), ("beta2", "x", TypeError), ("epsilon", -1.0, ValueError),
])
def test_bad_assignments_raise_and_keep_the_old_value(name, value, exc):
    opt = fo.Adam({"W": np.zeros(2)})
    old = getattr(opt, name)
    with pytest.raises(exc, match=name):
        setattr(opt, name, value)
    assert getattr(opt, name) == old
    with pytest.raises(AttributeError):
        opt.t = 5


# --- errors: step ----------------------------------------------------------------------

def bad_grads(g):
    """(id, mutated grads, exception, regex); the bad entry is in the last key."""
    last = "db3"
    yield "missing", {k: a for k, a in g.items() if k != last}, KeyError, "grads.*'db3'"
    yield "shape", {**g, last: np.zeros((2, 2))}, ValueError, r"grads\['db3'\].*\(2, 2\).*\(1, 1\)"
    yield "int", {**g, last: np.ones((1, 1), dtype=np.int32)}, TypeError, r"grads\['db3'\]"
    yield "list", {**g, last: [[1.0]]}, TypeError, r"grads\['db3'\]"
    yield "not-dict", list(g.values()), TypeError, "grads must be a dict"


@pytest.mark.parametrize("arena", [True, False])
@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("case", ["missing", "shape", "int", "list", "not-dict"])
def test_bad_step_raises_and_changes_nothing(case, cls, arena):
    params, grads = make()
    opt = cls(params, arena=arena)
    opt.step(grads[0])
    _, g, exc, match = next(c for c in bad_grads(grads[1]) if c[0] == case)
    before = copy(params), {n: copy(d) for n, d in opt.state.items()}
    with pytest.raises(exc, match=match):
        opt.step(g)
    assert opt.t == 1
    assert_bitwise(params, before[0])
    for n, d in opt.state.items():
        assert_bitwise(d, before[1][n])


# --- state_dict ------------------------------------------------------------------------

def trained(cls, dtype=np.float64, steps=3, **kw):
    params, grads = make(dtype)
    opt = cls(params, **kw)
    for g in grads[:steps]:
        opt.step(g)
    return params, opt, grads


@pytest.mark.parametrize("cls", CLASSES)
def test_state_dict_is_flat_copies_that_savez_stores(cls, tmp_path):
    params, opt, _ = trained(cls, learning_rate=0.02)
    sd = opt.state_dict()
    names = {fo.GD: [], fo.Momentum: ["v"], fo.Adam: ["v", "s"]}[cls]
    hyper = {fo.GD: [], fo.Momentum: ["beta"], fo.Adam: ["beta1", "beta2", "epsilon"]}[cls]
    expected = {"optimizer", "t", "learning_rate", *hyper}
    expected |= {f"{n}/d{k}" for n in names for k in params}
    assert set(sd) == expected
    assert sd["optimizer"] == cls.__name__ and sd["t"] == 3 and sd["learning_rate"] == 0.02
    for n in names:
        for dk, a in opt.state[n].items():
            np.testing.assert_array_equal(sd[f"{n}/{dk}"], a, strict=True)
            assert not np.shares_memory(sd[f"{n}/{dk}"], a)
    np.savez(tmp_path / "sd.npz", **sd)
    with np.load(tmp_path / "sd.npz", allow_pickle=False) as npz:
        fresh = cls(make()[0])
        fresh.load_state_dict(npz)
    assert fresh.t == 3 and fresh.learning_rate == 0.02
    for n in names:
        assert_bitwise(fresh.state[n], opt.state[n])


def test_load_state_dict_restores_hyperparameters_and_schedules():
    sched = schedules.StepDecay(0.1, step_size=2, gamma=0.5)
    _, opt, _ = trained(fo.Adam, learning_rate=sched, beta1=0.8, epsilon=1e-6)
    fresh = fo.Adam(make()[0])
    fresh.load_state_dict(opt.state_dict())
    assert fresh.learning_rate == sched and fresh.learning_rate is not sched
    assert (fresh.beta1, fresh.beta2, fresh.epsilon) == (0.8, 0.999, 1e-6)
    # a callable that is not one of fastoptim's schedules is not stored: the
    # loading optimizer keeps its own learning rate
    _, custom, _ = trained(fo.GD, learning_rate=lambda n: 0.1)
    assert not any(k.startswith("learning_rate") for k in custom.state_dict())
    target = fo.GD(make()[0], learning_rate=0.3)
    target.load_state_dict(custom.state_dict())
    assert target.learning_rate == 0.3 and target.t == 3


def mutate_sd(sd, case):
    sd = dict(sd)
    if case == "missing":
        del sd["s/db3"]
    elif case == "unexpected":
        sd["s/dW9"] = np.zeros(3)
    elif case == "shape":
        sd["s/db3"] = np.zeros((2, 1))
    elif case == "dtype":
        sd["s/db3"] = sd["s/db3"].astype(np.float32)
    elif case == "not-array":
        sd["s/db3"] = [[0.0]]
    elif case == "optimizer":
        sd["optimizer"] = "Momentum"
    elif case == "t-negative":
        sd["t"] = -1
    elif case == "t-float":
        sd["t"] = 2.5
    elif case == "beta":
        sd["beta2"] = 1.0
    elif case == "lr":
        sd["learning_rate"] = -1.0
    elif case == "schedule":
        del sd["learning_rate"]
        sd.update({"learning_rate/schedule": "Nope", "learning_rate/learning_rate0": 0.1})
    elif case == "not-dict":
        sd = list(sd.items())
    return sd


SD_CASES = [
    ("missing", KeyError, "'s/db3'"), ("unexpected", KeyError, "'s/dW9'"),
    ("shape", ValueError, r"s/db3.*\(2, 1\).*\(1, 1\)"), ("dtype", TypeError, "s/db3.*float32"),
    ("not-array", TypeError, "s/db3"), ("optimizer", ValueError, "Momentum"),
    ("t-negative", ValueError, "'t'"), ("t-float", TypeError, "'t'"), ("beta", ValueError, "beta2"),
    ("lr", ValueError, "learning_rate"), ("schedule", ValueError, "Nope"),
    ("not-dict", TypeError, "dict"),
]


@pytest.mark.parametrize("case,exc,match", SD_CASES, ids=[c[0] for c in SD_CASES])
def test_load_state_dict_checks_everything_before_writing(case, exc, match):
    _, source, _ = trained(fo.Adam, steps=4, learning_rate=0.05)
    params, target, _ = trained(fo.Adam, steps=2, beta2=0.99)
    before = copy(params), copy(target.state["v"]), copy(target.state["s"])
    with pytest.raises(exc, match=match):
        target.load_state_dict(mutate_sd(source.state_dict(), case))
    assert (target.t, target.learning_rate, target.beta2) == (2, 0.01, 0.99)
    for saved, now in zip(before, (params, target.state["v"], target.state["s"])):
        assert_bitwise(now, saved)


def test_resume_from_state_dict_is_bitwise():
    params, grads = make(np.float32, steps=20)
    start = copy(params)
    straight = fo.Adam(params, learning_rate=schedules.ExponentialDecay(0.01, 0.9))
    for g in grads:
        straight.step(g)
    first_params = copy(start)
    first = fo.Adam(first_params, learning_rate=schedules.ExponentialDecay(0.01, 0.9))
    for g in grads[:10]:
        first.step(g)
    sd = first.state_dict()
    resumed_params = copy(first_params)
    resumed = fo.Adam(resumed_params)  # defaults: the state dict restores the schedule
    resumed.load_state_dict(sd)
    for g in grads[10:]:
        resumed.step(g)
    assert resumed.t == 20
    assert_bitwise(resumed_params, params)
    for n in ("v", "s"):
        assert_bitwise(resumed.state[n], straight.state[n])


def test_repr_names_the_hyperparameters():
    text = repr(fo.Adam({"W": np.zeros(2)}, learning_rate=0.5))
    assert text.startswith("Adam(learning_rate=0.5, beta1=0.9, beta2=0.999, epsilon=1e-08")
    assert "t=0" in text and "arena=True" in text


def test_public_names():
    # the public classes are the family's, which add options to optim's
    assert issubclass(fo.Adam, optim.Adam) and issubclass(fo.GD, optim.GD)
    assert issubclass(fo.Momentum, optim.Momentum)
    for name in ("AdamW", "SGD", "RMSprop", "Adagrad", "Adamax", "NAdam", "RAdam", "Lion"):
        assert issubclass(getattr(fo, name), optim.Optimizer), name


@pytest.mark.skipif(fo.BACKEND != "c", reason="the C step releases the GIL")
def test_concurrent_steps_of_one_optimizer_are_refused_not_corrupting():
    """Two threads stepping one optimizer: each step either runs whole or
    raises RuntimeError (never a crash or a mixed update)."""
    import threading

    params, grads = make(np.float32, {"W": (1000, 1000)}, steps=1)
    start = copy(params)
    opt = fo.Adam(params)
    done, refused = [], []

    def work():
        for _ in range(15):
            try:
                opt.step(grads[0])
                done.append(1)
            except RuntimeError as exc:
                assert "two threads" in str(exc)
                refused.append(1)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(done) + len(refused) == 30 and opt.t == len(done)
    exp, _ = dict_api_run(fo.Adam, start, grads * len(done), [0.01] * len(done))
    assert_bitwise(params, exp)
