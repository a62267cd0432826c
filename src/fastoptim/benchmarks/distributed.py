"""python -m fastoptim bench --distributed, under mpiexec -n 1, 2, 4, ...:
fastoptim.distributed.DataParallel's Adam step against one process, against
shard_state=False and against torch's ZeroRedundancyOptimizer over gloo.

Models: the MLP [784, 256, 128, 10] and a 1e7-parameter model, float32. Each
rank uses cores // ranks threads. A DataParallel step is timed in its phases:
the gradients' check and copy into the send buffer (pack), the status exchange
(status), the all-to-all of slices or the all-gather of whole gradients
(exchange), the fused update (update) and the all-gather of the updated
parameters (gather); communication = status + exchange + gather. "one process"
is an ordinary fastoptim.Adam over the whole model stepped by rank 0 alone,
with every core's threads, while the other ranks sleep; "all-gather" is the
parameters' all-gather alone. Contenders are interleaved, rounds repeated, and
the best sample kept (its mean step). Rank 0 prints.
"""
import math
import os
import socket
import time

import numpy as np

ROUNDS = 5
MIN_SECONDS = 0.2    # per sample: steps are repeated until a sample lasts this long
MLP = (784, 256, 128, 10)
BIG = {"W1": (2500, 2000), "W2": (2000, 2000), "W3": (500, 2000)}   # 1e7 parameters
LR = 1e-3


def models(quick):
    mlp = {}
    for i, (n_in, n_out) in enumerate(zip(MLP, MLP[1:]), 1):
        mlp[f"W{i}"] = (n_out, n_in)
        mlp[f"b{i}"] = (n_out, 1)
    out = [("MLP [784, 256, 128, 10]", mlp)]
    if not quick:
        out.append(("1e7 parameters", BIG))
    return out


def _params(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s, dtype=np.float32) for k, s in shapes.items()}


def _grads(shapes, rank):
    rng = np.random.default_rng(1000 + rank)
    return {"d" + k: rng.standard_normal(s, dtype=np.float32) for k, s in shapes.items()}


def _quiet_wait(comm):
    """Wait for the other ranks without spinning (MPI's waits poll a core)."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(0.0005)


class Sample:
    """Per-step seconds by phase, over one sample's steps."""

    def __init__(self):
        self.phases = {}
        self.steps = 0

    def add(self, phase, seconds):
        self.phases[phase] = self.phases.get(phase, 0.0) + seconds

    def per_step(self):
        return {k: v / max(self.steps, 1) for k, v in self.phases.items()}


def _dp_sample(opt, grads, steps):
    """`steps` DataParallel steps timed phase by phase (the step's own code, in
    its order)."""
    clock = time.perf_counter
    s = Sample()
    for _ in range(steps):
        t0 = clock()
        checked = opt._checked_grads(grads)
        opt._pack(checked)
        t1 = clock()
        opt._check_status(None)
        t2 = clock()
        opt._exchange()
        t3 = clock()
        opt._update()
        t4 = clock()
        opt._gather()
        t5 = clock()
        s.add("pack", t1 - t0)
        s.add("status", t2 - t1)
        s.add("exchange", t3 - t2)
        s.add("update", t4 - t3)
        s.add("gather", t5 - t4)
        s.add("total", t5 - t0)
    s.steps = steps
    return s


def _gather_sample(opt, steps):
    clock = time.perf_counter
    s = Sample()
    for _ in range(steps):
        t0 = clock()
        opt._gather(always=True)
        s.add("total", clock() - t0)
    s.steps = steps
    return s


class TorchZero:
    """torch's ZeroRedundancyOptimizer (Adam) over gloo: all_reduce of each
    gradient, divided by w, then its step (which broadcasts the parameters)."""

    def __init__(self, comm, shapes, threads):
        import torch
        import torch.distributed as dist
        from torch.distributed.optim import ZeroRedundancyOptimizer

        self.torch, self.dist = torch, dist
        rank, world = comm.Get_rank(), comm.Get_size()
        if not dist.is_initialized():
            host = comm.bcast(socket.gethostname() if rank == 0 else None, root=0)
            port = None
            if rank == 0:
                with socket.socket() as s:
                    s.bind(("", 0))
                    port = s.getsockname()[1]
            port = comm.bcast(port, root=0)
            addr = "127.0.0.1" if world == 1 or _one_host(comm) else host
            dist.init_process_group("gloo", init_method=f"tcp://{addr}:{port}", rank=rank,
                                    world_size=world)
        torch.set_num_threads(threads)
        params = _params(shapes)
        grads = _grads(shapes, rank)
        self.params = [torch.nn.Parameter(torch.from_numpy(params[k])) for k in shapes]
        for p, k in zip(self.params, shapes):
            p.grad = torch.from_numpy(grads["d" + k].copy())
        self.world = world
        self.opt = ZeroRedundancyOptimizer(self.params, optimizer_class=torch.optim.Adam,
                                           lr=LR, foreach=True)
        self.opt.step()   # the state exists from here on

    def sample(self, steps):
        clock = time.perf_counter
        s = Sample()
        for _ in range(steps):
            t0 = clock()
            for p in self.params:
                self.dist.all_reduce(p.grad)
                p.grad.div_(self.world)
            t1 = clock()
            self.opt.step()
            t2 = clock()
            s.add("exchange", t1 - t0)
            s.add("update+broadcast", t2 - t1)
            s.add("total", t2 - t0)
        s.steps = steps
        return s

    def state_nbytes(self):
        return sum(v.numel() * v.element_size() for st in self.opt.optim.state.values()
                   for v in st.values() if self.torch.is_tensor(v) and v.dim() > 0)


