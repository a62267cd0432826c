"""The course's reference network in NumPy: LINEAR-RELU hidden layers, a
LINEAR-SIGMOID output, cross-entropy cost.

Parameters live in a dict {"W1", "b1", ..., "WL", "bL"} and gradients in
{"dW1", "db1", ...}, the layout fastoptim's updates take. The network computes
in the parameters' dtype (float32 or float64). Operations follow the course's
code in the same order, so float64 results match it.
"""
import operator

import numpy as np


def initialize_parameters(layers_dims, *, dtype=np.float64, seed=3):
    """He initialisation, as the course's np.random.seed(3) followed by
    W = randn(n_l, n_prev) * sqrt(2 / n_prev), b = 0 for each layer, drawn
    from a private RandomState so NumPy's global random state is left alone.

    layers_dims: sizes of the input and of each layer, e.g. [2, 5, 2, 1].
    Returns {"W1": (n_1, n_0), "b1": (n_1, 1), ...} in `dtype`.
    """
    dims = _dims(layers_dims)
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"dtype must be a floating-point type, got {dtype}")
    rng = np.random.RandomState(seed)
    parameters = {}
    for l in range(1, len(dims)):
        W = rng.randn(dims[l], dims[l - 1]) * np.sqrt(2 / dims[l - 1])
        parameters["W" + str(l)] = W.astype(dtype, copy=False)
        parameters["b" + str(l)] = np.zeros((dims[l], 1), dtype=dtype)
    return parameters


def relu(Z):
    return np.maximum(0, Z)


def sigmoid(Z):
    return 1 / (1 + np.exp(-Z))


def forward_propagation(X, parameters):
    """X of shape (n_0, m) through every layer.

    Returns AL, the output probabilities of shape (n_L, m), and `caches`, one
    (A_prev, W, A) tuple per layer for backward_propagation. X is converted to
    the parameters' dtype.
    """
    L = len(parameters) // 2
    A = np.asarray(X, dtype=parameters["W1"].dtype)
    caches = []
    for l in range(1, L + 1):
        W, b = parameters["W" + str(l)], parameters["b" + str(l)]
        A_prev = A
        Z = np.dot(W, A_prev) + b
        A = sigmoid(Z) if l == L else relu(Z)
        caches.append((A_prev, W, A))
    return A, caches


def compute_cost(AL, Y):
    """The cross-entropy summed over the examples (the course's convention:
    divide by the number of examples afterwards). Returns a float."""
    Y = _labels(Y, AL)
    logprobs = np.multiply(-np.log(AL), Y) + np.multiply(-np.log(1 - AL), 1 - Y)
    return float(np.sum(logprobs))


def backward_propagation(X, Y, caches):
    """Gradients of the mean cost (compute_cost / m) with respect to every
    parameter, for the mini-batch X of shape (n_0, m) and labels Y of shape
    (n_L, m). Returns {"dW1": ..., "db1": ..., ...} shaped like the parameters.
    """
    m = X.shape[1]
    AL = caches[-1][2]
    dZ = 1.0 / m * (AL - _labels(Y, AL))  # sigmoid and cross-entropy together
    grads = {}
    for l in range(len(caches), 0, -1):
        A_prev, W, _ = caches[l - 1]
        grads["dW" + str(l)] = np.dot(dZ, A_prev.T)
        grads["db" + str(l)] = np.sum(dZ, axis=1, keepdims=True)
        if l > 1:
            # A_prev = relu(Z_prev), so A_prev > 0 exactly where relu'(Z_prev) = 1
            dZ = np.multiply(np.dot(W.T, dZ), A_prev > 0)
    return grads


def predict(X, parameters):
    """0/1 predictions (output probability > 0.5) of shape (n_L, m), as np.intp."""
    AL, _ = forward_propagation(X, parameters)
    return (AL > 0.5).astype(np.intp)


def _labels(Y, AL):
    Y = np.asarray(Y)
    if Y.shape != AL.shape:
        raise ValueError(f"Y has shape {Y.shape} but the network's output has shape {AL.shape}")
    return Y.astype(AL.dtype, copy=False)


def _dims(layers_dims):
    try:
        dims = [operator.index(n) for n in layers_dims]
    except TypeError:
        raise TypeError(
            f"layers_dims must be a sequence of integers, got {layers_dims!r}"
        ) from None
    if len(dims) < 2 or min(dims) < 1:
        raise ValueError(
            f"layers_dims needs an input size and at least one layer, all >= 1; got {layers_dims!r}"
        )
    return dims
