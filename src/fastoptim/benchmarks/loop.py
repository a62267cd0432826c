"""python -m fastoptim bench --loop: the optimizer step inside a training loop.

A step timed alone runs with warm caches and idle cores. In training it follows a
forward and backward pass whose matrix products run on NumPy's multithreaded BLAS,
whose worker threads keep spinning for a while after each call, and the machine may
be running other work. Here every contender trains its own copy of a network:

- the MLP [784, 256, 128, 10] float32, batch 128, ReLU hidden layers, softmax
  cross-entropy, forward and backward in NumPy with its default BLAS threads;
- the course net [2, 5, 2, 1] float64 (fastoptim.demo.nn: sigmoid output), batch
  64, where the step is tiny.

One iteration is forward, backward, then the Adam step; both the iteration and the
step inside it are timed, one by one. Contenders run in interleaved blocks (A A ...
B B ... A A ...), so each meets the same machine, and the table gives the median
and 90th percentile of each. The whole run is then repeated with one other process
spinning on a core ("busy").
"""
import gc
import math
import multiprocessing
import os
import statistics
import time

import numpy as np

from . import adam as B
from . import seed as _seed

DEFAULT = "fastoptim default"
ONE = "fastoptim 1 thread"
OBJECT = "fastoptim Adam()"
SEED = "seed numpy"
TORCH = "torch fused"

MLP_LAYERS = (784, 256, 128, 10)
MLP_BATCH = 128
COURSE_LAYERS = (2, 5, 2, 1)
COURSE_BATCH = 64
LR = 1e-3


# --- the networks ------------------------------------------------------------------------

class SoftmaxMLP:
    """ReLU hidden layers, softmax output, mean cross-entropy, in the course's
    layout (W_l: (n_l, n_{l-1}), b_l: (n_l, 1), examples in columns), in float32."""

    dtype = np.float32

    def __init__(self, layers=MLP_LAYERS, batch=MLP_BATCH, seed=0):
        rng = np.random.default_rng(seed)
        self.layers = tuple(layers)
        self.L = len(layers) - 1
        X = rng.standard_normal((layers[0], batch), dtype=np.float32)
        labels = rng.integers(0, layers[-1], batch)
        Y = np.zeros((layers[-1], batch), np.float32)
        Y[labels, np.arange(batch)] = 1
        self.X, self.Y = X, Y

    def init(self, seed=1):
        rng = np.random.default_rng(seed)
        p = {}
        for l in range(1, self.L + 1):
            n, m = self.layers[l], self.layers[l - 1]
            p[f"W{l}"] = (rng.standard_normal((n, m)) * math.sqrt(2 / m)).astype(np.float32)
            p[f"b{l}"] = np.zeros((n, 1), np.float32)
        return p

    def grads(self, p):
        """Forward, cost and backward; returns the gradients {"dW1": ...}."""
        A, cache = self.X, []
        for l in range(1, self.L + 1):
            Z = p[f"W{l}"] @ A + p[f"b{l}"]
            cache.append(A)
            A = np.maximum(Z, 0) if l < self.L else Z
        Z = A - A.max(axis=0, keepdims=True)
        E = np.exp(Z)
        P = E / E.sum(axis=0, keepdims=True)
        m = self.X.shape[1]
        self.cost = float(-np.sum(self.Y * np.log(P + 1e-12)) / m)
        dZ = (P - self.Y) / np.float32(m)
        g = {}
        for l in range(self.L, 0, -1):
            A_prev = cache[l - 1]
            g[f"dW{l}"] = dZ @ A_prev.T
            g[f"db{l}"] = dZ.sum(axis=1, keepdims=True)
            if l > 1:
                dZ = (p[f"W{l}"].T @ dZ) * (A_prev > 0)
        return g


class CourseNet:
    """The course's network (fastoptim.demo.nn) on a fixed batch of moons-like points."""

    dtype = np.float64

    def __init__(self, layers=COURSE_LAYERS, batch=COURSE_BATCH, seed=0):
        rng = np.random.default_rng(seed)
        self.layers = tuple(layers)
        self.X = rng.standard_normal((layers[0], batch))
        self.Y = (self.X[0:1] * self.X[1:2] > 0).astype(np.float64)

    def init(self, seed=1):
        from ..demo import nn

        return nn.initialize_parameters(list(self.layers), dtype=np.float64, seed=seed)

    def grads(self, p):
        from ..demo import nn

        AL, caches = nn.forward_propagation(self.X, p)
        return nn.backward_propagation(self.X, self.Y, caches)


# --- the contenders: each trains its own copy --------------------------------------------

class Trainer:
    """One contender: its parameters, its state and its step; `threads` is the
    fastoptim thread count it runs with (None: the default)."""

    def __init__(self, name, net, threads=None):
        self.name, self.net, self.threads = name, net, threads
        self.p = net.init()
        self.t = 0

    def step(self, g):
        raise NotImplementedError

    def prepare(self):
        """Called before each of this contender's blocks."""

    def iteration(self):
        """(iteration ns, step ns)."""
        clock = time.perf_counter_ns
        t0 = clock()
        g = self.net.grads(self.p)
        t1 = clock()
        self.t += 1
        self.step(g)
        t2 = clock()
        return t2 - t0, t2 - t1


