# Written by tools/optimizer_stubs.py from the classes' declarations; do not edit.
import inspect
from contextlib import AbstractContextManager
from typing import Any, Callable, ClassVar, Mapping

from numpy.typing import NDArray

_Arrays = dict[str, NDArray[Any]]
_Rate = float | Callable[[int], float]
_Decay = float | Mapping[str, float] | Callable[[str], float]
_Mask = Mapping[str, bool] | Callable[[str], bool] | None

__all__ = [
    'GD', 'LAMB', 'SGD', 'Adafactor', 'Adagrad', 'Adam', 'Adamax', 'AdamW', 'Lion',
    'Momentum', 'Muon', 'NAdam', 'Optimizer', 'RAdam', 'RMSprop', 'ScheduleFreeAdamW',
    'ScheduleFreeSGD',
]

class Optimizer:
    """Base class of the optimizer objects."""
    declaration: ClassVar[Any]
    __signature__: ClassVar[inspect.Signature]
    last_grad_norm: float | None
    def __init__(
        self, parameters: _Arrays, learning_rate: _Rate = ..., **settings: Any
    ) -> None: ...
    def step(self, grads: _Arrays) -> bool: ...
    def state_dict(self, copy: bool = True) -> dict[str, Any]: ...
    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None: ...
    def check_state_dict(self, state_dict: Mapping[str, Any]) -> Callable[[], None]: ...
    @property
    def t(self) -> int: ...
    @property
    def learning_rate(self) -> _Rate: ...
    @learning_rate.setter
    def learning_rate(self, value: _Rate) -> None: ...
    @property
    def arena(self) -> bool: ...
    @property
    def parameters(self) -> _Arrays: ...
    @property
    def state(self) -> dict[str, _Arrays]: ...
    @property
    def options(self) -> dict[str, bool]: ...
    @property
    def max_grad_norm(self) -> float | None: ...
    @max_grad_norm.setter
    def max_grad_norm(self, value: float | None) -> None: ...
    @property
    def skip_nonfinite(self) -> bool: ...
    @skip_nonfinite.setter
    def skip_nonfinite(self, value: bool) -> None: ...
    @property
    def ema(self) -> _Arrays | None: ...
    @property
    def gradient_accumulation_steps(self) -> int: ...
    @property
    def state_bits(self) -> int: ...
    @property
    def min_8bit_size(self) -> int: ...
    @property
    def kahan_summation(self) -> bool: ...
    @property
    def stochastic_rounding(self) -> bool: ...
    @property
    def seed(self) -> int: ...
    @seed.setter
    def seed(self, value: int) -> None: ...

class GD(Optimizer):
    def __init__(
        self, parameters: _Arrays, learning_rate: _Rate = ..., *,
        max_grad_norm: float | None = None, skip_nonfinite: bool = False,
        ema_decay: float | None = None, ema_warmup: bool = False,
        gradient_accumulation_steps: int = 1, state_bits: int = 32,
        min_8bit_size: int = 4096, kahan_summation: bool = False,
        stochastic_rounding: bool = False, seed: int = 0, arena: bool = True,
    ) -> None: ...

class LAMB(Optimizer):
    def __init__(
        self, parameters: _Arrays, learning_rate: _Rate = ..., *, beta1: float = 0.9,
        beta2: float = 0.999, epsilon: float = 1e-06, weight_decay: _Decay = 0.01,
        weight_decay_mask: _Mask = None, maximize: bool = False,
        max_grad_norm: float | None = None, skip_nonfinite: bool = False,
        ema_decay: float | None = None, ema_warmup: bool = False,
        gradient_accumulation_steps: int = 1, state_bits: int = 32,
        min_8bit_size: int = 4096, kahan_summation: bool = False,
        stochastic_rounding: bool = False, seed: int = 0, arena: bool = True,
    ) -> None: ...
    beta1: float
    beta2: float
    epsilon: float
    maximize: bool
    @property
    def weight_decay(self) -> float | dict[str, float]: ...
    @weight_decay.setter
    def weight_decay(self, value: _Decay) -> None: ...

class SGD(Optimizer):
    def __init__(
        self, parameters: _Arrays, learning_rate: _Rate = ..., *, momentum: float = 0.0,
        dampening: float = 0.0, weight_decay: _Decay = 0.0, weight_decay_mask: _Mask = None,
        nesterov: bool = False, maximize: bool = False, max_grad_norm: float | None = None,
        skip_nonfinite: bool = False, ema_decay: float | None = None,
        ema_warmup: bool = False, gradient_accumulation_steps: int = 1,
        state_bits: int = 32, min_8bit_size: int = 4096, kahan_summation: bool = False,
        stochastic_rounding: bool = False, seed: int = 0, arena: bool = True,
    ) -> None: ...
    momentum: float
    dampening: float
    nesterov: bool
    maximize: bool
    @property
    def weight_decay(self) -> float | dict[str, float]: ...
    @weight_decay.setter
    def weight_decay(self, value: _Decay) -> None: ...

