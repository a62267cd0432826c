"""fastoptim: optimizer updates over dicts of NumPy arrays, fused in one pass,
in place, in C: the classic deep-learning course's functions
(update_parameters_with_gd/momentum/adam) and optimizer objects (GD,
Momentum, Adam, AdamW, SGD, RMSprop, Adagrad, Adamax, NAdam, RAdam, Lion,
ScheduleFreeAdamW, ScheduleFreeSGD, LAMB, Adafactor, Muon).

fastoptim.BACKEND is "c" (the compiled extension) or "numpy" (the fallback);
see fastoptim._backend for how it is chosen.
"""
from ._backend import BACKEND
from .course import (
    initialize_adam,
    initialize_velocity,
    random_mini_batches,
    update_parameters_with_adam,
    update_parameters_with_gd,
    update_parameters_with_momentum,
)
from ._validate import PerformanceWarning
from ._config import get_num_threads, set_num_threads, show_config
from . import schedules
from .schedules import schedule_lr_decay, update_lr
from .optimizers import *  # noqa: F401,F403 - every optimizer class (optimizers.__all__)
from .optimizers import __all__ as _OPTIMIZERS
from .checkpoint import load_checkpoint, save_checkpoint

__version__ = "0.1.0"

__all__ = sorted([
    "BACKEND",
    "PerformanceWarning",
    "get_num_threads",
    "initialize_adam",
    "initialize_velocity",
    "load_checkpoint",
    "random_mini_batches",
    "save_checkpoint",
    "schedule_lr_decay",
    "schedules",
    "set_num_threads",
    "show_config",
    "update_parameters_with_adam",
    "update_parameters_with_gd",
    "update_parameters_with_momentum",
    "update_lr",
] + [name for name in _OPTIMIZERS if name != "Optimizer"])
