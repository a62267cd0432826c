"""Threads: updates of disjoint dicts from several Python threads at once (the
C path releases the GIL for large calls) give exactly the sequential results;
1, 2 and 3 OpenMP threads give bitwise identical results; another thread
emptying the dicts mid-update cannot crash the process; a process forked after
a parallel update can still update in parallel."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastoptim
import optimizer_db as db
from _helpers import UPDATES, _core, assert_same_bits, clone

ids = lambda u: u.name  # noqa: E731


@pytest.fixture
def threads():
    """Set the OpenMP thread count for a test; restore the default after."""
    yield fastoptim.set_num_threads
    fastoptim.set_num_threads(None)


def _problem(update, sizes, dtype, seed):
    rng = np.random.default_rng(seed)
    params = {f"W{i}": rng.standard_normal(n).astype(dtype) for i, n in enumerate(sizes)}
    grads = {"d" + k: rng.standard_normal(p.shape).astype(dtype) for k, p in params.items()}
    states = [{"d" + k: np.abs(rng.standard_normal(p.shape)).astype(dtype)
               for k, p in params.items()} for _ in update.states]
    return params, grads, states


def _steps(update, params, grads, states, n=12):
    for t in range(1, n + 1):
        h = dict(update.default_hyper())
        if "t" in h:
            h["t"] = t
        update.call("public", params, grads, states, h)


# --- several Python threads on disjoint dicts --------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_python_threads_on_disjoint_dicts_equal_sequential(dtype, threads):
    # sizes: below the GIL threshold, without the GIL serial, and parallel
    jobs = []
    for j in range(6):
        update = UPDATES[j % 3]
        sizes = [(7, 9000 + j, 3), (70_001 + 13 * j, 5), (2, 10, 300_000 + j)][j % 3]
        jobs.append((update, _problem(update, sizes, dtype, seed=j)))
    expected = [(u, (clone(p), clone(g), [clone(s) for s in st])) for u, (p, g, st) in jobs]
    for u, call in expected:
        _steps(u, *call)

    barrier = threading.Barrier(len(jobs))
    errors = []

    def work(u, call):
        try:
            barrier.wait()
            _steps(u, *call)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    pool = [threading.Thread(target=work, args=job) for job in jobs]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    assert not errors, errors
    for (u, (p, _, st)), (_, (ep, _, est)) in zip(jobs, expected):
        for k in p:
            assert_same_bits(p[k], ep[k], f"{u.name} parameters[{k!r}]")
        for s, es in zip(st, est):
            for k in s:
                assert_same_bits(s[k], es[k], f"{u.name} state {k}")


def test_python_threads_with_optimizer_objects_equal_sequential():
    sizes = [(300, 301), (17,), (100_000,)]
    rng = np.random.default_rng(9)
    grads = [{f"dW{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(sizes)}
             for _ in range(4)]

    def fresh(j):
        r = np.random.default_rng(100 + j)
        return {f"W{i}": r.standard_normal(s).astype(np.float32) for i, s in enumerate(sizes)}

    makers = [lambda p: fastoptim.Adam(p, 0.01), lambda p: fastoptim.Momentum(p, 0.05),
              lambda p: fastoptim.GD(p, 0.05), lambda p: fastoptim.Adam(p, 0.01, arena=False)]
    sequential = []
    for j, make in enumerate(makers):
        opt = make(fresh(j))
        for _ in range(10):
            opt.step(grads[j])
        sequential.append(opt.parameters)

    opts = [make(fresh(j)) for j, make in enumerate(makers)]
    barrier = threading.Barrier(len(opts))

    def work(j):
        barrier.wait()
        for _ in range(10):
            opts[j].step(grads[j])

    pool = [threading.Thread(target=work, args=(j,)) for j in range(len(opts))]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    for j, opt in enumerate(opts):
        assert opt.t == 10
        for k, a in opt.parameters.items():
            assert_same_bits(a, sequential[j][k], f"optimizer {j} {k}")


# --- OpenMP: 1, 2, 3 threads bitwise identical ----------------------------------------------

def _need_openmp():
    if _core is None or fastoptim.BACKEND != "c":
        pytest.skip("OpenMP threads exist only in the C backend")
    if not _core.build_info()["openmp"]:
        pytest.skip("built without OpenMP")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("update", UPDATES, ids=ids)
def test_openmp_thread_counts_are_bitwise_identical(update, dtype, threads):
    _need_openmp()
    threshold = _core.build_info()["parallel_threshold"][np.dtype(dtype).name]
    # odd sizes, so that range ends fall inside arrays, and one call just at the threshold
    calls = [[threshold], [threshold - 1, 1], [3, 65_537, 1, 100_003, 17, 250_001]]
    for sizes in calls:
        base = _problem(update, sizes, dtype, seed=len(sizes))
        results = {}
        for n in (1, 2, 3):
            threads(n)
            assert fastoptim.get_num_threads() == n
            p, g, st = clone(base[0]), clone(base[1]), [clone(s) for s in base[2]]
            _steps(update, p, g, st, n=3)
            results[n] = (p, st)
        for n in (2, 3):
            for k in base[0]:
                assert_same_bits(results[n][0][k], results[1][0][k], f"{n} threads, {sizes}: {k}")
            for s, s1 in zip(results[n][1], results[1][1]):
                for k in s:
                    assert_same_bits(s[k], s1[k], f"{n} threads, {sizes}: state {k}")


@pytest.mark.parametrize("info", db.INFOS, ids=repr)
def test_optimizer_object_thread_counts_are_bitwise_identical(info, threads):
    """Every optimizer of the test database, clipped, two dtypes: 1, 2 and 3
    threads give the same bits (parameters, state, the norm)."""
    _need_openmp()
    rng = np.random.default_rng(5)
    sizes = [(333, 333), (5,), (70_001,), (40_000,)]
    dtypes = [np.float32, np.float32, np.float32, np.float64]
    params0 = {f"W{i}": rng.standard_normal(s).astype(d)
               for i, (s, d) in enumerate(zip(sizes, dtypes))}
    grads = {f"dW{i}": rng.standard_normal(s).astype(d)
             for i, (s, d) in enumerate(zip(sizes, dtypes))}
    out = {}
    for n in (1, 2, 3):
        threads(n)
        params = clone(params0)
        opt = info.make(params, learning_rate=0.01, max_grad_norm=50.0)
        for _ in range(3):
            opt.step(grads)
        out[n] = (opt.parameters, opt.state, opt.last_grad_norm)
    for n in (2, 3):
        assert out[n][2] == out[1][2], f"{n} threads: the norm"
        for k in out[1][0]:
            assert_same_bits(out[n][0][k], out[1][0][k], f"{n} threads: {k}")
        for name in out[1][1]:
            for k in out[1][1][name]:
                assert_same_bits(out[n][1][name][k], out[1][1][name][k], f"{n} threads: {name} {k}")


# --- memory safety under races -------------------------------------------------------------

RACE = r"""
import threading, numpy as np, fastoptim
fastoptim.set_num_threads({threads})
n = 1 << 22
for trial in range(12):
    P = {{"W": np.ones(n, np.float32)}}
    G = {{"dW": np.ones(n, np.float32)}}
    V = {{"dW": np.zeros(n, np.float32)}}
    S = {{"dW": np.zeros(n, np.float32)}}
    opt = fastoptim.Adam({{"X": np.ones(n, np.float32)}}, 0.01, arena=False)
    OG = {{"dX": np.ones(n, np.float32)}}
    started = [threading.Event(), threading.Event()]

    def dict_api():
        started[0].set()
        fastoptim.update_parameters_with_adam(P, G, V, S, 1)

    def optimizer(opt=opt):
        started[1].set()
        try:
            opt.step(OG)
        except KeyError:  # the dict was emptied before the step looked
            pass

    pool = [threading.Thread(target=dict_api), threading.Thread(target=optimizer)]
    for th in pool:
        th.start()
    for e in started:
        e.wait()
    for d in (P, G, V, S, OG):  # drop every reference the caller had, mid-update
        d.clear()
    del opt
    for th in pool:
        th.join()
