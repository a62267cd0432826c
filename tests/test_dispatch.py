"""Run-time instruction-set dispatch and the C driver's memory behaviour."""
import os
import subprocess
import sys
import tracemalloc

from types import SimpleNamespace

import numpy as np
import pytest

from fastoptim import _fallback
from fastoptim.course import with_backend

core = pytest.importorskip("fastoptim._core", reason="compiled extension not built")
# the course's updates through each backend's generic update
c_steps = SimpleNamespace(**with_backend(core.update))
np_steps = SimpleNamespace(**with_backend(_fallback.update))

# Around every vector width (4, 8, 16 lanes) and unroll multiple, plus the
# thread-split path.
SIZES = list(range(1, 70)) + [127, 128, 129, 255, 256, 257, 1023, 1024, 1025, 131_077]


@pytest.fixture(params=core.isa_supported())
def isa(request):
    before = core.isa_in_use()
    assert core.set_isa(request.param) == request.param
    yield request.param
    core.set_isa(before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_level_matches_the_fallback_bitwise(isa, dtype):
    rng = np.random.default_rng(3)
    for n in SIZES:
        params = {"W": rng.standard_normal(n).astype(dtype)}
        grads = {"dW": (rng.standard_normal(n) + 0.1).astype(dtype)}
        v = {"dW": (0.1 * rng.standard_normal(n)).astype(dtype)}
        s = {"dW": (0.01 + np.abs(rng.standard_normal(n))).astype(dtype)}
        twin = [{k: a.copy() for k, a in d.items()} for d in (params, grads, v, s)]
        for t in (1, 2, 3):
            c_steps.adam(params, grads, v, s, t, 0.01, 0.9, 0.999, 1e-8)
            np_steps.adam(*twin, t, 0.01, 0.9, 0.999, 1e-8)
        c_steps.momentum(params, grads, v, 0.8, 0.05)
        np_steps.momentum(twin[0], twin[1], twin[2], 0.8, 0.05)
        c_steps.gd(params, grads, 0.1)
        np_steps.gd(twin[0], twin[1], 0.1)
        for mine, theirs in zip((params, v, s), (twin[0], twin[2], twin[3])):
            for k in mine:
                assert np.array_equal(mine[k].view(np.uint8), theirs[k].view(np.uint8)), (isa, n, k)


def run_python(code, **env):
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True)


@pytest.mark.parametrize("cap", ["baseline", "avx2", "avx512"])
def test_dispatch_cap_from_environment(cap):
    out = run_python("from fastoptim import _core; print(_core.isa_in_use())", FASTOPTIM_DISPATCH=cap)
    assert out.returncode == 0, out.stderr
    supported = core.isa_supported()
    expected = cap if cap in supported else supported[-1]
    assert out.stdout.strip() == expected


def test_bad_dispatch_cap_warns_and_keeps_the_compiled_backend():
    """A typo (e.g. sse) is not a silent switch to the NumPy backend: a warning
    names the variable, and the C backend runs at the best level."""
    out = run_python("import fastoptim; print(fastoptim.BACKEND, fastoptim._core.isa_in_use())",
                     FASTOPTIM_DISPATCH="sse", FASTOPTIM_BACKEND="c")
    assert out.returncode == 0, out.stderr
    assert "FASTOPTIM_DISPATCH='sse'" in out.stderr and "RuntimeWarning" in out.stderr
    assert out.stdout.split() == ["c", core.isa_supported()[-1]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_step_allocates_nothing_that_grows_with_the_arrays(dtype):
    def peak(n):
        params = {"W": np.ones(n, dtype), "b": np.ones(10, dtype)}
        grads = {"dW": np.ones(n, dtype), "db": np.ones(10, dtype)}
        v, s = ({k: np.zeros_like(a) for k, a in grads.items()} for _ in range(2))
        c_steps.adam(params, grads, v, s, 1, 0.01, 0.9, 0.999, 1e-8)  # warm caches
        tracemalloc.start()
        try:
            c_steps.adam(params, grads, v, s, 2, 0.01, 0.9, 0.999, 1e-8)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(100), peak(2_000_000)
    assert large < 64 * 1024, large
    assert large <= small + 1024, (small, large)


def test_thread_count_follows_set_num_threads_and_threadpoolctl():
    import fastoptim

    if fastoptim.BACKEND != "c":
        pytest.skip("threadpoolctl controls the pool with the C backend")
    threadpoolctl = pytest.importorskip("threadpoolctl")
    try:
        fastoptim.set_num_threads(1)
        assert fastoptim.get_num_threads() == 1
        fastoptim.set_num_threads(None)
        default = fastoptim.get_num_threads()
        with threadpoolctl.threadpool_limits(limits=1, user_api="fastoptim"):
            assert fastoptim.get_num_threads() == 1
        assert fastoptim.get_num_threads() == default
    finally:
        fastoptim.set_num_threads(None)


def test_an_extension_that_cannot_load_is_reported_not_silent():
    """Without FASTOPTIM_REQUIRE_EXT the NumPy fallback takes over, with a
    RuntimeWarning that gives the reason, also in show_config(); with it, an
    ImportError. (Simulated: the module made unimportable before fastoptim loads.)"""
    code = ("import sys; sys.modules['fastoptim._core'] = None\n"
            "import warnings; warnings.simplefilter('always')\n"
            "import fastoptim\n"
            "print(fastoptim.BACKEND); print(fastoptim._config.config()['why_not_compiled'])")
    env = {k: v for k, v in os.environ.items()
           if k not in ("FASTOPTIM_BACKEND", "FASTOPTIM_REQUIRE_EXT")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    backend, why = out.stdout.splitlines()
    assert backend == "numpy" and "could not be imported" in why
    assert "RuntimeWarning" in out.stderr and "10-150x slower" in out.stderr
    out = subprocess.run([sys.executable, "-c", code], env={**env, "FASTOPTIM_REQUIRE_EXT": "1"},
                         capture_output=True, text=True)
    assert out.returncode != 0 and "FASTOPTIM_REQUIRE_EXT" in out.stderr
