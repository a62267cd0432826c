import os
from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray

from .optimizers import Optimizer

__all__ = ["load_checkpoint", "save_checkpoint"]

FORMAT: int

def save_checkpoint(path: str | os.PathLike[str], parameters: dict[str, NDArray[Any]],
                    optimizer: Optimizer | None = None) -> None: ...
def load_checkpoint(path: str | os.PathLike[str], parameters: dict[str, NDArray[Any]],
                    optimizer: Optimizer | None = None) -> None: ...
def read_state_dict(npz: np.lib.npyio.NpzFile, optimizer: Optimizer) -> dict[str, Any]: ...
