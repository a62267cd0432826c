"""Checkpoints (fastoptim.save_checkpoint / load_checkpoint): exact resume,
atomic saves (a crash mid-save leaves the previous checkpoint intact), and
loads that check everything before writing anything."""
import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastoptim as fo
import optimizer_db as db
from fastoptim import checkpoint, schedules

SHAPES = {"W1": (5, 2), "b1": (5, 1), "W2": (2, 5), "b2": (2, 1), "W3": (1, 2), "b3": (1, 1)}
CLASSES = [info.cls for info in db.INFOS]
RICH = {info.cls: info.rich for info in db.INFOS}


def init(dtype=np.float64, seed=3, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}


def grad_seq(dtype, n, shapes=SHAPES):
    rng = np.random.default_rng(100)
    return [{"d" + k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
            for _ in range(n)]


def copy(d):
    return {k: np.array(a, copy=True) for k, a in d.items()}


def assert_bitwise(actual, expected):
    assert actual.keys() == expected.keys()
    for k in expected:
        np.testing.assert_array_equal(actual[k].view(np.uint8), expected[k].view(np.uint8),
                                      err_msg=k, strict=True)
        assert actual[k].dtype == expected[k].dtype


@pytest.mark.parametrize("arena", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls", CLASSES)
def test_resume_is_bitwise(cls, dtype, arena, tmp_path):
    """20 steps without a break == 10 steps, a checkpoint, a load into fresh
    objects (built with other values and hyperparameters) and 10 more."""
    grads = grad_seq(dtype, 20)
    lr = schedules.CosineDecay(0.05, decay_steps=20, warmup_steps=3)

    rich = RICH[cls]
    straight_params = init(dtype)
    straight = cls(straight_params, **dict(rich, learning_rate=lr, arena=arena))
    for g in grads:
        straight.step(g)

    params = init(dtype)
    opt = cls(params, **dict(rich, learning_rate=lr, arena=arena))
    for g in grads[:10]:
        opt.step(g)
    path = tmp_path / "run.npz"
    fo.save_checkpoint(path, params, opt)

    fresh_params = init(dtype, seed=99)
    fresh = cls(fresh_params, **dict(rich, learning_rate=0.9, arena=arena))
    arrays = dict(fresh_params)
    fo.load_checkpoint(path, fresh_params, fresh)
    assert all(fresh_params[k] is arrays[k] for k in arrays)  # loaded in place
    assert fresh.t == 10 and fresh.learning_rate == lr
    for g in grads[10:]:
        fresh.step(g)
    assert fresh.t == 20
    assert_bitwise(fresh_params, straight_params)
    for name in straight.state:
        assert_bitwise(fresh.state[name], straight.state[name])


def test_checkpoint_contents_are_plain_arrays(tmp_path):
    params = init()
    opt = fo.Adam(params, learning_rate=0.02)
    opt.step(grad_seq(np.float64, 1)[0])
    fo.save_checkpoint(str(tmp_path / "c.npz"), params, opt)
    with np.load(tmp_path / "c.npz", allow_pickle=False) as npz:  # nothing pickled
        entries = {k: npz[k] for k in npz.files}
    assert entries.pop("fastoptim/checkpoint") == 1
    for k, a in params.items():
        np.testing.assert_array_equal(entries.pop("parameters/" + k), a, strict=True)
    sd = opt.state_dict()
    assert set(entries) == {"optimizer/" + k for k in sd}
    assert entries["optimizer/optimizer"] == "Adam" and entries["optimizer/t"] == 1


def test_parameters_only(tmp_path):
    params = init()
    fo.save_checkpoint(tmp_path / "p.npz", params)
    target = init(seed=5)
    fo.load_checkpoint(tmp_path / "p.npz", target)
    assert_bitwise(target, params)
    opt = fo.GD(init(seed=5))
    with pytest.raises(KeyError, match="no optimizer state"):
        fo.load_checkpoint(tmp_path / "p.npz", opt.parameters, opt)


def test_overwrite_and_file_mode(tmp_path):
    path = tmp_path / "c.npz"
    fo.save_checkpoint(path, init(seed=1))
    fo.save_checkpoint(path, init(seed=2))
    target = init(seed=7)
    fo.load_checkpoint(path, target)
    assert_bitwise(target, init(seed=2))
    umask = os.umask(0o022)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~umask)
    assert sorted(os.listdir(tmp_path)) == ["c.npz"]


# --- atomic saves ---------------------------------------------------------------------

class FailingFile:
    """A file that fails with ENOSPC once `limit` bytes have been written."""

    def __init__(self, f, limit):
        self._f, self.limit, self.written = f, limit, 0

    def write(self, data):
        room = self.limit - self.written
        if len(data) > room:
            self._f.write(bytes(data)[:max(room, 0)])
            self.written = self.limit
            raise OSError(28, "No space left on device")
        self.written += len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def saved_run(tmp_path):
    params = init()
    opt = fo.Adam(params)
    for g in grad_seq(np.float64, 3):
        opt.step(g)
    path = tmp_path / "run.npz"
    fo.save_checkpoint(path, params, opt)
    return path, copy(params), opt.state_dict(), params, opt


def assert_holds(path, params, sd):
    target = init(seed=42)
    opt = fo.Adam(init(seed=42))
    fo.load_checkpoint(path, target, opt)
    assert_bitwise(target, params)
    assert opt.t == sd["t"]
    for name in ("v", "s"):
        assert_bitwise(opt.state[name], {k.split("/", 1)[1]: a for k, a in sd.items()
                                         if k.startswith(name + "/")})


@pytest.mark.parametrize("limit", [0, 100, 1500])
def test_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch, limit):
    path, params, sd, live, opt = saved_run(tmp_path)
    opt.step(grad_seq(np.float64, 4)[3])  # a newer state to (fail to) save
    real_open = checkpoint._open
    monkeypatch.setattr(checkpoint, "_open", lambda fd: FailingFile(real_open(fd), limit))
    with pytest.raises(OSError, match="No space"):
        fo.save_checkpoint(path, live, opt)
    assert os.listdir(tmp_path) == ["run.npz"]  # the temporary file is gone
    assert_holds(path, params, sd)


