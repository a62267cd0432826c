"""Schedule-Free AdamW and SGD: the C rules "schedule_free_adamw" and
"schedule_free_sgd" (csrc/kernels.inc), and the switch between the point the
gradients are taken at (y, training) and the average the loss is evaluated at
(x, evaluation)."""
from __future__ import annotations

from contextlib import AbstractContextManager

import numpy as np

from .. import _validate as check
from ._base import MAXIMIZE, Declaration, Hyperparameter, Optimizer, _fallback, _scalar

__all__ = ["ScheduleFreeAdamW", "ScheduleFreeSGD"]


def _steps(value, name):
    """A step count: an integer in [0, 2**53]."""
    n = check.integer(value, name, minimum=0)
    if n > 2**53:
        raise ValueError(f"{name} must be <= 2**53, got {n}")
    return n


_WARMUP = Hyperparameter(0, _steps, "Steps of linear warmup: the rate is learning_rate * "
                         "min(1, t / warmup_steps); an integer >= 0.")
_R = Hyperparameter(0.0, check.nonnegative, "The average's weights grow as t**r; >= 0.")
_WEIGHT_LR_POWER = Hyperparameter(2.0, check.nonnegative,
                                  "The average's weights grow as the largest rate so far "
                                  "to this power (warmup steps weigh less); >= 0.")
_SCALARS = {"weight_sum": 0.0, "lr_max": 0.0}
_EVAL = ("{name} is in eval mode (the parameters hold the average x): call train() "
         "before step()")


def _lerp(a, b, w):
    """a = lerp(a, b, w) in place, as torch: a + w*(b - a), or b - (b - a)*(1 - w)
    when |w| >= 0.5."""
    with np.errstate(all="ignore"):
        if abs(w) < 0.5:
            a += w * (b - a)
        else:
            a[...] = b - (b - a) * (1.0 - w)


class _Evaluation(AbstractContextManager):
    """opt.evaluation(): eval() on entry, the mode found back on exit."""

    def __init__(self, opt):
        self._opt = opt
        self._was = None

    def __enter__(self):
        self._was = self._opt.eval_mode
        self._opt.eval()

    def __exit__(self, *exc):
        if not self._was:
            self._opt.train()


class _Modes:
    """What both Schedule-Free classes add to the base: the two modes of the
    parameter arrays (the reference's train()/eval())."""

    _interpolation: str  # the hyperparameter that mixes x and z into y

    def _check_settings(self):
        name = self._interpolation
        if not self._h[name] > 0.0:
            raise ValueError(f"{name} must be in (0, 1) for {type(self).__name__} (the "
                             f"evaluation point x = (y - (1 - {name})*z) / {name}), "
                             f"got {self._h[name]!r}")

    @property
    def eval_mode(self) -> bool:
        """True after eval(): the parameters hold the average x, and step() refuses."""
        return self._blocked is not None

    def eval(self) -> None:
        """Switch the parameters, in place, to the average x = (y - (1-b)*z)/b where
        the loss is evaluated (b: beta1 or momentum), as the reference's eval(); step()
        then refuses until train(). Nothing to switch before the first step."""
        if self.eval_mode:
            return
        if self._t > 0:
            self._switch(1.0 - 1.0 / self._h[self._interpolation])
        self._block(_EVAL.format(name=type(self).__name__))

    def train(self) -> None:
        """Switch the parameters back, in place, to y = (1-b)*z + b*x where the
        gradients are taken (the reference's train())."""
        if not self.eval_mode:
            return
        if self._t > 0:
            self._switch(1.0 - self._h[self._interpolation])
        self._unblock()

    def _switch(self, w):
        """Every parameter p = lerp(p, z, w), in place. A 16-bit parameter is
        widened to float32 and the result rounded to nearest (its Kahan
        compensation is left as it is: stochastic and Kahan write-back are the
        step's); z in bfloat16 is widened (8-bit state keeps z in float32)."""
        j = self._rule.states.index("z")
        for k in self._keys:
            p, z = self._params[k], self._state["z"]["d" + k]
            storage = self._storage[k]
            if storage is None:
                _lerp(p, z, w)
                continue
            z = storage.load_state(j, z)
            if storage.p == _fallback.FMT_NATIVE:
                _lerp(p, z, w)
            else:
                values = _fallback.widen(p, storage.p)
                _lerp(values, z, w)
                p.view(np.uint16)[...] = _fallback.narrow(values, storage.p)

    def evaluation(self) -> AbstractContextManager[None]:
        """A context manager: eval() on entry, and train() on exit unless the
        optimizer was already in eval mode."""
        return _Evaluation(self)

    def _state_extras(self):
        return {"eval_mode": True} if self.eval_mode else {}

    def _check_state_extras(self, sd):
        on = check.flag(_scalar(sd.pop("eval_mode")), "state_dict['eval_mode']") \
            if "eval_mode" in sd else False

        def apply():
            if on and not self.eval_mode:
                self._block(_EVAL.format(name=type(self).__name__))
            elif not on and self.eval_mode:
                self._unblock()

        return apply


