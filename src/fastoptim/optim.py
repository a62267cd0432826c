"""Optimizer objects: the course's updates as objects that keep their own state.

    opt = fastoptim.Adam(parameters, learning_rate=0.001)
    for X_batch, Y_batch in batches:
        grads = backward(X_batch, Y_batch, parameters)   # keys "d" + key
        opt.step(grads)

The arena. By default (`arena=True`) the constructor copies the parameters into
one contiguous buffer per dtype, each array 64-byte aligned, and replaces the
values of the dict it was given with views of that buffer: same keys, shapes,
dtypes, memory layout (C or Fortran) and values. The state (momentum's v,
Adam's v and s) lives in matching buffers. Because the arrays never move, their
pointers are gathered once, and a step only looks up the gradients and makes
one C call per dtype. Update the parameters in place (`parameters["W1"][...] =
...`) if you must change them; rebinding a key (`parameters["W1"] = new`)
detaches it from the optimizer, exactly as replacing a tensor would in torch.
`arena=False` leaves your arrays where they are (any layout; contiguous float32
and float64 arrays still take the C path).

The update rules, numerics and error contract are those of the dict API
(fastoptim.course). Everything is checked before anything is written; a step
that raises leaves parameters, state and `t` unchanged.
"""
import math
import numbers

import numpy as np

from . import _fallback
from . import _validate as check
from . import schedules as _schedules
from ._backend import impl as _impl

__all__ = ["Adam", "GD", "Momentum", "Optimizer"]

_object_plan = getattr(_impl, "object_plan", None)  # None with the NumPy backend
_ALIGN = 64  # bytes: every array of an arena starts on a cache line
# The buffers of one dtype start at different offsets within a 4 KiB page: when
# p[i], m[i] and v[i] share their address bits below 4 KiB the CPU mistakes the
# stores of one stream for the loads of another (4K aliasing): the MLP step in
# bench/ ran 5-9% slower with all buffers at the same page offset.
_PAGE = 4096
_STAGGER = 640


class _Stepper:
    """The step, for the NumPy backend. The C backend's twin, with the same
    logic, is _core.OptimizerBase.step (a step there is one method call)."""

    def step(self, grads):
        """One update of every parameter from grads["d" + key], in place; then t += 1."""
        t = self._t
        lr = self._lr if self._schedule is None else self._scheduled_lr(t)
        self._fallback_update(grads, t + 1, lr)
        self._t = t + 1


