"""The compiled backend against the NumPy fallback, called side by side.

Both perform the same IEEE operations in the same order in the array's dtype
(kernels built with -ffp-contract=off), so on the fast path they agree bitwise;
and since the compiled backend hands every other call to the fallback, they
raise the same errors."""
from types import SimpleNamespace

import numpy as np
import pytest

from fastoptim import _fallback
from fastoptim.course import with_backend

core = pytest.importorskip("fastoptim._core", reason="compiled extension not built")
# the course's updates through each backend's generic update
c_steps = SimpleNamespace(**with_backend(core.update))
np_steps = SimpleNamespace(**with_backend(_fallback.update))


def problem(n, dtype, seed, keys=("W1", "b1", "W2")):
    rng = np.random.default_rng(seed)
    sizes = {k: max(1, n // (i + 1)) for i, k in enumerate(keys)}
    params = {k: rng.standard_normal(sizes[k]).astype(dtype) for k in keys}
    grads = {"d" + k: rng.standard_normal(sizes[k]).astype(dtype) for k in keys}
    v = {"d" + k: (0.1 * rng.standard_normal(sizes[k])).astype(dtype) for k in keys}
    s = {"d" + k: (0.1 * np.abs(rng.standard_normal(sizes[k]))).astype(dtype) for k in keys}
    return params, grads, v, s


def clone(*dicts):
    return [{k: a.copy() for k, a in d.items()} for d in dicts]


def assert_bitwise(a_dicts, b_dicts):
    for a, b in zip(a_dicts, b_dicts):
        for k in a:
            np.testing.assert_array_equal(a[k].view(np.uint8), b[k].view(np.uint8), err_msg=k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 7, 16, 33, 64, 65, 1000, 70_001, 300_000])
def test_adam_bitwise(n, dtype):
    c = problem(n, dtype, n)
    f = clone(*c)
    for t in range(1, 9):
        c_steps.adam(c[0], c[1], c[2], c[3], t, 0.003, 0.85, 0.995, 1e-7)
        np_steps.adam(f[0], f[1], f[2], f[3], t, 0.003, 0.85, 0.995, 1e-7)
    assert_bitwise(c, f)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 17, 63, 4096, 200_000])
def test_momentum_and_gd_bitwise(n, dtype):
    c = problem(n, dtype, n)
    f = clone(*c)
    for _ in range(5):
        c_steps.momentum(c[0], c[1], c[2], 0.9, 0.01)
        np_steps.momentum(f[0], f[1], f[2], 0.9, 0.01)
        c_steps.gd(c[0], c[1], 0.02)
        np_steps.gd(f[0], f[1], 0.02)
    assert_bitwise(c, f)


@pytest.mark.parametrize(
    "args",
    [
        ({"W": np.zeros(3)}, {}, {"dW": np.zeros(3)}, {"dW": np.zeros(3)}, 1),
        ({"W": np.zeros(3)}, {"dW": np.zeros(3)}, {"dW": np.zeros(3)}, {"dW": np.zeros(3)}, 0),
        ({"W": np.zeros(3, int)}, {"dW": np.zeros(3)}, {"dW": np.zeros(3)}, {"dW": np.zeros(3)}, 1),
        ({"W": np.zeros(3)}, {"dW": np.zeros(4)}, {"dW": np.zeros(3)}, {"dW": np.zeros(3)}, 1),
        ([np.zeros(3)], {"dW": np.zeros(3)}, {"dW": np.zeros(3)}, {"dW": np.zeros(3)}, 1),
    ],
)
def test_same_errors(args):
    errors = []
    for impl in (c_steps, np_steps):
        with pytest.raises(Exception) as info:
            impl.adam(*args, 0.01, 0.9, 0.999, 1e-8)
        errors.append((type(info.value), str(info.value)))
    assert errors[0] == errors[1]
