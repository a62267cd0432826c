# Fast paths for the optimizer objects (fastoptim.optim); included by _core.pyx.
