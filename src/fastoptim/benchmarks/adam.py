"""python -m fastoptim bench: fastoptim against the other ways to take an optimizer step.

The protocol: every figure is a ratio measured in this one process, with the
contenders interleaved (A B A B ...) and the best of several rounds kept for each.
A sample times a batch of calls long enough (>= 20 ms by default) that timer
resolution and per-sample jitter do not matter; each contender reuses the same
arrays on every call, with its state warmed up before timing.

Contenders are a registry: `@contender(algorithm, name)` on a factory that takes an
`Inputs` and returns a zero-argument step callable (or raises `Unavailable`). Adding
one (an optimizer object, another library) is a few lines; another algorithm also
needs an entry in ALGORITHMS saying how many bytes per element it must move.
"""
import argparse
import functools
import gc
import itertools
import math
import os
import platform
import sys
import time
import tracemalloc

import numpy as np

SUBJECT = "fastoptim C"
OBJECT = "fastoptim Adam()"  # the optimizer object: arena, one C call per step
CEILING = "ceiling"

# The hyperparameters every contender uses, and a fixed step (the cost of a step
# does not depend on t).
LR, BETA1, BETA2, EPS = 0.01, 0.9, 0.999, 1e-8
STEP = 10

VECTOR_SIZES = (10**2, 10**3, 10**4, 10**5, 10**6, 10**7)
QUICK_SIZES = (10**2, 10**4, 10**6)
BIG_SIZE = 3 * 10**7
COURSE_NET = (2, 5, 2, 1)
MLP = (784, 256, 128, 10)
MEMORY_SIZE = 10**7
MEMORY_TARGET = 64 * 1024


class Algorithm:
    def __init__(self, name, title, streams, traffic):
        self.name = name
        self.title = title
        self.streams = streams  # arrays of the parameter's size read or written per step
        self.traffic = traffic

    def bytes_per_element(self, dtype):
        return self.streams * np.dtype(dtype).itemsize


ALGORITHMS = {
    "adam": Algorithm("adam", "Adam", 7, "read p, g, m, v; write p, m, v"),
}


# --- what is being updated ---------------------------------------------------------

class Problem:
    """A dict of parameter shapes in one dtype."""

    def __init__(self, label, shapes, dtype, kind):
        self.label = label
        self.shapes = tuple(shapes)  # ((key, shape), ...)
        self.dtype = np.dtype(dtype)
        self.kind = kind  # "vector" or "model"
        self.size = sum(math.prod(shape) for _, shape in self.shapes)

    def __repr__(self):
        return f"{self.label} {self.dtype.name}"


def size_label(n):
    for lead in (1, 3):
        k = round(math.log10(n / lead)) if n >= lead else 0
        if lead * 10**k == n and k >= 2:
            return f"{lead}e{k}"
    return str(n)


def vector(n, dtype):
    return Problem(f"n={size_label(n)}", [("W", (n,))], dtype, "vector")


def model(layers, dtype, name):
    """The course's shapes: W_l is (n_l, n_{l-1}), b_l is (n_l, 1)."""
    shapes = []
    for l in range(1, len(layers)):
        shapes += [(f"W{l}", (layers[l], layers[l - 1])), (f"b{l}", (layers[l], 1))]
    label = f"{name} [{','.join(map(str, layers))}]"
    return Problem(label, shapes, dtype, "model")


def course_net():
    return model(COURSE_NET, np.float64, "course net")


def mlp():
    return model(MLP, np.float32, "MLP")


class Inputs:
    """One problem's arrays: gradients shared by every contender (read only), and a
    fresh copy of the parameters with zero state for each contender that asks."""

    def __init__(self, problem, seed=0):
        rng = np.random.default_rng(seed)
        self.problem = problem
        dt = problem.dtype
        self.parameters = {k: rng.standard_normal(sh, dtype=dt) for k, sh in problem.shapes}
        self.grads = {"d" + k: rng.standard_normal(sh, dtype=dt) for k, sh in problem.shapes}

    def fresh(self):
        """(parameters, v, s): a private copy of the parameters and zero state."""
        p = {k: a.copy() for k, a in self.parameters.items()}
        v = {"d" + k: np.zeros_like(a) for k, a in p.items()}
        s = {"d" + k: np.zeros_like(a) for k, a in p.items()}
        return p, v, s


