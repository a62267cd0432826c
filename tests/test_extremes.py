"""Extremes: byte offsets past 2**31 and 2**32, step counts up to and beyond
int64, subnormal and huge gradients, many keys. Results are checked against the
float64 reference of _helpers (tolerances documented there). The update over
more than 2**31 elements is in test_big.py (it needs 16 GiB)."""
import numpy as np
import pytest

import fastoptim
from _helpers import ADAM, GD, MOMENTUM, UPDATES, check_against_reference

# counts past 2**62 and views take the NumPy step on purpose: their
# PerformanceWarning is expected
pytestmark = pytest.mark.filterwarnings("ignore::fastoptim.PerformanceWarning")

ids = lambda u: u.name  # noqa: E731
GiB = 1 << 30

try:
    from numpy.lib.array_utils import byte_bounds
except ImportError:  # NumPy < 2.0
    from numpy import byte_bounds


def f64(d):
    return {k: np.array(a, np.float64) for k, a in d.items()}


def run_and_check(update, params, grads, states, hyper, context=""):
    """Run through the public API; compare every key with the reference."""
    dtype = next(iter(params.values())).dtype
    before = (f64(params), f64(grads), [f64(s) for s in states])
    update.call("public", params, grads, states, hyper)
    for k in params:
        b = (before[0][k], before[1]["d" + k], [s["d" + k] for s in before[2]])
        after = {"p": params[k], **{n: s["d" + k] for n, s in zip(update.states, states)}}
        check_against_reference(update, dtype, b, after, hyper, context=f"{context} key {k}")


# --- byte offsets past 2**31 and 2**32 (sparse memmap: no memory is used) ----------------

