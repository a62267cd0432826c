"""The test database: one entry per optimizer class, in the manner of torch's
OptimizerInfo (torch/testing/_internal/common_optimizers.py). The concern suites
(state dicts and checkpoints, extremes, ...) parametrize over INFOS, so a new
optimizer gets every suite by adding one entry here.

Each entry says, independently of the implementation (its configurations,
CASES, are below with the float64 reference of every rule):
- `rich`: constructor arguments that turn every state stream and option on;
- `settings`: every setting a state dict restores, each with two valid values
  (the saved one, then the one the restoring object is built with), and the
  arguments a configuration needs beside it (e.g. SGD's dampening needs
  nesterov off);
- `bad_scalars`: the state dict's own scalars with values that must be refused;
- `running_max`: (arguments, state name) of each state kept as a running maximum.
"""
from dataclasses import dataclass, field

import math

import numpy as np

import fastoptim as fo

BAD_BETA = (1.0, -0.1, np.nan, "0.9")
BAD_NONNEG = (-0.1, np.inf, np.nan, "0.1")
BAD_EPS = (-1e-8, np.nan, "1e-8")
BAD_FLAG = ("yes", 2, None)
BAD_STEPS = (-1, 1.5, "3", 2**60)
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

    @property
    def configs(self):
        """Its configurations (Case) in CASES: each checked against the float64
        reference and, where torch has the optimizer, against torch."""
        return [c for c in CASES if c.cls == self.name]

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
    # the average's weights depend on weight_lr_power only while the rate warms up
    OptimizerInfo("ScheduleFreeAdamW", {"weight_decay": 0.01, "warmup_steps": 2},
                  {"learning_rate": (0.02, 0.005), "beta1": (0.5, 0.9), "beta2": (0.9, 0.999),
                   "epsilon": (1e-3, 1e-8), "weight_decay": (0.1, 0.01),
                   "warmup_steps": (3, 0), "r": (1.0, 0.0),
                   "weight_lr_power": (1.0, 2.0, {"warmup_steps": 3}),
                   "maximize": (True, False)},
                  {"beta1": BAD_BETA + (0.0,), "beta2": BAD_BETA, "epsilon": BAD_EPS,
                   "weight_decay": BAD_NONNEG, "warmup_steps": BAD_STEPS, "r": BAD_NONNEG,
                   "weight_lr_power": BAD_NONNEG, "weight_sum": BAD_NONNEG,
                   "lr_max": BAD_NONNEG, "eval_mode": BAD_FLAG}),
    OptimizerInfo("ScheduleFreeSGD", {"weight_decay": 0.01, "warmup_steps": 2,
                                      "learning_rate": 0.1},
                  {"learning_rate": (0.2, 0.05), "momentum": (0.5, 0.9),
                   "weight_decay": (0.1, 0.01), "warmup_steps": (3, 0), "r": (1.0, 0.0),
                   "weight_lr_power": (1.0, 2.0, {"warmup_steps": 3}),
                   "maximize": (True, False)},
                  {"momentum": BAD_BETA + (0.0,), "weight_decay": BAD_NONNEG,
                   "warmup_steps": BAD_STEPS, "r": BAD_NONNEG, "weight_lr_power": BAD_NONNEG,
                   "weight_sum": BAD_NONNEG, "lr_max": BAD_NONNEG, "eval_mode": BAD_FLAG}),
    _adam_like("LAMB", {"weight_decay": 0.01}, settings={"maximize": (True, False)},
               bad_scalars={"maximize": BAD_FLAG}),
    # epsilon1 and d change a run only where they bind: 1.0 and 0.5 of O(1) gradients
    OptimizerInfo("Adafactor", {"weight_decay": 0.01},
                  {"learning_rate": (0.02, 0.005), "beta2_decay": (-0.5, -0.8),
                   "epsilon1": (1.0, None), "epsilon2": (2.0, 1e-3), "d": (1.0, 1e6),
                   "weight_decay": (0.1, 0.01), "maximize": (True, False)},
                  {"beta2_decay": (0.1, np.nan, np.inf, "-0.8"), "epsilon1": BAD_EPS,
                   "epsilon2": BAD_EPS, "d": (0.5, np.inf, np.nan, "1"),
                   "weight_decay": BAD_NONNEG}),
    OptimizerInfo("Muon", {"weight_decay": 0.01, "match_rms_adamw": True,
                           "learning_rate": 0.02},
                  {"learning_rate": (0.02, 0.005), "momentum": (0.5, 0.95),
                   "ns_steps": (3, 5), "ns_epsilon": (1e3, 1e-7),
                   "adamw_beta1": (0.5, 0.9), "adamw_beta2": (0.9, 0.999),
                   "adamw_epsilon": (1e-3, 1e-8), "nesterov": (False, True),
                   "match_rms_adamw": (True, False), "weight_decay": (0.5, 0.1),
                   "maximize": (True, False)},
                  {"momentum": BAD_BETA, "ns_steps": (-1, 100, 1.5, "5"),
                   "ns_epsilon": BAD_EPS, "adamw_beta1": BAD_BETA, "adamw_beta2": BAD_BETA,
                   "adamw_epsilon": BAD_EPS, "weight_decay": BAD_NONNEG,
                   "nesterov": BAD_FLAG, "match_rms_adamw": BAD_FLAG}),
)

