"""The error table of DESIGN.md: the right exception, naming the key or argument,
and nothing modified -- the bad entry is always in the last key, so an update
that wrote before validating everything would be caught."""
import numpy as np
import pytest

import fastoptim as fo
import refimpl as ref
from _helpers import numpy_step

KEYS = ("W1", "b1", "W2")  # the bad entry goes under the last key


def setup(dtype=np.float64):
    rng = np.random.default_rng(0)
    shapes = {"W1": (4, 3), "b1": (4, 1), "W2": (2, 4)}
    params = {k: rng.standard_normal(shapes[k]).astype(dtype) for k in KEYS}
    grads = {"d" + k: rng.standard_normal(shapes[k]).astype(dtype) for k in KEYS}
    v = {"d" + k: rng.standard_normal(shapes[k]).astype(dtype) * 0.1 for k in KEYS}
    s = {"d" + k: np.abs(rng.standard_normal(shapes[k])).astype(dtype) * 0.1 for k in KEYS}
    return params, grads, v, s


def call(fn, params, grads, v, s, **kw):
    if fn == "gd":
        return fo.update_parameters_with_gd(params, grads, kw.get("learning_rate", 0.01))
    if fn == "momentum":
        return fo.update_parameters_with_momentum(params, grads, v, kw.get("beta", 0.9), kw.get("learning_rate", 0.01))
    return fo.update_parameters_with_adam(params, grads, v, s, kw.get("t", 3), kw.get("learning_rate", 0.01),
                                          kw.get("beta1", 0.9), kw.get("beta2", 0.999), kw.get("epsilon", 1e-8))


def readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def other_float(a):
    return np.float32 if a.dtype == np.float64 else np.float64


def zero_stride(a):
    """An array of a's shape whose rows all share one row's memory."""
    row = np.zeros(a.shape[1], a.dtype)
    return np.lib.stride_tricks.as_strided(row, a.shape, (0, a.itemsize))


# (id, functions it applies to, mutation of (params, grads, v, s), exception, message regex)
DICT_CASES = [
    ("grad-missing", "gd momentum adam", lambda p, g, v, s: g.pop("dW2"), KeyError, "grads.*'dW2'"),
    ("v-missing", "momentum adam", lambda p, g, v, s: v.pop("dW2"), KeyError, "v.*'dW2'"),
    ("s-missing", "adam", lambda p, g, v, s: s.pop("dW2"), KeyError, "s.*'dW2'"),
    ("grad-shape", "gd momentum adam", lambda p, g, v, s: g.__setitem__("dW2", np.zeros((4, 2))),
     ValueError, r"grads\['dW2'\].*\(4, 2\).*\(2, 4\)"),
    ("v-shape", "momentum adam", lambda p, g, v, s: v.__setitem__("dW2", np.zeros(8)), ValueError,
     r"v\['dW2'\].*\(8,\).*\(2, 4\)"),
    ("s-shape", "adam", lambda p, g, v, s: s.__setitem__("dW2", np.zeros((2, 4, 1))), ValueError, r"s\['dW2'\]"),
    ("param-int", "gd momentum adam", lambda p, g, v, s: p.__setitem__("W2", np.ones((2, 4), np.int64)),
     TypeError, r"parameters\['W2'\].*int64"),
    ("param-bool", "gd momentum adam", lambda p, g, v, s: p.__setitem__("W2", np.ones((2, 4), bool)),
     TypeError, r"parameters\['W2'\].*bool"),
    ("param-object", "gd", lambda p, g, v, s: p.__setitem__("W2", np.ones((2, 4), object)),
     TypeError, r"parameters\['W2'\].*object"),
    ("param-complex", "adam", lambda p, g, v, s: p.__setitem__("W2", np.ones((2, 4), complex)),
     TypeError, r"parameters\['W2'\].*complex"),
    ("grad-int", "gd momentum adam", lambda p, g, v, s: g.__setitem__("dW2", np.ones((2, 4), np.int32)),
     TypeError, r"grads\['dW2'\].*int32"),
    ("grad-complex", "momentum", lambda p, g, v, s: g.__setitem__("dW2", np.ones((2, 4), np.complex64)),
     TypeError, r"grads\['dW2'\].*complex64"),
    ("state-int", "momentum adam", lambda p, g, v, s: v.__setitem__("dW2", np.zeros((2, 4), np.int64)),
     TypeError, r"v\['dW2'\].*int64"),
    ("state-dtype", "adam", lambda p, g, v, s: s.__setitem__("dW2", s["dW2"].astype(other_float(s["dW2"]))),
     TypeError, r"s\['dW2'\] has dtype"),
    ("param-readonly", "gd momentum adam", lambda p, g, v, s: p.__setitem__("W2", readonly(p["W2"])),
     ValueError, r"parameters\['W2'\].*read-only"),
    ("state-readonly", "momentum adam", lambda p, g, v, s: v.__setitem__("dW2", readonly(v["dW2"])),
     ValueError, r"v\['dW2'\].*read-only"),
    ("states-share", "adam", lambda p, g, v, s: s.__setitem__("dW2", v["dW2"]), ValueError, r"'dW2'.*share memory"),
    ("state-view-of-state", "adam", lambda p, g, v, s: s.__setitem__("dW2", v["dW1"].reshape(-1)[:8].reshape(2, 4)),
     ValueError, "share memory"),
    ("state-is-param", "momentum", lambda p, g, v, s: v.__setitem__("dW2", p["W2"]), ValueError, r"'W2'.*share memory"),
    ("params-share", "gd", lambda p, g, v, s: p.__setitem__("W2", p["W1"].reshape(-1)[:8].reshape(2, 4)),
     ValueError, "share memory"),
    ("param-zero-stride", "gd momentum adam",
     lambda p, g, v, s: p.__setitem__("W2", zero_stride(p["W2"])),
     ValueError, r"parameters\['W2'\].*share memory"),
    ("state-zero-stride", "adam",
     lambda p, g, v, s: s.__setitem__("dW2", zero_stride(s["dW2"])),
     ValueError, r"s\['dW2'\]"),
    ("grad-not-array", "gd momentum adam", lambda p, g, v, s: g.__setitem__("dW2", [[0.0] * 4] * 2), TypeError,
     r"grads\['dW2'\].*ndarray"),
    ("param-not-array", "gd adam", lambda p, g, v, s: p.__setitem__("W2", 3.0), TypeError, r"parameters\['W2'\]"),
    ("key-not-str", "gd", lambda p, g, v, s: p.__setitem__(2, np.zeros(3)), TypeError, "keys must be str"),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "fn,mutate,exc,match",
    [pytest.param(fn, m, e, r, id=f"{name}-{fn}") for name, fns, m, e, r in DICT_CASES for fn in fns.split()],
)
def test_bad_entry_raises_and_changes_nothing(fn, mutate, exc, match, dtype):
    params, grads, v, s = setup(dtype)
    mutate(params, grads, v, s)
    before = ref.snapshot(params, grads, v, s)
    with pytest.raises(exc, match=match):
        call(fn, params, grads, v, s)
    ref.assert_unchanged(before, params, grads, v, s)


