"""Leaks: 10,000 steps change neither the reference counts of anything the
call touches (arrays, dicts, keys, scalar objects) nor the memory the process
holds. Memory is sampled every 500 steps; a leak grows it in every interval,
so the median growth per interval is the measure (CPython and NumPy make a
few one-time allocations of about 1 MB some thousands of calls after
tracemalloc starts, which a plain before/after difference would count): memory
traced by tracemalloc (Python objects, PyMem buffers, NumPy's array data) may
not grow by more than 4 bytes per step, and the resident set size, which also
sees C allocations, by more than 128 bytes per step. Every path is covered:
the C fast path with and without the GIL and in parallel, the fallback,
aliased gradients, errors, and the optimizer objects."""
import functools
import gc
import sys
import tracemalloc

import numpy as np
import pytest

import fastoptim
import optimizer_db as db
from _helpers import ADAM, GD, MOMENTUM

STEPS = 10_000
INTERVAL = 500
TRACED_LIMIT = 4    # bytes per step
RSS_LIMIT = 128


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def growth_per_step(step, steps=STEPS, interval=INTERVAL):
    """Median growth per step, over intervals of `interval` steps, of traced and
    of resident memory."""
    tracemalloc.start()
    try:
        samples = []
        for _ in range(steps // interval):
            samples.append((tracemalloc.get_traced_memory()[0], rss_bytes()))
            for _ in range(interval):
                step()
        samples.append((tracemalloc.get_traced_memory()[0], rss_bytes()))
    finally:
        tracemalloc.stop()
    d = np.diff(np.array(samples, dtype=np.float64), axis=0) / interval
    return float(np.median(d[:, 0])), float(np.median(d[:, 1]))


def _problem(update, shapes, dtype=np.float32, layout="C"):
    rng = np.random.default_rng(0)

    def arr(shape):
        a = np.asarray(0.01 * rng.standard_normal(shape), dtype)
        if layout == "strided":
            big = np.zeros((2 * shape[0],) + shape[1:], dtype)
            big[::2] = a
            return big[::2]
        return a

    params = {f"W{i}": arr(s) for i, s in enumerate(shapes)}
    grads = {"d" + k: arr(p.shape) for k, p in params.items()}
    states = [{"d" + k: np.abs(arr(p.shape), out=arr(p.shape)) for k, p in params.items()}
              for _ in update.states]
    return params, grads, states


def _watched(*dicts):
    """Every dict, key and value of the call."""
    out = []
    for d in dicts:
        out.append(d)
        for k, v in d.items():
            out += [k, v]
    return out


def dict_api(update, shapes, layout="C", alias=False, error=False):
    params, grads, states = _problem(update, shapes, layout=layout)
    if alias:
        grads["dW0"] = params["W0"]
    if error:
        grads["dW1"] = grads["dW1"].astype(np.int64)
    # scalar objects the refcount check can see (not small-int or interned constants)
    hyper = {"lr": float("1e-9"), "beta": float("0.875"), "beta1": float("0.875"),
             "beta2": float("0.99"), "eps": float("1e-7"), "t": 10**6 + 1}
    hyper = {k: hyper[k] for k in update.default_hyper()}
    fn = getattr(fastoptim, update.public)
    args = (params, grads, *states, *update.order(hyper))

    def step():
        try:
            fn(*args)
        except TypeError:
            if not error:
                raise

    return step, _watched(params, grads, *states) + list(hyper.values()) + [args]


def optimizer(name, shapes, arena=True, error=False, dtypes=(np.float32,), strided=False,
              **kwargs):
    """Steps of the test database's optimizer `name` (its rich configuration)."""
    params, grads, _ = _problem(GD, shapes)
    for i, k in enumerate(params):
        dt = dtypes[i % len(dtypes)]
        params[k], grads["d" + k] = params[k].astype(dt), grads["d" + k].astype(dt)
    if error:
        grads.pop("dW1")
    if strided:  # every step through the NumPy path
        grads = {k: np.repeat(g.reshape(-1), 2)[::2].reshape(g.shape) for k, g in grads.items()}
    opt = db.BY_NAME[name].make(params, learning_rate=1e-9, arena=arena, **kwargs)

    def step():
        try:
            opt.step(grads)
        except KeyError:
            if not error:
                raise

    watched = _watched(params, grads, *opt.state.values()) + [opt]
    return step, watched


SMALL = [(5, 3), (40,), (), (0, 2)]
NOGIL = [(100, 90)]            # above the GIL-release threshold, serial
PARALLEL = [(300, 250)]        # above the OpenMP threshold
SCENARIOS = {
    "gd fast path": lambda: dict_api(GD, SMALL),
    "momentum fast path": lambda: dict_api(MOMENTUM, SMALL),
    "adam fast path": lambda: dict_api(ADAM, SMALL),
    "adam without the GIL": lambda: dict_api(ADAM, NOGIL),
    "adam parallel": lambda: dict_api(ADAM, PARALLEL),
    "adam fallback (strided)": lambda: dict_api(ADAM, [(6, 4), (9,)], layout="strided"),
    "momentum fallback (aliased gradient)": lambda: dict_api(MOMENTUM, SMALL, alias=True),
    "adam error (int gradient)": lambda: dict_api(ADAM, SMALL, error=True),
    "gd error (int gradient)": lambda: dict_api(GD, NOGIL + SMALL, error=True),
    "Adam object, arena": lambda: optimizer("Adam", SMALL),
    "Adam object, two dtypes, no arena": lambda: optimizer(
        "Adam", SMALL + NOGIL, arena=False, dtypes=(np.float32, np.float64)),
    "Momentum object, parallel": lambda: optimizer("Momentum", PARALLEL),
    "GD object, missing gradient": lambda: optimizer("GD", SMALL, error=True),
}
# Every optimizer of the test database: its rich configuration with clipping and
# the non-finite skip, two dtypes, without the GIL. The NumPy step is one code
# path with a twin per rule: three rules cover scalar state and up to three states.
NUMPY_STEP = ("Adam", "NAdam", "RMSprop")
for _info in db.INFOS:
    SCENARIOS[f"{_info.name} object, clipped, two dtypes"] = functools.partial(
        optimizer, _info.name, SMALL + NOGIL, dtypes=(np.float32, np.float64),
        max_grad_norm=1.0, skip_nonfinite=True)
for _name in NUMPY_STEP:
    SCENARIOS[f"{_name} object, NumPy step"] = functools.partial(
        optimizer, _name, SMALL, strided=True, max_grad_norm=1.0)
# With the NumPy backend every dict-API scenario runs the same fallback code, and
# the objects have no C plan: these few cover it (the C pass runs the fallback too).
NUMPY_BACKEND = {"adam fast path", "momentum fallback (aliased gradient)",
                 "adam error (int gradient)", "Adam object, arena", "GD object, missing gradient"}
NUMPY_BACKEND |= {f"{name} object, NumPy step" for name in NUMPY_STEP}


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.filterwarnings("ignore::fastoptim.PerformanceWarning")  # the NumPy-step scenarios
def test_no_leak_over_ten_thousand_steps(scenario):
    if fastoptim.BACKEND != "c" and scenario not in NUMPY_BACKEND:
        pytest.skip("the NumPy backend's code paths are covered by the other scenarios")
    step, watched = SCENARIOS[scenario]()
    for _ in range(500):  # caches, lazy imports, first-call allocations
        step()
    gc.collect()
    refs = [sys.getrefcount(o) for o in watched]

    traced, rss = growth_per_step(step)
    gc.collect()

    after = [sys.getrefcount(o) for o in watched]
    changed = [(type(o).__name__, b, a) for o, b, a in zip(watched, refs, after) if a != b]
    assert not changed, f"reference counts changed (type, before, after): {changed[:5]}"
    assert traced < TRACED_LIMIT, f"traced memory grew by {traced:.1f} bytes per step"
    assert rss < RSS_LIMIT, f"resident memory grew by {rss:.1f} bytes per step"


def test_the_leak_check_can_fail():
    """The measures can fail: one reference kept per step; a float object kept
    per step (tracemalloc); 160 KB of array data kept per step (the resident
    set: small leaks may first be served from memory the allocator already
    holds, so its resolution depends on what ran before)."""
    step, watched = dict_api(GD, SMALL)
    array = watched[2]
    assert isinstance(array, np.ndarray)
    kept = []
    before = sys.getrefcount(array)
    for _ in range(STEPS):
        step()
        kept.append(array)
    assert sys.getrefcount(array) - before == STEPS
    kept.clear()

    def small_leak():
        step()
        kept.append(1.5 * len(kept))  # a float object: 24 bytes, plus the list's growth

    traced, _ = growth_per_step(small_leak, steps=4 * INTERVAL)
    assert traced > TRACED_LIMIT
    kept.clear()

    def c_leak():
        step()
        kept.append(np.ones(20_000))  # above malloc's mmap threshold: always new pages

    _, rss = growth_per_step(c_leak, steps=200, interval=50)
    assert rss > RSS_LIMIT
