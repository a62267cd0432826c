"""The course's training run: the moons data, the network of fastoptim.demo.nn,
mini-batch gradient descent, momentum or Adam through fastoptim's updates.

`model` is the course's function. `main` is `python -m fastoptim train`: it
trains, shows progress, and prints a table with the final cost, the training
accuracy, the time per epoch, and the time the optimizer updates take with the
compiled backend and with the NumPy fallback, measured on identical inputs.
"""
import math
import os
import sys
import time

import numpy as np

from .. import course
from ..schedules import schedule_lr_decay, update_lr
from .nn import (
    backward_propagation,
    compute_cost,
    forward_propagation,
    initialize_parameters,
    predict,
)

OPTIMIZERS = ("gd", "momentum", "adam")
OPTIMIZER_NAMES = {"gd": "gradient descent", "momentum": "momentum", "adam": "adam"}

# The course's published training accuracy (%), layers [2, 5, 2, 1], learning
# rate 0.0007, mini-batches of 64, no decay: {epochs: {optimizer: accuracy}}.
COURSE_ACCURACY = {
    5000: {"gd": 71.7, "momentum": 71.7, "adam": 94.3},
    10000: {"gd": 79.7, "momentum": 79.7, "adam": 94.0},
}
COURSE_LAYERS = [2, 5, 2, 1]


def model(X, Y, layers_dims, optimizer="adam", learning_rate=0.0007, mini_batch_size=64,
          beta=0.9, beta1=0.9, beta2=0.999, epsilon=1e-8, num_epochs=5000, print_cost=True,
          decay=None, decay_rate=1):
    """Train the network `layers_dims` on X (n_0, m), Y (n_L, m) as the course does.

    optimizer: "gd", "momentum" or "adam". Each epoch reshuffles the data
    into mini-batches (the shuffle seed starts at 10 and is increased before
    each epoch) and makes one update per mini-batch; Adam's t counts the
    mini-batches. The epoch's cost is the summed cost of its mini-batches
    divided by m. With print_cost, "Cost after epoch %i: %f" is printed every
    1000 epochs. decay: None, or a function decay(learning_rate0, epoch_num,
    decay_rate) such as update_lr or schedule_lr_decay, applied after each epoch.
    The network computes in X's dtype when it is float32 (else float64).

    Returns the trained parameters.
    """
    X, Y = _data(X, Y)
    parameters = initialize_parameters(layers_dims, dtype=_dtype(X))
    state = initial_state(optimizer, parameters)
    step = update_step(optimizer, course.update_parameters_with_gd,
                       course.update_parameters_with_momentum,
                       course.update_parameters_with_adam, beta, beta1, beta2, epsilon)
    epochs = train_epochs(X, Y, parameters, state, step, learning_rate, mini_batch_size,
                          num_epochs, decay, decay_rate)
    for i, cost_avg, lr in epochs:
        if print_cost and i % 1000 == 0:
            print("Cost after epoch %i: %f" % (i, cost_avg))
            if decay:
                print("learning rate after epoch %i: %f" % (i, lr))
    return parameters


def initial_state(optimizer, parameters):
    """The optimizer's state for `parameters`: () for gd, (v,) for momentum, (v, s) for adam."""
    if optimizer == "gd":
        return ()
    if optimizer == "momentum":
        return (course.initialize_velocity(parameters),)
    if optimizer == "adam":
        return course.initialize_adam(parameters)
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {optimizer!r}")


def update_step(optimizer, gd, momentum, adam, beta=0.9, beta1=0.9, beta2=0.999, epsilon=1e-8):
    """step(parameters, grads, state, t, learning_rate) for one optimizer,
    calling gd/momentum/adam with the course's arguments (the public
    functions and both backends' functions take the same ones)."""
    if optimizer == "gd":
        return lambda p, g, state, t, lr: gd(p, g, lr)
    if optimizer == "momentum":
        return lambda p, g, state, t, lr: momentum(p, g, state[0], beta, lr)
    if optimizer == "adam":
        return lambda p, g, state, t, lr: adam(p, g, state[0], state[1], t, lr,
                                               beta1, beta2, epsilon)
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {optimizer!r}")


