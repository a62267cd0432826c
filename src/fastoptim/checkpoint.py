"""Checkpoints: parameters and optimizer state in one .npz file.

save_checkpoint writes a temporary file in the target's directory, flushes it
to disk and renames it over the target (os.replace is atomic), so a crash in
the middle of a save leaves the previous checkpoint intact. load_checkpoint
checks the whole file against the parameters and the optimizer before it
writes anything, then copies the values into the existing arrays (the
optimizer's arena stays in place).

Entries: "parameters/<key>" for each parameter, "optimizer/<entry>" for each
entry of optimizer.state_dict(), and "fastoptim/checkpoint" (the format
version). Nothing is pickled.
"""
import os
import secrets
import zipfile

import numpy as np

from . import _validate as check

__all__ = ["load_checkpoint", "save_checkpoint"]

FORMAT = 1
_MARK = "fastoptim/checkpoint"
_PARAMS = "parameters/"
_OPTIM = "optimizer/"


def save_checkpoint(path, parameters, optimizer=None):
    """Write `parameters` (a dict of arrays) and `optimizer`'s state (when given)
    to `path`, atomically. The path is used as given (no suffix is added)."""
    path = os.fspath(path)
    _check_optimizer(optimizer)
    payload = {_MARK: FORMAT}
    for key, a in _checked_parameters(parameters):
        payload[_PARAMS + key] = a
    if optimizer is not None:
        for key, value in optimizer._state_items(copy=False).items():
            payload[_OPTIM + key] = value

    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory,
                       f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # 0o666 and the user's umask, like any new file (mkstemp would make it 0o600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                 0o666)
    try:
        with _open(fd) as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def load_checkpoint(path, parameters, optimizer=None):
    """Read `path` into `parameters` (in place: each array keeps its identity)
    and `optimizer` (when given). The checkpoint must hold exactly the dict's
    keys, with the same shapes and dtypes, and the optimizer's state; anything
    wrong raises before any array or the optimizer changes."""
    path = os.fspath(path)
    _check_optimizer(optimizer)
    entries = _read(path)
    if _MARK not in entries:
        raise ValueError(f"{path}: not a fastoptim checkpoint (no {_MARK!r} entry)")
    version = entries.pop(_MARK)
    if version.shape != () or version.item() != FORMAT:
        raise ValueError(f"{path}: checkpoint format {version!r}; this fastoptim reads "
                         f"format {FORMAT}")

    saved = {k[len(_PARAMS):]: v for k, v in entries.items() if k.startswith(_PARAMS)}
    state = {k[len(_OPTIM):]: v for k, v in entries.items() if k.startswith(_OPTIM)}
    other = [k for k in entries if not k.startswith((_PARAMS, _OPTIM))]
    if other:
        raise ValueError(f"{path}: unexpected entries {', '.join(map(repr, sorted(other)))}")

    copies = []
    for key, dest in _checked_parameters(parameters):
        if key not in saved:
            raise KeyError(f"{path} has no parameter {key!r}")
        src = saved.pop(key)
        label = f"parameters[{key!r}]"
        if src.shape != dest.shape:
            raise ValueError(f"{path}: parameter {key!r} has shape {src.shape} but "
                             f"{label} has shape {dest.shape}")
        if src.dtype != dest.dtype:
            raise TypeError(f"{path}: parameter {key!r} has dtype {src.dtype} but "
                            f"{label} has dtype {dest.dtype}")
        check._writable(label, dest)
        copies.append((dest, src))
    if saved:
        raise KeyError(f"{path} has parameters that the dict lacks: "
                       f"{', '.join(map(repr, sorted(saved)))}")

    apply_state = None
    if optimizer is not None:
        if not state:
            raise KeyError(f"{path} holds no optimizer state")
        try:
            apply_state = optimizer._check_state_dict(state)
        except (KeyError, TypeError, ValueError) as exc:
            raise type(exc)(f"{path}: {_message(exc)}") from None

    for dest, src in copies:
        np.copyto(dest, src)
    if apply_state is not None:
        apply_state()


def _read(path):
    """Every entry of the .npz at `path`, in memory."""
    try:
        npz = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable .npz checkpoint ({exc})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: not a fastoptim checkpoint (a .npy array, not a .npz)")
    with npz:
        try:
            return {name: npz[name] for name in npz.files}
        except (zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
            raise ValueError(f"{path}: damaged checkpoint ({exc})") from None


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
