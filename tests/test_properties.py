"""Property tests (hypothesis): every update against an independent float64
reference, the compiled backend against the NumPy fallback bitwise at every
dispatch level, and identical errors for bad input.

Inputs: float32 and float64; shapes including zero-size and 0-d, and 1-D
arrays long enough for the vector loops; C, Fortran, misaligned-offset,
strided and negative-stride layouts (every array of a call in one layout, or
each in its own); values including subnormals, huge values, NaN and Inf.
Each array sits inside a larger buffer filled with a sentinel, so a write
outside the array (a vector tail, a strided view treated as contiguous) is
caught. The reference tolerance is documented in _helpers.reference.
"""
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from _helpers import (
    ADAM,
    UPDATES,
    _core,
    assert_same_bits,
    bits,
    check_against_reference,
    examples,
    mismatches,
    once,
    reference,
)

# the drawn arrays include layouts and views that the C path leaves to NumPy:
# their PerformanceWarning is expected
pytestmark = pytest.mark.filterwarnings("ignore::fastoptim.PerformanceWarning")

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                     HealthCheck.data_too_large])
LAYOUTS = ("C", "F", "offset", "strided", "reversed")
SENTINEL = -7.25


# --- strategies ----------------------------------------------------------------------

def shapes():
    return st.one_of(
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6),
        st.tuples(st.integers(0, 300)),  # long enough for every vector width and unroll
    )


def _f(dtype, x):
    return float(np.asarray(x, dtype))


def values(dtype, nonneg=False, reference_range=True):
    """Elements. For the reference comparison finite values stay below 1e15
    (float32) / 1e150 (float64), so no intermediate can overflow where the
    float64 reference would not (overflow itself is tested in test_extremes);
    the bitwise backend comparison takes any float."""
    fi = np.finfo(dtype)
    width = 32 if dtype == np.float32 else 64
    big = _f(dtype, 1e15 if dtype == np.float32 else 1e150) if reference_range else float(fi.max)
    special = [0.0, float(fi.smallest_subnormal), float(fi.smallest_normal), 1.0, big,
               np.nan, np.inf]
    lo = 0.0 if nonneg else -big
    if not nonneg:
        special += [-0.0, -float(fi.smallest_subnormal), -1.0, -big, -np.inf]
    return st.one_of(
        st.floats(lo, big, width=width, allow_subnormal=True),
        st.sampled_from(special),
    )


def scalars(dtype):
    """Valid hyperparameters. Scalars are rounded to the array's dtype (DESIGN.md),
    so none lies strictly between 0 and the dtype's smallest normal, where that
    rounding alone would turn it into 0."""
    normal = float(np.finfo(dtype).smallest_normal)
    lr = st.one_of(st.sampled_from([0.0, 1e-3, 0.01, 0.1, 1.0]), st.floats(normal, 10.0))
    beta = st.one_of(st.sampled_from([0.0, 0.5, 0.9, 0.99, 0.999, 0.9999999]),
                     st.floats(1e-6, 0.999))
    eps = st.one_of(st.sampled_from([0.0, 1e-8, 1e-7, 1e-4, 0.1]), st.floats(normal, 1.0))
    t = st.one_of(st.integers(1, 10_000), st.sampled_from([10**7, 2**31 - 1, 2**31 + 1,
                                                           2**62, 2**62 + 1, 2**64 + 3]))
    return {"lr": lr, "beta": beta, "beta1": beta, "beta2": beta, "eps": eps, "t": t}


def draw_hyper(data, update, dtype):
    s = scalars(dtype)
    return {k: data.draw(s[k], label=k) for k in update.default_hyper()}


# --- placing values into layouts inside sentinel-filled buffers ----------------------