class Optimizer(getattr(_impl, "OptimizerBase", _Stepper)):
    """Base class: parameters, state, the step count `t` and the learning rate.

    A subclass sets `_algo` (its C kernel), `_state_names` (the course's names
    for its state dicts), `_hyper` (hyperparameter name -> validator) and
    defines `_fallback_update(grads, t, lr)`."""

    _algo = None
    _state_names = ()
    _hyper = {}
    _state_fill = 0.0

    def _check_options(self, parameters):
        """A subclass's further options, checked before the parameters move."""

    def __init__(self, parameters, learning_rate, arena=True, **hyper):
        if not isinstance(arena, (bool, np.bool_)):
            raise TypeError(f"arena must be True or False, got {arena!r}")
        self._schedule = None
        self._lr = 0.0
        self.learning_rate = learning_rate
        self._h = {name: validate(hyper[name], name) for name, validate in self._hyper.items()}
        arrays = _check_parameters(parameters)
        self._check_options(parameters)
        self._arena = bool(arena)
        self._t = 0

        params, self._state, self._buffers = _build(arrays, self._state_names, self._arena)
        if self._state_fill:  # e.g. Adagrad's initial accumulator
            for d in self._state.values():
                for a in d.values():
                    a.fill(self._state_fill)
        self._params = params
        self._plan = None
        if _object_plan is not None and self._algo is not None:
            keys = list(params)
            rows = [[params[k]] + [self._state[s]["d" + k] for s in self._state_names]
                    for k in keys]
            self._plan = _object_plan(self._algo, keys, rows)
            if self._plan is not None:
                for name, value in self._h.items():
                    setattr(self._plan, name, value)
        if self._arena:
            parameters.update(params)

    # --- the step (step() itself: see _Stepper) ---------------------------------------

    def _fallback_update(self, grads, t, lr):
        raise NotImplementedError

    def _scheduled_lr(self, t):
        value = self._schedule(t)
        try:
            return check.learning_rate(value)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"the learning-rate schedule at step {t}: {exc}") from None

    # --- attributes ----------------------------------------------------------------

    @property
    def t(self):
        """Steps taken (Adam's bias corrections use t + 1 for the next step)."""
        return self._t

    @property
    def learning_rate(self):
        """A float, or a schedule: a callable given the step count `t` before
        each step (see fastoptim.schedules). May be changed between steps."""
        return self._lr if self._schedule is None else self._schedule

    @learning_rate.setter
    def learning_rate(self, value):
        if callable(value) and not isinstance(value, (numbers.Real, np.ndarray)):
            self._schedule = value
        else:
            self._lr = check.learning_rate(value)
            self._schedule = None

    @property
    def arena(self):
        """True when the parameters were moved into the optimizer's buffers."""
        return self._arena

    @property
    def parameters(self):
        """The arrays the optimizer updates, by key (a new dict of the same arrays)."""
        return dict(self._params)

    @property
    def state(self):
        """The state dicts by the course's names (e.g. {"v": {...}, "s": {...}}),
        keyed "d" + key like the dict API's (new dicts of the same arrays)."""
        return {name: dict(d) for name, d in self._state.items()}

    def __repr__(self):
        hyper = "".join(f", {k}={v!r}" for k, v in self._h.items())
        return (f"{type(self).__name__}(learning_rate={self.learning_rate!r}{hyper}, "
                f"t={self._t}, arena={self._arena}, arrays={len(self._params)})")

    # --- state_dict -----------------------------------------------------------------

    def state_dict(self):
        """A flat dict of NumPy arrays (copies) and scalars that np.savez can
        store: the optimizer's name, t, its hyperparameters and learning rate
        (a float, or one of fastoptim.schedules' schedules as "learning_rate/..."
        entries; another callable is not stored), and the state arrays as
        "<name>/d<key>" (e.g. "v/dW1", "s/dW1")."""
        return self._state_items(copy=True)

    def _state_items(self, copy):
        items = {"optimizer": type(self).__name__, "t": self._t}
        if self._schedule is None:
            items["learning_rate"] = self._lr
        else:
            schedule = _schedules.to_state(self._schedule)
            if schedule is not None:
                items.update({"learning_rate/" + k: v for k, v in schedule.items()})
        items.update(self._h)
        for name in self._state_names:
            for dkey, a in self._state[name].items():
                items[f"{name}/{dkey}"] = a.copy() if copy else a
        return items

    def load_state_dict(self, state_dict):
        """Restore what state_dict() returned (or np.load of it): t, the
        hyperparameters, the learning rate when stored, and the state arrays,
        copied into the optimizer's buffers. Keys, shapes and dtypes must match
        exactly; everything is checked before anything changes."""
        self._check_state_dict(state_dict)()

    def _check_state_dict(self, state_dict):
        """Check `state_dict` entirely; return a function that applies it."""
        from collections.abc import Mapping

        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        sd = {}
        for key in state_dict:
            if not isinstance(key, str):
                raise TypeError(f"state_dict keys must be str, got {key!r}")
            sd[key] = state_dict[key]
        name = type(self).__name__

        def take(key):
            try:
                return _scalar(sd.pop(key))
            except KeyError:
                raise KeyError(f"state_dict has no key {key!r} (needed by {name})") from None

        owner = take("optimizer")
        if owner != name:
            raise ValueError(f"state_dict is for {owner!r}, not {name!r}")
        t = take("t")
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, numbers.Integral):
            raise TypeError(f"state_dict['t'] must be an integer, got {type(t).__name__}")
        t = int(t)
        if t < 0:
            raise ValueError(f"state_dict['t'] must be >= 0, got {t}")
        hyper = {k: validate(take(k), k) for k, validate in self._hyper.items()}

        lr = keep = object()
        if "learning_rate" in sd:
            lr = check.learning_rate(take("learning_rate"))
        elif "learning_rate/schedule" in sd:
            prefix = "learning_rate/"
            entries = {k[len(prefix):]: sd.pop(k) for k in list(sd) if k.startswith(prefix)}
            lr = _schedules.from_state(entries)

        copies = []
        for state_name in self._state_names:
            for dkey, dest in self._state[state_name].items():
                key = f"{state_name}/{dkey}"
                if key not in sd:
                    raise KeyError(f"state_dict has no key {key!r} (needed by {name})")
                src = sd.pop(key)
                if not isinstance(src, np.ndarray):
                    raise TypeError(f"state_dict[{key!r}] must be a numpy.ndarray, "
                                    f"got {type(src).__name__}")
                if src.shape != dest.shape:
                    raise ValueError(f"state_dict[{key!r}] has shape {src.shape} but the "
                                     f"optimizer's {key} has shape {dest.shape}")
                if src.dtype != dest.dtype:
                    raise TypeError(f"state_dict[{key!r}] has dtype {src.dtype} but the "
                                    f"optimizer's {key} has dtype {dest.dtype}")
                copies.append((dest, src))
        if sd:
            raise KeyError(f"state_dict has unexpected keys for {name}: "
                           f"{', '.join(repr(k) for k in sorted(sd))}")

        def apply():
            for dest, src in copies:
                np.copyto(dest, src)
            self._t = t
            for k, v in hyper.items():
                self._h[k] = v
                if self._plan is not None:
                    setattr(self._plan, k, v)
            if lr is not keep:
                self.learning_rate = lr

        return apply


def _scalar(x):
    """A 0-d array (as np.load returns scalars) as its Python value."""
    return x.item() if isinstance(x, np.ndarray) and x.ndim == 0 else x


