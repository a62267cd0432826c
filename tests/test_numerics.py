"""Numerical faults replayed from other libraries' bug reports, each kind fixed
and pinned: a root of a quantity that rounding makes negative, a sum that the
reference rounds once, a global norm at the ends of the floating-point range.
Both backends (whichever the suite runs in), float32 and float64."""
import math

import numpy as np
import pytest

import fastoptim as fo

DTYPES = [np.float32, np.float64]
IDS = ["f32", "f64"]


# --- a square root of a quantity that rounding can make negative ----------------------------

@pytest.mark.parametrize("dtype,alpha,grad,steps", [
    (np.float32, 0.5, 0.3, 24),        # NaN at step 24 before the fix
    (np.float32, 0.99, 1.1, 1300),     # default alpha: NaN at step 1161
    (np.float64, 0.5, 1.1, 60),        # NaN at step 53
])
def test_centered_rmsprop_stays_finite_under_a_constant_gradient(dtype, alpha, grad, steps):
    """sqrt(square_avg - grad_avg**2): the variance is exactly (1 - a^t) a^t g^2 >= 0,
    but the subtraction of two nearly equal roundings can go below zero."""
    params = {"W": np.zeros(1, dtype)}
    opt = fo.RMSprop(params, centered=True, alpha=alpha)
    g = {"dW": np.array([grad], dtype)}
    for t in range(1, steps + 1):
        opt.step(g)
        assert np.isfinite(params["W"][0]), f"step {t}"


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_a_negative_rounded_variance_counts_as_zero(dtype, momentum):
    """State with square_avg < grad_avg**2 (what rounding can produce): the
    denominator is then exactly epsilon, as the mathematics (variance >= 0) says."""
    params = {"W": np.ones(1, dtype)}
    opt = fo.RMSprop(params, learning_rate=0.01, alpha=0.5, epsilon=1e-3, centered=True,
                     momentum=momentum)
    sd = opt.state_dict()
    sd["square_avg/dW"] = np.array([0.5], dtype)
    sd["grad_avg/dW"] = np.array([1.0], dtype)
    opt.load_state_dict(sd)
    opt.step({"dW": np.ones(1, dtype)})
    # square_avg = 0.75, grad_avg = 1.0: the variance rounds to -0.25; d = 0 + eps
    one, lr, eps = dtype(1), dtype(0.01), dtype(1e-3)
    assert opt.state["square_avg"]["dW"][0] == dtype(0.75)
    assert params["W"][0] == one - lr * (one / eps)


# --- one rounding where the reference rounds once: float32 L2 weight decay -----------------

W0, G0 = np.float32(-2.5096388), np.float32(0.2509639)   # near g = -weight_decay * W


def _single(wd):
    """g + wd*W with one rounding (the exact value, rounded to float32)."""
    return np.float32(np.float64(G0) + np.float64(np.float32(wd)) * np.float64(W0))


def test_the_equilibrium_input_needs_one_rounding():
    two = np.float32(G0 + np.float32(np.float32(0.1) * W0))
    assert two == 0.0 and _single(0.1) != 0.0  # two roundings lose the whole gradient


STATE_OF_ONE_STEP = {  # optimizer, kwargs, state, its value after one step from gi
    "RMSprop": (dict(weight_decay=0.1, centered=True, momentum=0.1), "grad_avg",
                lambda gi: np.float32(1 - 0.99) * gi),
    "Adam": (dict(weight_decay=0.1), "v", lambda gi: np.float32(1 - 0.9) * gi),
    "Adagrad": (dict(weight_decay=0.1), "sum", lambda gi: np.float32(0) + gi * gi),
    "Adamax": (dict(weight_decay=0.1), "v", lambda gi: np.float32(1 - 0.9) * gi),
    "NAdam": (dict(weight_decay=0.1), "v", lambda gi: np.float32(1 - 0.9) * gi),
    "SGD": (dict(weight_decay=0.1, momentum=0.9), "momentum_buffer", lambda gi: gi),
}


@pytest.mark.parametrize("name", sorted(STATE_OF_ONE_STEP))
def test_float32_l2_decay_rounds_once(name):
    kwargs, state, expect = STATE_OF_ONE_STEP[name]
    params = {"W": np.array([W0])}
    opt = getattr(fo, name)(params, **kwargs)
    opt.step({"dW": np.array([G0])})
    gi = _single(0.1)
    assert opt.state[state]["dW"][0] == expect(gi)
    if name != "SGD":  # a normalizing step moves W (two roundings left it in place)
        assert params["W"][0] != W0


