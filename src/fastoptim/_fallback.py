"""The NumPy backend: the reference implementation of every update.

Same names, signatures and in-place semantics as the compiled backend (_core).
It runs when the extension is unavailable or FASTOPTIM_BACKEND=numpy, and for
any call the compiled path does not take (non-contiguous or mixed-layout views,
other float dtypes, invalid input): the compiled backend hands such calls here.

Each line below performs the same IEEE operations, in the same order and in
the array's dtype, as csrc/kernels.inc, so the two backends agree bitwise.
"""
import functools
import math

import numpy as np

from . import _validate as check


def _silent(update):
    """NaN and Inf propagate without warnings, as in the C kernels."""

    @functools.wraps(update)
    def wrapper(*args):
        with np.errstate(all="ignore"):
            return update(*args)

    return wrapper


def _step(t):
    """The validated step count, capped at 2**64: beta**t is 0 long before that
    for any beta < 1, and the cap keeps float(t) from overflowing."""
    return min(check.step(t), 2**64)


@_silent
def gd(parameters, grads, learning_rate):
    """p -= learning_rate * g"""
    lr = check.learning_rate(learning_rate)
    for p, g, _ in check.gather(parameters, grads):
        p -= lr * g


@_silent
def momentum(parameters, grads, v, beta, learning_rate):
    """v = beta*v + (1-beta)*g;  p -= learning_rate * v"""
    beta = check.beta(beta, "beta")
    lr = check.learning_rate(learning_rate)
    for p, g, (vel,) in check.gather(parameters, grads, (("v", v),)):
        vel *= beta
        vel += (1.0 - beta) * g
        p -= lr * vel


@_silent
def adam(parameters, grads, v, s, t, learning_rate, beta1, beta2, epsilon):
    """m = b1*m + (1-b1)*g;  s = b2*s + (1-b2)*g*g;
    p -= lr * (m/(1-b1^t)) / (sqrt(s/(1-b2^t)) + eps)"""
    t = _step(t)
    lr = check.learning_rate(learning_rate)
    beta1 = check.beta(beta1, "beta1")
    beta2 = check.beta(beta2, "beta2")
    eps = check.epsilon(epsilon)
    # Per-step scalars in double, once per call; the per-element work below is
    # in the arrays' dtype.
    step = lr / (1.0 - beta1**t)
    rsqrt_bc2 = 1.0 / math.sqrt(1.0 - beta2**t)
    for p, g, (m, sq) in check.gather(parameters, grads, (("v", v), ("s", s))):
        m *= beta1
        m += (1.0 - beta1) * g
        sq *= beta2
        sq += (1.0 - beta2) * g * g
        p -= step * m / (np.sqrt(sq) * rsqrt_bc2 + eps)


# --- the family -------------------------------------------------------------------
# Every update below first takes gi = grad_scale * g (the clipping scale, negated
# to maximize) and applies each parameter's weight decay wd either as L2
# (gi += wd * p) or, when decoupled, as p *= 1 - lr*wd before the update. Each
# line mirrors the C kernel (csrc/kernels.inc) operation for operation.

def _entries(parameters, grads, states, weight_decay):
    """Checked arrays and per-parameter weight decay: a list of (p, g, state, wd)."""
    entries = check.gather(parameters, grads, [(n, d) for n, d in states if d is not None])
    wds = check.weight_decays(parameters, weight_decay)
    out = []
    for i, (p, g, state) in enumerate(entries):
        it = iter(state)
        full = [next(it) if d is not None else None for _, d in states]
        out.append((p, g, full, 0.0 if wds is None else wds[i]))
    return out


def _grad(p, g, gs, wd, decoupled):
    gi = g if gs == 1.0 else g * gs
    if wd != 0.0 and not decoupled:
        gi = gi + wd * p
    return gi


def _decay(p, wd, decoupled, lr):
    if wd != 0.0 and decoupled:
        p *= 1.0 - lr * wd


