"""fastoptim's thread pool as a threadpoolctl library (threadpoolctl is optional).

threadpoolctl finds thread pools among the shared libraries a process has loaded,
by filename and by a symbol the library exports. fastoptim's pool lives in its
extension module, `_core.<tag>.so` (`.pyd` on Windows), which exports
fo_pool_get_num_threads and fo_pool_set_num_threads: registered, it shows up in
threadpool_info() with user_api "fastoptim", and threadpool_limits(n) (or
threadpool_limits(n, user_api="fastoptim")) sets fastoptim's thread count for the
block, restoring it after. Registered when fastoptim is imported with the C
backend and threadpoolctl is importable.
"""
_state = "not registered"


def _controller_class(threadpoolctl):
    class FastoptimController(threadpoolctl.LibController):
        user_api = "fastoptim"
        internal_api = "fastoptim"
        filename_prefixes = ("_core.",)
        check_symbols = ("fo_pool_get_num_threads", "fo_pool_set_num_threads")

        def get_num_threads(self):
            return self.dynlib.fo_pool_get_num_threads()

        def set_num_threads(self, num_threads):
            self.dynlib.fo_pool_set_num_threads(int(num_threads))

        def get_version(self):
            from . import __version__

            return __version__

        def set_additional_attributes(self):
            from . import _core

            self.threading_layer = "fastoptim pool"
            self.spin_us = _core.pool_info()["spin_us"]

    return FastoptimController


def register():
    """Register the controller once, if threadpoolctl can take it."""
    global _state
    if _state.startswith("registered"):
        return
    try:
        import threadpoolctl
    except ImportError:
        _state = "not installed"
        return
    if not (hasattr(threadpoolctl, "register") and hasattr(threadpoolctl, "LibController")):
        _state = (f"threadpoolctl {getattr(threadpoolctl, '__version__', '?')} cannot register "
                  f"libraries (3.4 or later can): it does not control fastoptim's threads")
        return
    threadpoolctl.register(_controller_class(threadpoolctl))
    _state = "registered (user_api 'fastoptim')"


def state():
    return _state
