"""Atomicity: a call that raises has written nothing. For every public update
(the dict API through each backend, and the optimizer objects with and without
their arena) a bad entry in the LAST key, after large valid keys that alone
would take the C path, raises; parameters, state and the step counter are
bitwise unchanged; and the next valid call gives exactly what it would have
given without the failed one."""
import numpy as np
import pytest

import fastoptim
from _helpers import (ADAM, IMPLS, UPDATES, assert_same_bits, assert_unchanged, clone, problem,
                      snapshot)

ids = lambda u: u.name  # noqa: E731
SHAPES = [(300, 40), (9000,), (7, 3)]  # the first two exceed the GIL-release threshold
LAST = "W2"


def dict_call(update, dtype=np.float32, order="C", seed=0):
    return problem(update, SHAPES, dtype=dtype, seed=seed, order=order)


def _set_grad(value):
    def bad(params, grads, states):
        grads["d" + LAST] = value(params[LAST])
    return bad


def _set_state(index, value):
    def bad(params, grads, states):
        states[index % len(states)]["d" + LAST] = value(params[LAST], params)
    return bad


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def _zero_stride(a):
    return np.lib.stride_tricks.as_strided(a.copy(), strides=(0,) * a.ndim, writeable=True)


GRAD_ERRORS = {
    "grad missing": (lambda p, g, s: g.pop("d" + LAST), KeyError),
    "grad wrong shape": (_set_grad(lambda p: np.zeros(p.shape[::-1] + (2,), p.dtype)), ValueError),
    "grad int": (_set_grad(lambda p: np.ones(p.shape, np.int64)), TypeError),
    "grad complex": (_set_grad(lambda p: np.ones(p.shape, np.complex64)), TypeError),
    "grad bool": (_set_grad(lambda p: np.ones(p.shape, bool)), TypeError),
    "grad object": (_set_grad(lambda p: np.ones(p.shape, object)), TypeError),
    "grad list": (_set_grad(lambda p: p.tolist()), TypeError),
    "grad None": (_set_grad(lambda p: None), TypeError),
}
STATE_ERRORS = {
    "state missing": (lambda p, g, s: s[-1].pop("d" + LAST), KeyError),
    "state wrong shape": (_set_state(0, lambda a, p: np.zeros(a.size + 1, a.dtype)), ValueError),
    "state other dtype": (_set_state(-1, lambda a, p: a.astype(np.float64)), TypeError),
    "state read-only": (_set_state(0, lambda a, p: _readonly(a)), ValueError),
    "state zero strides": (_set_state(-1, lambda a, p: _zero_stride(a)), ValueError),
    "state is an earlier key's parameter":
        (_set_state(0, lambda a, p: p["W0"][:a.shape[0], :a.shape[1]]), ValueError),
    "state not an array": (_set_state(-1, lambda a, p: float(a.ravel()[0])), TypeError),
}
PARAM_ERRORS = {
    "parameter read-only": (lambda p, g, s: p.update({LAST: _readonly(p[LAST])}), ValueError),
    "parameter int": (lambda p, g, s: p.update({LAST: np.zeros(p[LAST].shape, int)}), TypeError),
    "parameter shares an earlier key's memory":
        (lambda p, g, s: p.update({LAST: p["W0"][:7, :3]}), ValueError),
}


def _cases():
    for name, (bad, exc) in {**GRAD_ERRORS, **PARAM_ERRORS, **STATE_ERRORS}.items():
        for u in UPDATES:
            if name in STATE_ERRORS and not u.states:
                continue
            yield pytest.param(u, bad, exc, id=f"{u.name}-{name}")


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("impl", IMPLS + ("public",))
@pytest.mark.parametrize("update, bad, exc", list(_cases()))
def test_dict_api_bad_last_key_writes_nothing(update, bad, exc, impl, order):
    params, grads, states = dict_call(update, order=order)
    bad(params, grads, states)
    saved = snapshot(params, grads, *states)
    with pytest.raises(exc):
        update.call(impl, params, grads, states, update.default_hyper())
    assert_unchanged(saved, params, grads, *states)


BAD_SCALARS = {"gd": [("lr", -0.1), ("lr", float("nan"))],
               "momentum": [("beta", 1.0), ("lr", float("inf"))],
               "adam": [("t", 0), ("t", 2.0), ("beta2", -0.5), ("eps", float("nan"))]}


@pytest.mark.parametrize("impl", IMPLS + ("public",))
@pytest.mark.parametrize("update", UPDATES, ids=ids)
def test_dict_api_bad_scalar_writes_nothing(update, impl):
    params, grads, states = dict_call(update)
    saved = snapshot(params, grads, *states)
    for name, value in BAD_SCALARS[update.name]:
        hyper = dict(update.default_hyper(), **{name: value})
        with pytest.raises((TypeError, ValueError)):
            update.call(impl, params, grads, states, hyper)
        assert_unchanged(saved, params, grads, *states)