class Placed:
    """An array in `layout` inside a sentinel-filled buffer; `outside_ok()` checks
    that nothing outside the array was written."""

    def __init__(self, vals, layout):
        dtype, shape = vals.dtype, vals.shape
        if layout == "strided" and vals.ndim:
            buf_shape = tuple(2 * s + 1 for s in shape)

            def make(b):
                return b[tuple(slice(1, None, 2) for _ in shape)]
        else:
            guard = 64 // dtype.itemsize
            buf_shape = (vals.size + 2 * guard + 1,)
            start = guard + (layout == "offset")

            def make(b):
                flat = b[start:start + vals.size]
                if layout == "F":
                    return flat.reshape(shape[::-1]).T
                if layout == "reversed":
                    return flat.reshape(shape)[tuple(slice(None, None, -1) for _ in shape) + (...,)]
                return flat.reshape(shape)
        self.buf = np.full(buf_shape, SENTINEL, dtype)
        self.view = make(self.buf)
        self.view[...] = vals
        self.outside = np.ones(self.buf.size, bool)
        self.outside[make(np.arange(self.buf.size).reshape(buf_shape)).ravel()] = False

    def outside_ok(self):
        sentinel = bits(np.array(SENTINEL, self.buf.dtype))
        return bool(np.all(bits(self.buf).ravel()[self.outside] == sentinel))


def draw_call(data, update, dtype, elements):
    """Draw keys, shapes, layouts and values; returns (placed dict, values dict)
    with entries placed[role][key] for role in p, g and the state names."""
    nkeys = data.draw(st.integers(1, 3), label="nkeys")
    uniform = data.draw(st.booleans(), label="one layout")
    common = data.draw(st.sampled_from(LAYOUTS), label="layout")
    roles = ("p", "g") + update.states
    raw = {r: {} for r in roles}
    layouts = {r: {} for r in roles}
    for i in range(nkeys):
        key = f"W{i}"
        shape = data.draw(shapes(), label=f"shape {key}")
        for r in roles:
            raw[r][key] = data.draw(
                hnp.arrays(dtype, shape, elements=elements(nonneg=(r == "s"))), label=f"{r}[{key}]")
            layouts[r][key] = common if uniform else data.draw(st.sampled_from(LAYOUTS))
    return raw, layouts


def place_all(raw, layouts):
    return {r: {k: Placed(v, layouts[r][k]) for k, v in d.items()} for r, d in raw.items()}


def as_call(update, placed):
    params = {k: pl.view for k, pl in placed["p"].items()}
    grads = {"d" + k: pl.view for k, pl in placed["g"].items()}
    states = [{"d" + k: pl.view for k, pl in placed[s].items()} for s in update.states]
    return params, grads, states


# --- 1. every update against the float64 reference (the backend under test) ---------

@pytest.mark.parametrize("update", UPDATES, ids=lambda u: u.name)
@settings(max_examples=examples(60), **SETTINGS)
@given(data=st.data())
def test_matches_float64_reference(update, data):
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    raw, layouts = draw_call(data, update, dtype, lambda nonneg: values(dtype, nonneg))
    hyper = draw_hyper(data, update, dtype)
    placed = place_all(raw, layouts)
    params, grads, states = as_call(update, placed)
    grads["dExtra"] = extra = np.arange(5, dtype=dtype)  # not a parameter's: never read
    g_before = {k: np.array(a, copy=True) for k, a in grads.items()}

    update.call("public", params, grads, states, hyper)

    for k, a in grads.items():
        assert np.array_equal(bits(a), bits(g_before[k])), f"input grads[{k!r}] was modified"
    assert grads["dExtra"] is extra
    for role, d in placed.items():
        for k, pl in d.items():
            assert pl.outside_ok(), f"{role}[{k}] ({layouts[role][k]}): wrote outside the array"
    for k in raw["p"]:
        before = (raw["p"][k], raw["g"][k], [raw[s][k] for s in update.states])
        after = {"p": params[k]}
        after.update({s: st_[("d" + k)] for s, st_ in zip(update.states, states)})
        check_against_reference(update, dtype, before, after, hyper,
                                context=f"key {k}, layouts { {r: layouts[r][k] for r in raw} }")


