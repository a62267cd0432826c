"""Choose the backend once, at import: the one module that does.

FASTOPTIM_BACKEND=numpy uses the NumPy fallback and never imports the compiled
extension. FASTOPTIM_BACKEND=c or FASTOPTIM_REQUIRE_EXT=1 make a compiled
extension that cannot be imported an ImportError (CI sets it, so a silent
fallback cannot pass as the fast path). Otherwise the compiled extension is
used when it imports; when it does not, the fallback is used with a
RuntimeWarning that gives the reason (also in `reason` and show_config()).

Names: BACKEND ("c" or "numpy"), impl (the module in use), core (the compiled
module, or None), fallback, reason (why the compiled extension is not in use,
or None), and the backend's update, grad_norm and Stepper.
"""
import os
import warnings

from . import _fallback as fallback


def _choose():
    want = os.environ.get("FASTOPTIM_BACKEND", "").strip().lower()
    if want not in ("", "c", "numpy"):
        raise ImportError(f"FASTOPTIM_BACKEND={want!r}: expected 'c' or 'numpy'")
    if want == "numpy":
        return None, "FASTOPTIM_BACKEND=numpy"
    required = want == "c" or os.environ.get("FASTOPTIM_REQUIRE_EXT", "") not in ("", "0")
    try:
        from . import _core
    except ImportError as exc:
        if required:
            raise ImportError(
                "fastoptim's compiled extension could not be imported "
                f"(FASTOPTIM_REQUIRE_EXT / FASTOPTIM_BACKEND=c is set): {exc}"
            ) from exc
        reason = f"the compiled extension could not be imported: {exc}"
        warnings.warn(f"fastoptim is using its NumPy fallback, 10-150x slower: {reason}",
                      RuntimeWarning, stacklevel=3)
        return None, reason
    return _core, None


core, reason = _choose()
impl = core if core is not None else fallback
BACKEND = "c" if core is not None else "numpy"
update = impl.update
grad_norm = impl.grad_norm
Stepper = impl.Stepper
