"""Fuzzing the compiled entry points: hostile calls of _core.update, grad_norm
and ceiling, and of the optimizer objects' compiled step, each against the NumPy
twin. The oracle: both raise the same error, or both succeed with the same bits
(NaN payloads aside); nothing crashes. Under tests/sanitize.sh (ASan + UBSan) a
bad read or write aborts the run. FASTOPTIM_EXAMPLES_SCALE sets the volume
(the campaign in the closing note of the issue ran with a scale of 200)."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastoptim
import optimizer_db as db
from _helpers import assert_same_bits, examples
from fastoptim import _fallback

core = pytest.importorskip("fastoptim._core", reason="fuzzes the compiled extension")
pytestmark = [
    pytest.mark.skipif(fastoptim.BACKEND != "c",
                       reason="compares the compiled backend with the NumPy twin"),
    # hostile calls and gradients take the NumPy path on purpose: their
    # PerformanceWarning is expected
    pytest.mark.filterwarnings("ignore::fastoptim.PerformanceWarning"),
]
SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=False)

RULES = list(_fallback.RULES)
JUNK = st.sampled_from([None, "x", b"x", [], {}, (), 1j, object(), np.float64(np.nan),
                        np.array([1.0, 2.0]), float("inf"), -1, 2**70, True])


def _scalar():
    return st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                     st.sampled_from([0.0, 0.5, 0.9, 0.999, 1.0, 1e-8, -0.1, 2.0]),
                     st.integers(-3, 3), JUNK)


@st.composite
def arrays(draw, shape, dtype):
    """An array of `shape` and `dtype`, in one of many layouts (some that the
    fast path refuses: strided, reversed, byte-swapped, misaligned, read-only)."""
    n = int(np.prod(shape)) if shape else 1
    data = draw(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32),
                         min_size=n, max_size=n))
    with np.errstate(all="ignore"):
        a = np.array(data, dtype=np.float64).reshape(shape)
        if np.dtype(dtype).kind in "iu":
            a = np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=-1.0).clip(-1e6, 1e6)
        a = np.array(a, dtype=dtype)
    layout = draw(st.sampled_from(["C", "F", "strided", "reversed", "swapped", "misaligned",
                                   "readonly", "C"]))
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "strided" and a.ndim:
        big = np.repeat(a.reshape(-1), 2).reshape(a.shape[:-1] + (2 * a.shape[-1],))
        return big[..., ::2]
    if layout == "reversed" and a.ndim:
        return a[::-1].copy()[::-1]
    if layout == "swapped" and a.dtype.itemsize > 1:
        return a.astype(a.dtype.newbyteorder())
    if layout == "misaligned" and a.dtype.itemsize > 1:
        raw = np.zeros(a.nbytes + 1, np.uint8)
        m = raw[1:].view(a.dtype).reshape(a.shape)
        m[...] = a
        return m
    if layout == "readonly":
        a.flags.writeable = False
    return a


@st.composite
def calls(draw):
    """(rule, parameters, grads, states, t, lr, hyper, kwargs) with a few things
    possibly wrong."""
    rule = draw(st.sampled_from(RULES + ["nope"]) if draw(st.integers(0, 30)) == 0
                else st.sampled_from(RULES))
    r = _fallback.RULES.get(rule, _fallback.RULES["adam"])
    dtype = draw(st.sampled_from([np.float32, np.float64, np.float32, np.float64, np.float16,
                                  np.int32, np.complex64]))
    nkeys = draw(st.integers(0, 3))
    params, grads = {}, {}
    shapes = []
    for i in range(nkeys):
        shape = tuple(draw(st.lists(st.integers(0, 5), min_size=0, max_size=3)))
        shapes.append(shape)
        params[f"W{i}"] = draw(arrays(shape, dtype))
        gshape = shape if draw(st.integers(0, 10)) else tuple(s + 1 for s in shape)
        grads[f"dW{i}"] = draw(arrays(gshape, draw(st.sampled_from([dtype, np.float64]))))
    flags = draw(st.sampled_from(list(r.valid_flags) + [-1, 64, 2**31, 3, 7]))
    states = []
    for name, need in zip(r.states, r.state_flags):
        present = not need or (isinstance(flags, int) and flags >= 0 and bool(flags & need))
        if draw(st.integers(0, 20)) == 0:
            present = not present
        if present:
            states.append({f"dW{i}": draw(arrays(s, dtype)) for i, s in enumerate(shapes)})
        else:
            states.append(None)
    if draw(st.integers(0, 15)) == 0 and states and states[0] is not None and params:
        states[0]["dW0"] = params["W0"]  # a state that is its parameter
    if draw(st.integers(0, 15)) == 0 and params:
        grads["dW0"] = params["W0"]      # a gradient that is its parameter
    hyper = tuple(draw(_scalar()) if draw(st.integers(0, 6)) == 0 else
                  draw(st.sampled_from([0.0, 0.5, 0.9, 1e-8])) for _ in r.hyper)
    if draw(st.integers(0, 20)) == 0:
        hyper = hyper + (0.5,)
    scalars = tuple(draw(st.sampled_from([1.0, 0.5, 1.5, float("nan")])) for _ in r.scalars)
    t = draw(st.one_of(st.integers(-2, 5), st.sampled_from([2**62, 2**62 + 1, 2**70]), JUNK))
    lr = draw(_scalar())
    kwargs = dict(flags=flags, grad_scale=draw(_scalar()), scalars=scalars,
                  decay=draw(st.sampled_from([0, 256, 512, 768, -1])),
                  weight_decay=draw(st.one_of(_scalar(), st.just({f"W{i}": 0.1 for i in
                                                                   range(nkeys)}))))
    states = tuple(states) if draw(st.integers(0, 20)) else list(states)
    return rule, params, grads, states, t, lr, hyper, kwargs


def _copy(x, memo=None):
    """A deep copy that keeps which arrays are the same object (aliasing) and
    each array's layout and writeable flag."""
    memo = {} if memo is None else memo
    if isinstance(x, dict):
        return {k: _copy(v, memo) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(_copy(v, memo) for v in x)
    if isinstance(x, np.ndarray):
        if id(x) not in memo:
            c = x.copy(order="K")
            c.flags.writeable = x.flags.writeable
            memo[id(x)] = c
        return memo[id(x)]
    return x


def _run(fn, *args, **kwargs):
    try:
        return ("ok", fn(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 - the oracle compares what each raises
        return ("raised", type(exc), str(exc))


def _arrays_of(x):
    if isinstance(x, dict):
        for k in sorted(x, key=str):
            yield from _arrays_of(x[k])
    elif isinstance(x, (tuple, list)):
        for v in x:
            yield from _arrays_of(v)
    elif isinstance(x, np.ndarray):
        yield x


@settings(max_examples=examples(150), **SETTINGS)
@given(call=calls())
def test_update_against_the_twin(call):
    rule, params, grads, states, t, lr, hyper, kwargs = call
    twin = _copy((params, grads, states))
    got = _run(core.update, rule, params, grads, states, t, lr, hyper, **kwargs)
    want = _run(_fallback.update, rule, *twin, t, lr, hyper, **kwargs)
    if want[0] == "raised" or got[0] == "raised":
        assert got[:2] == want[:2] and got == want
    else:
        assert len(got[1]) == len(want[1])
        assert all(a == b or (a != a and b != b) for a, b in zip(got[1], want[1]))
    for a, b in zip(_arrays_of((params, grads, states)), _arrays_of(twin)):
        if a.dtype.kind == "f":
            assert_same_bits(a, b, rule)


@settings(max_examples=examples(100), **SETTINGS)
@given(call=calls())
def test_norm_and_ceiling_take_anything(call):
    _, params, grads, states, *_ = call
    got = _run(core.grad_norm, params, grads)
    want = _run(_fallback.grad_norm, *_copy((params, grads)))
    assert got[0] == want[0]
    if got[0] == "raised":
        assert got == want
    else:
        assert got[1][1] == want[1][1]
        assert got[1][0] == want[1][0] or (got[1][0] != got[1][0] and want[1][0] != want[1][0])
    present = [s for s in states if isinstance(s, dict)] if isinstance(states, (list, tuple)) \
        else []
    try:  # the ceiling takes the fast path's inputs only: a clean error otherwise
        core.ceiling(params, grads, *present[:3])
    except (ValueError, TypeError):
        pass


@settings(max_examples=examples(100), **SETTINGS)
@given(data=st.data())
def test_object_step_against_the_numpy_step(data):
    """Every optimizer of the test database, built on valid parameters, stepped
    with hostile gradients: the compiled step and the NumPy step agree."""
    info = data.draw(st.sampled_from(db.INFOS), label="optimizer")
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    shapes = data.draw(st.lists(st.lists(st.integers(0, 4), max_size=2).map(tuple),
                                min_size=1, max_size=3), label="shapes")
    params = {f"W{i}": np.array(np.arange(int(np.prod(s))).reshape(s) * 0.1, dtype=dtype)
              for i, s in enumerate(shapes)}
    clip = data.draw(st.sampled_from([None, 1e-3, 1.0]), label="max_grad_norm")
    skip = data.draw(st.booleans(), label="skip_nonfinite")
    a = info.make({k: v.copy() for k, v in params.items()}, max_grad_norm=clip,
                  skip_nonfinite=skip)
    b = info.make({k: v.copy() for k, v in params.items()}, max_grad_norm=clip,
                  skip_nonfinite=skip)
    b._unbind()
    for _ in range(data.draw(st.integers(1, 3), label="steps")):
        grads = {}
        for i, s in enumerate(shapes):
            g = data.draw(arrays(s, data.draw(st.sampled_from([dtype, np.float16, np.float64]))))
            grads[f"dW{i}"] = g
        if data.draw(st.integers(0, 10)) == 0:
            grads.pop("dW0")
        if data.draw(st.integers(0, 10)) == 0:
            grads["dW0"] = a.parameters["W0"]
            gb = dict(grads, dW0=b.parameters["W0"])
        else:
            gb = _copy(grads)
        got, want = _run(a.step, grads), _run(b.step, gb)
        assert got == want
        db.assert_same(db.snapshot(a, a.parameters), db.snapshot(b, b.parameters), info.name)
        assert (a.last_grad_norm == b.last_grad_norm
                or (a.last_grad_norm != a.last_grad_norm
                    and b.last_grad_norm != b.last_grad_norm))
