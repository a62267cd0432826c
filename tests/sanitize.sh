#!/usr/bin/env bash
# Memory safety: build the extension with AddressSanitizer and
# UndefinedBehaviorSanitizer (-DFASTOPTIM_SANITIZE=ON: every C file and the
# Cython module, -fno-sanitize-recover so any UB aborts) in a venv and build
# directory of its own, then run the test suite against it on the C backend.
#
#   tests/sanitize.sh                 # the suite, minus what is excluded below
#   tests/sanitize.sh tests/test_properties.py -x    # any pytest arguments instead
#
# What runs: every test file except test_memory.py (ASan's quarantine holds
# freed memory, so its resident-memory measure would report growth) and the
# tests marked slow (test_big.py's 16 GiB array, far beyond ASan's budget).
# Hypothesis examples are scaled by FASTOPTIM_EXAMPLES_SCALE (default 0.5 here).
# PYTHONMALLOC=malloc routes Python's own allocations (including the PyMem
# buffers _core allocates per call) through ASan. Leak detection is off: the
# interpreter itself does not free everything at exit. detect_stack_use_after_return
# is off too: its heap-allocated frames break the 64-byte alignment of the
# vector locals in the sum-of-squares kernel (a SEGV in fo_sumsq_f64 that the
# normal, correctly aligned stack never sees). pytest's faulthandler is off so
# that ASan, not Python, reports a crash.
#
# Environment: PYTHON (default python3), FASTOPTIM_SANITIZE_DIR (default
# $TMPDIR/fastoptim-sanitize; reused between runs, so rebuilds are incremental).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="${FASTOPTIM_SANITIZE_DIR:-${TMPDIR:-/tmp}/fastoptim-sanitize}"
python="${PYTHON:-python3}"

if [ ! -x "$work/venv/bin/python" ]; then
    "$python" -m venv --system-site-packages "$work/venv"
fi
# shellcheck disable=SC1091
. "$work/venv/bin/activate"
python -m pip install -q scikit-build-core cython cython-cmake numpy pytest hypothesis \
    threadpoolctl
python -m pip install -q --no-build-isolation --force-reinstall --no-deps \
    -Cbuild-dir="$work/build" -Ccmake.define.FASTOPTIM_SANITIZE=ON "$root"

# Found without importing it: loading an ASan-built module needs the runtime preloaded.
site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')"
so="$(ls "$site"/fastoptim/_core*.so)"
runtime="$(ldd "$so" | awk '/libasan|clang_rt\.asan/ {print $3; exit}')"
if [ -z "$runtime" ]; then
    echo "sanitize.sh: $so is not linked against an ASan runtime" >&2
    exit 2
fi
echo "sanitize.sh: $so with $runtime"

if [ "$#" -eq 0 ]; then
    set -- "$root/tests" --ignore="$root/tests/test_memory.py" -m "not slow"
fi
cd "$root"
env LD_PRELOAD="$runtime" \
    ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
    PYTHONMALLOC=malloc \
    FASTOPTIM_REQUIRE_EXT=1 \
    FASTOPTIM_EXAMPLES_SCALE="${FASTOPTIM_EXAMPLES_SCALE:-0.5}" \
    python -m pytest -q -p no:cacheprovider -p no:faulthandler "$@"
