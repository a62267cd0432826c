"""Learning-rate schedules: callables from a step count to a learning rate.

An optimizer object given a schedule as its `learning_rate` calls it before
each step with the number of steps taken so far (`optimizer.t`: 0 for the
first step). A schedule is also a plain function, for loops that set the rate
themselves, e.g. once per epoch: `optimizer.learning_rate = schedule(epoch)`.

The course's two decays keep its names and give exactly its values:
`UpdateLR(learning_rate0, decay_rate)(n) == update_lr(learning_rate0, n, decay_rate)`
and likewise `ScheduleLRDecay` and `schedule_lr_decay`.
"""
import math
import numbers

import numpy as np

from . import _validate as check

__all__ = ["CosineDecay", "ExponentialDecay", "Schedule", "ScheduleLRDecay", "StepDecay",
           "UpdateLR", "schedule_lr_decay", "update_lr"]


def update_lr(learning_rate0, epoch_num, decay_rate):
    """The course's learning-rate decay.

    Parameters
    ----------
    learning_rate0 : float
        The initial learning rate.
    epoch_num : int
        The epoch (or step) number, from 0.
    decay_rate : float
        Decay per epoch.

    Returns
    -------
    float
        ``1 / (1 + decay_rate * epoch_num) * learning_rate0``, the course's
        expression in its order.

    References
    ----------
    The classic deep-learning course, "Optimization methods" (learning-rate decay).
    """
    return 1 / (1 + decay_rate * epoch_num) * learning_rate0


