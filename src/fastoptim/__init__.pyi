from . import checkpoint as checkpoint
from . import course as course
from . import optimizers as optimizers
from . import schedules as schedules
from ._config import get_num_threads as get_num_threads
from ._config import set_num_threads as set_num_threads
from ._config import show_config as show_config
from .checkpoint import load_checkpoint as load_checkpoint
from .checkpoint import save_checkpoint as save_checkpoint
from .course import initialize_adam as initialize_adam
from .course import initialize_velocity as initialize_velocity
from .course import random_mini_batches as random_mini_batches
from .course import update_parameters_with_adam as update_parameters_with_adam
from .course import update_parameters_with_gd as update_parameters_with_gd
from .course import update_parameters_with_momentum as update_parameters_with_momentum
from .optimizers import GD as GD
from .optimizers import LAMB as LAMB
from .optimizers import SGD as SGD
from .optimizers import Adafactor as Adafactor
from .optimizers import Adagrad as Adagrad
from .optimizers import Adam as Adam
from .optimizers import Adamax as Adamax
from .optimizers import AdamW as AdamW
from .optimizers import Lion as Lion
from .optimizers import Momentum as Momentum
from .optimizers import Muon as Muon
from .optimizers import NAdam as NAdam
from .optimizers import Optimizer as Optimizer
from .optimizers import RAdam as RAdam
from .optimizers import RMSprop as RMSprop
from .optimizers import ScheduleFreeAdamW as ScheduleFreeAdamW
from .optimizers import ScheduleFreeSGD as ScheduleFreeSGD
from .schedules import schedule_lr_decay as schedule_lr_decay
from .schedules import update_lr as update_lr

BACKEND: str
__version__: str

class PerformanceWarning(RuntimeWarning): ...

__all__ = [
    "BACKEND", "GD", "LAMB", "SGD", "Adafactor", "Adagrad", "Adam", "AdamW", "Adamax", "Lion",
    "Momentum", "Muon", "NAdam", "RAdam", "RMSprop", "ScheduleFreeAdamW", "ScheduleFreeSGD",
    "PerformanceWarning",
    "get_num_threads", "initialize_adam", "initialize_velocity",
    "load_checkpoint", "random_mini_batches", "save_checkpoint", "schedule_lr_decay",
    "schedules", "set_num_threads", "show_config", "update_lr", "update_parameters_with_adam",
    "update_parameters_with_gd", "update_parameters_with_momentum",
]