def _max(a, b):
    """Elementwise max that keeps a NaN from either side (the kernels' FO_MAX)."""
    return np.where((a > b) | np.isnan(a), a, b)


def _sign(x):
    """sign with sign(0) = 0 (keeping the zero's sign) and NaN kept (FO_SIGN)."""
    one = x.dtype.type(1)
    return np.where(x > 0, one, np.where(x < 0, -one, x))


_NORM_CHUNK = 1024  # csrc/kernels.h FO_NORM_CHUNK
_NORM_LANES = 16    # FO_NORM_LANES


def _chunk_sums(g):
    """The kernel's partial sums of one array: per chunk of _NORM_CHUNK elements
    in memory order, lane j sums the squares of elements j, j+16, ... in order,
    then the lanes are added in order."""
    x = np.ravel(g, order="K").astype(np.float64)
    n = x.size
    if n == 0:
        return np.zeros(0)
    nchunks = -(-n // _NORM_CHUNK)
    rows = _NORM_CHUNK // _NORM_LANES if n > _NORM_CHUNK else -(-n // _NORM_LANES)
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


@_silent
def grad_norm(parameters, grads):
    """(sqrt(sum of g*g over every gradient), all elements finite), the sum in
    double in the kernel's fixed order (the same for any thread count)."""
    entries = check.gather(parameters, grads)
    sums = [_chunk_sums(g) for _, g, _ in entries]
    finite = all(bool(np.isfinite(g).all()) for _, g, _ in entries)
    total = 0.0
    if sums:
        flat = np.concatenate(sums)
        if flat.size:
            total = float(np.add.accumulate(flat)[-1])
    return math.sqrt(total), finite


@_silent
def sgd(parameters, grads, momentum_buffer, t, learning_rate, momentum, dampening, nesterov,
        weight_decay=0.0, grad_scale=1.0, course=False):
    """b = mu*b + (1-dampening)*gi (torch: b = gi at t == 1);
    u = gi + mu*b if nesterov (course: (1-dampening)*gi + mu*b) else b;  p -= lr*u.
    momentum_buffer None: p -= lr*gi."""
    t = check.step(t)
    lr = check.learning_rate(learning_rate)
    mu = check.beta(momentum, "momentum")
    omd = 1.0 - check.fraction(dampening, "dampening")
    nesterov = check.flag(nesterov, "nesterov")
    gs = check.finite(grad_scale, "grad_scale")
    course = check.flag(course, "course")
    if momentum_buffer is None and nesterov:
        raise ValueError("nesterov needs a momentum_buffer")
    first = t == 1 and not course
    ng = omd if course else 1.0
    for p, g, (b,), wd in _entries(parameters, grads, (("momentum_buffer", momentum_buffer),),
                                   weight_decay):
        gi = _grad(p, g, gs, wd, False)
        u = gi
        if b is not None:
            if first:
                b[...] = gi
            else:
                b *= mu
                b += omd * gi
            u = ng * gi + mu * b if nesterov else b
        p -= lr * u


@_silent
def adam_ext(parameters, grads, v, s, max_s, t, learning_rate, beta1, beta2, epsilon,
             weight_decay=0.0, decoupled=False, grad_scale=1.0):
    """Adam (weight decay as L2) or AdamW (decoupled), amsgrad when max_s is given:
    max_s = max(max_s, s), used in place of s."""
    t = _step(t)
    lr = check.learning_rate(learning_rate)
    beta1 = check.beta(beta1, "beta1")
    beta2 = check.beta(beta2, "beta2")
    eps = check.epsilon(epsilon)
    decoupled = check.flag(decoupled, "decoupled")
    gs = check.finite(grad_scale, "grad_scale")
    step = lr / (1.0 - beta1**t)
    rsqrt_bc2 = 1.0 / math.sqrt(1.0 - beta2**t)
    for p, g, (m, sq, smax), wd in _entries(
            parameters, grads, (("v", v), ("s", s), ("max_s", max_s)), weight_decay):
        gi = _grad(p, g, gs, wd, decoupled)
        _decay(p, wd, decoupled, lr)
        m *= beta1
        m += (1.0 - beta1) * gi
        sq *= beta2
        sq += (1.0 - beta2) * gi * gi
        denom_sq = sq
        if smax is not None:
            smax[...] = _max(smax, sq)
            denom_sq = smax
        p -= step * m / (np.sqrt(denom_sq) * rsqrt_bc2 + eps)


@_silent
def nadam(parameters, grads, v, s, t, mu_product, learning_rate, beta1, beta2, epsilon,
          momentum_decay, weight_decay=0.0, decoupled=False, grad_scale=1.0):
    """NAdam (torch's): returns mu_product * mu_t, the product to pass next step."""
    t = _step(t)
    mu_product = check.fraction(mu_product, "mu_product")
    lr = check.learning_rate(learning_rate)
    beta1 = check.beta(beta1, "beta1")
    beta2 = check.beta(beta2, "beta2")
    eps = check.epsilon(epsilon)
    md = check.nonnegative(momentum_decay, "momentum_decay")
    decoupled = check.flag(decoupled, "decoupled")
    gs = check.finite(grad_scale, "grad_scale")
    rsqrt_bc2 = 1.0 / math.sqrt(1.0 - beta2**t)
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (t * md))
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * md))
    prod = mu_product * mu
    prod_next = prod * mu_next
    cg = lr * (1.0 - mu) / (1.0 - prod)
    cm = lr * mu_next / (1.0 - prod_next)
    for p, g, (m, sq), wd in _entries(parameters, grads, (("v", v), ("s", s)), weight_decay):
        gi = _grad(p, g, gs, wd, decoupled)
        _decay(p, wd, decoupled, lr)
        m *= beta1
        m += (1.0 - beta1) * gi
        sq *= beta2
        sq += (1.0 - beta2) * gi * gi
        d = np.sqrt(sq) * rsqrt_bc2 + eps
        p -= cg * gi / d
        p -= cm * m / d
    return prod


