"""Checkpoints: parameters and optimizer state in one .npz file.

Entries: "parameters/<key>" for each parameter, "optimizer/<entry>" for each
entry of optimizer.state_dict(), and "fastoptim/checkpoint" (the format
version). Nothing is pickled: every entry is a .npy array of a plain dtype
(bool, integer, float, complex or str). A bfloat16 array (ml_dtypes' dtype,
which .npy cannot name) is stored as uint16 with the same bits, and the entry
"fastoptim/dtype/<entry>" = "bfloat16" says so; loading views it as the
destination's bfloat16 dtype again (ml_dtypes is never imported here).

Saving. save_checkpoint writes a temporary file `.NAME.<pid>.<hex>.tmp` in the
target's directory, flushes it to disk and renames it over the target
(os.replace is atomic), so a crash in the middle of a save leaves the previous
checkpoint intact.

What a dead writer leaves behind. A writer killed mid-save leaves its
temporary file. The writer holds an exclusive lock (fcntl.flock) on its
temporary file from just after creating it until the rename; the kernel
releases the locks of a process that dies. Each save first removes the
temporary files of the same target (`.NAME.<digits>.<8 hex>.tmp`, regular
files only) whose lock it can take at once: those are a dead writer's. A file
whose lock is held (a live writer: another thread, another process, or another
machine sharing the folder, where locks reach the file server) is left alone,
and so is any file this process is writing, any file it cannot open or lock,
and everything on a filesystem without locks. A cleaner can take the lock of a
file created an instant before its writer locked it; the writer checks, once
it holds its lock, that its file is still there and starts over with a new one
if not. Without fcntl (Windows) nothing is removed.

Loading. load_checkpoint bounds what it reads before reading it. From the
zip directory: every entry a .npy member, at most once, unencrypted, stored or
deflated, and not many more optimizer entries than the optimizer has. From
each member's .npy header (at most _MAX_HEADER bytes, read first): a plain
dtype (no object, structured or subarray dtypes), a shape whose bytes fit what
the destination needs (the parameter or state array it is loaded into, or a
small 0-d scalar) and fill the member exactly, and for a parameter its shape
and dtype. Only then is the data read, in chunks; the zip reader never yields
more than a member's declared size and checks its CRC there, so a compressed
member that would expand further costs nothing (its compression ratio does
not matter). The whole file is checked against the parameters and the
optimizer before anything is written, then the values are copied into the
existing arrays (the optimizer's arena stays in place). A bad file raises
ValueError, KeyError or TypeError naming the file and the entry, and changes
nothing.
"""
import io
import math
import os
import re
import secrets
import stat
import struct
import threading
import zipfile
import zlib

import numpy as np

from . import _validate as check

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

__all__ = ["load_checkpoint", "save_checkpoint"]

FORMAT = 1
_MARK = "fastoptim/checkpoint"
_PARAMS = "parameters/"
_OPTIM = "optimizer/"
_DTYPE = "fastoptim/dtype/"  # + an entry's name: the dtype of its uint16 bits
_BFLOAT16 = "bfloat16"

_PLAIN_KINDS = "biufcU"    # bool, int, uint, float, complex, str
_MAX_HEADER = 10000        # bytes of .npy header text (NumPy's own limit)
_SCALAR_BYTES = 1024       # the data of a scalar entry (e.g. a name of 256 characters)
_EXTRA_ENTRIES = 64        # optimizer scalars beyond the optimizer's own (a schedule's, ...)
_CHUNK = 1 << 20
# Errors of a damaged zip or .npy member (zipfile raises many kinds).
_DAMAGED = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError,
            ValueError, struct.error, NotImplementedError, RuntimeError, OverflowError)

_writing = set()  # temporary files this process is writing now
_writing_lock = threading.Lock()


# --- saving ---------------------------------------------------------------------------

