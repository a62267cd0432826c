"""fastoptim's public API with type annotations, checked by mypy --strict.

The package ships type stubs (src/fastoptim/*.pyi and py.typed), so a type
checker sees every public function's and class's signature, including each
optimizer's keyword arguments. This script uses them all and runs in a second:

    python examples/typed_usage.py
    mypy --strict examples/typed_usage.py
"""
import os
import tempfile
from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray

import fastoptim as fo
from fastoptim.schedules import CosineDecay, Schedule

Arrays = dict[str, NDArray[Any]]


def make_parameters(rng: np.random.Generator, dtype: type[np.floating[Any]]) -> Arrays:
    return {"W1": rng.standard_normal((4, 3)).astype(dtype), "b1": np.zeros((4, 1), dtype)}


def gradients(parameters: Arrays) -> Arrays:
    """The gradient of 0.5 * ||p||^2 for every parameter: p itself."""
    return {"d" + key: p.copy() for key, p in parameters.items()}


def course_api(parameters: Arrays) -> float:
    """The course's functions: the same dicts come back, updated in place."""
    v: Arrays
    s: Arrays
    v, s = fo.initialize_adam(parameters)
    for t in range(1, 11):
        parameters, v, s = fo.update_parameters_with_adam(parameters, gradients(parameters),
                                                          v, s, t, learning_rate=0.1)
    velocity = fo.initialize_velocity(parameters)
    parameters, velocity = fo.update_parameters_with_momentum(
        parameters, gradients(parameters), velocity, beta=0.9, learning_rate=0.1)
    parameters = fo.update_parameters_with_gd(parameters, gradients(parameters), 0.1)
    batches = fo.random_mini_batches(np.ones((3, 10)), np.zeros((1, 10)), mini_batch_size=4)
    assert [X.shape[1] for X, _ in batches] == [4, 4, 2]
    return fo.update_lr(0.1, 10, 1.0) + fo.schedule_lr_decay(0.1, 10, 1.0, time_interval=5)


def objects(parameters: Arrays, folder: str) -> bool:
    """An optimizer object: settings, steps, state dict, checkpoint."""
    schedule: Schedule = CosineDecay(0.1, decay_steps=20, warmup_steps=2)
    opt: fo.Optimizer = fo.AdamW(parameters, learning_rate=schedule, weight_decay=0.01,
                                 weight_decay_mask=lambda key: key.startswith("W"),
                                 max_grad_norm=1.0, skip_nonfinite=True)
    stepped: bool = all(opt.step(gradients(parameters)) for _ in range(10))
    rate: float | Callable[[int], float] = opt.learning_rate
    next_rate = rate(opt.t) if callable(rate) else rate
    norm: float | None = opt.last_grad_norm

    state: dict[str, Any] = opt.state_dict()
    path = os.path.join(folder, "run.npz")
    fo.save_checkpoint(path, parameters, opt)
    again = {key: np.zeros_like(p) for key, p in parameters.items()}
    restored = fo.AdamW(again, weight_decay=0.0)
    fo.load_checkpoint(path, again, restored)
    restored.load_state_dict(state)

    adam = fo.Adam(make_parameters(np.random.default_rng(1), np.float64), beta1=0.8,
                   amsgrad=True)
    adam.beta1 = 0.85                        # a hyperparameter: a float attribute
    amsgrad: bool = adam.amsgrad             # structural: read-only
    momentum = fo.Momentum(make_parameters(np.random.default_rng(2), np.float32),
                           beta=0.9, nesterov=True, arena=False)
    momentum.learning_rate = 0.05
    return (stepped and restored.t == opt.t == 10 and 0.0 < next_rate < 0.1
            and norm is not None and amsgrad and momentum.step(gradients(momentum.parameters)))


def configuration() -> str:
    fo.set_num_threads(fo.get_num_threads())
    return fo.BACKEND


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"course API: {course_api(make_parameters(rng, np.float32)):.4f}")
    with tempfile.TemporaryDirectory() as folder:
        print(f"objects: {objects(make_parameters(rng, np.float64), folder)}")
    print(f"backend: {configuration()}")


if __name__ == "__main__":
    main()
