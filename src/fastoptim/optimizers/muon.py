"""Muon for matrices (NumPy: the class's phase) with a companion AdamW, the C
rule "adam", for every other array: one object, one state dict."""
from __future__ import annotations

import math

import numpy as np

from .. import _fallback
from .. import _validate as check
from ._base import (MAXIMIZE, Argument, Declaration, Hyperparameter, Optimizer, Option,
                    _per_key)
from .schedule_free import _lerp

__all__ = ["Muon"]

# torch.optim.Muon's (Keller Jordan's): the quintic Newton-Schulz iteration
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def _ns_steps(value, name):
    n = check.integer(value, name, minimum=0)
    if n >= 100:
        raise ValueError(f"{name} must be < 100, got {n}")
    return n


def orthogonalize(g, steps=5, eps=1e-7, coefficients=NS_COEFFICIENTS):
    """The Newton-Schulz iteration of torch.optim.Muon on a matrix: about U V^T
    for g = U S V^T (singular values pushed towards [0.7, 1.2]), in float64 for
    float64 and in float32 otherwise (torch: bfloat16), through NumPy's BLAS."""
    a, b, c = coefficients
    # a C-ordered copy: the rounding of the norm and products then does not
    # depend on the layout g came in
    x = np.array(g, dtype=np.float64 if g.dtype == np.float64 else np.float32, order="C")
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x /= max(float(np.linalg.norm(x)), eps)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x.T if tall else x


def _default_mask(key, p):
    """Muon takes arrays with two dimensions larger than 1: weight matrices and
    conv kernels, not biases, gains or a single output row."""
    return sum(d > 1 for d in p.shape) >= 2


