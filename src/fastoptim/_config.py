"""Build and run-time configuration: threads, instruction set, compiler."""
import json
import platform

import numpy as np

from ._backend import BACKEND, reason
from ._backend import core as _core

if _core is not None and BACKEND == "c":
    from . import _threadpool

    _threadpool.register()


def set_num_threads(n):
    """Threads for large C updates; n <= 0 (or None) restores the default:
    OMP_NUM_THREADS as read at import, else the CPUs this process may use.
    threadpoolctl's limits (threadpool_limits) set the same count."""
    if _core is not None:
        _core.set_num_threads(0 if n is None else int(n))


def get_num_threads():
    """Threads a large C update uses (1 without the extension)."""
    return _core.get_num_threads() if _core is not None else 1


def _threadpoolctl_state():
    if BACKEND != "c":
        return "not registered (the NumPy backend uses no pool)"
    return _threadpool.state()


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
        pool = _core.pool_info()
        info.update(
            isa_in_use=_core.isa_in_use(),
            isa_available=_core.isa_supported(),
            threads=_core.get_num_threads(),
            threads_from=pool["threads_from"],
            thread_pool=f"{pool['pool']}; {pool['workers_started']} workers started",
            wait_policy=pool["wait"],
            spin_us=pool["spin_us"],
            parallel_threshold=pool["parallel_threshold"],
            parallel_threshold_asleep=pool["parallel_threshold_asleep"],
            threadpoolctl=_threadpoolctl_state(),
        )
        if pool["pool_error"]:
            info["thread_pool_error"] = pool["pool_error"]
        build = _core.build_info()
        del build["parallel_threshold"]
        info.update(build)
    return info


def show_config(as_json=False):
    """Print the version, backend, instruction set, threads (the pool, its wait
    policy and serial thresholds) and build flags; as_json: as one JSON object."""
    if as_json:
        print(json.dumps(config(), indent=2))
        return
    notes = {
        "parallel_threshold": "elements; serial below",
        "parallel_threshold_asleep": "elements; serial below unless the workers are warm",
    }
    for key, value in config().items():
        if isinstance(value, list):
            value = ", ".join(value)
        elif isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        if key in notes:
            value = f"{value} ({notes[key]})"
        print(f"{key:>25}: {value}")
