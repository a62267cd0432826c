"""python -m fastoptim bench: the command line of the benchmarks."""
import argparse
import os
import sys

import numpy as np

from . import adam as B
from . import family


CONTENDERS = """\
contenders (rows):
  fastoptim C       update_parameters_with_adam with the compiled backend
  fastoptim Adam()  the optimizer object fastoptim.Adam (parameters in one buffer)
  fastoptim numpy   update_parameters_with_adam with the NumPy fallback
  seed numpy        the course's NumPy update (a loop over the dict that builds new arrays)
  torch fused       torch.optim.Adam(fused=True) on the CPU, when torch is installed
  ceiling           a loop that moves the same bytes as Adam with trivial arithmetic:
                    the most this machine's memory allows

Every figure is measured in this run with the contenders interleaved (best of
several rounds), so compare ratios within one run. The targets at the end are
fastoptim's goals on a quiet 2-core x86-64 machine; on others they are a guide."""


def parse_args(argv, prog="python -m fastoptim bench"):
    ap = argparse.ArgumentParser(
        prog=prog,
        description="Time fastoptim's Adam step, per vector size and for two whole models\n"
                    "(the course's network and an MLP), against the other ways to take it.",
        epilog=CONTENDERS,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="fewer rounds, shorter samples and fewer sizes (smoke tests)")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for fastoptim and torch (default: fastoptim's current count)")
    ap.add_argument("--dtype", choices=("float32", "float64", "both"), default="both")
    ap.add_argument("--sizes", type=B._sizes, default=None,
                    help="comma-separated vector sizes (default 1e2,1e3,...,1e7)")
    ap.add_argument("--big", action="store_true", help="add n=3e7 when memory allows")
    ap.add_argument("--no-models", dest="models", action="store_false",
                    help="skip the whole-model steps")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 7)")
    ap.add_argument("--min-ms", type=float, default=None,
                    help="shortest timed sample in ms (default 20)")
    ap.add_argument("--isa", choices=("baseline", "avx2", "avx512"), default=None,
                    help="cap fastoptim's instruction set (default: the best available)")
    ap.add_argument("--algo", choices=("adam", "all", "lowp"), default="adam",
                    help="all: every optimizer fastoptim has (SGD, Adam, AdamW, NAdam, ...) "
                         "against its own ceiling and torch (default size 1e7); lowp: Adam "
                         "with 16-bit parameters, bfloat16 and 8-bit state, each against its "
                         "own ceiling, bitsandbytes and torchao (default size 1e7)")
    ap.add_argument("--loop", action="store_true",
                    help="the step inside a training loop (an MLP and the course net, forward "
                         "and backward in NumPy): quiet, then with one other process busy")
    ap.add_argument("--distributed", action="store_true",
                    help="fastoptim.distributed.DataParallel under mpiexec (mpiexec -n 2 python -m "
                         "fastoptim bench --distributed): communication and update per step, "
                         "state per rank, against one process, shard_state=False and torch ZeRO")
    ap.add_argument("--iters", type=int, default=None,
                    help="--loop: iterations per contender and round (default 30)")
    return ap.parse_args(argv)


def main(argv=None, out=None, prog="python -m fastoptim bench"):
    out = sys.stdout if out is None else out
    args = parse_args(sys.argv[1:] if argv is None else list(argv), prog)
    if args.distributed:
        from . import distributed

        return distributed.main(args, out)
    if args.loop:
        from . import loop

        return loop.main(args, out)
    if args.rounds is None:
        args.rounds = 3 if args.quick else 7
    if args.min_ms is None:
        args.min_ms = 5.0 if args.quick else 20.0
    sizes = args.sizes or list(B.QUICK_SIZES if args.quick else B.VECTOR_SIZES)
    dtypes = ["float32", "float64"] if args.dtype == "both" else [args.dtype]
    if args.big:
        need = 10 * B.ALGORITHMS["adam"].bytes_per_element(np.float64) * B.BIG_SIZE
        avail = B._available_memory()
        if avail is None or avail > need:
            sizes.append(B.BIG_SIZE)
        else:
            print(f"n=3e7 skipped: {avail / 2**30:.1f} GiB available", file=out)

    run_meter = B.CpuMeter()
    B._setup(args, out)
    if args.algo == "all":
        args.sizes = None if args.sizes is None else sizes
        family.main(args, out)
        return 0
    if args.algo == "lowp":
        from . import lowp

        args.sizes = None if args.sizes is None else sizes
        lowp.main(args, out)
        return 0
    adam = B.ALGORITHMS["adam"]
    min_ns = args.min_ms * 1e6
    results = {}
    skipped = {}
    for dt in dtypes:
        print(f"\n{adam.title} {dt}: {adam.bytes_per_element(dt)} bytes/element "
              f"({adam.traffic}); C speed-up = contender time / fastoptim C time", file=out)
        print(B.HEADER, file=out)
        skipped.update(B.run_problems([B.vector(n, dt) for n in sizes], adam, args.rounds, min_ns,
                                    out, results))
    if args.models:
        print(f"\n{adam.title}, whole-model steps (one call per step; {B.OBJECT}: the object API)",
              file=out)
        print(B.HEADER, file=out)
        skipped.update(B.run_problems([B.course_net(), B.mlp()], adam, args.rounds, min_ns, out,
                                    results))
    for name, why in skipped.items():
        print(f"skipped {name}: {why}", file=out)

    print(file=out)
    memory = B.memory_check(B.MEMORY_SIZE if not args.quick else 10**6, out)

    print("\ntargets (fastoptim's goals on a quiet 2-core x86-64 machine, 2 threads)", file=out)
    for desc, measured, target, verdict in B.targets(results, dtypes, memory):
        print(f"  {desc:<44} {measured:>10}  {target:>9}  {verdict}", file=out)
    busy = run_meter.others()
    if busy is not None:
        print(f"other processes used {busy:.2f} of {os.cpu_count()} CPUs on average during "
              f"this run (\"others\" under each case: during that case); a parallel call "
              f"waits for its slowest thread, so figures on more than one thread (fastoptim "
              f"above its serial threshold, the ceiling, torch at every size) need them near 0",
              file=out)
    return 0