def schedule_lr_decay(learning_rate0, epoch_num, decay_rate, time_interval=1000):
    """The course's learning-rate decay in steps, once every `time_interval` epochs.

    Parameters
    ----------
    learning_rate0 : float
        The initial learning rate.
    epoch_num : int
        The epoch number, from 0.
    decay_rate : float
        Decay per interval.
    time_interval : int, default 1000
        Epochs per step of the decay.

    Returns
    -------
    float
        ``1 / (1 + decay_rate * (epoch_num // time_interval)) * learning_rate0``.

    References
    ----------
    The classic deep-learning course, "Optimization methods" (fixed interval scheduling).
    """
    return 1 / (1 + decay_rate * (epoch_num // time_interval)) * learning_rate0


class Schedule:
    """Base class. Subclasses set `_args` (constructor argument names) and
    define `_value(step)`; equal arguments make equal schedules, and an
    optimizer's state_dict() stores them (see `to_state` / `from_state`)."""

    _args = ()

    _kind = 0  # the compiled step's code for this schedule (0: none)

    def __call__(self, step):
        n = check.integer(step, "step", minimum=0)
        try:
            return self._value(n)
        except OverflowError:  # a rate beyond float's range: the optimizer refuses it
            return math.inf

    def _value(self, n):
        raise NotImplementedError

    def compiled_form(self):
        """(kind, parameters): how the compiled optimizer step evaluates this
        schedule without calling it (the same double operations as `_value`),
        or None when it has no exact compiled form."""
        params = self._compiled_params()
        return None if params is None else (self._kind, tuple(float(x) for x in params))

    def _compiled_params(self):
        return None

    def config(self):
        """The constructor's arguments, as a dict."""
        return {name: getattr(self, name) for name in self._args}

    def __eq__(self, other):
        return type(other) is type(self) and other.config() == self.config()

    def __hash__(self):
        return hash((type(self).__name__, tuple(self.config().items())))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class UpdateLR(Schedule):
    """The course's `update_lr` as a schedule: 1 / (1 + decay_rate * step) * learning_rate0.

    Parameters
    ----------
    learning_rate0 : float
        The rate at step 0, >= 0.
    decay_rate : float
        >= 0.
    """

    _args = ("learning_rate0", "decay_rate")
    _kind = 1

    def __init__(self, learning_rate0, decay_rate):
        self.learning_rate0 = _rate(learning_rate0, "learning_rate0")
        self.decay_rate = _rate(decay_rate, "decay_rate")

    def _compiled_params(self):
        return (self.learning_rate0, self.decay_rate)

    def _value(self, n):
        return 1 / (1 + self.decay_rate * n) * self.learning_rate0


class ScheduleLRDecay(Schedule):
    """The course's `schedule_lr_decay`:
    1 / (1 + decay_rate * floor(step / time_interval)) * learning_rate0."""

    _args = ("learning_rate0", "decay_rate", "time_interval")
    _kind = 2

    def __init__(self, learning_rate0, decay_rate, time_interval=1000):
        self.learning_rate0 = _rate(learning_rate0, "learning_rate0")
        self.decay_rate = _rate(decay_rate, "decay_rate")
        self.time_interval = _positive(time_interval, "time_interval")

    def _value(self, n):
        return 1 / (1 + self.decay_rate * (n // self.time_interval)) * self.learning_rate0

    def _compiled_params(self):
        if not isinstance(self.time_interval, int) or self.time_interval >= 2**53:
            return None  # a float interval floors as Python's float // does: not compiled
        return (self.learning_rate0, self.decay_rate, self.time_interval)


class ExponentialDecay(Schedule):
    """learning_rate0 * decay_rate ** (step / decay_steps): the course's
    exponential decay (0.95 ** epoch_num * learning_rate0) with decay_steps=1."""

    _args = ("learning_rate0", "decay_rate", "decay_steps")
    _kind = 3

    def __init__(self, learning_rate0, decay_rate, decay_steps=1):
        self.learning_rate0 = _rate(learning_rate0, "learning_rate0")
        self.decay_rate = _rate(decay_rate, "decay_rate")
        self.decay_steps = _positive(decay_steps, "decay_steps")

    def _value(self, n):
        return self.learning_rate0 * self.decay_rate ** (n / self.decay_steps)

    def _compiled_params(self):
        if isinstance(self.decay_steps, int) and self.decay_steps >= 2**53:
            return None
        return (self.learning_rate0, self.decay_rate, self.decay_steps)


class StepDecay(Schedule):
    """learning_rate0 * gamma ** floor(step / step_size), as torch's StepLR.

    Parameters
    ----------
    learning_rate0 : float
        The rate at step 0, >= 0.
    step_size : int
        Steps between decays, >= 1.
    gamma : float, default 0.1
        The factor of each decay, >= 0.
    """

    _args = ("learning_rate0", "step_size", "gamma")
    _kind = 4

    def __init__(self, learning_rate0, step_size, gamma=0.1):
        self.learning_rate0 = _rate(learning_rate0, "learning_rate0")
        self.step_size = check.integer(step_size, "step_size", minimum=1)
        self.gamma = _rate(gamma, "gamma")

    def _value(self, n):
        return self.learning_rate0 * self.gamma ** (n // self.step_size)

    def _compiled_params(self):
        return (self.learning_rate0, self.step_size, self.gamma) if self.step_size < 2**53 else None


class CosineDecay(Schedule):
    """Linear warmup, then cosine decay (optax's warmup_cosine_decay_schedule
    with init_value 0):

    - step < warmup_steps: learning_rate0 * step / warmup_steps (0 at step 0);
    - then over the rest of decay_steps (which includes the warmup):
      eta_min + (learning_rate0 - eta_min) * (1 + cos(pi * progress)) / 2,
      progress = (step - warmup_steps) / (decay_steps - warmup_steps);
    - step >= decay_steps: eta_min.
    """

    _args = ("learning_rate0", "decay_steps", "warmup_steps", "eta_min")
    _kind = 5

    def __init__(self, learning_rate0, decay_steps, warmup_steps=0, eta_min=0.0):
        self.learning_rate0 = _rate(learning_rate0, "learning_rate0")
        self.decay_steps = check.integer(decay_steps, "decay_steps", minimum=1)
        self.warmup_steps = check.integer(warmup_steps, "warmup_steps", minimum=0)
        self.eta_min = _rate(eta_min, "eta_min")
        if self.warmup_steps > self.decay_steps:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) must be <= decay_steps "
                f"({self.decay_steps}): decay_steps counts the warmup too")

    def _value(self, n):
        if n < self.warmup_steps:
            return self.learning_rate0 * n / self.warmup_steps
        if n >= self.decay_steps:
            return self.eta_min
        progress = (n - self.warmup_steps) / (self.decay_steps - self.warmup_steps)
        return self.eta_min + (self.learning_rate0 - self.eta_min) * 0.5 * (
            1.0 + math.cos(math.pi * progress))

    def _compiled_params(self):
        if self.decay_steps >= 2**53:
            return None
        return (self.learning_rate0, self.decay_steps, self.warmup_steps, self.eta_min)


SCHEDULES = {cls.__name__: cls for cls in
             (UpdateLR, ScheduleLRDecay, ExponentialDecay, StepDecay, CosineDecay)}


def to_state(schedule):
    """A schedule of this module as flat scalars (for state_dict); None for
    any other callable."""
    if type(schedule) not in SCHEDULES.values():
        return None
    state = {"schedule": type(schedule).__name__}
    state.update(schedule.config())
    return state


def from_state(state):
    """The schedule `to_state` described; `state` maps names to scalars (or
    0-d arrays, as np.load returns them)."""
    name = _scalar(state["schedule"])
    if not isinstance(name, str):
        raise TypeError(f"the learning-rate schedule's name must be a str, got "
                        f"{type(name).__name__}")
    if name not in SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {name!r}; known: "
                         f"{', '.join(sorted(SCHEDULES))}")
    cls = SCHEDULES[name]
    missing = [a for a in cls._args if a not in state]
    if missing:
        raise KeyError(f"learning-rate schedule {name} needs {missing[0]!r}")
    unknown = sorted(k for k in state if k != "schedule" and k not in cls._args)
    if unknown:
        raise KeyError(f"learning-rate schedule {name} takes no {', '.join(map(repr, unknown))}")
    return cls(**{a: _scalar(state[a]) for a in cls._args})


def _scalar(x):
    return x.item() if isinstance(x, np.ndarray) and x.ndim == 0 else x


def _rate(value, name):
    return check.learning_rate(value, name)


def _positive(value, name):
    x = check.learning_rate(value, name)
    if not x > 0.0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return int(x) if isinstance(value, numbers.Integral) else x