def _one_host(comm):
    names = comm.allgather(socket.gethostname())
    return len(set(names)) == 1


def _ranks_on_node(comm):
    from mpi4py import MPI

    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return node.Get_size()
    finally:
        node.Free()


quick_run = [False]


def _steps_for(seconds_per_step):
    return max(3, min(2000, int((0.05 if quick_run[0] else MIN_SECONDS) / max(seconds_per_step, 1e-7))))


def run_case(comm, label, shapes, threads, cores, out, with_torch):
    import fastoptim as fo
    from fastoptim.distributed import DataParallel, _digest

    rank, world = comm.Get_rank(), comm.Get_size()
    n = sum(math.prod(s) for s in shapes.values())
    grads = _grads(shapes, rank)
    dp = {}
    for shard in (True, False, "zero-copy"):
        params = _params(shapes)
        dp[shard] = (DataParallel(fo.Adam, params, comm, shard_state=bool(shard),
                                  learning_rate=LR), params)
    # gradients written where the step reads them: no copy (pack only checks them)
    direct = dp["zero-copy"][0].grads
    for k, g in grads.items():
        direct[k][...] = g
    solo = fo.Adam(_params(shapes), learning_rate=LR) if rank == 0 else None
    solo_grads = _grads(shapes, 0)
    zero = None
    torch_note = None
    if with_torch:
        try:
            zero = TorchZero(comm, shapes, threads)
        except Exception as exc:   # torch missing or gloo unavailable: its rows are skipped
            torch_note = f"{type(exc).__name__}: {exc}"
    # warm up and size the samples on the sharded step
    first = _dp_sample(dp[True][0], grads, 3).per_step()["total"]
    steps = comm.bcast(_steps_for(first), root=0)
    best = {}

    def keep(name, sample):
        per = sample.per_step()
        if name not in best or per["total"] < best[name]["total"]:
            best[name] = per

    for r in range(ROUNDS):
        order = ["sharded", "direct", "whole", "gather", "solo", "torch"]
        order = order[r % len(order):] + order[:r % len(order)]
        for name in order:
            comm.Barrier()
            if name == "sharded":
                keep(name, _dp_sample(dp[True][0], grads, steps))
            elif name == "direct":
                keep(name, _dp_sample(dp["zero-copy"][0], direct, steps))
            elif name == "whole":
                keep(name, _dp_sample(dp[False][0], grads, steps))
            elif name == "gather":
                keep(name, _gather_sample(dp[True][0], steps))
            elif name == "solo":
                if rank == 0:
                    fo.set_num_threads(cores)
                    clock = time.perf_counter
                    s = Sample()
                    for _ in range(steps):
                        t0 = clock()
                        solo.step(solo_grads)
                        s.add("total", clock() - t0)
                    s.steps = steps
                    keep(name, s)
                    fo.set_num_threads(threads)
                _quiet_wait(comm)
            elif name == "torch" and zero is not None:
                keep(name, zero.sample(steps))
    # every rank's parameters are the same, bitwise
    same = all(len(set(comm.allgather(_digest({k: p.tobytes() for k, p in params.items()})))) == 1
               for _, params in dp.values())
    state = {shard: comm.allgather(opt.state_nbytes) for shard, (opt, _) in dp.items()
             if shard != "zero-copy"}
    zero_state = comm.allgather(zero.state_nbytes()) if zero is not None else None
    if rank != 0:
        return None
    total_state = sum(a.nbytes for d in solo.state.values() for a in d.values())
    ms = 1e3

    def row(name, contender, phases):
        p = best.get(contender)
        if p is None:
            return None
        comm_s = sum(p.get(k, 0.0) for k in ("status", "exchange", "gather"))
        return (name, f"{ms * p['total']:.3f}",
                f"{ms * comm_s:.3f}" if contender in ("sharded", "direct", "whole") else
                (f"{ms * p['exchange']:.3f}" if contender == "torch" else "-"),
                f"{ms * p['update']:.3f}" if "update" in p else
                (f"{ms * p['update+broadcast']:.3f}*" if contender == "torch" else "-"),
                " ".join(f"{k} {ms * p[k]:.3f}" for k in phases if k in p))

    rows = [row("DataParallel shard_state=True", "sharded",
                ("pack", "status", "exchange", "update", "gather")),
            row("  the same, gradients in opt.grads", "direct",
                ("pack", "status", "exchange", "update", "gather")),
            row("DataParallel shard_state=False", "whole",
                ("pack", "status", "exchange", "update")),
            row("one process (fastoptim.Adam, rank 0)", "solo", ()),
            row("all-gather of the parameters alone", "gather", ()),
            row("torch ZeroRedundancyOptimizer (gloo)", "torch", ("exchange", "update+broadcast"))]
    rows = [r for r in rows if r is not None]
    head = ("contender", "ms/step", "comm ms", "update ms", "phases (ms)")
    widths = [max(len(r[j]) for r in rows + [head]) for j in range(len(head))]

    def line(cells):
        return "  ".join(c.ljust(w) if j in (0, 4) else c.rjust(w)
                         for j, (c, w) in enumerate(zip(cells, widths)))

    print(f"\n{label}: {n} float32 parameters, Adam, {world} rank{'s' if world > 1 else ''} "
          f"x {threads} thread{'s' if threads > 1 else ''} ({steps} steps per sample, best of "
          f"{ROUNDS} interleaved rounds)", file=out)
    print(line(head), file=out)
    print(line(["-" * w for w in widths]), file=out)
    for r in rows:
        print(line(r), file=out)
    if torch_note:
        print(f"torch ZeroRedundancyOptimizer skipped: {torch_note}", file=out)
    elif zero is not None:
        print("* torch: its step includes ZeRO's broadcast of the updated parameters", file=out)
    block = 1024 * 4   # one norm chunk of float32 per state stream
    sharded = state[True]
    ideal = total_state / world
    print(f"state bytes per rank: shard_state=True {_bytes(max(sharded))} (max; ideal total/w "
          f"= {_bytes(ideal)}, largest excess {max(sharded) - ideal:.0f} B = "
          f"{(max(sharded) - ideal) / (2 * block):.2f} chunks of 1024 elements per stream); "
          f"shard_state=False {_bytes(max(state[False]))}; one process {_bytes(total_state)}"
          + (f"; torch ZeRO {_bytes(max(zero_state))}" if zero_state else ""), file=out)
    print(f"parameters bitwise equal on every rank after the runs: {'yes' if same else 'NO'}",
          file=out)
    verdicts = []
    within = max(sharded) - ideal <= 2 * (block + 64)
    verdicts.append(("state per rank = 1/w of the total within one chunk per stream",
                     "met" if within else "MISSED"))
    if label.startswith("1e7") and world == 2 and "solo" in best:
        bound = best["solo"]["total"] + best["gather"]["total"]
        verdicts.append((f"step {ms * best['sharded']['total']:.2f} ms <= one process "
                         f"{ms * best['solo']['total']:.2f} + all-gather "
                         f"{ms * best['gather']['total']:.2f} ms",
                         "met" if best["sharded"]["total"] <= bound else "MISSED"))
    for text, verdict in verdicts:
        print(f"  target: {text}: {verdict}", file=out)
    return best


def _bytes(n):
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def main(args, out):
    try:
        from mpi4py import MPI
    except ImportError:
        print("bench --distributed needs mpi4py: pip install 'fastoptim[mpi]', then "
              "mpiexec -n 2 python -m fastoptim bench --distributed", file=out)
        return 2
    import fastoptim as fo

    comm = MPI.COMM_WORLD
    rank, world = comm.Get_rank(), comm.Get_size()
    cores = os.cpu_count() or 1
    per_node = _ranks_on_node(comm)
    threads = args.threads or max(1, cores // per_node)
    fo.set_num_threads(threads)
    with_torch = True
    quick_run[0] = bool(args.quick)
    if rank == 0:
        library = MPI.Get_library_version().splitlines()[0].strip()
        print(f"fastoptim {fo.__version__} DataParallel benchmark: {world} rank"
              f"{'s' if world > 1 else ''} ({per_node} on this node of {cores} cores), "
              f"{library}, the {fo.BACKEND} backend", file=out)
        print("ms/step: the mean step of the best sample; comm: status + exchange + gather; "
              "compare ratios within this run", file=out)
    for label, shapes in models(args.quick):
        run_case(comm, label, shapes, threads, cores, out, with_torch)
    try:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    except ImportError:
        pass
    return 0
