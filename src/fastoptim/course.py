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
    """One step of gradient descent, in place, as the course's function.

    Update rule, for every key k::

        parameters[k] -= learning_rate * grads["d" + k]

    Parameters
    ----------
    parameters : dict of str to numpy.ndarray
        Floating-point arrays of any shape, updated in place (float32 and
        float64 arrays contiguous in one layout take the C path).
    grads : dict of str to numpy.ndarray
        grads["d" + k] has the shape of parameters[k].
    learning_rate : float
        Step size, finite and >= 0.

    Returns
    -------
    dict
        `parameters`, the same dict, its arrays updated.

    Raises
    ------
    KeyError
        A gradient is missing (the key is named).
    TypeError
        An argument is not a dict, or an array is not a floating-point ndarray.
    ValueError
        Shapes differ, an array is read-only or shares memory with another
        written array, or learning_rate is out of range. Nothing is modified.

    References
    ----------
    The classic deep-learning course, "Optimization methods".
    """
    _gd(parameters, grads, learning_rate)
    return parameters


def initialize_velocity(parameters):
    """Zero velocities for update_parameters_with_momentum.

    Parameters
    ----------
    parameters : dict of str to numpy.ndarray
        Floating-point arrays.

    Returns
    -------
    dict
        v["d" + k]: zeros with the shape, dtype and memory layout of
        parameters[k]; float32 for a 16-bit (float16 or bfloat16) parameter.
    """
    return _zeros_like(parameters)


def update_parameters_with_momentum(parameters, grads, v, beta, learning_rate):
    """One momentum step, in place, in the course's exponential-average form.

    Update rule, for every key k (with d = "d" + k)::

        v[d] = beta * v[d] + (1 - beta) * grads[d]
        parameters[k] -= learning_rate * v[d]

    Equal to torch.optim.SGD(lr=learning_rate*(1-beta), momentum=beta, dampening=0).

    Parameters
    ----------
    parameters : dict of str to numpy.ndarray
        Floating-point arrays, updated in place.
    grads : dict of str to numpy.ndarray
        grads["d" + k] has the shape of parameters[k].
    v : dict of str to numpy.ndarray
        The velocities (initialize_velocity), with each parameter's shape and
        dtype; updated in place.
    beta : float
        The momentum, in [0, 1).
    learning_rate : float
        Step size, finite and >= 0.

    Returns
    -------
    tuple of dict
        (parameters, v), the same dicts, their arrays updated.

    Raises
    ------
    KeyError, TypeError, ValueError
        As update_parameters_with_gd; also for v. Nothing is modified.

    References
    ----------
    The classic deep-learning course, "Optimization methods".
    """
    _momentum(parameters, grads, v, beta, learning_rate)
    return parameters, v


def initialize_adam(parameters):
    """Zero moments for update_parameters_with_adam.

    Parameters
    ----------
    parameters : dict of str to numpy.ndarray
        Floating-point arrays.

    Returns
    -------
    tuple of dict
        (v, s): v["d" + k] and s["d" + k] are zeros with the shape, dtype and
        memory layout of parameters[k]; float32 for a 16-bit (float16 or
        bfloat16) parameter.
    """
    return _zeros_like(parameters), _zeros_like(parameters)


def update_parameters_with_adam(parameters, grads, v, s, t, learning_rate=0.01,
                                beta1=0.9, beta2=0.999, epsilon=1e-8):
    """One Adam step, in place, as the course's function.

    Update rule, for every key k (with d = "d" + k, g = grads[d])::

        v[d] = beta1 * v[d] + (1 - beta1) * g
        s[d] = beta2 * s[d] + (1 - beta2) * g**2
        parameters[k] -= learning_rate * (v[d] / (1 - beta1**t)) / (
            sqrt(s[d] / (1 - beta2**t)) + epsilon)

    Epsilon outside the square root, as the course's code and torch have it.

    Parameters
    ----------
    parameters : dict of str to numpy.ndarray
        Floating-point arrays, updated in place.
    grads : dict of str to numpy.ndarray
        grads["d" + k] has the shape of parameters[k].
    v, s : dict of str to numpy.ndarray
        The first and second moments (initialize_adam), stored uncorrected,
        with each parameter's shape and dtype; updated in place.
    t : int
        This step's number, from 1 (any Python int).
    learning_rate : float, default 0.01
        Step size, finite and >= 0.
    beta1, beta2 : float, default 0.9, 0.999
        Decay rates of v and s, in [0, 1).
    epsilon : float, default 1e-8
        Added to the denominator, >= 0.

    Returns
    -------
    tuple of dict
        (parameters, v, s), the same dicts, their arrays updated.

    Raises
    ------
    KeyError, TypeError, ValueError
        As update_parameters_with_gd; also for v and s, and t < 1 or not an
        integer. Nothing is modified.

    References
    ----------
    Kingma and Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015;
    the classic deep-learning course, "Optimization methods".
    """
    _adam(parameters, grads, v, s, t, learning_rate, beta1, beta2, epsilon)
    return parameters, v, s


def random_mini_batches(X, Y, mini_batch_size=64, seed=0):
    """Shuffle the examples and cut them into mini-batches, as the course does.

    The permutation is the course's, ``np.random.seed(seed);
    np.random.permutation(m)``, drawn from a private RandomState so NumPy's
    global random state is left alone. Every complete batch is returned (the
    seed notes' version returned only the remainder).

    Parameters
    ----------
    X : array_like, shape (n_x, m)
        Inputs, one example per column.
    Y : array_like, shape (n_y, m)
        Labels, one example per column.
    mini_batch_size : int, default 64
        Examples per batch, >= 1; the last batch holds the remainder.
    seed : int, default 0

    Returns
    -------
    list of tuple
        (mini_batch_X, mini_batch_Y) pairs, views of the shuffled copies.

    Raises
    ------
    ValueError
        X or Y is not 2-D, their numbers of columns differ, or
        mini_batch_size < 1.
    TypeError
        mini_batch_size is not an integer.
    """
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
        state["d" + key] = np.zeros(p.shape, dtype=check.state_dtype(p.dtype),
                                    order="F" if _f_only(p) else "C")
    return state


def _f_only(a):
    return a.flags.f_contiguous and not a.flags.c_contiguous