def test_reference_check_catches_the_classic_slips():
    """The comparison above can fail: each classic Adam slip is outside the
    tolerance almost everywhere, and one element moved off by 1e-4 is flagged
    alone (float32, hyperparameters chosen so that every slip matters)."""
    rng = np.random.default_rng(7)
    n, dtype = 200, np.float32
    b1, b2, eps, t, lr = 0.9, 0.999, 1e-3, 5, 0.01
    p = rng.standard_normal(n).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    m = (0.1 * rng.standard_normal(n)).astype(dtype)
    v = (1e-3 * rng.random(n)).astype(dtype)
    h = {"t": t, "lr": lr, "beta1": b1, "beta2": b2, "eps": eps}
    exp_p, bound, fin, cond = reference(ADAM, dtype, p, g, [m, v], h)["p"]
    f64 = lambda a: a.astype(np.float64)  # noqa: E731
    m1 = b1 * f64(m) + (1 - b1) * f64(g)
    v1 = b2 * f64(v) + (1 - b2) * f64(g) ** 2
    slips = {
        "s = s + (1-b2) g^2": np.sqrt((f64(v) + (1 - b2) * f64(g) ** 2) / (1 - b2**t)) + eps,
        "eps inside the sqrt": np.sqrt(v1 / (1 - b2**t) + eps),
        "second moment corrected with t-1": np.sqrt(v1 / (1 - b2 ** (t - 1))) + eps,
    }
    for name, den in slips.items():
        slipped = (f64(p) - lr * (m1 / (1 - b1**t)) / den).astype(dtype)
        assert mismatches(slipped, exp_p, bound, fin, cond, dtype).size > n // 2, name
    exact = exp_p.astype(dtype)
    assert mismatches(exact, exp_p, bound, fin, cond, dtype).size == 0
    exact[17] += 1e-4
    assert list(mismatches(exact, exp_p, bound, fin, cond, dtype)) == [17]


# --- 2. compiled backend == fallback, bitwise, at every dispatch level ----------------

@once
@pytest.mark.parametrize("update", UPDATES, ids=lambda u: u.name)
@settings(max_examples=examples(60), **SETTINGS)
@given(data=st.data())
def test_backends_agree_bitwise(update, data):
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    raw, layouts = draw_call(
        data, update, dtype, lambda nonneg: values(dtype, nonneg, reference_range=False))
    hyper = draw_hyper(data, update, dtype)
    results = {}
    start = _core.isa_in_use()
    try:
        for impl in ["numpy"] + [f"c/{isa}" for isa in _core.isa_supported()]:
            if impl.startswith("c/"):
                _core.set_isa(impl[2:])
            placed = place_all(raw, layouts)
            params, grads, states = as_call(update, placed)
            update.call("numpy" if impl == "numpy" else "c", params, grads, states, hyper)
            for role, d in placed.items():
                for k, pl in d.items():
                    assert pl.outside_ok(), f"{impl}: {role}[{k}] written outside the array"
            results[impl] = (params, states)
    finally:
        _core.set_isa(start)
    ref_params, ref_states = results.pop("numpy")
    for impl, (params, states) in results.items():
        for k in params:
            assert_same_bits(params[k], ref_params[k], f"{impl} vs numpy: parameters[{k!r}]")
        for name, d, rd in zip(update.states, states, ref_states):
            for k in d:
                assert_same_bits(d[k], rd[k], f"{impl} vs numpy: {name}[{k!r}]")


# --- 3. both backends raise the same error (or both succeed, bitwise equal) ----------

ENTRY_CASES = (
    "ok", "missing_grad", "missing_state", "grad_shape", "state_shape", "param_int",
    "grad_int", "state_int", "param_complex", "grad_bool", "param_object", "readonly_param",
    "readonly_state", "readonly_grad", "state_dtype", "grad_other_float", "grad_list",
    "param_list", "state_is_param", "states_shared", "state_overlaps_param", "grad_is_param",
    "grad_is_state", "param_zero_stride", "param_self_overlap", "param_noncontig",
    "param_float16", "param_longdouble", "param_matrix", "param_masked", "param_memmap_like",
    "param_swapped", "param_unaligned", "key_not_str", "second_param_same_array",
)
SCALAR_CASES = {
    "lr": [None, -1.0, float("nan"), float("inf"), "0.1", True, np.float32(0.5), 3,
           10**400, np.longdouble(0.1), complex(0.1, 0)],
    "beta": [None, 1.0, -0.1, 1, float("nan"), np.float16(0.5), 0.999999999999],
    "eps": [None, -1e-8, float("nan"), float("inf"), 0, np.int64(0)],
    "t": [None, 0, -3, 1.0, 2.5, True, np.int32(7), np.uint64(2**63), "3", 2**62 + 1, 10**400],
}


