"""Choose the backend once, at import.

FASTOPTIM_BACKEND=numpy forces the NumPy fallback; FASTOPTIM_BACKEND=c or
FASTOPTIM_REQUIRE_EXT=1 make a missing compiled extension an ImportError
(CI sets it, so a silent fallback cannot pass as the fast path). Otherwise the
compiled extension is used when it imports, and the fallback when it does not.
"""
import os

from . import _fallback


def _choose():
    want = os.environ.get("FASTOPTIM_BACKEND", "").strip().lower()
    if want not in ("", "c", "numpy"):
        raise ImportError(f"FASTOPTIM_BACKEND={want!r}: expected 'c' or 'numpy'")
    if want == "numpy":
        return _fallback, "numpy"
    required = want == "c" or os.environ.get("FASTOPTIM_REQUIRE_EXT", "") not in ("", "0")
    try:
        from . import _core
    except ImportError as exc:
        if required:
            raise ImportError(
                "fastoptim's compiled extension could not be imported "
                f"(FASTOPTIM_REQUIRE_EXT / FASTOPTIM_BACKEND=c is set): {exc}"
            ) from exc
        return _fallback, "numpy"
    return _core, "c"


impl, BACKEND = _choose()