def train_epochs(X, Y, parameters, state, step, learning_rate, mini_batch_size, num_epochs,
                 decay=None, decay_rate=1):
    """The course's training loop, one epoch per iteration: updates
    `parameters` in place and yields (epoch, cost / m, learning_rate) after
    each epoch, where learning_rate is the rate the next epoch will use."""
    m = X.shape[1]
    learning_rate0 = learning_rate
    seed = 10
    t = 0
    for i in range(num_epochs):
        seed = seed + 1
        cost_total = 0.0
        for minibatch_X, minibatch_Y in course.random_mini_batches(X, Y, mini_batch_size, seed):
            AL, caches = forward_propagation(minibatch_X, parameters)
            cost_total += compute_cost(AL, minibatch_Y)
            grads = backward_propagation(minibatch_X, minibatch_Y, caches)
            t = t + 1
            step(parameters, grads, state, t, learning_rate)
        if decay:
            learning_rate = decay(learning_rate0, i, decay_rate)
        yield i, cost_total / m, learning_rate


def accuracy(X, Y, parameters):
    """Percentage of examples predicted correctly."""
    return 100.0 * float(np.mean(predict(X, parameters) == Y))


def _data(X, Y):
    X = np.asarray(X)
    Y = np.asarray(Y)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[1] != Y.shape[1]:
        raise ValueError(
            f"X and Y must be 2-D with one column per example; got shapes {X.shape} and {Y.shape}"
        )
    return X, Y


def _dtype(X):
    return X.dtype if X.dtype in (np.float32, np.float64) else np.float64


# ---------------------------------------------------------------- the CLI

DECAYS = {"none": None, "update_lr": update_lr, "schedule": schedule_lr_decay}


def _parser(prog="python -m fastoptim train"):
    import argparse

    p = argparse.ArgumentParser(
        prog=prog,
        description="Train the course's 3-layer network [2, 5, 2, 1] on the moons data with "
                    "gradient descent, momentum and Adam, and time fastoptim's updates. "
                    "The defaults are the course's run.",
    )
    p.add_argument("--optimizer", choices=OPTIMIZERS + ("all",), default="all",
                   help="which optimizer to train with (default: all three)")
    p.add_argument("--epochs", type=int, default=5000, help="epochs (default: 5000)")
    p.add_argument("--learning-rate", type=float, default=0.0007,
                   help="learning rate (default: 0.0007)")
    p.add_argument("--mini-batch-size", type=int, default=64, help="default: 64")
    p.add_argument("--decay", choices=tuple(DECAYS), default="none",
                   help="learning-rate decay after each epoch (default: none)")
    p.add_argument("--decay-rate", type=float, default=1.0, help="default: 1")
    p.add_argument("--backend", choices=("c", "numpy"), default=None,
                   help="backend that performs the training updates (default: fastoptim's); "
                        "the other one is timed on copies of the same inputs, on a sample "
                        "of the steps")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over MPI, under mpiexec (each rank takes its share of "
                        "every mini-batch; needs pip install 'fastoptim[mpi]'): "
                        "mpiexec -n 2 python -m fastoptim train --distributed")
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw the cost curves and decision boundaries into FILE.png (needs "
                        "matplotlib; .pdf, .svg and the other formats matplotlib knows work "
                        "too; any other name gets .png added)")
    return p


