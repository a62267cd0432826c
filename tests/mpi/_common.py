"""Shared pieces of the scripts that tests/test_distributed.py runs under
mpiexec (python -m mpi4py, so an exception on one rank aborts the job)."""
import hashlib
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))   # tests/: optimizer_db

from mpi4py import MPI  # noqa: E402

from fastoptim import _fallback  # noqa: E402

COMM = MPI.COMM_WORLD
RANK, WORLD = COMM.Get_rank(), COMM.Get_size()

# Parameter sets: (key, shape, dtype, order). Sizes not divisible by 1..4 and
# larger than a norm chunk (1024), so that slices cut arrays; zero-size arrays.
SHAPE_SETS = {
    "uneven": [("W1", (53, 97), np.float64, "C"), ("b1", (53, 1), np.float64, "C"),
               ("W2", (29, 53), np.float64, "F"), ("b2", (29, 1), np.float64, "C")],
    "mixed": [("W1", (41, 89), np.float32, "C"), ("W2", (17, 131), np.float64, "F"),
              ("b1", (41, 1), np.float32, "C"), ("c", (17,), np.float64, "C"),
              ("e", (0,), np.float32, "C"), ("s", (), np.float64, "C"),
              ("E", (0, 3), np.float64, "C")],
    "small": [("W1", (6, 5), np.float64, "C"), ("b1", (6, 1), np.float64, "C"),
              ("W2", (4, 6), np.float64, "F"), ("b2", (4, 1), np.float64, "C")],
}


def make_params(spec, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape, dtype, order in spec:
        out[key] = np.array(rng.standard_normal(shape), dtype=dtype, order=order)
    return out


def rank_grads(spec, rank, step, seed=0, scale=1.0):
    """Rank `rank`'s gradients at `step`: a function of (rank, step) only."""
    rng = np.random.default_rng([seed, step, rank])
    return {"d" + key: np.asarray(scale * rng.standard_normal(shape)).astype(dtype)
            for key, shape, dtype, _ in spec}


def mean_grads(spec, per_rank):
    """G = ((g_0 + g_1) + ...) * (1/w) in the dtype, laid out like the parameters."""
    w = len(per_rank)
    out = {}
    for key, _, _, order in spec:
        g = _fallback.sum_sources([pr["d" + key] for pr in per_rank], 1.0 / w)
        out["d" + key] = np.array(g, order=order)
    return out


def copy(d):
    return {k: np.array(a, copy=True, order="K") for k, a in d.items()}


def digest(arrays):
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = arrays[key]
        h.update(key.encode())
        h.update(np.ascontiguousarray(np.ravel(a, order="K")).view(np.uint8).tobytes())
    return h.hexdigest()


def assert_bitwise(actual, expected, what):
    """Bitwise equality of two dicts of arrays (NaN payloads included)."""
    assert sorted(actual) == sorted(expected), f"{what}: keys {sorted(actual)} vs {sorted(expected)}"
    for k in expected:
        a, b = np.asarray(actual[k]), np.asarray(expected[k])
        assert a.shape == b.shape and a.dtype == b.dtype, \
            f"{what} {k}: {a.shape} {a.dtype} vs {b.shape} {b.dtype}"
        ua = np.ravel(a, order="K").view(np.uint8).reshape(a.size, -1) if a.size else a
        ub = np.ravel(b, order="K").view(np.uint8).reshape(b.size, -1) if b.size else b
        if a.size and not np.array_equal(ua, ub):
            i = int(np.flatnonzero((ua != ub).any(axis=1))[0])
            raise AssertionError(f"rank {RANK} of {WORLD}: {what} {k}: element {i} differs: "
                                 f"{np.ravel(a, 'K')[i]!r} vs {np.ravel(b, 'K')[i]!r}")


def assert_same_on_every_rank(arrays, what):
    digests = COMM.allgather(digest(arrays))
    assert len(set(digests)) == 1, f"{what}: ranks differ: {digests}"


def done(name, count):
    if RANK == 0:
        print(f"{name}: OK, {count} checks at world size {WORLD}", flush=True)
