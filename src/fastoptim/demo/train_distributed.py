"""python -m fastoptim train --distributed, under mpiexec: the course's
training run, data-parallel over MPI (fastoptim.distributed.DataParallel).

Every rank draws the course's mini-batches (the same shuffle) and takes its
share of each: rank r of w takes the columns [r*m_b//w, (r+1)*m_b//w) of a
mini-batch of m_b examples. The course's backward pass returns the gradient of
its cost divided by the examples it was given (m_r), so each rank multiplies
its gradient by w*m_r/m_b: the ranks' mean, which DataParallel steps with, is
then the gradient of the whole mini-batch (up to the order of the additions).
A rank whose share is empty steps with zeros.
"""
import sys
import time

import numpy as np

from .. import __version__
from .. import _backend
from ..course import random_mini_batches
from .nn import backward_propagation, compute_cost, forward_propagation, initialize_parameters
from .train import (COURSE_LAYERS, DECAYS, OPTIMIZER_NAMES, OPTIMIZERS, _course_accuracy,
                    _epochs, accuracy)


def _optimizer(name):
    """The course's update as an optimizer class and its settings."""
    import fastoptim as fo

    if name == "gd":
        return fo.GD, {}
    if name == "momentum":
        return fo.Momentum, {"beta": 0.9}
    return fo.Adam, {"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8}


def share(m, rank, world):
    """The columns [lo, hi) of a mini-batch of m examples that `rank` takes."""
    return rank * m // world, (rank + 1) * m // world


def local_gradients(X, Y, parameters, rank, world):
    """This rank's gradients of its share of the mini-batch (X, Y), scaled so
    that the ranks' mean is the whole mini-batch's gradient; and its summed
    cost."""
    m = X.shape[1]
    lo, hi = share(m, rank, world)
    if hi == lo:
        return {"d" + k: np.zeros_like(p) for k, p in parameters.items()}, 0.0
    AL, caches = forward_propagation(X[:, lo:hi], parameters)
    cost = compute_cost(AL, Y[:, lo:hi])
    grads = backward_propagation(X[:, lo:hi], Y[:, lo:hi], caches)
    factor = world * (hi - lo) / m
    if factor != 1.0:
        for g in grads.values():
            g *= factor
    return grads, cost


class _Result:
    def __init__(self, name):
        self.optimizer = name
        self.final_cost = None
        self.accuracy = None
        self.seconds = 0.0
        self.step_seconds = 0.0
        self.steps = 0
        self.identical = None


def train(name, X, Y, args, comm):
    """One optimizer's data-parallel run; rank 0 prints its progress."""
    from ..distributed import DataParallel, _digest

    rank, world = comm.Get_rank(), comm.Get_size()
    result = _Result(name)
    parameters = initialize_parameters(COURSE_LAYERS)
    cls, settings = _optimizer(name)
    opt = DataParallel(cls, parameters, comm, learning_rate=args.learning_rate, **settings)
    decay = DECAYS[args.decay]
    m = X.shape[1]
    seed = 10
    clock = time.perf_counter
    start = clock()
    for i in range(args.epochs):
        seed = seed + 1
        cost_total = 0.0
        for mb_X, mb_Y in random_mini_batches(X, Y, args.mini_batch_size, seed):
            grads, cost = local_gradients(mb_X, mb_Y, parameters, rank, world)
            cost_total += cost
            t0 = clock()
            opt.step(grads)
            result.step_seconds += clock() - t0
            result.steps += 1
        if decay:
            opt.learning_rate = decay(args.learning_rate, i, args.decay_rate)
        # the epoch's cost: the ranks' sums added in rank order
        cost = sum(comm.allgather(cost_total)) / m
        if rank == 0 and i % 1000 == 0:
            print("Cost after epoch %i: %f" % (i, cost), flush=True)
        result.final_cost = cost
    result.seconds = clock() - start
    result.accuracy = accuracy(X, Y, parameters)
    digests = comm.allgather(_digest({k: p.tobytes() for k, p in parameters.items()}))
    result.identical = len(set(digests)) == 1
    if rank == 0:
        print("Accuracy: %.1f%%" % result.accuracy, flush=True)
    return result


def main(args):
    """The distributed run of python -m fastoptim train (args parsed by
    train.main); returns the exit status."""
    try:
        from mpi4py import MPI
    except ImportError:
        print("fastoptim train --distributed needs mpi4py: pip install 'fastoptim[mpi]', "
              "then mpiexec -n 2 python -m fastoptim train --distributed", file=sys.stderr)
        return 2
    from .datasets import load_dataset

    comm = MPI.COMM_WORLD
    rank, world = comm.Get_rank(), comm.Get_size()
    X, Y = load_dataset()
    optimizers = OPTIMIZERS if args.optimizer == "all" else (args.optimizer,)
    if rank == 0:
        library = MPI.Get_library_version().splitlines()[0].strip()
        print(f"fastoptim {__version__}, training data-parallel on {world} "
              f"rank{'s' if world > 1 else ''} ({library}), the {_backend.BACKEND} backend\n"
              f"moons data (300 points), network {COURSE_LAYERS}, {_epochs(args.epochs)}, "
              f"learning rate {args.learning_rate:g}, mini-batches of {args.mini_batch_size}, "
              f"each split into {world} rank shares")
    results = []
    for name in optimizers:
        if rank == 0:
            print(f"\n== {OPTIMIZER_NAMES[name]} ==", flush=True)
        results.append(train(name, X, Y, args, comm))
    if rank == 0:
        print()
        print(_table(results, args, world))
    return 0


def _table(results, args, world):
    head = ("optimizer", "final cost", "accuracy", "course", "ms/epoch", "step",
            "same on every rank")
    rows = []
    for r in results:
        course = _course_accuracy(r.optimizer, args)
        rows.append((OPTIMIZER_NAMES[r.optimizer], f"{r.final_cost:.6f}", f"{r.accuracy:.1f}%",
                     "-" if course is None else f"{course:.1f}%",
                     f"{1e3 * r.seconds / args.epochs:.3f}",
                     f"{1e6 * r.step_seconds / max(r.steps, 1):.1f} us",
                     "yes (bitwise)" if r.identical else "NO"))
    widths = [max(len(row[j]) for row in rows + [head]) for j in range(len(head))]

    def line(cells):
        return "  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                         for j, (c, w) in enumerate(zip(cells, widths)))

    out = [line(head), line(["-" * w for w in widths])] + [line(row) for row in rows]
    out.append("")
    out.append(f"accuracy: on the training set; step: mean time of DataParallel.step on rank 0 "
               f"(communication included), {world} ranks")
    return "\n".join(out)
