"""Issue 13's accuracy check: on scikit-learn's digits (MLP [64, 256, 128, 10],
AdamW, learning rate 1e-3, 3 seeds), the final training loss of bfloat16
parameters with float32 master weights, with Kahan summation and with
stochastic rounding stays within the float32 runs' spread plus 5%; rounding
to nearest does not (it stalls: the check can fail)."""
import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("ml_dtypes")
from fastoptim.demo import lowp_digits as L  # noqa: E402

CHECKED = ("bf16 + fp32 master", "bf16 + Kahan", "bf16 + stochastic rounding")


@pytest.fixture(scope="module")
def losses():
    X, Y = L.data()
    configs = {c[0]: c for c in L.CONFIGS}
    return {name: [L.train(configs[name], seed, X, Y) for seed in L.SEEDS]
            for name in ("fp32",) + CHECKED + ("bf16 round-to-nearest",)}


@pytest.mark.parametrize("name", CHECKED)
def test_within_the_fp32_spread_plus_5_percent(losses, name):
    lo, hi = 0.95 * min(losses["fp32"]), 1.05 * max(losses["fp32"])
    assert lo <= np.mean(losses[name]) <= hi, (name, losses[name], losses["fp32"])


def test_round_to_nearest_is_outside(losses):
    assert np.mean(losses["bf16 round-to-nearest"]) > 1.05 * max(losses["fp32"])


def test_the_loss_is_the_mean_cross_entropy():
    """loss() against a direct float64 computation on a small network."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 7)).astype(np.float32)
    Y = np.eye(10, dtype=np.float32)[:, rng.integers(0, 10, 7)]
    w = L.initial(3)
    a = X.astype(np.float64)
    for l in (1, 2, 3):
        z = w[f"W{l}"].astype(np.float64) @ a + w[f"b{l}"]
        a = np.maximum(z, 0) if l < 3 else z
    logp = a - a.max(axis=0) - np.log(np.exp(a - a.max(axis=0)).sum(axis=0))
    expected = -np.mean((Y * logp).sum(axis=0))
    assert L.loss(X, Y, w) == pytest.approx(expected, rel=1e-5)


def test_the_gradients_are_the_losss():
    """gradients() against central differences of loss() in float64 weights."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((64, 5)).astype(np.float32)
    Y = np.eye(10, dtype=np.float32)[:, rng.integers(0, 10, 5)]
    w = {k: a.astype(np.float64) + (0.05 if k.startswith("b") else 0.0)
         for k, a in L.initial(4).items()}
    Xd = X.astype(np.float64)
    g = L.gradients(Xd, Y.astype(np.float64), w)
    for key, index in [("W3", (2, 5)), ("b3", (4, 0)), ("W2", (7, 11)), ("W1", (3, 20)),
                       ("b1", (9, 0))]:
        h = 1e-6
        plus = {k: a.copy() for k, a in w.items()}
        minus = {k: a.copy() for k, a in w.items()}
        plus[key][index] += h
        minus[key][index] -= h
        numeric = (L.loss(Xd, Y, plus) - L.loss(Xd, Y, minus)) / (2 * h)
        assert g["d" + key][index] == pytest.approx(numeric, rel=1e-4, abs=1e-8), key
