"""Aliasing: gradients may share memory with anything (they are only read, and
the result must be as if they were a copy taken before the call); arrays that
are written (parameters, state) may not share memory with any other array of
the call, nor have elements that share memory (zero or overlapping strides):
ValueError naming the key, nothing modified. Every case runs through the
compiled module and the fallback, which make that decision separately."""
import numpy as np
import pytest

import optimizer_db as db
from _helpers import IMPLS, UPDATES, assert_same_bits, assert_unchanged, clone, problem, snapshot

# aliased arrays go to the NumPy step on purpose: their PerformanceWarning is expected
pytestmark = pytest.mark.filterwarnings("ignore::fastoptim.PerformanceWarning")

STATEFUL = [u for u in UPDATES if u.states]
DTYPES = [np.float32, np.float64]
ids = lambda u: u.name  # noqa: E731


def run(update, impl, params, grads, states):
    update.call(impl, params, grads, states, update.default_hyper())


def assert_same_result(update, a, b):
    (pa, _, sa), (pb, _, sb) = a, b
    for k in pa:
        assert_same_bits(pa[k], pb[k], f"parameters[{k!r}]")
    for name, da, db in zip(update.states, sa, sb):
        for k in da:
            assert_same_bits(da[k], db[k], f"{name}[{k!r}]")


def copies(call):
    params, grads, states = call
    return clone(params), clone(grads), [clone(s) for s in states]


# --- gradients that alias: same result as a copy ----------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("update", UPDATES, ids=ids)
@pytest.mark.parametrize("order", ["C", "F"])
def test_gradient_that_is_its_own_parameter(update, dtype, impl, order):
    params, grads, states = problem(update, [(5, 7), (70,)], dtype, seed=1, order=order)
    expected = copies((params, grads, states))
    grads["dW0"] = params["W0"]
    expected[1]["dW0"] = params["W0"].copy(order="K")
    run(update, impl, params, grads, states)
    run(update, impl, *expected)
    assert grads["dW0"] is params["W0"]
    assert_same_result(update, (params, grads, states), expected)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("update", STATEFUL, ids=ids)
def test_gradient_that_is_a_state_array(update, dtype, impl):
    params, grads, states = problem(update, [(6, 3), (33,)], dtype, seed=2)
    for si in range(len(update.states)):
        p, g, s = copies((params, grads, states))
        expected = copies((p, g, s))
        g["dW1"] = s[si]["dW1"]
        expected[1]["dW1"] = s[si]["dW1"].copy()
        run(update, impl, p, g, s)
        run(update, impl, *expected)
        assert_same_result(update, (p, g, s), expected)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("update", UPDATES, ids=ids)
def test_gradient_views_overlapping_parameters(update, dtype, impl):
    """Shifted, reversed and cross-key views of the parameters as gradients."""
    n = 100
    buf = np.random.default_rng(3).standard_normal(2 * n + 1).astype(dtype)
    params, grads, states = problem(update, [(n,), (n,)], dtype, seed=3)
    params["W0"] = buf[:n]
    params["W1"] = buf[n + 1:]
    grads["dW0"] = buf[1:n + 1]         # shifted by one element into W0 and past it
    grads["dW1"] = params["W0"][::-1]   # the other key's parameter, reversed
    expected = copies((params, grads, states))
    expected[0]["W0"], expected[0]["W1"] = buf[:n].copy(), buf[n + 1:].copy()
    run(update, impl, params, grads, states)
    run(update, impl, *expected)
    assert_same_result(update, (params, grads, states), expected)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("update", UPDATES, ids=ids)
def test_one_gradient_for_two_keys_and_broadcast_gradients(update, impl):
    """Read-only arrays may share memory with each other, and may have zero
    strides (np.broadcast_to)."""
    params, grads, states = problem(update, [(4, 5), (4, 5), (4, 5)], np.float64, seed=4)
    grads["dW1"] = grads["dW0"]
    grads["dW2"] = np.broadcast_to(np.float64(0.375), (4, 5))
    expected = copies((params, grads, states))
    expected[1]["dW2"] = np.full((4, 5), 0.375)
    run(update, impl, params, grads, states)
    run(update, impl, *expected)
    assert_same_result(update, (params, grads, states), expected)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("update", STATEFUL, ids=ids)
def test_interleaved_views_that_share_no_element_are_accepted(update, dtype, impl):
    """Byte ranges interleave but no element is shared: not an overlap."""
    n = 64
    k = 2 + len(update.states)
    buf = np.random.default_rng(5).standard_normal(k * n).astype(dtype)
    buf[2 * n:] = np.abs(buf[2 * n:])  # second moments >= 0
    params, grads, states = problem(update, [(n,)], dtype, seed=5)
    params["W0"] = buf[0::k]
    for j, s in enumerate(states):
        s["dW0"] = buf[2 + j::k]
    grads["dW0"] = buf[1::k]
    expected = copies((params, grads, states))
    run(update, impl, params, grads, states)
    run(update, impl, *expected)
    assert_same_result(update, (params, grads, states), expected)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("update", UPDATES, ids=ids)
def test_zero_size_arrays_never_conflict(update, impl):
    buf = np.zeros(4)
    params = {"W0": buf[1:1], "W1": np.ones(3)}
    grads = {"dW0": buf[1:1], "dW1": np.ones(3)}
    states = [{"dW0": buf[1:1], "dW1": np.zeros(3)} for _ in update.states]
    run(update, impl, params, grads, states)
    assert params["W0"].size == 0 and not np.array_equal(params["W1"], np.ones(3))


