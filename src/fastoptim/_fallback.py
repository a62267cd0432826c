"""The NumPy backend: the reference implementation of every rule.

One twin per rule of csrc/rules.h (same names, states, hyperparameters, flags
and scalar state, in the same order): `prepare` computes the per-step scalars
once per call, in double; `update` updates one array in place. Each line
performs the same IEEE operations, in the same order and in the array's dtype
(a Python float meets a float32 array as a float32), as csrc/kernels.inc, so
the two backends agree bitwise.

`update()` is the dict-level call (fastoptim.course, and the compiled
backend's hand-off for any call it does not take: non-contiguous or
mixed-layout views, other float dtypes, invalid input); `Stepper` is the
optimizer objects' step when this backend is in use.
"""
import functools
import math

import numpy as np

from . import _validate as check

# The flags of csrc/rules.h, bit for bit.
DECAY_L2 = 1 << 8
DECAY_DECOUPLED = 1 << 9
DECAY_UPDATE = 1 << 11
REDUCE = 1 << 12
SGD_MOMENTUM, SGD_NESTEROV, SGD_AVERAGE, SGD_FIRST = 1, 2, 4, 8
ADAM_AMSGRAD = 1
RADAM_RECTIFIED = 1
RMSPROP_CENTERED, RMSPROP_MOMENTUM = 1, 2
SCHEDULE_FREE_FIRST = 1
ADAFACTOR_MACHINE_EPSILON, ADAFACTOR_LERP_END = 1, 2

MAX_STATES = 3  # FO_MAX_STATES: state slots a rule may have

_KINDS = {
    "beta": check.beta,          # [0, 1)
    "fraction": check.fraction,  # [0, 1]
    "eps": check.epsilon,        # >= 0
    "nonneg": check.nonnegative,  # finite, >= 0
}


class Rule:
    """One rule: its names (as csrc/rules.h lists them), `prepare(t, lr, h, f,
    scalars) -> (coefficients, kernel flags, scalars)` and `update(p, gi, s, c,
    f)`, which updates one array in place: p (already decayed when the decay is
    decoupled), the scaled gradient gi (with L2 decay added), the state slots s
    (None where absent). `unsigned`: per state slot, whether it stays >= 0 (8-bit
    state then takes the unsigned dynamic map). A rule declared with array=True
    takes the array's coefficients too, `update(p, gi, s, c, f, a)` (an Array:
    wd, factors, factor). A rule with a reduction (rules.h, FO_REDUCE_RULES) also
    has `reduce(p, gi, s, c, f, a) -> quantities` (it updates the state; the
    decay of p comes after it) and `finish(c, n, sums) -> factor`."""

    def __init__(self, name, states, hyper, flags, scalars, decay, valid_flags, array=False,
                 nonnegative=""):
        self.name = name
        self.states = tuple(s.split(":")[0] for s in states.split())
        self.unsigned = tuple(s in nonnegative.split() for s in self.states)
        # state slot j is present only when this flag is set (0: always)
        self.state_flags = tuple(
            (1 << flags.split().index(s.split(":")[1])) if ":" in s else 0
            for s in states.split())
        self.hyper = tuple(h.split(":")[0] for h in hyper.split())
        self.hyper_kinds = tuple(h.split(":")[1] for h in hyper.split())
        self.flags = tuple(flags.split())
        self.scalars = tuple(s.split(":")[0] for s in scalars.split())
        self.scalar_kinds = tuple(s.split(":")[1] for s in scalars.split())
        self.decay = decay
        self.valid_flags = valid_flags
        self.array = array
        self.reduce = self.finish = None
        self.info = (name, states, hyper, flags, scalars)

    def __call__(self, prepare):
        self.prepare = prepare
        return self

    def kernel(self, update):
        self.update = update
        return self

    def reduction(self, reduce):
        self.reduce = reduce
        return self

    def finisher(self, finish):
        self.finish = finish
        return self


class Array:
    """One array's coefficients (csrc/kernels.h, fo_array_coef): its weight
    decay, its factored state (None, or (row, col, per) shaped to broadcast
    against the array: row*col/per is its estimate), and, for the apply pass
    of a rule with a reduction, its factor."""

    def __init__(self, wd, factors=None):
        self.wd = wd
        self.factors = factors
        self.factor = 0.0


RULES = {}


def rule(name, states, hyper, flags="", scalars="", decay=0, valid_flags=(0,), array=False,
         nonnegative=""):
    r = Rule(name, states, hyper, flags, scalars, decay, valid_flags, array, nonnegative)
    RULES[name] = r
    return r


# --- the rules ----------------------------------------------------------------------
# Each: the update in the paper's notation and the reference are in
# csrc/kernels.inc's section of the same name.

@rule("sgd", "momentum_buffer:momentum", "momentum:beta dampening:fraction",
      "momentum nesterov average", decay=DECAY_L2,
      valid_flags=(0, SGD_AVERAGE, SGD_MOMENTUM, SGD_MOMENTUM | SGD_NESTEROV,
                   SGD_MOMENTUM | SGD_AVERAGE, SGD_MOMENTUM | SGD_NESTEROV | SGD_AVERAGE))
def sgd(t, lr, h, f, scalars):
    mu, dampening = h
    if not f & SGD_MOMENTUM:
        f = 0
    elif t == 1 and not f & SGD_AVERAGE:
        f |= SGD_FIRST
    omd = 1.0 - dampening
    c = dict(lr=lr, mu=mu, omd=omd, ng=omd if f & SGD_AVERAGE else 1.0)
    return c, f & ~SGD_AVERAGE, scalars


@sgd.kernel
def _(p, gi, s, c, f):
    (b,) = s
    u = gi
    if f & SGD_MOMENTUM:
        if f & SGD_FIRST:
            b[...] = gi
        else:
            b *= c["mu"]
            b += c["omd"] * gi
        u = c["ng"] * gi + c["mu"] * b if f & SGD_NESTEROV else b
    p -= c["lr"] * u


