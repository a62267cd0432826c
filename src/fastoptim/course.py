"""The course's optimizer functions, fused and in place.

Same names, arguments, defaults and return values as the classic course's
"Optimization methods" notebook. Keys follow its convention, generalised:
every parameter key k has its gradient and state under "d" + k ("W1" -> "dW1").
Unlike the course, which rebinds new arrays, updates are made in place: the
caller's arrays change and the same dicts are returned.
"""
import numpy as np

from . import _validate as check
from ._backend import fallback as _fallback
from ._backend import update as _update

# The course's three updates are the rules "sgd" (without momentum, and with the
# course's exponential-average momentum) and "adam" of csrc/rules.h.
_MOMENTUM = _fallback.SGD_MOMENTUM | _fallback.SGD_AVERAGE


def with_backend(update):
    """The course's three updates through one backend's generic `update`
    (fastoptim._core.update or fastoptim._fallback.update), with the course's
    signatures: {"gd": ..., "momentum": ..., "adam": ...}. For comparing
    backends on identical inputs (the training demo, the tests); the public
    functions below use the backend in use."""

    def gd(parameters, grads, learning_rate):
        update("sgd", parameters, grads, (None,), 1, learning_rate, (0.0, 0.0))

    def momentum(parameters, grads, v, beta, learning_rate):
        update("sgd", parameters, grads, (v,), 1, learning_rate, (beta, beta), flags=_MOMENTUM,
               names=("beta", "beta"), state_names=("v",))

    def adam(parameters, grads, v, s, t, learning_rate=0.01, beta1=0.9, beta2=0.999,
             epsilon=1e-8):
        update("adam", parameters, grads, (v, s, None), t, learning_rate,
               (beta1, beta2, epsilon))

    return {"gd": gd, "momentum": momentum, "adam": adam}


_steps = with_backend(_update)
_gd, _momentum, _adam = _steps["gd"], _steps["momentum"], _steps["adam"]


def update_parameters_with_gd(parameters, grads, learning_rate):
    """One step of gradient descent, in place: W -= learning_rate * dW.

    Returns `parameters` (the same dict, its arrays updated)."""
    _gd(parameters, grads, learning_rate)
    return parameters


def initialize_velocity(parameters):
    """Zeros shaped like each parameter (same dtype and layout), keyed "d" + key."""
    return _zeros_like(parameters)


def update_parameters_with_momentum(parameters, grads, v, beta, learning_rate):
    """One momentum step, in place, in the course's exponential-average form:
    v = beta*v + (1-beta)*dW;  W -= learning_rate * v.

    Returns `(parameters, v)` (the same dicts, their arrays updated)."""
    _momentum(parameters, grads, v, beta, learning_rate)
    return parameters, v


def initialize_adam(parameters):
    """Two dicts of zeros shaped like each parameter, keyed "d" + key: (v, s)."""
    return _zeros_like(parameters), _zeros_like(parameters)


def update_parameters_with_adam(parameters, grads, v, s, t, learning_rate=0.01,
                                beta1=0.9, beta2=0.999, epsilon=1e-8):
    """One Adam step, in place (t counts steps from 1):
    v = beta1*v + (1-beta1)*dW;  s = beta2*s + (1-beta2)*dW**2;
    W -= learning_rate * (v/(1-beta1**t)) / (sqrt(s/(1-beta2**t)) + epsilon).

    Returns `(parameters, v, s)` (the same dicts, their arrays updated)."""
    _adam(parameters, grads, v, s, t, learning_rate, beta1, beta2, epsilon)
    return parameters, v, s


def random_mini_batches(X, Y, mini_batch_size=64, seed=0):
    """Shuffle the examples (columns) of X and Y together and cut them into
    mini-batches of `mini_batch_size`; the last one holds the remainder.

    The permutation is the course's, np.random.seed(seed);
    np.random.permutation(m), drawn from a private RandomState so NumPy's
    global random state is left alone. Returns a list of (X_batch, Y_batch)."""
    X = np.asarray(X)
    Y = np.asarray(Y)
    if X.ndim != 2 or Y.ndim != 2:
        raise ValueError(
            f"X and Y must be 2-D (features or outputs, examples); got shapes {X.shape} "
            f"and {Y.shape}"
        )
    m = X.shape[1]
    if Y.shape[1] != m:
        raise ValueError(f"X has {m} examples (columns) but Y has {Y.shape[1]}")
    size = check.step(mini_batch_size, "mini_batch_size")
    permutation = np.random.RandomState(seed).permutation(m)
    shuffled_X = X[:, permutation]
    shuffled_Y = Y[:, permutation]
    return [(shuffled_X[:, k:k + size], shuffled_Y[:, k:k + size]) for k in range(0, m, size)]


def _zeros_like(parameters):
    check.check_dict("parameters", parameters)
    state = {}
    for key, p in parameters.items():
        if not isinstance(key, str):
            raise TypeError(f"parameter keys must be str, got {key!r}")
        check.parameter(f"parameters[{key!r}]", p)
        state["d" + key] = np.zeros(p.shape, dtype=p.dtype, order="F" if _f_only(p) else "C")
    return state


def _f_only(a):
    return a.flags.f_contiguous and not a.flags.c_contiguous