class Muon(Optimizer):
    """Muon (momentum orthogonalized by Newton-Schulz) for weight matrices, as
    torch.optim.Muon, with a companion AdamW, as torch.optim.AdamW, for the
    other arrays, in one object.

    Update rule for an array Muon takes (state ``momentum_buffer``; g = dW,
    negated with maximize; reshaped to (shape[0], -1) when it has more than two
    dimensions, e.g. conv kernels, which torch refuses)::

        b = momentum * b + (1 - momentum) * g
        u = (1 - momentum) * g + momentum * b  (nesterov, the default), else b
        O = NewtonSchulz(u / max(||u||, ns_epsilon)), ns_steps iterations:
            X = a*X + (b*X X^T + c*(X X^T)^2) X, (a, b, c) = (3.4445, -4.7750, 2.0315)
        W *= 1 - learning_rate * weight_decay
        W -= learning_rate * scale(A, B) * O

    with A x B the matrix's shape and scale = sqrt(max(1, A/B)) (torch's
    "original"), or 0.2 * sqrt(max(A, B)) with match_rms_adamw (Moonshot's,
    which lets Muon share AdamW's rate and decay). The orthogonalization runs
    on NumPy's BLAS, in float32 (torch: bfloat16; float64 for float64
    parameters). Every other array (states ``v``, ``s``) takes AdamW's step
    with the same learning rate and weight decay and the betas and epsilon
    named adamw_*: the usual recipe of Muon for the hidden layers' weights and
    AdamW for biases and gains. Which arrays Muon takes: muon_mask.

    {parameters}

    References
    ----------
    Jordan et al., "Muon: An optimizer for hidden layers in neural networks",
    2024 (kellerjordan.github.io/posts/muon); Liu et al., "Muon is Scalable
    for LLM Training", 2025 (match_rms_adamw); torch.optim.Muon and
    torch.optim.AdamW, whose defaults these are; Loshchilov and Hutter,
    "Decoupled Weight Decay Regularization", ICLR 2019.
    """

    declaration = Declaration(
        rule="adam",
        learning_rate=0.001,
        hyperparameters={
            "momentum": Hyperparameter(0.95, check.beta, "Muon's momentum, in [0, 1)."),
            "ns_steps": Hyperparameter(5, _ns_steps, "Newton-Schulz iterations; an integer "
                                       "in [0, 100)."),
            "ns_epsilon": Hyperparameter(1e-7, check.epsilon, "Floor of the norm Muon's "
                                         "update is divided by first; >= 0."),
            "adamw_beta1": Hyperparameter(0.9, check.beta, "The companion AdamW's decay rate "
                                          "of its first moment v, in [0, 1)."),
            "adamw_beta2": Hyperparameter(0.999, check.beta, "The companion AdamW's decay "
                                          "rate of its second moment s, in [0, 1)."),
            "adamw_epsilon": Hyperparameter(1e-8, check.epsilon, "The companion AdamW's "
                                            "epsilon, outside the square root; >= 0."),
        },
        options={
            "nesterov": Option("Muon steps along the look-ahead (1 - momentum) * g + "
                               "momentum * b (torch's default).", default=True),
            "match_rms_adamw": Option("Scale Muon's step by 0.2 * sqrt(max(A, B)) instead of "
                                      "sqrt(max(1, A / B)) (Liu et al. 2025)."),
            "maximize": MAXIMIZE,
        },
        weight_decay="decoupled",
        weight_decay_default=0.1,
        states=("momentum_buffer",),
        arguments={"muon_mask": Argument(
            None, "key -> bool (or a dict of every key): True for the arrays Muon takes, "
            "each of 2 or more dimensions; the others take AdamW's step. None: the arrays "
            "with at least two dimensions larger than 1 (weight matrices and conv kernels; "
            "not biases, gains or a single output row).",
            "callable, dict or None", "_Mask")})

    def _resolve_arguments(self, arrays):
        mask = self._arguments["muon_mask"]
        keys = [k for k, _ in arrays]
        if mask is None:
            chosen = {k: _default_mask(k, p) for k, p in arrays}
        else:
            chosen = _per_key(keys, mask, "muon_mask", check.flag)
        for k, p in arrays:
            if chosen[k] and p.ndim < 2:
                raise ValueError(f"muon_mask selects parameters[{k!r}] of shape {p.shape}; "
                                 "Muon takes arrays of 2 or more dimensions")
        self._arguments["muon_mask"] = chosen
        self._muon = {k for k, on in chosen.items() if on}

    @property
    def muon_keys(self) -> list[str]:
        """The keys of the arrays Muon takes (in the parameters' order); AdamW
        takes the others."""
        return [k for k in self._keys if k in self._muon]

    def _rule_takes(self, key, p):
        return key not in self._muon

    def _state_shapes(self, key, p, names):
        if key in self._muon:
            return {"momentum_buffer": p.shape}
        return {"v": p.shape, "s": p.shape}

    def _rule_hyperparameters(self):
        h = self._h
        return (h["adamw_beta1"], h["adamw_beta2"], h["adamw_epsilon"])

    def _phase(self, grads, scale, t, lr):
        """Muon's step of the arrays it takes."""
        h, mu = self._h, self._h["momentum"]
        with np.errstate(all="ignore"):
            for k, g in zip(self._keys, grads):
                if k not in self._muon:
                    continue
                p = self._params[k]
                buf = self._state["momentum_buffer"]["d" + k]
                gi = _fallback.scaled(g, scale, p.dtype)
                _lerp(buf, gi, 1.0 - mu)
                if self._opts["nesterov"]:
                    u = np.array(gi, copy=True)
                    _lerp(u, buf, mu)
                else:
                    u = buf
                rows = p.shape[0]
                cols = p.size // rows if rows else 0
                if p.size:
                    update = orthogonalize(u.reshape(rows, cols), h["ns_steps"], h["ns_epsilon"])
                else:
                    update = np.zeros((rows, cols), p.dtype)
                if self._opts["match_rms_adamw"]:
                    ratio = 0.2 * math.sqrt(max(rows, cols))
                else:
                    ratio = math.sqrt(max(1, rows / cols)) if cols else 1.0
                wd = self._wd[k]
                if wd != 0.0:
                    p *= 1.0 - lr * wd
                p -= (lr * ratio) * update.reshape(p.shape).astype(p.dtype, copy=False)
