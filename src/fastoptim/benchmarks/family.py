"""python -m fastoptim bench --algo all: every optimizer against its own ceiling
and torch's CPU implementation.

fastoptim's contender is the optimizer object's step on one weight matrix of n
elements. Each optimizer moves a different number of bytes per element (Adam
reads p, g, v, s and writes p, v, s: 7 streams; SGD with momentum 5; ...),
counted from the full-size state arrays the object keeps, so each has its own
ceiling: fastoptim's ceiling kernel with exactly its streams (g read; p and
each state read and written) and trivial arithmetic; a rule with a per-array
reduction (LAMB, Adafactor) makes two passes, and its ceiling too. Muon's
Newton-Schulz iteration is matrix products on NumPy's BLAS, beyond any
ceiling of memory traffic. torch runs its fused CPU kernel where it has one
(SGD, Adam, AdamW, Adagrad), else foreach (Muon: its default); Lion, LAMB and
Schedule-Free have none. Same protocol as the Adam tables: contenders
interleaved in one process, best of several rounds, ratios from one run.
"""
import functools

import numpy as np

from . import adam as B

TORCH = "torch"
FAMILY_SIZES = (10**7,)
LR = 1e-3
WD = 0.01


class Spec:
    """One benchmarked configuration: an optimizer class of fastoptim and its
    arguments, and torch's optimizer (class name and kwargs; None: torch has
    none). Its byte count follows from the state the object keeps: p read and
    written, g read, each state array read and written."""

    def __init__(self, name, title, cls, kwargs, torch_cls=None, torch_kw=None, fused=False):
        self.name = "family:" + name  # its own entries in adam's registries
        self.title = title
        self.cls = cls
        self.kwargs = dict(kwargs, learning_rate=LR)
        self.torch_cls = torch_cls
        self.torch_kw = dict(torch_kw or {}, lr=LR)
        self.fused = fused
        # the full-size state arrays of a matrix (Adafactor's factored ones are not)
        probe = self.make({"w": np.zeros((4, 8))}).state
        # (the moving average, with ema_decay, is one of them: state["ema"])
        self.nstates = sum(d["dw"].size == 32 for d in probe.values() if "dw" in d)
        # the C passes over the arrays: a rule with a per-array reduction (LAMB,
        # Adafactor) reads p, g and its state once to reduce, then p and g again
        # to apply (approximated by a second ceiling pass over p and g)
        self.passes = [self.nstates] + ([0] if cls in REDUCTIONS else [])
        self.streams = sum(3 + 2 * k for k in self.passes)
        B.ALGORITHMS[self.name] = B.Algorithm(
            self.name, title, self.streams,
            " + ".join("read p, g" + ", s" * k + "; write p" + ", s" * k for k in self.passes))

    def make(self, params):
        import fastoptim

        return getattr(fastoptim, self.cls)(params, **self.kwargs)


# torch.optim's counterpart of each optimizer class (same defaults but the
# learning rate) and whether torch has a fused CPU kernel for it; a class not
# listed has none.
TORCH_OF = {"GD": ("SGD", {}, True), "SGD": ("SGD", {}, True), "Adam": ("Adam", {}, True),
            "AdamW": ("AdamW", {}, True), "NAdam": ("NAdam", {}, False),
            "RAdam": ("RAdam", {}, False), "Adamax": ("Adamax", {}, False),
            "Adagrad": ("Adagrad", {}, True), "RMSprop": ("RMSprop", {}, False),
            "Adafactor": ("Adafactor", {}, False), "Muon": ("Muon", {}, None)}
# Rules with a per-array reduction: two C passes (csrc/rules.h FO_REDUCE_RULES).
REDUCTIONS = ("LAMB", "Adafactor")
# Beyond each class's defaults: the options that change an update's traffic.
VARIANTS = [
    ("SGD", "SGD momentum+nesterov", dict(momentum=0.9, nesterov=True)),
    ("Adam", "Adam amsgrad", dict(amsgrad=True)),
    ("Adam", "Adam ema_decay", dict(ema_decay=0.999)),
    ("RMSprop", "RMSprop centered+mom.", dict(centered=True, momentum=0.9)),
]


def _specs():
    """Every optimizer class with its defaults, then the variants."""
    from .. import optimizers

    specs = []
    rows = [(cls, cls, {}) for cls in optimizers.__all__ if cls != "Optimizer"] + VARIANTS
    for cls, title, kwargs in rows:
        torch_cls, torch_kw, fused = TORCH_OF.get(cls, (None, {}, False))
        if "ema_decay" in kwargs:   # torch's optimizers keep no moving average
            torch_cls = None
        specs.append(Spec(title.lower().replace(" ", "-").replace("+", "-"), title, cls, kwargs,
                          torch_cls, dict(torch_kw, **kwargs), fused))
    return specs