BY_NAME = {info.name: info for info in INFOS}

SHAPES = {"W1": (6, 5), "b1": (6, 1), "W2": (4, 6), "b2": (4, 1)}


def params(dtype=np.float64, seed=0, shapes=SHAPES):
    """Parameters (W2 Fortran-ordered, as users' transposes give)."""
    rng = np.random.default_rng(seed)
    return in_db_layouts({k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()})


def grads(dtype=np.float64, steps=5, seed=100, shapes=SHAPES):
    """Gradients, each in its parameter's layout (dW2 Fortran-ordered): the
    compiled backend's C path takes them (mixed layouts go to NumPy with a
    PerformanceWarning, and have tests of their own)."""
    rng = np.random.default_rng(seed)
    return [in_db_layouts({"d" + k: rng.standard_normal(s).astype(dtype)
                           for k, s in shapes.items()}) for _ in range(steps)]


def in_db_layouts(d):
    """The database's layouts, in place: W2 and its gradient dW2 Fortran-ordered
    (as users' transposes give), the rest C-ordered."""
    for k in ("W2", "dW2"):
        if k in d:
            d[k] = np.asfortranarray(d[k])
    return d


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


# --- configurations and the float64 reference ------------------------------------------
# The papers' and torch.optim's documented rules, in textbook order (not from
# fastoptim's kernels or fallback): bias-corrected moments as such, no prepared
# scalars.

STEPS = 12
WD_PER_KEY = {"W1": 0.1, "b1": 0.0, "W2": 0.05, "b2": 0.0}


def no_bias_decay(key):
    return key.startswith("W")


def problem(dtype, seed, steps=STEPS, scale=1.0):
    """Parameters (W2 Fortran-ordered) and a gradient dict per step (in the
    parameters' layouts)."""
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}
    in_db_layouts(params)
    grads = [in_db_layouts({"d" + k: (scale * rng.standard_normal(s)).astype(dtype)
                            for k, s in SHAPES.items()}) for _ in range(steps)]
    return params, grads


class Case:
    """One optimizer configuration: our class and kwargs; torch's class and
    kwargs (None: torch has no such optimizer); the reference's rule and
    hyperparameters; the state names shared with torch."""

    def __init__(self, id, cls, kwargs, torch_cls, torch_kwargs, rule, hyper, states=(),
                 clip=None):
        self.id = id
        self.cls = cls
        self.kwargs = dict(kwargs)
        self.torch_cls = torch_cls
        self.torch_kwargs = torch_kwargs
        self.rule = rule
        self.hyper = hyper
        self.states = states  # (ours, torch's)
        self.clip = clip
        if clip is not None:
            self.kwargs["max_grad_norm"] = clip

    def __repr__(self):
        return self.id

    def weight_decays(self):
        """Per-key weight decay as our object resolves it."""
        wd = self.kwargs.get("weight_decay", self.hyper.get("weight_decay", 0.0))
        mask = self.kwargs.get("weight_decay_mask")
        out = {}
        for k in SHAPES:
            x = wd[k] if isinstance(wd, dict) else (wd(k) if callable(wd) else wd)
            if mask is not None and not mask(k):
                x = 0.0
            out[k] = x
        return out

    def make(self, params):
        return getattr(fo, self.cls)(params, **self.kwargs)


ADAM_S = (("v", "exp_avg"), ("s", "exp_avg_sq"))


