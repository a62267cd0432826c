"""The course's Adam run, written out with fastoptim's versions of its functions.

The moons data (300 points), the network [2, 5, 2, 1], mini-batches of 64,
learning rate 0.0007, 5000 epochs: the course's setting, whose published
training accuracy is 94.3%. The data and the network (forward and backward
passes in NumPy) come from fastoptim.demo; the optimizer calls are the course's
own: initialize_adam, random_mini_batches, update_parameters_with_adam.

    python examples/course.py
"""
import numpy as np

import fastoptim as fo
from fastoptim.demo.datasets import load_dataset
from fastoptim.demo.nn import (backward_propagation, compute_cost, forward_propagation,
                               initialize_parameters, predict)

X, Y = load_dataset()                              # (2, 300) and (1, 300)
parameters = initialize_parameters([2, 5, 2, 1])   # {"W1": (5, 2), "b1": (5, 1), ...}
v, s = fo.initialize_adam(parameters)              # {"dW1": zeros (5, 2), ...} twice
m = X.shape[1]
t = 0                                              # Adam's step counter, from 1
seed = 10

for epoch in range(5000):
    seed += 1                                      # a new shuffle every epoch
    cost_total = 0.0
    for X_batch, Y_batch in fo.random_mini_batches(X, Y, 64, seed):
        AL, caches = forward_propagation(X_batch, parameters)
        cost_total += compute_cost(AL, Y_batch)
        grads = backward_propagation(X_batch, Y_batch, caches)   # {"dW1": ..., "db1": ...}
        t += 1
        # in place: the arrays of parameters, v and s change; the same dicts come back
        parameters, v, s = fo.update_parameters_with_adam(parameters, grads, v, s, t,
                                                          learning_rate=0.0007)
    if epoch % 1000 == 0:
        print(f"Cost after epoch {epoch}: {cost_total / m:f}")

accuracy = float(np.mean(predict(X, parameters) == Y))
print(f"steps: {t}")
print(f"training accuracy: {accuracy:.4f} (the course: 0.943)")