def _hyperparameter(name, doc):
    def get(self):
        return self._h[name]

    def set(self, value):
        x = self._hyper[name](value, name)
        self._h[name] = x
        if self._plan is not None:
            setattr(self._plan, name, x)

    return property(get, set, doc=doc + " May be changed between steps.")


class GD(Optimizer):
    """Gradient descent: W -= learning_rate * dW."""

    _algo = "gd"

    def __init__(self, parameters, learning_rate=0.01, *, arena=True):
        super().__init__(parameters, learning_rate, arena)

    def _fallback_update(self, grads, t, lr):
        _fallback.gd(self._params, grads, lr)


class Momentum(Optimizer):
    """Momentum in the course's form (an exponential average):
    v = beta*v + (1-beta)*dW;  W -= learning_rate * v.

    Equals torch's SGD(lr=learning_rate*(1-beta), momentum=beta, dampening=0)."""

    _algo = "momentum"
    _state_names = ("v",)
    _hyper = {"beta": check.beta}
    beta = _hyperparameter("beta", "The momentum, in [0, 1).")

    def __init__(self, parameters, learning_rate=0.01, *, beta=0.9, arena=True):
        super().__init__(parameters, learning_rate, arena, beta=beta)

    def _fallback_update(self, grads, t, lr):
        _fallback.momentum(self._params, grads, self._state["v"], self._h["beta"], lr)


class Adam(Optimizer):
    """Adam, as the course and torch define it (t counts steps from 1):
    v = beta1*v + (1-beta1)*dW;  s = beta2*s + (1-beta2)*dW**2;
    W -= learning_rate * (v/(1-beta1**t)) / (sqrt(s/(1-beta2**t)) + epsilon)."""

    _algo = "adam"
    _state_names = ("v", "s")
    _hyper = {"beta1": check.beta, "beta2": check.beta, "epsilon": check.epsilon}
    beta1 = _hyperparameter("beta1", "Decay of the first moment, in [0, 1).")
    beta2 = _hyperparameter("beta2", "Decay of the second moment, in [0, 1).")
    epsilon = _hyperparameter("epsilon", "Added to the denominator, outside the square root.")

    def __init__(self, parameters, learning_rate=0.01, *, beta1=0.9, beta2=0.999,
                 epsilon=1e-8, arena=True):
        super().__init__(parameters, learning_rate, arena, beta1=beta1, beta2=beta2,
                         epsilon=epsilon)

    def _fallback_update(self, grads, t, lr):
        h = self._h
        _fallback.adam(self._params, grads, self._state["v"], self._state["s"], t, lr,
                       h["beta1"], h["beta2"], h["epsilon"])


# --- building the arenas -----------------------------------------------------------

def _check_parameters(parameters):
    """The parameters as a list of (key, array), checked as the dict API checks
    the arrays it writes."""
    check.check_dict("parameters", parameters)
    arrays = []
    labelled = []
    for key, p in parameters.items():
        if not isinstance(key, str):
            raise TypeError(f"parameter keys must be str, got {key!r}")
        label = f"parameters[{key!r}]"
        check.parameter(label, p)
        check._writable(label, p)
        arrays.append((key, p))
        labelled.append((label, p, True))
    check._overlaps(labelled)
    return arrays


def _order(a):
    return "F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C"


def _aligned_zeros(dtype, count, j):
    """A zeroed 1-D array of `count` elements starting on a cache line, at an
    offset within its 4 KiB page that depends on j."""
    nbytes = count * dtype.itemsize
    raw = np.zeros(nbytes + _PAGE, dtype=np.uint8)
    start = (j * _STAGGER - raw.ctypes.data) % _PAGE
    return raw[start:start + nbytes].view(dtype)


def _build(arrays, state_names, arena):
    """Lay out one buffer per dtype for the parameters (when `arena`) and each
    state; return (params, state, buffers) with params and state as dicts of
    views (params: the user's own arrays when not `arena`)."""
    by_dtype = {}
    for key, p in arrays:
        by_dtype.setdefault(p.dtype, []).append((key, p))

    views = {}  # key -> list of views: [param (arena only), state...]
    buffers = []
    nbuf = len(state_names) + (1 if arena else 0)
    for dtype, items in by_dtype.items():
        per_line = _ALIGN // math.gcd(_ALIGN, dtype.itemsize)
        offsets, total = [], 0
        for _, p in items:
            offsets.append(total)
            total += -(-p.size // per_line) * per_line
        flats = [_aligned_zeros(dtype, total, j) for j in range(nbuf)]
        buffers += flats
        for (key, p), off in zip(items, offsets):
            order = _order(p)
            views[key] = [f[off:off + p.size].reshape(p.shape, order=order) for f in flats]

    params, state = {}, {name: {} for name in state_names}
    for key, p in arrays:
        row = views[key]
        if arena:
            row[0][...] = p
            params[key] = row.pop(0)
        else:
            params[key] = p
        for name, a in zip(state_names, row):
            state[name]["d" + key] = a
    return params, state, buffers