@pytest.mark.parametrize("impl", IMPLS + ("public",))
@pytest.mark.parametrize("update", UPDATES, ids=ids)
def test_dict_api_after_a_failed_call_the_next_is_unaffected(update, impl):
    params, grads, states = dict_call(update)
    twin = clone(params), clone(grads), [clone(s) for s in states]
    good = grads["d" + LAST]
    grads["d" + LAST] = good.astype(np.int32)
    with pytest.raises(TypeError):
        update.call(impl, params, grads, states, update.default_hyper())
    grads["d" + LAST] = good
    update.call(impl, params, grads, states, update.default_hyper())
    update.call(impl, *twin, update.default_hyper())
    for k in params:
        assert_same_bits(params[k], twin[0][k], k)
    for s, ts in zip(states, twin[2]):
        for k in s:
            assert_same_bits(s[k], ts[k], k)


@pytest.mark.parametrize("impl", IMPLS + ("public",))
@pytest.mark.parametrize("update", UPDATES, ids=ids)
def test_floating_point_traps_do_not_interrupt_an_update(update, impl):
    """Under np.errstate(all="raise") an update whose values overflow or turn
    NaN neither raises half-way nor differs from the same update without traps
    (the C kernels never trap; the fallback must not either)."""
    params, grads, states = dict_call(update, dtype=np.float32)
    for k in grads:
        grads[k][..., :2] = [np.inf, 3e38]
        params[k[1:]][..., :1] = np.inf
    twin = clone(params), clone(grads), [clone(s) for s in states]
    with np.errstate(all="raise"):
        update.call(impl, params, grads, states, update.default_hyper())
    update.call(impl, *twin, update.default_hyper())
    for k in params:
        assert_same_bits(params[k], twin[0][k], k)


# --- optimizer objects (every optimizer of the test database) --------------------------

import optimizer_db as db  # noqa: E402


def _object_problem(dtypes):
    params, grads, _ = dict_call(ADAM)
    if dtypes == "mixed":  # one C call per dtype: the float64 group must not run first
        params[LAST] = params[LAST].astype(np.float64)
        grads["d" + LAST] = grads["d" + LAST].astype(np.float64)
    return params, grads


def optimizer_snapshot(opt):
    return (opt.t, opt.state_dict(), snapshot(opt.parameters, *opt.state.values()))


def assert_optimizer_unchanged(opt, saved):
    t, sd, shot = saved
    assert opt.t == t, "the step counter moved"
    assert_unchanged(shot, opt.parameters, *opt.state.values())
    now = opt.state_dict()
    assert {k: v for k, v in now.items() if not isinstance(v, np.ndarray)} == \
        {k: v for k, v in sd.items() if not isinstance(v, np.ndarray)}


@pytest.mark.parametrize("arena", [True, False])
@pytest.mark.parametrize("dtypes", ["f32", "mixed"])
@pytest.mark.parametrize("info", db.INFOS, ids=repr)
@pytest.mark.parametrize("case", sorted(GRAD_ERRORS))
def test_optimizer_bad_last_gradient_writes_nothing(case, info, dtypes, arena):
    params, grads = _object_problem(dtypes)
    opt = info.make(params, arena=arena, max_grad_norm=10.0)
    opt.step(grads)  # state is non-zero from here on
    bad, exc = GRAD_ERRORS[case]
    good = dict(grads)
    bad(params, grads, None)
    saved = optimizer_snapshot(opt)
    with pytest.raises(exc):
        opt.step(grads)
    assert_optimizer_unchanged(opt, saved)

    twin_params = {k: a.copy() for k, a in opt.parameters.items()}
    twin = info.make(twin_params, arena=arena, max_grad_norm=10.0)
    twin.load_state_dict(opt.state_dict())
    opt.step(good)
    twin.step(good)
    assert opt.t == twin.t == 2
    for k, a in opt.parameters.items():
        assert_same_bits(a, twin.parameters[k], k)


@pytest.mark.parametrize("info", db.INFOS, ids=repr)
def test_optimizer_bad_scheduled_learning_rate_writes_nothing(info):
    params, grads = _object_problem("f32")
    opt = info.make(params)
    opt.learning_rate = lambda t: 0.01 if t < 1 else float("nan")
    opt.step(grads)
    saved = optimizer_snapshot(opt)
    with pytest.raises(ValueError, match="step 1"):
        opt.step(grads)
    assert_optimizer_unchanged(opt, saved)


@pytest.mark.parametrize("info", db.INFOS, ids=repr)
def test_optimizer_grads_not_a_dict_writes_nothing(info):
    params, grads = _object_problem("f32")
    opt = info.make(params)
    saved = optimizer_snapshot(opt)
    for bad in (list(grads.values()), None, 3.0):
        with pytest.raises(TypeError):
            opt.step(bad)
        assert_optimizer_unchanged(opt, saved)


@pytest.mark.parametrize("info", db.INFOS, ids=repr)
def test_optimizer_bad_setting_changes_nothing(info):
    """A bad value assigned to any setting raises and keeps the old value."""
    params, grads = _object_problem("f32")
    opt = info.make(params)
    opt.step(grads)
    saved = optimizer_snapshot(opt)
    for key, values in info.all_bad_scalars().items():
        if key in ("t", "optimizer", "mu_product") or not hasattr(type(opt), key):
            continue
        for value in values:
            try:
                setattr(opt, key, value)
            except (TypeError, ValueError, AttributeError):
                pass
            else:
                raise AssertionError(f"{info.name}.{key} = {value!r} was accepted")
            assert_optimizer_unchanged(opt, saved)