class Adafactor(Optimizer):
    def __init__(
        self, parameters: _Arrays, learning_rate: _Rate = ..., *, beta2_decay: float = -0.8,
        epsilon1: float | None = None, epsilon2: float = 0.001, d: float = 1.0,
        weight_decay: _Decay = 0.0, weight_decay_mask: _Mask = None, maximize: bool = False,
        max_grad_norm: float | None = None, skip_nonfinite: bool = False,
        ema_decay: float | None = None, ema_warmup: bool = False,
        gradient_accumulation_steps: int = 1, state_bits: int = 32,
        min_8bit_size: int = 4096, kahan_summation: bool = False,
        stochastic_rounding: bool = False, seed: int = 0, arena: bool = True,
    ) -> None: ...
    beta2_decay: float
    epsilon1: float | None
    epsilon2: float
    d: float
    maximize: bool
    @property
    def weight_decay(self) -> float | dict[str, float]: ...
    @weight_decay.setter
    def weight_decay(self, value: _Decay) -> None: ...

class Adagrad(Optimizer):
    def __init__(
        self, parameters: _Arrays, learning_rate: _Rate = ..., *, lr_decay: float = 0.0,
        initial_accumulator_value: float = 0.0, epsilon: float = 1e-10,
        weight_decay: _Decay = 0.0, weight_decay_mask: _Mask = None, maximize: bool = False,
        max_grad_norm: float | None = None, skip_nonfinite: bool = False,
        ema_decay: float | None = None, ema_warmup: bool = False,
        gradient_accumulation_steps: int = 1, state_bits: int = 32,
        min_8bit_size: int = 4096, kahan_summation: bool = False,
        stochastic_rounding: bool = False, seed: int = 0, arena: bool = True,
    ) -> None: ...
    lr_decay: float
    epsilon: float
    maximize: bool
    @property
    def weight_decay(self) -> float | dict[str, float]: ...
    @weight_decay.setter
    def weight_decay(self, value: _Decay) -> None: ...

class Adam(Optimizer):
    def __init__(
        self, parameters: _Arrays, learning_rate: _Rate = ..., *, beta1: float = 0.9,
        beta2: float = 0.999, epsilon: float = 1e-08, weight_decay: _Decay = 0.0,
        weight_decay_mask: _Mask = None, amsgrad: bool = False, maximize: bool = False,
        max_grad_norm: float | None = None, skip_nonfinite: bool = False,
        ema_decay: float | None = None, ema_warmup: bool = False,
        gradient_accumulation_steps: int = 1, state_bits: int = 32,
        min_8bit_size: int = 4096, kahan_summation: bool = False,
        stochastic_rounding: bool = False, seed: int = 0, arena: bool = True,
    ) -> None: ...
    beta1: float
    beta2: float
    epsilon: float
    @property
    def amsgrad(self) -> bool: ...
    maximize: bool
    @property
    def weight_decay(self) -> float | dict[str, float]: ...
    @weight_decay.setter
    def weight_decay(self, value: _Decay) -> None: ...

class Adamax(Optimizer):
    def __init__(
        self, parameters: _Arrays, learning_rate: _Rate = ..., *, beta1: float = 0.9,
        beta2: float = 0.999, epsilon: float = 1e-08, weight_decay: _Decay = 0.0,
        weight_decay_mask: _Mask = None, maximize: bool = False,
        max_grad_norm: float | None = None, skip_nonfinite: bool = False,
        ema_decay: float | None = None, ema_warmup: bool = False,
        gradient_accumulation_steps: int = 1, state_bits: int = 32,
        min_8bit_size: int = 4096, kahan_summation: bool = False,
        stochastic_rounding: bool = False, seed: int = 0, arena: bool = True,
    ) -> None: ...
    beta1: float
    beta2: float
    epsilon: float
    maximize: bool
    @property
    def weight_decay(self) -> float | dict[str, float]: ...
    @weight_decay.setter
    def weight_decay(self, value: _Decay) -> None: ...

class Lion(Optimizer):
    def __init__(
        self, parameters: _Arrays, learning_rate: _Rate = ..., *, beta1: float = 0.9,
        beta2: float = 0.99, weight_decay: _Decay = 0.0, weight_decay_mask: _Mask = None,
        maximize: bool = False, max_grad_norm: float | None = None,
        skip_nonfinite: bool = False, ema_decay: float | None = None,
        ema_warmup: bool = False, gradient_accumulation_steps: int = 1,
        state_bits: int = 32, min_8bit_size: int = 4096, kahan_summation: bool = False,
        stochastic_rounding: bool = False, seed: int = 0, arena: bool = True,
    ) -> None: ...
    beta1: float
    beta2: float
    maximize: bool
    @property
    def weight_decay(self) -> float | dict[str, float]: ...
    @weight_decay.setter
    def weight_decay(self, value: _Decay) -> None: ...