@rule("adam", "v s max_s:amsgrad", "beta1:beta beta2:beta epsilon:eps", "amsgrad",
      decay=DECAY_L2 | DECAY_DECOUPLED, valid_flags=(0, ADAM_AMSGRAD), nonnegative="s max_s")
def adam(t, lr, h, f, scalars):
    beta1, beta2, eps = h
    return dict(beta1=beta1, beta2=beta2, eps=eps, step=lr / (1.0 - beta1**t),
                rsbc2=1.0 / math.sqrt(1.0 - beta2**t)), f, scalars


@adam.kernel
def _(p, gi, s, c, f):
    m, v, vmax = s
    m *= c["beta1"]
    m += (1.0 - c["beta1"]) * gi
    v *= c["beta2"]
    v += (1.0 - c["beta2"]) * gi * gi
    denom_v = v
    if f & ADAM_AMSGRAD:
        vmax[...] = _max(vmax, v)
        denom_v = vmax
    p -= c["step"] * m / (np.sqrt(denom_v) * c["rsbc2"] + c["eps"])


@rule("nadam", "v s", "beta1:beta beta2:beta epsilon:eps momentum_decay:nonneg",
      scalars="mu_product:fraction", decay=DECAY_L2 | DECAY_DECOUPLED, nonnegative="s")
def nadam(t, lr, h, f, scalars):
    beta1, beta2, eps, md = h
    (mu_product,) = scalars
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (t * md))
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * md))
    prod = mu_product * mu
    prod_next = prod * mu_next
    c = dict(beta1=beta1, beta2=beta2, eps=eps, rsbc2=1.0 / math.sqrt(1.0 - beta2**t),
             cg=lr * (1.0 - mu) / (1.0 - prod), cm=lr * mu_next / (1.0 - prod_next))
    return c, f, (prod,)


@nadam.kernel
def _(p, gi, s, c, f):
    m, v = s
    m *= c["beta1"]
    m += (1.0 - c["beta1"]) * gi
    v *= c["beta2"]
    v += (1.0 - c["beta2"]) * gi * gi
    d = np.sqrt(v) * c["rsbc2"] + c["eps"]
    p -= c["cg"] * gi / d
    p -= c["cm"] * m / d


@rule("radam", "v s", "beta1:beta beta2:beta epsilon:eps", decay=DECAY_L2 | DECAY_DECOUPLED,
      nonnegative="s")
def radam(t, lr, h, f, scalars):
    beta1, beta2, eps = h
    b2t = beta2**t
    bc1 = 1.0 - beta1**t
    bc2 = 1.0 - b2t
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * t * b2t / bc2
    step = lr / bc1
    if rho_t > 5.0:
        f |= RADAM_RECTIFIED
        step = lr * math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf /
                              ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)) * math.sqrt(bc2) / bc1
    return dict(beta1=beta1, beta2=beta2, eps=eps, step=step), f, scalars


@radam.kernel
def _(p, gi, s, c, f):
    m, v = s
    m *= c["beta1"]
    m += (1.0 - c["beta1"]) * gi
    v *= c["beta2"]
    v += (1.0 - c["beta2"]) * gi * gi
    if f & RADAM_RECTIFIED:
        p -= c["step"] * m / (np.sqrt(v) + c["eps"])
    else:
        p -= c["step"] * m


@rule("adamax", "v exp_inf", "beta1:beta beta2:beta epsilon:eps", decay=DECAY_L2,
      nonnegative="exp_inf")
def adamax(t, lr, h, f, scalars):
    beta1, beta2, eps = h
    return dict(beta1=beta1, beta2=beta2, eps=eps, step=lr / (1.0 - beta1**t)), f, scalars


@adamax.kernel
def _(p, gi, s, c, f):
    m, u = s
    m *= c["beta1"]
    m += (1.0 - c["beta1"]) * gi
    u[...] = _max(c["beta2"] * u, np.abs(gi) + c["eps"])
    p -= c["step"] * m / u


@rule("adagrad", "sum", "lr_decay:nonneg epsilon:eps", decay=DECAY_L2, nonnegative="sum")
def adagrad(t, lr, h, f, scalars):
    lr_decay, eps = h
    return dict(clr=lr / (1.0 + (t - 1) * lr_decay), eps=eps), f, scalars


@adagrad.kernel
def _(p, gi, s, c, f):
    (acc,) = s
    acc += gi * gi
    p -= c["clr"] * gi / (np.sqrt(acc) + c["eps"])


@rule("rmsprop", "square_avg grad_avg:centered momentum_buffer:momentum",
      "alpha:beta epsilon:eps momentum:beta", "centered momentum", decay=DECAY_L2,
      valid_flags=(0, RMSPROP_CENTERED, RMSPROP_MOMENTUM, RMSPROP_CENTERED | RMSPROP_MOMENTUM),
      nonnegative="square_avg")
def rmsprop(t, lr, h, f, scalars):
    alpha, eps, mu = h
    return dict(alpha=alpha, eps=eps, mu=mu, lr=lr), f, scalars


@rmsprop.kernel
def _(p, gi, s, c, f):
    sq, ga, b = s
    sq *= c["alpha"]
    sq += (1.0 - c["alpha"]) * gi * gi
    if f & RMSPROP_CENTERED:
        ga *= c["alpha"]
        ga += (1.0 - c["alpha"]) * gi
        # the variance is >= 0 exactly; rounding may make it negative
        d = np.sqrt(_max(sq - ga * ga, 0.0)) + c["eps"]
    else:
        d = np.sqrt(sq) + c["eps"]
    if f & RMSPROP_MOMENTUM:
        b *= c["mu"]
        b += gi / d
        p -= c["lr"] * b
    else:
        p -= c["lr"] * gi / d


@rule("lion", "v", "beta1:beta beta2:beta", decay=DECAY_DECOUPLED)
def lion(t, lr, h, f, scalars):
    beta1, beta2 = h
    return dict(beta1=beta1, beta2=beta2, lr=lr), f, scalars


