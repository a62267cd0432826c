"""Argument checks shared by every backend.

Everything is checked before anything is written: a bad input raises an error
that names the key or argument, and no array changes.
"""
import bisect
import math
import numbers
import operator
import os
import sys
import warnings

import numpy as np

try:
    from numpy.lib.array_utils import byte_bounds
except ImportError:  # NumPy < 2.0
    from numpy import byte_bounds


def learning_rate(value, name="learning_rate"):
    return nonnegative(value, name)


def beta(value, name):
    x = _real(value, name)
    if not 0.0 <= x < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return x


def epsilon(value, name="epsilon"):
    x = _real(value, name)
    if not x >= 0.0:  # also rejects NaN
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return x


def step(value, name="t"):
    """A positive integer (not bool): Adam's step count, a batch size."""
    return integer(value, name, minimum=1)


def integer(value, name, minimum):
    """An integer (not bool) >= minimum."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        n = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if n < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {n}")
    return n


def _real(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:  # an int beyond float's range: report it as out of range
        return math.inf if value > 0 else -math.inf


def check_dict(name, d):
    if not isinstance(d, dict):
        raise TypeError(f"{name} must be a dict, got {type(d).__name__}")


def is_bfloat16(dtype):
    """ml_dtypes' bfloat16 (NumPy kind "V"), recognised without importing ml_dtypes."""
    return dtype.name == "bfloat16" and dtype.itemsize == 2


def is_16bit(dtype):
    """float16 or bfloat16: arithmetic in float32, state float32 by default."""
    return dtype == np.float16 or is_bfloat16(dtype)


def state_dtype(dtype):
    """The dtype of the state of a parameter of this dtype (the dict API's, and
    the objects' default): float32 for 16-bit parameters, else their own."""
    return np.dtype(np.float32) if is_16bit(dtype) else dtype


