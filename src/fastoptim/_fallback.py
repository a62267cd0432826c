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
    (None where absent). A rule declared with array=True takes the array's
    coefficients too, `update(p, gi, s, c, f, a)` (an Array: wd, factors,
    factor). A rule with a reduction (rules.h, FO_REDUCE_RULES) also has
    `reduce(p, gi, s, c, f, a) -> quantities` (it updates the state; the decay
    of p comes after it) and `finish(c, n, sums) -> factor`."""

    def __init__(self, name, states, hyper, flags, scalars, decay, valid_flags, array=False):
        self.name = name
        self.states = tuple(s.split(":")[0] for s in states.split())
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


def rule(name, states, hyper, flags="", scalars="", decay=0, valid_flags=(0,), array=False):
    r = Rule(name, states, hyper, flags, scalars, decay, valid_flags, array)
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
      decay=DECAY_L2 | DECAY_DECOUPLED, valid_flags=(0, ADAM_AMSGRAD))
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
      scalars="mu_product:fraction", decay=DECAY_L2 | DECAY_DECOUPLED)
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


@rule("radam", "v s", "beta1:beta beta2:beta epsilon:eps", decay=DECAY_L2 | DECAY_DECOUPLED)
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


@rule("adamax", "v exp_inf", "beta1:beta beta2:beta epsilon:eps", decay=DECAY_L2)
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


@rule("adagrad", "sum", "lr_decay:nonneg epsilon:eps", decay=DECAY_L2)
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
      valid_flags=(0, RMSPROP_CENTERED, RMSPROP_MOMENTUM, RMSPROP_CENTERED | RMSPROP_MOMENTUM))
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
      scalars="weight_sum:nonneg lr_max:nonneg", decay=DECAY_UPDATE, array=True)
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


@rule("lamb", "v s", "beta1:beta beta2:beta epsilon:eps", decay=DECAY_UPDATE, array=True)
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
      array=True)
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


# --- one call over many arrays ------------------------------------------------------

def _silent(fn):
    """NaN and Inf propagate without warnings, as in the C kernels."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)

    return wrapper


def _step(t):
    """The validated step count, capped at 2**64: beta**t is 0 long before that
    for any beta < 1, and the cap keeps float(t) from overflowing."""
    return min(check.step(t), 2**64)


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
    or (p, g, states, wd, factors) with states in slot order (None where absent)
    and factors as Array takes them; g may be (sources, scale), the gradient's
    sources to sum in order (sum_sources). Returns the new scalars."""
    # beta**t is 0 long before t = 2**64 for any beta < 1, and the cap keeps
    # float(t) from overflowing
    c, f, scalars = r.prepare(min(t, 2**64), lr, h, flags, tuple(scalars))
    for p, g, s, wd, *factors in entries:
        if isinstance(g, tuple):  # several sources (data parallelism), in order
            g = sum_sources(g[0], g[1])
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
           state_names=None):
    """One step of `rule` over dicts of arrays, in place.

    states: one dict (or None, where the flags leave the slot out) per state
    slot, in the rule's order; hyper and scalars: values in the rule's order;
    names, state_names: the caller's names for the hyperparameters and state
    dicts, in its messages (default: the rule's); weight_decay: one value or a
    dict by parameter key; decay: DECAY_L2 or DECAY_DECOUPLED (0: none).
    Everything is checked before anything is written. Returns the new scalar
    state (a tuple)."""
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
    rows = []
    for i, (p, g, present) in enumerate(entries):
        it = iter(present)
        s = [next(it) if d is not None else None for d in states]
        rows.append((p, g, s, 0.0 if wds is None else wds[i]))
    return apply(r, rows, t, lr, h, flags, decay, gs, sc)


# --- the global norm ----------------------------------------------------------------

_NORM_CHUNK = 1024  # csrc/kernels.h FO_NORM_CHUNK
_NORM_LANES = 16    # FO_NORM_LANES


def _chunk_sums(g, scale=1.0, chunk=_NORM_CHUNK):
    """The kernel's partial sums of one array: per chunk of `chunk` elements
    in memory order, lane j sums the squares of elements j, j+16, ... (each
    multiplied by `scale` first) in order, then the lanes are added in order."""
    x = np.ravel(g, order="K").astype(np.float64) * scale
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
    finite = all(bool(np.isfinite(g).all()) for g in gradients)
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

    def _bind(self, rule, keys, rows, takes=None, phase=False):
        """The compiled backend gathers pointers here; nothing to do."""

    def _bind_factors(self, factors):
        """The compiled backend gathers the factored state's pointers here."""
        return True

    def _unbind(self):
        """The compiled backend drops its pointers here; nothing to do."""

    def _configure(self, hyper, flags, decay, weight_decay, max_norm, skip, maximize,
                   ema_decay=0.0, ema_warmup=False):
        """The compiled backend copies the settings here; nothing to do."""
