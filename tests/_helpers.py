"""Shared pieces of the trust tests (test_properties, test_aliasing, ...).

- UPDATES: the course API's updates (gd, momentum, adam), callable through the
  public API, the compiled module or the NumPy fallback, one calling convention.
- reference(): an independent float64 transcription of DESIGN.md's formulas,
  with an absolute error bound per element (see its docstring for the ulps).
- check_against_reference(): the element-by-element comparison.
- snapshot()/assert_unchanged(): bitwise copies, NaN payloads included.
"""
import contextlib
import math
import os
import re
import warnings
from dataclasses import dataclass

import numpy as np
import pytest

import fastoptim
from fastoptim import _fallback

try:
    from fastoptim import _core
except ImportError:
    _core = None

BACKEND = fastoptim.BACKEND

# Tests that call _core and _fallback side by side do not depend on the backend
# the public API picked: they run once, in the C-backend pass of the suite.
once = pytest.mark.skipif(
    _core is None or BACKEND != "c",
    reason="backend-independent comparison of _core and _fallback; runs in the C-backend pass",
)


@contextlib.contextmanager
def numpy_step(reason=""):
    """Around a step that the compiled backend hands to NumPy: expect its
    PerformanceWarning, whose message contains `reason`; the NumPy backend
    (NumPy by choice) issues none. Yields the recorded warnings."""
    if BACKEND == "c":
        with pytest.warns(fastoptim.PerformanceWarning, match=re.escape(reason)) as record:
            yield record
        return
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        yield record
    assert not [w for w in record if issubclass(w.category, fastoptim.PerformanceWarning)]


def in_layouts(grads, params):
    """grads with each gradient in its parameter's memory layout (Fortran
    where the parameter is Fortran-ordered only): the C path takes a step
    only then."""
    def fortran(p):
        return p.flags.f_contiguous and not p.flags.c_contiguous
    return {dk: np.asfortranarray(g) if dk[1:] in params and fortran(params[dk[1:]]) else g
            for dk, g in grads.items()}


def examples(n):
    """Hypothesis examples per property test: `n` by default, scaled by
    FASTOPTIM_EXAMPLES_SCALE (e.g. 20 for a long local hunt, 0.2 under sanitizers)."""
    scale = float(os.environ.get("FASTOPTIM_EXAMPLES_SCALE", "1"))
    return max(1, int(n * scale))


# --- the updates, one calling convention -----------------------------------------

@dataclass(frozen=True)
class Update:
    name: str            # "gd", "momentum", "adam": the names in _core and _fallback
    public: str          # the course API function
    states: tuple        # state dict names, in call order

    def call(self, impl, params, grads, states, hyper):
        """Run the update through `impl` ("public", "c" or "numpy"): the course's
        function, or the backend's generic update with the same arguments."""
        if impl == "public":
            return getattr(fastoptim, self.public)(params, grads, *states, *self.order(hyper))
        update = (_core if impl == "c" else _fallback).update
        h = hyper
        if self.name == "gd":
            return update("sgd", params, grads, (None,), 1, h["lr"], (0.0, 0.0))
        if self.name == "momentum":
            return update("sgd", params, grads, tuple(states), 1, h["lr"], (h["beta"], h["beta"]),
                          flags=_fallback.SGD_MOMENTUM | _fallback.SGD_AVERAGE,
                          names=("beta", "beta"), state_names=("v",))
        return update("adam", params, grads, tuple(states) + (None,), h["t"], h["lr"],
                      (h["beta1"], h["beta2"], h["eps"]))

    def order(self, h):
        if self.name == "gd":
            return (h["lr"],)
        if self.name == "momentum":
            return (h["beta"], h["lr"])
        return (h["t"], h["lr"], h["beta1"], h["beta2"], h["eps"])

    def default_hyper(self):
        return {"gd": {"lr": 0.05},
                "momentum": {"beta": 0.9, "lr": 0.05},
                "adam": {"t": 3, "lr": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}}[self.name]


