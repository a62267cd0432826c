"""An independent float64 reference for the tests, written from the formulas
in DESIGN.md (not from either backend), plus helpers for building inputs."""
import numpy as np


def gd(p, g, lr):
    return p - lr * g


def momentum(p, g, v, beta, lr):
    v = beta * v + (1 - beta) * g
    return p - lr * v, v


def adam(p, g, m, v, t, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8):
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * np.square(g)
    m_hat = m / (1 - beta1**t)
    v_hat = v / (1 - beta2**t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def f64(a):
    return np.array(a, dtype=np.float64)


def snapshot(*dicts):
    """Bitwise copies of every array in the dicts, to check nothing changed."""
    return [{k: np.array(a, copy=True) for k, a in d.items()} for d in dicts]


def assert_unchanged(before, *dicts):
    for saved, d in zip(before, dicts):
        for k, a in saved.items():
            np.testing.assert_array_equal(d[k], a, err_msg=f"key {k!r} was modified", strict=True)