def _cases():
    c = []
    adam_h = dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8)

    def adam(id, lr=0.01, wd=0.0, amsgrad=False, maximize=False, mask=None, clip=None,
             cls="Adam", decoupled=False):
        kw = dict(learning_rate=lr, amsgrad=amsgrad, maximize=maximize)
        if wd != 0.0 or cls == "AdamW":
            kw["weight_decay"] = wd
        if mask is not None:
            kw["weight_decay_mask"] = mask
        tk = dict(lr=lr, amsgrad=amsgrad, maximize=maximize)
        h = dict(adam_h, lr=lr, weight_decay=wd, amsgrad=amsgrad, maximize=maximize,
                 decoupled=decoupled)
        states = ADAM_S + ((("max_s", "max_exp_avg_sq"),) if amsgrad else ())
        c.append(Case(id, cls, kw, cls, tk, "adam", h, states, clip))

    adam("Adam")
    adam("Adam-wd", wd=0.1)
    adam("Adam-amsgrad", amsgrad=True)
    adam("Adam-maximize", maximize=True)
    adam("Adam-wd-amsgrad-maximize", wd=0.05, amsgrad=True, maximize=True)
    adam("Adam-wd-per-key", wd=WD_PER_KEY)
    adam("Adam-wd-mask", wd=0.1, mask=no_bias_decay)
    adam("Adam-clip", clip=0.5)
    adam("AdamW", wd=0.01, cls="AdamW", decoupled=True)
    adam("AdamW-wd0.2-amsgrad", wd=0.2, amsgrad=True, cls="AdamW", decoupled=True)
    adam("AdamW-maximize", wd=0.1, maximize=True, cls="AdamW", decoupled=True)
    adam("AdamW-per-key", wd=WD_PER_KEY, cls="AdamW", decoupled=True)
    adam("AdamW-mask-clip", wd=0.1, mask=no_bias_decay, clip=0.5, cls="AdamW", decoupled=True)

    def sgd(id, lr=0.05, momentum=0.0, dampening=0.0, nesterov=False, wd=0.0, maximize=False,
            clip=None, mask=None):
        kw = dict(learning_rate=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                  weight_decay=wd, maximize=maximize)
        if mask is not None:
            kw["weight_decay_mask"] = mask
        tk = dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                  maximize=maximize)
        h = dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                 weight_decay=wd, maximize=maximize)
        states = (("momentum_buffer", "momentum_buffer"),) if momentum else ()
        c.append(Case(id, "SGD", kw, "SGD", tk, "sgd", h, states, clip))

    sgd("SGD")
    sgd("SGD-momentum", momentum=0.9)
    sgd("SGD-momentum-dampening", momentum=0.9, dampening=0.3)
    sgd("SGD-nesterov", momentum=0.9, nesterov=True)
    sgd("SGD-wd", wd=0.1)
    sgd("SGD-maximize-momentum", momentum=0.8, maximize=True)
    sgd("SGD-all", momentum=0.9, nesterov=True, wd=0.05, maximize=True)
    sgd("SGD-per-key", momentum=0.9, wd=WD_PER_KEY)
    sgd("SGD-mask-clip", momentum=0.9, wd=0.1, mask=no_bias_decay, clip=0.5)

    for nesterov in (False, True):
        beta = 0.9
        c.append(Case(f"Momentum-nesterov={nesterov}", "Momentum",
                      dict(learning_rate=0.05, beta=beta, nesterov=nesterov),
                      "SGD", dict(lr=0.05 * (1 - beta), momentum=beta, nesterov=nesterov),
                      "momentum", dict(lr=0.05, beta=beta, nesterov=nesterov)))
    c.append(Case("Momentum-clip", "Momentum", dict(learning_rate=0.05, beta=0.9), "SGD",
                  dict(lr=0.05 * 0.1, momentum=0.9), "momentum",
                  dict(lr=0.05, beta=0.9, nesterov=False), clip=0.5))
    c.append(Case("GD", "GD", dict(learning_rate=0.05), "SGD", dict(lr=0.05), "sgd",
                  dict(lr=0.05)))
    c.append(Case("GD-clip", "GD", dict(learning_rate=0.05), "SGD", dict(lr=0.05), "sgd",
                  dict(lr=0.05), clip=0.5))

    def rms(id, lr=0.01, alpha=0.99, eps=1e-8, wd=0.0, momentum=0.0, centered=False,
            maximize=False, clip=None):
        kw = dict(learning_rate=lr, alpha=alpha, epsilon=eps, weight_decay=wd,
                  momentum=momentum, centered=centered, maximize=maximize)
        tk = dict(lr=lr, alpha=alpha, eps=eps, momentum=momentum, centered=centered,
                  maximize=maximize)
        h = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=wd, momentum=momentum,
                 centered=centered, maximize=maximize)
        states = (("square_avg", "square_avg"),)
        states += (("grad_avg", "grad_avg"),) if centered else ()
        states += (("momentum_buffer", "momentum_buffer"),) if momentum else ()
        c.append(Case(id, "RMSprop", kw, "RMSprop", tk, "rmsprop", h, states, clip))

    rms("RMSprop")
    rms("RMSprop-centered", centered=True)
    rms("RMSprop-momentum", momentum=0.9)
    rms("RMSprop-all", alpha=0.9, eps=1e-6, wd=0.05, momentum=0.5, centered=True,
        maximize=True)
    rms("RMSprop-per-key", wd=WD_PER_KEY)
    rms("RMSprop-clip", momentum=0.9, clip=0.5)

    def adagrad(id, lr=0.05, lr_decay=0.0, wd=0.0, init=0.0, eps=1e-10, maximize=False,
                clip=None):
        kw = dict(learning_rate=lr, lr_decay=lr_decay, weight_decay=wd,
                  initial_accumulator_value=init, epsilon=eps, maximize=maximize)
        tk = dict(lr=lr, lr_decay=lr_decay, initial_accumulator_value=init, eps=eps,
                  maximize=maximize)
        h = dict(lr=lr, lr_decay=lr_decay, weight_decay=wd, init=init, eps=eps,
                 maximize=maximize)
        c.append(Case(id, "Adagrad", kw, "Adagrad", tk, "adagrad", h, (("sum", "sum"),), clip))

    adagrad("Adagrad")
    adagrad("Adagrad-lr_decay", lr_decay=0.1)
    adagrad("Adagrad-wd-init-eps", wd=0.1, init=0.5, eps=1e-6)
    adagrad("Adagrad-maximize-per-key", wd=WD_PER_KEY, maximize=True)
    adagrad("Adagrad-clip", clip=0.5)

    def adamax(id, lr=0.02, beta2=0.999, wd=0.0, maximize=False, clip=None, eps=1e-8):
        kw = dict(learning_rate=lr, beta2=beta2, weight_decay=wd, maximize=maximize,
                  epsilon=eps)
        tk = dict(lr=lr, betas=(0.9, beta2), maximize=maximize, eps=eps)
        h = dict(lr=lr, beta1=0.9, beta2=beta2, eps=eps, weight_decay=wd, maximize=maximize)
        c.append(Case(id, "Adamax", kw, "Adamax", tk, "adamax", h,
                      (("v", "exp_avg"), ("exp_inf", "exp_inf")), clip))

    adamax("Adamax")
    adamax("Adamax-wd-maximize", beta2=0.9, wd=0.1, maximize=True, eps=1e-3)
    adamax("Adamax-per-key-clip", wd=WD_PER_KEY, clip=0.5)

    def nadam(id, lr=0.01, wd=0.0, decoupled=False, md=0.004, maximize=False, clip=None):
        kw = dict(learning_rate=lr, weight_decay=wd, decoupled_weight_decay=decoupled,
                  momentum_decay=md, maximize=maximize)
        tk = dict(lr=lr, decoupled_weight_decay=decoupled, momentum_decay=md,
                  maximize=maximize)
        h = dict(lr=lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=wd,
                 decoupled=decoupled, momentum_decay=md, maximize=maximize)
        c.append(Case(id, "NAdam", kw, "NAdam", tk, "nadam", h, ADAM_S, clip))

    nadam("NAdam")
    nadam("NAdam-wd", wd=0.1)
    nadam("NAdam-decoupled", wd=0.1, decoupled=True)
    nadam("NAdam-md-maximize", md=0.05, maximize=True)
    nadam("NAdam-per-key-clip", wd=WD_PER_KEY, clip=0.5)

    def radam(id, lr=0.01, beta2=0.999, wd=0.0, decoupled=False, maximize=False, clip=None):
        kw = dict(learning_rate=lr, beta2=beta2, weight_decay=wd,
                  decoupled_weight_decay=decoupled, maximize=maximize)
        tk = dict(lr=lr, betas=(0.9, beta2), decoupled_weight_decay=decoupled,
                  maximize=maximize)
        h = dict(lr=lr, beta1=0.9, beta2=beta2, eps=1e-8, weight_decay=wd,
                 decoupled=decoupled, maximize=maximize)
        c.append(Case(id, "RAdam", kw, "RAdam", tk, "radam", h, ADAM_S, clip))

    radam("RAdam")
    radam("RAdam-beta2=0.9", beta2=0.9)
    radam("RAdam-wd", wd=0.1)
    radam("RAdam-decoupled-maximize", wd=0.1, decoupled=True, maximize=True)
    radam("RAdam-per-key-clip", wd=WD_PER_KEY, clip=0.5)

    def lion(id, lr=0.01, beta1=0.9, beta2=0.99, wd=0.0, mask=None, maximize=False,
             clip=None):
        kw = dict(learning_rate=lr, beta1=beta1, beta2=beta2, weight_decay=wd,
                  maximize=maximize)
        if mask is not None:
            kw["weight_decay_mask"] = mask
        h = dict(lr=lr, beta1=beta1, beta2=beta2, weight_decay=wd, maximize=maximize)
        c.append(Case(id, "Lion", kw, None, None, "lion", h, (), clip))

    lion("Lion")
    lion("Lion-wd", wd=0.5)
    lion("Lion-betas-maximize", beta1=0.5, beta2=0.9, maximize=True)
    lion("Lion-mask-clip", wd=0.5, mask=no_bias_decay, clip=0.5)
    lion("Lion-per-key", wd={"W1": 0.5, "b1": 0.0, "W2": 1.0, "b2": 0.1})

    def schedule_free(id, cls, lr, wd=0.0, warmup=0, r=0.0, power=2.0, maximize=False,
                      clip=None, **more):
        kw = dict(learning_rate=lr, weight_decay=wd, warmup_steps=warmup, r=r,
                  weight_lr_power=power, maximize=maximize, **more)
        h = dict(lr=lr, weight_decay=wd, warmup=warmup, r=r, weight_lr_power=power,
                 maximize=maximize, beta1=0.9, beta2=0.999, eps=1e-8, momentum=0.9)
        h.update({"beta1" if k == "beta1" else k: v for k, v in more.items()})
        rule = "schedule_free_adamw" if cls == "ScheduleFreeAdamW" else "schedule_free_sgd"
        c.append(Case(id, cls, kw, None, None, rule, h, (), clip))

    schedule_free("ScheduleFreeAdamW", "ScheduleFreeAdamW", 0.01)
    schedule_free("ScheduleFreeAdamW-wd-warmup", "ScheduleFreeAdamW", 0.01, wd=0.1, warmup=5)
    schedule_free("ScheduleFreeAdamW-r-power-maximize", "ScheduleFreeAdamW", 0.01, r=1.0,
                  power=0.0, maximize=True, beta1=0.8)
    schedule_free("ScheduleFreeAdamW-per-key-clip", "ScheduleFreeAdamW", 0.01, wd=WD_PER_KEY,
                  warmup=3, clip=0.5)
    schedule_free("ScheduleFreeSGD", "ScheduleFreeSGD", 0.1)
    schedule_free("ScheduleFreeSGD-wd-warmup", "ScheduleFreeSGD", 0.1, wd=0.1, warmup=5)
    schedule_free("ScheduleFreeSGD-momentum-r-maximize", "ScheduleFreeSGD", 0.1, r=0.5,
                  maximize=True, momentum=0.5)
    schedule_free("ScheduleFreeSGD-per-key-clip", "ScheduleFreeSGD", 0.1, wd=WD_PER_KEY,
                  warmup=3, clip=0.5)

    def lamb(id, lr=0.01, wd=0.01, maximize=False, mask=None, clip=None, eps=1e-6):
        kw = dict(learning_rate=lr, weight_decay=wd, maximize=maximize, epsilon=eps)
        if mask is not None:
            kw["weight_decay_mask"] = mask
        h = dict(lr=lr, beta1=0.9, beta2=0.999, eps=eps, weight_decay=wd, maximize=maximize)
        c.append(Case(id, "LAMB", kw, None, None, "lamb", h, (), clip))

    lamb("LAMB")
    lamb("LAMB-no-decay", wd=0.0, eps=1e-3)
    lamb("LAMB-per-key-maximize", wd=WD_PER_KEY, maximize=True)
    lamb("LAMB-mask-clip", wd=0.1, mask=no_bias_decay, clip=0.5)

    def adafactor(id, lr=0.01, wd=0.0, decay=-0.8, eps1=None, eps2=1e-3, d=1.0,
                  maximize=False, clip=None):
        kw = dict(learning_rate=lr, weight_decay=wd, beta2_decay=decay, epsilon1=eps1,
                  epsilon2=eps2, d=d, maximize=maximize)
        tk = dict(lr=lr, beta2_decay=decay, eps=(eps1, eps2), d=d, maximize=maximize)
        h = dict(lr=lr, weight_decay=wd, beta2_decay=decay, eps1=eps1, eps2=eps2, d=d,
                 maximize=maximize)
        states = (("row_var", "row_var"), ("col_var", "col_var"))
        c.append(Case(id, "Adafactor", kw, "Adafactor", tk, "adafactor", h, states, clip))

    adafactor("Adafactor")
    adafactor("Adafactor-wd", wd=0.1)
    adafactor("Adafactor-eps-maximize", decay=-0.5, eps1=1e-3, eps2=2.0,
              maximize=True)
    adafactor("Adafactor-per-key-clip", wd=WD_PER_KEY, clip=0.5)

    def muon(id, lr=0.02, wd=0.1, nesterov=True, match=False, mask=None, maximize=False,
             clip=None, mu=0.95):
        kw = dict(learning_rate=lr, weight_decay=wd, nesterov=nesterov, match_rms_adamw=match,
                  maximize=maximize, momentum=mu)
        if mask is not None:
            kw["muon_mask"] = mask
        h = dict(lr=lr, weight_decay=wd, nesterov=nesterov, match=match, maximize=maximize,
                 momentum=mu, ns_steps=5, ns_eps=1e-7, beta1=0.9, beta2=0.999, eps=1e-8,
                 muon=mask if mask is not None else (lambda k: k.startswith("W")))
        c.append(Case(id, "Muon", kw, None, None, "muon", h, (), clip))

    muon("Muon")
    muon("Muon-plain-momentum-match-rms", nesterov=False, match=True, mu=0.9)
    muon("Muon-mask-maximize", mask=lambda k: k == "W1", maximize=True)
    muon("Muon-per-key-clip", wd=WD_PER_KEY, clip=0.5)
    return c