def parameter(label, a):
    """A parameter (or any array to be updated): a floating ndarray (bfloat16
    included)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{label} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype.kind != "f" and not is_bfloat16(a.dtype):
        raise TypeError(
            f"{label} has dtype {a.dtype}; fastoptim updates real floating-point arrays only"
        )


def gradient_as(g, p):
    """A gradient as the update reads it: in p's dtype, except that a 16-bit
    parameter takes its own dtype or float32 as they are (any other dtype is
    converted to float32); bfloat16 gradients are widened exactly first."""
    if is_bfloat16(g.dtype) and g.dtype != p.dtype:
        g = (g.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    with np.errstate(all="ignore"):  # a value beyond the dtype's range becomes Inf
        if is_16bit(p.dtype):
            return g if g.dtype in (p.dtype, np.float32) else g.astype(np.float32)
        return g.astype(p.dtype, copy=False)


def gather(parameters, grads, states=()):
    """Check a whole call and return its arrays: a list of (p, g, [state...]).

    `states` is a sequence of (name, dict) pairs, e.g. (("v", v), ("s", s)).
    Every parameter key k needs grads["d" + k] and state["d" + k], of the
    parameter's shape; state arrays also share its dtype (float32 for a 16-bit
    parameter). Parameters and state are written in place, so they must be
    writeable and must not share memory with each other; a gradient that shares
    memory with them is copied first.
    """
    check_dict("parameters", parameters)
    check_dict("grads", grads)
    for name, d in states:
        check_dict(name, d)

    entries = []
    labelled = []  # (label, array, written) for the overlap check
    for key, p in parameters.items():
        if not isinstance(key, str):
            raise TypeError(f"parameter keys must be str, got {key!r}")
        label = f"parameters[{key!r}]"
        parameter(label, p)
        _writable(label, p)
        dkey = "d" + key
        g = _lookup("grads", grads, dkey, key)
        glabel = f"grads[{dkey!r}]"
        parameter(glabel, g)
        _same_shape(glabel, g, label, p)
        labelled += [(label, p, True), (glabel, g, False)]
        state = []
        for name, d in states:
            a = _lookup(name, d, dkey, key)
            slabel = f"{name}[{dkey!r}]"
            parameter(slabel, a)
            _same_shape(slabel, a, label, p)
            if a.dtype != state_dtype(p.dtype):
                raise TypeError(
                    f"{slabel} has dtype {a.dtype} but {label} has dtype {p.dtype}; "
                    + ("the state of a 16-bit parameter is float32 (initialize_* make it)"
                       if is_16bit(p.dtype) else "state must have the parameter's dtype")
                )
            _writable(slabel, a)
            labelled.append((slabel, a, True))
            state.append(a)
        entries.append([p, g, state])

    shared_grads = _overlaps(labelled)
    for entry in entries:
        g = entry[1]
        if id(g) in shared_grads:
            g = g.copy()
        # Subclasses (np.matrix, masked arrays) are updated as plain arrays, as
        # the C kernels do: elementwise, every element.
        entry[0] = np.asarray(entry[0])
        entry[1] = gradient_as(np.asarray(g), entry[0])
        entry[2] = [np.asarray(a) for a in entry[2]]
    return entries


def _lookup(name, d, dkey, key):
    try:
        return d[dkey]
    except KeyError:
        raise KeyError(f"{name} has no key {dkey!r} (needed for parameters[{key!r}])") from None


def _same_shape(label, a, plabel, p):
    if a.shape != p.shape:
        raise ValueError(f"{label} has shape {a.shape} but {plabel} has shape {p.shape}")


def _writable(label, a):
    if not a.flags.writeable:
        raise ValueError(f"{label} is read-only; fastoptim updates arrays in place")
    if _internal_overlap(a):
        raise ValueError(
            f"{label} has elements that share memory (a zero or overlapping stride, "
            "e.g. from broadcast_to); it cannot be updated in place"
        )


def _internal_overlap(a):
    """True if two elements of `a` may share memory (a conservative test:
    each stride must step over everything the smaller strides span)."""
    if a.size == 0 or a.flags.c_contiguous or a.flags.f_contiguous:
        return False
    span = a.itemsize
    for stride, n in sorted((abs(s), n) for s, n in zip(a.strides, a.shape) if n > 1):
        if stride < span:
            return True
        span += stride * (n - 1)
    return False


def _overlaps(labelled):
    """Raise if a written array shares memory with another written array;
    return the ids of gradients that share memory with a written array.

    Byte ranges are sorted and swept, so only arrays whose ranges intersect are
    compared exactly (np.shares_memory)."""
    if all(a.flags.owndata for _, a, _ in labelled):
        # Arrays that own their buffers (the usual case) can share memory only by
        # being the same array: a unit range per object finds exactly those pairs.
        def bounds(a):
            return id(a), id(a) + 1
    else:
        bounds = byte_bounds
    spans = []
    for label, a, written in labelled:
        if a.size:
            lo, hi = bounds(a)
            spans.append((lo, hi, label, a, written))
    spans.sort(key=lambda s: s[0])
    shared_grads = set()
    active = []
    for lo, hi, label, a, written in spans:
        active = [s for s in active if s[1] > lo]
        for _, _, olabel, other, owritten in active:
            if not (written or owritten) or not _shares_memory(a, other):
                continue
            if written and owritten:
                raise ValueError(
                    f"{olabel} and {label} share memory; parameters and state arrays must "
                    "be distinct arrays"
                )
            shared_grads.add(id(other if written else a))
        active.append((lo, hi, label, a, written))
    return shared_grads


def byte_ranges(items):
    """The byte ranges of the non-empty arrays of (array, tag) pairs, sorted by
    start: (starts, ends, tags)."""
    spans = sorted((byte_bounds(a) + (tag,) for a, tag in items if a.size),
                   key=lambda s: s[0])
    return [s[0] for s in spans], [s[1] for s in spans], [s[2] for s in spans]


def ranges_meeting(ranges, lo, hi):
    """The indices, last first, of the byte ranges (byte_ranges' sorted and
    disjoint ones, so their ends are sorted too) that meet [lo, hi)."""
    starts, ends = ranges[0], ranges[1]
    j = bisect.bisect_right(starts, hi - 1) - 1
    while j >= 0 and ends[j] > lo:
        yield j
        j -= 1


def _shares_memory(a, b):
    try:
        return np.shares_memory(a, b, max_work=100_000)
    except np.exceptions.TooHardError:  # undecided within max_work: assume shared
        return True


# --- the family's hyperparameters ----------------------------------------------------

def nonnegative(value, name):
    """A finite real >= 0 (weight decay, lr_decay, momentum_decay, ...)."""
    x = _real(value, name)
    if not (math.isfinite(x) and x >= 0.0):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return x


def fraction(value, name):
    """A real in [0, 1] (dampening)."""
    x = _real(value, name)
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return x


def finite(value, name):
    """Any finite real (a gradient scale)."""
    x = _real(value, name)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return x


def flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def weight_decays(parameters, value, name="weight_decay"):
    """Per-parameter weight decay, in the parameters' order: a list of floats, or
    None when there is none. `value` is one real for every key, or a dict with
    exactly the parameters' keys."""
    if not isinstance(value, dict):
        x = nonnegative(value, name)
        return None if x == 0.0 else [x] * len(parameters)
    for key in value:
        if key not in parameters:
            raise KeyError(f"{name} has key {key!r}, which is not a parameter")
    out = []
    for key in parameters:
        if key not in value:
            raise KeyError(f"{name} has no key {key!r} (needed for parameters[{key!r}])")
        out.append(nonnegative(value[key], f"{name}[{key!r}]"))
    return out if any(out) else None


# --- steps that the compiled backend hands to NumPy ----------------------------------

class PerformanceWarning(RuntimeWarning):
    """A step of the compiled backend ran in NumPy, not in C.

    The step's arrays or arguments are ones the C path does not take: a
    strided view, a gradient laid out otherwise than its parameter, another
    dtype, a gradient that shares memory with an array the step writes, a
    dict subclass. The result is the same, bit for bit; the step is slower.
    The message names the array or argument and says why. It is issued at the
    caller's line, so Python's default filter shows it once per line and
    reason; ``warnings.simplefilter("error", fastoptim.PerformanceWarning)``
    turns every such step into an error. The NumPy backend
    (``FASTOPTIM_BACKEND=numpy``) does not issue it.
    """

    __module__ = "fastoptim"


