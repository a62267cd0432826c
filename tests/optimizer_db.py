"""The test database: one entry per optimizer class, in the manner of torch's
OptimizerInfo (torch/testing/_internal/common_optimizers.py). The concern suites
(state dicts and checkpoints, extremes, ...) parametrize over INFOS, so a new
optimizer gets every suite by adding one entry here.

Each entry says, independently of the implementation:
- `rich`: constructor arguments that turn every state stream and option on;
- `settings`: every setting a state dict restores, each with two valid values
  (the saved one, then the one the restoring object is built with), and the
  arguments a configuration needs beside it (e.g. SGD's dampening needs
  nesterov off);
- `bad_scalars`: the state dict's own scalars with values that must be refused;
- `running_max`: (arguments, state name) of each state kept as a running maximum.
"""
from dataclasses import dataclass, field

import numpy as np

import fastoptim as fo

BAD_BETA = (1.0, -0.1, np.nan, "0.9")
BAD_NONNEG = (-0.1, np.inf, np.nan, "0.1")
BAD_EPS = (-1e-8, np.nan, "1e-8")
BAD_FLAG = ("yes", 2, None)
# Scalars every optimizer's state dict has.
COMMON_BAD = {
    "t": (-1, 1.5, "3", np.nan),
    "learning_rate": (-0.1, np.inf, np.nan, "0.1"),
    "optimizer": ("Other", 3),
}


@dataclass(frozen=True)
class OptimizerInfo:
    name: str
    rich: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)   # name -> (saved, other[, extra kwargs])
    bad_scalars: dict = field(default_factory=dict)
    running_max: tuple = ()

    @property
    def cls(self):
        return getattr(fo, self.name)

    def make(self, params, **kwargs):
        return self.cls(params, **dict(self.rich, **kwargs))

    def all_bad_scalars(self):
        return dict(COMMON_BAD, **self.bad_scalars)

    def __repr__(self):
        return self.name


def _adam_like(name, rich, **more):
    settings = {"learning_rate": (0.02, 0.005), "beta1": (0.5, 0.9), "beta2": (0.9, 0.999),
                "epsilon": (1e-3, 1e-8), "weight_decay": (0.1, 0.01)}
    settings.update(more.pop("settings", {}))
    bad = {"beta1": BAD_BETA, "beta2": BAD_BETA, "epsilon": BAD_EPS,
           "weight_decay": BAD_NONNEG}
    bad.update(more.pop("bad_scalars", {}))
    return OptimizerInfo(name, rich, settings, bad, **more)


