"""The measurements behind the thread pool's settings (csrc/driver.c, csrc/pool.c).

    python bench/pool_tuning.py [--quick] [--dtype float32|float64|both]

1. Serial thresholds. The Adam step at sizes around the thresholds, one call at a
   time (median of many), on 1 thread and on all threads, in two cadences:
   back to back (the workers are still spinning from the previous call: a call
   costs a few stores) and after a pause longer than the spin time (every worker
   sleeps: the call pays the wake-up system call, and a worker joins only after
   its wake-up latency). The thresholds are forced to 0 so that every size runs
   in parallel; the table shows where 2 threads start to win in each cadence:
   those are FO_PARALLEL_MIN_* and FO_PARALLEL_MIN_ASLEEP_*.
2. The wake-up latency itself: a call big enough to need a worker, after a
   pause, with workers asleep: how many chunks the worker took (it joins late)
   against back to back.

3. The idle workers' wait (--spin): the MLP training loop of
   fastoptim.benchmarks.loop with the default thread count and different spin
   policies, interleaved with the 1-thread step, quiet and with one other
   process spinning on a core.

Ratios within one run are what count; run it when the machine is quiet (the
"others" line says how quiet it was).
"""
import argparse
import statistics
import sys
import time

import numpy as np

import fastoptim
from fastoptim import _core
from fastoptim.benchmarks.adam import CpuMeter

SIZES = [4096, 8192, 16384, 32768, 65536, 131072, 262144, 524288, 1048576]


def problem(n, dtype):
    rng = np.random.default_rng(n)
    p = {"W": rng.standard_normal(n).astype(dtype)}
    g = {"dW": rng.standard_normal(n).astype(dtype)}
    v = {"dW": np.full(n, 0.1, dtype)}
    s = {"dW": np.full(n, 0.01, dtype)}
    return p, g, v, s


def timed_calls(args, calls, pause):
    """Median ns of one Adam call, each call after `pause` seconds (0: back to back)."""
    p, g, v, s = args
    adam = _core.adam
    clock = time.perf_counter_ns
    out = []
    for _ in range(calls):
        if pause:
            time.sleep(pause)
        t0 = clock()
        adam(p, g, v, s, 10, 0.01, 0.9, 0.999, 1e-8)
        out.append(clock() - t0)
    return statistics.median(out)


def thresholds(dtype, calls, rounds, threads, out):
    spin_s = _core.pool_info()["spin_us"] * 1e-6
    pause = max(0.002, 20 * spin_s)
    saved = (_core.pool_info()["parallel_threshold"][dtype],
             _core.pool_info()["parallel_threshold_asleep"][dtype])
    _core.set_parallel_threshold(dtype, 0, 0)
    print(f"\nAdam {dtype}: median us per call; 'asleep': each call after a {pause * 1e3:g} ms "
          f"pause (workers asleep), 'awake': back to back", file=out)
    print(f"{'n':>9} {'1 thr awake':>12} {f'{threads} thr awake':>12} {'ratio':>6}   "
          f"{'1 thr asleep':>12} {f'{threads} thr asleep':>12} {'ratio':>6}", file=out)
    try:
        for n in SIZES:
            args = problem(n, dtype)
            best = {}
            for _ in range(rounds):  # interleaved, best median of the rounds
                for nt in (1, threads):
                    fastoptim.set_num_threads(nt)
                    for pause_s, key in ((0, "awake"), (pause, "asleep")):
                        # warm: back to back for 20 ms first, so that a worker the
                        # scheduler woke on the caller's CPU has been moved off it
                        warm = 5 if pause_s else max(5, int(20_000 / (n * 5e-4)))
                        timed_calls(args, warm, pause_s)
                        t = timed_calls(args, calls, pause_s)
                        best[nt, key] = min(best.get((nt, key), float("inf")), t)
            a1, an, s1, sn = (best[1, "awake"], best[threads, "awake"], best[1, "asleep"],
                              best[threads, "asleep"])
            print(f"{n:>9} {a1 / 1e3:>12.1f} {an / 1e3:>12.1f} {a1 / an:>6.2f}   "
                  f"{s1 / 1e3:>12.1f} {sn / 1e3:>12.1f} {s1 / sn:>6.2f}", file=out)
            out.flush()
    finally:
        _core.set_parallel_threshold(dtype, *saved)
        fastoptim.set_num_threads(None)


SPIN_POLICIES = [  # (label, spin us, pause us)
    ("sleep at once", 0, 0),
    ("spin 50 us, pause", 50, 50),
    ("spin 50 us, yield", 50, 5),
    ("spin 300 us, yield", 300, 5),
    ("spin 1 ms, yield", 1000, 5),
]


def spin_policies(out, rounds, block):
    from fastoptim.benchmarks import loop

    class Policy(loop.DictAdam):
        def __init__(self, label, spin, pause, net):
            super().__init__(label, net, None)
            self.spin, self.pause = spin, pause

        def prepare(self):
            _core.set_spin_us(self.spin, self.pause)

    saved = _core.pool_info()["spin_us"], _core.pool_info()["pause_us"]
    try:
        for scenario in ("quiet", "busy"):
            net = loop.SoftmaxMLP()
            trainers = [loop.DictAdam(loop.ONE, net, 1)]
            trainers += [Policy(label, spin, pause, net) for label, spin, pause in SPIN_POLICIES]
            ctx = loop.Spinner() if scenario == "busy" else loop._Nothing()
            with ctx:
                meter = CpuMeter()
                stats = loop.summarize(loop.measure(trainers, rounds, block))
                others = meter.others()
            print(f"\nMLP training loop, {scenario}: idle workers' wait (others {others:.2f} CPU)",
                  file=out)
            print(loop.HEADER, file=out)
            for line in loop.table_rows("MLP", stats):
                print(line, file=out)
            out.flush()
    finally:
        _core.set_spin_us(*saved)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dtype", choices=("float32", "float64", "both"), default="both")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--spin", action="store_true", help="only the spin policies in the loop")
    ap.add_argument("--no-spin", dest="spin_too", action="store_false",
                    help="only the thresholds")
    args = ap.parse_args(argv)
    out = sys.stdout
    threads = args.threads or fastoptim.get_num_threads()
    if threads < 2:
        print("needs 2 or more threads", file=out)
        return 1
    calls, rounds = (30, 2) if args.quick else (100, 3)
    info = _core.pool_info()
    print(f"pool: spin {info['spin_us']} us then sleep ({info['wait']}); {threads} threads; "
          f"thresholds now {info['parallel_threshold']} / asleep "
          f"{info['parallel_threshold_asleep']}", file=out)
    meter = CpuMeter()
    dtypes = ["float32", "float64"] if args.dtype == "both" else [args.dtype]
    if not args.spin:
        for dt in dtypes:
            thresholds(dt, calls, rounds, threads, out)
    if args.spin or args.spin_too:
        spin_policies(out, rounds=3 if args.quick else 8, block=10 if args.quick else 25)
    busy = meter.others()
    if busy is not None:
        print(f"\nother processes used {busy:.2f} CPUs on average during this run", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
