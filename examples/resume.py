"""Train, checkpoint, resume: a run that stops midway and resumes from its
checkpoint ends with exactly the parameters of a run that never stopped.

The course's moons network with fastoptim.Adam and an exponential learning-rate
decay. The first run saves a checkpoint (the parameters, Adam's v and s, t and
the schedule, in one .npz) every 100 epochs and stops after epoch 300, as if it
had been killed. The resumed run starts from nothing but that file: a new
parameter dict and a new optimizer, loaded from the checkpoint. A third run
trains without stopping, and the two results are compared byte for byte.

    python examples/resume.py
"""
import os
import tempfile

import numpy as np

import fastoptim as fo
from fastoptim.demo.datasets import load_dataset
from fastoptim.demo.nn import backward_propagation, forward_propagation, initialize_parameters, predict
from fastoptim.schedules import ExponentialDecay

X, Y = load_dataset()
EPOCHS = 600
BATCHES = len(fo.random_mini_batches(X, Y, 64))   # 5: one step each, so epoch = t // 5


def new_run():
    """Fresh parameters and a fresh optimizer, sharing nothing with another run."""
    parameters = initialize_parameters([2, 5, 2, 1])
    opt = fo.Adam(parameters, learning_rate=ExponentialDecay(0.01, 0.5, decay_steps=1000))
    return parameters, opt


def train(parameters, opt, last_epoch, checkpoint=None):
    """Train from the epoch that follows opt.t's steps up to last_epoch
    (inclusive), saving a checkpoint after every 100th epoch."""
    for epoch in range(opt.t // BATCHES, last_epoch + 1):
        for X_batch, Y_batch in fo.random_mini_batches(X, Y, 64, seed=epoch):
            _, caches = forward_propagation(X_batch, parameters)
            opt.step(backward_propagation(X_batch, Y_batch, caches))
        if checkpoint is not None and epoch % 100 == 0:
            fo.save_checkpoint(checkpoint, parameters, opt)   # atomic: write, then rename


with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "moons.npz")

    parameters, opt = new_run()
    train(parameters, opt, last_epoch=349, checkpoint=path)   # "killed" after epoch 349
    print(f"first run: stopped after epoch 349 (t = {opt.t}), last checkpoint after epoch 300")
    del parameters, opt

    parameters, opt = new_run()
    fo.load_checkpoint(path, parameters, opt)     # checks the whole file, then copies in place
    print(f"resumed run: t = {opt.t} from the checkpoint, learning rate {opt.learning_rate!r}")
    train(parameters, opt, last_epoch=EPOCHS - 1, checkpoint=path)

reference, reference_opt = new_run()
train(reference, reference_opt, last_epoch=EPOCHS - 1)

same = opt.t == reference_opt.t and all(
    parameters[k].tobytes() == reference[k].tobytes() for k in reference)
print(f"steps: {opt.t}")
print(f"training accuracy: {np.mean(predict(X, parameters) == Y):.4f}")
print(f"resumed bitwise: {same}")
