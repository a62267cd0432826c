"""The seed's NumPy code, corrected: a benchmark contender, not used by the library.

Written the course's way: a Python loop over the dict that builds new arrays and
rebinds them (`parameters[k] = parameters[k] - ...`), one NumPy pass and one
temporary per operation. Generalised from the course's "W1", "b1", ... to every
key k, whose gradient and state live under "d" + k. The seed's Adam slip is
fixed: s = beta2*s + (1-beta2)*g**2.
"""
import numpy as np


def update_parameters_with_gd(parameters, grads, learning_rate):
    for k in list(parameters):
        parameters[k] = parameters[k] - learning_rate * grads["d" + k]
    return parameters


def update_parameters_with_momentum(parameters, grads, v, beta, learning_rate):
    for k in list(parameters):
        d = "d" + k
        v[d] = beta * v[d] + (1 - beta) * grads[d]
        parameters[k] = parameters[k] - learning_rate * v[d]
    return parameters, v


def update_parameters_with_adam(parameters, grads, v, s, t, learning_rate=0.01,
                                beta1=0.9, beta2=0.999, epsilon=1e-8):
    v_corrected = {}
    s_corrected = {}
    for k in list(parameters):
        d = "d" + k
        v[d] = beta1 * v[d] + (1 - beta1) * grads[d]
        v_corrected[d] = v[d] / (1 - beta1 ** t)
        s[d] = beta2 * s[d] + (1 - beta2) * (grads[d] ** 2)
        s_corrected[d] = s[d] / (1 - beta2 ** t)
        parameters[k] = parameters[k] - learning_rate * (
            v_corrected[d] / (np.sqrt(s_corrected[d]) + epsilon))
    return parameters, v, s