def main(argv=None, prog="python -m fastoptim train"):
    """python -m fastoptim train [options]; returns the exit status."""
    parser = _parser(prog)
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    if args.mini_batch_size < 1:
        parser.error("--mini-batch-size must be >= 1")
    if not (np.isfinite(args.learning_rate) and args.learning_rate >= 0):
        parser.error("--learning-rate must be finite and >= 0")
    if not (np.isfinite(args.decay_rate) and args.decay_rate >= 0):
        parser.error("--decay-rate must be finite and >= 0")
    if args.plot and not os.path.isdir(os.path.dirname(os.path.abspath(args.plot))):
        parser.error(f"--plot: the folder of {args.plot!r} does not exist")

    if args.distributed:
        if args.plot or args.backend:
            parser.error("--distributed takes neither --plot nor --backend "
                         "(FASTOPTIM_BACKEND=numpy chooses the NumPy backend)")
        from .train_distributed import main as distributed_main

        return distributed_main(args)
    backends = _backends()
    chosen = args.backend or _default_backend()
    if chosen not in backends:
        print("fastoptim train: the compiled backend is not available "
              "(the extension did not import); use --backend numpy", file=sys.stderr)
        return 2
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("fastoptim train: --plot needs matplotlib: "
                  "pip install 'fastoptim[train]' (or pip install matplotlib)", file=sys.stderr)
            return 2
        plot_path, plot_format = _plot_file(args.plot)

    from .datasets import load_dataset

    X, Y = load_dataset()
    optimizers = OPTIMIZERS if args.optimizer == "all" else (args.optimizer,)
    print(_header(args, chosen))
    runs = []
    for name in optimizers:
        print(f"\n== {OPTIMIZER_NAMES[name]} ==")
        runs.append(_run(name, X, Y, args, backends, chosen))
    print()
    print(_table(runs, args, chosen))
    if args.plot:
        _figure(runs, X, Y, args).savefig(plot_path, format=plot_format, dpi=100)
        print(f"\nwrote {plot_path}")
    return 0


def _default_backend():
    from .. import BACKEND

    return BACKEND


def _backends():
    """The course's updates by backend, {"c": ..., "numpy": ...} (see
    fastoptim.course.with_backend), without "c" when the extension does not
    import."""
    from .. import _fallback

    backends = {"numpy": _Backend(_fallback)}
    try:
        from .. import _core
    except ImportError:
        pass
    else:
        backends["c"] = _Backend(_core)
    return backends


class _Backend:
    """One backend's gd, momentum and adam with the course's signatures."""

    def __init__(self, module):
        steps = course.with_backend(module.update)
        self.gd, self.momentum, self.adam = steps["gd"], steps["momentum"], steps["adam"]