class ScheduleFreeAdamW(_Modes, Optimizer):
    """Schedule-Free AdamW: no learning-rate schedule, the iterates averaged.

    Update rule (states ``z``, ``s``; W holds y, the point the gradients are
    taken at; t counts steps from 1; g = dW, negated with maximize)::

        lr_t = learning_rate * min(1, t / warmup_steps)
        lr_max = max(lr_max, lr_t);  w = t**r * lr_max**weight_lr_power
        weight_sum += w;  c = w / weight_sum
        s = beta2 * s + (1 - beta2) * g**2
        u = g / (sqrt(s / (1 - beta2**t)) + epsilon) + weight_decay * W
        W = W + c * (z - W) + lr_t * (beta1 * (1 - c) - 1) * u
        z = z - lr_t * u

    z starts at the parameters (at the first step, as the reference). The
    average x = (W - (1 - beta1) * z) / beta1 is where the loss should be
    evaluated: ``eval()`` switches the parameter arrays to x in place and
    ``train()`` back to y (the reference's ``optimizer.eval()``/``train()``),
    ``with opt.evaluation(): ...`` does both; ``step()`` in eval mode raises
    RuntimeError and changes nothing. The mode is part of the state:
    ``state_dict()`` records ``eval_mode`` and ``load_state_dict`` restores it
    without touching the parameters, so a checkpoint saved in eval mode holds x
    and loads in eval mode. The scalar state ``weight_sum`` and ``lr_max``
    start at 0 (the reference's lr_max of -1 is the same for any rate >= 0).

    {parameters}

    References
    ----------
    Defazio, Yang, Mehta, Mishchenko, Khaled and Cutkosky, "The Road Less
    Scheduled", NeurIPS 2024; the reference implementation,
    facebookresearch/schedule_free (``AdamWScheduleFree``), whose defaults
    these are.
    """

    declaration = Declaration(
        rule="schedule_free_adamw",
        learning_rate=0.0025,
        hyperparameters={
            "beta1": Hyperparameter(0.9, check.beta, "Interpolation between z and the "
                                    "average x in y, in (0, 1)."),
            "beta2": Hyperparameter(0.999, check.beta,
                                    "Decay rate of the second moment s, in [0, 1)."),
            "epsilon": Hyperparameter(1e-8, check.epsilon,
                                      "Added to the denominator, outside the square root; "
                                      ">= 0."),
            "warmup_steps": _WARMUP,
            "r": _R,
            "weight_lr_power": _WEIGHT_LR_POWER,
        },
        options={"maximize": MAXIMIZE},
        weight_decay="update",
        state_from_parameters=("z",),
        scalar_defaults=_SCALARS)
    _interpolation = "beta1"


class ScheduleFreeSGD(_Modes, Optimizer):
    """Schedule-Free SGD: no learning-rate schedule, the iterates averaged.

    Update rule (state ``z``; W holds y; g = dW, plus weight_decay * W;
    negated with maximize)::

        lr_t, c as ScheduleFreeAdamW
        W = W + c * (z - W) + lr_t * (momentum * (1 - c) - 1) * g
        z = z - lr_t * g

    The average x = (W - (1 - momentum) * z) / momentum is where the loss
    should be evaluated: ``eval()``, ``train()``, ``evaluation()`` and the
    state dict's ``eval_mode`` as ScheduleFreeAdamW.

    {parameters}

    References
    ----------
    Defazio, Yang, Mehta, Mishchenko, Khaled and Cutkosky, "The Road Less
    Scheduled", NeurIPS 2024; the reference implementation,
    facebookresearch/schedule_free (``SGDScheduleFree``), whose defaults these
    are.
    """

    declaration = Declaration(
        rule="schedule_free_sgd",
        learning_rate=1.0,
        hyperparameters={
            "momentum": Hyperparameter(0.9, check.beta, "Interpolation between z and the "
                                       "average x in y, in (0, 1)."),
            "warmup_steps": _WARMUP,
            "r": _R,
            "weight_lr_power": _WEIGHT_LR_POWER,
        },
        options={"maximize": MAXIMIZE},
        weight_decay="l2",
        state_from_parameters=("z",),
        scalar_defaults=_SCALARS)
    _interpolation = "momentum"
