"""More than 2**31 float32 elements in one C update: gradient descent needs p
and g, 16 GiB. Element counts and byte offsets that overflow 32-bit integers
anywhere (the kernels' loop index, the driver's split of the work between
threads, the gather of sizes, the optimizer's plan) would show here.

Runs only when asked, as CI's own step:
    FASTOPTIM_BIG=1 FASTOPTIM_REQUIRE_EXT=1 python -m pytest -m slow tests/test_big.py
and skips, printing why, when the C backend is not in use or the memory is not
free (it needs 16 GiB + 1 GiB of MemAvailable)."""
import os

import numpy as np
import pytest

import fastoptim

N = 2**31 + 2**20 + 3             # float32 elements: odd, past 2**31
NEED = 2 * N * 4 + (1 << 30)      # p and g, plus 1 GiB to spare
CHUNK = 1 << 26

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("FASTOPTIM_BIG") != "1",
                       reason="set FASTOPTIM_BIG=1 to run the 16 GiB update"),
]


def mem_available():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


@pytest.fixture(scope="module")
def big():
    if fastoptim.BACKEND != "c":
        pytest.skip(f"the >2**31-element update is a C-backend test (backend: {fastoptim.BACKEND})")
    free = mem_available()
    if free is None or free < NEED:
        reason = (f"needs {NEED / 2**30:.1f} GiB of free memory, "
                  f"{'unknown' if free is None else f'{free / 2**30:.1f} GiB'} available")
        print(f"test_big: skipped: {reason}")
        pytest.skip(reason)
    p = np.empty(N, np.float32)
    g = np.empty(N, np.float32)
    p.fill(1.0)
    g.fill(0.5)
    # distinct gradients where 32-bit index arithmetic would break, and at both ends
    special = np.array(sorted({0, 1, 15, 16, 2**31 - 17, 2**31 - 1, 2**31, 2**31 + 1,
                               2**31 + 16, N // 2, N // 2 + 1, N - 17, N - 2, N - 1}))
    g[special] = 2.0 + np.arange(special.size, dtype=np.float32)
    yield p, g, special
    fastoptim.set_num_threads(None)


def check(p, g, special, steps):
    """After `steps` steps of lr = 0.5 from p = 1: p = 1 - steps * 0.5 * g, exactly."""
    expected = np.float32(1.0 - steps * 0.25)
    np.testing.assert_array_equal(p[special], np.float32(1.0) - np.float32(steps * 0.5) * g[special])
    p_special = p[special].copy()
    p[special] = expected  # so that a plain chunked comparison covers the rest
    try:
        for lo in range(0, N, CHUNK):
            wrong = np.flatnonzero(p[lo:lo + CHUNK] != expected)
            assert wrong.size == 0, (
                f"after {steps} steps: {wrong.size} elements wrong from index {lo + wrong[0]}, "
                f"value {p[lo + wrong[0]]!r}, expected {expected!r}")
    finally:
        p[special] = p_special


def test_update_past_2_31_elements(big):
    p, g, special = big
    assert p.size > 2**31 and p.nbytes > 2**33

    fastoptim.set_num_threads(1)   # one loop over every index
    fastoptim.update_parameters_with_gd({"W": p}, {"dW": g}, 0.5)
    check(p, g, special, 1)

    fastoptim.set_num_threads(2)   # the driver splits 2**31+ elements between threads
    fastoptim.update_parameters_with_gd({"W": p}, {"dW": g}, 0.5)
    check(p, g, special, 2)

    h = N // 2 + 1                 # two keys whose total passes 2**31
    fastoptim.update_parameters_with_gd({"A": p[:h], "B": p[h:]}, {"dA": g[:h], "dB": g[h:]}, 0.5)
    check(p, g, special, 3)

    opt = fastoptim.GD({"W": p}, 0.5, arena=False)  # the optimizer object's plan
    opt.step({"dW": g})
    check(p, g, special, 4)