def save_checkpoint(path, parameters, optimizer=None):
    """Write `parameters` and `optimizer`'s state to `path`, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write, used as given (no suffix is added). It is replaced
        by a rename, so a crash mid-save leaves the previous file intact.
    parameters : dict of str to numpy.ndarray
        Arrays of plain dtypes (numbers or strings).
    optimizer : fastoptim optimizer object, optional
        Its state_dict() is stored alongside.

    Raises
    ------
    FileNotFoundError
        The folder does not exist (it is named).
    TypeError
        An array or an optimizer entry cannot be stored (named).
    """
    path = os.fspath(path)
    _check_optimizer(optimizer)
    payload = {_MARK: np.asarray(FORMAT)}
    for key, a in _checked_parameters(parameters):
        _store(payload, _PARAMS + key, a)
    if optimizer is not None:
        for key, value in optimizer.state_dict(copy=False).items():
            a = np.asarray(value)
            if not (_plain(a.dtype) or check.is_bfloat16(a.dtype)):
                raise TypeError(f"{type(optimizer).__name__}'s state {key!r} = {value!r} "
                                f"cannot be stored in a checkpoint")
            _store(payload, _OPTIM + key, a)

    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    _remove_dead_temporaries(directory, base)
    try:
        tmp, fd = _create_temporary(directory, base)
    except OSError as exc:
        raise _error_naming(exc, path, directory) from None
    try:
        with _open(fd) as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
            if fcntl is not None:
                # rename while the lock is held: the name never shows unlocked
                os.replace(tmp, path)
        if fcntl is None:
            os.replace(tmp, path)  # Windows cannot rename an open file
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and exc.filename == tmp:
            raise _error_naming(exc, path, path) from None
        raise
    finally:
        with _writing_lock:
            _writing.discard(tmp)
    _fsync_directory(directory)


def _store(payload, name, a):
    """Entry `name` = a; a bfloat16 array as its uint16 bits, with its dtype entry."""
    if check.is_bfloat16(a.dtype):
        payload[_DTYPE + name] = np.asarray(_BFLOAT16)
        a = a.view(np.uint16)
    payload[name] = a


def _temporary_pattern(base):
    return re.compile(r"\.%s\.[0-9]+\.[0-9a-f]{8}\.tmp" % re.escape(base))


def _create_temporary(directory, base):
    """A new temporary file for `base`, locked; returns (its path, its fd)."""
    while True:
        tmp = os.path.join(directory, f".{base}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        with _writing_lock:
            _writing.add(tmp)
        try:
            # 0o666 and the user's umask, like any new file (mkstemp would make it 0o600).
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                         | getattr(os, "O_BINARY", 0), 0o666)
        except BaseException:
            with _writing_lock:
                _writing.discard(tmp)
            raise
        if fcntl is None:
            return tmp, fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a filesystem without locks: no cleaner can lock it either
            return tmp, fd
        try:
            os.lstat(tmp)
        except FileNotFoundError:
            # A cleaner locked and removed it before we locked it: start over.
            os.close(fd)
            with _writing_lock:
                _writing.discard(tmp)
            continue
        return tmp, fd


def _remove_dead_temporaries(directory, base):
    """Remove the temporary files of `base` that no live writer holds."""
    if fcntl is None:
        return
    try:
        names = os.listdir(directory)
    except OSError:
        return
    pattern = _temporary_pattern(base)
    for name in names:
        if not pattern.fullmatch(name):
            continue
        tmp = os.path.join(directory, name)
        with _writing_lock:
            if tmp in _writing:  # a thread of this process is writing it
                continue
        _remove_if_unlocked(tmp)


def _remove_if_unlocked(tmp):
    # Write access: an exclusive lock needs it on NFS. O_NONBLOCK: a FIFO does
    # not hang the open.
    flags = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(tmp, os.O_WRONLY | flags)
    except OSError:
        return
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held by a live writer (or no locks here)
            return
        # Holding the lock, no writer is between its check and its rename: the
        # name still naming this file means it is a dead writer's.
        if os.path.samestat(os.lstat(tmp), st):
            os.unlink(tmp)
    except OSError:
        pass
    finally:
        os.close(fd)


def _error_naming(exc, path, filename):
    """`exc` (about the temporary file) reworded to name the user's path."""
    reason = exc.strerror
    if isinstance(exc, FileNotFoundError) and filename != path:
        reason = "no such directory"
    return type(exc)(exc.errno, f"cannot save checkpoint {path!r}: {reason}", filename)


# --- loading --------------------------------------------------------------------------