@_silent
def radam(parameters, grads, v, s, t, learning_rate, beta1, beta2, epsilon,
          weight_decay=0.0, decoupled=False, grad_scale=1.0):
    """RAdam (torch's): rectified once rho_t > 5, epsilon on the uncorrected root."""
    t = _step(t)
    lr = check.learning_rate(learning_rate)
    beta1 = check.beta(beta1, "beta1")
    beta2 = check.beta(beta2, "beta2")
    eps = check.epsilon(epsilon)
    decoupled = check.flag(decoupled, "decoupled")
    gs = check.finite(grad_scale, "grad_scale")
    b2t = beta2**t
    bc1 = 1.0 - beta1**t
    bc2 = 1.0 - b2t
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * t * b2t / bc2
    rect = rho_t > 5.0
    step = lr / bc1
    if rect:
        step = lr * math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf /
                              ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)) * math.sqrt(bc2) / bc1
    for p, g, (m, sq), wd in _entries(parameters, grads, (("v", v), ("s", s)), weight_decay):
        gi = _grad(p, g, gs, wd, decoupled)
        _decay(p, wd, decoupled, lr)
        m *= beta1
        m += (1.0 - beta1) * gi
        sq *= beta2
        sq += (1.0 - beta2) * gi * gi
        if rect:
            p -= step * m / (np.sqrt(sq) + eps)
        else:
            p -= step * m


