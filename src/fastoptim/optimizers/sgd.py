"""Gradient descent and momentum: the course's GD and Momentum, and torch's SGD.
All three are the C rule "sgd" (csrc/kernels.inc)."""
from .. import _validate as check
from ._base import MAXIMIZE, Declaration, Hyperparameter, Optimizer, Option

__all__ = ["GD", "Momentum", "SGD"]

_NESTEROV = "Step along the look-ahead (Nesterov momentum, Sutskever et al. 2013)."


class GD(Optimizer):
    """Gradient descent, as the course's ``update_parameters_with_gd``.

    Update rule, for every parameter W with gradient dW::

        W -= learning_rate * dW

    {parameters}

    References
    ----------
    The classic deep-learning course, "Optimization methods".
    torch.optim.SGD(lr=learning_rate) is the same update.
    """

    declaration = Declaration(
        rule="sgd")

    def _rule_hyperparameters(self):
        return (0.0, 0.0)


class Momentum(Optimizer):
    """Momentum in the course's form, an exponential average of the gradients,
    as ``update_parameters_with_momentum``.

    Update rule (state ``v``, zero at first)::

        v = beta * v + (1 - beta) * dW
        W -= learning_rate * v

    With ``nesterov=True`` the step looks ahead in the same form:
    ``W -= learning_rate * (beta * v + (1 - beta) * dW)``, v already updated.
    Equal to torch.optim.SGD(lr=learning_rate*(1-beta), momentum=beta[, nesterov=True]).

    {parameters}

    References
    ----------
    The classic deep-learning course, "Optimization methods"; Sutskever et al.,
    "On the importance of initialization and momentum in deep learning", ICML 2013.
    """

    declaration = Declaration(
        rule="sgd",
        hyperparameters={
            "beta": Hyperparameter(0.9, check.beta, "The momentum, in [0, 1)."),
        },
        options={"nesterov": Option(_NESTEROV)},
        state_names={"momentum_buffer": "v"},
        fixed_flags=("momentum", "average"))

    def _rule_hyperparameters(self):
        beta = self._h["beta"]
        return (beta, beta)  # the course's average: momentum = dampening = beta


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, as torch.optim.SGD.

    Update rule (g = dW, plus weight_decay * W; negated with maximize)::

        b = g                                  (first step)
        b = momentum * b + (1 - dampening) * g (later steps)
        W -= learning_rate * (g + momentum * b if nesterov else b)

    Without momentum, ``W -= learning_rate * g``. The state
    ``momentum_buffer`` exists only when momentum > 0 at construction. Note
    the course's Momentum keeps (1 - beta) times this buffer.

    {parameters}

    References
    ----------
    torch.optim.SGD; Sutskever et al., "On the importance of initialization and
    momentum in deep learning", ICML 2013.
    """

    declaration = Declaration(
        rule="sgd",
        learning_rate=0.001,
        hyperparameters={
            "momentum": Hyperparameter(0.0, check.beta, "The momentum, in [0, 1)."),
            "dampening": Hyperparameter(0.0, check.fraction,
                                        "Dampening of the gradient in the buffer, in [0, 1]."),
        },
        options={"nesterov": Option(_NESTEROV), "maximize": MAXIMIZE},
        weight_decay="l2")

    def _check_settings(self):
        if self._opts["nesterov"] and (self._h["momentum"] == 0.0 or self._h["dampening"] != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening = 0 (as torch)")