def build(update, dtype, seed, cases, shape):
    """A call from a recipe; built twice it gives two independent, identical calls."""
    rng = np.random.default_rng(seed)
    params, grads = {}, {}
    states = [{} for _ in update.states]
    for i, case in enumerate(cases):
        key = f"W{i}"
        p = rng.standard_normal(shape).astype(dtype)
        g = rng.standard_normal(shape).astype(dtype)
        sts = [np.abs(rng.standard_normal(shape)).astype(dtype) for _ in update.states]
        if case == "grad_shape":
            g = rng.standard_normal((shape[0] + 1,) + shape[1:]).astype(dtype)
        elif case == "state_shape" and sts:
            sts[-1] = np.zeros(shape[::-1] + (1,), dtype)
        elif case == "param_int":
            p = np.arange(p.size).reshape(shape)
        elif case == "grad_int":
            g = np.ones(shape, np.int32)
        elif case == "state_int" and sts:
            sts[0] = np.zeros(shape, np.int64)
        elif case == "param_complex":
            p = p.astype(np.complex128)
        elif case == "grad_bool":
            g = g > 0
        elif case == "param_object":
            p = p.astype(object)
        elif case == "readonly_param":
            p.flags.writeable = False
        elif case == "readonly_state" and sts:
            sts[-1].flags.writeable = False
        elif case == "readonly_grad":
            g.flags.writeable = False
        elif case == "state_dtype" and sts:
            sts[0] = sts[0].astype(np.float32 if dtype == np.float64 else np.float64)
        elif case == "grad_other_float":
            g = g.astype(np.float16)
        elif case == "grad_list":
            g = g.tolist()
        elif case == "param_list":
            p = p.tolist()
        elif case == "state_is_param" and sts:
            sts[0] = p
        elif case == "states_shared" and len(sts) == 2:
            sts[1] = sts[0]
        elif case == "state_overlaps_param" and sts:
            buf = rng.standard_normal(2 * p.size).astype(dtype)
            p, sts[0] = buf[:p.size].reshape(shape), buf[p.size // 2:][:p.size].reshape(shape)
        elif case == "grad_is_param":
            g = p
        elif case == "grad_is_state" and sts:
            g = sts[0]
        elif case == "param_zero_stride":
            p = np.lib.stride_tricks.as_strided(p, strides=(0,) * p.ndim, writeable=True)
        elif case == "param_self_overlap":
            # element [i, j, ...] at i + j + ...: neighbours share memory
            p = np.lib.stride_tricks.as_strided(
                np.concatenate([p.ravel()] * 3), shape=shape,
                strides=(p.itemsize,) * p.ndim, writeable=True)
        elif case == "param_noncontig":
            big = rng.standard_normal((2 * shape[0],) + shape[1:]).astype(dtype)
            p = big[::2]
        elif case in ("param_float16", "param_longdouble"):
            other = np.float16 if case == "param_float16" else np.longdouble
            p, g = p.astype(other), g.astype(other)
            sts = [s.astype(other) for s in sts]
        elif case == "param_matrix" and p.ndim == 2:
            with warnings.catch_warnings():  # np.matrix on purpose: an ndarray subclass
                warnings.filterwarnings("ignore", "the matrix subclass",
                                        PendingDeprecationWarning)
                p, g = np.asmatrix(p), np.asmatrix(g)
                sts = [np.asmatrix(s) for s in sts]
        elif case == "param_masked":
            p = np.ma.array(p, mask=(np.arange(p.size) % 2).reshape(shape))
        elif case == "param_memmap_like":
            p = p.view(_Sub)
        elif case == "param_swapped":
            p = p.astype(p.dtype.newbyteorder())
        elif case == "param_unaligned":
            raw = np.zeros(p.nbytes + 1, np.uint8)
            u = raw[1:].view(p.dtype).reshape(shape)
            u[...] = p
            p = u
        elif case == "second_param_same_array" and params:
            p = next(iter(params.values()))
        k = i if case == "key_not_str" else key
        params[k] = p
        if case != "missing_grad":
            grads["d" + str(k)] = g
        for j, s in enumerate(sts):
            if not (case == "missing_state" and j == len(sts) - 1):
                states[j]["d" + str(k)] = s
    return params, grads, states


class _Sub(np.ndarray):
    """A plain ndarray subclass, as np.memmap and other wrappers are."""


def outcome(update, impl, call, hyper):
    params, grads, states = call
    try:
        update.call(impl, params, grads, states, hyper)
    except Exception as exc:  # noqa: BLE001 - the error itself is compared
        return ("raised", type(exc), str(exc))
    return ("ok", params, states)


@once
@pytest.mark.parametrize("update", UPDATES, ids=lambda u: u.name)
@settings(max_examples=examples(80), **SETTINGS)
@given(data=st.data())
def test_backends_raise_the_same_errors(update, data):
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    shape = data.draw(st.sampled_from([(4,), (3, 4), (2, 2, 3)]))
    cases = data.draw(st.lists(st.sampled_from(ENTRY_CASES), min_size=1, max_size=3))
    hyper = dict(update.default_hyper())
    for name in hyper:
        pool = SCALAR_CASES["beta" if name.startswith("beta") else name]
        if data.draw(st.integers(0, 4), label=f"perturb {name}") == 0:
            bad = data.draw(st.sampled_from(pool), label=name)
            if bad is not None:
                hyper[name] = bad
    seed = data.draw(st.integers(0, 2**16))
    c_call = build(update, dtype, seed, cases, shape)
    n_call = build(update, dtype, seed, cases, shape)
    c_out = outcome(update, "c", c_call, hyper)
    n_out = outcome(update, "numpy", n_call, hyper)
    assert c_out[0] == n_out[0], f"compiled: {c_out[:1] + c_out[1:2]}, fallback: {n_out[:2]}"
    if c_out[0] == "raised":
        assert c_out[1] is n_out[1]
        # Which of several overlapping pairs is named depends on the arrays'
        # addresses, which differ between the two builds.
        if not ("share memory" in c_out[2] and "share memory" in n_out[2]):
            assert c_out[2] == n_out[2]
        return
    for (pc, pn) in zip(c_out[1].values(), n_out[1].values()):
        if isinstance(pc, np.ndarray):
            assert type(pc) is type(pn)
            assert_same_bits(np.asarray(pc), np.asarray(pn), f"parameters, cases {cases}")
    for dc, dn in zip(c_out[2], n_out[2]):
        for k in dc:
            assert_same_bits(np.asarray(dc[k]), np.asarray(dn[k]), f"state {k}, cases {cases}")


# --- 4. the optimizer family: compiled == fallback, bitwise, on any input -----------------

def _wd(data, keys):
    """Weight decay: none, one value, or one per key."""
    kind = data.draw(st.sampled_from(["none", "one", "per key"]), label="weight decay")
    if kind == "none":
        return 0.0
    if kind == "one":
        return data.draw(st.sampled_from([0.01, 0.5]))
    return {k: data.draw(st.sampled_from([0.0, 0.1, 0.01])) for k in keys}


def _family_call(data, name):
    """(state names, function of (module, params, grads, states dict, wd) -> result):
    one configuration of rule `name` through a backend's generic update."""
    from fastoptim import _fallback as F

    d = lambda s, label: data.draw(s, label=label)  # noqa: E731
    if name == "grad_norm":
        return (), lambda M, P, G, S, wd: M.grad_norm(P, G)
    lr = d(st.sampled_from([0.0, 1e-3, 0.1, 2.0]), "lr")
    beta = st.sampled_from([0.0, 0.5, 0.9, 0.999])
    eps = d(st.sampled_from([0.0, 1e-8, 0.1]), "eps")
    t = d(st.sampled_from([1, 2, 7, 10**6, 2**31 + 1]), "t")
    gs = d(st.sampled_from([1.0, -1.0, 0.25]), "grad_scale")
    rule = F.RULES[name]
    decay = d(st.sampled_from([x for x in (F.DECAY_L2, F.DECAY_DECOUPLED, F.DECAY_UPDATE)
                               if x & rule.decay]), "decay style")
    flags = d(st.sampled_from(rule.valid_flags), "flags")
    hyper = []
    for h, kind in zip(rule.hyper, rule.hyper_kinds):
        if h == "dampening":
            hyper.append(d(st.sampled_from([0.0, 0.1, 1.0]), h))
        elif h == "epsilon":
            hyper.append(eps)
        elif kind == "beta":
            hyper.append(d(beta, h))
        else:
            hyper.append(d(st.sampled_from([0.0, 0.004, 0.1]), h))
    scalars = tuple(d(st.sampled_from([1.0, 0.5, 0.9**7, 0.0]) if sc != "mu_product"
                      else st.sampled_from([1.0, 0.5, 0.9**7]), sc) for sc in rule.scalars)
    if name == "sgd" and flags & F.SGD_NESTEROV:
        hyper[1] = 0.0
    present = tuple(not need or bool(flags & need) for need in rule.state_flags)
    names = tuple(n for n, keep in zip(rule.states, present) if keep)

    def call(M, P, G, S, wd):
        states = tuple(S[n] if keep else None for n, keep in zip(rule.states, present))
        return M.update(name, P, G, states, t, lr, tuple(hyper), flags=flags, weight_decay=wd,
                        decay=decay, grad_scale=gs, scalars=scalars)

    return names, call


FAMILY = ["sgd", "adam", "nadam", "radam", "adamax", "adagrad", "rmsprop", "lion",
          "schedule_free_adamw", "schedule_free_sgd", "lamb", "adafactor", "grad_norm"]


@once
@pytest.mark.parametrize("name", FAMILY)
@settings(max_examples=examples(25), **SETTINGS)
@given(data=st.data())
def test_family_backends_agree_bitwise(name, data):
    from fastoptim import _fallback

    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    state_names, call = _family_call(data, name)
    nkeys = data.draw(st.integers(1, 3), label="nkeys")
    uniform = data.draw(st.booleans(), label="one layout")
    common = data.draw(st.sampled_from(LAYOUTS), label="layout")
    roles = ("p", "g") + state_names
    raw = {r: {} for r in roles}
    layouts = {r: {} for r in roles}
    for i in range(nkeys):
        shape = data.draw(shapes(), label=f"shape W{i}")
        for r in roles:
            nonneg = r in ("s", "max_s", "exp_inf", "sum", "square_avg", "variance")
            raw[r][f"W{i}"] = data.draw(hnp.arrays(
                dtype, shape, elements=values(dtype, nonneg, reference_range=False)), label=r)
            layouts[r][f"W{i}"] = common if uniform else data.draw(st.sampled_from(LAYOUTS))
    wd = _wd(data, list(raw["p"]))
    out = {}
    start = _core.isa_in_use()
    try:
        for impl in ["numpy"] + list(_core.isa_supported()):
            module = _fallback if impl == "numpy" else _core
            if impl != "numpy":
                _core.set_isa(impl)
            placed = {r: {k: Placed(v, layouts[r][k]) for k, v in d.items()} for r, d in raw.items()}
            P = {k: pl.view for k, pl in placed["p"].items()}
            G = {"d" + k: pl.view for k, pl in placed["g"].items()}
            S = {r: {"d" + k: pl.view for k, pl in placed[r].items()} for r in state_names}
            try:
                result = ("ok", call(module, P, G, S, wd))
            except Exception as exc:  # noqa: BLE001 - compared below
                result = ("raised", type(exc), str(exc))
            for r, dd in placed.items():
                for k, pl in dd.items():
                    assert pl.outside_ok(), f"{impl}: {r}[{k}] written outside the array"
            out[impl] = (result, P, S)
    finally:
        _core.set_isa(start)
    (ref_result, ref_P, ref_S) = out.pop("numpy")
    for impl, (result, P, S) in out.items():
        if ref_result[0] == "raised" or result[0] == "raised":
            assert result == ref_result, impl
            continue
        a, b = result[1], ref_result[1]
        if name == "grad_norm":  # (norm, finite)
            assert a[1] == b[1] and (a[0] == b[0] or (a[0] != a[0] and b[0] != b[0])), (impl, a, b)
        else:  # the scalar state
            assert len(a) == len(b) and all(x == y or (x != x and y != y)
                                            for x, y in zip(a, b)), (impl, a, b)
        for k in P:
            assert_same_bits(P[k], ref_P[k], f"{name} {impl}: parameters[{k!r}]")
        for r in state_names:
            for k in S[r]:
                assert_same_bits(S[r][k], ref_S[r][k], f"{name} {impl}: {r}[{k!r}]")
