"""A two-layer perceptron on scikit-learn's digits, trained with fastoptim.AdamW.

The 1797 images of 8x8 pixels (scikit-learn's load_digits), the first 1500 for
training and the rest held out; a network 64 -> 64 (ReLU) -> 10 (softmax) in
float32, written in NumPy with the course's layout (one example per column,
parameters "W1", "b1", ..., gradients "dW1", "db1", ...). The optimizer object
takes the parameters once; a cosine schedule with warmup sets the learning rate
of every step, and the weight decay skips the biases.

    pip install scikit-learn
    python examples/digits_mlp.py
"""
import math

import numpy as np
from sklearn.datasets import load_digits

import fastoptim as fo
from fastoptim.schedules import CosineDecay

EPOCHS = 10
BATCH = 64

digits = load_digits()
X_all = (digits.data / 16.0).T.astype(np.float32)           # (64, 1797), pixels in [0, 1]
Y_all = np.eye(10, dtype=np.float32)[:, digits.target]     # one-hot, (10, 1797)
X, Y, X_test, Y_test = X_all[:, :1500], Y_all[:, :1500], X_all[:, 1500:], Y_all[:, 1500:]

rng = np.random.default_rng(0)
parameters = {
    "W1": (rng.standard_normal((64, 64)) * np.sqrt(2 / 64)).astype(np.float32),
    "b1": np.zeros((64, 1), np.float32),
    "W2": (rng.standard_normal((10, 64)) * np.sqrt(2 / 64)).astype(np.float32),
    "b2": np.zeros((10, 1), np.float32),
}


def forward(X, parameters):
    Z1 = parameters["W1"] @ X + parameters["b1"]
    A1 = np.maximum(Z1, 0)
    Z2 = parameters["W2"] @ A1 + parameters["b2"]
    Z2 = Z2 - Z2.max(axis=0, keepdims=True)
    P = np.exp(Z2)
    return A1, P / P.sum(axis=0, keepdims=True)


def backward(X, Y, parameters):
    """Gradients of the mean cross-entropy over the batch."""
    A1, P = forward(X, parameters)
    dZ2 = (P - Y) / X.shape[1]
    dZ1 = (parameters["W2"].T @ dZ2) * (A1 > 0)
    return {"dW2": dZ2 @ A1.T, "db2": dZ2.sum(axis=1, keepdims=True),
            "dW1": dZ1 @ X.T, "db1": dZ1.sum(axis=1, keepdims=True)}


def accuracy(X, Y, parameters):
    return float(np.mean(forward(X, parameters)[1].argmax(axis=0) == Y.argmax(axis=0)))


steps = EPOCHS * math.ceil(X.shape[1] / BATCH)            # 24 mini-batches per epoch
opt = fo.AdamW(parameters,                                 # the arrays move into opt's arena
               learning_rate=CosineDecay(1e-2, decay_steps=steps, warmup_steps=steps // 10),
               weight_decay=1e-4,
               weight_decay_mask=lambda key: key.startswith("W"))

for epoch in range(EPOCHS):
    for X_batch, Y_batch in fo.random_mini_batches(X, Y, BATCH, seed=epoch):
        opt.step(backward(X_batch, Y_batch, parameters))   # parameters change in place
    # opt.learning_rate is the schedule; called with opt.t, it gives the next step's rate
    print(f"epoch {epoch}: training accuracy {accuracy(X, Y, parameters):.4f}, "
          f"next learning rate {opt.learning_rate(opt.t):.5f}")

print(f"steps: {opt.t}")
print(f"training accuracy: {accuracy(X, Y, parameters):.4f}")
print(f"held-out accuracy: {accuracy(X_test, Y_test, parameters):.4f}")