SPECS = _specs()


def matrix(n, dtype):
    """One weight matrix of n elements, (250, n/250): the shape Muon and Adafactor
    act on (an elementwise rule does not care)."""
    rows = 250 if n % 250 == 0 and n >= 250 * 250 else 1
    return B.Problem(f"n={B.size_label(n)}", [("W", (rows, n // rows))], dtype, "matrix")


def _states(inputs, k):
    return [{"d" + key: np.full_like(a, 0.01) for key, a in inputs.parameters.items()}
            for _ in range(k)]


def _register(spec):
    @B.contender(spec.name, B.SUBJECT)
    def ours(inputs):
        B._core()
        p, _, _ = inputs.fresh()
        opt = spec.make(p)
        opt.step(inputs.grads)  # steady state: t > 1 from here on
        return functools.partial(opt.step, inputs.grads)

    @B.contender(spec.name, B.CEILING)
    def ceiling(inputs):
        p, _, _ = inputs.fresh()
        passes = [functools.partial(B._core().ceiling, p, inputs.grads, *_states(inputs, k))
                  for k in spec.passes]
        if len(passes) == 1:
            return passes[0]
        return lambda: [f() for f in passes]

    @B.contender(spec.name, TORCH)
    def torch_step(inputs):
        if spec.torch_cls is None:
            raise B.Unavailable(f"torch.optim has no {spec.title}")
        torch = B._torch()
        p, _, _ = inputs.fresh()
        if spec.torch_cls == "Muon" and any(a.ndim != 2 for a in p.values()):
            raise B.Unavailable("torch.optim.Muon takes only 2-D parameters")
        params = []
        for k, a in p.items():
            t = torch.from_numpy(a).requires_grad_()
            t.grad = torch.from_numpy(inputs.grads["d" + k])
            params.append(t)
        kind = {"fused": True} if spec.fused else {} if spec.fused is None else {"foreach": True}
        opt = getattr(torch.optim, spec.torch_cls)(params, **spec.torch_kw, **kind)
        opt.step()  # creates the state, so timing sees steady-state steps
        return opt.step


for _spec in SPECS:
    _register(_spec)


HEADER = (f"{'optimizer':<24} {'dtype':<8} {'B/elem':>6} {'ns/elem':>8} {'GB/s':>7} "
          f"{'% ceiling':>9} {'torch':>8} {'vs torch':>8}")


def main(args, out):
    """The family table: for every size and dtype, each optimizer's time, its
    percent of its own ceiling and torch's time over ours."""
    sizes = args.sizes or list(FAMILY_SIZES)
    dtypes = ["float32", "float64"] if args.dtype == "both" else [args.dtype]
    min_ns = args.min_ms * 1e6
    print("\nThe family: % ceiling = own-ceiling time / fastoptim C time (the ceiling moves "
          "the same streams with trivial arithmetic); vs torch = torch time / fastoptim C "
          "time (torch fused where it has it, else foreach)", file=out)
    rows = []
    skipped_all = {}
    for n in sizes:
        for dt in dtypes:
            print(f"\nn={B.size_label(n)} {dt}", file=out)
            print(HEADER, file=out)
            inputs = B.Inputs(matrix(n, dt))
            for spec in SPECS:
                algo = B.ALGORITHMS[spec.name]
                steps, skipped = B.build(spec.name, inputs)
                best = B.measure(steps, args.rounds, min_ns)
                del steps
                ours = best.get(B.SUBJECT)
                ceil = best.get(B.CEILING)
                theirs = best.get(TORCH)
                nbytes = algo.bytes_per_element(dt)
                pct = f"{100 * ceil / ours:.0f}%" if ours and ceil else "-"
                kind = "-" if spec.torch_cls is None or theirs is None else (
                    "fused" if spec.fused else "default" if spec.fused is None else "foreach")
                vs = f"{theirs / ours:.2f}x" if ours and theirs else "-"
                ns = f"{ours / n:.3g}" if ours else "-"
                gbs = f"{nbytes * n / ours:.3g}" if ours else "-"
                line = (f"{spec.title:<24} {dt:<8} {nbytes:>6} {ns:>8} {gbs:>7} {pct:>9} "
                        f"{kind:>8} {vs:>8}")
                print(line, file=out)
                out.flush()
                rows.append((n, dt, spec.name, ours, ceil, theirs))
                if spec.torch_cls is None:
                    skipped.pop(TORCH, None)
                skipped_all.update(skipped)
            del inputs
    for name, why in skipped_all.items():
        print(f"skipped {name}: {why}", file=out)
    return rows