def load_checkpoint(path, parameters, optimizer=None):
    """Read `path` into `parameters` and `optimizer`, in place.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by save_checkpoint.
    parameters : dict of str to numpy.ndarray
        The arrays to fill; each keeps its identity. The checkpoint must hold
        exactly the dict's keys, with the same shapes and dtypes.
    optimizer : fastoptim optimizer object, optional
        Its state is restored as by load_state_dict; the checkpoint must hold
        it.

    Raises
    ------
    FileNotFoundError
        `path` does not exist.
    KeyError, TypeError, ValueError
        A missing, extra or unreadable entry, or one of the wrong type,
        shape or dtype (the file and the entry are named). Every entry is
        bounded before it is read, and everything is checked before any
        array or the optimizer changes.
    """
    path = os.fspath(path)
    _check_optimizer(optimizer)
    targets = _checked_parameters(parameters)
    for key, dest in targets:
        check._writable(f"parameters[{key!r}]", dest)
    now = optimizer.state_dict(copy=False) if optimizer is not None else {}

    with _Archive(path) as archive:
        names = archive.members
        if _MARK not in names:
            raise ValueError(f"{path}: not a fastoptim checkpoint (no {_MARK!r} entry)")
        other = [k for k in names if k != _MARK and not k.startswith((_PARAMS, _OPTIM, _DTYPE))]
        if other:
            raise ValueError(f"{path}: unexpected entries {', '.join(map(repr, sorted(other)))}")
        version = archive.read(_MARK, scalar=True)
        if version.dtype.kind not in "iu" or version.item() != FORMAT:
            raise ValueError(f"{path}: checkpoint format {version!r}; this fastoptim reads "
                             f"format {FORMAT}")
        bfloat16 = _bfloat16_entries(archive, path)

        saved = {k[len(_PARAMS):] for k in names if k.startswith(_PARAMS)}
        for key, _ in targets:
            if key not in saved:
                raise KeyError(f"{path} has no parameter {key!r}")
        extra = saved - {key for key, _ in targets}
        if extra:
            raise KeyError(f"{path} has parameters that the dict lacks: "
                           f"{', '.join(map(repr, sorted(extra)))}")
        stored = [k[len(_OPTIM):] for k in names if k.startswith(_OPTIM)]
        if optimizer is not None:
            if not stored:
                raise KeyError(f"{path} holds no optimizer state")
            unknown = [k for k in stored if k not in now]
            if len(unknown) > _EXTRA_ENTRIES + len(targets):
                raise ValueError(f"{path}: {len(unknown)} optimizer entries that this "
                                 f"{type(optimizer).__name__} does not have, e.g. "
                                 f"{', '.join(map(repr, sorted(unknown)[:5]))}")

        copies = [(dest, _as_stored(archive, _PARAMS + key, dest, bfloat16, path))
                  for key, dest in targets]
        state = {}
        if optimizer is not None:
            for key in stored:
                dest = now.get(key)
                if isinstance(dest, np.ndarray):
                    state[key] = _as_stored(archive, _OPTIM + key, dest, bfloat16, path,
                                            like=False)
                elif _OPTIM + key in bfloat16:
                    raise TypeError(f"{path}: entry {_OPTIM + key!r} is a bfloat16 array; "
                                    f"the optimizer has no such array")
                else:  # every other entry of a state dict is a scalar
                    state[key] = archive.read(_OPTIM + key, scalar=True)

    apply_state = None
    if optimizer is not None:
        try:
            apply_state = optimizer.check_state_dict(state)
        except (KeyError, TypeError, ValueError) as exc:
            raise type(exc)(f"{path}: {_message(exc)}") from None

    for dest, src in copies:
        np.copyto(dest, src)
    if apply_state is not None:
        apply_state()


def _bfloat16_entries(archive, path):
    """The entries stored as bfloat16 bits (their "fastoptim/dtype/" entries,
    each a scalar str naming bfloat16 and an entry of the file)."""
    out = set()
    for name in archive.members:
        if not name.startswith(_DTYPE):
            continue
        entry = name[len(_DTYPE):]
        value = archive.read(name, scalar=True)
        if value.dtype.kind != "U" or value.item() != _BFLOAT16:
            raise ValueError(f"{path}: entry {name!r} is {value!r}; a dtype entry says "
                             f"{_BFLOAT16!r}")
        if entry not in archive.members or not entry.startswith((_PARAMS, _OPTIM)):
            raise ValueError(f"{path}: entry {name!r} names no array of the file")
        out.add(entry)
    return out


def _as_stored(archive, name, dest, bfloat16, path, like=True):
    """Entry `name` for destination `dest` (a parameter: its shape and dtype, or
    a state array: within its size): a bfloat16 entry is read as uint16 and
    viewed as dest's bfloat16 dtype."""
    if name in bfloat16:
        if not check.is_bfloat16(dest.dtype):
            what = (f"parameters[{name[len(_PARAMS):]!r}]" if like
                    else f"the optimizer's {name[len(_OPTIM):]}")
            raise TypeError(f"{path}: entry {name!r} has dtype bfloat16 but {what} has "
                            f"dtype {dest.dtype}")
        bits = dest.view(np.uint16)
        a = (archive.read(name, like=bits) if like
             else archive.read(name, budget=bits.nbytes))
        if a.dtype != np.uint16:
            raise TypeError(f"{path}: entry {name!r} is marked bfloat16 but holds {a.dtype}")
        return a.view(dest.dtype)
    if like:
        return archive.read(name, like=dest)
    return archive.read(name, budget=dest.nbytes)


