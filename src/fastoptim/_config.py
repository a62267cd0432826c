"""Build and run-time configuration: threads, instruction set, compiler."""
import json
import platform

import numpy as np

from ._backend import BACKEND, reason
from ._backend import core as _core


def set_num_threads(n):
    """Threads for the C kernels; n <= 0 (or None) follows OpenMP's default
    (OMP_NUM_THREADS, or threadpoolctl's limit)."""
    if _core is not None:
        _core.set_num_threads(0 if n is None else int(n))


def get_num_threads():
    """Threads a large C update uses (1 without OpenMP or the extension)."""
    return _core.get_num_threads() if _core is not None else 1


def config():
    """The configuration as a dict."""
    from . import __version__  # here: the package defines it after importing this module

    info = {
        "version": __version__,
        "backend": BACKEND,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "extension": _core is not None,
    }
    if reason is not None:
        info["why_not_compiled"] = reason
    if _core is not None:
        info.update(
            isa_in_use=_core.isa_in_use(),
            isa_available=_core.isa_supported(),
            threads=_core.get_num_threads(),
            **_core.build_info(),
        )
    return info


def show_config(as_json=False):
    """Print the version, backend, instruction set, threads and build flags;
    as_json: as one JSON object."""
    if as_json:
        print(json.dumps(config(), indent=2))
        return
    for key, value in config().items():
        if isinstance(value, list):
            value = ", ".join(value)
        elif isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        print(f"{key:>20}: {value}")