@lion.kernel
def _(p, gi, s, c, f):
    (m,) = s
    ci = c["beta1"] * m + (1.0 - c["beta1"]) * gi
    p -= c["lr"] * _sign(ci)
    m *= c["beta2"]
    m += (1.0 - c["beta2"]) * gi


def _pow(x, y):
    """C's pow for x >= 0: inf where Python's would raise OverflowError."""
    try:
        return math.pow(x, y)
    except OverflowError:
        return math.inf


def _div(a, b):
    """a / b in IEEE double, as C divides (inf or NaN where Python would raise)."""
    with np.errstate(all="ignore"):
        return float(np.float64(a) / np.float64(b))


def _schedule_free_weights(t, lr, warmup, r, power, scalars):
    """(lr_t, c, new scalars) of a Schedule-Free step (kernels.inc's
    schedule_free_weights)."""
    weight_sum, lr_max = scalars
    kp1 = float(t)
    lr = lr * (kp1 / warmup if t - 1 < warmup else 1.0)
    lr_max = lr_max if lr_max > lr else lr
    weight = _pow(kp1, r) * _pow(lr_max, power)
    weight_sum = weight_sum + weight
    c = _div(weight, weight_sum) if weight_sum != 0.0 else 0.0
    return lr, c, (weight_sum, lr_max)


@rule("schedule_free_adamw", "z s",
      "beta1:beta beta2:beta epsilon:eps warmup_steps:nonneg r:nonneg weight_lr_power:nonneg",
      scalars="weight_sum:nonneg lr_max:nonneg", decay=DECAY_UPDATE, array=True,
      nonnegative="s")
def schedule_free_adamw(t, lr, h, f, scalars):
    beta1, beta2, eps, warmup, r, power = h
    lr, ck, scalars = _schedule_free_weights(t, lr, warmup, r, power, scalars)
    c = dict(beta2=beta2, eps=eps, rsbc2=1.0 / math.sqrt(1.0 - beta2**t), c=ck,
             cy=lr * (beta1 * (1.0 - ck) - 1.0), lr=lr)
    return c, SCHEDULE_FREE_FIRST if t == 1 else 0, scalars


@schedule_free_adamw.kernel
def _(p, gi, s, c, f, a):
    z, v = s
    if f & SCHEDULE_FREE_FIRST:
        z[...] = p
    v *= c["beta2"]
    v += (1.0 - c["beta2"]) * gi * gi
    u = gi / (np.sqrt(v) * c["rsbc2"] + c["eps"])
    if f & DECAY_UPDATE:
        u = u + a.wd * p
    y = p + c["c"] * (z - p)
    p[...] = y + c["cy"] * u
    z -= c["lr"] * u


@rule("schedule_free_sgd", "z", "momentum:beta warmup_steps:nonneg r:nonneg weight_lr_power:nonneg",
      scalars="weight_sum:nonneg lr_max:nonneg", decay=DECAY_L2)
def schedule_free_sgd(t, lr, h, f, scalars):
    momentum, warmup, r, power = h
    lr, ck, scalars = _schedule_free_weights(t, lr, warmup, r, power, scalars)
    return (dict(c=ck, cy=lr * (momentum * (1.0 - ck) - 1.0), lr=lr),
            SCHEDULE_FREE_FIRST if t == 1 else 0, scalars)


@schedule_free_sgd.kernel
def _(p, gi, s, c, f):
    (z,) = s
    if f & SCHEDULE_FREE_FIRST:
        z[...] = p
    y = p + c["c"] * (z - p)
    p[...] = y + c["cy"] * gi
    z -= c["lr"] * gi


@rule("lamb", "v s", "beta1:beta beta2:beta epsilon:eps", decay=DECAY_UPDATE, array=True,
      nonnegative="s")
def lamb(t, lr, h, f, scalars):
    beta1, beta2, eps = h
    c = dict(beta1=beta1, beta2=beta2, eps=eps, rbc1=1.0 / (1.0 - beta1**t),
             rsbc2=1.0 / math.sqrt(1.0 - beta2**t), lr=lr)
    return c, f, scalars


def _lamb_update(p, m, v, c, f, a):
    u = c["rbc1"] * m / (np.sqrt(v) * c["rsbc2"] + c["eps"])
    if f & DECAY_UPDATE:
        u = u + a.wd * p
    return u


@lamb.reduction
def _(p, gi, s, c, f, a):
    m, v = s
    m *= c["beta1"]
    m += (1.0 - c["beta1"]) * gi
    v *= c["beta2"]
    v += (1.0 - c["beta2"]) * gi * gi
    return p, _lamb_update(p, m, v, c, f, a)


@lamb.finisher
def _(c, n, sums):
    pn, un = math.sqrt(sums[0]), math.sqrt(sums[1])
    return c["lr"] * (pn / un if pn > 0.0 and un > 0.0 else 1.0)


@lamb.kernel
def _(p, gi, s, c, f, a):
    m, v = s
    p -= a.factor * _lamb_update(p, m, v, c, f, a)


@rule("adafactor", "variance", "decay_rate:nonneg epsilon1:eps epsilon2:eps d:nonneg",
      "machine_epsilon", decay=DECAY_DECOUPLED, valid_flags=(0, ADAFACTOR_MACHINE_EPSILON),
      array=True, nonnegative="variance")
def adafactor(t, lr, h, f, scalars):
    decay_rate, eps1, eps2, d = h
    w = _pow(float(t), -decay_rate)
    rs = 1.0 / _pow(float(t), 0.5)
    c = dict(w=w, eps1=eps1, machine=bool(f & ADAFACTOR_MACHINE_EPSILON),
             rho=rs if rs < lr else lr, eps2=eps2, d=d)
    return c, ADAFACTOR_LERP_END if w >= 0.5 else 0, scalars


def _adafactor_update(gi, v, c, dtype):
    """u = g / sqrt(max(v, epsilon1^2)), as 1/sqrt then a product (torch's rsqrt)."""
    eps1 = float(np.finfo(dtype).eps) if c["machine"] else c["eps1"]
    return gi * (1.0 / np.sqrt(_max(v, eps1 * eps1)))


