"""fastoptim.distributed: the layout in process, and the scripts of tests/mpi/
under mpiexec at 1, 2, 3 and 4 ranks (they skip without mpi4py or mpiexec;
FASTOPTIM_REQUIRE_MPI=1 makes that a failure, as CI sets it). Every run has a
timeout: a hang fails the test and its process group is killed."""
import importlib.util
import os
import shutil
import signal
import subprocess
import sys

import pytest

from fastoptim import distributed

MPI_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mpi")
TIMEOUT = float(os.environ.get("FASTOPTIM_MPI_TIMEOUT", "300"))   # seconds per mpiexec run


def _mpiexec():
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.path.exists(beside) else shutil.which("mpiexec")


MPIEXEC = _mpiexec()
HAVE_MPI = importlib.util.find_spec("mpi4py") is not None and MPIEXEC is not None
# Under tests/sanitize.sh (an ASan runtime preloaded) mpiexec and its ranks would run
# outside the sanitizer's build: those runs are for the plain suites.
SANITIZED = "asan" in os.environ.get("LD_PRELOAD", "")
needs_mpi = pytest.mark.skipif(
    SANITIZED or (not HAVE_MPI and os.environ.get("FASTOPTIM_REQUIRE_MPI", "") in ("", "0")),
    reason="needs mpi4py and mpiexec: pip install 'fastoptim[mpi]' (not under the sanitizers)")


def mpirun(n, script, *args, env=None, expect=0):
    """Run tests/mpi/<script> on n ranks; fail on a timeout (killing the whole
    job) or an unexpected exit status, with the output."""
    if not HAVE_MPI:
        pytest.fail("FASTOPTIM_REQUIRE_MPI is set but mpi4py or mpiexec is missing")
    cmd = [MPIEXEC, "-n", str(n), sys.executable, "-m", "mpi4py", script, *map(str, args)]
    proc = subprocess.Popen(cmd, cwd=MPI_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=dict(os.environ, **(env or {})),
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"mpiexec -n {n} {script} {' '.join(map(str, args))} did not end within "
                    f"{TIMEOUT:.0f} s (a hang):\n{out}")
    if expect is not None:
        assert proc.returncode == expect, \
            f"mpiexec -n {n} {script} {' '.join(map(str, args))} exited {proc.returncode}:\n{out}"
    return out


# --- the layout (no MPI) ------------------------------------------------------------------

@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("sizes,itemsize", [
    ([5141, 53, 1537, 29], 8), ([3649, 41, 0, 1], 4), ([30], 8), ([], 4), ([0, 0], 8),
    ([10**7], 4), ([1024, 1024, 1023, 1025], 2), ([200704, 256, 32768, 128, 1280, 10], 4)])
