"""Threads: updates of disjoint dicts from several Python threads at once (the
C path releases the GIL for large calls) give exactly the sequential results;
1, 2 and 3 pool threads give bitwise identical results, whoever runs the chunks
(workers late, stale, slow, idle or unable to start); another thread emptying
the dicts mid-update cannot crash the process; a process forked after a
parallel update can still update in parallel; the thread count follows
OMP_NUM_THREADS, set_num_threads() and threadpoolctl."""
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
    """Set the thread count for a test; restore the default after."""
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


# --- the pool: 1, 2, 3 threads bitwise identical -------------------------------------------

def _need_pool():
    if _core is None or fastoptim.BACKEND != "c":
        pytest.skip("the thread pool exists only in the C backend")


@pytest.fixture
def parallel():
    """Every call of two chunks or more runs on the pool (thresholds 0), whether or
    not the workers sleep; thresholds, thread count and debug mode restored after."""
    _need_pool()
    saved = {dt: (_core.pool_info()["parallel_threshold"][dt],
                  _core.pool_info()["parallel_threshold_asleep"][dt])
             for dt in ("float32", "float64")}
    for dt in saved:
        _core.set_parallel_threshold(dt, 0, 0)
    yield fastoptim.set_num_threads
    _core._pool_debug("normal")
    for dt, (awake, asleep) in saved.items():
        _core.set_parallel_threshold(dt, awake, asleep)
    fastoptim.set_num_threads(None)


# csrc/driver.c: chunks of 32 KiB of each stream below 16 chunks per thread
CHUNK = {np.float32: 8192, np.float64: 4096}


def _sizes_around_chunks(dtype):
    c = CHUNK[dtype]
    return [[c + 1], [2 * c - 1], [2 * c], [2 * c + 1], [c - 1, 1, c + 1],
            [3, 65_537, 1, 100_003, 0, 17, 250_001], [1_000_003]]


def _threads_results(update, sizes, dtype, counts=(1, 2, 3), steps=3):
    base = _problem(update, sizes, dtype, seed=len(sizes))
    results = {}
    for n in counts:
        fastoptim.set_num_threads(n)
        assert fastoptim.get_num_threads() == n
        p, g, st = clone(base[0]), clone(base[1]), [clone(s) for s in base[2]]
        _steps(update, p, g, st, n=steps)
        results[n] = (p, st)
    return results


