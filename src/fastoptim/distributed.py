"""Data parallelism over MPI: every rank steps with the mean of all ranks'
gradients, summed in rank order, with the optimizer state sharded by slice
(ZeRO stage 1), and checkpoints of one file per rank that load at any world
size.

Layout. The parameters move into one flat buffer per dtype (as an optimizer's
arena: each array on a 64-byte boundary, in key order). Each buffer is cut
into w contiguous slices, rank r owning [cuts[r], cuts[r+1]); a cut falls on
an array's start or on a multiple of CHUNK (1024) elements into an array, so
a rank's piece of an array starts on a chunk of the global norm (bitwise the
single process's norm, see below) and on a cache line.

A step. Each rank packs its gradients into a send buffer in the arena's
layout; an all-to-all of slices gives rank r every rank's piece of its slice,
laid out [source rank][slice]; the C kernel adds the w sources in rank order
inside the fused update pass (Stepper._configure_sources) and scales by 1/w;
then every rank's updated slice is all-gathered into every rank's parameters.
No MPI reduction is used, so the result does not depend on the MPI library,
the network or the number of threads: parameters are bitwise equal on every
rank, from run to run, and to one process stepping an ordinary optimizer with
G = ((g_0 + g_1) + ... + g_{w-1}) * (1/w) computed in the dtype
(fastoptim._fallback.sum_sources). The rank's optimizer is an ordinary
optimizer object of the same class over its pieces (1-D views of the flat
buffer, keyed by the parameter key), so every setting applies unchanged.

Clipping and skip_nonfinite. The global norm is the single process's: fo_norm
sums per-chunk partial sums (chunks of 1024 elements of each array) in order;
each rank computes the partial sums of its chunks of G
(fastoptim._fallback._chunk_sums), an all-gather puts them in rank order, and
every rank adds them in that order. The clipping scale multiplies G in the
dtype before the step, exactly as the kernel's first operation would.
"""
import hashlib
import json
import math
import numbers
import os
import secrets
import shutil
from bisect import bisect_left

import numpy as np

from . import _backend
from . import _validate as check
from . import schedules as _schedules
from .checkpoint import _Archive, _fsync_directory
from .optimizers import _base
from .optimizers._base import Optimizer

__all__ = ["DataParallel", "ELEMENTWISE_RULES", "elementwise", "load_checkpoint",
           "save_checkpoint"]

_fallback = _backend.fallback

#: The rules whose update of an element reads only that element's parameter,
#: gradient and state: their state can be cut anywhere (shard_state=True). A
#: rule that reduces over whole arrays (a trust ratio, a factored second moment,
#: an orthogonalization) needs shard_state=False.
ELEMENTWISE_RULES = frozenset({"sgd", "adam", "nadam", "radam", "adamax", "adagrad",
                               "rmsprop", "lion", "schedule_free_adamw", "schedule_free_sgd"})


def elementwise(cls):
    """Whether `cls`'s whole step is elementwise: its rule is (ELEMENTWISE_RULES)
    and no NumPy phase (Muon's orthogonalization) runs over whole arrays."""
    return cls.declaration.rule in ELEMENTWISE_RULES and cls._phase is None

CHUNK = _fallback._NORM_CHUNK   # csrc/kernels.h FO_NORM_CHUNK: the global norm's chunks
_ALIGN = 64                     # bytes: every array and every slice on a cache line
_CLIP_EPS = _base._CLIP_EPS
_EMPTY = "\x00empty"            # the zero-size key of a rank optimizer that has no piece
_ERRORS = {"KeyError": KeyError, "TypeError": TypeError, "ValueError": ValueError,
           "FileNotFoundError": FileNotFoundError}


# --- the layout ---------------------------------------------------------------------------