GD = Update("gd", "update_parameters_with_gd", ())
MOMENTUM = Update("momentum", "update_parameters_with_momentum", ("v",))
ADAM = Update("adam", "update_parameters_with_adam", ("v", "s"))
UPDATES = (GD, MOMENTUM, ADAM)
IMPLS = ("c", "numpy") if _core is not None else ("numpy",)


def problem(update, shapes, dtype=np.float64, seed=0, order="C"):
    """Parameters, grads and state dicts for `update` with keys W0, W1, ...
    of the given shapes; state is valid (second moments >= 0)."""
    rng = np.random.default_rng(seed)

    def arr(shape, positive=False):
        a = rng.standard_normal(shape)
        return np.array(np.abs(a) if positive else a, dtype=dtype, order=order)

    params = {f"W{i}": arr(s) for i, s in enumerate(shapes)}
    grads = {"d" + k: arr(p.shape) for k, p in params.items()}
    states = [{"d" + k: arr(p.shape, positive=(name == "s")) for k, p in params.items()}
              for name in update.states]
    return params, grads, states


def clone(d):
    """A dict of independent copies that keep each array's memory layout."""
    return {k: (np.array(a, copy=True, order="K") if isinstance(a, np.ndarray) else a)
            for k, a in d.items()}


# --- bitwise snapshots -------------------------------------------------------------

def bits(a):
    """The array's bytes as unsigned integers (any layout): equality of these is
    bitwise equality, NaN payloads and signed zeros included. Types without an
    integer of their size (long double, whose padding bytes are undefined) are
    returned as they are, compared by value."""
    a = np.asarray(a)
    if a.dtype.hasobject or a.itemsize not in (1, 2, 4, 8):
        return a
    return a.view(np.dtype(f"u{a.itemsize}"))


def snapshot(*dicts):
    return [{k: (a, np.array(a, copy=True)) for k, a in d.items() if isinstance(a, np.ndarray)}
            for d in dicts]


def assert_unchanged(saved, *dicts):
    for shot, d in zip(saved, dicts):
        assert set(d) >= set(shot), "keys were removed"
        for k, (obj, copy) in shot.items():
            assert d[k] is obj, f"{k!r} was rebound to another object"
            b1, b2 = bits(obj), bits(copy)
            assert np.array_equal(b1, b2, equal_nan=b1.dtype.kind in "fc"), f"{k!r} was modified"


