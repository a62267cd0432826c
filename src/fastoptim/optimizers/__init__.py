"""The optimizer objects, one declaration each (see _base.Optimizer)."""
from ._base import Optimizer
from .adagrad import Adagrad, RMSprop
from .adam import Adam, Adamax, AdamW, NAdam, RAdam
from .lion import Lion
from .sgd import GD, SGD, Momentum

__all__ = ["GD", "SGD", "Adagrad", "Adam", "Adamax", "AdamW", "Lion", "Momentum", "NAdam",
           "Optimizer", "RAdam", "RMSprop"]
