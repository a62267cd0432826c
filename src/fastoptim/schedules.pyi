from typing import Any, ClassVar, Mapping

__all__ = ["CosineDecay", "ExponentialDecay", "Schedule", "ScheduleLRDecay", "StepDecay",
           "UpdateLR", "schedule_lr_decay", "update_lr"]

def update_lr(learning_rate0: float, epoch_num: int, decay_rate: float) -> float: ...
def schedule_lr_decay(
    learning_rate0: float, epoch_num: int, decay_rate: float, time_interval: int = 1000
) -> float: ...

class Schedule:
    def __call__(self, step: int) -> float: ...
    def compiled_form(self) -> tuple[int, tuple[float, ...]] | None: ...
    def config(self) -> dict[str, Any]: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

class UpdateLR(Schedule):
    learning_rate0: float
    decay_rate: float
    def __init__(self, learning_rate0: float, decay_rate: float) -> None: ...

class ScheduleLRDecay(Schedule):
    learning_rate0: float
    decay_rate: float
    time_interval: float
    def __init__(self, learning_rate0: float, decay_rate: float,
                 time_interval: float = 1000) -> None: ...

class ExponentialDecay(Schedule):
    learning_rate0: float
    decay_rate: float
    decay_steps: float
    def __init__(self, learning_rate0: float, decay_rate: float,
                 decay_steps: float = 1) -> None: ...

class StepDecay(Schedule):
    learning_rate0: float
    step_size: int
    gamma: float
    def __init__(self, learning_rate0: float, step_size: int, gamma: float = 0.1) -> None: ...

class CosineDecay(Schedule):
    learning_rate0: float
    decay_steps: int
    warmup_steps: int
    eta_min: float
    def __init__(self, learning_rate0: float, decay_steps: int, warmup_steps: int = 0,
                 eta_min: float = 0.0) -> None: ...

SCHEDULES: dict[str, type[Schedule]]

def to_state(schedule: object) -> dict[str, Any] | None: ...
def from_state(state: Mapping[str, Any]) -> Schedule: ...
