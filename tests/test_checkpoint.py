"""Checkpoints (fastoptim.save_checkpoint / load_checkpoint): exact resume,
atomic saves (a crash mid-save leaves the previous checkpoint intact), and
loads that check everything before writing anything."""
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