def read_state_dict(npz, optimizer):
    """The entries of `npz` (an open np.load of a .npz) for `optimizer`, each
    read within the size its destination needs, as load_checkpoint reads the
    optimizer's entries: a hostile file is refused before it costs memory.
    Returns a dict for optimizer.check_state_dict."""
    label = getattr(npz.fid, "name", None) or "the .npz"
    now = optimizer.state_dict(copy=False)
    archive = _Archive.of_zip(npz.zip, label)
    unknown = [k for k in archive.members if k not in now]
    if len(unknown) > _EXTRA_ENTRIES:
        raise ValueError(f"{label}: {len(unknown)} entries that this "
                         f"{type(optimizer).__name__} does not have, e.g. "
                         f"{', '.join(map(repr, sorted(unknown)[:5]))}")
    state = {}
    for key in archive.members:
        dest = now.get(key)
        if isinstance(dest, np.ndarray):
            state[key] = archive.read(key, budget=dest.nbytes)
        else:  # every other entry of a state dict is a scalar
            state[key] = archive.read(key, scalar=True)
    return state


class _Refused(ValueError):
    """A member that is readable but not allowed (raised as a ValueError, as is)."""


class _Archive:
    """The .npz at `path`: its directory checked on opening, each member read
    within its bounds by read()."""

    @classmethod
    def of_zip(cls, archive, label):
        """An open zip file (np.load's NpzFile.zip), checked as a file is;
        closing it is its owner's business."""
        self = cls.__new__(cls)
        self.path, self._zip, self._file = label, None, None
        try:
            self.members = self._members(archive.infolist())
        except _DAMAGED as exc:
            raise ValueError(f"{label}: not a readable .npz ({exc})") from None
        self._zip = archive
        self._owned = False
        return self

    def __init__(self, path):
        self.path = path
        self._owned = True
        self._file = open(path, "rb")  # a missing file: FileNotFoundError
        try:
            self._zip = zipfile.ZipFile(self._file)
            infos = self._zip.infolist()
        except _DAMAGED as exc:
            self._file.seek(0)
            head = self._file.read(6)
            self._file.close()
            if head == b"\x93NUMPY":
                raise ValueError(f"{path}: not a fastoptim checkpoint (a .npy array, "
                                 "not a .npz)") from None
            raise ValueError(f"{path}: not a readable .npz checkpoint ({exc})") from None
        try:
            self.members = self._members(infos)
        except BaseException:
            self.close()
            raise

    def _members(self, infos):
        members = {}
        for info in infos:
            name = info.filename
            if not name.endswith(".npy"):
                raise ValueError(f"{self.path}: entry {name!r} is not a .npy array")
            key = name[:-len(".npy")]
            if key in members:
                raise ValueError(f"{self.path}: entry {key!r} appears more than once")
            if info.flag_bits & 0x1:
                raise ValueError(f"{self.path}: entry {key!r} is encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise ValueError(f"{self.path}: entry {key!r} uses compression method "
                                 f"{info.compress_type}; a checkpoint is stored or deflated")
            members[key] = info
        return members

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self._owned:
            self._zip.close()
            self._file.close()

    def read(self, key, like=None, budget=None, scalar=False):
        """Entry `key` as an array: of `like`'s shape and dtype (a parameter),
        of at most `budget` bytes (a state array) or a 0-d scalar."""
        if scalar:
            budget = _SCALAR_BYTES
        elif like is not None:
            budget = like.nbytes
        info = self.members[key]
        where = f"{self.path}: entry {key!r}"
        try:
            with self._zip.open(info) as f:
                # the header is read within its own bound, whatever the member declares
                shape, fortran, dtype, offset = _npy_header(f, where)
                if like is not None:
                    _check_like(self.path, key, shape, dtype, like)
                elif scalar and shape != ():
                    raise _Refused(f"{where} has shape {shape}; this entry is a scalar "
                                   f"(the optimizer has no such array)")
                nbytes = math.prod(shape) * dtype.itemsize
                if nbytes > budget:
                    raise _Refused(f"{where} has shape {shape} and dtype {dtype} "
                                   f"({nbytes} bytes); the destination holds {budget}")
                if info.file_size != offset + nbytes:
                    raise _Refused(f"{where}: its .npy header says {nbytes} bytes of data, "
                                   f"the zip directory {info.file_size - offset}")
                # The zip reader stops at the declared size (and checks the CRC there).
                data = np.empty(nbytes, np.uint8)
                view, done = memoryview(data), 0
                while done < nbytes:
                    chunk = f.read(min(_CHUNK, nbytes - done))
                    if not chunk:
                        raise _Refused(f"{where} ends after {done} of {nbytes} bytes")
                    view[done:done + len(chunk)] = chunk
                    done += len(chunk)
        except _Refused as exc:
            raise ValueError(str(exc)) from None
        except _DAMAGED as exc:
            raise ValueError(f"{where} is damaged ({exc})") from None
        return data.view(dtype).reshape(shape, order="F" if fortran else "C")