CASES = _cases()
TORCH_CASES = [c for c in CASES if c.torch_cls is not None]


# --- the float64 reference ----------------------------------------------------------

class Reference:
    """One optimizer's rule in float64, per key, from the published algorithm."""

    def __init__(self, case, params):
        self.rule = case.rule
        self.h = case.hyper
        self.wd = case.weight_decays()
        self.clip = case.clip
        self.p = {k: np.array(a, dtype=np.float64) for k, a in params.items()}
        self.state = {k: {} for k in params}
        self.t = 0
        self.mu_product = 1.0
        self.dtype = next(iter(params.values())).dtype if params else np.float64
        self.weight_sum, self.lr_max = 0.0, -1.0  # Schedule-Free's, as the reference
        if self.rule == "adagrad":
            for k, a in self.p.items():
                self.state[k]["sum"] = np.full_like(a, self.h["init"])

    def step(self, grads):
        self.t += 1
        g = {k: np.array(grads["d" + k], dtype=np.float64) for k in self.p}
        if self.clip is not None:
            total = math.sqrt(sum(float(np.sum(x * x)) for x in g.values()))
            coef = self.clip / (total + 1e-6)
            if coef < 1.0:
                g = {k: x * coef for k, x in g.items()}
        if self.rule.startswith("schedule_free"):
            self.sf = self._schedule_free_weights()
        for k in self.p:
            getattr(self, self.rule)(k, g[k], self.state[k])
        if self.rule == "nadam":
            self.mu_product *= self._mu(self.t)

    def _grad(self, k, g, decoupled=False):
        h = self.h
        if h.get("maximize"):
            g = -g
        if self.wd[k] and not decoupled:
            g = g + self.wd[k] * self.p[k]
        return g

    def sgd(self, k, g, st):
        h = self.h
        g = self._grad(k, g)
        mom = h.get("momentum", 0.0)
        if mom:
            if "b" not in st:
                st["b"] = g.copy()
            else:
                st["b"] = mom * st["b"] + (1 - h["dampening"]) * g
            g = g + mom * st["b"] if h["nesterov"] else st["b"]
        self.p[k] = self.p[k] - h["lr"] * g

    def momentum(self, k, g, st):
        # the course's exponential average; Nesterov looks ahead in the same form
        h = self.h
        v = h["beta"] * st.get("v", 0.0) + (1 - h["beta"]) * g
        st["v"] = v
        u = h["beta"] * v + (1 - h["beta"]) * g if h["nesterov"] else v
        self.p[k] = self.p[k] - h["lr"] * u

    def adam(self, k, g, st):
        h, t = self.h, self.t
        g = self._grad(k, g, h["decoupled"])
        if h["decoupled"] and self.wd[k]:
            self.p[k] = self.p[k] * (1 - h["lr"] * self.wd[k])
        m = st["m"] = h["beta1"] * st.get("m", 0.0) + (1 - h["beta1"]) * g
        v = st["v"] = h["beta2"] * st.get("v", 0.0) + (1 - h["beta2"]) * g**2
        if h["amsgrad"]:
            v = st["vmax"] = np.maximum(st.get("vmax", 0.0), v)
        m_hat = m / (1 - h["beta1"] ** t)
        v_hat = v / (1 - h["beta2"] ** t)
        self.p[k] = self.p[k] - h["lr"] * m_hat / (np.sqrt(v_hat) + h["eps"])

    def rmsprop(self, k, g, st):
        h = self.h
        g = self._grad(k, g)
        a = h["alpha"]
        sq = st["sq"] = a * st.get("sq", 0.0) + (1 - a) * g**2
        if h["centered"]:
            ga = st["ga"] = a * st.get("ga", 0.0) + (1 - a) * g
            avg = np.sqrt(sq - ga**2) + h["eps"]
        else:
            avg = np.sqrt(sq) + h["eps"]
        if h["momentum"]:
            st["b"] = h["momentum"] * st.get("b", 0.0) + g / avg
            self.p[k] = self.p[k] - h["lr"] * st["b"]
        else:
            self.p[k] = self.p[k] - h["lr"] * g / avg

    def adagrad(self, k, g, st):
        h = self.h
        g = self._grad(k, g)
        clr = h["lr"] / (1 + (self.t - 1) * h["lr_decay"])
        st["sum"] = st["sum"] + g**2
        self.p[k] = self.p[k] - clr * g / (np.sqrt(st["sum"]) + h["eps"])

    def adamax(self, k, g, st):
        h = self.h
        g = self._grad(k, g)
        m = st["m"] = h["beta1"] * st.get("m", 0.0) + (1 - h["beta1"]) * g
        u = st["u"] = np.maximum(h["beta2"] * st.get("u", 0.0), np.abs(g) + h["eps"])
        self.p[k] = self.p[k] - h["lr"] / (1 - h["beta1"] ** self.t) * m / u

    def _mu(self, t):
        return self.h["beta1"] * (1 - 0.5 * 0.96 ** (t * self.h["momentum_decay"]))

    def nadam(self, k, g, st):
        h, t = self.h, self.t
        g = self._grad(k, g, h["decoupled"])
        if h["decoupled"] and self.wd[k]:
            self.p[k] = self.p[k] * (1 - h["lr"] * self.wd[k])
        mu, mu_next = self._mu(t), self._mu(t + 1)
        prod = self.mu_product * mu  # mu_1 ... mu_t
        m = st["m"] = h["beta1"] * st.get("m", 0.0) + (1 - h["beta1"]) * g
        v = st["v"] = h["beta2"] * st.get("v", 0.0) + (1 - h["beta2"]) * g**2
        denom = np.sqrt(v / (1 - h["beta2"] ** t)) + h["eps"]
        self.p[k] = (self.p[k] - h["lr"] * (1 - mu) / (1 - prod) * g / denom
                     - h["lr"] * mu_next / (1 - prod * mu_next) * m / denom)

    def radam(self, k, g, st):
        h, t = self.h, self.t
        g = self._grad(k, g, h["decoupled"])
        if h["decoupled"] and self.wd[k]:
            self.p[k] = self.p[k] * (1 - h["lr"] * self.wd[k])
        b2 = h["beta2"]
        m = st["m"] = h["beta1"] * st.get("m", 0.0) + (1 - h["beta1"]) * g
        v = st["v"] = b2 * st.get("v", 0.0) + (1 - b2) * g**2
        m_hat = m / (1 - h["beta1"] ** t)
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if rho_t > 5:
            r = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                          / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            adaptive = math.sqrt(1 - b2**t) / (np.sqrt(v) + h["eps"])
            self.p[k] = self.p[k] - h["lr"] * m_hat * r * adaptive
        else:
            self.p[k] = self.p[k] - h["lr"] * m_hat

    def lion(self, k, g, st):
        # Chen et al. 2023, Algorithm 2 (Lion):
        #   c = b1*m + (1-b1)*g;  theta -= lr*(sign(c) + lambda*theta);  m = b2*m + (1-b2)*g
        h = self.h
        if h["maximize"]:
            g = -g
        m = st.get("m", np.zeros_like(g))
        c = h["beta1"] * m + (1 - h["beta1"]) * g
        self.p[k] = self.p[k] - h["lr"] * (np.sign(c) + self.wd[k] * self.p[k])
        st["m"] = h["beta2"] * m + (1 - h["beta2"]) * g

    # --- Schedule-Free (facebookresearch/schedule_free: adamw_schedulefree.py,
    # sgd_schedulefree.py), the step's scalars then each parameter -------------------

    def _schedule_free_weights(self):
        h, k = self.h, self.t - 1
        sched = (k + 1) / h["warmup"] if k < h["warmup"] else 1.0
        lr = h["lr"] * sched
        self.lr_max = max(lr, self.lr_max)
        weight = ((k + 1) ** h["r"]) * (self.lr_max ** h["weight_lr_power"])
        self.weight_sum = self.weight_sum + weight
        try:
            ckp1 = weight / self.weight_sum
        except ZeroDivisionError:
            ckp1 = 0
        return lr, ckp1

    @staticmethod
    def _lerp(a, b, w):  # torch.lerp
        return a + w * (b - a) if abs(w) < 0.5 else b - (b - a) * (1 - w)

    def schedule_free_adamw(self, k, g, st):
        h, (lr, ckp1) = self.h, self.sf
        if h["maximize"]:
            g = -g
        y = self.p[k]
        z = st.setdefault("z", y.copy())
        exp_avg_sq = st["s"] = h["beta2"] * st.get("s", 0.0) + (1 - h["beta2"]) * g * g
        denom = np.sqrt(exp_avg_sq / (1 - h["beta2"] ** self.t)) + h["eps"]
        grad_normalized = g / denom + self.wd[k] * y  # weight decay at y
        y = self._lerp(y, z, ckp1)
        y = y + lr * (h["beta1"] * (1 - ckp1) - 1) * grad_normalized
        st["z"] = z - lr * grad_normalized
        self.p[k] = y

    def schedule_free_sgd(self, k, g, st):
        h, (lr, ckp1) = self.h, self.sf
        g = self._grad(k, g)  # weight decay as L2, at y
        y = self.p[k]
        z = st.setdefault("z", y.copy())
        y = self._lerp(y, z, ckp1)
        y = y + lr * (h["momentum"] * (1 - ckp1) - 1) * g
        st["z"] = z - lr * g
        self.p[k] = y

    def eval_point(self, k):
        """The reference's eval(): x = (y - (1 - beta)*z) / beta."""
        b = self.h["beta1"] if self.rule == "schedule_free_adamw" else self.h["momentum"]
        return (self.p[k] - (1 - b) * self.state[k]["z"]) / b

    # --- LAMB (You et al. 2020, Algorithm 2, phi the identity), per layer ----------------

    def lamb(self, k, g, st):
        h, t = self.h, self.t
        if h["maximize"]:
            g = -g
        x = self.p[k]
        m = st["m"] = h["beta1"] * st.get("m", 0.0) + (1 - h["beta1"]) * g
        v = st["v"] = h["beta2"] * st.get("v", 0.0) + (1 - h["beta2"]) * g * g
        m_hat, v_hat = m / (1 - h["beta1"] ** t), v / (1 - h["beta2"] ** t)
        r = m_hat / (np.sqrt(v_hat) + h["eps"])
        u = r + self.wd[k] * x
        x_norm, u_norm = np.linalg.norm(x), np.linalg.norm(u)
        ratio = x_norm / u_norm if x_norm > 0 and u_norm > 0 else 1.0
        self.p[k] = x - h["lr"] * ratio * u

    # --- Adafactor (Shazeer & Stern 2018, as torch.optim.Adafactor documents it) ---------

    def adafactor(self, k, g, st):
        h, t = self.h, float(self.t)
        if h["maximize"]:
            g = -g
        eps1 = np.finfo(self.dtype).eps if h["eps1"] is None else h["eps1"]
        w = t ** h["beta2_decay"]  # the weight of the new statistics (1 - beta2_t)
        rho = min(h["lr"], 1 / np.sqrt(t))
        x = self.p[k]
        alpha = max(h["eps2"], np.sqrt(np.mean(x * x))) * rho
        x = x * (1 - h["lr"] * self.wd[k])
        if g.ndim > 1:
            R = st["R"] = (1 - w) * st.get("R", 0.0) + w * np.mean(
                g * g, axis=-1, keepdims=True)
            C = st["C"] = (1 - w) * st.get("C", 0.0) + w * np.mean(
                g * g, axis=-2, keepdims=True)
            V = R * C / np.maximum(np.mean(R, axis=-2, keepdims=True), eps1)
        else:
            V = st["V"] = (1 - w) * st.get("V", 0.0) + w * g * g
        U = g / np.maximum(np.sqrt(V), eps1)
        U_hat = U / max(1.0, np.sqrt(np.mean(U * U)) / h["d"])
        self.p[k] = x - alpha * U_hat

    # --- Muon (Jordan et al. 2024, as torch.optim.Muon) for the matrices it takes,
    # AdamW (Loshchilov & Hutter 2019) for the others -------------------------------

    @staticmethod
    def newton_schulz(G, steps, eps):
        a, b, c = 3.4445, -4.7750, 2.0315
        X = G / max(np.linalg.norm(G), eps)
        if G.shape[0] > G.shape[1]:
            X = X.T
        for _ in range(steps):
            A = X @ X.T
            X = a * X + (b * A + c * A @ A) @ X
        return X.T if G.shape[0] > G.shape[1] else X

    def muon(self, k, g, st):
        h = self.h
        if h["maximize"]:
            g = -g
        x = self.p[k]
        if not h["muon"](k):  # AdamW
            x = x * (1 - h["lr"] * self.wd[k])
            m = st["m"] = h["beta1"] * st.get("m", 0.0) + (1 - h["beta1"]) * g
            v = st["v"] = h["beta2"] * st.get("v", 0.0) + (1 - h["beta2"]) * g * g
            m_hat, v_hat = m / (1 - h["beta1"] ** self.t), v / (1 - h["beta2"] ** self.t)
            self.p[k] = x - h["lr"] * m_hat / (np.sqrt(v_hat) + h["eps"])
            return
        mu = h["momentum"]
        B = st["B"] = mu * st.get("B", 0.0) + (1 - mu) * g
        u = (1 - mu) * g + mu * B if h["nesterov"] else B
        A_, B_ = x.shape[0], x.size // x.shape[0]
        O = self.newton_schulz(u.reshape(A_, B_), h["ns_steps"], h["ns_eps"]).reshape(x.shape)
        scale = 0.2 * np.sqrt(max(A_, B_)) if h["match"] else np.sqrt(max(1, A_ / B_))
        self.p[k] = x * (1 - h["lr"] * self.wd[k]) - h["lr"] * scale * O
