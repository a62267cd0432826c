"""python -m fastoptim bench --algo lowp: Adam with low-precision storage.

Rows: float32 Adam; 16-bit parameters (and gradients) with float32 state,
written back to nearest, with Kahan summation or with stochastic rounding;
bfloat16 state; 8-bit block-wise state. Each row is the optimizer object's
step against its own ceiling: the object's `_ceiling`, which moves exactly
the step's streams in their storage formats (16-bit values widened and
rounded back, 8-bit codes decoded and encoded with their block maxima) with
trivial arithmetic. State bytes per parameter count every state array the
object keeps (codes, block maxima, compensation). The 8-bit rows also time
bitsandbytes' and torchao's AdamW8bit on the CPU where they are installed
(their own float32 parameters and gradients). Same protocol as the other
tables: contenders interleaved in one process, best of several rounds,
ratios from one run.
"""
import functools

import numpy as np

from . import adam as B

SIZES = (10**7,)
LR = 1e-3
BNB = "bitsandbytes"
TORCHAO = "torchao"


def _bfloat16():
    try:
        import ml_dtypes
    except ImportError:
        raise B.Unavailable("ml_dtypes not installed (pip install ml_dtypes)") from None
    return np.dtype(ml_dtypes.bfloat16)


class Config:
    """One row: the parameters' (and gradients') dtype and the object's storage
    settings."""

    def __init__(self, id, title, dtype, settings, eight_bit=False):
        self.id = id
        self.name = "lowp:" + id    # its entries in adam's contender registry
        self.title = title
        self.dtype = dtype          # "float32", "float16" or "bfloat16"
        self.settings = dict(settings)
        self.eight_bit = eight_bit

    def np_dtype(self):
        return _bfloat16() if self.dtype == "bfloat16" else np.dtype(self.dtype)

    def make(self, params):
        import fastoptim

        return fastoptim.Adam(params, learning_rate=LR, **self.settings)


CONFIGS = [
    Config("fp32", "fp32 Adam", "float32", {}),
    Config("bf16", "bf16 p, fp32 state", "bfloat16", {}),
    Config("bf16-kahan", "bf16 p, fp32 st, Kahan", "bfloat16", {"kahan_summation": True}),
    Config("bf16-sr", "bf16 p, fp32 st, SR", "bfloat16", {"stochastic_rounding": True}),
    Config("f16", "f16 p, fp32 state", "float16", {}),
    Config("bf16-bf16-sr", "bf16 p, bf16 st, SR", "bfloat16",
           {"state_bits": 16, "stochastic_rounding": True}),
    Config("fp32-bf16", "fp32 p, bf16 state", "float32", {"state_bits": 16}),
    Config("fp32-8bit", "fp32 p, 8-bit state", "float32", {"state_bits": 8}, eight_bit=True),
    Config("bf16-8bit-sr", "bf16 p, 8-bit st, SR", "bfloat16",
           {"state_bits": 8, "stochastic_rounding": True}, eight_bit=True),
]
BY_ID = {c.id: c for c in CONFIGS}


class Inputs:
    """Parameters and gradients of one size in one config's dtype (from the
    same float32 draws for every config)."""

    def __init__(self, n, config, seed=0):
        rng = np.random.default_rng(seed)
        dt = config.np_dtype()
        self.n = n
        self.parameters = {"W": rng.standard_normal(n, dtype=np.float32).astype(dt)}
        self.grads = {"dW": (0.01 * rng.standard_normal(n, dtype=np.float32)).astype(dt)}

    def fresh(self):
        return {k: a.copy() for k, a in self.parameters.items()}


def state_bytes(opt):
    """Bytes of every state array the object keeps."""
    return sum(a.nbytes for d in opt.state.values() for a in d.values())


def _register(config):
    @B.contender(config.name, B.SUBJECT)
    def ours(inputs):
        B._core()
        opt = config.make(inputs.fresh())
        opt.step(inputs.grads)   # steady state: t > 1 from here on
        if not opt._compiled:
            raise B.Unavailable("the compiled step does not take these arrays")
        return functools.partial(opt.step, inputs.grads)

    @B.contender(config.name, B.CEILING)
    def ceiling(inputs):
        B._core()
        opt = config.make(inputs.fresh())   # its arrays get meaningless values
        if not hasattr(opt, "_ceiling"):
            raise B.Unavailable("the NumPy backend is in use (FASTOPTIM_BACKEND=numpy)")
        if not opt._ceiling(inputs.grads):
            raise B.Unavailable("the ceiling does not take these arrays")
        return functools.partial(opt._ceiling, inputs.grads)

    if not config.eight_bit:
        return

    def torch_params(inputs):
        torch = B._torch()
        p = torch.from_numpy(inputs.parameters["W"].astype(np.float32)).requires_grad_()
        p.grad = torch.from_numpy(inputs.grads["dW"].astype(np.float32))
        return p

    @B.contender(config.name, BNB)
    def bnb(inputs):
        try:
            import bitsandbytes
        except ImportError:
            raise B.Unavailable("bitsandbytes not installed") from None
        opt = bitsandbytes.optim.AdamW8bit([torch_params(inputs)], lr=LR, weight_decay=0.0,
                                           min_8bit_size=4096)
        opt.step()
        return opt.step

    @B.contender(config.name, TORCHAO)
    def torchao(inputs):
        try:
            from torchao.optim import AdamW8bit
        except ImportError:
            raise B.Unavailable("torchao not installed") from None
        opt = AdamW8bit([torch_params(inputs)], lr=LR, weight_decay=0.0)
        opt.step()
        return opt.step