class Momentum(Optimizer):
    def __init__(
        self, parameters: _Arrays, learning_rate: _Rate = ..., *, beta: float = 0.9,
        nesterov: bool = False, max_grad_norm: float | None = None,
        skip_nonfinite: bool = False, ema_decay: float | None = None,
        ema_warmup: bool = False, gradient_accumulation_steps: int = 1,
        state_bits: int = 32, min_8bit_size: int = 4096, kahan_summation: bool = False,
        stochastic_rounding: bool = False, seed: int = 0, arena: bool = True,
    ) -> None: ...
    beta: float
    nesterov: bool

class Muon(Optimizer):
    def __init__(
        self, parameters: _Arrays, learning_rate: _Rate = ..., *, momentum: float = 0.95,
        ns_steps: float = 5, ns_epsilon: float = 1e-07, adamw_beta1: float = 0.9,
        adamw_beta2: float = 0.999, adamw_epsilon: float = 1e-08,
        weight_decay: _Decay = 0.1, weight_decay_mask: _Mask = None, nesterov: bool = True,
        match_rms_adamw: bool = False, maximize: bool = False, muon_mask: _Mask = None,
        max_grad_norm: float | None = None, skip_nonfinite: bool = False,
        ema_decay: float | None = None, ema_warmup: bool = False,
        gradient_accumulation_steps: int = 1, state_bits: int = 32,
        min_8bit_size: int = 4096, kahan_summation: bool = False,
        stochastic_rounding: bool = False, seed: int = 0, arena: bool = True,
    ) -> None: ...
    momentum: float
    ns_steps: float
    ns_epsilon: float
    adamw_beta1: float
    adamw_beta2: float
    adamw_epsilon: float
    nesterov: bool
    match_rms_adamw: bool
    maximize: bool
    @property
    def weight_decay(self) -> float | dict[str, float]: ...
    @weight_decay.setter
    def weight_decay(self, value: _Decay) -> None: ...
    @property
    def muon_keys(self) -> list[str]: ...

class NAdam(Optimizer):
    def __init__(
        self, parameters: _Arrays, learning_rate: _Rate = ..., *, beta1: float = 0.9,
        beta2: float = 0.999, epsilon: float = 1e-08, momentum_decay: float = 0.004,
        weight_decay: _Decay = 0.0, weight_decay_mask: _Mask = None,
        decoupled_weight_decay: bool = False, maximize: bool = False,
        max_grad_norm: float | None = None, skip_nonfinite: bool = False,
        ema_decay: float | None = None, ema_warmup: bool = False,
        gradient_accumulation_steps: int = 1, state_bits: int = 32,
        min_8bit_size: int = 4096, kahan_summation: bool = False,
        stochastic_rounding: bool = False, seed: int = 0, arena: bool = True,
    ) -> None: ...
    beta1: float
    beta2: float
    epsilon: float
    momentum_decay: float
    decoupled_weight_decay: bool
    maximize: bool
    @property
    def mu_product(self) -> float: ...
    @property
    def weight_decay(self) -> float | dict[str, float]: ...
    @weight_decay.setter
    def weight_decay(self, value: _Decay) -> None: ...

class RAdam(Optimizer):
    def __init__(
        self, parameters: _Arrays, learning_rate: _Rate = ..., *, beta1: float = 0.9,
        beta2: float = 0.999, epsilon: float = 1e-08, weight_decay: _Decay = 0.0,
        weight_decay_mask: _Mask = None, decoupled_weight_decay: bool = False,
        maximize: bool = False, max_grad_norm: float | None = None,
        skip_nonfinite: bool = False, ema_decay: float | None = None,
        ema_warmup: bool = False, gradient_accumulation_steps: int = 1,
        state_bits: int = 32, min_8bit_size: int = 4096, kahan_summation: bool = False,
        stochastic_rounding: bool = False, seed: int = 0, arena: bool = True,
    ) -> None: ...
    beta1: float
    beta2: float
    epsilon: float
    decoupled_weight_decay: bool
    maximize: bool
    @property
    def weight_decay(self) -> float | dict[str, float]: ...
    @weight_decay.setter
    def weight_decay(self, value: _Decay) -> None: ...