_C_DTYPES = "float32, float64, float16 and bfloat16"

# The compiled step's largest step count (its int64 arithmetic, with headroom);
# later counts take the NumPy step, which takes any Python int.
COMPILED_MAX_T = 2**62


def _order(a):
    return "C-ordered" if a.flags.c_contiguous else "Fortran-ordered"


def _array_refusal(label, a, dtype, plabel=None, p=None):
    """Why the compiled step does not take array `a` (None: it does): `dtype`
    the dtype it needs, p its parameter (None for a parameter itself)."""
    if not isinstance(a, np.ndarray):
        return f"{label} is a {type(a).__name__}, not a numpy.ndarray"
    if not a.dtype.isnative and a.dtype.newbyteorder("=") == dtype:
        return f"{label} is byte-swapped ({a.dtype.str})"
    if a.dtype != dtype:
        if p is None:
            return f"{label} is {a.dtype} (the C path takes {_C_DTYPES})"
        return f"{label} is {a.dtype} and {plabel} {p.dtype}"
    if not a.flags.aligned:
        return f"{label} is not aligned to its dtype"
    if not (a.flags.c_contiguous or a.flags.f_contiguous):
        return f"{label} is not contiguous (a strided view)"
    if p is not None and not (a.flags.c_contiguous if p.flags.c_contiguous
                              else a.flags.f_contiguous):
        return f"{label} is {_order(a)} and {plabel} {_order(p)}"
    return None


def numpy_step_reason(rows, *, one_dtype=False, written=None):
    """Why the compiled step does not take a step's arrays: a phrase naming the
    first array at fault, or None when none of these checks finds one.

    rows: per parameter key, (its label, the parameter, [(label, array, needed
    dtype or None), ...]) with the gradient first (None: the parameter's dtype,
    or float32 for a 16-bit parameter, as the first such gradient decides);
    one_dtype: one dtype for every parameter (the dict functions); written:
    (starts, ends, labels) of the byte ranges the step writes, sorted by start
    (None: the rows' own parameters and state)."""
    first = None
    grad_dtypes = {}
    spans = []
    for plabel, p, others in rows:
        dtype = p.dtype if isinstance(p, np.ndarray) and (
            p.dtype in (np.float32, np.float64) or is_16bit(p.dtype)) else np.float32
        why = _array_refusal(plabel, p, dtype)
        if why:
            return why
        if one_dtype:
            if first is None:
                first = (plabel, p)
            elif p.dtype != first[1].dtype:
                return (f"{plabel} is {p.dtype} and {first[0]} {first[1].dtype} "
                        "(one call, one dtype)")
        spans.append((plabel, p, True))
        for j, (label, a, want) in enumerate(others):
            if want is None:
                if j == 0 and is_16bit(p.dtype) and isinstance(a, np.ndarray):
                    want = grad_dtypes.setdefault(p.dtype, a.dtype if a.dtype == np.float32
                                                  else p.dtype)
                else:
                    want = p.dtype
            why = _array_refusal(label, a, want, plabel, p)
            if why:
                return why
            spans.append((label, a, j > 0))
    if written is None:
        written = byte_ranges((a, label) for label, a, w in spans if w)
    labels = written[2]
    for label, a, _ in spans:
        if a.size:
            for j in ranges_meeting(written, *byte_bounds(a)):
                if labels[j] != label:
                    return f"{label} shares memory with {labels[j]}, which the step writes"
    return None


def numpy_call_reason(parameters, grads, states, state_names, t):
    """numpy_step_reason for a call of the dict functions (fastoptim._core.update's
    arguments), which has checked them."""
    names = state_names or [f"states[{j}]" for j in range(len(states))]
    for name, d in (("parameters", parameters), ("grads", grads), *zip(names, states)):
        if d is not None and type(d) is not dict:
            return f"{name} is of type {type(d).__name__}, not dict"
    if t > COMPILED_MAX_T:
        return "t is past 2**62"
    rows = []
    for k, p in parameters.items():
        dk = "d" + k
        rows.append((f"parameters[{k!r}]", p, [(f"grads[{dk!r}]", grads[dk], None)] + [
            (f"{name}[{dk!r}]", d[dk], state_dtype(p.dtype))
            for name, d in zip(names, states) if d is not None]))
    return numpy_step_reason(rows, one_dtype=True)


def warn_numpy_step(where, reason):
    """Say that a step of the compiled backend ran in NumPy, and why."""
    here = os.path.dirname(os.path.abspath(__file__))
    level, frame = 2, sys._getframe(1)  # stacklevel 2: the caller
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(here):
        level, frame = level + 1, frame.f_back
    warnings.warn(
        f"{where} ran in NumPy, not in C, because "
        f"{reason or 'an input is one the C path does not take'}: the result is the same, "
        "the step slower", PerformanceWarning, stacklevel=level)