INFOS = (
    OptimizerInfo("GD", {}, {"learning_rate": (0.1, 0.01)}),
    OptimizerInfo("Momentum", {"beta": 0.8, "nesterov": True},
                  {"learning_rate": (0.1, 0.01), "beta": (0.5, 0.9),
                   "nesterov": (True, False)},
                  {"beta": BAD_BETA, "nesterov": BAD_FLAG}),
    _adam_like("Adam", {"weight_decay": 0.01, "amsgrad": True},
               settings={"maximize": (True, False)},
               bad_scalars={"maximize": BAD_FLAG, "amsgrad": BAD_FLAG},
               running_max=(({"amsgrad": True}, "max_s"),)),
    _adam_like("AdamW", {"weight_decay": 0.1, "amsgrad": True},
               settings={"maximize": (True, False)},
               bad_scalars={"maximize": BAD_FLAG},
               running_max=(({"amsgrad": True}, "max_s"),)),
    OptimizerInfo("SGD", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
                  {"learning_rate": (0.1, 0.01), "momentum": (0.5, 0.9),
                   "dampening": (0.3, 0.0, {"nesterov": False}),
                   "nesterov": (False, True), "weight_decay": (0.1, 0.01),
                   "maximize": (True, False)},
                  {"momentum": BAD_BETA, "dampening": (1.5, -0.1, np.nan, "0"),
                   "weight_decay": BAD_NONNEG, "nesterov": BAD_FLAG}),
    OptimizerInfo("RMSprop", {"momentum": 0.5, "centered": True, "weight_decay": 0.01},
                  {"learning_rate": (0.02, 0.005), "alpha": (0.9, 0.99),
                   "epsilon": (1e-3, 1e-8), "momentum": (0.9, 0.5),
                   "weight_decay": (0.1, 0.01), "maximize": (True, False)},
                  {"alpha": BAD_BETA, "epsilon": BAD_EPS, "momentum": BAD_BETA,
                   "weight_decay": BAD_NONNEG, "centered": BAD_FLAG}),
    OptimizerInfo("Adagrad", {"lr_decay": 0.01, "initial_accumulator_value": 0.1,
                              "weight_decay": 0.01},
                  {"learning_rate": (0.02, 0.005), "lr_decay": (0.1, 0.01),
                   "epsilon": (1e-3, 1e-10), "weight_decay": (0.1, 0.01),
                   "maximize": (True, False)},
                  {"lr_decay": BAD_NONNEG, "epsilon": BAD_EPS, "weight_decay": BAD_NONNEG}),
    _adam_like("Adamax", {"weight_decay": 0.01}, settings={"maximize": (True, False)},
               running_max=(({}, "exp_inf"),)),
    _adam_like("NAdam", {"weight_decay": 0.01, "decoupled_weight_decay": True},
               settings={"momentum_decay": (0.05, 0.004), "maximize": (True, False),
                         "decoupled_weight_decay": (False, True)},
               bad_scalars={"momentum_decay": BAD_NONNEG,
                            "mu_product": (5.0, -0.1, np.nan, "0.5"),
                            "decoupled_weight_decay": BAD_FLAG}),
    # rectified (epsilon used) from the sixth step on with beta2 = 0.9
    _adam_like("RAdam", {"weight_decay": 0.01, "decoupled_weight_decay": True},
               settings={"maximize": (True, False), "decoupled_weight_decay": (False, True),
                         "epsilon": (1e-3, 1e-8, {"beta2": 0.9})},
               bad_scalars={"decoupled_weight_decay": BAD_FLAG}),
    OptimizerInfo("Lion", {"weight_decay": 0.1, "learning_rate": 0.01},
                  {"learning_rate": (0.02, 0.005), "beta1": (0.5, 0.9),
                   "beta2": (0.9, 0.99), "weight_decay": (0.5, 0.1),
                   "maximize": (True, False)},
                  {"beta1": BAD_BETA, "beta2": BAD_BETA, "weight_decay": BAD_NONNEG}),
)

BY_NAME = {info.name: info for info in INFOS}

SHAPES = {"W1": (6, 5), "b1": (6, 1), "W2": (4, 6), "b2": (4, 1)}


def params(dtype=np.float64, seed=0, shapes=SHAPES):
    """Parameters (W2 Fortran-ordered, as users' transposes give)."""
    rng = np.random.default_rng(seed)
    out = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    if "W2" in out:
        out["W2"] = np.asfortranarray(out["W2"])
    return out


def grads(dtype=np.float64, steps=5, seed=100, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return [{"d" + k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
            for _ in range(steps)]


def copy(d):
    return {k: np.array(a, copy=True, order="K") for k, a in d.items()}


def snapshot(opt, parameters):
    """Bitwise copies of the parameters, every state array and t."""
    out = {("p", k): a.copy(order="K") for k, a in parameters.items()}
    for name, d in opt.state.items():
        out.update({(name, k): a.copy(order="K") for k, a in d.items()})
    out[("t",)] = np.array(opt.t)
    return out


def assert_same(actual, expected, what=""):
    """Bitwise equality of two snapshots; a failure names the entry, the first
    differing element and both values."""
    assert actual.keys() == expected.keys(), f"{what}: entries differ"
    for k in expected:
        a, b = np.asarray(actual[k]), np.asarray(expected[k])
        assert a.dtype == b.dtype and a.shape == b.shape, f"{what} {k}: dtype/shape"
        ua = np.ravel(a, "K").view(np.uint8).reshape(a.size, -1) if a.size else a
        ub = np.ravel(b, "K").view(np.uint8).reshape(b.size, -1) if b.size else b
        if a.size and not np.array_equal(ua, ub):
            i = int(np.flatnonzero((ua != ub).any(axis=1))[0])
            raise AssertionError(f"{what} {k}: element {i} differs: "
                                 f"{np.ravel(a, 'K')[i]!r} vs {np.ravel(b, 'K')[i]!r}")