class DictAdam(Trainer):
    def __init__(self, name, net, threads=None):
        super().__init__(name, net, threads)
        from .. import course

        self.update = course.update_parameters_with_adam
        self.v = {"d" + k: np.zeros_like(a) for k, a in self.p.items()}
        self.s = {"d" + k: np.zeros_like(a) for k, a in self.p.items()}

    def step(self, g):
        self.update(self.p, g, self.v, self.s, self.t, LR)


class ObjectAdam(Trainer):
    def __init__(self, name, net, threads=None):
        super().__init__(name, net, threads)
        from .. import Adam

        self.opt = Adam(self.p, learning_rate=LR)  # self.p now holds views of its arena

    def step(self, g):
        self.opt.step(g)


class SeedAdam(DictAdam):
    def step(self, g):
        _seed.update_parameters_with_adam(self.p, g, self.v, self.s, self.t, LR)


class TorchAdam(Trainer):
    def __init__(self, name, net, threads=None):
        super().__init__(name, net, threads)
        torch = B._torch()
        self.tensors = {k: torch.from_numpy(a).requires_grad_() for k, a in self.p.items()}
        self.from_numpy = torch.from_numpy
        try:
            self.opt = torch.optim.Adam(list(self.tensors.values()), lr=LR, fused=True)
        except (RuntimeError, TypeError, ValueError) as exc:
            raise B.Unavailable(f"torch fused Adam: {exc}") from None

    def step(self, g):
        for k, t in self.tensors.items():  # the new gradients, shared with NumPy
            t.grad = self.from_numpy(g["d" + k])
        self.opt.step()


def contenders(net, with_torch=True, names=None):
    """[Trainer] (those named, or all), and {name: why} for those that cannot run here."""
    made, skipped = [], {}
    specs = [(DEFAULT, DictAdam, None), (ONE, DictAdam, 1), (OBJECT, ObjectAdam, None),
             (SEED, SeedAdam, None)]
    if with_torch:
        specs.append((TORCH, TorchAdam, None))
    for name, cls, threads in specs:
        if names is not None and name not in names:
            continue
        try:
            if cls is not SeedAdam:
                B._core()
            made.append(cls(name, net, threads))
        except B.Unavailable as exc:
            skipped[name] = str(exc)
    return made, skipped


# --- timing ----------------------------------------------------------------------------

def _spin(stop):
    while not stop.is_set():
        pass


class Spinner:
    """One other process spinning on a core while the block is active."""

    def __enter__(self):
        ctx = multiprocessing.get_context("spawn")
        self.stop = ctx.Event()
        self.proc = ctx.Process(target=_spin, args=(self.stop,), daemon=True)
        self.proc.start()
        time.sleep(0.2)  # let it reach its loop
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


def measure(trainers, rounds, block, warmup=2, gap=0.02):
    """{name: ([iteration ns], [step ns])}: `rounds` rounds; in each, every trainer runs
    `warmup` + `block` iterations in a row (the order rotating from round to round) and
    keeps the last `block`. A pause of `gap` seconds before each block lets the threads
    the previous contender left spinning (torch's OpenMP, NumPy's BLAS) go idle: a
    training loop runs one optimizer, not five, and none should pay for another's."""
    from .. import _config

    default = _config.get_num_threads()
    out = {tr.name: ([], []) for tr in trainers}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for tr in trainers:
            _config.set_num_threads(tr.threads if tr.threads else default)
            tr.prepare()
            for _ in range(warmup):
                tr.iteration()
        for r in range(rounds):
            j = r % len(trainers)
            for tr in trainers[j:] + trainers[:j]:
                _config.set_num_threads(tr.threads if tr.threads else default)
                tr.prepare()
                it, st = out[tr.name]
                time.sleep(gap)
                for _ in range(warmup):
                    tr.iteration()
                for _ in range(block):
                    a, b = tr.iteration()
                    it.append(a)
                    st.append(b)
    finally:
        _config.set_num_threads(default)
        if gc_was_enabled:
            gc.enable()
    return out


def p90(xs):
    s = sorted(xs)
    return s[min(len(s) - 1, math.ceil(0.9 * len(s)) - 1)]


def summarize(samples):
    """{name: (iteration median, p90, step median, p90)} in ns."""
    return {name: (statistics.median(it), p90(it), statistics.median(st), p90(st))
            for name, (it, st) in samples.items()}


HEADER = (f"{'case':<24} {'contender':<20} {'iter med':>9} {'iter p90':>9} {'step med':>9} "
          f"{'step p90':>9} {'iter/1thr':>9} {'seed/iter':>9} {'seed/step':>9}")


def _ms(ns):
    return f"{ns / 1e6:.3f}ms"


