"""Adafactor: the C rule "adafactor" (csrc/kernels.inc), a rule with a
per-array reduction, and the row and column statistics of its factored
second moment (NumPy, the class's phase)."""
from __future__ import annotations

import numpy as np

from .. import _fallback
from .. import _validate as check
from ._base import MAXIMIZE, Declaration, Hyperparameter, Optimizer
from .schedule_free import _lerp

__all__ = ["Adafactor"]


def _nonpositive(value, name):
    x = check._real(value, name)
    if not x <= 0.0:
        raise ValueError(f"{name} must be <= 0, got {value!r}")
    return x


def _epsilon_or_none(value, name):
    return None if value is None else check.epsilon(value, name)


def _at_least_one(value, name):
    x = check.finite(value, name)
    if not x >= 1.0:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return x


class Adafactor(Optimizer):
    """Adafactor, as torch.optim.Adafactor: a second moment factored into its
    row and column means, m + n numbers for an m x n matrix.

    Update rule (t counts steps from 1; g = dW, negated with maximize;
    lerp(a, b, w) = a + w*(b - a))::

        w = t**beta2_decay;  rho = min(learning_rate, 1/sqrt(t))
        alpha = max(epsilon2, RMS(W)) * rho
        W *= 1 - learning_rate * weight_decay
        arrays of 2 or more dimensions, factored over the last two (m x n):
            row_var = lerp(row_var, mean(g**2 over columns), w)   (m numbers)
            col_var = lerp(col_var, mean(g**2 over rows), w)      (n numbers)
            v = row_var * col_var / max(mean(row_var), epsilon1)
        other arrays:
            variance = lerp(variance, g**2, w)
            v = variance
        u = g / sqrt(max(v, epsilon1**2))
        W -= alpha / max(1, RMS(u) / d) * u

    epsilon1 None is the parameter's machine epsilon (torch's ``eps=(None,
    1e-3)``); RMS is over each array. The row and column means are NumPy's
    (both backends run the same code); the update is fused in C: one pass
    measures RMS(W) and RMS(u) (in double, in a fixed order), a second
    applies it.

    {parameters}

    References
    ----------
    Shazeer and Stern, "Adafactor: Adaptive Learning Rates with Sublinear
    Memory Cost", ICML 2018; torch.optim.Adafactor, whose semantics (the
    learning rate as the largest relative step and in the decay, epsilon1
    in the final clamp) and defaults these are.
    """

    declaration = Declaration(
        rule="adafactor",
        learning_rate=0.01,
        hyperparameters={
            "beta2_decay": Hyperparameter(-0.8, _nonpositive, "The second moment's weight "
                                          "for step t is t**beta2_decay; <= 0."),
            "epsilon1": Hyperparameter(None, _epsilon_or_none, "Floor of the variance "
                                       "estimate's root (and of mean(row_var)); >= 0, or None "
                                       "for the parameter's machine epsilon."),
            "epsilon2": Hyperparameter(1e-3, check.epsilon, "Floor of RMS(W) in the step "
                                       "size; >= 0."),
            "d": Hyperparameter(1.0, _at_least_one, "Clipping threshold of RMS(u); >= 1."),
        },
        options={"maximize": MAXIMIZE},
        weight_decay="decoupled",
        states=("row_var", "col_var"))

    def _rule_hyperparameters(self):
        h = self._h
        eps1 = 0.0 if h["epsilon1"] is None else h["epsilon1"]
        return (-h["beta2_decay"], eps1, h["epsilon2"], h["d"])

    def _rule_flags(self, construction=False):
        machine = _fallback.ADAFACTOR_MACHINE_EPSILON if self._h["epsilon1"] is None else 0
        return super()._rule_flags(construction) | machine

    def _state_shapes(self, key, p, names):
        if p.ndim < 2:
            return {"variance": p.shape}
        return {"row_var": p.shape[:-1] + (1,), "col_var": p.shape[:-2] + (1, p.shape[-1])}

    def _factors_of(self, key, p):
        if p.ndim < 2:
            return None
        per = np.zeros(p.shape[:-2] + (1, 1), p.dtype)  # max(mean(row_var), epsilon1)
        return (self._state["row_var"]["d" + key], self._state["col_var"]["d" + key], per)

    def _phase(self, grads, scale, t, lr):
        """The factored arrays' row and column means of g**2, into row_var and
        col_var, and each matrix's max(mean(row_var), epsilon1)."""
        w = _fallback._pow(float(_fallback.capped_step(t)), self._h["beta2_decay"])
        with np.errstate(all="ignore"):
            for k, g, factors in zip(self._keys, grads, self._factors):
                p = self._params[k]
                if factors is None or p.size == 0:
                    continue
                row, col, per = factors
                # C-ordered: the sums' rounding then does not depend on g's layout
                gi = np.ascontiguousarray(_fallback.scaled(g, scale, p.dtype))
                m, n = p.shape[-2:]
                _lerp(row, np.einsum("...ij,...ij->...i", gi, gi)[..., None] / n, w)
                _lerp(col, np.einsum("...ij,...ij->...j", gi, gi)[..., None, :] / m, w)
                eps1 = self._h["epsilon1"]
                if eps1 is None:
                    eps1 = float(np.finfo(p.dtype).eps)
                np.maximum(row.mean(axis=-2, keepdims=True), eps1, out=per)