def test_failed_rename_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path, params, sd, live, opt = saved_run(tmp_path)
    opt.step(grad_seq(np.float64, 4)[3])

    def replace(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(checkpoint.os, "replace", replace)
    with pytest.raises(OSError, match="rename failed"):
        fo.save_checkpoint(path, live, opt)
    assert os.listdir(tmp_path) == ["run.npz"]
    assert_holds(path, params, sd)


def test_killed_process_mid_save_keeps_the_previous_checkpoint(tmp_path):
    """A process that dies (no exception handling, no cleanup) in the middle of
    writing the new checkpoint."""
    path, params, sd, _, _ = saved_run(tmp_path)
    script = textwrap.dedent(f"""
        import os
        import numpy as np
        import fastoptim as fo
        from fastoptim import checkpoint

        class Dying:
            def __init__(self, f):
                self.f, self.n = f, 0
            def write(self, data):
                self.n += len(data)
                if self.n > 2000:
                    self.f.flush()
                    os._exit(3)
                return self.f.write(data)
            def __getattr__(self, name):
                return getattr(self.f, name)
            def __enter__(self):
                return self
            def __exit__(self, *exc):
                self.f.close()

        real_open = checkpoint._open
        checkpoint._open = lambda fd: Dying(real_open(fd))
        params = {{"W1": np.ones((50, 50)), "b1": np.ones((50, 1))}}
        fo.save_checkpoint({str(path)!r}, params, fo.Adam(params))
        """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    leftovers = [name for name in os.listdir(tmp_path) if name != "run.npz"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".run.npz.")  # the dead temp file
    assert_holds(path, params, sd)


# --- loads check everything first -----------------------------------------------------

def corrupt(path, case, tmp_path):
    """Rewrite the checkpoint at `path` with one thing wrong."""
    with np.load(path, allow_pickle=False) as npz:
        entries = {k: npz[k] for k in npz.files}
    if case == "param-missing":
        del entries["parameters/b3"]
    elif case == "param-extra":
        entries["parameters/W9"] = np.zeros(3)
    elif case == "param-shape":
        entries["parameters/b3"] = np.zeros((3, 1))
    elif case == "param-dtype":
        entries["parameters/b3"] = entries["parameters/b3"].astype(np.float32)
    elif case == "state-shape":
        entries["optimizer/s/db3"] = np.zeros((1, 2))
    elif case == "state-missing":
        del entries["optimizer/v/db3"]
    elif case == "optimizer":
        entries["optimizer/optimizer"] = np.array("Momentum")
    elif case == "no-marker":
        del entries["fastoptim/checkpoint"]
    elif case == "version":
        entries["fastoptim/checkpoint"] = np.array(7)
    elif case == "stranger":
        entries["notes"] = np.zeros(1)
    np.savez(path, **entries)


LOAD_CASES = [
    ("param-missing", KeyError, "'b3'"), ("param-extra", KeyError, "'W9'"),
    ("param-shape", ValueError, r"'b3'.*\(3, 1\).*\(1, 1\)"), ("param-dtype", TypeError, "'b3'.*float32"),
    ("state-shape", ValueError, r"s/db3.*\(1, 2\)"), ("state-missing", KeyError, "v/db3"),
    ("optimizer", ValueError, "Momentum"), ("no-marker", ValueError, "not a fastoptim checkpoint"),
    ("version", ValueError, "format"), ("stranger", ValueError, "notes"),
]


@pytest.mark.parametrize("case,exc,match", LOAD_CASES, ids=[c[0] for c in LOAD_CASES])
def test_bad_checkpoint_changes_nothing(case, exc, match, tmp_path):
    path, _, _, _, _ = saved_run(tmp_path)
    corrupt(path, case, tmp_path)
    params = init(seed=8)
    opt = fo.Adam(params, learning_rate=0.3)
    opt.step(grad_seq(np.float64, 1)[0])
    before = copy(params), copy(opt.state["v"]), copy(opt.state["s"])
    with pytest.raises(exc, match=match):
        fo.load_checkpoint(path, params, opt)
    assert opt.t == 1 and opt.learning_rate == 0.3
    for saved, now in zip(before, (params, opt.state["v"], opt.state["s"])):
        assert_bitwise(now, saved)


def test_damaged_files(tmp_path):
    path, _, _, _, _ = saved_run(tmp_path)
    params = init(seed=8)
    before = copy(params)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.npz"):
        fo.load_checkpoint(truncated, params)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="garbage.npz"):
        fo.load_checkpoint(garbage, params)
    npy = tmp_path / "array.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(ValueError, match="not a .npz"):
        fo.load_checkpoint(npy, params)
    with pytest.raises(FileNotFoundError):
        fo.load_checkpoint(tmp_path / "missing.npz", params)
    assert_bitwise(params, before)


def test_argument_errors(tmp_path):
    params = init()
    with pytest.raises(TypeError, match="optimizer"):
        fo.save_checkpoint(tmp_path / "c.npz", params, object())
    with pytest.raises(TypeError, match="parameters must be a dict"):
        fo.save_checkpoint(tmp_path / "c.npz", list(params.values()))
    with pytest.raises(TypeError, match=r"parameters\['W1'\]"):
        fo.save_checkpoint(tmp_path / "c.npz", {**params, "W1": [1.0]})
    assert not os.listdir(tmp_path)
    fo.save_checkpoint(tmp_path / "c.npz", params)
    target = init(seed=4)
    target["W1"].flags.writeable = False
    before = copy(target)
    with pytest.raises(ValueError, match=r"parameters\['W1'\].*read-only"):
        fo.load_checkpoint(tmp_path / "c.npz", target)
    assert_bitwise(target, before)


# --- nothing is unpickled; the order that makes a save durable -------------------------

class _Unpickles:
    """An object whose unpickling creates a marker directory."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("entry", ["parameters/W1", "optimizer/v/dW1", "optimizer/t",
                                   "fastoptim/checkpoint"])
def test_pickled_entry_is_refused_without_unpickling(entry, tmp_path):
    path, _, _, _, _ = saved_run(tmp_path)
    marker = tmp_path / "unpickled"
    with np.load(path, allow_pickle=False) as npz:
        entries = {k: npz[k] for k in npz.files}
    entries[entry] = np.array([_Unpickles(marker)], dtype=object)
    np.savez(path, **entries)
    params = init(seed=8)
    opt = fo.Adam(params, learning_rate=0.3)
    before = copy(params), copy(opt.state["v"])
    with pytest.raises(ValueError, match="run.npz"):
        fo.load_checkpoint(path, params, opt)
    assert not marker.exists(), "load_checkpoint unpickled an entry"
    assert opt.t == 0 and opt.learning_rate == 0.3
    assert_bitwise(params, before[0])
    assert_bitwise(opt.state["v"], before[1])
    # the file really would run code when unpickled (so the test can fail)
    with np.load(path, allow_pickle=True) as npz:
        npz[entry]
    assert marker.exists()


def test_save_is_durable_in_order(tmp_path, monkeypatch):
    """fsync of the complete temporary file, then the rename over the target,
    then fsync of the directory (POSIX), so the new checkpoint survives a power
    loss once save_checkpoint returns."""
    import stat

    params = init()
    opt = fo.Adam(params)
    opt.step(grad_seq(np.float64, 1)[0])
    path = tmp_path / "run.npz"
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        st = os.fstat(fd)
        events.append(("fsync", "dir" if stat.S_ISDIR(st.st_mode) else "file", st.st_size))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.basename(src).startswith(".run.npz."),
                       os.fspath(dst) == os.fspath(path)))
        return real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "fsync", fsync)
    monkeypatch.setattr(checkpoint.os, "replace", replace)
    fo.save_checkpoint(path, params, opt)
    size = path.stat().st_size
    expected = [("fsync", "file", size), ("replace", True, True)]
    if os.name == "posix":
        expected.append(("fsync", "dir", tmp_path.stat().st_size))
    assert events == expected


# --- what a dead writer leaves behind -------------------------------------------------
# A writer holds a lock on its temporary file for the whole write; the next save
# removes the temporary files of the same target whose lock it can take (a dead
# writer's), never one a live writer holds (see fastoptim.checkpoint).

needs_flock = pytest.mark.skipif(importlib.util.find_spec("fcntl") is None,
                                 reason="leftovers are removed where fcntl.flock exists")

# A child process that saves a checkpoint of `value`s to `path` and stops in the
# middle of writing it (after 2000 bytes, flushed) until it reads "go".
WRITER = textwrap.dedent("""
    import os, sys
    import numpy as np
    import fastoptim as fo
    from fastoptim import checkpoint

    path, value = sys.argv[1], float(sys.argv[2])

    class Pausing:
        def __init__(self, f):
            self.f, self.n, self.paused = f, 0, False
        def write(self, data):
            self.n += len(data)
            if self.n > 2000 and not self.paused:
                self.paused = True
                self.f.flush()
                print("mid-write", flush=True)
                if sys.stdin.readline() != "go\\n":
                    os._exit(5)
            return self.f.write(data)
        def __getattr__(self, name):
            return getattr(self.f, name)
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            self.f.close()

    real_open = checkpoint._open
    checkpoint._open = lambda fd: Pausing(real_open(fd))
    params = {"W1": np.full((50, 50), value), "b1": np.full((50, 1), value)}
    fo.save_checkpoint(path, params, fo.Adam(params))
    print("saved", flush=True)
    """)
WRITER_SHAPES = {"W1": (50, 50), "b1": (50, 1)}


def start_writers(path, values):
    """Children paused in the middle of saving `values`; returns [(child, its
    temporary file)]."""
    children = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(value)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for value in values]
    out = []
    for child in children:
        line = child.stdout.readline()
        assert line == "mid-write\n", (line, child.stderr.read() if child.poll() else "")
        mine = [n for n in os.listdir(os.path.dirname(path))
                if n.startswith(f".{os.path.basename(path)}.{child.pid}.")]  # pid in the name
        assert len(mine) == 1, mine
        out.append((child, os.path.join(os.path.dirname(path), mine[0])))
    return out


def temporaries(directory):
    return sorted(n for n in os.listdir(directory) if n.endswith(".tmp"))


@needs_flock
def test_next_save_removes_what_killed_writers_left(tmp_path):
    """Two writers paused mid-write at once (none removes another's file),
    then killed with SIGKILL: their temporary files stay behind, the previous
    checkpoint is intact, and the next save of the same target removes them."""
    import signal

    path, params, sd, live, opt = saved_run(tmp_path)
    children = start_writers(path, (5.0, 6.0))
    for child, _ in children:
        child.send_signal(signal.SIGKILL)
        child.communicate()
        assert child.returncode == -signal.SIGKILL
    left = sorted(os.path.basename(tmp) for _, tmp in children)
    assert temporaries(tmp_path) == left
    assert all(os.path.getsize(tmp_path / name) > 0 for name in left)
    assert_holds(path, params, sd)
    fo.save_checkpoint(path, live, opt)
    assert os.listdir(tmp_path) == ["run.npz"]
    assert_holds(path, params, sd)


@needs_flock
def test_next_save_leaves_a_live_writers_file(tmp_path):
    """A child paused mid-write keeps its temporary file through another save
    of the same target, then completes its own save."""
    path, params, sd, live, opt = saved_run(tmp_path)
    ((child, tmp),) = start_writers(path, [7.0])
    try:
        size = os.path.getsize(tmp)
        fo.save_checkpoint(path, live, opt)     # our save completes...
        assert_holds(path, params, sd)
        assert temporaries(tmp_path) == [os.path.basename(tmp)]  # ...and leaves theirs
        assert os.path.getsize(tmp) == size
        out, err = child.communicate("go\n")
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 0 and out == "saved\n", err
    assert os.listdir(tmp_path) == ["run.npz"]
    target = init(seed=1, shapes=WRITER_SHAPES)
    fo.load_checkpoint(path, target, fo.Adam(init(seed=1, shapes=WRITER_SHAPES)))
    assert all((a == 7.0).all() for a in target.values())


@needs_flock
def test_next_save_leaves_a_writing_threads_file(tmp_path, monkeypatch):
    """The same within one process: a thread paused mid-write keeps its file
    through a save in another thread, then completes its save."""
    import threading

    path, params, sd, live, opt = saved_run(tmp_path)
    mid_write, go = threading.Event(), threading.Event()
    real_open = checkpoint._open

    class Pausing(FailingFile):
        def write(self, data):
            if not mid_write.is_set():
                self._f.write(data)
                self._f.flush()
                mid_write.set()
                go.wait()
                return len(data)
            return self._f.write(data)

    def opener(fd):
        if threading.current_thread() is writer:
            return Pausing(real_open(fd), 0)
        return real_open(fd)

    monkeypatch.setattr(checkpoint, "_open", opener)
    other = init(seed=11)
    errors = []

    def save_other():
        try:
            fo.save_checkpoint(path, other)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    writer = threading.Thread(target=save_other)
    writer.start()
    try:
        assert mid_write.wait(60)
        (theirs,) = temporaries(tmp_path)
        fo.save_checkpoint(path, live, opt)
        assert_holds(path, params, sd)
        assert temporaries(tmp_path) == [theirs]
    finally:
        go.set()
        writer.join()
    assert not errors, errors
    assert os.listdir(tmp_path) == ["run.npz"]
    target = init(seed=2)
    fo.load_checkpoint(path, target)
    assert_bitwise(target, other)


@needs_flock
def test_cleaner_that_wins_the_race_before_the_lock(tmp_path, monkeypatch):
    """A cleaner can lock and remove a temporary file between its creation and
    its writer's lock; the writer notices and writes a new one."""
    path, params, sd, live, opt = saved_run(tmp_path)
    real = checkpoint.fcntl
    calls = []

    class Flock:
        LOCK_EX, LOCK_NB = real.LOCK_EX, real.LOCK_NB

        @staticmethod
        def flock(fd, op):
            if op == real.LOCK_EX and not calls:  # the writer's first lock: a cleaner wins
                for name in temporaries(tmp_path):
                    checkpoint._remove_if_unlocked(str(tmp_path / name))
                assert temporaries(tmp_path) == []
            calls.append(op)
            return real.flock(fd, op)

    monkeypatch.setattr(checkpoint, "fcntl", Flock)
    opt.step(grad_seq(np.float64, 4)[3])
    fo.save_checkpoint(path, live, opt)
    assert calls.count(real.LOCK_EX) == 2
    assert os.listdir(tmp_path) == ["run.npz"]
    assert_holds(path, copy(live), opt.state_dict())


@needs_flock
def test_cleanup_removes_only_this_targets_temporary_files(tmp_path):
    path, params, sd, live, opt = saved_run(tmp_path)
    dead = ".run.npz.4242.0123abcd.tmp"             # as a killed writer leaves it
    keep = [".run.npz.backup.tmp", ".run.npz.4242.0123abc.tmp", ".run.npz.4242.0123abcd.tmp.1",
            "run.npz.4242.0123abcd.tmp", ".other.npz.4242.0123abcd.tmp", ".run.npz.4242.tmp",
            ".run.npz.x4242.0123abcd.tmp", "victim"]
    for name in [dead] + keep:
        (tmp_path / name).write_bytes(b"x" * 100)
    (tmp_path / ".run.npz.4243.0123abcd.tmp").mkdir()
    (tmp_path / ".run.npz.4244.0123abcd.tmp").symlink_to(tmp_path / "victim")
    keep += [".run.npz.4243.0123abcd.tmp", ".run.npz.4244.0123abcd.tmp"]
    fo.save_checkpoint(path, live, opt)
    assert sorted(os.listdir(tmp_path)) == sorted(keep + ["run.npz"])
    assert (tmp_path / "victim").read_bytes() == b"x" * 100


def test_missing_folder_is_named(tmp_path):
    params = init()
    missing = tmp_path / "no" / "such"
    with pytest.raises(FileNotFoundError) as info:
        fo.save_checkpoint(missing / "c.npz", params)
    assert info.value.filename == str(missing)
    assert str(missing / "c.npz") in str(info.value) and ".tmp" not in str(info.value)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(NotADirectoryError) as info:
        fo.save_checkpoint(tmp_path / "file" / "c.npz", params)
    assert info.value.filename == str(tmp_path / "file") and ".tmp" not in str(info.value)
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError) as info:   # the target itself is a folder
        fo.save_checkpoint(tmp_path / "folder", params)
    assert info.value.filename == str(tmp_path / "folder") and ".tmp" not in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["file", "folder"]   # no temporary file left