def test_float32_l2_decay_matches_torch_at_the_equilibrium():
    torch = pytest.importorskip("torch")
    params = {"W": np.array([W0])}
    opt = fo.RMSprop(params, weight_decay=0.1, centered=True, momentum=0.1)
    opt.step({"dW": np.array([G0])})
    w = torch.tensor([W0], requires_grad=True)
    w.grad = torch.tensor([G0])
    topt = torch.optim.RMSprop([w], weight_decay=0.1, centered=True, momentum=0.1)
    topt.step()
    buf = topt.state[w]["momentum_buffer"].numpy()[0]
    assert abs(buf - 1.24) < 0.01
    np.testing.assert_allclose(opt.state["momentum_buffer"]["dW"][0], buf, rtol=1e-5)
    np.testing.assert_allclose(params["W"][0], w.detach().numpy()[0], rtol=1e-6)


# --- the global norm at the ends of the floating-point range -----------------------------

def test_clipping_a_gradient_whose_square_overflows():
    """The reported case: the norm of [1.5e154] is 1.5e154 (its square overflows
    double), so clipping to 1 gives a step of exactly -1."""
    params = {"W": np.zeros(1)}
    opt = fo.GD(params, learning_rate=1.0, max_grad_norm=1.0)
    opt.step({"dW": np.array([1.5e154])})
    assert opt.last_grad_norm == 1.5e154
    assert params["W"][0] == pytest.approx(-1.0, rel=1e-15)


def _extremes(dtype):
    fi = np.finfo(dtype)
    big, tiny, sub = float(fi.max), float(fi.tiny), float(fi.smallest_subnormal)
    return {
        "largest": [big / 2, big / 3, -big / 7],   # the norm itself still finite
        "beyond a square": [math.sqrt(big) * 4, -math.sqrt(big) * 2, 1.0],
        "smallest normal": [tiny, -tiny * 3, tiny / 2],
        "subnormal": [sub, -sub * 5, sub * 1000],
        "below a square": [math.sqrt(tiny) / 8, math.sqrt(tiny) / 3],
        "mixed": [big / 2, sub, 1.0, -tiny],
        "zeros": [0.0, -0.0],
    }


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("case", list(_extremes(np.float64)))
@pytest.mark.parametrize("max_norm", [1.0, 1e-30])
def test_norm_and_clipping_at_the_extremes(dtype, case, max_norm):
    """Any finite gradient gives the right norm (math.hypot of the values, to a
    few ulps) and the right clipping: the clipped gradient has the norm asked for,
    for values at and beyond the ends of float32's and float64's ranges, even
    when the clipping factor is itself below the normal range."""
    values = np.array(_extremes(dtype)[case], dtype=dtype)
    n = values.size
    grads = {"dW": np.concatenate([values, np.zeros(3000, dtype)])}  # several norm chunks
    expected = math.hypot(*[float(x) for x in values])
    params = {"W": np.zeros(n + 3000, dtype)}
    opt = fo.GD(params, learning_rate=1.0, max_grad_norm=max_norm)
    opt.step(grads)
    assert math.isfinite(opt.last_grad_norm)
    assert opt.last_grad_norm == pytest.approx(expected, rel=4e-16 * 8, abs=0.0)
    step = -params["W"].astype(np.float64)
    coef = max_norm / (expected + 1e-6)
    if coef < 1.0:
        # clipped: the step is the gradient scaled to max_norm; every element
        # whose scaled value is normal in the dtype is right to a few ulps
        want = values.astype(np.float64) * coef
        fi = np.finfo(dtype)
        normal = np.abs(want) >= float(fi.tiny)
        np.testing.assert_allclose(step[:n][normal], want[normal], rtol=8 * float(fi.eps))
    else:
        np.testing.assert_array_equal(step[:n], values.astype(np.float64))


@pytest.mark.skipif(fo.BACKEND != "c", reason="compares the compiled step with the NumPy step")
@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("case", list(_extremes(np.float64)))
def test_extreme_norms_and_split_scales_agree_bitwise(dtype, case):
    """The rescaled norm pass and the two-factor scale: compiled == NumPy, bitwise."""
    values = np.array(_extremes(dtype)[case], dtype=dtype)
    grads = {"dW": np.concatenate([values, np.linspace(-1, 1, 5000).astype(dtype) * values[0]])}
    for rule in ("Adam", "SGD", "Lion"):
        out = []
        for compiled in (True, False):
            params = {"W": np.ones(grads["dW"].size, dtype)}
            opt = getattr(fo, rule)(params, max_grad_norm=1e-30)
            if not compiled:
                opt._unbind()
            opt.step(grads)
            out.append((params["W"].copy(), opt.last_grad_norm))
        assert out[0][1] == out[1][1] or (math.isnan(out[0][1]) and math.isnan(out[1][1]))
        np.testing.assert_array_equal(out[0][0].view(np.uint8), out[1][0].view(np.uint8),
                                      err_msg=f"{rule} {case}")
