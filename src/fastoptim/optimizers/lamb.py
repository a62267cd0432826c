"""LAMB: the C rule "lamb" (csrc/kernels.inc), a rule with a per-array
reduction (the trust ratio)."""
from .. import _validate as check
from ._base import MAXIMIZE, Declaration, Hyperparameter, Optimizer

__all__ = ["LAMB"]


class LAMB(Optimizer):
    """LAMB: Adam's step scaled, per array, by the trust ratio ||W|| / ||update||.

    Update rule (states ``v``, ``s``; t counts steps from 1; g = dW, negated
    with maximize)::

        v = beta1 * v + (1 - beta1) * g
        s = beta2 * s + (1 - beta2) * g**2
        u = (v / (1 - beta1**t)) / (sqrt(s / (1 - beta2**t)) + epsilon) + weight_decay * W
        W -= learning_rate * ||W|| / ||u|| * u

    The norms are each array's own (every key is a layer); the ratio is 1
    where ||W|| or ||u|| is 0. Epsilon outside the square root, on the
    bias-corrected s. One fused pass updates v and s and measures both norms
    (in double, in a fixed order: the same for any number of threads), a
    second applies the step.

    {parameters}

    References
    ----------
    You, Li, Reddi, Hseu, Kumar, Bhojanapalli, Song, Demmel, Keutzer and
    Hsieh, "Large Batch Optimization for Deep Learning: Training BERT in 76
    minutes", ICLR 2020 (Algorithm 2, with phi the identity).
    """

    declaration = Declaration(
        rule="lamb",
        learning_rate=0.001,
        hyperparameters={
            "beta1": Hyperparameter(0.9, check.beta, "Decay rate of the first moment v, "
                                    "in [0, 1)."),
            "beta2": Hyperparameter(0.999, check.beta, "Decay rate of the second moment s, "
                                    "in [0, 1)."),
            "epsilon": Hyperparameter(1e-6, check.epsilon, "Added to the denominator, outside "
                                      "the square root; >= 0."),
        },
        options={"maximize": MAXIMIZE},
        weight_decay="update",
        weight_decay_default=0.01)
