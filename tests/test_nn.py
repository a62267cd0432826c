"""fastoptim.demo.nn: the course's network, checked against the course's explicit
3-layer code and against finite differences."""
import numpy as np
import pytest

from fastoptim.demo.nn import (
    backward_propagation,
    compute_cost,
    forward_propagation,
    initialize_parameters,
    predict,
)


def course_forward(X, p):
    """The course's 3-layer forward pass, written out layer by layer."""
    z1 = np.dot(p["W1"], X) + p["b1"]
    a1 = np.maximum(0, z1)
    z2 = np.dot(p["W2"], a1) + p["b2"]
    a2 = np.maximum(0, z2)
    z3 = np.dot(p["W3"], a2) + p["b3"]
    a3 = 1 / (1 + np.exp(-z3))
    return a3, (a1, a2)


def course_backward(X, Y, p, a3, a1, a2):
    m = X.shape[1]
    dz3 = 1. / m * (a3 - Y)
    dW3 = np.dot(dz3, a2.T)
    db3 = np.sum(dz3, axis=1, keepdims=True)
    dz2 = np.multiply(np.dot(p["W3"].T, dz3), np.int64(a2 > 0))
    dW2 = np.dot(dz2, a1.T)
    db2 = np.sum(dz2, axis=1, keepdims=True)
    dz1 = np.multiply(np.dot(p["W2"].T, dz2), np.int64(a1 > 0))
    dW1 = np.dot(dz1, X.T)
    db1 = np.sum(dz1, axis=1, keepdims=True)
    return {"dW1": dW1, "db1": db1, "dW2": dW2, "db2": db2, "dW3": dW3, "db3": db3}


def random_network(layers_dims, m, seed, dtype=np.float64):
    """Parameters with nonzero biases, inputs and 0/1 labels."""
    rng = np.random.RandomState(seed)
    p = {}
    for l in range(1, len(layers_dims)):
        W = rng.randn(layers_dims[l], layers_dims[l - 1]) / np.sqrt(layers_dims[l - 1])
        p["W" + str(l)] = W.astype(dtype)
        p["b" + str(l)] = (0.1 * rng.randn(layers_dims[l], 1)).astype(dtype)
    X = rng.randn(layers_dims[0], m).astype(dtype)
    Y = (rng.rand(layers_dims[-1], m) < 0.5).astype(np.intp)
    return p, X, Y


# ------------------------------------------------ initialisation


@pytest.mark.parametrize("layers_dims", [[2, 5, 2, 1], [3, 4, 4, 2, 1], [7, 1], [1, 1, 1]])
def test_initialize_parameters_is_the_course_he_init(layers_dims):
    saved = np.random.get_state()
    try:
        np.random.seed(3)  # the course's initialize_parameters
        expected = {}
        for l in range(1, len(layers_dims)):
            expected["W" + str(l)] = (np.random.randn(layers_dims[l], layers_dims[l - 1])
                                      * np.sqrt(2 / layers_dims[l - 1]))
            expected["b" + str(l)] = np.zeros((layers_dims[l], 1))
    finally:
        np.random.set_state(saved)
    parameters = initialize_parameters(layers_dims)
    assert list(parameters) == list(expected)
    for key in expected:
        np.testing.assert_array_equal(parameters[key], expected[key], strict=True)
    assert_state_unchanged(saved)


def test_initialize_parameters_float32_and_global_state():
    saved = np.random.get_state()
    p64 = initialize_parameters([2, 5, 2, 1])
    p32 = initialize_parameters([2, 5, 2, 1], dtype=np.float32)
    assert_state_unchanged(saved)
    for key in p64:
        assert p32[key].dtype == np.float32
        np.testing.assert_array_equal(p32[key], p64[key].astype(np.float32))
    # the same numbers every call
    again = initialize_parameters([2, 5, 2, 1])
    for key in p64:
        np.testing.assert_array_equal(again[key], p64[key])


def assert_state_unchanged(saved):
    now = np.random.get_state()
    np.testing.assert_array_equal(now[1], saved[1], err_msg="global random state changed")
    assert now[2:] == saved[2:]


@pytest.mark.parametrize("layers_dims, error", [
    ([2], ValueError), ([], ValueError), ([2, 0, 1], ValueError), ([2, 1.5], TypeError),
    ("abc", TypeError),
])
def test_initialize_parameters_rejects_bad_layers(layers_dims, error):
    with pytest.raises(error, match="layers_dims"):
        initialize_parameters(layers_dims)


def test_initialize_parameters_rejects_integer_dtype():
    with pytest.raises(TypeError, match="dtype"):
        initialize_parameters([2, 3, 1], dtype=np.int64)


# ------------------------------------------------ forward, cost, backward, predict


def test_forward_and_backward_equal_the_course_code():
    p, X, Y = random_network([2, 5, 2, 1], 64, seed=0)
    AL, caches = forward_propagation(X, p)
    a3, (a1, a2) = course_forward(X, p)
    np.testing.assert_array_equal(AL, a3)
    grads = backward_propagation(X, Y, caches)
    expected = course_backward(X, Y, p, a3, a1, a2)
    assert set(grads) == set(expected)
    for key in expected:
        np.testing.assert_array_equal(grads[key], expected[key], err_msg=key, strict=True)