def _us(ns):
    return f"{ns / 1e3:.0f}us" if ns >= 1e4 else f"{ns / 1e3:.1f}us"


def table_rows(label, stats):
    one = stats.get(ONE)
    seed = stats.get(SEED)
    lines = []
    for i, (name, (im, ip, sm, sp)) in enumerate(stats.items()):
        rel = f"{im / one[0]:.2f}x" if one else "-"
        vs_seed = f"{seed[0] / im:.2f}x" if seed else "-"
        vs_seed_step = f"{seed[2] / sm:.2f}x" if seed else "-"
        lines.append(f"{label if i == 0 else '':<24} {name:<20} {_ms(im):>9} {_ms(ip):>9} "
                     f"{_us(sm):>9} {_us(sp):>9} {rel:>9} {vs_seed:>9} {vs_seed_step:>9}")
    return lines


def targets(stats, scenario):
    """BENCH.md's in-the-loop targets for the MLP, as (description, measured, target, verdict)."""
    rows = []
    d, one, seed = stats.get(DEFAULT), stats.get(ONE), stats.get(SEED)
    if not (d and one and seed):
        return [(f"{scenario}: in-the-loop targets", "-", "-", "n/a")]

    def row(desc, value, target, ok):
        rows.append((f"{scenario}: {desc}", f"{value:.2f}x", target, "PASS" if ok else "FAIL"))

    limit = 1.05 if scenario == "quiet" else 1.1
    r = d[0] / one[0]
    row("default iteration / 1 thread", r, f"<= {limit:g}x", r <= limit)
    r = seed[0] / d[0]
    floor = 1.3 if scenario == "quiet" else 1.2
    row("seed iteration / default", r, f">= {floor:g}x", r >= floor)
    if scenario == "quiet":
        r = seed[2] / d[2]
        row("seed step / default step", r, ">= 3x", r >= 3)
        r = d[3] / d[2]
        row("default step p90 / median", r, "<= 2x", r <= 2)
    return rows


def run(out, rounds=10, block=30, models=True, scenarios=("quiet", "busy"), with_torch=True):
    """Print the loop tables; returns {(scenario, net): stats}."""
    nets = [("MLP [784,256,128,10]", SoftmaxMLP)]
    if models:
        nets.append(("course net [2,5,2,1]", CourseNet))
    results, skipped_all = {}, {}
    for scenario in scenarios:
        busy = scenario == "busy"
        print(f"\nin the loop, {scenario}"
              f"{' (one other process spinning on a core)' if busy else ''}: "
              f"{rounds} rounds x {block} iterations per contender, interleaved; "
              f"iter = forward + backward + step; x columns: ratios of medians", file=out)
        print(HEADER, file=out)
        for label, cls in nets:
            net = cls()
            trainers, skipped = contenders(net, with_torch)
            skipped_all.update(skipped)
            ctx = Spinner() if busy else _Nothing()
            with ctx:
                meter = B.CpuMeter()
                stats = summarize(measure(trainers, rounds, block))
                others = meter.others()
            B.print_case(table_rows(label, stats), others, out)
            results[(scenario, label.split(" [")[0])] = stats
    for name, why in skipped_all.items():
        print(f"skipped {name}: {why}", file=out)
    print("\ntargets in the loop (BENCH.md; MLP; development machine, 2 threads)", file=out)
    for scenario in scenarios:
        stats = results.get((scenario, "MLP"), {})
        for desc, measured, target, verdict in targets(stats, scenario):
            print(f"  {desc:<44} {measured:>10}  {target:>9}  {verdict}", file=out)
    print("(\"others\" includes the spinning process in the busy scenario: about 1 CPU)",
          file=out)
    return results


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def _setup(args, out):
    """Threads for fastoptim and torch, as the stand-alone bench; prints the header."""
    from .. import _config

    threads = args.threads if args.threads is not None else _config.get_num_threads()
    _config.set_num_threads(threads)
    torch_note = "not installed (its rows are skipped)"
    try:
        torch = B._torch()
        torch.set_num_threads(threads)
        torch_note = f"{torch.__version__}, {torch.get_num_threads()} threads"
    except B.Unavailable:
        pass
    blas = "-"
    try:
        import threadpoolctl

        blas = ", ".join(f"{i['internal_api']} {i['num_threads']} threads"
                         for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas")
    except ImportError:
        pass
    print(f"fastoptim bench --loop: {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}; fastoptim {_config.get_num_threads()} threads "
          f"(spin {_config.config().get('spin_us', '-')} us, then sleep); numpy {np.__version__} (BLAS: {blas}); "
          f"torch {torch_note}", file=out)


def main(args, out):
    """The --loop command: args from fastoptim.benchmarks.cli."""
    rounds = args.rounds if args.rounds is not None else (3 if args.quick else 10)
    block = args.iters if args.iters is not None else (10 if args.quick else 30)
    _setup(args, out)
    run(out, rounds=rounds, block=block, models=args.models)
    return 0
