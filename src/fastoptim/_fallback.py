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
    t = check.step(t)
    lr = check.learning_rate(learning_rate)
    beta1 = check.beta(beta1, "beta1")
    beta2 = check.beta(beta2, "beta2")
    eps = check.epsilon(epsilon)
    # Per-step scalars in double, once per call; the per-element work below is
    # in the arrays' dtype. beta**t is 0 long before t = 2**64 for any beta < 1;
    # the cap keeps float(t) from overflowing for larger t.
    tf = float(min(t, 2**64))
    step = lr / (1.0 - beta1**tf)
    rsqrt_bc2 = 1.0 / math.sqrt(1.0 - beta2**tf)
    for p, g, (m, sq) in check.gather(parameters, grads, (("v", v), ("s", s))):
        m *= beta1
        m += (1.0 - beta1) * g
        sq *= beta2
        sq += (1.0 - beta2) * g * g
        p -= step * m / (np.sqrt(sq) * rsqrt_bc2 + eps)