def _adafactor_estimate(p, gi, s, c, f, a):
    if a.factors is not None:  # factored: row*col/per, by broadcasting
        row, col, per = a.factors
        return row * col / per
    (v,) = s
    if f & REDUCE:
        g2 = gi * gi
        if f & ADAFACTOR_LERP_END:
            v[...] = g2 - (g2 - v) * (1.0 - c["w"])
        else:
            v += c["w"] * (g2 - v)
    return v


@adafactor.reduction
def _(p, gi, s, c, f, a):
    v = _adafactor_estimate(p, gi, s, c, f, a)
    return p, _adafactor_update(gi, v, c, p.dtype)


@adafactor.finisher
def _(c, n, sums):
    root_n = _pow(float(n), 0.5)
    rms_p = _div(math.sqrt(sums[0]), root_n)
    rms_u = _div(math.sqrt(sums[1]), root_n * c["d"])
    alpha = (rms_p if rms_p > c["eps2"] else c["eps2"]) * c["rho"]
    return _div(alpha, rms_u if rms_u > 1.0 else 1.0)


@adafactor.kernel
def _(p, gi, s, c, f, a):
    v = _adafactor_estimate(p, gi, s, c, f, a)
    p -= a.factor * _adafactor_update(gi, v, c, p.dtype)


def _split_scale(scale, dtype):
    """(scale, None), or, when `scale` is below the dtype's normal range (clipping a
    norm near its largest values), (2**min_exp, the rest): applied one after the
    other they keep the scale's bits (the driver's split_scale)."""
    if dtype.kind != "f" or dtype.itemsize not in (4, 8):
        return scale, None
    fi = np.finfo(dtype)
    if scale == 0.0 or abs(scale) >= fi.tiny:
        return scale, None
    min_exp = fi.minexp + 1  # C's FLT_MIN_EXP / DBL_MIN_EXP (frexp's convention)
    return math.ldexp(1.0, min_exp), math.ldexp(scale, -min_exp)


def _l2_sum(g, wd, p):
    """g + wd*p with one rounding in float32 (the product of two floats is exact
    in double, then the sum is rounded once), as torch's fused add; in float64
    with two roundings (the kernels' FO_L2_SUM)."""
    if p.dtype == np.float32:
        wd32 = np.float64(np.float32(wd))
        return (g.astype(np.float64) + wd32 * p.astype(np.float64)).astype(np.float32)
    return g + wd * p


def sum_sources(sources, scale):
    """((s_0 + s_1) + ... + s_{n-1}) * scale in the arrays' dtype (kernels.inc's
    sum_sources): the gradient of several sources, in order."""
    with np.errstate(all="ignore"):
        total = np.array(sources[0], copy=True)
        for s in sources[1:]:
            total += s
        total *= scale
    return total


def ema_decay(decay, warmup, t):
    """The moving average's decay at step t (the compiled step's, in double)."""
    return min(decay, (1.0 + t) / (10.0 + t)) if warmup else decay


def ema_update(ema, p, decay):
    """ema = d*ema + (1-d)*p in the arrays' dtype (kernels.inc's ema)."""
    with np.errstate(all="ignore"):
        ema *= decay
        ema += (1.0 - decay) * p


def _max(a, b):
    """Elementwise max that keeps a NaN from either side (the kernels' FO_MAX)."""
    return np.where((a > b) | np.isnan(a), a, b)


def _sign(x):
    """sign with sign(0) = 0 (keeping the zero's sign) and NaN kept (FO_SIGN)."""
    one = x.dtype.type(1)
    return np.where(x > 0, one, np.where(x < 0, -one, x))


# --- storage formats (csrc/formats.c, the driver's staged block loop) ----------------
# 16-bit parameters and gradients, bfloat16 and 8-bit state: every stream is
# widened to float32, the rule's twin runs on float32 arrays unchanged, and the
# results are written back; the same bits as formats.c, by the same integer and
# float32 operations.

F32, F64, F16, BF16 = 0, 1, 2, 3                    # fo_dtype
FMT_NATIVE, FMT_F16, FMT_BF16, FMT_Q8, FMT_Q8_UNSIGNED = 0, F16, BF16, 4, 5  # fo_format
ROUND_NEAREST, ROUND_STOCHASTIC, ROUND_KAHAN = 0, 1, 2  # fo_rounding
Q8_BLOCK = 256                                      # FO_Q8_BLOCK

_U32 = np.uint32
_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


is_bfloat16 = check.is_bfloat16
is_16bit = check.is_16bit


def format_of(dtype):
    """FMT_F16, FMT_BF16, or FMT_NATIVE for any other dtype."""
    return FMT_F16 if dtype == np.float16 else FMT_BF16 if is_bfloat16(dtype) else FMT_NATIVE


def _bits(x):
    return x.view(_U32)


def widen(a, fmt):
    """16-bit values (an array of the format's dtype, or uint16 bits) as
    float32, in an array of a's layout: exact; a float16 NaN is made quiet (as
    F16C does)."""
    h = a.view(np.uint16)
    out = np.empty_like(h, dtype=np.float32)
    if fmt == FMT_BF16:
        out.view(_U32)[...] = h.astype(_U32) << 16
        return out
    with np.errstate(all="ignore"):
        out[...] = h.view(np.float16)
    nan = np.isnan(out)
    if nan.any():
        out.view(_U32)[nan] |= 0x00400000
    return out


def narrow(x, fmt):
    """float32 to 16-bit bits (uint16), rounded to nearest even. float16: IEEE,
    subnormals kept, Inf above 65504's rounding range, a NaN quiet with its top
    payload bits. bfloat16: float32 subnormals become signed zeros and a NaN is
    made quiet (the rule of vcvtneps2bf16, which formats.c uses where the CPU has
    it)."""
    x = np.asarray(x, np.float32)
    if fmt == FMT_F16:
        with np.errstate(all="ignore"):
            return x.astype(np.float16).view(np.uint16)
    u = _bits(x)
    a = u & 0x7FFFFFFF
    rounded = (u + (0x7FFF + ((u >> 16) & 1))) >> 16
    out = np.where(a > 0x7F800000, (u >> 16) | 0x40,
                   np.where(a < 0x00800000, (u >> 16) & 0x8000, rounded))
    return out.astype(np.uint16)