# --- the contenders ------------------------------------------------------------------

class Unavailable(Exception):
    """A contender that cannot run here (say why in the message)."""


CONTENDERS = {}  # algorithm -> {name: factory(Inputs) -> step callable}


def contender(algorithm, name):
    def register(factory):
        CONTENDERS.setdefault(algorithm, {})[name] = factory
        return factory
    return register


def _core():
    try:
        from .. import _core
    except ImportError as exc:
        raise Unavailable(f"compiled extension not importable ({exc})") from None
    return _core


def _torch():
    try:
        import torch
    except ImportError:
        raise Unavailable("torch not installed") from None
    return torch


def _course_adam(module):
    """update_parameters_with_adam through one backend."""
    from ..course import with_backend

    return with_backend(module.update)["adam"]


@contender("adam", SUBJECT)
def _adam_c(inputs):
    p, v, s = inputs.fresh()
    return functools.partial(_course_adam(_core()), p, inputs.grads, v, s, STEP, LR, BETA1,
                             BETA2, EPS)


@contender("adam", OBJECT)
def _adam_object(inputs):
    from .. import Adam

    p, _, _ = inputs.fresh()
    opt = Adam(p, learning_rate=LR, beta1=BETA1, beta2=BETA2, epsilon=EPS)
    return functools.partial(opt.step, inputs.grads)


@contender("adam", "fastoptim numpy")
def _adam_fallback(inputs):
    from .. import _fallback

    p, v, s = inputs.fresh()
    return functools.partial(_course_adam(_fallback), p, inputs.grads, v, s, STEP, LR, BETA1,
                             BETA2, EPS)


@contender("adam", "seed numpy")
def _adam_seed(inputs):
    from . import seed as _seed

    p, v, s = inputs.fresh()
    return functools.partial(_seed.update_parameters_with_adam, p, inputs.grads, v, s, STEP,
                             LR, BETA1, BETA2, EPS)


@contender("adam", "torch fused")
def _adam_torch(inputs):
    torch = _torch()
    p, _, _ = inputs.fresh()
    params = []
    for k, a in p.items():
        t = torch.from_numpy(a).requires_grad_()
        t.grad = torch.from_numpy(inputs.grads["d" + k])  # set once; step() only reads it
        params.append(t)
    try:
        opt = torch.optim.Adam(params, lr=LR, betas=(BETA1, BETA2), eps=EPS, fused=True)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise Unavailable(f"torch fused Adam: {exc}") from None
    return opt.step


@contender("adam", CEILING)
def _adam_ceiling(inputs):
    p, v, s = inputs.fresh()
    return functools.partial(_core().ceiling, p, inputs.grads, v, s)


def build(algorithm, inputs, names=None):
    """{name: step} for every contender that can run, and {name: reason} for the rest."""
    steps, skipped = {}, {}
    for name, factory in CONTENDERS[algorithm].items():
        if names is not None and name not in names:
            continue
        try:
            steps[name] = factory(inputs)
        except Unavailable as exc:
            skipped[name] = str(exc)
    return steps, skipped


# --- timing --------------------------------------------------------------------------

class CpuMeter:
    """CPUs' worth of time other processes took while we measured (Linux; None elsewhere).

    On a shared machine a parallel call waits for its slowest thread, so any figure on
    more than one thread is only as good as the machine was quiet: the table says how
    quiet it was, problem by problem."""

    def __init__(self):
        self._start = self._read()

    @staticmethod
    def _read():
        try:
            import resource

            with open("/proc/stat") as f:
                cpu = [int(x) for x in f.readline().split()[1:9]]
            hz = os.sysconf("SC_CLK_TCK")
        except (ImportError, OSError, ValueError):
            return None
        # user nice system idle iowait irq softirq steal: all but idle and iowait
        busy = (sum(cpu) - cpu[3] - cpu[4]) / hz
        own = resource.getrusage(resource.RUSAGE_SELF)
        return busy, own.ru_utime + own.ru_stime, time.perf_counter()

    def others(self):
        end = self._read()
        if self._start is None or end is None:
            return None
        (busy0, own0, t0), (busy1, own1, t1) = self._start, end
        return max(0.0, (busy1 - busy0) - (own1 - own0)) / max(t1 - t0, 1e-9)