def test_compute_cost_is_the_summed_cross_entropy():
    rng = np.random.RandomState(1)
    AL = rng.uniform(0.05, 0.95, size=(1, 37))
    Y = (rng.rand(1, 37) < 0.5).astype(np.intp)
    expected = sum(-np.log(a) if y == 1 else -np.log(1 - a) for a, y in zip(AL[0], Y[0]))
    cost = compute_cost(AL, Y)
    assert isinstance(cost, float)
    assert cost == pytest.approx(expected, rel=1e-13)
    # summed, not averaged: the same examples twice cost twice as much
    assert compute_cost(np.hstack([AL, AL]), np.hstack([Y, Y])) == pytest.approx(2 * cost,
                                                                                 rel=1e-13)


def test_shape_mismatch_between_labels_and_output():
    p, X, Y = random_network([2, 3, 1], 10, seed=2)
    AL, caches = forward_propagation(X, p)
    with pytest.raises(ValueError, match="Y has shape"):
        compute_cost(AL, Y[:, :9])
    with pytest.raises(ValueError, match="Y has shape"):
        backward_propagation(X, Y.T, caches)


def numerical_gradients(X, Y, parameters, h=1e-6):
    """Central differences of the mean cost, compute_cost / m, in float64."""
    m = X.shape[1]

    def J():
        return compute_cost(forward_propagation(X, parameters)[0], Y) / m

    grads = {}
    for key, array in parameters.items():
        g = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            saved = array[index]
            array[index] = saved + h
            plus = J()
            array[index] = saved - h
            minus = J()
            array[index] = saved
            g[index] = (plus - minus) / (2 * h)
        grads["d" + key] = g
    return grads


@pytest.mark.parametrize("layers_dims, m", [
    ([2, 5, 2, 1], 64), ([2, 5, 2, 1], 1), ([3, 4, 3, 1], 20), ([4, 6, 5, 3, 2], 15), ([3, 1], 8),
])
def test_backward_propagation_matches_finite_differences(layers_dims, m):
    p, X, Y = random_network(layers_dims, m, seed=len(layers_dims) + m)
    AL, caches = forward_propagation(X, p)
    grads = backward_propagation(X, Y, caches)
    numeric = numerical_gradients(X, Y, p)
    assert set(grads) == set(numeric)
    for key in numeric:
        assert grads[key].shape == p[key[1:]].shape
        np.testing.assert_allclose(grads[key], numeric[key], rtol=1e-5, atol=1e-8, err_msg=key)
    # the relative error over all parameters, as the course's gradient check computes it
    analytic = np.concatenate([grads[k].ravel() for k in numeric])
    approx = np.concatenate([numeric[k].ravel() for k in numeric])
    difference = np.linalg.norm(analytic - approx) / (np.linalg.norm(analytic)
                                                       + np.linalg.norm(approx))
    assert difference < 1e-7


@pytest.mark.parametrize("layers_dims", [[2, 5, 2, 1], [4, 6, 5, 3, 2]])
def test_float32_network_stays_float32_and_agrees_with_float64(layers_dims):
    p64, X64, Y = random_network(layers_dims, 30, seed=7)
    p32 = {k: a.astype(np.float32) for k, a in p64.items()}
    AL32, caches32 = forward_propagation(X64, p32)  # X converted to the parameters' dtype
    grads32 = backward_propagation(X64, Y, caches32)
    AL64, caches64 = forward_propagation(X64, p64)
    grads64 = backward_propagation(X64, Y, caches64)
    assert AL32.dtype == np.float32
    np.testing.assert_allclose(AL32, AL64, rtol=1e-5, atol=1e-6)
    for key in grads64:
        assert grads32[key].dtype == np.float32, key
        np.testing.assert_allclose(grads32[key], grads64[key], rtol=1e-4, atol=1e-5, err_msg=key)
    assert compute_cost(AL32, Y) == pytest.approx(compute_cost(AL64, Y), rel=1e-5)


def test_predict_thresholds_the_output_at_one_half():
    p, X, Y = random_network([3, 4, 1], 200, seed=4)
    AL, _ = forward_propagation(X, p)
    prediction = predict(X, p)
    assert prediction.shape == (1, 200) and prediction.dtype.kind == "i"
    assert set(np.unique(prediction)) <= {0, 1}
    np.testing.assert_array_equal(prediction, (AL > 0.5).astype(int))
    assert 0 < prediction.sum() < 200  # both classes occur for this network


def test_inputs_are_left_unchanged():
    p, X, Y = random_network([2, 5, 2, 1], 16, seed=5)
    before = [a.copy() for a in (X, Y, *p.values())]
    AL, caches = forward_propagation(X, p)
    backward_propagation(X, Y, caches)
    compute_cost(AL, Y)
    predict(X, p)
    for saved, now in zip(before, (X, Y, *p.values())):
        np.testing.assert_array_equal(saved, now)