def assert_same_bits(a, b, what=""):
    """Bitwise equal, except that NaNs need only be NaN in both (the payload of a
    NaN produced from two NaN operands depends on operand order, which the
    compiler may swap in commutative operations)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, what
    na, nb = np.isnan(a), np.isnan(b)
    bad = (na != nb) | (~na & (bits(a) != bits(b)))
    if bad.any():
        i = np.flatnonzero(bad.ravel())
        raise AssertionError(
            f"{what}: {i.size} of {a.size} elements differ; first at flat index {i[0]}: "
            f"{a.ravel()[i[0]]!r} vs {b.ravel()[i[0]]!r}")


# --- the independent float64 reference ------------------------------------------

# Error bound. For float32 and float64 arrays alike the implementation performs
# each update in the array's dtype, with the scalars (lr, betas, 1-beta, the bias
# corrections, eps) rounded to that dtype. Every elementary operation (scalar
# rounding, product, sum, sqrt, quotient) costs at most half an ulp of its
# result; the reference itself, in float64, adds its own roundings (comparable
# for float64 arrays). The bound allows ULPS machine epsilons of the dtype
# relative to the largest term of every sum (ULPS to 2*ULPS ulps of that term),
# propagates the error of the state into the parameter update, and adds ULPS
# smallest subnormals wherever underflow can lose the value. A denominator no
# larger than its own error bound (eps = 0 with a second moment near the
# underflow threshold) leaves the quotient unbounded: such elements are only
# checked when an input is NaN or Inf (then the IEEE class must match).
ULPS = 4


def _units(dtype):
    fi = np.finfo(dtype)
    return float(fi.eps) * ULPS, float(fi.smallest_subnormal) * ULPS, float(fi.max)


def reference(update, dtype, p, g, states, hyper):
    """{output name: (float64 value, absolute error bound, involved inputs finite,
    conditioned)}: `conditioned` is False where the bound is not finite even
    with every NaN/Inf input replaced by 0 (a division by a denominator within
    its own error), so that not even the IEEE class of the result is determined.
    """
    out = _reference(update, dtype, p, g, states, hyper)
    clean = lambda a: np.nan_to_num(np.asarray(a, np.float64), nan=0.0, posinf=0.0,  # noqa: E731
                                    neginf=0.0)
    cleaned = _reference(update, dtype, clean(p), clean(g), [clean(s) for s in states], hyper)
    return {k: v + (np.isfinite(cleaned[k][1]),) for k, v in out.items()}


def _reference(update, dtype, p, g, states, hyper):
    """{output name: (float64 value, absolute error bound, involved inputs finite)}.

    Straight from DESIGN.md:
      gd:       p - lr*g
      momentum: v = beta*v + (1-beta)*g;  p - lr*v
      adam:     m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;
                p - lr * (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps)
    """
    e, tiny, _ = _units(dtype)

    def stored(a):
        return a.astype(dtype).astype(np.float64)

    p = np.asarray(p, np.float64)
    g = np.asarray(g, np.float64)
    st = [np.asarray(s, np.float64) for s in states]
    fin = np.isfinite
    with np.errstate(all="ignore"):
        if update.name == "gd":
            lr = float(hyper["lr"])
            new = p - lr * g
            err = e * (abs(p) + abs(lr * g)) + tiny
            return {"p": (new, err, fin(p) & fin(g))}

        if update.name == "momentum":
            beta, lr = float(hyper["beta"]), float(hyper["lr"])
            (v,) = st
            v1 = beta * v + (1 - beta) * g
            ev = e * (abs(beta * v) + abs((1 - beta) * g)) + tiny
            new = p - lr * stored(v1)
            ep = lr * ev + e * (abs(p) + abs(lr * v1)) + tiny
            ok_v = fin(v) & fin(g)
            return {"v": (v1, ev, ok_v), "p": (new, ep, ok_v & fin(p))}

        t = int(hyper["t"])
        lr, b1, b2, eps = (float(hyper[k]) for k in ("lr", "beta1", "beta2", "eps"))
        m, v = st
        m1 = b1 * m + (1 - b1) * g
        em = e * (abs(b1 * m) + abs((1 - b1) * g)) + tiny
        v1 = b2 * v + (1 - b2) * g * g
        ev = e * (abs(b2 * v) + (1 - b2) * g * g) + tiny
        # beta ** t is 0 long before t = 2**64 for any beta < 1
        bc1 = 1 - b1 ** float(min(t, 2**64))
        bc2 = 1 - b2 ** float(min(t, 2**64))
        # The parameter update reads the state as stored, in the array's dtype: a
        # second moment beyond its range is Inf and the update then exactly 0.
        ms, vs = stored(m1), stored(v1)
        m_hat = ms / bc1
        v_hat = vs / bc2
        den = np.sqrt(v_hat) + eps
        upd = lr * m_hat / den
        new = p - upd
        # Error of the denominator: |sqrt(a) - sqrt(b)| <= min(sqrt|a-b|, |a-b|/sqrt(b)).
        sq = np.sqrt(np.maximum(v1, 0.0))
        esq = np.where(sq > 0, np.minimum(np.sqrt(ev), ev / np.where(sq > 0, sq, 1.0)),
                       np.sqrt(ev)) + e * sq
        r = 1 / math.sqrt(bc2)
        eden = r * esq + e * (sq * r + eps)
        num = (lr / bc1) * m1
        enum = (lr / bc1) * em + e * abs(num) + tiny  # the product may underflow
        gap = den - eden
        # N'/D' - N/D = (N'-N)/D' + (N/D)(D-D')/D'; grouped so that no
        # product of two small terms underflows
        safe_gap = np.where(gap > 0, gap, 1.0)
        eupd = np.where(gap > 0, enum / safe_gap + abs(upd) * (eden / safe_gap) + e * abs(upd),
                        np.inf)
        eupd = np.where(np.isinf(vs) & np.isfinite(ms), 0.0, eupd)
        ep = eupd + e * (abs(p) + abs(upd)) + tiny
        ok_m = fin(m) & fin(g)
        ok_v = fin(v) & fin(g)
        return {"v": (m1, em, ok_m), "s": (v1, ev, ok_v),
                "p": (new, ep, ok_m & ok_v & fin(p))}


def ieee_class(a):
    """0 finite, 1 NaN, 2 +Inf, 3 -Inf."""
    a = np.asarray(a, np.float64)
    return np.where(np.isnan(a), 1, np.where(a == np.inf, 2, np.where(a == -np.inf, 3, 0)))


def mismatches(actual, expected, bound, finite_inputs, conditioned, dtype):
    """Flat indices where `actual` (in `dtype`) disagrees with the reference.

    Finite inputs: |actual - expected| <= bound; an Inf in `actual` is accepted
    where the exact value, within its bound, reaches the dtype's overflow
    threshold (sign matching); elements whose bound is not finite are not
    checked. Any NaN or Inf input: where `conditioned`, the IEEE class (finite,
    NaN, +Inf, -Inf) of actual and reference must match, and finite results
    must be within bound where the bound is finite."""
    _, _, big = _units(dtype)
    x = np.asarray(actual, np.float64).ravel()
    r, b = np.asarray(expected).ravel(), np.asarray(bound).ravel()
    f = np.broadcast_to(finite_inputs, np.shape(expected)).ravel()
    c = np.broadcast_to(conditioned, np.shape(expected)).ravel()
    with np.errstate(all="ignore"):
        close = abs(x - r) <= b
        overflow = np.isinf(x) & np.isfinite(r) & (abs(r) + b >= big) & (np.sign(x) == np.sign(r))
        ok_finite = ~np.isfinite(b) | close | overflow
        same_class = ieee_class(x) == ieee_class(r)
        both_finite = np.isfinite(x) & np.isfinite(r)
        ok_special = ~c | (same_class & (~both_finite | ~np.isfinite(b) | close))
    return np.flatnonzero(np.where(f, ok_finite, ok_special) == 0)


def check_against_reference(update, dtype, before, after, hyper, context=""):
    """`before`: (p, g, states) as float64 copies taken before the call;
    `after`: {"p": array, "v": array, ...} after it."""
    p, g, states = before
    ref = reference(update, dtype, p, g, states, hyper)
    for name, (expected, bound, finite_inputs, conditioned) in ref.items():
        actual = after[name]
        assert actual.dtype == dtype
        bad = mismatches(actual, expected, bound, finite_inputs, conditioned, dtype)
        if bad.size:
            i = bad[0]
            flat = lambda a: np.asarray(a, np.float64).ravel()  # noqa: E731
            inputs = {"p": flat(p)[i], "g": flat(g)[i]}
            inputs.update({n: flat(s)[i] for n, s in zip(update.states, states)})
            raise AssertionError(
                f"{update.name} {np.dtype(dtype).name} {context}: output {name!r} wrong at "
                f"{bad.size} of {np.size(expected)} elements; first at flat index {i}: got "
                f"{flat(actual)[i]!r}, reference {flat(expected)[i]!r} +- "
                f"{np.ravel(bound)[i]!r}; inputs {inputs}; hyper {hyper}")