class RMSprop(Optimizer):
    def __init__(
        self, parameters: _Arrays, learning_rate: _Rate = ..., *, alpha: float = 0.99,
        epsilon: float = 1e-08, momentum: float = 0.0, weight_decay: _Decay = 0.0,
        weight_decay_mask: _Mask = None, centered: bool = False, maximize: bool = False,
        max_grad_norm: float | None = None, skip_nonfinite: bool = False,
        ema_decay: float | None = None, ema_warmup: bool = False,
        gradient_accumulation_steps: int = 1, state_bits: int = 32,
        min_8bit_size: int = 4096, kahan_summation: bool = False,
        stochastic_rounding: bool = False, seed: int = 0, arena: bool = True,
    ) -> None: ...
    alpha: float
    epsilon: float
    momentum: float
    @property
    def centered(self) -> bool: ...
    maximize: bool
    @property
    def weight_decay(self) -> float | dict[str, float]: ...
    @weight_decay.setter
    def weight_decay(self, value: _Decay) -> None: ...

class AdamW(Adam):
    def __init__(
        self, parameters: _Arrays, learning_rate: _Rate = ..., *, beta1: float = 0.9,
        beta2: float = 0.999, epsilon: float = 1e-08, weight_decay: _Decay = 0.01,
        weight_decay_mask: _Mask = None, amsgrad: bool = False, maximize: bool = False,
        max_grad_norm: float | None = None, skip_nonfinite: bool = False,
        ema_decay: float | None = None, ema_warmup: bool = False,
        gradient_accumulation_steps: int = 1, state_bits: int = 32,
        min_8bit_size: int = 4096, kahan_summation: bool = False,
        stochastic_rounding: bool = False, seed: int = 0, arena: bool = True,
    ) -> None: ...
    beta1: float
    beta2: float
    epsilon: float
    @property
    def amsgrad(self) -> bool: ...
    maximize: bool
    @property
    def weight_decay(self) -> float | dict[str, float]: ...
    @weight_decay.setter
    def weight_decay(self, value: _Decay) -> None: ...

class ScheduleFreeAdamW(Optimizer):
    def __init__(
        self, parameters: _Arrays, learning_rate: _Rate = ..., *, beta1: float = 0.9,
        beta2: float = 0.999, epsilon: float = 1e-08, warmup_steps: float = 0,
        r: float = 0.0, weight_lr_power: float = 2.0, weight_decay: _Decay = 0.0,
        weight_decay_mask: _Mask = None, maximize: bool = False,
        max_grad_norm: float | None = None, skip_nonfinite: bool = False,
        ema_decay: float | None = None, ema_warmup: bool = False,
        gradient_accumulation_steps: int = 1, state_bits: int = 32,
        min_8bit_size: int = 4096, kahan_summation: bool = False,
        stochastic_rounding: bool = False, seed: int = 0, arena: bool = True,
    ) -> None: ...
    beta1: float
    beta2: float
    epsilon: float
    warmup_steps: float
    r: float
    weight_lr_power: float
    maximize: bool
    @property
    def weight_sum(self) -> float: ...
    @property
    def lr_max(self) -> float: ...
    @property
    def weight_decay(self) -> float | dict[str, float]: ...
    @weight_decay.setter
    def weight_decay(self, value: _Decay) -> None: ...
    def eval(self) -> None: ...
    @property
    def eval_mode(self) -> bool: ...
    def evaluation(self) -> AbstractContextManager[None]: ...
    def train(self) -> None: ...

class ScheduleFreeSGD(Optimizer):
    def __init__(
        self, parameters: _Arrays, learning_rate: _Rate = ..., *, momentum: float = 0.9,
        warmup_steps: float = 0, r: float = 0.0, weight_lr_power: float = 2.0,
        weight_decay: _Decay = 0.0, weight_decay_mask: _Mask = None, maximize: bool = False,
        max_grad_norm: float | None = None, skip_nonfinite: bool = False,
        ema_decay: float | None = None, ema_warmup: bool = False,
        gradient_accumulation_steps: int = 1, state_bits: int = 32,
        min_8bit_size: int = 4096, kahan_summation: bool = False,
        stochastic_rounding: bool = False, seed: int = 0, arena: bool = True,
    ) -> None: ...
    momentum: float
    warmup_steps: float
    r: float
    weight_lr_power: float
    maximize: bool
    @property
    def weight_sum(self) -> float: ...
    @property
    def lr_max(self) -> float: ...
    @property
    def weight_decay(self) -> float | dict[str, float]: ...
    @weight_decay.setter
    def weight_decay(self, value: _Decay) -> None: ...
    def eval(self) -> None: ...
    @property
    def eval_mode(self) -> bool: ...
    def evaluation(self) -> AbstractContextManager[None]: ...
    def train(self) -> None: ...