class _Run:
    """One optimizer's training run and its measurements."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.costs = []          # (epoch, cost) for the cost curve
        self.final_cost = None
        self.accuracy = None
        self.parameters = None
        self.train_seconds = 0.0
        self.update_seconds = 0.0  # the training backend's updates, every step
        self.steps = 0
        self.per_step = {}         # backend -> mean seconds of one update, compared steps
        self.compared = 0


def _run(optimizer, X, Y, args, backends, chosen):
    run = _Run(optimizer)
    parameters = initialize_parameters(COURSE_LAYERS)
    state = initial_state(optimizer, parameters)
    steps = {name: update_step(optimizer, b.gd, b.momentum, b.adam)
             for name, b in backends.items()}
    batches = -(-X.shape[1] // args.mini_batch_size)
    stride = max(1, args.epochs * batches // COMPARED_STEPS)
    timed = _TimedStep(steps, chosen, parameters, state, stride)
    epochs = train_epochs(X, Y, parameters, state, timed, args.learning_rate,
                          args.mini_batch_size, args.epochs, DECAYS[args.decay], args.decay_rate)
    every = max(1, args.epochs // 100)  # points on the cost curve
    bar = _progress(args.epochs, OPTIMIZER_NAMES[optimizer])
    clock = time.perf_counter
    try:
        start = clock()
        for i, cost, lr in epochs:
            run.train_seconds += clock() - start
            if i % every == 0 or i == args.epochs - 1:
                run.costs.append((i, cost))
            if i % 1000 == 0:
                bar.write("Cost after epoch %i: %f" % (i, cost))
                if args.decay != "none":
                    bar.write("learning rate after epoch %i: %f" % (i, lr))
            bar.update(1)
            run.final_cost = cost
            start = clock()
    finally:
        bar.close()
    # The comparison's copies and extra update are not part of training.
    run.train_seconds -= timed.overhead
    run.update_seconds = timed.total
    run.steps = timed.calls
    run.compared = timed.compared
    run.per_step = timed.per_step()
    run.parameters = parameters
    run.accuracy = accuracy(X, Y, parameters)
    print("Accuracy: %.1f%%" % run.accuracy)
    return run


COMPARED_STEPS = 5000  # at most this many updates per run are timed on every backend


class _TimedStep:
    """Performs each update with the chosen backend and times it. Every
    `stride`-th update is also made by each other backend, on a copy of the
    same parameters and state, interleaved with the real one (the order
    alternates), so the backends are compared on identical inputs."""

    def __init__(self, steps, chosen, parameters, state, stride=1):
        self.step = steps[chosen]
        self.chosen = chosen
        self.others = [(name, step, _copy(parameters), tuple(_copy(d) for d in state))
                       for name, step in steps.items() if name != chosen]
        self.stride = stride
        self.calls = 0
        self.total = 0.0      # the chosen backend, every call
        self.compared = 0
        self.paired = dict.fromkeys(steps, 0.0)  # every backend, compared calls only
        self.overhead = 0.0   # time spent on the comparison

    def __call__(self, parameters, grads, state, t, lr):
        clock = time.perf_counter
        self.calls += 1
        if not self.others or self.calls % self.stride:
            start = clock()
            self.step(parameters, grads, state, t, lr)
            self.total += clock() - start
            return
        self.compared += 1
        start = clock()
        for _, _, p_copy, state_copy in self.others:
            _copy_into(p_copy, parameters)
            for d_copy, d in zip(state_copy, state):
                _copy_into(d_copy, d)
        copied = clock()
        chosen_first = self.compared % 2 == 0
        if chosen_first:
            self.step(parameters, grads, state, t, lr)
        chosen_done = clock()
        for name, step, p_copy, state_copy in self.others:
            t0 = clock()
            step(p_copy, grads, state_copy, t, lr)
            self.paired[name] += clock() - t0
        others_done = clock()
        if not chosen_first:
            self.step(parameters, grads, state, t, lr)
        end = clock()
        chosen_seconds = (chosen_done - copied) + (end - others_done)
        self.paired[self.chosen] += chosen_seconds
        self.total += chosen_seconds
        self.overhead += (end - start) - chosen_seconds

    def per_step(self):
        """Mean seconds of one update for each backend."""
        if not self.others:
            return {self.chosen: self.total / max(self.calls, 1)}
        return {name: s / max(self.compared, 1) for name, s in self.paired.items()}


def _copy(d):
    return {k: a.copy() for k, a in d.items()}


def _copy_into(dst, src):
    for k, a in src.items():
        np.copyto(dst[k], a)


class _PlainProgress:
    """A minimal progress line on a terminal's stderr, for when tqdm is not installed;
    elsewhere it only prints the lines passed to write()."""

    def __init__(self, total, desc, file=None):
        self.total = total
        self.desc = desc
        self.n = 0
        self.file = sys.stderr if file is None else file
        self.live = getattr(self.file, "isatty", lambda: False)()
        self.shown = -1

    def update(self, n=1):
        self.n += n
        percent = 100 * self.n // self.total
        if self.live and percent != self.shown:
            self.shown = percent
            self.file.write(f"\r{self.desc}: {percent:3d}% {self.n}/{self.total} epochs")
            self.file.flush()

    def write(self, line):
        if self.live and self.shown >= 0:
            self.file.write("\r\033[K")
            self.file.flush()
            self.shown = -1
        print(line, flush=True)

    def close(self):
        if self.live and self.shown >= 0:
            self.file.write("\n")
            self.file.flush()


def _progress(total, desc):
    """A progress bar on stderr when stderr is a terminal; a log gets no frames."""
    if not getattr(sys.stderr, "isatty", lambda: False)():
        return _PlainProgress(total, desc)
    try:
        from tqdm import tqdm
    except ImportError:
        return _PlainProgress(total, desc)

    class _Bar(tqdm):
        def write(self, line):
            tqdm.write(line, file=sys.stdout)

    return _Bar(total=total, desc=desc, unit="epoch", file=sys.stderr, leave=False)


def _course_accuracy(optimizer, args):
    if (args.learning_rate == 0.0007 and args.mini_batch_size == 64 and args.decay == "none"):
        return COURSE_ACCURACY.get(args.epochs, {}).get(optimizer)
    return None


def _header(args, chosen):
    from .. import __version__
    from .._config import config

    info = config()
    backend = chosen
    if chosen == "c" and "isa_in_use" in info:
        backend = f"c ({info['isa_in_use']})"
    decay = "" if args.decay == "none" else f", {args.decay} decay (rate {args.decay_rate:g})"
    return (f"fastoptim {__version__}, training with the {backend} backend\n"
            f"moons data (300 points), network {COURSE_LAYERS}, {_epochs(args.epochs)}, "
            f"learning rate {args.learning_rate:g}, mini-batches of {args.mini_batch_size}{decay}")


def _epochs(n):
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _table(runs, args, chosen):
    has_c = "c" in runs[0].per_step
    head = ("optimizer", "final cost", "accuracy", "course", "ms/epoch",
            "update C", "update NumPy", "C speed-up")
    rows = []
    for run in runs:
        course_acc = _course_accuracy(run.optimizer, args)
        us = {k: 1e6 * s for k, s in run.per_step.items()}
        rows.append((
            OPTIMIZER_NAMES[run.optimizer],
            f"{run.final_cost:.6f}",
            f"{run.accuracy:.1f}%",
            "-" if course_acc is None else f"{course_acc:.1f}%",
            f"{1e3 * run.train_seconds / args.epochs:.3f}",
            f"{us['c']:.2f} us" if has_c else "n/a",
            f"{us['numpy']:.2f} us" if "numpy" in us else "n/a",
            f"{us['numpy'] / us['c']:.1f}x" if len(us) == 2 and us["c"] > 0 else "n/a",
        ))
    widths = [max(len(r[j]) for r in rows + [head]) for j in range(len(head))]

    def line(cells):
        return "  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                         for j, (c, w) in enumerate(zip(cells, widths)))

    out = [line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]
    run = runs[0]
    out.append("")
    out.append("accuracy: on the training set; course: the course's published accuracy "
               "for this setting")
    if has_c:
        out.append(f"update: mean time of one optimizer step, both backends on the same "
                   f"{run.compared} of {run.steps} steps, identical inputs, interleaved")
    else:
        out.append("update: mean time of one optimizer step (the compiled backend is not "
                   "available)")
    updates = sum(r.update_seconds for r in runs)
    training = sum(r.train_seconds for r in runs)
    out.append(f"the {chosen} backend trained: {updates:.3f} s in updates of "
               f"{training:.2f} s training in all")
    return "\n".join(out)


def _plot_file(path):
    """(the file savefig will write, its format): a name without an extension
    matplotlib knows gets ".png" added, as savefig itself would for no extension."""
    from matplotlib.backend_bases import FigureCanvasBase

    extension = os.path.splitext(path)[1][1:].lower()
    if extension in FigureCanvasBase.get_supported_filetypes():
        return path, extension
    return path + ".png", "png"


# Each optimizer's cost curve: its own colour, line style and markers, so a curve
# drawn on top of another (gradient descent and momentum at a small learning
# rate) still shows both.
CURVE_STYLES = {
    "gd": dict(color="tab:blue", linestyle="-", linewidth=4, alpha=0.45, marker="o"),
    "momentum": dict(color="tab:orange", linestyle="--", linewidth=1.8, marker="x"),
    "adam": dict(color="tab:green", linestyle="-.", linewidth=1.8, marker="s"),
}
CLASS_COLORS = ("#c0392b", "#2e6fb7")  # y = 0, y = 1
CLASS_MARKERS = ("o", "^")


def _coincident(runs, tolerance):
    """{optimizer: (earlier optimizer, largest cost difference)} for each curve
    that stays within `tolerance` of an earlier one at every plotted epoch."""
    found = {}
    for j, run in enumerate(runs):
        for earlier in runs[:j]:
            a = np.array([c for _, c in earlier.costs])
            b = np.array([c for _, c in run.costs])
            if a.shape == b.shape and np.all(np.abs(a - b) <= tolerance):
                found[run.optimizer] = (earlier.optimizer, float(np.max(np.abs(a - b))))
                break
    return found


def _at_most(x):
    """x > 0 rounded up to one significant digit, as text, so "at most" holds."""
    digits = -math.floor(math.log10(x))
    bound = round(math.ceil(x * 10.0**digits) / 10.0**digits, digits)
    return f"{np.format_float_positional(bound, trim='-')} at most"


def _figure(runs, X, Y, args):
    """The cost curves of `runs` and, for each, its decision boundary over the data."""
    from matplotlib.colors import ListedColormap, to_rgba
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    n = len(runs)
    fig = Figure(figsize=(4.4 * (n + 1), 5.2), layout="constrained")
    decay = "" if args.decay == "none" else f", {args.decay} decay"
    fig.suptitle(f"The course's network {COURSE_LAYERS} on the moons data\n"
                 f"{_epochs(args.epochs)}, mini-batches of {args.mini_batch_size}, learning rate "
                 f"{args.learning_rate:g}{decay}")
    axes = fig.subplots(1, n + 1)

    ax = axes[0]
    all_costs = [c for run in runs for _, c in run.costs]
    span = max(all_costs) - min(all_costs)
    # closer than 1% of the axis: the curves are drawn over each other
    overlaps = _coincident(runs, max(0.01 * span, 1e-12))
    for k, run in enumerate(runs):
        epochs, costs = zip(*run.costs)
        label = OPTIMIZER_NAMES[run.optimizer]
        if run.optimizer in overlaps:
            other, diff = overlaps[run.optimizer]
            label += (f"\n(on top of {OPTIMIZER_NAMES[other]}:\ncosts differ by "
                      f"{_at_most(diff)})" if diff else
                      f"\n(on top of {OPTIMIZER_NAMES[other]}:\nthe same costs)")
        # markers at different epochs for each curve, on every point of a short one
        markevery = (3 * k, 10) if len(epochs) > 30 else None
        ax.plot(epochs, costs, label=label, markevery=markevery, markersize=6,
                **CURVE_STYLES[run.optimizer])
    ax.set_xlabel("epoch")
    ax.set_ylabel("cost (cross-entropy, training set)")
    ax.set_title("Training cost")
    ax.grid(alpha=0.3)
    ax.legend()

    x_min, x_max = X[0].min() - 1, X[0].max() + 1
    y_min, y_max = X[1].min() - 1, X[1].max() + 1
    xx, yy = np.meshgrid(np.arange(x_min, x_max, 0.01), np.arange(y_min, y_max, 0.01))
    grid = np.stack([xx.ravel(), yy.ravel()])
    regions = ListedColormap([to_rgba(c, 0.25) for c in CLASS_COLORS])
    for ax, run in zip(axes[1:], runs):
        Z = predict(grid, run.parameters).reshape(xx.shape)
        ax.contourf(xx, yy, Z, levels=[-0.5, 0.5, 1.5], cmap=regions)
        if Z.min() != Z.max():  # else no boundary crosses the panel
            ax.contour(xx, yy, Z, levels=[0.5], colors="k", linewidths=1)
        for label in (0, 1):
            points = X[:, Y[0] == label]
            ax.scatter(points[0], points[1], s=18, color=CLASS_COLORS[label],
                       marker=CLASS_MARKERS[label], edgecolors="k", linewidths=0.4)
        ax.set_title(f"{OPTIMIZER_NAMES[run.optimizer]}: {run.accuracy:.1f}% training accuracy")
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
        ax.set_xlim(x_min, x_max)
        ax.set_ylim(y_min, y_max)
    handles = []
    for label in (0, 1):
        handles.append(Line2D([], [], linestyle="none", marker=CLASS_MARKERS[label],
                              markersize=7, color=CLASS_COLORS[label], markeredgecolor="k",
                              label=f"class {label} (y = {label})"))
        handles.append(Patch(color=regions(label), label=f"predicted {label}"))
    handles.append(Line2D([], [], color="k", linewidth=1, label="decision boundary"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles))
    return fig