print("ok")
"""


@pytest.mark.skipif(fastoptim.BACKEND != "c", reason="only the C backend releases the GIL")
@pytest.mark.parametrize("nthreads", [1, 2])
def test_emptying_the_dicts_during_an_update_is_safe(nthreads):
    """The arrays must stay alive while C works on them without the GIL (a
    use-after-free here crashed the interpreter)."""
    out = subprocess.run([sys.executable, "-c", RACE.format(threads=nthreads)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


FORK = r"""
import multiprocessing as mp, numpy as np, fastoptim
fastoptim.set_num_threads(2)
P = {"W": np.ones(1 << 20, np.float32)}
G = {"dW": np.ones(1 << 20, np.float32)}
fastoptim.update_parameters_with_gd(P, G, 0.25)  # the parent's thread team now exists

def child(q):
    fastoptim.update_parameters_with_gd(P, G, 0.25)
    opt = fastoptim.Adam({"X": np.ones(1 << 20, np.float32)}, 0.01)
    opt.step({"dX": np.ones(1 << 20, np.float32)})
    q.put((float(P["W"][0]), float(P["W"][-1])))

ctx = mp.get_context("fork")
q = ctx.Queue()
proc = ctx.Process(target=child, args=(q,))
proc.start()
proc.join(60)
if proc.is_alive():
    proc.kill()
    raise SystemExit("the forked child hung")
print(q.get(timeout=5), proc.exitcode)
fastoptim.update_parameters_with_gd(P, G, 0.25)  # and the parent still works in parallel
print(float(P["W"][0]))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_after_parallel_update():
    out = subprocess.run([sys.executable, "-c", FORK], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:] + out.stdout
    lines = out.stdout.split("\n")
    assert lines[0] == "(0.5, 0.5) 0", out.stdout
    assert lines[1] == "0.5", out.stdout