def _mix64(z):
    """splitmix64's output function, on uint64 arrays (wrapping)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _mix64_int(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def rounding_key(seed, t, stream):
    """Stochastic rounding's key for one array of one step (fo_rounding_key)."""
    return _mix64_int(_mix64_int(_mix64_int(seed & _MASK64) ^ (t & _MASK64)) ^ (stream & _MASK64))


def random_bits(key, first, n, bits):
    """The generator's bits for elements first .. first+n-1 of an array
    (formats.c's draw16/draw32): word w is mix(key + w * golden), and element j
    takes the 16-bit piece j % 4 of word j // 4 (bits=16) or the 32-bit piece
    j % 2 of word j // 2 (bits=32), counting from the low bits: a
    counter-based draw, the same however the elements are split."""
    per = 64 // bits
    w0, w1 = first // per, (first + n + per - 1) // per
    with np.errstate(all="ignore"):
        words = _mix64(np.uint64(key) + np.arange(w0, w1, dtype=np.uint64)
                       * np.uint64(_GOLDEN))
    pieces = words.astype("<u8").view("<u2" if bits == 16 else "<u4")
    start = first - w0 * per
    return pieces[start:start + n].astype(_U32)


def narrow_stochastic(x, fmt, key, first=0):
    """float32 to 16-bit bits of x's shape, rounded stochastically (formats.c's
    bf16_sr_grid and f16_sr_grid, then nearest): of the two grid neighbours of
    |x|, the upper with probability (|x| - lower)/(upper - lower), element j
    in x's memory order drawing random_bits(key, first + j); NaN and
    magnitudes from the largest finite value up round to nearest."""
    shaped = np.asarray(x, np.float32)
    x = np.ravel(shaped, order="K")
    u = _bits(x)
    a = u & 0x7FFFFFFF
    with np.errstate(all="ignore"):
        if fmt == FMT_BF16:
            r16 = random_bits(key, first, x.size, 16)
            up = np.where((u & 0xFFFF) > r16, _U32(0x10000), _U32(0))
            grid = np.where(a >= 0x7F7F0000, u, (u & 0xFFFF0000) + up)
        else:
            r32 = random_bits(key, first, x.size, 32)
            e = a >> 23
            # |x| truncated to the grid: 13 fraction bits dropped from 2**-14 up,
            # more below (float16's subnormals), everything below 2**-24
            drop = np.where(e >= 113, _U32(13), np.where(e >= 103, _U32(126) - e, _U32(0)))
            lo = np.where(e >= 103, a & (_U32(0xFFFFFFFF) << drop), _U32(0)).view(np.float32)
            gap = np.where(e >= 113, ((a & 0x7F800000) - _U32(10 << 23)).view(np.float32),
                           np.float32(2.0**-24))
            draw = (r32 >> 8).astype(np.float32) * np.float32(2.0**-24) * gap
            up = np.where(a.view(np.float32) - lo > draw, gap, np.float32(0))
            grid = np.where(a >= 0x477FE000, u, _bits(lo + up) | (u & 0x80000000))
    out = np.empty_like(shaped, dtype=np.uint16)
    np.ravel(out, order="K")[...] = narrow(grid.astype(_U32).view(np.float32), fmt)
    return out


def kahan_store(p, c, v, fmt):
    """Kahan-compensated write-back into p (16-bit, in place) with compensation c
    (16-bit, in place): v + c rounded into p, and what that lost (0 where p is
    not finite) rounded into c. Returns p's new values as float32."""
    with np.errstate(all="ignore"):
        v = v + widen(c, fmt)
        p.view(np.uint16)[...] = narrow(v, fmt)
        back = widen(p, fmt)
        c.view(np.uint16)[...] = narrow(np.where(np.abs(back) < np.inf, v - back,
                                                 np.float32(0)), fmt)
    return back


def dynamic_map(signed):
    """The dynamic quantization map of Dettmers et al. (bitsandbytes'
    create_dynamic_map with 7 exponent bits of 8), exactly as csrc/driver.c's
    qmap_build computes it: for i = 0..6, the midpoints of n + 1 evenly spaced
    points from 0.1 to 1 scaled by 10**(i - 6), n = 2**i (signed: with their
    negatives) or 2**(i + 1), in double rounded once to float32; then 0 and 1;
    sorted. 256 float32 values."""
    parts = [np.zeros(1, np.float32), np.ones(1, np.float32)]
    for i, scale in enumerate((1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)):
        n = 2**i if signed else 2 ** (i + 1)
        j = np.arange(n, dtype=np.float64)
        v = (scale * (0.1 + 0.9 * (2 * j + 1) / (2 * n))).astype(np.float32)
        parts += [v, -v] if signed else [v]
    return np.sort(np.concatenate(parts))


_QMAPS = {FMT_Q8: dynamic_map(True), FMT_Q8_UNSIGNED: dynamic_map(False)}
_ZERO_CODE = {FMT_Q8: 127, FMT_Q8_UNSIGNED: 0}


def _midpoints(fmt):
    m = _QMAPS[fmt][_ZERO_CODE[fmt]:].astype(np.float64)  # 0, then the magnitudes upwards
    return (m[:-1] + m[1:]) / 2.0


_MIDPOINTS = {fmt: _midpoints(fmt) for fmt in _QMAPS}


def nearest_code(x, fmt):
    """The code of the map value nearest to each x in [-1, 1] (float32): by
    magnitude j = the number of magnitude midpoints below |x|, compared exactly
    (a tie goes to the smaller magnitude; 0 to 0); the signed map's code is 127
    + j, or 127 - min(j, 127) for x < 0; the unsigned map's j (x <= 0: 0)."""
    mids = _MIDPOINTS[fmt]
    x = np.asarray(x, np.float32)
    if fmt == FMT_Q8_UNSIGNED:
        return np.searchsorted(mids, x.astype(np.float64), side="left").astype(np.uint8)
    j = np.searchsorted(mids, np.abs(x).astype(np.float64), side="left")
    return np.where(x < 0, 127 - np.minimum(j, 127), 127 + j).astype(np.uint8)


