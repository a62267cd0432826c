"""Adam and its relatives: Adam, AdamW, NAdam, RAdam, Adamax, the C rules
"adam", "nadam", "radam" and "adamax" (csrc/kernels.inc)."""
from dataclasses import replace

from .. import _validate as check
from ._base import MAXIMIZE, Declaration, Hyperparameter, Optimizer, Option

__all__ = ["Adam", "AdamW", "Adamax", "NAdam", "RAdam"]

_BETA1 = Hyperparameter(0.9, check.beta, "Decay rate of the first moment v, in [0, 1).")
_BETA2 = Hyperparameter(0.999, check.beta, "Decay rate of the second moment s, in [0, 1).")
_EPSILON = Hyperparameter(1e-8, check.epsilon,
                          "Added to the denominator, outside the square root; >= 0.")
_DECOUPLED = Option("Decay the weights as AdamW does (``W *= 1 - learning_rate * "
                    "weight_decay``) instead of adding weight_decay * W to the gradient.")
_AMSGRAD = Option("Divide by the running maximum of s (state max_s, kept uncorrected).",
                  structural=True)


class Adam(Optimizer):
    """Adam, as the course's ``update_parameters_with_adam`` and torch.optim.Adam.

    Update rule (states ``v``, ``s``; t counts steps from 1; g = dW, plus
    weight_decay * W; negated with maximize)::

        v = beta1 * v + (1 - beta1) * g
        s = beta2 * s + (1 - beta2) * g**2
        W -= learning_rate * (v / (1 - beta1**t)) / (sqrt(s / (1 - beta2**t)) + epsilon)

    Epsilon outside the square root, on the bias-corrected s; the state is
    stored uncorrected. With amsgrad, s in the denominator is replaced by
    max_s = max(max_s, s).

    {parameters}

    References
    ----------
    Kingma and Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015;
    Reddi, Kale and Kumar, "On the Convergence of Adam and Beyond", ICLR 2018
    (amsgrad); torch.optim.Adam.
    """

    declaration = Declaration(
        rule="adam",
        hyperparameters={"beta1": _BETA1, "beta2": _BETA2, "epsilon": _EPSILON},
        options={"amsgrad": _AMSGRAD, "maximize": MAXIMIZE},
        weight_decay="l2")



class AdamW(Adam):
    """Adam with decoupled weight decay, as torch.optim.AdamW.

    Update rule: each step first scales W by 1 - learning_rate * weight_decay,
    then takes Adam's step; the decay never enters v or s. Options as Adam;
    torch's defaults.

    {parameters}

    References
    ----------
    Loshchilov and Hutter, "Decoupled Weight Decay Regularization", ICLR 2019;
    torch.optim.AdamW.
    """

    declaration = replace(Adam.declaration, learning_rate=0.001, weight_decay="decoupled",
                          weight_decay_default=0.01)


class NAdam(Optimizer):
    """NAdam (Adam with Nesterov momentum), as torch.optim.NAdam.

    Update rule (v, s as Adam; the scalar state ``mu_product = mu_1 * ... * mu_t``)::

        mu_t = beta1 * (1 - 0.5 * 0.96**(t * momentum_decay))
        d = sqrt(s / (1 - beta2**t)) + epsilon
        W -= learning_rate * (1 - mu_t) / (1 - mu_product) * g / d
             + learning_rate * mu_{t+1} / (1 - mu_product * mu_{t+1}) * v / d

    Epsilon outside the square root, on the bias-corrected s. Weight decay is
    L2, or decoupled with decoupled_weight_decay.

    {parameters}

    References
    ----------
    Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop;
    torch.optim.NAdam.
    """

    declaration = Declaration(
        rule="nadam",
        learning_rate=0.002,
        hyperparameters={
            "beta1": _BETA1, "beta2": _BETA2, "epsilon": _EPSILON,
            "momentum_decay": Hyperparameter(0.004, check.nonnegative,
                                             "Decay of the momentum schedule mu_t; >= 0."),
        },
        options={"decoupled_weight_decay": _DECOUPLED, "maximize": MAXIMIZE},
        weight_decay="l2")



class RAdam(Optimizer):
    """RAdam (rectified Adam), as torch.optim.RAdam.

    Update rule (v, s as Adam)::

        rho_inf = 2 / (1 - beta2) - 1;  rho_t = rho_inf - 2t * beta2**t / (1 - beta2**t)
        rho_t <= 5:  W -= learning_rate * v / (1 - beta1**t)
        rho_t > 5:   W -= learning_rate * r_t * v / (1 - beta1**t)
                          * sqrt(1 - beta2**t) / (sqrt(s) + epsilon)
        r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))

    Epsilon on the uncorrected root. Weight decay is L2, or decoupled with
    decoupled_weight_decay.

    {parameters}

    References
    ----------
    Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond",
    ICLR 2020; torch.optim.RAdam.
    """

    declaration = Declaration(
        rule="radam",
        learning_rate=0.001,
        hyperparameters={"beta1": _BETA1, "beta2": _BETA2, "epsilon": _EPSILON},
        options={"decoupled_weight_decay": _DECOUPLED, "maximize": MAXIMIZE},
        weight_decay="l2")



class Adamax(Optimizer):
    """Adamax (Adam with the infinity norm), as torch.optim.Adamax.

    Update rule (states ``v``, ``exp_inf``; g = dW, plus weight_decay * W)::

        v = beta1 * v + (1 - beta1) * g
        exp_inf = max(beta2 * exp_inf, |g| + epsilon)
        W -= learning_rate / (1 - beta1**t) * v / exp_inf

    Epsilon is added to ``|g|``, inside the maximum; a NaN stays in exp_inf.

    {parameters}

    References
    ----------
    Kingma and Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015,
    section 7.1; torch.optim.Adamax.
    """

    declaration = Declaration(
        rule="adamax",
        learning_rate=0.002,
        hyperparameters={"beta1": _BETA1, "beta2": _BETA2, "epsilon": _EPSILON},
        options={"maximize": MAXIMIZE},
        weight_decay="l2")

