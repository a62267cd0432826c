"""The build never uses -ffast-math: loading it (gcc links crtfastmath.o, whose
constructor sets flush-to-zero and denormals-are-zero for the whole process)
or running it (in the calling thread or OpenMP's workers) must leave float32
and float64 subnormals working."""
import subprocess
import sys

import numpy as np
import pytest

import fastoptim
from _helpers import UPDATES, _core


def subnormals_work():
    """Flush-to-zero and denormals-are-zero both off, for float32 and float64, as
    NumPy (running in this thread) sees them. Inputs and expected results are
    bit patterns: any value computed here would be flushed as well."""
    for dtype, uint, mantissa in ((np.float32, np.uint32, 23), (np.float64, np.uint64, 52)):
        normal = np.full(4, 1 << mantissa, uint).view(dtype)   # the smallest normal
        sub = np.full(4, 3, uint).view(dtype)                  # 3 * smallest subnormal
        produced = (normal * dtype(0.25)).view(uint)           # FTZ: a subnormal result -> 0
        consumed = (sub * dtype(2)).view(uint)                 # DAZ: a subnormal input -> 0
        if not ((produced == 1 << (mantissa - 2)).all() and (consumed == 6).all()):
            return False
    return True


def use_everything():
    """Every update at every dispatch level, serial and parallel, and an optimizer."""
    levels = _core.isa_supported() if _core is not None else [None]
    start = _core.isa_in_use() if _core is not None else None
    try:
        for isa in levels:
            if isa is not None:
                _core.set_isa(isa)
            for n in (1, 70_000):
                for u in UPDATES:
                    p = {"W": np.ones(n, np.float32)}
                    g = {"dW": np.full(n, 1e-3, np.float32)}
                    st = [{"dW": np.zeros(n, np.float32)} for _ in u.states]
                    u.call("public", p, g, st, u.default_hyper())
        opt = fastoptim.Adam({"W": np.ones(70_000)}, 0.01)
        opt.step({"dW": np.ones(70_000)})
    finally:
        if start is not None:
            _core.set_isa(start)


def test_subnormals_work_after_using_fastoptim():
    use_everything()
    assert subnormals_work()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nthreads", [1, 2])
def test_kernels_keep_subnormal_results_on_every_thread(dtype, nthreads):
    """p = 0 - lr*g with g a small normal gives a subnormal in every element,
    including the half of the array a second OpenMP thread updates."""
    fi = np.finfo(dtype)
    n = 200_000
    fastoptim.set_num_threads(nthreads)
    try:
        p = {"W": np.zeros(n, dtype)}
        g = {"dW": np.full(n, fi.smallest_normal, dtype)}
        fastoptim.update_parameters_with_gd(p, g, 0.25)
    finally:
        fastoptim.set_num_threads(None)
    uint = np.uint32 if dtype == np.float32 else np.uint64
    sign = uint(1) << uint(8 * fi.dtype.itemsize - 1)
    expected = sign | (uint(1) << uint(fi.nmant - 2))  # -(smallest normal / 4), as bits
    assert (p["W"].view(uint) == expected).all()


def test_subnormal_state_survives_an_adam_step_in_float32():
    g = np.full(100_000, 1e-39, np.float32)       # subnormal
    p, m, v = np.zeros_like(g), np.zeros_like(g), np.zeros_like(g)
    fastoptim.update_parameters_with_adam({"W": p}, {"dW": g}, {"dW": m}, {"dW": v}, 1)
    assert (m.view(np.uint32) == (np.float32(0.1) * g).view(np.uint32)).all()
    assert (m.view(np.uint32) != 0).all()
    assert np.isfinite(p).all() and (p < 0).all()


CHECK = r"""
import numpy as np
def ok():
    a = np.array([1 << 23], np.uint32).view(np.float32) * np.float32(0.25)
    b = np.array([3], np.uint32).view(np.float32) * np.float32(2)
    return bool(a.view(np.uint32)[0] == 1 << 21 and b.view(np.uint32)[0] == 6)
before = ok()
import fastoptim
from fastoptim import _backend
after_import = ok()
fastoptim.update_parameters_with_adam({"W": np.ones(100000, np.float32)},
                                      {"dW": np.ones(100000, np.float32)},
                                      {"dW": np.zeros(100000, np.float32)},
                                      {"dW": np.zeros(100000, np.float32)}, 1)
print(before, after_import, ok(), fastoptim.BACKEND)
"""


def test_loading_the_extension_in_a_fresh_process():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    before, after_import, after_use, backend = out.stdout.split()
    assert (before, after_import, after_use) == ("True", "True", "True")
    assert backend == fastoptim.BACKEND


def test_recorded_kernel_flags_have_no_fast_math():
    if _core is None:
        pytest.skip("compiled extension not built")
    flags = _core.build_info()["kernel_flags"].split()
    unsafe = {"-ffast-math", "-Ofast", "-funsafe-math-optimizations", "-ffinite-math-only"}
    assert not unsafe & set(flags), flags