SCALAR_CASES = [
    ("t", 0, ValueError), ("t", -3, ValueError), ("t", 2.0, TypeError), ("t", "2", TypeError), ("t", True, TypeError),
    ("t", None, TypeError),
    ("learning_rate", -0.1, ValueError), ("learning_rate", np.inf, ValueError), ("learning_rate", np.nan, ValueError),
    ("learning_rate", "0.1", TypeError), ("learning_rate", None, TypeError),
    ("beta", 1.0, ValueError), ("beta", -0.01, ValueError), ("beta", np.nan, ValueError),
    ("beta1", 1.0, ValueError), ("beta1", -1e-9, ValueError),
    ("beta2", 1.5, ValueError), ("beta2", np.nan, ValueError),
    ("epsilon", -1e-8, ValueError), ("epsilon", np.nan, ValueError), ("epsilon", "1e-8", TypeError),
]
SCALAR_OWNER = {"t": "adam", "beta": "momentum", "beta1": "adam", "beta2": "adam", "epsilon": "adam"}


@pytest.mark.parametrize("name,value,exc", SCALAR_CASES, ids=[f"{n}={v!r}" for n, v, _ in SCALAR_CASES])
def test_bad_scalar_raises_naming_it(name, value, exc):
    fns = [SCALAR_OWNER[name]] if name in SCALAR_OWNER else ["gd", "momentum", "adam"]
    for fn in fns:
        params, grads, v, s = setup()
        before = ref.snapshot(params, grads, v, s)
        with pytest.raises(exc, match=name):
            call(fn, params, grads, v, s, **{name: value})
        ref.assert_unchanged(before, params, grads, v, s)


@pytest.mark.parametrize("which", ["parameters", "grads", "v", "s"])
def test_not_a_dict(which):
    params, grads, v, s = setup()
    args = {"parameters": params, "grads": grads, "v": v, "s": s}
    args[which] = list(args[which].values())
    with pytest.raises(TypeError, match=which):
        fo.update_parameters_with_adam(args["parameters"], args["grads"], args["v"], args["s"], 1)


def test_valid_edge_scalars_are_accepted():
    params, grads, v, s = setup()
    fo.update_parameters_with_adam(params, grads, v, s, np.int64(5), learning_rate=np.float32(0.0), beta1=0.0,
                                   beta2=0.0, epsilon=0.0)
    fo.update_parameters_with_momentum(params, grads, v, beta=0, learning_rate=1)


def test_grad_may_alias_its_parameter():
    params, _, v, s = setup()
    twin = {k: a.copy() for k, a in params.items()}
    tv, ts = {k: a.copy() for k, a in v.items()}, {k: a.copy() for k, a in s.items()}
    with numpy_step("shares memory with parameters["):
        fo.update_parameters_with_adam(params, {"d" + k: a for k, a in params.items()}, v, s, 2)
    fo.update_parameters_with_adam(twin, {"d" + k: a.copy() for k, a in twin.items()}, tv, ts, 2)
    for k in params:
        np.testing.assert_array_equal(params[k], twin[k])
        np.testing.assert_array_equal(v["d" + k], tv["d" + k])
