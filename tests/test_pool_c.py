"""csrc/pool.c on its own, from C: tests/pool_stress.c built with the system's C
compiler and run as is and under ThreadSanitizer (each skipped where it cannot be
built): every chunk runs exactly once, in its own job, with workers late, stale,
slow or idle, and with three callers at once."""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")

pytestmark = pytest.mark.skipif(sys.platform == "win32" or not shutil.which("cc"),
                                reason="needs a C compiler and POSIX threads")


def build(tmp_path, *flags):
    exe = tmp_path / "pool_stress"
    cmd = ["cc", "-std=gnu99", "-O1", "-g", "-pthread", *flags, "-I", CSRC,
           os.path.join(ROOT, "tests", "pool_stress.c"), os.path.join(CSRC, "pool.c"),
           "-o", str(exe)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    return exe if out.returncode == 0 else None, out.stderr


def test_pool_stress(tmp_path):
    exe, err = build(tmp_path)
    assert exe is not None, err
    out = subprocess.run([str(exe), "10000"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stderr + out.stdout


def test_pool_stress_under_thread_sanitizer(tmp_path):
    exe, err = build(tmp_path, "-fsanitize=thread", "-Wno-tsan")
    if exe is None:
        pytest.skip(f"cannot build with -fsanitize=thread: {err[-300:]}")
    env = {**os.environ, "TSAN_OPTIONS": "halt_on_error=1 exitcode=66"}
    env.pop("LD_PRELOAD", None)
    out = subprocess.run([str(exe), "3000"], capture_output=True, text=True, timeout=600,
                         env=env)
    if out.returncode != 0 and "FATAL: ThreadSanitizer" in out.stderr:
        pytest.skip(f"ThreadSanitizer cannot run here: {out.stderr[-300:]}")
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stderr[-3000:] + out.stdout
