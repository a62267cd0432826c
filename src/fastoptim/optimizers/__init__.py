"""The optimizer objects, one declaration each (see _base.Optimizer)."""
from ._base import Optimizer
from .adafactor import Adafactor
from .adagrad import Adagrad, RMSprop
from .adam import Adam, Adamax, AdamW, NAdam, RAdam
from .lamb import LAMB
from .lion import Lion
from .muon import Muon
from .schedule_free import ScheduleFreeAdamW, ScheduleFreeSGD
from .sgd import GD, SGD, Momentum

__all__ = ["GD", "LAMB", "SGD", "Adafactor", "Adagrad", "Adam", "Adamax", "AdamW", "Lion",
           "Momentum", "Muon", "NAdam", "Optimizer", "RAdam", "RMSprop", "ScheduleFreeAdamW",
           "ScheduleFreeSGD"]