def _time_batch(step, calls):
    clock = time.perf_counter_ns
    t0 = clock()
    for _ in itertools.repeat(None, calls):
        step()
    return clock() - t0


def _calibrate(step, min_ns):
    calls = 1
    while True:
        elapsed = _time_batch(step, calls)
        if elapsed >= min_ns:
            return calls
        calls = max(2 * calls, math.ceil(calls * 1.2 * min_ns / max(elapsed, 1)))


def measure(steps, rounds=7, min_ns=20_000_000):
    """Best time per call, in ns, for each step: warmed, batched, interleaved.
    The order rotates every round so no contender always follows the same one."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for step in steps.values():
            step()
            step()
        calls = {name: _calibrate(step, min_ns) for name, step in steps.items()}
        best = dict.fromkeys(steps, math.inf)
        names = list(steps)
        for r in range(rounds):
            j = r % len(names) if names else 0
            for name in names[j:] + names[:j]:
                best[name] = min(best[name], _time_batch(steps[name], calls[name]) / calls[name])
        return best
    finally:
        if gc_was_enabled:
            gc.enable()


def traced_peak(step):
    """Peak bytes tracemalloc sees allocated during one (warmed) call."""
    step()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        step()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --- the report ------------------------------------------------------------------------

def _fmt_time(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.3g} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.3g} µs"
    return f"{ns:.3g} ns"


def _fmt_bytes(b):
    if b >= 2**20:
        return f"{b / 2**20:.1f} MiB"
    return f"{b / 2**10:.1f} KiB"


HEADER = (f"{'case':<24} {'contender':<18} {'ns/elem':>9} {'per call':>10} {'GB/s':>8} "
          f"{'% ceiling':>9} {'C speed-up':>10}")


def table_rows(problem, algorithm, best):
    """Lines for one problem: one per contender, in registry order."""
    bytes_moved = algorithm.bytes_per_element(problem.dtype) * problem.size
    ceiling = best.get(CEILING)
    subject = best.get(SUBJECT)
    lines = []
    for i, (name, ns) in enumerate(best.items()):
        case = problem.label if i == 0 else ""
        pct = f"{100 * ceiling / ns:.0f}%" if ceiling else "-"
        speedup = f"{ns / subject:.2f}x" if subject else "-"
        lines.append(f"{case:<24} {name:<18} {ns / problem.size:>9.3g} {_fmt_time(ns):>10} "
                     f"{bytes_moved / ns:>8.3g} {pct:>9} {speedup:>10}")
    return lines


def ratio(results, problem_key, slower, faster):
    best = results.get(problem_key)
    if not best or slower not in best or faster not in best:
        return None
    return best[slower] / best[faster]


def targets(results, dtypes, memory):
    """fastoptim's speed targets as (description, measured, target, verdict) rows."""
    rows = []

    def check(desc, value, floor, unit="x", why=""):
        if value is None:
            rows.append((desc, "-", f">= {floor:g}{unit}", f"n/a{why}"))
        else:
            shown = f"{value:.0f}%" if unit == "%" else f"{value:.2f}x"
            rows.append((desc, shown, f">= {floor:g}{unit}", "PASS" if value >= floor else "FAIL"))

    for dt in dtypes:
        key = ("vector", 10**7, dt)
        ceil = ratio(results, key, CEILING, SUBJECT)
        check(f"Adam {dt} n=1e7: % of ceiling", None if ceil is None else 100 * ceil, 90, "%")
        check(f"Adam {dt} n=1e7: vs torch fused", ratio(results, key, "torch fused", SUBJECT), 1.0)
        for n in (10**5, 10**6):
            check(f"Adam {dt} n={size_label(n)}: vs torch fused",
                  ratio(results, ("vector", n, dt), "torch fused", SUBJECT), 1.5)
        key = ("vector", 100, dt)
        check(f"Adam {dt} n=100: vs torch fused", ratio(results, key, "torch fused", SUBJECT), 20)
        check(f"Adam {dt} n=100: vs seed numpy", ratio(results, key, "seed numpy", SUBJECT), 5)
    check("course net float64: vs seed numpy",
          ratio(results, ("model", "course", "float64"), "seed numpy", SUBJECT), 20)
    check("MLP float32: vs torch fused",
          ratio(results, ("model", "mlp", "float32"), "torch fused", SUBJECT), 2)
    check("course net float64, Adam(): vs seed numpy",
          ratio(results, ("model", "course", "float64"), "seed numpy", OBJECT), 40)
    check("MLP float32, Adam(): vs torch fused",
          ratio(results, ("model", "mlp", "float32"), "torch fused", OBJECT), 2.5)
    if memory and SUBJECT in memory[1]:
        n, peaks = memory
        peak = peaks[SUBJECT]
        rows.append((f"memory: traced peak, C step n={size_label(n)} float32", _fmt_bytes(peak),
                     "< 64 KiB", "PASS" if peak < MEMORY_TARGET else "FAIL"))
    else:
        rows.append(("memory: traced peak, C step float32", "-", "< 64 KiB", "n/a"))
    return rows