def q8_encode(x, fmt):
    """Block-wise 8-bit quantization of a float32 vector: per block of
    Q8_BLOCK elements from element 0, absmax = max |x| (NaN when any element
    is Inf or NaN), each element to the nearest code of x * (1/absmax) in
    float32 (x / absmax when absmax is below float32's normal range, where
    1/absmax overflows). A block of zeros or with a non-finite element stores
    the code of 0 (absmax 0 or NaN). Returns (codes uint8, absmax float32)."""
    x = np.asarray(x, np.float32).ravel()
    n = x.size
    nb = -(-n // Q8_BLOCK)
    blocks = np.zeros(nb * Q8_BLOCK, np.float32)
    blocks[:n] = x
    blocks = blocks.reshape(nb, Q8_BLOCK)
    largest = (_bits(blocks) & 0x7FFFFFFF).max(axis=1) if nb else np.zeros(0, _U32)
    dead = (largest == 0) | (largest >= 0x7F800000)
    absmax = np.where(largest >= 0x7F800000, _U32(0x7FC00000), largest).astype(_U32)
    absmax = absmax.view(np.float32)
    with np.errstate(all="ignore"):
        safe = np.where(dead, np.float32(1), absmax)[:, None]
        tiny = (largest < 0x00800000)[:, None]
        scaled = np.where(tiny, blocks / safe, blocks * (np.float32(1) / safe))
    codes = nearest_code(scaled, fmt)
    codes[dead] = _ZERO_CODE[fmt]
    return codes.ravel()[:n], absmax


def q8_decode(codes, absmax, fmt):
    """The float32 values of 8-bit codes (a vector) with their block maxima."""
    codes = np.asarray(codes).ravel()
    scale = np.repeat(np.asarray(absmax, np.float32), Q8_BLOCK)[:codes.size]
    with np.errstate(all="ignore"):
        return _QMAPS[fmt][codes] * scale


class Storage:
    """How one array's streams are stored (the C side's fo_formats and its
    Kahan and block-maximum slots): the parameter's format `p` (FMT_NATIVE,
    FMT_F16, FMT_BF16), each state slot's `state` format (FMT_NATIVE, FMT_BF16
    as uint16 bits, FMT_Q8, FMT_Q8_UNSIGNED), the slots' block maxima `absmax`
    (float32 arrays; None for other formats), the compensation `kahan` (for
    ROUND_KAHAN), the `rounding` of a 16-bit parameter and the stochastic
    rounding's `seed` and `stream` (the array's number in its key)."""

    def __init__(self, p=FMT_NATIVE, state=(), absmax=(), kahan=None,
                 rounding=ROUND_NEAREST, seed=0, stream=0):
        self.p = p
        self.state = tuple(state) + (FMT_NATIVE,) * (MAX_STATES - len(state))
        self.absmax = tuple(absmax) + (None,) * (MAX_STATES - len(absmax))
        self.kahan = kahan
        self.rounding = rounding
        self.seed = seed
        self.stream = stream

    def load_state(self, j, a):
        """State slot j's values as a float32 array of a's shape (a itself when
        it is float32: updated in place)."""
        fmt = self.state[j]
        if fmt == FMT_BF16:
            return widen(a, FMT_BF16)
        if fmt in (FMT_Q8, FMT_Q8_UNSIGNED) and self.absmax[j] is not None:
            flat = q8_decode(np.ravel(a, order="K"), self.absmax[j], fmt)
            out = np.empty_like(a, dtype=np.float32)
            np.ravel(out, order="K")[...] = flat  # a's layout (contiguous)
            return out
        return a

    def store_state(self, j, a, values):
        fmt = self.state[j]
        if fmt == FMT_BF16:
            a.view(np.uint16)[...] = narrow(values, FMT_BF16)
        elif fmt in (FMT_Q8, FMT_Q8_UNSIGNED) and self.absmax[j] is not None:
            codes, absmax = q8_encode(np.ravel(values, order="K"), fmt)
            np.ravel(a, order="K")[...] = codes
            self.absmax[j][...] = absmax

    def store_parameter(self, p, values, t):
        """Round the float32 `values` into the 16-bit parameter p (in place);
        returns p's new values as float32 (what an EMA follows)."""
        if self.rounding == ROUND_KAHAN:
            return kahan_store(p, self.kahan, values, self.p)
        if self.rounding == ROUND_STOCHASTIC:
            key = rounding_key(self.seed, t, self.stream)
            p.view(np.uint16)[...] = narrow_stochastic(values, self.p, key)
        else:
            p.view(np.uint16)[...] = narrow(values, self.p)
        return widen(p, self.p)


def widen_any(a):
    """Any parameter or gradient as the float values the arithmetic sees:
    16-bit arrays widened to float32, others as they are."""
    fmt = format_of(a.dtype)
    return a if fmt == FMT_NATIVE else widen(a, fmt)


# --- one call over many arrays ------------------------------------------------------

def _silent(fn):
    """NaN and Inf propagate without warnings, as in the C kernels."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)

    return wrapper


def capped_step(t):
    """A step count capped at 2**64: beta**t is 0 long before that for any
    beta < 1, and the cap keeps float(t) from overflowing."""
    return min(t, 2**64)


def _step(t):
    """The validated step count, capped (capped_step)."""
    return capped_step(check.step(t))


def scaled(g, grad_scale, dtype):
    """g * grad_scale as the kernels read it for a parameter of `dtype` (in two
    factors below its normal range: FO_SCALE_SPLIT); g itself when the scale is 1."""
    s1, s2 = _split_scale(grad_scale, dtype)
    gi = g if s1 == 1.0 else g * s1
    if s2 is not None:
        gi = gi * s2
    return gi


@_silent
def apply(r, entries, t, lr, h, flags, decay, grad_scale, scalars):
    """The update of checked arrays: `entries` is a list of (p, g, states, wd)
    or (p, g, states, wd, storage[, factors]) with states in slot order (None
    where absent) and factors as Array takes them; g may be (sources, scale),
    the gradient's sources to sum in order (sum_sources); `storage` (a Storage,
    or None for arrays in their own dtype) says how 16-bit and 8-bit streams
    are widened before the rule and written back after it (elementwise rules
    only: the C driver stages no rule with a reduction or a factored state).
    Returns the new scalars."""
    t = capped_step(t)
    c, f, scalars = r.prepare(t, lr, h, flags, tuple(scalars))
    for p, g, s, wd, *more in entries:
        storage = more[0] if more else None
        factors = more[1:]
        if storage is not None and (r.reduce is not None or factors):
            raise ValueError(f"{r.name}: storage formats are for elementwise rules only")
        if isinstance(g, tuple):  # several sources (data parallelism), in order
            g = sum_sources(g[0], g[1])
        if storage is not None:  # the staged block loop: float32 in, stored formats out
            stored, stored_s = p, s
            p = widen(p, storage.p) if storage.p != FMT_NATIVE else p
            g = widen_any(g)
            s = [None if a is None else storage.load_state(j, a) for j, a in enumerate(s)]
        # Every rule starts from gi = grad_scale*g, and the array's decay:
        # L2 adds wd*p to gi; decoupled scales p by 1 - lr*wd first (after the
        # reduce pass of a rule with a reduction); update is the rule's own.
        gi = scaled(g, grad_scale, p.dtype)
        fa = f
        if wd != 0.0:
            fa |= decay
        if fa & DECAY_L2:
            gi = _l2_sum(gi, wd, p)
        a = Array(wd, factors[0] if factors else None)
        if r.reduce is not None:
            quantities = r.reduce(p, gi, s, c, fa | REDUCE, a)
            order = "F" if p.flags.f_contiguous and not p.flags.c_contiguous else "C"
            sums = [_reduce_sum(q, order) for q in quantities]
            a.factor = r.finish(c, p.size, sums) if p.size else 0.0
        if fa & DECAY_DECOUPLED:
            p *= 1.0 - lr * wd
        if r.array:
            r.update(p, gi, s, c, fa, a)
        else:
            r.update(p, gi, s, c, fa)
        if storage is not None:
            for j, stored_j in enumerate(stored_s):
                if stored_j is not None:
                    storage.store_state(j, stored_j, s[j])
            if storage.p != FMT_NATIVE:
                storage.store_parameter(stored, p, t)
    return scalars


def check_settings(r, t, learning_rate, hyper, names, flags, decay, grad_scale, scalars):
    """Validated (t, lr, hyperparameters, scalars, flags, grad_scale) of one call;
    `hyper` and `scalars` are values in the rule's order, `names` the caller's
    names for the hyperparameters (in its messages)."""
    t = _step(t)
    lr = check.learning_rate(learning_rate)
    hyper, scalars = tuple(hyper), tuple(scalars)
    names = r.hyper if names is None else tuple(names)
    if len(hyper) != len(r.hyper) or len(names) != len(r.hyper):
        raise TypeError(f"{r.name} takes {len(r.hyper)} hyperparameters "
                        f"({', '.join(r.hyper)}), got {len(hyper)}")
    h = tuple(_KINDS[kind](value, name) for value, name, kind in zip(hyper, names, r.hyper_kinds))
    if len(scalars) != len(r.scalars):
        raise TypeError(f"{r.name} takes the scalar state ({', '.join(r.scalars)}), "
                        f"got {len(scalars)} values")
    sc = tuple(_KINDS[kind](value, name)
               for value, name, kind in zip(scalars, r.scalars, r.scalar_kinds))
    if isinstance(flags, (bool, np.bool_)) or not isinstance(flags, (int, np.integer)) \
            or int(flags) not in r.valid_flags:
        raise ValueError(f"{r.name}: invalid flags {flags!r}")
    if decay not in (0, DECAY_L2, DECAY_DECOUPLED, DECAY_UPDATE) or decay & ~r.decay:
        raise ValueError(f"{r.name} does not take weight decay style {decay!r}")
    gs = check.finite(grad_scale, "grad_scale")
    return t, lr, h, sc, int(flags), gs


def update(rule, parameters, grads, states, t, learning_rate, hyper, *, flags=0,
           weight_decay=0.0, decay=0, grad_scale=1.0, scalars=(), names=None,
           state_names=None, checked=None):
    """One step of `rule` over dicts of arrays, in place.

    states: one dict (or None, where the flags leave the slot out) per state
    slot, in the rule's order; hyper and scalars: values in the rule's order;
    names, state_names: the caller's names for the hyperparameters and state
    dicts, in its messages (default: the rule's); weight_decay: one value or a
    dict by parameter key; decay: DECAY_L2 or DECAY_DECOUPLED (0: none).
    Everything is checked before anything is written; then checked(), if
    given, is called (the compiled backend says there why the step runs
    here). Returns the new scalar state (a tuple)."""
    r = RULES[rule]
    t, lr, h, sc, flags, gs = check_settings(r, t, learning_rate, hyper, names, flags, decay,
                                             grad_scale, scalars)
    states = tuple(states)
    state_names = r.states if state_names is None else tuple(state_names)
    if len(states) != len(r.states) or len(state_names) != len(r.states):
        raise TypeError(f"{r.name} takes the state dicts ({', '.join(r.states)}), "
                        f"got {len(states)}")
    for d, name, need in zip(states, state_names, r.state_flags):
        if (d is not None) != (not need or bool(flags & need)):
            when = r.flags[need.bit_length() - 1] if need else "always"
            raise ValueError(f"{r.name}: {name} must be given exactly when {when} is set"
                             if need else f"{r.name}: {name} must be given")
    named = [(n, d) for n, d in zip(state_names, states) if d is not None]
    entries = check.gather(parameters, grads, named)
    wds = check.weight_decays(parameters, weight_decay)
    if r.reduce is not None:
        for key, (p, _, _) in zip(parameters, entries):
            if check.is_16bit(p.dtype):
                raise TypeError(f"{r.name} reduces over whole arrays and takes no 16-bit "
                                f"parameters: parameters[{key!r}] is {p.dtype}")
    rows = []
    for i, (p, g, present) in enumerate(entries):
        it = iter(present)
        s = [next(it) if d is not None else None for d in states]
        # a 16-bit parameter: float32 arithmetic and state, rounded to nearest
        storage = Storage(p=format_of(p.dtype)) if check.is_16bit(p.dtype) else None
        rows.append((p, g, s, 0.0 if wds is None else wds[i], storage))
    if checked is not None:
        checked()
    return apply(r, rows, t, lr, h, flags, decay, gs, sc)


# --- the global norm ----------------------------------------------------------------

_NORM_CHUNK = 1024  # csrc/kernels.h FO_NORM_CHUNK
_NORM_LANES = 16    # FO_NORM_LANES


def _chunk_sums(g, scale=1.0, chunk=_NORM_CHUNK):
    """The kernel's partial sums of one array: per chunk of `chunk` elements
    in memory order, lane j sums the squares of elements j, j+16, ... (each
    multiplied by `scale` first) in order, then the lanes are added in order."""
    x = np.ravel(widen_any(g), order="K").astype(np.float64) * scale
    n = x.size
    if n == 0:
        return np.zeros(0)
    nchunks = -(-n // chunk)
    rows = chunk // _NORM_LANES if n > chunk else -(-n // _NORM_LANES)
    padded = np.zeros(nchunks * rows * _NORM_LANES)
    padded[:n] = x
    sq = padded.reshape(nchunks, rows, _NORM_LANES)
    acc = sq[:, 0, :] * sq[:, 0, :]
    for r in range(1, rows):
        acc += sq[:, r, :] * sq[:, r, :]
    total = acc[:, 0].copy()
    for j in range(1, _NORM_LANES):
        total += acc[:, j]
    return total


_BLOCK = 256  # csrc/kernels.h FO_BLOCK: the reduce pass's blocks


def _reduce_sum(q, order):
    """The driver's sum of squares of one quantity of a rule with a reduction
    (driver.c, reduce_block): per block of _BLOCK elements in the array's
    memory order `order`, the norm's lanes; the blocks' sums added in order."""
    blocks = _chunk_sums(np.ravel(q, order=order), chunk=_BLOCK)
    return float(np.add.accumulate(blocks)[-1]) if blocks.size else 0.0


# Below this sum of squares a float64 sum may have lost squares to underflow
# (each at most 2**-1074 of absolute error; relative to the sum it stays below
# 2**-53 only above about n * 2**-1021): the norm is then measured again with
# the elements rescaled (the driver's FO_NORM_TINY).
_NORM_TINY = 2.0**-900


def _sum_of_squares(gradients, scale=1.0):
    sums = [_chunk_sums(g, scale) for g in gradients]
    flat = np.concatenate(sums) if sums else np.zeros(0)
    return float(np.add.accumulate(flat)[-1]) if flat.size else 0.0


@_silent
def _group_norm(gradients):
    """The norm of one dtype group, as fo_norm computes it: the sum of squares
    in double, in fixed chunks; where float64 squares overflow or underflow, the
    sum again with every element scaled by a power of two that brings the
    largest to [0.5, 1)."""
    finite = all(bool(np.isfinite(widen_any(g)).all()) for g in gradients)
    total = _sum_of_squares(gradients)
    if finite and any(g.dtype == np.float64 for g in gradients) and \
            (total == math.inf or total < _NORM_TINY):
        largest = max((float(np.max(np.abs(g))) for g in gradients if g.size), default=0.0)
        if largest == 0.0:
            return 0.0, finite
        e = max(math.frexp(largest)[1], -1020)  # 2**-e finite: subnormal values
        root = math.sqrt(_sum_of_squares(gradients, math.ldexp(1.0, -e)))
        try:
            return math.ldexp(root, e), finite
        except OverflowError:  # the norm itself beyond double's range (C's ldexp: inf)
            return math.inf, finite
    return math.sqrt(total), finite


@_silent
def norm(groups):
    """(the global norm, all elements finite) over `groups`, lists of arrays
    of one dtype each: each group's norm as the kernels measure it (the same
    for any thread count), combined in order with hypot (the compiled step
    measures each dtype group in one call)."""
    total = 0.0
    finite = True
    for gradients in groups:
        n, ok = _group_norm(gradients)
        total = float(np.hypot(total, n))
        finite = finite and ok
    return total, finite


def grad_norm(parameters, grads):
    """The global norm of the gradients of `parameters` (dict level, one dtype
    group), and whether every element is finite."""
    return _group_norm([g for _, g, _ in check.gather(parameters, grads)])


class Stepper:
    """The optimizer objects' step with this backend (the compiled backend's
    twin is _core.Stepper): the learning rate for this step, then the object's
    NumPy step (fastoptim.optimizers.Optimizer._step_numpy)."""

    def step(self, grads):
        """One update of every parameter from grads["d" + key], in place; then
        t += 1. Returns False, having changed nothing, when skip_nonfinite is set
        and a gradient holds an Inf or NaN; True otherwise."""
        t = self._t
        lr = self._lr if self._schedule is None else self._scheduled_lr(t)
        return self._step_numpy(grads, t + 1, lr)

    _compiled = False  # every step is _step_numpy

    def _bind(self, rule, keys, rows, unsigned=(), takes=None, phase=False):
        """The compiled backend gathers pointers here; nothing to do."""

    def _bind_factors(self, factors):
        """The compiled backend gathers the factored state's pointers here."""
        return True

    def _unbind(self):
        """The compiled backend drops its pointers here; nothing to do."""

    def _configure(self, hyper, flags, decay, weight_decay, max_norm, skip, maximize,
                   ema_decay=0.0, ema_warmup=False, rounding=ROUND_NEAREST, seed=0):
        """The compiled backend copies the settings here; nothing to do."""