# --- written arrays that alias: ValueError naming the key, nothing modified ----------

def _state_is_other_state(p, g, s):
    s[1]["dW1"] = s[0]["dW1"]
    return "dW1"


def _state_is_parameter(p, g, s):
    s[0]["dW1"] = p["W1"]
    return "W1"


def _state_overlaps_parameter(p, g, s):
    buf = np.zeros(2 * p["W1"].size, p["W1"].dtype)
    p["W1"] = buf[:p["W1"].size].reshape(p["W1"].shape)
    s[0]["dW1"] = buf[3:3 + p["W1"].size].reshape(p["W1"].shape)
    return "W1"


def _state_overlaps_other_keys_parameter(p, g, s):
    s[-1]["dW1"] = p["W0"][:p["W1"].shape[0], :p["W1"].shape[1]]
    return "dW1"


def _state_reversed_view_of_parameter(p, g, s):
    s[0]["dW1"] = p["W1"][::-1, ::-1]
    return "W1"


def _two_parameters_one_array(p, g, s):
    p["W1"] = p["W0"][:p["W1"].shape[0], :p["W1"].shape[1]]
    return "W0"


def _parameter_zero_stride(p, g, s):
    p["W1"] = np.lib.stride_tricks.as_strided(np.zeros(1), shape=p["W1"].shape, strides=(0, 0),
                                              writeable=True)
    return "W1"


def _parameter_overlapping_strides(p, g, s):
    rows, cols = p["W1"].shape
    base = np.zeros(rows + cols)
    p["W1"] = np.lib.stride_tricks.as_strided(base, shape=(rows, cols), strides=(8, 8),
                                              writeable=True)
    return "W1"


def _state_zero_stride(p, g, s):
    s[-1]["dW1"] = np.lib.stride_tricks.as_strided(np.zeros(3), shape=p["W1"].shape,
                                                   strides=(0, 8), writeable=True)
    return "dW1"


WRITTEN_ALIASES = {
    "state_is_other_state": (_state_is_other_state, 2),
    "state_is_parameter": (_state_is_parameter, 1),
    "state_overlaps_parameter": (_state_overlaps_parameter, 1),
    "state_overlaps_other_keys_parameter": (_state_overlaps_other_keys_parameter, 1),
    "state_reversed_view_of_parameter": (_state_reversed_view_of_parameter, 1),
    "two_parameters_one_array": (_two_parameters_one_array, 0),
    "parameter_zero_stride": (_parameter_zero_stride, 0),
    "parameter_overlapping_strides": (_parameter_overlapping_strides, 0),
    "state_zero_stride": (_state_zero_stride, 1),
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "case, update",
    [(c, u) for c, (_, need) in WRITTEN_ALIASES.items() for u in UPDATES if len(u.states) >= need],
    ids=lambda x: x if isinstance(x, str) else x.name)
def test_written_arrays_that_share_memory_are_rejected(case, update, impl):
    make, _ = WRITTEN_ALIASES[case]
    params, grads, states = problem(update, [(6, 5), (4, 3), (3, 3)], np.float64, seed=6)
    names = make(params, grads, states)
    saved = snapshot(params, grads, *states)
    with pytest.raises(ValueError, match=names):
        run(update, impl, params, grads, states)
    assert_unchanged(saved, params, grads, *states)


@pytest.mark.parametrize("arena", [True, False])
@pytest.mark.parametrize("info", db.INFOS, ids=repr)
def test_optimizer_gradient_that_is_its_own_parameter_or_state(info, arena):
    """An optimizer step whose gradients are (views of) its own parameters or
    state arrays gives what copies of those gradients give."""
    rng = np.random.default_rng(8)
    shapes = [(30, 40), (9000,), (3,)]
    start = {f"W{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
    a = info.make({k: v.copy() for k, v in start.items()}, learning_rate=0.05, arena=arena,
                  max_grad_norm=100.0)
    b = info.make({k: v.copy() for k, v in start.items()}, learning_rate=0.05, arena=arena,
                  max_grad_norm=100.0)
    for step in range(3):
        pa = a.parameters
        state = next(iter(a.state.values()), None) if step == 2 else None
        aliased = {"dW0": pa["W0"], "dW1": pa["W1"][::-1],
                   "dW2": state["dW2"] if state is not None else pa["W2"]}
        copied = {k: np.array(g, copy=True) for k, g in aliased.items()}
        a.step(aliased)
        b.step(copied)
    for k in start:
        assert_same_bits(a.parameters[k], b.parameters[k], k)
    for name in a.state:
        for k in a.state[name]:
            assert_same_bits(a.state[name][k], b.state[name][k], f"{name}[{k}]")


@pytest.mark.parametrize("info", db.INFOS, ids=repr)
def test_gradient_owning_the_memory_its_parameter_views(info):
    """arena=False with a parameter that is a reversed view of an array given
    as its own gradient: the step reads the gradient as it was (a copy)."""
    buf = np.random.default_rng(3).standard_normal(40)
    twin = buf.copy()
    a = info.make({"W": buf[::-1]}, arena=False)
    b = info.make({"W": twin[::-1]}, arena=False)
    for _ in range(2):
        a.step({"dW": buf})
        b.step({"dW": twin.copy()})
    assert_same_bits(buf, twin, info.name)
