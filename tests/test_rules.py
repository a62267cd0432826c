"""The family's dict-level functions: the compiled backend against the NumPy
twin, bitwise, at every instruction-set level and thread count; the fast path
is really taken; both raise the same errors and change nothing on bad input;
the global-norm reduction."""
import functools
import math
import tracemalloc

import numpy as np
import pytest

import fastoptim
from fastoptim import _fallback

core = pytest.importorskip("fastoptim._core", reason="compiled extension not built")

KEYS = ("W1", "b1", "W2", "b2")


def problem(n, dtype, seed, nstates, order="C"):
    rng = np.random.default_rng(seed)
    sizes = {k: max(1, n // (i + 1)) for i, k in enumerate(KEYS)}
    shape = {k: (sizes[k],) if sizes[k] % 2 else (2, sizes[k] // 2) for k in KEYS}

    def arr(k, scale=1.0, positive=False):
        a = scale * rng.standard_normal(shape[k])
        a = np.abs(a) if positive else a
        return np.asarray(a.astype(dtype), order=order)

    params = {k: arr(k) for k in KEYS}
    grads = {"d" + k: arr(k) for k in KEYS}
    states = [{"d" + k: arr(k, 0.1, positive=True) for k in KEYS} for _ in range(nstates)]
    return params, grads, states


def clone(d):
    return None if d is None else {k: a.copy(order="K") for k, a in d.items()}


WD = {"W1": 0.1, "b1": 0.0, "W2": 0.05, "b2": 0.0}

L2, DEC, UPD = _fallback.DECAY_L2, _fallback.DECAY_DECOUPLED, _fallback.DECAY_UPDATE
SGD_M, SGD_N, SGD_A = _fallback.SGD_MOMENTUM, _fallback.SGD_NESTEROV, _fallback.SGD_AVERAGE


def call(rule, lr, hyper, slots, flags=0, wd=0.0, decay=0, gs=1.0, scalars=None):
    """(number of state dicts, call(module, params, grads, states, t)): one
    configuration of `rule` through a backend's generic update; `slots` says
    which state slots are present (the states fill them in order)."""

    def run(M, P, G, S, t):
        it = iter(S)
        states = tuple(next(it) if present else None for present in slots)
        sc = () if scalars is None else scalars(t)
        return M.update(rule, P, G, states, t, lr, hyper, flags=flags, weight_decay=wd,
                        decay=decay, grad_scale=gs, scalars=sc)

    return sum(slots), run


CALLS = {
    "sgd": call("sgd", 0.1, (0.0, 0.0), (False,), wd=WD, decay=L2, gs=0.7),
    "sgd-momentum-nesterov": call("sgd", 0.1, (0.9, 0.0), (True,), SGD_M | SGD_N, WD, L2, -0.7),
    "sgd-dampening": call("sgd", 0.1, (0.9, 0.4), (True,), SGD_M, 0.1, L2),
    "sgd-course-nesterov": call("sgd", 0.1, (0.9, 0.9), (True,), SGD_M | SGD_N | SGD_A),
    "adam-amsgrad-decoupled": call("adam", 0.01, (0.9, 0.999, 1e-8), (True, True, True),
                                   _fallback.ADAM_AMSGRAD, WD, DEC, 0.5),
    "adam-l2-maximize": call("adam", 0.01, (0.8, 0.99, 1e-7), (True, True, False), 0, 0.1, L2,
                             -1.0),
    "nadam": call("nadam", 0.01, (0.9, 0.999, 1e-8, 0.004), (True, True), 0, WD, L2,
                  scalars=lambda t: (0.9**t,)),
    "nadam-decoupled": call("nadam", 0.01, (0.9, 0.999, 1e-8, 0.1), (True, True), 0, 0.2, DEC,
                            0.3, scalars=lambda t: (0.5,)),
    "radam": call("radam", 0.01, (0.9, 0.99, 1e-8), (True, True), 0, WD, DEC),
    "radam-l2": call("radam", 0.01, (0.9, 0.9, 1e-8), (True, True), 0, 0.1, L2, -0.5),
    "adamax": call("adamax", 0.01, (0.9, 0.999, 1e-8), (True, True), 0, WD, L2),
    "adagrad": call("adagrad", 0.01, (0.1, 1e-10), (True,), 0, WD, L2, 2.0),
    "rmsprop-centered-momentum": call("rmsprop", 0.01, (0.99, 1e-8, 0.9), (True, True, True),
                                      _fallback.RMSPROP_CENTERED | _fallback.RMSPROP_MOMENTUM,
                                      WD, L2),
    "rmsprop-centered": call("rmsprop", 0.01, (0.9, 1e-8, 0.0), (True, True, False),
                             _fallback.RMSPROP_CENTERED),
    "rmsprop-momentum": call("rmsprop", 0.01, (0.99, 1e-8, 0.9), (True, False, True),
                             _fallback.RMSPROP_MOMENTUM, WD, L2, -1.0),
    "rmsprop": call("rmsprop", 0.01, (0.99, 1e-8, 0.0), (True, False, False)),
    "lion": call("lion", 0.01, (0.9, 0.99), (True,), 0, WD, DEC),
    "lion-maximize": call("lion", 0.01, (0.5, 0.9), (True,), 0, 0.3, DEC, -0.2),
    # scalar state (weight_sum, lr_max) as a run would have it at step t
    "schedule_free_adamw": call("schedule_free_adamw", 0.01, (0.9, 0.999, 1e-8, 3.0, 0.5, 2.0),
                                (True, True), 0, WD, UPD, 0.7,
                                scalars=lambda t: (0.0, 0.0) if t == 1 else (0.01 * t, 0.01)),
    "schedule_free_adamw-warmup": call("schedule_free_adamw", 0.1, (0.8, 0.99, 1e-3, 0.0, 0.0,
                                                                    0.0),
                                       (True, True), 0, 0.0, 0, -1.0,
                                       scalars=lambda t: (t - 1.0, 0.1)),
    "schedule_free_sgd": call("schedule_free_sgd", 0.1, (0.9, 2.0, 0.0, 2.0), (True,), 0, WD,
                              L2, 0.7, scalars=lambda t: (0.0, 0.0) if t == 1 else (0.3, 0.1)),
    "lamb": call("lamb", 0.01, (0.9, 0.999, 1e-6), (True, True), 0, WD, UPD, 0.7),
    "lamb-maximize": call("lamb", 0.01, (0.5, 0.9, 1e-3), (True, True), 0, 0.0, 0, -2.0),
    "adafactor": call("adafactor", 0.01, (0.8, 1e-30, 1e-3, 1.0), (True,), 0, WD, DEC, 0.7),
    "adafactor-machine-epsilon": call("adafactor", 0.05, (0.5, 0.0, 0.5, 1.0), (True,),
                                      _fallback.ADAFACTOR_MACHINE_EPSILON, 0.1, DEC, -1.0),
}


def run_both(name, n, dtype, steps=4, order="C", seed=0):
    nstates, call = CALLS[name]
    P, G, S = problem(n, dtype, seed, nstates, order)
    P2, G2, S2 = clone(P), clone(G), [clone(s) for s in S]
    for t in range(1, steps + 1):
        r1 = call(core, P, G, S, t)
        r2 = call(_fallback, P2, G2, S2, t)
        assert r1 == r2
    return (P, *S), (P2, *S2)


def assert_bitwise(a_dicts, b_dicts, msg=""):
    for a, b in zip(a_dicts, b_dicts):
        for k in a:
            np.testing.assert_array_equal(np.ravel(a[k], "K").view(np.uint8),
                                          np.ravel(b[k], "K").view(np.uint8),
                                          err_msg=f"{msg} {k}")


@pytest.fixture
def each_isa():
    levels = core.isa_supported()
    yield levels
    core.set_isa(levels[-1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", sorted(CALLS))
def test_bitwise_every_isa(name, dtype, each_isa):
    for isa in each_isa:
        core.set_isa(isa)
        for n in (1, 7, 16, 17, 33, 64, 65, 1000):
            c, f = run_both(name, n, dtype, seed=n)
            assert_bitwise(c, f, f"{name} isa={isa} n={n}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", sorted(CALLS))
def test_bitwise_large_and_fortran(name, dtype):
    c, f = run_both(name, 150_001, dtype, steps=2)
    assert_bitwise(c, f, name)
    c, f = run_both(name, 998, dtype, steps=2, order="F")
    assert_bitwise(c, f, name + " F-order")


@pytest.mark.parametrize("name", sorted(CALLS))
def test_one_and_two_threads_agree(name):
    before = core.get_num_threads()
    try:
        core.set_num_threads(1)
        one, _ = run_both(name, 200_003, np.float32, steps=2)
        core.set_num_threads(2)
        two, _ = run_both(name, 200_003, np.float32, steps=2)
    finally:
        core.set_num_threads(before)
    assert_bitwise(one, two, name)


def test_fast_path_is_taken(monkeypatch):
    """Contiguous float arrays never reach the fallback."""
    def refuse(*args):
        raise AssertionError("the fallback ran")

    for name in ("update", "apply", "grad_norm"):
        monkeypatch.setattr(_fallback, name, refuse)
    for name, (nstates, call) in CALLS.items():
        P, G, S = problem(100, np.float32, 1, nstates)
        before = clone(P)
        call(core, P, G, S, 2)
        assert any(not np.array_equal(P[k], before[k]) for k in P), name
    core.grad_norm(*problem(100, np.float64, 1, 0)[:2])


@pytest.mark.parametrize("name", sorted(CALLS))
def test_views_go_to_the_fallback(name):
    """Strided views take the NumPy path inside the compiled backend, same results."""
    nstates, call = CALLS[name]
    P, G, S = problem(64, np.float64, 2, nstates)
    big = {k: np.zeros(a.size * 2) for k, a in P.items()}
    views = {}
    for k, a in P.items():
        big[k][::2] = a.ravel()
        views[k] = big[k][::2]
    flatG = {k: a.ravel() for k, a in G.items()}
    flatS = [{k: a.ravel().copy() for k, a in s.items()} for s in S]
    P2 = {k: a.ravel().copy() for k, a in P.items()}
    S2 = [clone(s) for s in flatS]
    for t in (1, 2):
        with pytest.warns(fastoptim.PerformanceWarning, match=r"is not contiguous \(a strided view\)"):
            call(core, views, flatG, flatS, t)
        call(_fallback, P2, flatG, S2, t)
    assert_bitwise([views, *flatS], [P2, *S2], name)


# --- errors ------------------------------------------------------------------------

def _error(fn):
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - comparing what each backend raises
        return type(exc), str(exc)
    return None


def bad(rule, slots, *args, hyper=None, lr=0.1, t=1, **kwargs):
    """A call of `rule` through module M with one thing wrong: `slots` picks
    the state dicts (an index into S, a dict, or None for an absent slot)."""
    hyper = hyper if hyper is not None else {
        "sgd": (0.0, 0.0), "adam": (0.9, 0.9, 1e-8), "nadam": (0.9, 0.9, 1e-8, 0.004),
        "radam": (0.9, 0.9, 1e-8), "adamax": (0.9, 0.9, 1e-8), "adagrad": (0.0, 1e-10),
        "rmsprop": (0.9, 1e-8, 0.0), "lion": (0.9, 0.9), "lamb": (0.9, 0.9, 1e-6),
        "schedule_free_sgd": (0.9, 0.0, 0.0, 2.0), "adafactor": (0.8, 0.0, 1e-3, 1.0)}[rule]

    def run(M, P, G, S):
        states = tuple(S[x] if isinstance(x, int) else x(S) if callable(x) else x
                       for x in slots)
        return M.update(rule, P, G, states, t, lr, hyper, **kwargs)

    return run


BAD = [
    ("negative weight decay", bad("adam", (0, 1, None), weight_decay=-0.1, decay=L2)),
    ("nan weight decay", bad("lion", (0,), weight_decay=float("nan"), decay=DEC)),
    ("weight decay missing a key", bad("sgd", (None,), weight_decay={"W1": 0.1, "b1": 0.0,
                                                                      "W2": 0.0}, decay=L2)),
    ("weight decay with an extra key", bad("sgd", (None,), weight_decay=dict(WD, W3=0.1),
                                           decay=L2)),
    ("weight decay not a number", bad("adagrad", (0,), weight_decay=dict(WD, b2="x"),
                                      decay=L2)),
    ("infinite grad_scale", bad("rmsprop", (0, None, None), grad_scale=float("inf"))),
    ("flags not an int", bad("adam", (0, 1, None), flags=1.0)),
    ("decay style the rule lacks", bad("lion", (0,), weight_decay=0.1, decay=L2)),
    ("nesterov without a buffer", bad("sgd", (None,), hyper=(0.9, 0.0), flags=SGD_N)),
    ("momentum >= 1", bad("sgd", (0,), hyper=(1.0, 0.0), flags=SGD_M)),
    ("dampening > 1", bad("sgd", (0,), hyper=(0.5, 1.5), flags=SGD_M)),
    ("alpha >= 1", bad("rmsprop", (0, None, None), hyper=(1.0, 1e-8, 0.0))),
    ("negative lr_decay", bad("adagrad", (0,), hyper=(-1.0, 1e-10))),
    ("mu_product > 1", bad("nadam", (0, 1), scalars=(1.5,))),
    ("negative momentum_decay", bad("nadam", (0, 1), hyper=(0.9, 0.9, 1e-8, -0.004),
                                    scalars=(1.0,))),
    ("t = 0", bad("radam", (0, 1), t=0)),
    ("a state key missing", bad("adamax", (0, lambda S: {k: a for k, a in S[1].items()
                                                         if k != "db2"}))),
    ("a state of the wrong shape", bad("lion", (lambda S: dict(S[0], db2=np.zeros(3)),))),
    ("amsgrad state missing", bad("adam", (0, 1, None), flags=_fallback.ADAM_AMSGRAD)),
    ("amsgrad state shared with s", bad("adam", (0, 1, 1), flags=_fallback.ADAM_AMSGRAD)),
    ("grads missing a key", lambda M, P, G, S: M.grad_norm(
        P, {k: a for k, a in G.items() if k != "db2"})),
    ("decay style update for L2 rule", bad("schedule_free_sgd", (0,), weight_decay=0.1,
                                           decay=UPD, scalars=(0.0, 0.0))),
    ("negative weight_sum", bad("schedule_free_sgd", (0,), scalars=(-1.0, 0.0))),
    ("lamb: a state key missing", bad("lamb", (0, lambda S: {k: a for k, a in S[1].items()
                                                          if k != "dW1"}))),
    ("adafactor: flags it lacks", bad("adafactor", (0,), flags=2)),
    ("adafactor: decay style L2", bad("adafactor", (0,), weight_decay=0.1, decay=L2)),
]


@pytest.mark.parametrize("what,call", BAD, ids=[b[0] for b in BAD])
def test_same_error_nothing_changed(what, call):
    P, G, S = problem(50, np.float32, 4, 2)
    saved = [clone(P), clone(G)] + [clone(s) for s in S]
    errors = []
    for M in (core, _fallback):
        errors.append(_error(lambda: call(M, P, G, S)))
        for before, now in zip(saved, [P, G, *S]):
            for k in before:
                np.testing.assert_array_equal(now[k], before[k], err_msg=f"{what}: {k} changed")
    assert errors[0] is not None, what
    assert errors[0] == errors[1], what


def test_errors_name_the_argument():
    P, G, S = problem(10, np.float64, 0, 1)
    lion = functools.partial(core.update, "lion", P, G, (S[0],), 1, 0.1, (0.9, 0.9), decay=DEC)
    with pytest.raises(ValueError, match=r"weight_decay\['b2'\]"):
        lion(weight_decay=dict(WD, b2=-1.0))
    with pytest.raises(KeyError, match="'b2'"):
        lion(weight_decay={k: 0.0 for k in ("W1", "b1", "W2")})
    with pytest.raises(ValueError, match="grad_scale"):
        lion(grad_scale=float("nan"))
    with pytest.raises(ValueError, match="momentum_buffer must be given"):
        core.update("sgd", P, G, (None,), 1, 0.1, (0.9, 0.0), flags=SGD_M | SGD_N)
    with pytest.raises(ValueError, match="beta1 must be in"):
        core.update("lion", P, G, (S[0],), 1, 0.1, (1.5, 0.9))


# --- the global norm ---------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("n", [1, 15, 16, 17, 1023, 1024, 1025, 5000, 200_001])
def test_grad_norm(n, dtype):
    P, G, _ = problem(n, dtype, n, 0)
    norm, finite = core.grad_norm(P, G)
    assert (norm, finite) == _fallback.grad_norm(P, G)
    flat = np.concatenate([g.ravel().astype(np.float64) for g in G.values()])
    assert finite is True
    assert norm == pytest.approx(math.sqrt(math.fsum(flat * flat)), rel=1e-14)


def test_grad_norm_does_not_depend_on_threads_or_isa(each_isa):
    P, G, _ = problem(400_000, np.float32, 9, 0)
    results = set()
    before = core.get_num_threads()
    try:
        for isa in each_isa:
            core.set_isa(isa)
            for threads in (1, 2, 3):
                core.set_num_threads(threads)
                results.add(core.grad_norm(P, G))
    finally:
        core.set_num_threads(before)
    assert results == {_fallback.grad_norm(P, G)}


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("where", [0, 16, 1023, 1024, 3332])
def test_grad_norm_finds_each_nonfinite(bad, where):
    for M in (core, _fallback):
        for dtype in (np.float32, np.float64):
            P, G, _ = problem(10_000, dtype, 2, 0)
            G["dW2"].ravel()[where] = bad
            norm, finite = M.grad_norm(P, G)
            assert finite is False and not math.isfinite(norm)


def test_grad_norm_huge_but_finite():
    """float64 elements whose squares overflow: the norm is still right (the
    sum is measured again, rescaled), and finite."""
    P, G, _ = problem(100, np.float64, 2, 0)
    G["dW1"][...] = 1e200
    expected = math.hypot(*np.concatenate([g.ravel() for g in G.values()]))
    for M in (core, _fallback):
        norm, finite = M.grad_norm(P, G)
        assert finite is True and norm == pytest.approx(expected, rel=1e-15)


def test_grad_norm_empty():
    for M in (core, _fallback):
        assert M.grad_norm({}, {}) == (0.0, True)
        assert M.grad_norm({"W": np.zeros((0, 3))}, {"dW": np.zeros((0, 3))}) == (0.0, True)


def test_ceiling_moves_the_streams():
    P, G, S = problem(1000, np.float32, 3, 3)
    expect = [{k: a + G["d" + k] for k, a in P.items()}] + \
             [{k: a + G[k] for k, a in s.items()} for s in S]
    core.ceiling(P, G, *S)
    for want, got in zip(expect, [P, *S]):
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])


def test_no_allocation_that_grows_with_the_arrays():
    P, G, S = problem(1_000_000, np.float32, 5, 3)
    CALLS["adam-amsgrad-decoupled"][1](core, P, G, S, 1)  # warm up
    core.grad_norm(P, G)
    tracemalloc.start()
    try:
        for name, (nstates, call) in CALLS.items():
            call(core, P, G, S[:nstates], 2)
        core.grad_norm(P, G)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_a_call_without_arrays_still_checks_and_advances_the_scalar_state():
    """(Found by tests/test_fuzz_core.py.) No parameters: the flags and decay
    style are still checked, and NAdam's mu_product still advances, as in the twin."""
    for M in (core, _fallback):
        assert M.update("nadam", {}, {}, ({}, {}), 3, 0.1, (0.9, 0.99, 1e-8, 0.004),
                        scalars=(0.5,)) == _fallback.update(
            "nadam", {"W": np.zeros(1)}, {"dW": np.zeros(1)}, ({"dW": np.zeros(1)},
                                                                {"dW": np.zeros(1)}),
            3, 0.1, (0.9, 0.99, 1e-8, 0.004), scalars=(0.5,))
        with pytest.raises(ValueError, match="weight decay style"):
            M.update("sgd", {}, {}, (None,), 1, 0.1, (0.0, 0.0), decay=DEC)
        with pytest.raises(ValueError, match="weight decay style"):
            M.update("sgd", {}, {}, (None,), 1, 0.1, (0.0, 0.0), decay=-1)


@pytest.mark.skipif(__import__("fastoptim").BACKEND != "c",
                    reason="the compiled step's sources (the NumPy backend sums them first)")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("sources", [2, 3, 4])
def test_a_gradient_of_several_sources_is_their_sum_in_order(dtype, sources):
    """The compiled step with sources (data parallelism): gradient = ((g0 + g1)
    + ...) * scale in the dtype, then the step: bitwise what one step with that
    gradient gives, with the moving average on too."""
    import fastoptim

    rng = np.random.default_rng(sources)
    n = 1000
    start = rng.standard_normal(n).astype(dtype)
    recv = rng.standard_normal((sources, n)).astype(dtype)
    a_params, b_params = {"W": start.copy()}, {"W": start.copy()}
    a = fastoptim.AdamW(a_params, ema_decay=0.9)
    b = fastoptim.AdamW(b_params, ema_decay=0.9)
    a._configure_sources(sources, n, 1.0 / sources)
    assert a.step({"dW": recv[0]})
    b.step({"dW": _fallback.sum_sources(list(recv), 1.0 / sources)})
    np.testing.assert_array_equal(a_params["W"], b_params["W"])
    np.testing.assert_array_equal(a.ema["W"], b.ema["W"])
    for name in ("v", "s"):
        np.testing.assert_array_equal(a.state[name]["dW"], b.state[name]["dW"])


# --- rules with a reduction: many arrays, many windows -----------------------------

@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("name", ["lamb", "adafactor"])
def test_reduction_over_many_arrays_and_windows(name, threads):
    """More arrays than the driver takes at once (64), zero-size ones, and arrays of
    more blocks than a window (512 blocks of 256): compiled == NumPy, bitwise, the
    norms too (each array's factor depends on all its blocks)."""
    rng = np.random.default_rng(7)
    sizes = [0, 1, 255, 256, 257] * 14 + [300_001, 5]
    P = {f"W{i}": rng.standard_normal(n).astype(np.float32) for i, n in enumerate(sizes)}
    G = {"d" + k: rng.standard_normal(a.shape).astype(np.float32) for k, a in P.items()}
    nslots, fn = {"lamb": call("lamb", 0.01, (0.9, 0.999, 1e-6), (True, True), 0, 0.1, UPD),
                  "adafactor": call("adafactor", 0.01, (0.8, 1e-30, 1e-3, 1.0), (True,), 0, 0.1,
                                    DEC, 0.5)}[name]
    S = [{"d" + k: np.abs(rng.standard_normal(a.shape)).astype(np.float32) for k, a in P.items()}
         for _ in range(nslots)]
    P2, S2 = clone(P), [clone(x) for x in S]
    before = core.get_num_threads()
    try:
        core.set_num_threads(threads)
        for t in (1, 2):
            fn(core, P, G, S, t)
            fn(_fallback, P2, G, S2, t)
    finally:
        core.set_num_threads(before)
    assert_bitwise([P, *S], [P2, *S2], name)
