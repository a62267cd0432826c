"""Lion: the C rule "lion" (csrc/kernels.inc)."""
from .. import _validate as check
from ._base import MAXIMIZE, Declaration, Hyperparameter, Optimizer

__all__ = ["Lion"]


class Lion(Optimizer):
    """Lion, the sign-momentum optimizer found by program search.

    Update rule (state ``v``; weight decay decoupled, as in the paper)::

        W *= 1 - learning_rate * weight_decay
        W -= learning_rate * sign(beta1 * v + (1 - beta1) * dW)
        v = beta2 * v + (1 - beta2) * dW

    sign(0) = 0: an element whose interpolation is exactly zero does not move;
    NaN stays NaN.

    {parameters}

    References
    ----------
    Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023
    (Algorithm 2); optax.lion.
    """

    declaration = Declaration(
        rule="lion",
        learning_rate=1e-4,
        hyperparameters={
            "beta1": Hyperparameter(0.9, check.beta,
                                    "Interpolation for the update's sign, in [0, 1)."),
            "beta2": Hyperparameter(0.99, check.beta, "Decay rate of the momentum v, in [0, 1)."),
        },
        options={"maximize": MAXIMIZE},
        weight_decay="decoupled")

