"""Low precision, measured: an MLP [64, 256, 128, 10] on scikit-learn's digits
trained with fastoptim.AdamW (learning rate 1e-3) in each storage
configuration, over several seeds; the final training loss of each against
float32's.

    python -m fastoptim.demo.lowp_digits [--epochs 15] [--seeds 3]

The network's arithmetic is float32 (NumPy has no bfloat16 matrix product):
16-bit parameters are widened for the forward and backward passes and the
gradients are float32. "bf16 + fp32 master" keeps float32 parameters and runs
the passes on their bfloat16 roundings (mixed precision with master weights);
the other bf16 rows keep the parameters themselves in bfloat16 and differ in
how the optimizer writes them back. Needs scikit-learn and ml_dtypes.
"""
import argparse
import math
import sys

import numpy as np

LAYERS = (64, 256, 128, 10)
LR = 1e-3
BATCH = 64
EPOCHS = 15
SEEDS = (0, 1, 2)

# (name, parameter dtype, optimizer settings, run the passes on bfloat16-rounded weights)
CONFIGS = [
    ("fp32", "float32", {}, False),
    ("bf16 + fp32 master", "float32", {}, True),
    ("bf16 + Kahan", "bfloat16", {"kahan_summation": True}, False),
    ("bf16 + stochastic rounding", "bfloat16", {"stochastic_rounding": True}, False),
    ("bf16 round-to-nearest", "bfloat16", {}, False),
    ("fp32 + bf16 state", "float32", {"state_bits": 16}, False),
    ("fp32 + 8-bit state", "float32", {"state_bits": 8, "min_8bit_size": 4096}, False),
    ("bf16 + SR + 8-bit state", "bfloat16",
     {"stochastic_rounding": True, "state_bits": 8, "min_8bit_size": 4096}, False),
]


def data():
    """The 1797 digits: pixels / 16 (64, m) float32, one-hot labels (10, m)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = (digits.data / 16.0).T.astype(np.float32)
    Y = np.eye(10, dtype=np.float32)[:, digits.target]
    return X, Y


def _bf16():
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


def initial(seed):
    """He-initialized weights and zero biases, float32."""
    rng = np.random.default_rng(seed)
    p = {}
    for l in range(1, len(LAYERS)):
        p[f"W{l}"] = (rng.standard_normal((LAYERS[l], LAYERS[l - 1]))
                      * math.sqrt(2.0 / LAYERS[l - 1])).astype(np.float32)
        p[f"b{l}"] = np.zeros((LAYERS[l], 1), np.float32)
    return p


def _as_f32(p, round_bf16):
    if round_bf16:
        return {k: a.astype(_bf16()).astype(np.float32) for k, a in p.items()}
    return {k: a.astype(np.float32) for k, a in p.items()}


def forward(X, w):
    """Activations of every layer (ReLU, then softmax probabilities)."""
    A = [X]
    L = len(LAYERS) - 1
    for l in range(1, L + 1):
        Z = w[f"W{l}"] @ A[-1] + w[f"b{l}"]
        if l < L:
            A.append(np.maximum(Z, 0))
        else:
            Z = Z - Z.max(axis=0, keepdims=True)
            E = np.exp(Z)
            A.append(E / E.sum(axis=0, keepdims=True))
    return A


def loss(X, Y, w):
    """Mean cross-entropy, in float64."""
    P = forward(X, w)[-1].astype(np.float64)
    return float(-np.mean(np.sum(Y * np.log(np.maximum(P, 1e-300)), axis=0)))


def gradients(X, Y, w):
    A = forward(X, w)
    L = len(LAYERS) - 1
    dZ = (A[-1] - Y) / X.shape[1]
    g = {}
    for l in range(L, 0, -1):
        g[f"dW{l}"] = dZ @ A[l - 1].T
        g[f"db{l}"] = dZ.sum(axis=1, keepdims=True)
        if l > 1:
            dZ = (w[f"W{l}"].T @ dZ) * (A[l - 1] > 0)
    return g


def train(config, seed, X, Y, epochs=EPOCHS):
    """The final training loss of one run (mini-batches of BATCH, shuffled by seed)."""
    import fastoptim

    _, dtype, settings, round_bf16 = config
    dt = _bf16() if dtype == "bfloat16" else np.dtype(dtype)
    params = {k: a.astype(dt) for k, a in initial(seed).items()}
    opt = fastoptim.AdamW(params, learning_rate=LR,
                          **dict(settings, seed=seed) if settings.get("stochastic_rounding")
                          else settings)
    rng = np.random.default_rng(1000 + seed)
    m = X.shape[1]
    for _ in range(epochs):
        order = rng.permutation(m)
        for start in range(0, m, BATCH):
            idx = order[start:start + BATCH]
            opt.step(gradients(X[:, idx], Y[:, idx], _as_f32(params, round_bf16)))
    return loss(X, Y, _as_f32(params, round_bf16))


def table(epochs=EPOCHS, seeds=SEEDS, configs=CONFIGS, out=sys.stdout):
    """{name: [final loss per seed]}, printed as a table."""
    X, Y = data()
    results = {}
    print(f"digits, MLP {list(LAYERS)}, AdamW lr {LR}, batch {BATCH}, {epochs} epochs; "
          f"final training loss over seeds {list(seeds)}", file=out)
    print(f"{'configuration':<28} {'mean':>8} {'min':>8} {'max':>8}", file=out)
    for config in configs:
        losses = [train(config, s, X, Y, epochs) for s in seeds]
        results[config[0]] = losses
        print(f"{config[0]:<28} {np.mean(losses):>8.4f} {min(losses):>8.4f} "
              f"{max(losses):>8.4f}", file=out)
        out.flush()
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m fastoptim.demo.lowp_digits",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--seeds", type=int, default=len(SEEDS))
    args = ap.parse_args(argv)
    table(args.epochs, tuple(range(args.seeds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