def _npy_header(f, where):
    """(shape, fortran_order, dtype, bytes before the data) from a .npy header,
    checked."""
    major, minor = np.lib.format.read_magic(f)
    if (major, minor) not in ((1, 0), (2, 0)):
        raise _Refused(f"{where}: .npy version {major}.{minor}; a checkpoint uses 1.0 or 2.0")
    size = 2 if major == 1 else 4
    length = f.read(size)
    if len(length) != size:
        raise _Refused(f"{where}: the .npy header is cut short")
    n = int.from_bytes(length, "little")
    if n > _MAX_HEADER:
        raise _Refused(f"{where}: a .npy header of {n} bytes (at most {_MAX_HEADER})")
    text = f.read(n)
    read_header = (np.lib.format.read_array_header_1_0 if major == 1
                   else np.lib.format.read_array_header_2_0)
    try:
        shape, fortran, dtype = read_header(io.BytesIO(length + text))
    except Exception as exc:
        # NumPy parses the header with ast and tokenize, which raise many kinds
        # (tokenize.TokenError; MemoryError on deep nesting, not a large
        # allocation: the text is at most _MAX_HEADER bytes)
        raise _Refused(f"{where}: bad .npy header ({type(exc).__name__}: {exc})") from None
    if not all(type(d) is int and d >= 0 for d in shape):
        raise _Refused(f"{where}: bad .npy shape {shape!r}")
    if not _plain(dtype):
        raise _Refused(f"{where} has dtype {dtype}; a checkpoint holds plain numbers and "
                       f"strings only (no object, structured or subarray dtypes)")
    return shape, fortran, dtype, 6 + 2 + size + n


def _check_like(path, key, shape, dtype, like):
    name = key[len(_PARAMS):]
    label = f"parameters[{name!r}]"
    if shape != like.shape:
        raise _Refused(f"{path}: parameter {name!r} has shape {shape} but {label} has "
                       f"shape {like.shape}")
    if dtype != like.dtype:
        raise TypeError(f"{path}: parameter {name!r} has dtype {dtype} but {label} has "
                        f"dtype {like.dtype}")


def _plain(dtype):
    return (dtype.kind in _PLAIN_KINDS and dtype.names is None and dtype.subdtype is None
            and not dtype.hasobject and dtype.itemsize > 0)


# --- shared ---------------------------------------------------------------------------

def _check_optimizer(optimizer):
    from .optimizers import Optimizer

    if optimizer is not None and not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a fastoptim optimizer object or None, "
                        f"got {type(optimizer).__name__}")


def _checked_parameters(parameters):
    check.check_dict("parameters", parameters)
    items = []
    for key, a in parameters.items():
        if not isinstance(key, str):
            raise TypeError(f"parameter keys must be str, got {key!r}")
        if not isinstance(a, np.ndarray):
            raise TypeError(f"parameters[{key!r}] must be a numpy.ndarray, "
                            f"got {type(a).__name__}")
        if not (_plain(a.dtype) or check.is_bfloat16(a.dtype)):
            raise TypeError(f"parameters[{key!r}] has dtype {a.dtype}; a checkpoint holds "
                            f"plain numbers, strings and bfloat16 arrays only")
        items.append((key, a))
    return items


def _message(exc):
    return exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)


def _open(fd):
    return os.fdopen(fd, "wb")


def _fsync_directory(directory):
    """Make the rename itself durable (POSIX; not possible on Windows)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