def test_the_slices_cover_the_buffer_on_chunk_boundaries_within_a_chunk_of_equal(sizes, itemsize,
                                                                                  world):
    offsets, total, cuts = distributed.layout(sizes, itemsize, world)
    assert len(cuts) == world + 1 and cuts[0] == 0 and cuts[-1] == total
    assert all(a <= b for a, b in zip(cuts, cuts[1:]))
    per_line = 64 // itemsize
    assert all(off % per_line == 0 for off in offsets)
    for c in cuts[1:-1]:
        assert c == total or any(off <= c < off + n and (c - off) % distributed.CHUNK == 0
                                 for off, n in zip(offsets, sizes)) or c in offsets, c
        assert (c * itemsize) % 64 == 0
    for r in range(world):
        assert cuts[r + 1] - cuts[r] <= -(-total // world) + distributed.CHUNK + per_line
    if total:
        assert cuts[1] > 0   # rank 0 owns the first elements
    # each array's elements are covered once, in order
    for i, n in enumerate(sizes):
        got = [(a, b) for r in range(world)
               for j, a, b in distributed.pieces(offsets, sizes, cuts[r], cuts[r + 1]) if j == i]
        assert [x for a, b in got for x in (a, b)][1:-1] == [x for a, b in got for x in (a, b)][
            1:-1] and (not got or (got[0][0] == 0 and got[-1][1] == n))
        assert sum(b - a for a, b in got) == n
        assert all(a % distributed.CHUNK == 0 for a, _ in got)


def test_import_needs_no_mpi4py():
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "import fastoptim, fastoptim.distributed as d\n"
            "try:\n    d.DataParallel(fastoptim.Adam, {})\n"
            "except ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pip install 'fastoptim[mpi]'" in out.stdout


def test_import_fastoptim_does_not_load_the_distributed_module():
    code = "import sys, fastoptim; print('fastoptim.distributed' in sys.modules, 'mpi4py' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "False"], out


# --- under mpiexec ----------------------------------------------------------------------------

@needs_mpi
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_bitwise_equal_to_one_process_for_every_optimizer(n):
    assert "bitwise: OK" in mpirun(n, "bitwise.py")


@needs_mpi
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_disagreeing_ranks_get_the_same_error_never_a_hang(n):
    assert "errors: OK" in mpirun(n, "errors.py")


@pytest.fixture(scope="module")
def saved_at_4(tmp_path_factory):
    if not HAVE_MPI or SANITIZED:
        pytest.skip("needs mpi4py and mpiexec")
    directory = tmp_path_factory.mktemp("checkpoint") / "run"
    assert "save: OK" in mpirun(4, "checkpoint.py", "save", directory)
    return directory


@needs_mpi
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_a_checkpoint_saved_at_4_resumes_bitwise_at(saved_at_4, n):
    assert "resume: OK" in mpirun(n, "checkpoint.py", "resume", saved_at_4, 4)


@needs_mpi
def test_whole_state_checkpoints_reshard_too(tmp_path):
    assert "save: OK" in mpirun(2, "checkpoint.py", "save", tmp_path, env={"SHARD": "0"})
    assert "resume: OK" in mpirun(3, "checkpoint.py", "resume", tmp_path, 2)
    assert "resume: OK" in mpirun(1, "checkpoint.py", "resume", tmp_path, 2, env={"SHARD": "0"})


@needs_mpi
@pytest.mark.parametrize("cls", ["Adafactor", "Muon"])
def test_whole_state_of_other_shapes_checkpoints_at_any_world_size(tmp_path, cls):
    """Adafactor's factored statistics and Muon's two kinds of state are not per
    element: rank 0 saves them whole, every rank reads them back."""
    env = {"SHARD": "0", "OPT": cls}
    assert "save: OK" in mpirun(3, "checkpoint.py", "save", tmp_path, env=env)
    assert "resume: OK" in mpirun(2, "checkpoint.py", "resume", tmp_path, 3, env=env)
    assert "resume: OK" in mpirun(1, "checkpoint.py", "resume", tmp_path, 3, env=env)


@needs_mpi
@pytest.mark.parametrize("where", ["file", "manifest"])
def test_a_crash_mid_save_leaves_the_previous_checkpoint_loadable(tmp_path, where):
    assert "save: OK" in mpirun(3, "checkpoint.py", "save", tmp_path)
    mpirun(2, "checkpoint.py", "crash", tmp_path, 3, env={"CRASH": where}, expect=None)
    assert len([d for d in os.listdir(tmp_path) if d.startswith("gen-")]) == 2
    assert "resume: OK" in mpirun(2, "checkpoint.py", "resume", tmp_path, 3)
    # the next save removes what the dead one left
    assert "save: OK" in mpirun(2, "checkpoint.py", "save", tmp_path)
    assert sorted(os.listdir(tmp_path))[-1] == "manifest.json"
    assert len(os.listdir(tmp_path)) == 2


@needs_mpi
def test_mid_accumulation_checkpoints_resume_at_their_world_size_only(tmp_path):
    assert "mid: OK" in mpirun(3, "checkpoint.py", "mid", tmp_path)
    assert "midload: OK" in mpirun(3, "checkpoint.py", "midload", tmp_path, 3)
    assert "midload refused: OK" in mpirun(2, "checkpoint.py", "midload", tmp_path, 3)