@_silent
def adamax(parameters, grads, v, exp_inf, t, learning_rate, beta1, beta2, epsilon,
           weight_decay=0.0, grad_scale=1.0):
    """m = b1*m + (1-b1)*gi;  exp_inf = max(b2*exp_inf, |gi| + eps);
    p -= lr/(1-b1^t) * m/exp_inf."""
    t = _step(t)
    lr = check.learning_rate(learning_rate)
    beta1 = check.beta(beta1, "beta1")
    beta2 = check.beta(beta2, "beta2")
    eps = check.epsilon(epsilon)
    gs = check.finite(grad_scale, "grad_scale")
    step = lr / (1.0 - beta1**t)
    for p, g, (m, ui), wd in _entries(parameters, grads, (("v", v), ("exp_inf", exp_inf)), weight_decay):
        gi = _grad(p, g, gs, wd, False)
        m *= beta1
        m += (1.0 - beta1) * gi
        ui[...] = _max(beta2 * ui, np.abs(gi) + eps)
        p -= step * m / ui


@_silent
def adagrad(parameters, grads, sum_, t, learning_rate, lr_decay, epsilon, weight_decay=0.0,
            grad_scale=1.0):
    """sum += gi*gi;  p -= lr/(1 + (t-1)*lr_decay) * gi/(sqrt(sum) + eps)."""
    t = _step(t)
    lr = check.learning_rate(learning_rate)
    lr_decay = check.nonnegative(lr_decay, "lr_decay")
    eps = check.epsilon(epsilon)
    gs = check.finite(grad_scale, "grad_scale")
    clr = lr / (1.0 + (t - 1) * lr_decay)
    for p, g, (acc,), wd in _entries(parameters, grads, (("sum", sum_),), weight_decay):
        gi = _grad(p, g, gs, wd, False)
        acc += gi * gi
        p -= clr * gi / (np.sqrt(acc) + eps)


@_silent
def rmsprop(parameters, grads, square_avg, grad_avg, momentum_buffer, learning_rate, alpha,
            epsilon, momentum, weight_decay=0.0, grad_scale=1.0):
    """sq = alpha*sq + (1-alpha)*gi*gi;  centered (grad_avg given): ga = alpha*ga +
    (1-alpha)*gi, d = sqrt(sq - ga*ga) + eps, else d = sqrt(sq) + eps;  with a
    momentum_buffer: b = momentum*b + gi/d, p -= lr*b, else p -= lr*gi/d."""
    lr = check.learning_rate(learning_rate)
    alpha = check.beta(alpha, "alpha")
    eps = check.epsilon(epsilon)
    mu = check.beta(momentum, "momentum")
    gs = check.finite(grad_scale, "grad_scale")
    states = (("square_avg", square_avg), ("grad_avg", grad_avg),
              ("momentum_buffer", momentum_buffer))
    for p, g, (sq, ga, b), wd in _entries(parameters, grads, states, weight_decay):
        gi = _grad(p, g, gs, wd, False)
        sq *= alpha
        sq += (1.0 - alpha) * gi * gi
        if ga is not None:
            ga *= alpha
            ga += (1.0 - alpha) * gi
            d = np.sqrt(sq - ga * ga) + eps
        else:
            d = np.sqrt(sq) + eps
        if b is not None:
            b *= mu
            b += gi / d
            p -= lr * b
        else:
            p -= lr * gi / d


@_silent
def lion(parameters, grads, v, learning_rate, beta1, beta2, weight_decay=0.0, grad_scale=1.0):
    """p *= 1 - lr*wd;  p -= lr * sign(b1*v + (1-b1)*gi) (sign(0) = 0);
    v = b2*v + (1-b2)*gi."""
    lr = check.learning_rate(learning_rate)
    beta1 = check.beta(beta1, "beta1")
    beta2 = check.beta(beta2, "beta2")
    gs = check.finite(grad_scale, "grad_scale")
    for p, g, (m,), wd in _entries(parameters, grads, (("v", v),), weight_decay):
        gi = _grad(p, g, gs, 0.0, True)
        c = beta1 * m + (1.0 - beta1) * gi
        _decay(p, wd, True, lr)
        p -= lr * _sign(c)
        m *= beta2
        m += (1.0 - beta2) * gi