def _assert_all_equal(results, what):
    first = min(results)
    for n, (p, st) in results.items():
        for k in p:
            assert_same_bits(p[k], results[first][0][k], f"{what}, {n}: {k}")
        for s, s1 in zip(st, results[first][1]):
            for k in s:
                assert_same_bits(s[k], s1[k], f"{what}, {n}: state {k}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("update", UPDATES, ids=ids)
def test_thread_counts_are_bitwise_identical(update, dtype, parallel):
    # sizes around chunk boundaries, chunk ends inside arrays, an empty array
    for sizes in _sizes_around_chunks(dtype):
        _assert_all_equal(_threads_results(update, sizes, dtype), f"{sizes} threads")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_thread_counts_at_the_default_thresholds_are_bitwise_identical(dtype, threads):
    _need_pool()
    info = _core.pool_info()
    name = np.dtype(dtype).name
    for t in (info["parallel_threshold"][name], info["parallel_threshold_asleep"][name]):
        for sizes in ([t], [t - 1, 1], [t + 1]):
            for update in UPDATES:
                _assert_all_equal(_threads_results(update, sizes, dtype), f"{sizes}")


def _mixed_calls(dtype, seed=7):
    """Adam steps, gradient norms and GD steps on three problems of different sizes,
    interleaved: consecutive pool jobs differ in task, context and chunk count, so a
    worker that ran a chunk of a job other than the one it read would show."""
    rng = np.random.default_rng(seed)

    def arrays(prefix, sizes):
        return {f"{prefix}{i}": rng.standard_normal(n).astype(dtype) for i, n in enumerate(sizes)}

    a_p = arrays("W", [3, 65_537, 1, 100_003, 17, 250_001])
    a_g = arrays("dW", [3, 65_537, 1, 100_003, 17, 250_001])
    a_v, a_s = clone(a_g), {k: np.abs(x) for k, x in a_g.items()}
    b_p, b_g = arrays("W", [70_001]), arrays("dW", [70_001])
    c_p, c_g = arrays("W", [1_000_003, 5]), arrays("dW", [1_000_003, 5])
    norms = []
    for t in range(1, 4):
        fastoptim.update_parameters_with_adam(a_p, a_g, a_v, a_s, t)
        norms.append(_core.grad_norm(c_p, c_g))
        fastoptim.update_parameters_with_gd(b_p, b_g, 0.1)
        fastoptim.update_parameters_with_gd(c_p, c_g, 0.01)
    return [a_p, a_v, a_s, b_p, c_p], norms


@pytest.mark.parametrize("mode, delay_us", [("late", 20_000), ("stale", 20_000),
                                            ("slow", 2_000), ("never", 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_workers_late_stale_slow_or_idle_change_nothing(mode, delay_us, dtype, parallel):
    """late: a worker wakes 20 ms after the job was posted (the caller has done it
    all and moved on); stale: it reads the job, then tries to claim 20 ms later,
    when that job has ended and newer ones have run; slow: every participant takes
    2 ms per chunk (workers surely take part, and the caller waits for their
    chunks); never: workers wake but take nothing."""
    seeds = range(4)  # each sequence takes longer than the delay: late workers come back
    parallel(1)
    expected = [_mixed_calls(dtype, seed) for seed in seeds]
    results = {}
    for n in (2, 3):
        parallel(n)
        _core._pool_counters(reset=True)
        _core._pool_debug(mode, delay_us)
        try:
            results[n] = [_mixed_calls(dtype, seed) for seed in seeds]
            chunks, stale = _core._pool_counters(reset=True)
        finally:
            _core._pool_debug("normal")
        if mode == "stale":
            assert stale > 0, "no worker tried to claim after its job had ended"
        if mode == "slow":
            assert chunks > 0, "no worker took a chunk"
        if mode == "never":
            assert chunks == 0
    for n, runs in results.items():
        for seed, (dicts, norms), (edicts, enorms) in zip(seeds, runs, expected):
            assert norms == enorms, (mode, n, seed)
            for d, e in zip(dicts, edicts):
                for k in d:
                    assert_same_bits(d[k], e[k], f"{mode}, {n} threads, sequence {seed}: {k}")


def test_sum_of_squares_is_bitwise_identical_across_thread_counts(parallel):
    """grad_norm adds 1024-element partial sums in order; in parallel, window after
    window of 1024 of them (here five windows, ends inside arrays)."""
    rng = np.random.default_rng(4)
    for dtype in (np.float32, np.float64):
        sizes = [2_100_001, 3, 1025, 0, 2_300_017]
        p = {f"W{i}": np.zeros(n, dtype) for i, n in enumerate(sizes)}
        g = {f"dW{i}": (rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4, n)).astype(dtype)
             for i, n in enumerate(sizes)}
        norms = {}
        for n in (1, 2, 3):
            parallel(n)
            norms[n] = _core.grad_norm(p, g)
        assert norms[2] == norms[1] and norms[3] == norms[1], norms
        from fastoptim import _fallback
        assert _fallback.grad_norm(p, g) == norms[1]
        g["dW4"][2_200_000] = np.inf
        for n in (1, 2):
            parallel(n)
            assert _core.grad_norm(p, g)[1] is False


@pytest.mark.parametrize("info", db.INFOS, ids=repr)
def test_optimizer_object_thread_counts_are_bitwise_identical(info, parallel):
    """Every optimizer of the test database, clipped, two dtypes: 1, 2 and 3
    threads give the same bits (parameters, state, the norm)."""
    rng = np.random.default_rng(5)
    sizes = [(333, 333), (5,), (70_001,), (40_000,)]
    dtypes = [np.float32, np.float32, np.float32, np.float64]
    params0 = {f"W{i}": rng.standard_normal(s).astype(d)
               for i, (s, d) in enumerate(zip(sizes, dtypes))}
    grads = {f"dW{i}": rng.standard_normal(s).astype(d)
             for i, (s, d) in enumerate(zip(sizes, dtypes))}
    out = {}
    for n in (1, 2, 3):
        parallel(n)
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


NO_START = r"""
import numpy as np, fastoptim
from fastoptim import _core
fastoptim.set_num_threads(2)
_core._pool_debug("no_start")
P = {"W": np.ones(1 << 20, np.float32)}
G = {"dW": np.ones(1 << 20, np.float32)}
fastoptim.update_parameters_with_gd(P, G, 0.25)
print(float(P["W"][0]), float(P["W"][-1]), _core.pool_info()["workers_started"])
print(fastoptim._config.config().get("thread_pool_error"))
"""


@pytest.mark.skipif(fastoptim.BACKEND != "c", reason="the pool exists only in the C backend")
def test_a_worker_that_cannot_start_is_reported_and_the_step_runs():
    out = subprocess.run([sys.executable, "-c", NO_START], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0] == "0.75 0.75 0", out.stdout
    assert "could not start worker 1 of 1" in lines[1], out.stdout


# --- the thread count: OMP_NUM_THREADS, set_num_threads, threadpoolctl ----------------------

@pytest.mark.skipif(fastoptim.BACKEND != "c", reason="the pool exists only in the C backend")
@pytest.mark.parametrize("value, expected", [("3", 3), ("4,2", 4), ("1", 1), ("junk", None)])
def test_omp_num_threads_sets_the_default(value, expected):
    code = ("import os, fastoptim; print(fastoptim.get_num_threads(), len(os.sched_getaffinity(0))"
            " if hasattr(os, 'sched_getaffinity') else os.cpu_count())")
    env = {**os.environ, "OMP_NUM_THREADS": value}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got, cpus = map(int, out.stdout.split())
    assert got == (cpus if expected is None else expected)


def test_set_num_threads_and_its_default(threads):
    _need_pool()
    default = fastoptim.get_num_threads()
    threads(3)
    assert fastoptim.get_num_threads() == 3
    threads(None)
    assert fastoptim.get_num_threads() == default
    threads(0)
    assert fastoptim.get_num_threads() == default


def test_threadpoolctl_lists_and_limits_the_pool(threads):
    _need_pool()
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not hasattr(threadpoolctl, "register"):
        pytest.skip("threadpoolctl too old to register a library")

    def ours():
        found = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "fastoptim"]
        assert len(found) == 1, threadpoolctl.threadpool_info()
        return found[0]

    threads(3)
    info = ours()
    assert info["num_threads"] == 3 and info["internal_api"] == "fastoptim"
    assert os.path.basename(info["filepath"]).startswith("_core.")
    with threadpoolctl.threadpool_limits(limits=1):
        assert fastoptim.get_num_threads() == 1
        assert ours()["num_threads"] == 1
    assert fastoptim.get_num_threads() == 3
    with threadpoolctl.threadpool_limits(limits=2, user_api="fastoptim"):
        assert fastoptim.get_num_threads() == 2
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        assert fastoptim.get_num_threads() == 3  # another library's limit is not ours
    assert fastoptim.get_num_threads() == 3
    assert "registered" in fastoptim._config.config()["threadpoolctl"]


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
from fastoptim import _core
fastoptim.set_num_threads(2)
C = fastoptim.BACKEND == "c"  # with the NumPy backend no pool runs: the rest still holds
_core.set_parallel_threshold("float32", 0, 0)  # every call below runs on the pool
P = {"W": np.ones(1 << 20, np.float32)}
G = {"dW": np.ones(1 << 20, np.float32)}
fastoptim.update_parameters_with_gd(P, G, 0.25)  # the parent's workers now exist
assert _core.pool_info()["workers_started"] == (1 if C else 0)

def child(q):
    started = _core.pool_info()["workers_started"]  # none: the fork copied no thread
    fastoptim.update_parameters_with_gd(P, G, 0.25)
    opt = fastoptim.Adam({"X": np.ones(1 << 20, np.float32)}, 0.01)
    for _ in range(20):
        opt.step({"dX": np.ones(1 << 20, np.float32)})
    q.put((float(P["W"][0]), float(P["W"][-1]), started, _core.pool_info()["workers_started"],
           float(opt.parameters["X"][0])))

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
fastoptim.set_num_threads(1)
X = {"X": np.ones(1 << 20, np.float32)}
opt = fastoptim.Adam(X, 0.01)
for _ in range(20):
    opt.step({"dX": np.ones(1 << 20, np.float32)})
print(float(X["X"][0]))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_after_parallel_update():
    out = subprocess.run([sys.executable, "-c", FORK], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:] + out.stdout
    lines = out.stdout.split("\n")
    # the child: no worker at first, one started by its first parallel call, and the
    # same result as the parent's on one thread
    workers = 1 if fastoptim.BACKEND == "c" else 0
    assert lines[0] == f"(0.5, 0.5, 0, {workers}, {lines[2]}) 0", out.stdout
    assert lines[1] == "0.5", out.stdout


@pytest.mark.skipif(fastoptim.BACKEND != "c", reason="the pool exists only in the C backend")
def test_info_says_how_threads_run():
    env = {**os.environ, "FASTOPTIM_SPIN_US": "0", "OMP_NUM_THREADS": "3"}
    out = subprocess.run([sys.executable, "-m", "fastoptim", "info"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip()
            for line in out.stdout.splitlines() if ":" in line}
    assert rows["threads"] == "3" and rows["threads_from"] == "OMP_NUM_THREADS"
    assert rows["thread_pool"].startswith("fastoptim's own")
    assert rows["wait_policy"].startswith("spin 0 us")
    info = _core.pool_info()
    for dt in ("float32", "float64"):
        assert f"{dt} {info['parallel_threshold'][dt]}" in rows["parallel_threshold"]
        assert f"{dt} {info['parallel_threshold_asleep'][dt]}" in rows["parallel_threshold_asleep"]
    assert "threadpoolctl" in rows