for _config in CONFIGS:
    _register(_config)

HEADER = (f"{'configuration':<24} {'state B/p':>9} {'ms/step':>8} {'vs fp32':>8} "
          f"{'% ceiling':>9} {BNB:>12} {TORCHAO:>8} {'others':>7}")

# (config id, what is compared, the target) -- issue 13's, on the development machine
TARGETS = [
    ("fp32-8bit", "time", 0.65), ("fp32-8bit", "ceiling", 0.90),
    ("bf16-bf16-sr", "time", 0.65), ("bf16", "time", 0.85), ("fp32-8bit", "bytes", 2.1),
] + [(c.id, "ceiling", 0.85) for c in CONFIGS if c.id != "fp32-8bit"]


def main(args, out):
    """The table for every size, then the targets. Returns the rows:
    (n, config id, ours, ceiling, state bytes per parameter, {other: time})."""
    sizes = args.sizes or list(SIZES)
    min_ns = args.min_ms * 1e6
    print("\nLow precision (Adam, one array): state B/p = state bytes per parameter; vs fp32 "
          "= fp32 Adam's time / this row's; % ceiling = own-ceiling time / this row's (the "
          "ceiling moves the row's streams in their formats with trivial arithmetic); "
          "bitsandbytes, torchao: their AdamW8bit's time / ours; others = CPUs other processes "
          "used during the row (a parallel step waits for its slowest thread: ratios need "
          "it near 0)", file=out)
    rows, skipped_all = [], {}
    for n in sizes:
        print(f"\nn={B.size_label(n)}", file=out)
        print(HEADER, file=out)
        fp32 = None
        for config in CONFIGS:
            try:
                inputs = Inputs(n, config)
            except B.Unavailable as exc:
                skipped_all[config.title] = str(exc)
                continue
            steps, skipped = B.build(config.name, inputs)
            meter = B.CpuMeter()
            best = B.measure(steps, args.rounds, min_ns)
            busy = meter.others()
            bpp = state_bytes(config.make(inputs.fresh())) / n
            del steps, inputs
            ours, ceil = best.get(B.SUBJECT), best.get(B.CEILING)
            if config.id == "fp32":
                fp32 = ours
            others = {k: best.get(k) for k in (BNB, TORCHAO)}
            cells = [f"{ours / 1e6:.3g}" if ours else "-",
                     f"{fp32 / ours:.2f}x" if ours and fp32 else "-",
                     f"{100 * ceil / ours:.0f}%" if ours and ceil else "-"]
            cells += [f"{others[k] / ours:.2f}x" if ours and others[k] else "-"
                      for k in (BNB, TORCHAO)]
            busy = f"{busy:.2f}" if busy is not None else "-"
            print(f"{config.title:<24} {bpp:>9.3g} {cells[0]:>8} {cells[1]:>8} {cells[2]:>9} "
                  f"{cells[3]:>12} {cells[4]:>8} {busy:>7}", file=out)
            out.flush()
            rows.append((n, config.id, ours, ceil, bpp, others))
            skipped_all.update(skipped)
    for name, why in skipped_all.items():
        print(f"skipped {name}: {why}", file=out)
    print("\ntargets (issue 13, development machine, 2 threads, n=1e7)", file=out)
    for desc, measured, target, verdict in targets(rows):
        print(f"  {desc:<48} {measured:>8}  {target:>8}  {verdict}", file=out)
    return rows


def targets(rows):
    """(description, measured, target, verdict) for each target whose rows ran,
    at the largest size measured."""
    if not rows:
        return []
    n = max(r[0] for r in rows)
    by_id = {r[1]: r for r in rows if r[0] == n}
    fp32 = by_id.get("fp32", (None, None, None))[2]
    out = []
    for cid, what, target in TARGETS:
        if cid not in by_id:
            continue
        _, _, ours, ceil, bpp, _ = by_id[cid]
        title = BY_ID[cid].title
        if what == "time" and ours and fp32:
            out.append((f"{title}: time / fp32 Adam's", f"{ours / fp32:.2f}x",
                        f"<= {target}x", "met" if ours / fp32 <= target else "not met"))
        elif what == "ceiling" and ours and ceil:
            out.append((f"{title}: % of its ceiling", f"{100 * ceil / ours:.0f}%",
                        f">= {100 * target:.0f}%", "met" if ceil / ours >= target else "not met"))
        elif what == "bytes":
            out.append((f"{title}: state bytes per parameter", f"{bpp:.3g}",
                        f"<= {target}", "met" if bpp <= target else "not met"))
    return out