@pytest.fixture(scope="module")
def sparse(tmp_path_factory):
    """A 5 GiB float32 memmap, sparse on disk: only the pages written cost anything."""
    path = tmp_path_factory.mktemp("sparse") / "big.f32"
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=(5 * GiB // 4,))
    yield mm
    del mm


def _fill(view, rng, positive=False):
    vals = rng.standard_normal(view.shape).astype(view.dtype)
    view[...] = np.abs(vals) if positive else vals


def _views(mm, kind, n):
    """Four non-overlapping views (p, g, m, v) whose elements lie past 2**31 bytes."""
    e = 4  # bytes per element
    if kind == "contiguous across 2**31":
        starts = [2 * GiB // e - n // 2 + j * (GiB // 8) for j in range(4)]
        return [mm[s:s + n] for s in starts]
    if kind == "contiguous past 4 GiB":
        starts = [4 * GiB // e + 1 + j * (n + 2) for j in range(4)]
        return [mm[s:s + n] for s in starts]
    if kind == "stride 2**30 bytes":
        return [mm[2 * j + 7::GiB // e][:5] for j in range(4)]  # up to 4 GiB + 52 bytes
    if kind == "negative stride 2**29 bytes":
        return [mm[mm.size - 1 - 2 * j::-(GiB // 2 // e)][:9] for j in range(4)]
    if kind == "2-D rows 2**30 bytes apart":
        rows = mm[:4 * GiB // e].reshape(4, GiB // e)
        return [rows[:, 3 + 10 * j:10 + 10 * j] for j in range(4)]
    if kind == "2-D columns 2**28 bytes apart, across 2**31":
        base = mm[2 * GiB // e - 64:]
        return [np.lib.stride_tricks.as_strided(base[16 * j:], shape=(6, 3),
                                                strides=(e, GiB // 4)) for j in range(4)]
    raise ValueError(kind)


KINDS = ["contiguous across 2**31", "contiguous past 4 GiB", "stride 2**30 bytes",
         "negative stride 2**29 bytes", "2-D rows 2**30 bytes apart",
         "2-D columns 2**28 bytes apart, across 2**31"]


@pytest.mark.parametrize("update", UPDATES, ids=ids)
@pytest.mark.parametrize("kind", KINDS)
def test_views_past_2_31_bytes(sparse, kind, update):
    rng = np.random.default_rng(len(kind))
    p, g, m, v = _views(sparse, kind, 100)
    base = sparse.ctypes.data
    bounds = [byte_bounds(a) for a in (p, g, m, v)]
    assert max(hi for _, hi in bounds) - base > 2**31, "the views must reach past 2**31 bytes"
    for a, positive in ((p, False), (g, False), (m, False), (v, True)):
        _fill(a, rng, positive)
    states = [{"dW": m}, {"dW": v}][:len(update.states)]
    # the elements just outside each view must stay as they are
    edges = [i for lo, hi in bounds for i in ((lo - base) // 4 - 1, (hi - base) // 4)]
    saved = {i: sparse[i] for i in edges if 0 <= i < sparse.size}
    run_and_check(update, {"W": p}, {"dW": g}, states, update.default_hyper(), context=kind)
    for i, value in saved.items():
        assert sparse[i] == value


# --- step counts -----------------------------------------------------------------------

STEPS = [10**7, 2**31 - 1, 2**31, 2**31 + 1, 2**32 + 1, 2**53 + 1, 2**62, 2**62 + 1,
         2**63 - 1, 2**63, 2**64 + 1, 10**30, 10**400]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("t", STEPS, ids=lambda t: f"t=1e{len(str(t)) - 1}" if t > 2**64 else f"t={t}")
def test_adam_at_extreme_step_counts(t, dtype):
    """beta2 close to 1 keeps the bias correction away from 1 at t = 10**7, so
    a step count truncated to 32 bits or a power taken in float32 would show."""
    rng = np.random.default_rng(t % 1000)
    params = {"W": rng.standard_normal((4, 33)).astype(dtype)}
    grads = {"dW": rng.standard_normal((4, 33)).astype(dtype)}
    states = [{"dW": (0.1 * rng.standard_normal((4, 33))).astype(dtype)},
              {"dW": (0.01 * rng.random((4, 33))).astype(dtype)}]
    for beta2 in (0.999, 0.9999999, 1 - 1e-12):
        hyper = {"t": t, "lr": 0.01, "beta1": 0.9, "beta2": beta2, "eps": 1e-8}
        run_and_check(ADAM, params, grads, states, hyper, context=f"t={t} beta2={beta2}")
        assert all(np.isfinite(a).all() for a in (params["W"], *[s["dW"] for s in states]))


@pytest.mark.parametrize("t0", [2**31 - 1, 2**62 - 1, 2**63 + 7])
def test_optimizer_steps_across_extreme_counts(t0):
    """The optimizer object's counter crossing 2**31, int64's edge and beyond."""
    rng = np.random.default_rng(1)
    params = {"W": rng.standard_normal(50).astype(np.float32)}
    grads = {"dW": rng.standard_normal(50).astype(np.float32)}
    opt = fastoptim.Adam(params, 0.01, beta2=0.9999999)
    state = opt.state_dict()
    state["t"] = t0
    opt.load_state_dict(state)
    for step in (1, 2):
        before = (np.array(params["W"], np.float64), np.array(grads["dW"], np.float64),
                  [np.array(opt.state[n]["dW"], np.float64) for n in ("v", "s")])
        opt.step(grads)
        assert opt.t == t0 + step
        hyper = {"t": t0 + step, "lr": 0.01, "beta1": 0.9, "beta2": 0.9999999, "eps": 1e-8}
        after = {"p": params["W"], "v": opt.state["v"]["dW"], "s": opt.state["s"]["dW"]}
        check_against_reference(ADAM, np.float32, before, after, hyper, context=f"t={t0 + step}")


# --- subnormal and huge gradients --------------------------------------------------------

def _grads(dtype, magnitude, shape=(3, 37)):
    rng = np.random.default_rng(2)
    return (rng.choice([-1, 1], size=shape) * magnitude * rng.uniform(0.5, 2, shape)).astype(dtype)


@pytest.mark.parametrize("update", UPDATES, ids=ids)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_subnormal_gradients(update, dtype):
    """No NaN or Inf anywhere, the state keeps the subnormal value (a build that
    flushed subnormals to zero would leave it 0), results match the reference."""
    fi = np.finfo(dtype)
    g = _grads(dtype, float(fi.smallest_normal) / 64)
    assert (np.abs(g) < fi.smallest_normal).all() and (g != 0).all()
    params = {"W": np.zeros(g.shape, dtype), "b": np.ones(g.shape, dtype)}
    grads = {"dW": g, "db": g.copy()}
    states = [{"dW": np.zeros(g.shape, dtype), "db": np.zeros(g.shape, dtype)}
              for _ in update.states]
    hyper = update.default_hyper()
    run_and_check(update, params, grads, states, hyper, context="subnormal g")
    for d in [params, *states]:
        for a in d.values():
            assert np.isfinite(a).all()
    if update.states:
        assert (states[0]["dW"] != 0).all(), "a subnormal first moment was flushed to zero"
    assert (params["W"] != 0).all(), "the update of a zero parameter vanished"


@pytest.mark.parametrize("update", UPDATES, ids=ids)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("magnitude", [3e19, 1e30, "max"])
def test_huge_gradients(update, dtype, magnitude):
    """Never a NaN; parameters and first moments stay finite; the second moment
    is Inf only where its exact value exceeds the dtype's range (float32 and
    g = 1e30: (1-b2) g^2 = 1e57), never where it fits (g = 3e19: 9e35, which
    squaring g before scaling would overflow)."""
    big = float(np.finfo(dtype).max) if magnitude == "max" else magnitude
    g = _grads(dtype, big / 2 if magnitude == "max" else big)
    rng = np.random.default_rng(3)
    params = {"W": rng.standard_normal(g.shape).astype(dtype)}
    grads = {"dW": g}
    states = [{"dW": np.zeros(g.shape, dtype)} for _ in update.states]
    hyper = dict(update.default_hyper(), lr=1e-3)
    with np.errstate(over="ignore"):
        exact_v = 0.001 * np.asarray(g, np.float64) ** 2
    run_and_check(update, params, grads, states, hyper, context=f"|g| ~ {magnitude}")
    assert not np.isnan(params["W"]).any()
    assert np.isfinite(params["W"]).all()
    if update.states:
        assert np.isfinite(states[0]["dW"]).all()
    if update is ADAM:
        s = states[1]["dW"]
        overflows = exact_v > np.finfo(dtype).max
        assert (np.isinf(s) == overflows).all()
        assert not np.isnan(s).any()


# --- many keys, empty and 0-d ------------------------------------------------------------

@pytest.mark.parametrize("update", [GD, MOMENTUM, ADAM], ids=ids)
def test_ten_thousand_keys_of_every_small_shape(update):
    rng = np.random.default_rng(4)
    shapes = [(), (0,), (1,), (2, 0, 3), (3,), (17,), (2, 5)]
    params, grads = {}, {}
    for i in range(10_000):
        shape = shapes[i % len(shapes)]
        params[f"k{i}"] = np.asarray(rng.standard_normal(shape), np.float32)
        grads[f"dk{i}"] = np.asarray(rng.standard_normal(shape), np.float32)
    states = [{"d" + k: np.asarray(np.abs(rng.standard_normal(p.shape)), np.float32)
               for k, p in params.items()} for _ in update.states]
    run_and_check(update, params, grads, states, update.default_hyper(), context="10k keys")


@pytest.mark.parametrize("update", UPDATES, ids=ids)
def test_huge_and_tiny_learning_rates(update):
    """The largest finite learning rate is valid; 10**400 (an int whose float
    overflows) is an invalid learning rate, reported as such."""
    params = {"W": np.ones(5)}
    grads = {"dW": np.full(5, 1e-300)}
    states = [{"dW": np.zeros(5)} for _ in update.states]
    run_and_check(update, params, grads, states,
                  dict(update.default_hyper(), lr=float(np.finfo(np.float64).max)))
    with pytest.raises(ValueError, match="learning_rate"):
        update.call("public", params, grads, states, dict(update.default_hyper(), lr=10**400))


# The rules that take a step count: (rule, hyperparameters, state slots, flags, scalars)
FAMILY_T = {
    "adam-amsgrad": ("adam", (0.9, 0.999, 1e-8), 3, fastoptim._fallback.ADAM_AMSGRAD, ()),
    "nadam": ("nadam", (0.9, 0.999, 1e-8, 0.004), 2, 0, (1.0,)),
    "radam": ("radam", (0.9, 0.999, 1e-8), 2, 0, ()),
    "adamax": ("adamax", (0.9, 0.999, 1e-8), 2, 0, ()),
    "adagrad": ("adagrad", (0.1, 1e-10), 1, 0, ()),
    "sgd": ("sgd", (0.9, 0.0), 1, fastoptim._fallback.SGD_MOMENTUM
            | fastoptim._fallback.SGD_NESTEROV, ()),
}


@pytest.mark.parametrize("name", sorted(FAMILY_T))
def test_family_at_extreme_step_counts(name):
    """Finite updates at every step count; past 2**64 every beta**t is 0, so
    10**400 gives what 2**64 + 1 gives, bitwise."""
    update = fastoptim._backend.update
    rule, hyper, nslots, flags, scalars = FAMILY_T[name]
    results = {}
    for t in (10**7, 2**31 + 1, 2**62, 2**62 + 1, 2**63, 2**64 + 1, 10**400):
        rng = np.random.default_rng(0)
        P = {"W": rng.standard_normal(40)}
        G = {"dW": rng.standard_normal(40)}
        S = [{"dW": np.abs(rng.standard_normal(40))} for _ in range(nslots)]
        update(rule, P, G, tuple(S), t, 0.01, hyper, flags=flags, scalars=scalars)
        assert np.isfinite(P["W"]).all(), f"t={t}"
        assert all(np.isfinite(s["dW"]).all() for s in S), f"t={t}"
        results[t] = P["W"]
    np.testing.assert_array_equal(results[10**400], results[2**64 + 1])
    # the compiled path (t <= 2**62) and the fallback (beyond) agree across the edge
    np.testing.assert_allclose(results[2**62 + 1], results[2**62], rtol=1e-12)


# --- every optimizer of the test database ----------------------------------------------

import optimizer_db as db  # noqa: E402


CONFIGS = [c for info in db.INFOS for c in info.configs[:2]]


@pytest.mark.parametrize("t0", [2**31 - 1, 2**62 - 1, 2**63 + 7])
@pytest.mark.parametrize("case", CONFIGS, ids=repr)
def test_every_optimizer_steps_across_extreme_counts(case, t0):
    """An object whose counter crosses 2**31, int64's edge (the compiled step
    hands over to the NumPy step above 2**62) and beyond, against the float64
    reference of its rule at the same step counts."""
    params, grads = db.problem(np.float64, seed=3, steps=2)
    opt = case.make(params)
    ref = db.Reference(case, params)
    sd = opt.state_dict()
    sd["t"] = t0
    opt.load_state_dict(sd)
    ref.t = t0
    for g in grads:
        opt.step(g)
        ref.step(g)
        for k in params:
            assert np.isfinite(params[k]).all(), f"t={opt.t}"
            np.testing.assert_allclose(params[k], ref.p[k], rtol=1e-11, atol=1e-13,
                                       err_msg=f"{case.id} {k} at t={opt.t}")
    assert opt.t == t0 + 2


@pytest.mark.parametrize("case", CONFIGS, ids=repr)
def test_every_optimizer_steps_at_counts_past_float_range(case):
    """A count restored past float64's range (10**400) steps as one at 2**64 + 7
    does: every rule's count is capped at 2**64, where beta**t is long 0, and
    nothing converts the count itself to a float (Adafactor's phase did:
    OverflowError)."""
    runs = []
    for t0 in (2**64 + 7, 10**400):
        params, grads = db.problem(np.float64, seed=3, steps=2)
        opt = case.make(params)
        sd = opt.state_dict()
        sd["t"] = t0
        opt.load_state_dict(sd)
        for g in grads:
            opt.step(g)
        assert opt.t == t0 + 2
        runs.append(params)
    for k in runs[0]:
        assert np.isfinite(runs[1][k]).all(), k
        np.testing.assert_array_equal(runs[1][k], runs[0][k], err_msg=f"{case.id} {k}")


# --- NaN through a running maximum (test database: every state kept as a max) ---------

RUNNING_MAX = [(info, kwargs, name) for info in db.INFOS for kwargs, name in info.running_max]
RM_IDS = [f"{info.name}-{name}" for info, _, name in RUNNING_MAX]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("info,kwargs,name", RUNNING_MAX, ids=RM_IDS)
def test_nan_gradient_stays_in_a_running_maximum(info, kwargs, name, dtype):
    """Gradients [nan] then [1.0]: the maximum keeps the NaN (np.maximum's rule),
    it is not replaced by the finite newcomer."""
    params = {"W": np.zeros(1, dtype)}
    opt = info.cls(params, **kwargs)
    opt.step({"dW": np.array([np.nan], dtype)})
    assert np.isnan(opt.state[name]["dW"][0])
    opt.step({"dW": np.array([1.0], dtype)})
    assert np.isnan(opt.state[name]["dW"][0]), f"{info.name} {name} dropped the NaN"
    assert np.isnan(params["W"][0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("info,kwargs,name", RUNNING_MAX, ids=RM_IDS)
def test_nan_running_maximum_with_finite_state_stays(info, kwargs, name, dtype):
    """Only the maximum holds a NaN (every other state finite) and the gradient
    is finite: the NaN stays, whichever side of the comparison it is on."""
    params = {"W": np.zeros(1, dtype)}
    opt = info.cls(params, **kwargs)
    opt.step({"dW": np.array([0.5], dtype)})
    sd = opt.state_dict()
    sd[f"{name}/dW"] = np.array([np.nan], dtype)
    opt.load_state_dict(sd)
    opt.step({"dW": np.array([1.0], dtype)})
    assert np.isnan(opt.state[name]["dW"][0]), f"{info.name} {name} dropped the NaN"
    assert all(np.isfinite(d["dW"][0]) for n, d in opt.state.items() if n != name)
