"""Adagrad and RMSprop: the C rules "adagrad" and "rmsprop" (csrc/kernels.inc)."""
from .. import _validate as check
from ._base import MAXIMIZE, Declaration, Hyperparameter, Optimizer, Option

__all__ = ["Adagrad", "RMSprop"]


class Adagrad(Optimizer):
    """Adagrad, as torch.optim.Adagrad.

    Update rule (g = dW, plus weight_decay * W; t counts steps from 1)::

        sum += g**2
        W -= learning_rate / (1 + (t - 1) * lr_decay) * g / (sqrt(sum) + epsilon)

    Epsilon outside the square root. The state ``sum`` starts at
    initial_accumulator_value.

    {parameters}

    References
    ----------
    Duchi, Hazan and Singer, "Adaptive Subgradient Methods for Online Learning
    and Stochastic Optimization", JMLR 2011; torch.optim.Adagrad.
    """

    declaration = Declaration(
        rule="adagrad",
        hyperparameters={
            "lr_decay": Hyperparameter(0.0, check.nonnegative,
                                       "The learning rate is divided by 1 + (t-1)*lr_decay; >= 0."),
            "initial_accumulator_value": Hyperparameter(
                0.0, check.nonnegative, "The initial value of the state sum, >= 0.", state="sum"),
            "epsilon": Hyperparameter(1e-10, check.epsilon,
                                      "Added to the square root, outside it; >= 0."),
        },
        options={"maximize": MAXIMIZE},
        weight_decay="l2")



class RMSprop(Optimizer):
    """RMSprop, as torch.optim.RMSprop.

    Update rule (g = dW, plus weight_decay * W)::

        square_avg = alpha * square_avg + (1 - alpha) * g**2
        d = sqrt(square_avg) + epsilon
        centered: grad_avg = alpha * grad_avg + (1 - alpha) * g
                  d = sqrt(square_avg - grad_avg**2) + epsilon
        momentum > 0: b = momentum * b + g / d;  W -= learning_rate * b
        otherwise:    W -= learning_rate * g / d

    Epsilon outside the square root, no bias correction. The states
    ``grad_avg`` (centered) and ``momentum_buffer`` (momentum > 0 at
    construction) exist only when needed.

    {parameters}

    References
    ----------
    Tieleman and Hinton, "Lecture 6.5 - RMSProp", COURSERA: Neural Networks for
    Machine Learning, 2012; Graves, "Generating Sequences With Recurrent Neural
    Networks", 2013 (centered); torch.optim.RMSprop.
    """

    declaration = Declaration(
        rule="rmsprop",
        hyperparameters={
            "alpha": Hyperparameter(0.99, check.beta,
                                    "Smoothing constant of the squared-gradient average, in [0, 1)."),
            "epsilon": Hyperparameter(1e-8, check.epsilon, "Added to the root, outside it; >= 0."),
            "momentum": Hyperparameter(0.0, check.beta, "The momentum, in [0, 1)."),
        },
        options={"centered": Option("Divide by the root of the gradient's variance "
                                      "estimate instead of its second moment.", structural=True),
                   "maximize": MAXIMIZE},
        weight_decay="l2")