def layout(sizes, itemsize, world_size):
    """The flat buffer of one dtype group and its cuts.

    Parameters
    ----------
    sizes : list of int
        Elements of each array, in key order.
    itemsize : int
        Bytes per element.
    world_size : int
        Ranks.

    Returns
    -------
    offsets : list of int
        Where each array starts (elements; on a 64-byte boundary).
    total : int
        The buffer's length (elements).
    cuts : list of int
        world_size + 1 positions: rank r owns [cuts[r], cuts[r + 1]). Each
        inner cut is the first candidate (an array's start, a multiple of CHUNK
        elements into an array, or the end) at or after r * total / world_size,
        so rank 0 owns the first elements and a slice exceeds total /
        world_size by less than one chunk (plus alignment).
    """
    per_line = _ALIGN // math.gcd(_ALIGN, itemsize)
    offsets, total = [], 0
    for n in sizes:
        offsets.append(total)
        total += -(-n // per_line) * per_line
    candidates = sorted({off + j * CHUNK for off, n in zip(offsets, sizes)
                         for j in range(-(-n // CHUNK))} | {total})
    cuts = [0]
    for r in range(1, world_size):
        target = -(-r * total // world_size)
        cuts.append(max(cuts[-1], candidates[bisect_left(candidates, target)]))
    cuts.append(total)
    return offsets, total, cuts


def pieces(offsets, sizes, lo, hi):
    """(array index, a, b): the elements [a, b) of each array (in its memory
    order) that lie in [lo, hi), for the arrays that have some."""
    out = []
    for i, (off, n) in enumerate(zip(offsets, sizes)):
        a, b = min(max(lo - off, 0), n), min(max(hi - off, 0), n)
        if b > a:
            out.append((i, a, b))
    return out


def _order(a):
    return "F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C"


# Page offsets of the buffers (_base's staggering, in units of _base._STAGGER
# bytes): a rank optimizer's state buffers take 0, 1, 2, ...; the parameters,
# the received gradients, the sent ones and G other offsets, so that no two
# streams of the update share their address bits below 4 KiB (4K aliasing).
_PARAMS, _RECV, _SEND, _SUM = 6, 7, 8, 9


def _aligned(dtype, count, j=_SUM):
    return _base._aligned_zeros(np.dtype(dtype), count, j)


class _Group:
    """One dtype group: its keys, layout and buffers."""

    def __init__(self, dtype, keys, arrays, world_size, rank, sharded):
        self.dtype = np.dtype(dtype)
        self.keys = keys
        self.shapes = [a.shape for a in arrays]
        self.orders = [_order(a) for a in arrays]
        self.sizes = [a.size for a in arrays]
        self.offsets, self.total, self.cuts = layout(self.sizes, self.dtype.itemsize, world_size)
        self.lo, self.hi = self.cuts[rank], self.cuts[rank + 1]
        self.counts = [self.cuts[r + 1] - self.cuts[r] for r in range(world_size)]
        self.shares = [pieces(self.offsets, self.sizes, self.cuts[r], self.cuts[r + 1])
                       for r in range(world_size)]
        # the elements this rank updates: its slice, or everything
        self.start, self.stop = (self.lo, self.hi) if sharded else (0, self.total)
        per_line = _ALIGN // math.gcd(_ALIGN, self.dtype.itemsize)
        self.stride = -(-(self.stop - self.start) // per_line) * per_line

    def view(self, flat, i):
        """Array i of a flat buffer of this layout, shaped."""
        off, n = self.offsets[i], self.sizes[i]
        return flat[off:off + n].reshape(self.shapes[i], order=self.orders[i])


def _nchunks(share):
    return sum(-(-(b - a) // CHUNK) for _, a, b in share)


# --- agreement: errors on every rank, never a hang -------------------------------------------

def _agree(comm, error):
    """Every rank's outcome of a local part (None or the exception raised); if
    any failed, every rank raises the first failure (same type and message,
    naming the rank)."""
    outcome = None if error is None else (type(error).__name__, _message(error))
    outcomes = comm.allgather(outcome)
    for r, out in enumerate(outcomes):
        if out is not None:
            name, message = out
            exc = _ERRORS.get(name, RuntimeError)
            if error is not None and r == comm.Get_rank():
                exc = type(error) if type(error) in _ERRORS.values() else exc
                raise exc(f"rank {r} of {len(outcomes)}: {message}") from error
            raise exc(f"rank {r} of {len(outcomes)}: {message}")


def _message(exc):
    return exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)


def _local(fn, *args):
    """(fn(*args), None), or (None, the KeyError/TypeError/ValueError/OSError)."""
    try:
        return fn(*args), None
    except (KeyError, TypeError, ValueError, OSError) as exc:
        return None, exc


def _digest(obj):
    text = repr(obj).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=7).digest(), "little")


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError("fastoptim.distributed needs mpi4py: pip install 'fastoptim[mpi]' "
                          "(which also brings an MPI), or pip install mpi4py against your "
                          "cluster's MPI") from None
    return MPI


def _datatype(MPI, dtype):
    if dtype == np.float32:
        return MPI.FLOAT
    if dtype == np.float64:
        return MPI.DOUBLE
    return MPI.BYTE.Create_contiguous(dtype.itemsize).Commit()


# --- DataParallel -------------------------------------------------------------------------

def _refuse_storage(cls, args, arrays):
    """DataParallel exchanges and keeps float32 and float64 arrays only: refuse
    16-bit parameters and the storage settings (issue 13's formats are not
    sliced, exchanged or checkpointed by rank yet)."""
    flags = {arg: check.flag(args.get(arg, False), arg)
             for arg in ("kahan_summation", "stochastic_rounding")}
    _base.refuse_storage(f"DataParallel({cls.__name__})",
                         "its exchanges and checkpoints are float32 or float64",
                         args.get("state_bits", 32), flags, arrays)


class DataParallel:
    """An optimizer that steps with the mean of every rank's gradients, over MPI.

    Every rank builds one with the same parameters (keys, shapes, dtypes and
    layouts) and the same settings, and calls ``step(local_grads)`` with its own
    gradients. Each rank receives its slice of every rank's gradients (an
    all-to-all of slices, not an MPI reduction); the compiled kernel adds them
    in rank order inside the fused update pass and scales by 1/w, then the
    updated slices are all-gathered. Parameters are therefore bitwise equal on
    every rank, from run to run, whatever the MPI library, and bitwise equal to
    one process that steps an ordinary ``optimizer_class`` with
    ``G = ((g_0 + g_1) + ... + g_{w-1}) * (1/w)`` computed in the dtype.

    Parameters
    ----------
    optimizer_class : type
        A fastoptim optimizer class (``fastoptim.AdamW``, ...). With
        shard_state=True its step must be elementwise (`elementwise`: every
        class but LAMB, Adafactor and Muon).
    parameters : dict of str to numpy.ndarray
        This rank's parameters; every rank's must have the same keys, shapes,
        dtypes and memory orders. Their values move into this object's buffers
        (one per dtype, as ``arena=True``) and the dict's values are replaced by
        views of them; they start as rank 0's values (broadcast here).
    comm : mpi4py.MPI.Comm, optional
        The ranks (default ``MPI.COMM_WORLD``).
    shard_state : bool, default True
        Keep the optimizer state of this rank's slice only (ZeRO stage 1,
        Rajbhandari et al. 2020): about 1/w of the state per rank, then
        all-gather the updated parameters. False: every rank keeps the whole
        state, receives every rank's whole gradient (an all-gather) and updates
        everything, with the same results.
    **settings
        The optimizer class's settings (learning_rate, its hyperparameters,
        options, weight_decay, weight_decay_mask, max_grad_norm,
        skip_nonfinite, ema_decay, ema_warmup, gradient_accumulation_steps),
        the same on every rank (16-bit parameters, state_bits other than 32,
        kahan_summation and stochastic_rounding are refused). max_grad_norm clips by the global norm of the
        mean gradient over all ranks (bitwise the single process's norm of G);
        skip_nonfinite skips the step on every rank when any element of G is
        Inf or NaN; with gradient_accumulation_steps=k each rank sums its own k
        calls (scaled by 1/k) and the ranks communicate once per k calls.

    Raises
    ------
    TypeError, ValueError, KeyError
        As the optimizer class raises them for bad settings or parameters, and
        ValueError when the ranks disagree on the keys, shapes, dtypes, layouts
        or settings (the rank and the difference are named). Every rank raises
        the same error; none waits forever.
    ImportError
        mpi4py is not installed and no comm was given.

    Notes
    -----
    Collective: the constructor, ``step`` (on the calls that communicate),
    ``gather_state``, ``gather_ema`` and the checkpoint functions must be
    called by every rank in the same order. Each step first exchanges a short
    status (gradient checks, t and a digest of the settings), so a rank whose
    gradients are bad, or whose settings or step count differ, makes every rank
    raise the same error.

    References
    ----------
    Rajbhandari, Rasley, Ruwase and He, "ZeRO: Memory optimizations toward
    training trillion parameter models", SC 2020 (stage 1: optimizer state
    partitioning).
    """

    def __init__(self, optimizer_class, parameters, comm=None, *, shard_state=True, **settings):
        MPI = _mpi()
        self._MPI = MPI
        self._comm = MPI.COMM_WORLD if comm is None else comm
        self._rank = self._comm.Get_rank()
        self._world = self._comm.Get_size()
        prepared, error = _local(self._prepare, optimizer_class, parameters, shard_state,
                                 settings)
        fingerprint = prepared if error is None else None
        _agree(self._comm, error)
        _agree(self._comm, _disagreement(self._comm.allgather(fingerprint)))
        self._build(parameters)

    # --- construction -----------------------------------------------------------------------

    def _prepare(self, cls, parameters, shard_state, settings):
        """The local checks; returns the fingerprint the ranks must agree on."""
        if not (isinstance(cls, type) and issubclass(cls, Optimizer)
                and cls.declaration is not None):
            raise TypeError(f"optimizer_class must be a fastoptim optimizer class (e.g. "
                            f"fastoptim.AdamW), got {cls!r}")
        self._cls = cls
        self._sharded = check.flag(shard_state, "shard_state")
        if self._sharded and not elementwise(cls):
            raise ValueError(f"{cls.__name__}'s step is not elementwise, so its state "
                             f"cannot be cut into slices: use shard_state=False (every rank "
                             f"keeps the whole state)")
        if "arena" in settings and settings["arena"] is not True:
            raise ValueError("DataParallel keeps the parameters in its own buffers "
                             "(arena=True); arena=False is not supported")
        settings = {k: v for k, v in settings.items() if k != "arena"}
        try:
            bound = cls.__signature__.bind(parameters, **settings)
        except TypeError as exc:
            raise TypeError(f"DataParallel({cls.__name__}): {exc}") from None
        bound.apply_defaults()
        args = dict(bound.arguments)
        del args["parameters"]
        args.pop("arena", None)
        arrays = _base._check_parameters(parameters)
        _refuse_storage(cls, args, arrays)
        keys = [k for k, _ in arrays]
        if _EMPTY in keys:
            raise ValueError(f"parameter key {_EMPTY!r} is reserved")
        self._keys = keys
        self._max_norm = _base._max_grad_norm(args.pop("max_grad_norm"))
        self._skip = check.flag(args.pop("skip_nonfinite"), "skip_nonfinite")
        self._accumulate = check.integer(args.pop("gradient_accumulation_steps"),
                                         "gradient_accumulation_steps", minimum=1)
        self._mask = None
        self._wd = None
        mask = args.pop("weight_decay_mask", None)
        if cls.declaration.weight_decay is not None:
            if mask is not None:
                self._mask = _base._per_key(keys, mask, "weight_decay_mask", check.flag)
            self._wd = self._resolve_decay(args.pop("weight_decay"))
        for name, value in args.items():
            # a per-key callable (Muon's muon_mask) as the dict it gives: the ranks compare
            # what it selects, not the function's address
            if name != "learning_rate" and callable(value) and not isinstance(
                    value, (numbers.Real, np.ndarray)):
                args[name] = _base._per_key(keys, value, name, lambda x, _: x)
        self._settings = args   # the rank optimizers' other settings, as given

        by_dtype = {}
        for key, a in arrays:
            by_dtype.setdefault(a.dtype, []).append((key, a))
        self._groups = [_Group(dtype, [k for k, _ in items], [a for _, a in items], self._world,
                               self._rank, self._sharded)
                        for dtype, items in by_dtype.items()]
        self._arrays = dict(arrays)
        meta = [(k, a.shape, a.dtype.str, _order(a)) for k, a in arrays]
        return (cls.__name__, self._sharded, meta, self._settings_repr())

    def _resolve_decay(self, value):
        wd = _base._per_key(self._keys, value, "weight_decay", check.nonnegative)
        if self._mask is not None:
            wd = {k: (x if self._mask[k] else 0.0) for k, x in wd.items()}
        return wd

    def _settings_repr(self):
        lr = self._settings.get("learning_rate")
        if callable(lr) and not isinstance(lr, numbers.Real):
            state = _schedules.to_state(lr)
            lr = state if state is not None else f"<callable {getattr(lr, '__qualname__', lr)!r}>"
        other = {k: v for k, v in self._settings.items() if k != "learning_rate"}
        return repr((("learning_rate", lr), sorted(other.items(), key=lambda kv: kv[0]),
                     ("weight_decay", self._wd), ("max_grad_norm", self._max_norm),
                     ("skip_nonfinite", self._skip),
                     ("gradient_accumulation_steps", self._accumulate)))

    def _build(self, parameters):
        """Buffers, rank optimizers and the communication plan (every rank
        agreed on the layout and the settings)."""
        MPI, comm, w = self._MPI, self._comm, self._world
        for g in self._groups:
            g.flat = _aligned(g.dtype, g.total, _PARAMS)
            for i, key in enumerate(g.keys):
                g.view(g.flat, i)[...] = self._arrays[key]
            g.mpi_type = _datatype(MPI, g.dtype)
            if w > 1:
                comm.Bcast([g.flat, g.total, g.mpi_type], root=0)
            g.send = _aligned(g.dtype, g.total, _SEND)
            g.acc = _aligned(g.dtype, g.total, _SUM) if self._accumulate > 1 else None
            if w == 1:   # no communication: the kernel reads the send buffer
                g.recv = g.send.reshape(1, g.total)
            else:
                g.recv = _aligned(g.dtype, w * g.stride, _RECV).reshape(w, g.stride)
            g.sum = _aligned(g.dtype, g.stride)   # G, when it is computed first
        del self._arrays
        self._accumulated = 0
        self.last_grad_norm = None
        self._inners = [self._rank_optimizer(g) for g in self._groups]
        if not self._inners:   # no parameters: one optimizer over nothing keeps t
            self._inners = [self._make_inner({_EMPTY: np.zeros(0)}, {})]
        # the gradients' destinations, in the order _checked_grads returns them
        self._send_views = [g.view(g.send, i) for g in self._groups for i in range(len(g.keys))]
        self._acc_views = [g.view(g.acc, i) for g in self._groups for i in range(len(g.keys))] \
            if self._accumulate > 1 else None
        self._grad_views = {"d" + key: v for key, v in
                            zip([k for g in self._groups for k in g.keys], self._send_views)}
        self._status = np.zeros(4, np.int64)
        self._statuses = np.zeros((w, 4), np.int64)
        self._replan()
        for key in self._keys:
            g, i = self._where(key)
            parameters[key] = g.view(g.flat, i)

    def _where(self, key):
        for g in self._groups:
            if key in g.keys:
                return g, g.keys.index(key)
        raise KeyError(key)

    def _rank_optimizer(self, g):
        """The ordinary optimizer over this rank's part of group g: its pieces
        (1-D) when sharded, else the whole arrays; `g.grads`: the gradients the
        kernel reads (source 0 of the received buffer); `g.sums`: views of G."""
        params, g.grads, g.sums, g.mine = {}, {}, {}, []
        if self._sharded:
            for i, a, b in pieces(g.offsets, g.sizes, g.lo, g.hi):
                key, start = g.keys[i], g.offsets[i] + a
                params[key] = g.flat[start:start + b - a]
                g.grads["d" + key] = g.recv[0, start - g.lo:start - g.lo + b - a]
                g.sums["d" + key] = g.sum[start - g.lo:start - g.lo + b - a]
                g.mine.append((i, a, b))
            if self._rank == 0:   # zero-size arrays: rank 0's, as a single process has them
                for i, key in enumerate(g.keys):
                    if g.sizes[i] == 0:
                        params[key] = g.flat[g.offsets[i]:g.offsets[i]]
                        g.grads["d" + key] = g.recv[0, :0]
                        g.sums["d" + key] = g.sum[:0]
        else:
            for i, key in enumerate(g.keys):
                params[key] = g.view(g.flat, i)
                g.grads["d" + key] = g.view(g.recv[0], i)
                g.sums["d" + key] = g.view(g.sum, i)
                g.mine.append((i, 0, g.sizes[i]))
        if not params:   # keeps the rule's scalar state moving like the others'
            params[_EMPTY] = g.flat[:0]
            g.grads["d" + _EMPTY] = g.recv[0, :0]
            g.sums["d" + _EMPTY] = g.sum[:0]
        wd = {k: (self._wd.get(k, 0.0) if self._wd else 0.0) for k in params}
        inner = self._make_inner(params, wd)
        if inner._compiled:
            inner._configure_sources(self._world, g.stride, 1.0 / self._world)
        return inner

    def _make_inner(self, params, wd):
        settings = dict(self._settings)
        if self._cls.declaration.weight_decay is not None:
            settings["weight_decay"] = wd
        return self._cls(params, arena=False, **settings)

    def _sync_settings(self):
        """The settings as the rank optimizers have them (after a state dict
        restored some)."""
        inner = self._inners[0]
        self._settings["learning_rate"] = inner.learning_rate
        for name, h in self._cls.declaration.hyperparameters.items():
            if h.state is None:
                self._settings[name] = getattr(inner, name)
        for name in self._cls.declaration.options:
            self._settings[name] = inner.options[name]
        self._refresh()

    def _refresh(self):
        """After a setting changes: the digest the ranks compare at each step,
        and which step path applies."""
        self._digest = _digest(self._settings_repr())
        self._fused = (self._max_norm is None and not self._skip and elementwise(self._cls)
                       and all(inner._compiled for inner in self._inners))

    # --- the step ---------------------------------------------------------------------------

    def step(self, grads):
        """One update with the mean of every rank's gradients.

        Parameters
        ----------
        grads : dict of str to numpy.ndarray
            This rank's gradients, ``grads["d" + key]`` shaped like
            ``parameters[key]`` (another float dtype is converted).

        Returns
        -------
        bool
            True when the parameters were updated; False when skip_nonfinite
            skipped the step (on every rank) or when the call only accumulated
            (gradient_accumulation_steps > 1).

        Raises
        ------
        KeyError, TypeError, ValueError
            A rank's gradients are missing, misshapen or not floating-point, or
            the ranks' step counts or settings differ: every rank raises the
            same error, naming the rank, and nothing changes.
        """
        if self._inners[0]._blocked is not None:   # Schedule-Free's eval mode, on every rank
            raise RuntimeError(self._inners[0]._blocked)
        checked, error = _local(self._checked_grads, grads)
        communicate = self._accumulated + 1 >= self._accumulate
        if not communicate:   # an accumulating call: local only
            if error is not None:
                raise error
            self._pack(checked)
            return False
        self._check_status(error)
        self._pack(checked)
        self._exchange()
        if not self._update():
            return False
        self._gather()
        return True

    def _checked_grads(self, grads):
        check.check_dict("grads", grads)
        out = []
        for g in self._groups:
            for i, key in enumerate(g.keys):
                dkey = "d" + key
                a = check._lookup("grads", grads, dkey, key)
                label = f"grads[{dkey!r}]"
                check.parameter(label, a)
                if a.shape != g.shapes[i]:
                    raise ValueError(f"{label} has shape {a.shape} but parameters[{key!r}] has "
                                     f"shape {g.shapes[i]}")
                out.append(np.asarray(a))
        return out

    def _check_status(self, error):
        """The status exchange before the collectives of a step."""
        s = self._status
        s[0] = 1 if error is None else 0
        s[1] = self.t % 2**62
        s[2] = self._accumulated
        s[3] = self._digest
        if self._world == 1:
            if error is not None:
                _agree(self._comm, error)
            return
        self._comm.Allgather([s, self._MPI.INT64_T], [self._statuses, self._MPI.INT64_T])
        rows = self._statuses.tolist()
        if rows[0][0] == 1 and all(row == rows[0] for row in rows):
            return
        statuses = self._statuses
        if not statuses[:, 0].all():
            _agree(self._comm, error)
        bad = int(np.flatnonzero((statuses[:, 1:] != statuses[0, 1:]).any(axis=1))[0])
        what = ("step counts" if statuses[bad, 1] != statuses[0, 1] else
                "accumulated gradient counts" if statuses[bad, 2] != statuses[0, 2] else
                "settings")
        reprs = self._comm.allgather(self._settings_repr())
        detail = ""
        if what == "settings":
            detail = f": rank 0 has {reprs[0]}, rank {bad} has {reprs[bad]}"
        elif what == "step counts":
            detail = f": t = {statuses[0, 1]} on rank 0, {statuses[bad, 1]} on rank {bad}"
        raise ValueError(f"the ranks disagree on their {what}{detail}; every rank must build "
                         f"DataParallel alike and call step() the same number of times")

    def _pack(self, checked):
        """This call's gradients into the send buffer (or the accumulation)."""
        k = self._accumulate
        with np.errstate(all="ignore"):   # a value beyond the dtype's range becomes Inf
            if k == 1:
                for a, dest in zip(checked, self._send_views):
                    if a is not dest:   # gradients written into opt.grads are there already
                        np.copyto(dest, a, casting="unsafe")
            else:
                for a, dest in zip(checked, self._acc_views):
                    if self._accumulated:
                        np.add(dest, a.astype(dest.dtype, copy=False), out=dest)
                    else:
                        np.copyto(dest, a, casting="unsafe")
            self._accumulated += 1
            if self._accumulated == k:
                self._accumulated = 0
                if k > 1:
                    for g in self._groups:
                        np.multiply(g.acc, 1.0 / k, out=g.send)

    def _exchange(self):
        """Every rank's piece of this rank's slice (or every rank's whole
        gradient), laid out [source rank][slice]."""
        if self._world == 1:
            return
        comm, w = self._comm, self._world
        for g in self._groups:
            if self._sharded:
                comm.Alltoallv([g.send, (g.counts, g.cuts[:w]), g.mpi_type],
                               [g.recv, ([g.hi - g.lo] * w, [r * g.stride for r in range(w)]),
                                g.mpi_type])
            else:
                comm.Allgather([g.send, g.total, g.mpi_type], [g.recv, g.stride, g.mpi_type])

    def _update(self):
        """The update of this rank's elements; False when skipped."""
        fused = self._fused and self.t + 1 <= check.COMPILED_MAX_T
        if fused:
            for g, inner in zip(self._groups, self._inners):
                inner.step(g.grads)
            return True
        w = self._world
        with np.errstate(all="ignore"):
            for g in self._groups:   # G = ((g_0 + g_1) + ...) * (1/w): sum_sources in place
                n = g.stop - g.start
                np.copyto(g.sum[:n], g.recv[0, :n])
                for r in range(1, w):
                    np.add(g.sum[:n], g.recv[r, :n], out=g.sum[:n])
                np.multiply(g.sum[:n], 1.0 / w, out=g.sum[:n])
        if self._max_norm is not None or self._skip:
            norm, finite = self._global_norm()
            self.last_grad_norm = norm
            if self._skip and not finite:
                return False
            if self._max_norm is not None:
                coef = self._max_norm / (norm + _CLIP_EPS)
                if coef < 1.0:
                    self._scale_sums(coef)
        for g, inner in zip(self._groups, self._inners):
            if inner._compiled:
                inner._configure_sources(1, 0, 1.0)
            try:
                inner.step(g.sums)
            finally:
                if inner._compiled:
                    inner._configure_sources(w, g.stride, 1.0 / w)
        return True

    def _scale_sums(self, coef):
        """G times the clipping scale, in the dtype: the kernel's first
        operation (gi = g*scale, in two factors below the dtype's normal
        range), which the rank optimizers then take with a scale of 1."""
        with np.errstate(all="ignore"):
            for g in self._groups:
                s1, s2 = _fallback._split_scale(coef, g.dtype)
                n = g.stop - g.start
                np.multiply(g.sum[:n], s1, out=g.sum[:n])
                if s2 is not None:
                    np.multiply(g.sum[:n], s2, out=g.sum[:n])

    def _gather(self, always=False):
        """Every rank's updated slice into every rank's parameters."""
        if self._world == 1 or not (self._sharded or always):
            return
        for g in self._groups:
            self._comm.Allgatherv(self._MPI.IN_PLACE,
                                  [g.flat, (g.counts, g.cuts[:self._world]), g.mpi_type])

    # --- the global norm ----------------------------------------------------------------------

    def _partials(self, scale=1.0, groups=None):
        """This rank's message: per group (finite, largest |G|), then per
        group the partial sums of squares of its chunks of G, in order."""
        head, parts = [], []
        for j, g in enumerate(self._groups):
            views = [g.sum[g.offsets[i] + a - g.start:g.offsets[i] + b - g.start]
                     for i, a, b in (g.shares[self._rank] if self._sharded else g.mine)]
            if groups is not None and j not in groups:
                views = []
            finite = all(bool(np.isfinite(v).all()) for v in views)
            largest = max((float(np.max(np.abs(v))) for v in views if v.size), default=0.0)
            head += [1.0 if finite else 0.0, largest]
            sums = [_fallback._chunk_sums(v, scale) for v in views]
            parts.append(np.concatenate(sums) if sums else np.zeros(0))
        return np.concatenate([np.array(head)] + parts)

    def _gather_partials(self, mine, counts):
        if not self._sharded or self._world == 1:
            return [mine]
        out = np.empty(sum(counts))
        displs = np.concatenate([[0], np.cumsum(counts)[:-1]]).tolist()
        self._comm.Allgatherv([mine, self._MPI.DOUBLE], [out, (counts, displs), self._MPI.DOUBLE])
        return np.split(out, np.cumsum(counts)[:-1])

    def _split(self, message, r):
        """(heads, per-group partials) of rank r's message."""
        ng = len(self._groups)
        heads = message[:2 * ng].reshape(ng, 2)
        sizes = [_nchunks(g.shares[r] if self._sharded else g.mine) for g in self._groups]
        bounds = np.cumsum([2 * ng] + sizes)
        return heads, [message[bounds[j]:bounds[j + 1]] for j in range(ng)]

    def _global_norm(self):
        """(norm, finite) of G over every rank: fastoptim._fallback.norm of the
        single process, from the ranks' chunk sums added in rank order."""
        messages = self._gather_partials(self._partials(), self._norm_counts)
        split = [self._split(m, r if self._sharded else self._rank)
                 for r, m in enumerate(messages)]
        norms, finite_all, rescale = [], True, {}
        for j, g in enumerate(self._groups):
            finite = all(h[j, 0] == 1.0 for h, _ in split)
            sums = np.concatenate([p[j] for _, p in split])
            total = float(np.add.accumulate(sums)[-1]) if sums.size else 0.0
            finite_all = finite_all and finite
            norms.append(math.sqrt(total))
            if finite and g.dtype == np.float64 and (total == math.inf
                                                      or total < _fallback._NORM_TINY):
                largest = max(h[j, 1] for h, _ in split)
                if largest == 0.0:
                    norms[j] = 0.0
                else:
                    rescale[j] = max(math.frexp(largest)[1], -1020)
        for j, e in rescale.items():   # the rare path: every rank takes it together
            scale = math.ldexp(1.0, -e)
            mine = self._partials(scale, groups={j})
            counts = None
            if self._norm_counts is not None:
                counts = [2 * len(self._groups) + _nchunks(self._groups[j].shares[r])
                          for r in range(self._world)]
            messages = self._gather_partials(mine, counts)
            # each message: the heads, then group j's partial sums only
            sums = np.concatenate([m[2 * len(self._groups):] for m in messages])
            root = math.sqrt(float(np.add.accumulate(sums)[-1]) if sums.size else 0.0)
            try:
                norms[j] = math.ldexp(root, e)
            except OverflowError:
                norms[j] = math.inf
        total = 0.0
        for n in norms:
            total = float(np.hypot(total, n))
        return total, finite_all

    # --- attributes -------------------------------------------------------------------------

    @property
    def comm(self):
        """The communicator."""
        return self._comm

    @property
    def rank(self):
        """This process's rank in comm."""
        return self._rank

    @property
    def world_size(self):
        """The number of ranks."""
        return self._world

    @property
    def shard_state(self):
        """True: this rank keeps the state of its slice only (ZeRO stage 1)."""
        return self._sharded

    @property
    def optimizer_class(self):
        """The optimizer class each rank steps its slice with."""
        return self._cls

    @property
    def t(self):
        """Steps taken (the same on every rank)."""
        return self._inners[0].t

    @property
    def parameters(self):
        """The parameters by key (a new dict of this object's arrays, the same
        on every rank)."""
        out = {}
        for g in self._groups:
            for i, key in enumerate(g.keys):
                out[key] = g.view(g.flat, i)
        return {k: out[k] for k in self._keys}

    @property
    def grads(self):
        """Views of the send buffer, by gradient key: gradients written into
        them (``np.dot(..., out=opt.grads["dW1"])``) and passed to step() are
        not copied. Not available with gradient_accumulation_steps > 1."""
        if self._accumulate > 1:
            raise AttributeError("grads: with gradient accumulation the gradients are summed "
                                 "into the optimizer's own buffer; pass any arrays to step()")
        return {"d" + k: self._grad_views["d" + k] for k in self._keys}

    @property
    def state(self):
        """This rank's state by name, keyed "d" + key: its pieces (1-D, in the
        parameter's memory order) when sharded, else the whole arrays. See
        gather_state() for whole arrays on every rank."""
        out = {}
        for inner in self._inners:
            for name, d in inner.state.items():
                out.setdefault(name, {}).update({k: a for k, a in d.items()
                                                 if k != "d" + _EMPTY})
        return out

    @property
    def state_nbytes(self):
        """Bytes of optimizer state this rank keeps."""
        return sum(a.nbytes for d in self.state.values() for a in d.values())

    @property
    def slices(self):
        """{key: (a, b)}: the elements [a, b) of each parameter (memory order)
        whose state this rank keeps and whose update it computes."""
        out = {}
        for g in self._groups:
            for i, a, b in g.mine:
                out[g.keys[i]] = (a, b)
        return out

    @property
    def gradient_accumulation_steps(self):
        """Calls whose gradients each rank sums (scaled by 1/k) into one step."""
        return self._accumulate

    @property
    def learning_rate(self):
        """A float or a schedule, as the optimizer classes take it. May be
        changed between steps (on every rank alike)."""
        return self._inners[0].learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        for inner in self._inners:
            inner.learning_rate = value
        self._settings["learning_rate"] = value
        self._refresh()

    @property
    def max_grad_norm(self):
        """Clip by the global norm over every rank (None: no clipping)."""
        return self._max_norm

    @max_grad_norm.setter
    def max_grad_norm(self, value):
        self._max_norm = _base._max_grad_norm(value)
        self._replan()

    @property
    def skip_nonfinite(self):
        """Skip the step on every rank when the mean gradient has an Inf or NaN."""
        return self._skip

    @skip_nonfinite.setter
    def skip_nonfinite(self, value):
        self._skip = check.flag(value, "skip_nonfinite")
        self._replan()

    def _replan(self):
        w = self._world
        self._norm_counts = None
        if (self._max_norm is not None or self._skip) and self._sharded:
            self._norm_counts = [2 * len(self._groups) + sum(_nchunks(g.shares[r])
                                                             for g in self._groups)
                                 for r in range(w)]
        self._refresh()

    @property
    def weight_decay(self):
        """One float when every key has the same decay, else a dict by key (the
        mask applied); set as the optimizer classes take it."""
        if self._wd is None:
            raise AttributeError(f"{self._cls.__name__} has no weight decay")
        values = set(self._wd.values())
        return values.pop() if len(values) == 1 else dict(self._wd)

    @weight_decay.setter
    def weight_decay(self, value):
        if self._wd is None:
            raise AttributeError(f"{self._cls.__name__} has no weight decay")
        wd = self._resolve_decay(value)
        for inner in self._inners:
            inner.weight_decay = {k: wd.get(k, 0.0) for k in inner._keys}
        self._wd = wd
        self._refresh()

    def __getattr__(self, name):
        # the class's hyperparameters and options (beta1, amsgrad, ...)
        d = self.__dict__.get("_cls")
        if d is not None and (name in d.declaration.hyperparameters
                              or name in d.declaration.options
                              or name in d._rule.scalars):
            return getattr(self.__dict__["_inners"][0], name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __setattr__(self, name, value):
        d = self.__dict__.get("_cls")
        if d is not None and "_inners" in self.__dict__ and (
                name in d.declaration.hyperparameters or name in d.declaration.options):
            for inner in self._inners:
                setattr(inner, name, value)
            self._settings[name] = getattr(self._inners[0], name)
            self._refresh()
            return
        object.__setattr__(self, name, value)

    def __reduce__(self):
        raise TypeError("a DataParallel optimizer holds a communicator and cannot be pickled; "
                        "save it with fastoptim.distributed.save_checkpoint")

    def __repr__(self):
        return (f"DataParallel({self._cls.__name__}, rank={self._rank}, "
                f"world_size={self._world}, shard_state={self._sharded}, t={self.t})")

    # --- Schedule-Free's two points ----------------------------------------------------------

    @property
    def eval_mode(self):
        """Schedule-Free: True after eval() (the parameters hold the average x)."""
        return bool(getattr(self._inners[0], "eval_mode", False))

    def eval(self):
        """Schedule-Free: switch the parameters on every rank to the average x
        where the loss is evaluated (collective), as ScheduleFreeAdamW.eval();
        step() refuses until train().

        Raises
        ------
        AttributeError
            The optimizer class has a single point (not Schedule-Free).
        """
        self._switch("eval")

    def train(self):
        """Schedule-Free: switch the parameters back to y where the gradients
        are taken (collective), as ScheduleFreeAdamW.train()."""
        self._switch("train")

    def _switch(self, mode):
        if not hasattr(self._cls, "eval_mode"):
            raise AttributeError(f"{self._cls.__name__} has no {mode}(): only the "
                                 f"Schedule-Free optimizers keep two points")
        for inner in self._inners:
            getattr(inner, mode)()
        self._gather(always=True)

    # --- whole arrays on every rank -------------------------------------------------------------

    def gather_state(self):
        """The whole state on every rank (collective).

        Returns
        -------
        dict
            {name: {"d" + key: array shaped like the parameter}}, as an
            ordinary optimizer's ``state`` (new arrays).
        """
        names = list(self._inners[0].state)
        if not self._sharded:   # every rank has the whole state (of any shape)
            whole = {name: {} for name in names}
            for inner in self._inners:
                for name in names:
                    whole[name].update(inner.state[name])
            return {name: {"d" + k: whole[name]["d" + k].copy(order="K") for k in self._keys
                           if "d" + k in whole[name]} for name in names}
        out = {name: {} for name in names}
        for j, g in enumerate(self._groups):
            for name in names:
                flat = _aligned(g.dtype, g.total)
                mine = self._inners[j].state[name]
                for i, a, b in g.mine:
                    start = g.offsets[i]
                    flat[start + a:start + b] = np.ravel(mine["d" + g.keys[i]], order="K")
                if self._sharded and self._world > 1:
                    self._comm.Allgatherv(self._MPI.IN_PLACE,
                                          [flat, (g.counts, g.cuts[:self._world]), g.mpi_type])
                for i, key in enumerate(g.keys):
                    out[name]["d" + key] = g.view(flat, i).copy(order="K")
        return {name: {"d" + k: out[name]["d" + k] for k in self._keys} for name in names}

    def gather_ema(self):
        """The parameters' moving average by key, whole, on every rank
        (collective); None without ema_decay."""
        if self._inners[0].ema is None:
            return None
        return {k: a for k, a in
                ((dk[1:], v) for dk, v in self.gather_state()["ema"].items())}


def _disagreement(fingerprints):
    """A ValueError naming the first difference between rank 0's fingerprint
    and another rank's, or None."""
    first = fingerprints[0]
    for r, fp in enumerate(fingerprints[1:], 1):
        if fp == first:
            continue
        cls0, sharded0, meta0, settings0 = first
        cls, sharded, meta, settings = fp
        if cls != cls0:
            return ValueError(f"the ranks disagree on the optimizer class: rank 0 has {cls0}, "
                              f"rank {r} has {cls}")
        if sharded != sharded0:
            return ValueError(f"the ranks disagree on shard_state: rank 0 has {sharded0}, "
                              f"rank {r} has {sharded}")
        keys0, keys = [m[0] for m in meta0], [m[0] for m in meta]
        if keys != keys0:
            missing = [k for k in keys0 if k not in keys]
            extra = [k for k in keys if k not in keys0]
            if missing:
                return ValueError(f"the ranks disagree on the parameters: rank {r} has no "
                                  f"parameter {missing[0]!r} (rank 0 has it)")
            if extra:
                return ValueError(f"the ranks disagree on the parameters: rank {r} has "
                                  f"parameter {extra[0]!r}, which rank 0 lacks")
            return ValueError(f"the ranks disagree on the order of the parameters: rank 0 has "
                              f"{keys0}, rank {r} has {keys}")
        for (k, shape0, dtype0, order0), (_, shape, dtype, order) in zip(meta0, meta):
            if shape != shape0:
                return ValueError(f"the ranks disagree on parameters[{k!r}]: shape {shape0} on "
                                  f"rank 0, {shape} on rank {r}")
            if dtype != dtype0:
                return ValueError(f"the ranks disagree on parameters[{k!r}]: dtype "
                                  f"{np.dtype(dtype0)} on rank 0, {np.dtype(dtype)} on rank {r}")
            if order != order0:
                return ValueError(f"the ranks disagree on parameters[{k!r}]: memory order "
                                  f"{order0} on rank 0, {order} on rank {r}")
        return ValueError(f"the ranks disagree on the settings: rank 0 has {settings0}, "
                          f"rank {r} has {settings}")
    return None


# --- checkpoints ----------------------------------------------------------------------------

FORMAT = 1
_MANIFEST = "manifest.json"
_MARK = "fastoptim/distributed"
_MAX_MANIFEST = 64 << 20   # bytes


def _check_optimizer(optimizer):
    if not isinstance(optimizer, DataParallel):
        raise TypeError(f"optimizer must be a fastoptim.distributed.DataParallel, got "
                        f"{type(optimizer).__name__}")


def _rank_file(rank, world):
    return f"rank-{rank:05d}-of-{world:05d}.npz"


def save_checkpoint(directory, parameters, optimizer):
    """Write the parameters and `optimizer`'s state to `directory`: one file
    per rank and a manifest, atomically as a whole (collective).

    Each rank writes its slice of every parameter and of the optimizer state
    (with shard_state=False, its share of the whole state) into
    ``<directory>/gen-<hex>/rank-<r>-of-<w>.npz``; when every rank has
    written and flushed its file, rank 0 replaces ``<directory>/manifest.json``
    (the commit: a rename) and removes the older generations. A crash before
    that rename leaves the previous checkpoint whole and loadable. The
    directory must be visible to every rank (a shared file system), and one
    job at a time may save into it.

    Parameters
    ----------
    directory : str or os.PathLike
        Created if missing.
    parameters : dict of str to numpy.ndarray
        The optimizer's parameters (the dict it was built with).
    optimizer : DataParallel

    Raises
    ------
    TypeError, KeyError, ValueError
        `optimizer` is not a DataParallel, or `parameters` do not match its
        keys, shapes and dtypes.
    OSError
        A rank could not write (every rank raises it, naming the rank).
    """
    _check_optimizer(optimizer)
    comm, rank, world = optimizer.comm, optimizer.rank, optimizer.world_size
    directory = os.fspath(directory)
    payload, error = _local(_checkpoint_payload, optimizer, parameters)
    generation = None
    if rank == 0 and error is None:
        try:
            os.makedirs(directory, exist_ok=True)
            generation = "gen-" + secrets.token_hex(8)
            os.mkdir(os.path.join(directory, generation))
        except OSError as exc:
            error = exc
    _agree(comm, error)
    generation = comm.bcast(generation, root=0)
    folder = os.path.join(directory, generation)
    _, error = _local(_write_rank_file, os.path.join(folder, _rank_file(rank, world)), payload)
    try:
        _agree(comm, error)
    except BaseException:
        if rank == 0:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    error = None
    if rank == 0:
        try:
            _fsync_directory(folder)
            _write_manifest(directory, _manifest(optimizer, generation))
            _remove_old_generations(directory, generation)
        except OSError as exc:
            error = exc
    _agree(comm, error)


def _write_rank_file(path, payload):
    with open(path, "wb") as f:
        np.savez(f, **payload)
        f.flush()
        os.fsync(f.fileno())


def _write_manifest(directory, manifest):
    tmp = os.path.join(directory, f".{_MANIFEST}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(directory, _MANIFEST))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def _remove_old_generations(directory, keep):
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if name.startswith("gen-") and name != keep and os.path.isdir(path) \
                and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif name.startswith(f".{_MANIFEST}.") and name.endswith(".tmp"):
            try:
                os.unlink(path)
            except OSError:
                pass


def load_checkpoint(directory, parameters, optimizer):
    """Read a checkpoint written by save_checkpoint, at any world size, into
    `parameters` and `optimizer`, in place (collective).

    Each rank reads its new slice of the parameters and of the state from the
    files of the ranks that saved those elements, and the rule's scalars (t,
    settings, e.g. NAdam's mu_product) from rank 0's file; everything is
    checked on every rank before anything changes; then the parameter slices
    are all-gathered. A run resumed at any world size continues bitwise as the
    uninterrupted run would (the mean gradient is the same sum, see
    DataParallel). A checkpoint saved in the middle of a gradient-accumulation
    cycle resumes only at its own world size.

    Parameters
    ----------
    directory : str or os.PathLike
        A directory written by save_checkpoint.
    parameters : dict of str to numpy.ndarray
        The optimizer's parameters (the dict it was built with).
    optimizer : DataParallel
        Of the saved optimizer's class, over parameters of the saved keys,
        shapes and dtypes.

    Raises
    ------
    FileNotFoundError
        No manifest in `directory`, or a file it names is missing.
    KeyError, TypeError, ValueError
        A missing, extra or malformed entry, or one that does not match the
        parameters or the optimizer (named). Every rank raises the same error
        and nothing changes.
    """
    _check_optimizer(optimizer)
    comm = optimizer.comm
    directory = os.fspath(directory)
    apply, error = _local(_checkpoint_reader, optimizer, directory, parameters)
    _agree(comm, error)
    apply()


class _Files:
    """The rank files of one checkpoint, each opened once, entries read within
    the bounds their destinations need (fastoptim.checkpoint's reader)."""

    def __init__(self, directory, manifest):
        self.directory = directory
        self.manifest = manifest
        self.open = {}

    def archive(self, q):
        if q not in self.open:
            path = os.path.join(self.directory, self.manifest["generation"],
                                self.manifest["files"][q])
            archive = _Archive(path)
            if _MARK not in archive.members:
                archive.close()
                raise ValueError(f"{path}: not a fastoptim.distributed rank file")
            self.open[q] = archive
        return self.open[q]

    def array(self, q, entry, count, dtype):
        archive = self.archive(q)
        if entry not in archive.members:
            raise KeyError(f"{archive.path} has no entry {entry!r}")
        a = archive.read(entry, budget=count * dtype.itemsize)
        if a.shape != (count,) or a.dtype != dtype:
            raise ValueError(f"{archive.path}: entry {entry!r} has shape {a.shape} and dtype "
                             f"{a.dtype}; expected ({count},) of {dtype}")
        return a

    def scalars(self, q, skip):
        archive = self.archive(q)
        prefix = "optimizer/"
        return {k[len(prefix):]: archive.read(k, scalar=True) for k in archive.members
                if k.startswith(prefix) and k[len(prefix):] not in skip}

    def close(self):
        for archive in self.open.values():
            archive.close()


def _read_manifest(directory):
    path = os.path.join(directory, _MANIFEST)
    with open(path, "rb") as f:
        text = f.read(_MAX_MANIFEST + 1)
    if len(text) > _MAX_MANIFEST:
        raise ValueError(f"{path}: larger than {_MAX_MANIFEST} bytes")
    try:
        m = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a fastoptim.distributed manifest ({exc})") from None
    fields = {"format": str, "version": int, "generation": str, "world_size": int,
              "optimizer": str, "parameters": list, "shares": dict, "files": list,
              "gradient_accumulation_steps": int, "accumulated": int}
    if not isinstance(m, dict) or m.get("format") != "fastoptim.distributed":
        raise ValueError(f"{path}: not a fastoptim.distributed manifest")
    for name, kind in fields.items():
        if not isinstance(m.get(name), kind):
            raise ValueError(f"{path}: {name!r} missing or not a {kind.__name__}")
    if m["version"] != FORMAT:
        raise ValueError(f"{path}: format version {m['version']}; this fastoptim reads "
                         f"version {FORMAT}")
    w = m["world_size"]
    if w < 1 or len(m["files"]) != w or not all(
            isinstance(f, str) and f == _rank_file(q, w) for q, f in enumerate(m["files"])):
        raise ValueError(f"{path}: the files do not match world_size {w}")
    if not m["generation"].startswith("gen-") or os.sep in m["generation"] or \
            "/" in m["generation"] or m["generation"] in (".", ".."):
        raise ValueError(f"{path}: bad generation {m['generation']!r}")
    for entry in m["parameters"]:
        if not (isinstance(entry, list) and len(entry) == 4 and isinstance(entry[0], str)
                and isinstance(entry[1], list) and all(type(d) is int and d >= 0
                                                       for d in entry[1])
                and isinstance(entry[2], str) and entry[3] in ("C", "F")):
            raise ValueError(f"{path}: bad parameter entry {entry!r}")
        shares = m["shares"].get(entry[0])
        n = math.prod(entry[1])
        if not (isinstance(shares, list) and len(shares) == w and all(
                isinstance(s, list) and len(s) == 2 and all(type(x) is int for x in s)
                and 0 <= s[0] <= s[1] <= n for s in shares)):
            raise ValueError(f"{path}: bad shares of parameter {entry[0]!r}")
    return m


def _per_element(opt, state, g, i):
    """Whether a state array has an element per parameter element: saved by
    shares. Sharded state always has (elementwise steps only); whole state has
    when it is shaped like key i of group g. Others (Adafactor's factored
    statistics) are whole on every rank."""
    return opt._sharded or (state.shape == g.shapes[i] and state.dtype == g.dtype)


def _checkpoint_payload(opt, parameters):
    """This rank's file: its share of the parameters and of the state, and the
    scalar state."""
    check.check_dict("parameters", parameters)
    payload = {_MARK: np.asarray(FORMAT)}
    for g in opt._groups:
        for i, a, b in g.shares[opt._rank]:
            key = g.keys[i]
            if key not in parameters:
                raise KeyError(f"parameters has no key {key!r} (the optimizer has it)")
            p = parameters[key]
            if not isinstance(p, np.ndarray) or p.shape != g.shapes[i] or p.dtype != g.dtype:
                raise ValueError(f"parameters[{key!r}] is not the optimizer's: expected shape "
                                 f"{g.shapes[i]} and dtype {g.dtype}")
            payload["parameters/" + key] = np.ravel(p, order=g.orders[i])[a:b]
    extra = [k for k in parameters if k not in opt._keys]
    if extra:
        raise KeyError(f"parameters has key {extra[0]!r}, which the optimizer lacks")
    for name, value in _scalar_state(opt).items():
        payload["optimizer/" + name] = np.asarray(value)
    for j, g in enumerate(opt._groups):
        state = opt._inners[j].state
        for name, d in state.items():
            for i, a, b in g.shares[opt._rank]:
                dkey = "d" + g.keys[i]
                if dkey not in d or not _per_element(opt, d[dkey], g, i):
                    continue
                mine = np.ravel(d[dkey], order="K")
                if not opt._sharded:
                    mine = mine[a:b]
                payload[f"optimizer/{name}/{dkey}"] = mine
            if opt._rank == 0:   # whole on every rank (shard_state=False): rank 0 saves it
                for i, key in enumerate(g.keys):
                    dkey = "d" + key
                    if dkey in d and not _per_element(opt, d[dkey], g, i):
                        payload[f"optimizer/{name}/{dkey}"] = d[dkey]
        if opt._accumulated:
            for i, key in enumerate(g.keys):
                payload[f"accumulation/d{key}"] = g.view(g.acc, i)
    return payload


def _scalar_state(opt):
    """The state dict's scalars, as one optimizer over every key has them."""
    inner = opt._inners[0]
    items = {k: v for k, v in inner.state_dict(copy=False).items()
             if not isinstance(v, np.ndarray) and k != "weight_decay"
             and not k.startswith("weight_decay/")}
    if opt._wd is not None and any(opt._wd.values()):
        wd = opt.weight_decay
        if isinstance(wd, dict):
            items.update({f"weight_decay/{k}": x for k, x in wd.items()})
        else:
            items["weight_decay"] = wd
    if opt._accumulate > 1:
        items["accumulated"] = opt._accumulated
    return items


def _manifest(opt, generation):
    shares = {}
    for g in opt._groups:
        for i, key in enumerate(g.keys):
            row = []
            for r in range(opt._world):
                found = [(a, b) for j, a, b in g.shares[r] if j == i]
                # an empty share: [n, n] after, [0, 0] before the array's elements
                a, b = found[0] if found else ((0, 0) if g.cuts[r] <= g.offsets[i]
                                              else (g.sizes[i], g.sizes[i]))
                row.append([a, b])
            shares[key] = row
    params = []
    for key in opt._keys:
        g, i = opt._where(key)
        params.append([key, list(g.shapes[i]), g.dtype.str, g.orders[i]])
    return {"format": "fastoptim.distributed", "version": FORMAT, "generation": generation,
            "world_size": opt._world, "optimizer": opt._cls.__name__,
            "shard_state": opt._sharded, "t": opt.t,
            "gradient_accumulation_steps": opt._accumulate, "accumulated": opt._accumulated,
            "parameters": params, "shares": shares,
            "files": [_rank_file(r, opt._world) for r in range(opt._world)]}


def _checkpoint_reader(opt, directory, parameters):
    """Read and check everything this rank needs; returns the function that
    applies it (after every rank has succeeded)."""
    m = _read_manifest(directory)
    label = os.path.join(directory, _MANIFEST)
    if m["optimizer"] != opt._cls.__name__:
        raise ValueError(f"{label} is for {m['optimizer']!r}, not {opt._cls.__name__!r}")
    saved = {e[0]: e for e in m["parameters"]}
    for key in opt._keys:
        if key not in saved:
            raise KeyError(f"{label} has no parameter {key!r}")
    extra = sorted(set(saved) - set(opt._keys))
    if extra:
        raise KeyError(f"{label} has parameters that the optimizer lacks: "
                       f"{', '.join(map(repr, extra))}")
    check.check_dict("parameters", parameters)
    if sorted(parameters) != sorted(opt._keys):
        raise KeyError("parameters must have exactly the optimizer's keys")
    for key in opt._keys:
        g, i = opt._where(key)
        _, shape, dtype, _ = saved[key]
        if tuple(shape) != g.shapes[i]:
            raise ValueError(f"{label}: parameter {key!r} has shape {tuple(shape)} but "
                             f"parameters[{key!r}] has shape {g.shapes[i]}")
        if np.dtype(dtype) != g.dtype:
            raise TypeError(f"{label}: parameter {key!r} has dtype {np.dtype(dtype)} but "
                            f"parameters[{key!r}] has dtype {g.dtype}")
    if m["gradient_accumulation_steps"] != opt._accumulate and m["accumulated"]:
        raise ValueError(f"{label} was saved after {m['accumulated']} of "
                         f"{m['gradient_accumulation_steps']} accumulated calls; this optimizer "
                         f"accumulates {opt._accumulate}")
    if m["accumulated"] and m["world_size"] != opt._world:
        raise ValueError(f"{label} was saved in the middle of a gradient-accumulation cycle "
                         f"({m['accumulated']} of {m['gradient_accumulation_steps']} calls) at "
                         f"world size {m['world_size']}; it resumes only at that world size, "
                         f"not {opt._world}")
    files = _Files(directory, m)
    try:
        return _read_shares(opt, files, m, saved)
    finally:
        files.close()


def _elements(files, m, saved, entry, key, a, b, dtype, order):
    """Elements [a, b) of `key` in memory order `order`, from the ranks'
    files (entry: "parameters/<key>" or "optimizer/<state>/d<key>")."""
    _, shape, _, saved_order = saved[key]
    shares = m["shares"][key]
    if saved_order != order:   # another layout: the whole array, then this order's range
        n = math.prod(shape)
        whole = np.empty(n, dtype)
        for q, (qa, qb) in enumerate(shares):
            if qb > qa:
                whole[qa:qb] = files.array(q, entry, qb - qa, dtype)
        return np.ravel(whole.reshape(shape, order=saved_order), order=order)[a:b]
    out = np.empty(b - a, dtype)
    done = 0
    for q, (qa, qb) in enumerate(shares):
        lo, hi = max(a, qa), min(b, qb)
        if hi > lo:
            out[lo - a:hi - a] = files.array(q, entry, qb - qa, dtype)[lo - qa:hi - qa]
            done += hi - lo
    if done != b - a:
        raise ValueError(f"{files.directory}: the saved shares of {key!r} do not cover "
                         f"elements {a}..{b}")
    return out


def _read_shares(opt, files, m, saved):
    rank = opt._rank
    # the parameters: this rank's share (the cut), all-gathered after
    param_copies = []
    for g in opt._groups:
        for i, a, b in g.shares[rank]:
            key = g.keys[i]
            src = _elements(files, m, saved, "parameters/" + key, key, a, b, g.dtype, g.orders[i])
            param_copies.append((g.flat[g.offsets[i] + a:g.offsets[i] + b], src))
    # the scalars, from rank 0's file (every rank's are the same)
    array_names = {f"{name}/d{key}" for name in opt._inners[0].state for key in saved}
    scalars = files.scalars(0, array_names)
    accumulated = 0
    if "accumulated" in scalars:
        accumulated = check.integer(_base._scalar(scalars.pop("accumulated")),
                                    "accumulated", minimum=0)
    if opt._accumulate == 1:
        accumulated = 0
    if opt._wd is not None:
        if "weight_decay" in scalars:
            wd = _base._scalar(scalars.pop("weight_decay"))
        elif any(f"weight_decay/{k}" in scalars for k in opt._keys):
            wd = {k: _base._scalar(scalars.pop(f"weight_decay/{k}"))
                  if f"weight_decay/{k}" in scalars else None for k in opt._keys}
        else:
            wd = 0.0
        wd = _base._per_key(opt._keys, wd, "the checkpoint's weight_decay", check.nonnegative)
    applies = []
    for j, g in enumerate(opt._groups):
        inner = opt._inners[j]
        sd = dict(scalars)
        if opt._wd is not None:
            for k in inner._keys:
                sd[f"weight_decay/{k}"] = wd.get(k, 0.0)
        for name, d in inner.state.items():
            for dkey, dest in d.items():
                key = dkey[1:]
                if key == _EMPTY or dest.size == 0:
                    sd[f"{name}/{dkey}"] = np.zeros(dest.shape, dest.dtype)
                    continue
                i = g.keys.index(key)
                if not _per_element(opt, dest, g, i):   # saved whole, by rank 0
                    entry = f"optimizer/{name}/{dkey}"
                    archive = files.archive(0)
                    if entry not in archive.members:
                        raise KeyError(f"{archive.path} has no entry {entry!r}")
                    sd[f"{name}/{dkey}"] = archive.read(entry, budget=dest.nbytes)
                    continue
                a, b = (0, g.sizes[i])
                for i2, a2, b2 in g.mine:
                    if i2 == i:
                        a, b = a2, b2
                flat = _elements(files, m, saved, f"optimizer/{name}/d{key}", key, a, b,
                                 g.dtype, g.orders[i])
                sd[f"{name}/{dkey}"] = flat.reshape(dest.shape, order=_order(dest))
        try:
            applies.append(inner.check_state_dict(sd))
        except (KeyError, TypeError, ValueError) as exc:
            raise type(exc)(f"{files.directory}: {_message(exc)}") from None
    acc_copies = []
    if accumulated:
        for g in opt._groups:
            for i, key in enumerate(g.keys):
                entry = f"accumulation/d{key}"
                archive = files.archive(rank)
                if entry not in archive.members:
                    raise KeyError(f"{archive.path} has no entry {entry!r}")
                a = archive.read(entry, budget=g.sizes[i] * g.dtype.itemsize)
                if a.shape != g.shapes[i] or a.dtype != g.dtype:
                    raise ValueError(f"{archive.path}: entry {entry!r} has shape {a.shape} and "
                                     f"dtype {a.dtype}; expected {g.shapes[i]} of {g.dtype}")
                acc_copies.append((g.view(g.acc, i), a))

    def apply():
        for dest, src in param_copies:
            np.copyto(dest, src)
        for fn in applies:
            fn()
        for dest, src in acc_copies:
            np.copyto(dest, src)
        opt._accumulated = accumulated
        if opt._wd is not None:
            opt._wd = wd
        opt._sync_settings()
        opt._gather(always=True)

    return apply