# --- the command ------------------------------------------------------------------------

def _sizes(text):
    try:
        sizes = [int(float(x)) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes must be numbers like 1e3,1e6; got {text!r}")
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be >= 1; got {text!r}")
    return sizes


def _available_memory():
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _setup(args, out):
    """Threads and instruction set for fastoptim and torch; prints the header."""
    from .. import _config

    threads = args.threads if args.threads is not None else _config.get_num_threads()
    _config.set_num_threads(threads)
    torch_note = "not installed (its rows are skipped)"
    try:
        torch = _torch()
        torch.set_num_threads(threads)
        torch_note = f"{torch.__version__}, {torch.get_num_threads()} threads"
    except Unavailable:
        pass
    isa = "-"
    try:
        core = _core()
        isa = core.set_isa(args.isa) if args.isa else core.isa_in_use()
        threshold = "/".join(map(str, core.build_info()["parallel_threshold"].values()))
    except Unavailable as exc:
        threshold = "-"
        print(f"fastoptim C and the ceiling are skipped: {exc}", file=out)
    print(f"fastoptim bench: {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}", file=out)
    print(f"fastoptim: isa {isa}, {_config.get_num_threads()} threads "
          f"(serial below {threshold} float32/float64 elements); numpy {np.__version__}; torch {torch_note}",
          file=out)
    print(f"protocol: contenders interleaved, best of {args.rounds} rounds, samples >= "
          f"{args.min_ms:g} ms; ratios within this run are what count on a shared machine",
          file=out)
    return threads


def run_problems(problems, algorithm, rounds, min_ns, out, results):
    skipped_all = {}
    for problem in problems:
        inputs = Inputs(problem)
        steps, skipped = build(algorithm.name, inputs)
        skipped_all.update(skipped)
        meter = CpuMeter()
        best = measure(steps, rounds, min_ns)
        busy = meter.others()
        results[_key(problem)] = best
        print_case(table_rows(problem, algorithm, best), busy, out)
        del inputs, steps
    return skipped_all


def print_case(lines, others, out):
    """A case's table rows, with the CPU other processes took during it under
    the case's name (a parallel call waits for its slowest thread)."""
    if others is not None and len(lines) > 1:
        note = f"  others {others:.2f} CPU"
        lines[1] = note + lines[1][len(note):]
    for line in lines:
        print(line, file=out)
    out.flush()


def _key(problem):
    if problem.kind == "vector":
        return ("vector", problem.size, problem.dtype.name)
    return ("model", "course" if problem.label.startswith("course") else "mlp",
            problem.dtype.name)


def memory_check(n, out):
    """Traced peak of one float32 Adam step at size n, for the contenders that allocate
    nothing (C) and those that do (NumPy), on one shared set of arrays."""
    inputs = Inputs(vector(n, np.float32))
    steps, _ = build("adam", inputs)
    peaks = {}
    for name in (SUBJECT, "fastoptim numpy", "seed numpy"):
        if name in steps:
            peaks[name] = traced_peak(steps[name])
    shown = "; ".join(f"{name} {_fmt_bytes(b)}" for name, b in peaks.items())
    print(f"memory: tracemalloc peak during one Adam step, n={size_label(n)} float32: {shown}",
          file=out)
    return n, peaks
