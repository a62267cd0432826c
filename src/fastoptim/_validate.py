"""Argument checks shared by every backend.

Everything is checked before anything is written: a bad input raises an error
that names the key or argument, and no array changes.
"""
import math
import numbers
import operator

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

