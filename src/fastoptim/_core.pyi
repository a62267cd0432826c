from typing import Any

ISA_NAMES: tuple[str, ...]

def gd(parameters: dict[str, Any], grads: dict[str, Any], learning_rate: float) -> None: ...
def momentum(
    parameters: dict[str, Any], grads: dict[str, Any], v: dict[str, Any], beta: float,
    learning_rate: float,
) -> None: ...
def adam(
    parameters: dict[str, Any], grads: dict[str, Any], v: dict[str, Any], s: dict[str, Any],
    t: int, learning_rate: float, beta1: float, beta2: float, epsilon: float,
) -> None: ...
def ceiling_adam(
    parameters: dict[str, Any], grads: dict[str, Any], v: dict[str, Any], s: dict[str, Any],
) -> None: ...
def isa_in_use() -> str: ...
def isa_supported() -> list[str]: ...
def set_isa(name: str) -> str: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def build_info() -> dict[str, Any]: ...

# the family (see _fallback for each rule)
def grad_norm(parameters: dict[str, Any], grads: dict[str, Any]) -> tuple[float, bool]: ...
def sgd(
    parameters: dict[str, Any], grads: dict[str, Any], momentum_buffer: dict[str, Any] | None,
    t: int, learning_rate: float, momentum: float, dampening: float, nesterov: bool,
    weight_decay: float | dict[str, float] = ..., grad_scale: float = ..., course: bool = ...,
) -> None: ...
def adam_ext(
    parameters: dict[str, Any], grads: dict[str, Any], v: dict[str, Any], s: dict[str, Any],
    max_s: dict[str, Any] | None, t: int, learning_rate: float, beta1: float, beta2: float,
    epsilon: float, weight_decay: float | dict[str, float] = ..., decoupled: bool = ...,
    grad_scale: float = ...,
) -> None: ...
def nadam(
    parameters: dict[str, Any], grads: dict[str, Any], v: dict[str, Any], s: dict[str, Any],
    t: int, mu_product: float, learning_rate: float, beta1: float, beta2: float,
    epsilon: float, momentum_decay: float, weight_decay: float | dict[str, float] = ...,
    decoupled: bool = ..., grad_scale: float = ...,
) -> float: ...
def radam(
    parameters: dict[str, Any], grads: dict[str, Any], v: dict[str, Any], s: dict[str, Any],
    t: int, learning_rate: float, beta1: float, beta2: float, epsilon: float,
    weight_decay: float | dict[str, float] = ..., decoupled: bool = ..., grad_scale: float = ...,
) -> None: ...
def adamax(
    parameters: dict[str, Any], grads: dict[str, Any], v: dict[str, Any],
    exp_inf: dict[str, Any], t: int, learning_rate: float, beta1: float, beta2: float,
    epsilon: float, weight_decay: float | dict[str, float] = ..., grad_scale: float = ...,
) -> None: ...
def adagrad(
    parameters: dict[str, Any], grads: dict[str, Any], sum_: dict[str, Any], t: int,
    learning_rate: float, lr_decay: float, epsilon: float,
    weight_decay: float | dict[str, float] = ..., grad_scale: float = ...,
) -> None: ...
def rmsprop(
    parameters: dict[str, Any], grads: dict[str, Any], square_avg: dict[str, Any],
    grad_avg: dict[str, Any] | None, momentum_buffer: dict[str, Any] | None,
    learning_rate: float, alpha: float, epsilon: float, momentum: float,
    weight_decay: float | dict[str, float] = ..., grad_scale: float = ...,
) -> None: ...
def lion(
    parameters: dict[str, Any], grads: dict[str, Any], v: dict[str, Any], learning_rate: float,
    beta1: float, beta2: float, weight_decay: float | dict[str, float] = ...,
    grad_scale: float = ...,
) -> None: ...
def ceiling(parameters: dict[str, Any], grads: dict[str, Any], *states: dict[str, Any]) -> None: ...
