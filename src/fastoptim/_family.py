"""The optimizer family: AdamW, SGD, RMSprop, Adagrad, Adamax, NAdam, RAdam, Lion,
and the options of GD, Momentum and Adam beyond the course.

Every class is an optimizer object like fastoptim.optim's (same arena, state
dict, schedules); each step is one fused C call per dtype (the NumPy twin in
the fallback). Hyperparameters take the course's names where it has one
(learning_rate, beta1, beta2, epsilon) and torch's otherwise; defaults are
torch's for the optimizers the course does not have.

Options every optimizer here takes:
  max_grad_norm    clip by global norm: one fused pass computes the norm of all
                   gradients together, then the update scales them by
                   min(1, max_grad_norm / (norm + 1e-6)) as it reads them (torch's
                   clip_grad_norm_ rule; the gradient arrays are not modified).
  skip_nonfinite   if any gradient element is Inf or NaN, skip the step:
                   parameters, state and t stay unchanged and step() returns False.
  weight_decay     where the optimizer has one: a float, a dict with every
                   parameter key, or a callable key -> float; weight_decay_mask
                   (a callable key -> bool, or a dict of every key) turns it off
                   per key, e.g. weight_decay_mask=lambda key: key.startswith("W")
                   for no decay on biases.
  maximize         ascend instead of descend (the gradient is negated).
step(grads) returns True when the update was applied. `last_grad_norm` is the
global norm measured by the last step that measured one (clipping or
skip_nonfinite), before clipping.
"""
import numbers

import numpy as np

from . import _validate as check
from . import optim as _optim
from ._backend import impl as _impl

__all__ = ["GD", "Momentum", "Adam", "AdamW", "SGD", "RMSprop", "Adagrad", "Adamax", "NAdam",
           "RAdam", "Lion"]

_param = _optim._hyperparameter
_CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s


def _per_key(keys, value, name, validate):
    """`value` for each key: one value for all, a dict with exactly these keys,
    or a callable key -> value."""
    if isinstance(value, dict):
        for key in value:
            if key not in keys:
                raise KeyError(f"{name} has key {key!r}, which is not a parameter")
        missing = [k for k in keys if k not in value]
        if missing:
            raise KeyError(f"{name} has no key {missing[0]!r} (needed for "
                           f"parameters[{missing[0]!r}])")
        return {k: validate(value[k], f"{name}[{k!r}]") for k in keys}
    if callable(value) and not isinstance(value, (numbers.Real, np.ndarray)):
        return {k: validate(value(k), f"{name}({k!r})") for k in keys}
    x = validate(value, name)
    return {k: x for k in keys}


def _max_grad_norm(value):
    if value is None:
        return None
    x = check.finite(value, "max_grad_norm")
    if not x > 0.0:
        raise ValueError(f"max_grad_norm must be > 0 (or None), got {value!r}")
    return x


class _Extras:
    """Clipping, the non-finite skip, per-key weight decay, maximize and the
    boolean options, for any optimizer object. A class sets `_flags` (its
    boolean options, stored in the state dict; those in `_structural` change
    the state's layout and must match on load) and defines `_update(grads, t,
    lr, grad_scale)`; `_plain()` says when the parent's own step may run."""

    _flags = ()
    _structural = ()
    _has_weight_decay = False

    def _prepare(self, parameters, flags, max_grad_norm, skip_nonfinite, weight_decay=0.0,
                 weight_decay_mask=None):
        """Check and set the options; called before the parameters move, so that
        a bad option changes nothing."""
        check.check_dict("parameters", parameters)
        self._keys = list(parameters)
        self._opts = {name: check.flag(flags[name], name) for name in self._flags}
        self._max_norm = _max_grad_norm(max_grad_norm)
        self._skip = check.flag(skip_nonfinite, "skip_nonfinite")
        self.last_grad_norm = None
        self._mask = None
        self._wd = {k: 0.0 for k in self._keys}
        if self._has_weight_decay:
            self._mask = self._check_mask(weight_decay_mask)
            self._wd = self._resolve_decay(weight_decay)
        self._refresh()

    def _refresh(self):
        """After an option changes: may the parent's own step run?"""
        self._plain_now = self._plain()

    # --- options ---------------------------------------------------------------

    @property
    def max_grad_norm(self):
        """Clip the gradients' global norm to this (None: no clipping)."""
        return self._max_norm

    @max_grad_norm.setter
    def max_grad_norm(self, value):
        self._max_norm = _max_grad_norm(value)
        self._refresh()

    @property
    def skip_nonfinite(self):
        """Skip a step whose gradients hold an Inf or NaN (step() returns False)."""
        return self._skip

    @skip_nonfinite.setter
    def skip_nonfinite(self, value):
        self._skip = check.flag(value, "skip_nonfinite")
        self._refresh()

    @property
    def options(self):
        """The boolean options, by name: set at construction, restored by
        load_state_dict (those that shape the state, e.g. amsgrad, must match)."""
        return dict(self._opts)

    @property
    def weight_decay(self):
        """One float when every key has the same decay, else a dict by key. Set
        a float, a dict of every key or a callable key -> float (the mask still
        applies). May be changed between steps."""
        values = set(self._wd.values())
        return values.pop() if len(values) == 1 else dict(self._wd)

    @weight_decay.setter
    def weight_decay(self, value):
        if not self._has_weight_decay:
            raise AttributeError(f"{type(self).__name__} has no weight decay")
        self._wd = self._resolve_decay(value)
        self._refresh()

    def _resolve_decay(self, value):
        wd = _per_key(self._keys, value, "weight_decay", check.nonnegative)
        if self._mask is not None:
            wd = {k: (x if self._mask[k] else 0.0) for k, x in wd.items()}
        return wd

    def _check_mask(self, mask):
        if mask is None:
            return None
        return _per_key(self._keys, mask, "weight_decay_mask", check.flag)

    def _wd_arg(self):
        """The weight decay as the dict-level functions take it."""
        values = set(self._wd.values())
        return values.pop() if len(values) <= 1 and self._wd else (self._wd or 0.0)

    # --- the step ---------------------------------------------------------------

    def _plain(self):
        return False

    def step(self, grads):
        """One update of every parameter from grads["d" + key], in place; then
        t += 1. Returns False, having changed nothing, when skip_nonfinite is set
        and a gradient holds an Inf or NaN; True otherwise."""
        if self._plain_now:
            super().step(grads)
            return True
        t = self._t
        lr = self._lr if self._schedule is None else self._scheduled_lr(t)
        scale = 1.0
        if self._max_norm is not None or self._skip:
            norm, finite = _impl.grad_norm(self._params, grads)
            self.last_grad_norm = norm
            if self._skip and not finite:
                return False
            if self._max_norm is not None:
                # torch's rule; a NaN norm (a NaN gradient, not skipped) leaves
                # the scale at 1, so the NaN reaches only the elements it touches.
                coef = self._max_norm / (norm + _CLIP_EPS)
                if coef < 1.0:
                    scale = coef
        if self._opts.get("maximize"):
            scale = -scale
        self._update(grads, t + 1, lr, scale)
        self._t = t + 1
        return True

    # --- state dict ----------------------------------------------------------------

    def _extra_state(self):
        """Scalars beyond the hyperparameters (e.g. NAdam's mu_product)."""
        return {}

    def _load_extra_state(self, values):
        pass

    def _state_items(self, copy):
        # Options at their defaults are left out (a flag that is off, no weight
        # decay), so a plain configuration saves what fastoptim.optim saves.
        items = super()._state_items(copy)
        items.update({name: True for name, on in self._opts.items() if on})
        if any(self._wd.values()):
            wd = self.weight_decay
            if isinstance(wd, dict):
                items.update({f"weight_decay/{k}": x for k, x in wd.items()})
            else:
                items["weight_decay"] = wd
        items.update(self._extra_state())
        return items

    def _check_state_dict(self, state_dict):
        from collections.abc import Mapping

        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        sd = dict(state_dict)
        name = type(self).__name__
        owner = _optim._scalar(sd.get("optimizer"))
        if "optimizer" in sd and owner != name:
            raise ValueError(f"state_dict is for {owner!r}, not {name!r}")

        def take(key):
            try:
                return _optim._scalar(sd.pop(key))
            except KeyError:
                raise KeyError(f"state_dict has no key {key!r} (needed by {name})") from None

        flags = {}
        for flag in self._flags:  # absent: off
            value = check.flag(take(flag), f"state_dict[{flag!r}]") if flag in sd else False
            if flag in self._structural and value != self._opts[flag]:
                raise ValueError(f"state_dict has {flag}={value} but this {name} has "
                                 f"{flag}={self._opts[flag]}")
            flags[flag] = value
        wd = None
        if self._has_weight_decay:  # absent: none
            if "weight_decay" in sd:
                wd = take("weight_decay")
            elif any(f"weight_decay/{k}" in sd for k in self._keys):
                wd = {k: take(f"weight_decay/{k}") for k in self._keys}
            else:
                wd = 0.0
            wd = _per_key(self._keys, wd, "state_dict weight_decay", check.nonnegative)
        extra = {k: take(k) for k in self._extra_state()}
        apply_base = super()._check_state_dict(sd)
        self._check_extra_state(extra)

        def apply():
            apply_base()
            self._opts.update(flags)
            if wd is not None:
                self._wd = wd
            self._load_extra_state(extra)
            self._refresh()

        return apply

    def _check_extra_state(self, values):
        pass


class _Family(_Extras, _optim.Optimizer):
    """The new optimizers: an optimizer object without the course classes'
    precompiled plan (each step gathers its arrays, then makes one C call per
    dtype)."""

    def __init__(self, parameters, learning_rate, arena, hyper, flags, state_names, *,
                 max_grad_norm=None, skip_nonfinite=False, weight_decay=0.0,
                 weight_decay_mask=None):
        self._state_names = tuple(state_names)
        self._options = (flags, max_grad_norm, skip_nonfinite, weight_decay, weight_decay_mask)
        super().__init__(parameters, learning_rate, arena, **hyper)

    def _check_options(self, parameters):
        self._prepare(parameters, *self._options)
        del self._options

    def _s(self, name):
        """A state dict by name, or None when the options leave it out."""
        return self._state.get(name)


# --- the course's three, with options ----------------------------------------------

class GD(_Extras, _optim.GD):
    """Gradient descent, W -= learning_rate * dW, with max_grad_norm and
    skip_nonfinite (see the module's docstring)."""

    def __init__(self, parameters, learning_rate=0.01, *, max_grad_norm=None,
                 skip_nonfinite=False, arena=True):
        self._prepare(parameters, {}, max_grad_norm, skip_nonfinite)
        super().__init__(parameters, learning_rate, arena=arena)

    def _plain(self):
        return self._max_norm is None and not self._skip

    def _update(self, grads, t, lr, scale):
        _impl.sgd(self._params, grads, None, t, lr, 0.0, 0.0, False, 0.0, scale, True)


class Momentum(_Extras, _optim.Momentum):
    """Momentum in the course's form: v = beta*v + (1-beta)*dW; W -= learning_rate*v.
    nesterov=True steps along the look-ahead in the same form:
    W -= learning_rate * (beta*v + (1-beta)*dW), v already updated (equal to
    torch's SGD(lr=learning_rate*(1-beta), momentum=beta, nesterov=True))."""

    _flags = ("nesterov",)

    def __init__(self, parameters, learning_rate=0.01, *, beta=0.9, nesterov=False,
                 max_grad_norm=None, skip_nonfinite=False, arena=True):
        self._prepare(parameters, {"nesterov": nesterov}, max_grad_norm, skip_nonfinite)
        super().__init__(parameters, learning_rate, beta=beta, arena=arena)

    def _plain(self):
        return self._max_norm is None and not self._skip and not self._opts["nesterov"]

    def _update(self, grads, t, lr, scale):
        beta = self._h["beta"]
        _impl.sgd(self._params, grads, self._state["v"], t, lr, beta, beta,
                  self._opts["nesterov"], 0.0, scale, True)


class Adam(_Extras, _optim.Adam):
    """Adam as the course and torch define it, with torch's options:
    weight_decay (L2: weight_decay*W is added to dW, as torch.optim.Adam),
    amsgrad (the denominator uses the running maximum of s, kept uncorrected in
    state "max_s"), maximize; and max_grad_norm, skip_nonfinite,
    weight_decay_mask (see the module's docstring)."""

    _flags = ("amsgrad", "maximize")
    _structural = ("amsgrad",)
    _has_weight_decay = True
    _decoupled = False

    def __init__(self, parameters, learning_rate=0.01, *, beta1=0.9, beta2=0.999,
                 epsilon=1e-8, weight_decay=0.0, weight_decay_mask=None, amsgrad=False,
                 maximize=False, max_grad_norm=None, skip_nonfinite=False, arena=True):
        self._prepare(parameters, {"amsgrad": amsgrad, "maximize": maximize}, max_grad_norm,
                      skip_nonfinite, weight_decay, weight_decay_mask)
        super().__init__(parameters, learning_rate, beta1=beta1, beta2=beta2, epsilon=epsilon,
                         arena=arena)
        if self._opts["amsgrad"]:
            arrays = list(self._params.items())
            _, extra, buffers = _optim._build(arrays, ("max_s",), False)
            self._state.update(extra)
            self._buffers += buffers
            self._state_names = self._state_names + ("max_s",)

    def _plain(self):
        return (self._max_norm is None and not self._skip and not any(self._opts.values())
                and not any(self._wd.values()))

    def _update(self, grads, t, lr, scale):
        h = self._h
        _impl.adam_ext(self._params, grads, self._state["v"], self._state["s"],
                       self._state.get("max_s"), t, lr, h["beta1"], h["beta2"], h["epsilon"],
                       self._wd_arg(), self._decoupled, scale)


# --- the family ------------------------------------------------------------------------

class AdamW(Adam):
    """Adam with decoupled weight decay, as torch.optim.AdamW: each step first
    scales W by 1 - learning_rate*weight_decay, then takes the Adam step (the
    decay never enters v or s). Options as Adam; torch's defaults."""

    _decoupled = True

    def __init__(self, parameters, learning_rate=0.001, *, beta1=0.9, beta2=0.999,
                 epsilon=1e-8, weight_decay=0.01, weight_decay_mask=None, amsgrad=False,
                 maximize=False, max_grad_norm=None, skip_nonfinite=False, arena=True):
        super().__init__(parameters, learning_rate, beta1=beta1, beta2=beta2, epsilon=epsilon,
                         weight_decay=weight_decay, weight_decay_mask=weight_decay_mask,
                         amsgrad=amsgrad, maximize=maximize, max_grad_norm=max_grad_norm,
                         skip_nonfinite=skip_nonfinite, arena=arena)


def _momentum_property(doc):
    def get(self):
        return self._h["momentum"]

    def set(self, value):
        x = check.beta(value, "momentum")
        if x != 0.0 and "momentum_buffer" not in self._state:
            raise ValueError(f"{type(self).__name__} was built with momentum=0 and has no "
                             "momentum buffer; build it with momentum > 0")
        self._h["momentum"] = x

    return property(get, set, doc=doc + " May be changed between steps.")


class SGD(_Family):
    """torch.optim.SGD, a drop-in for torch users:
    g = dW + weight_decay*W;  b = g at the first step, then b = momentum*b +
    (1-dampening)*g;  W -= learning_rate * (g + momentum*b if nesterov else b).
    Without momentum, W -= learning_rate * g. State "momentum_buffer" (only
    when momentum > 0 at construction)."""

    _hyper = {"momentum": check.beta, "dampening": check.fraction}
    _flags = ("nesterov", "maximize")
    _has_weight_decay = True
    momentum = _momentum_property("The momentum, in [0, 1).")
    dampening = _param("dampening", "Dampening of the gradient in the buffer, in [0, 1].")

    def __init__(self, parameters, learning_rate=0.001, *, momentum=0.0, dampening=0.0,
                 nesterov=False, weight_decay=0.0, weight_decay_mask=None, maximize=False,
                 max_grad_norm=None, skip_nonfinite=False, arena=True):
        mu = check.beta(momentum, "momentum")
        if check.flag(nesterov, "nesterov") and (mu == 0.0 or dampening != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening = 0 (as torch)")
        super().__init__(parameters, learning_rate, arena,
                         {"momentum": momentum, "dampening": dampening},
                         {"nesterov": nesterov, "maximize": maximize},
                         ("momentum_buffer",) if mu else (),
                         max_grad_norm=max_grad_norm, skip_nonfinite=skip_nonfinite,
                         weight_decay=weight_decay, weight_decay_mask=weight_decay_mask)

    def _update(self, grads, t, lr, scale):
        h = self._h
        buf = self._s("momentum_buffer") if h["momentum"] else None
        _impl.sgd(self._params, grads, buf, t, lr, h["momentum"], h["dampening"],
                  self._opts["nesterov"] and buf is not None, self._wd_arg(), scale, False)


class RMSprop(_Family):
    """torch.optim.RMSprop: g = dW + weight_decay*W;  square_avg = alpha*square_avg
    + (1-alpha)*g*g;  centered: grad_avg = alpha*grad_avg + (1-alpha)*g and
    d = sqrt(square_avg - grad_avg**2) + epsilon, else d = sqrt(square_avg) +
    epsilon (epsilon outside the root, no bias correction);  with momentum:
    b = momentum*b + g/d, W -= learning_rate*b, else W -= learning_rate*g/d."""

    _hyper = {"alpha": check.beta, "epsilon": check.epsilon, "momentum": check.beta}
    _flags = ("centered", "maximize")
    _structural = ("centered",)
    _has_weight_decay = True
    alpha = _param("alpha", "Smoothing constant of the squared-gradient average, in [0, 1).")
    epsilon = _param("epsilon", "Added to the root, outside it.")
    momentum = _momentum_property("The momentum, in [0, 1).")

    def __init__(self, parameters, learning_rate=0.01, *, alpha=0.99, epsilon=1e-8,
                 weight_decay=0.0, weight_decay_mask=None, momentum=0.0, centered=False,
                 maximize=False, max_grad_norm=None, skip_nonfinite=False, arena=True):
        mu = check.beta(momentum, "momentum")
        names = ("square_avg",) + (("grad_avg",) if check.flag(centered, "centered") else ())
        names += ("momentum_buffer",) if mu else ()
        super().__init__(parameters, learning_rate, arena,
                         {"alpha": alpha, "epsilon": epsilon, "momentum": momentum},
                         {"centered": centered, "maximize": maximize}, names,
                         max_grad_norm=max_grad_norm, skip_nonfinite=skip_nonfinite,
                         weight_decay=weight_decay, weight_decay_mask=weight_decay_mask)

    def _update(self, grads, t, lr, scale):
        h = self._h
        _impl.rmsprop(self._params, grads, self._state["square_avg"], self._s("grad_avg"),
                      self._s("momentum_buffer") if h["momentum"] else None, lr, h["alpha"],
                      h["epsilon"], h["momentum"], self._wd_arg(), scale)


class Adagrad(_Family):
    """torch.optim.Adagrad: g = dW + weight_decay*W;  sum += g*g;
    W -= learning_rate/(1 + (t-1)*lr_decay) * g/(sqrt(sum) + epsilon).
    State "sum" starts at initial_accumulator_value."""

    _hyper = {"lr_decay": check.nonnegative, "epsilon": check.epsilon}
    _flags = ("maximize",)
    _has_weight_decay = True
    lr_decay = _param("lr_decay", "The learning rate is divided by 1 + (t-1)*lr_decay.")
    epsilon = _param("epsilon", "Added to the root, outside it.")

    def __init__(self, parameters, learning_rate=0.01, *, lr_decay=0.0, weight_decay=0.0,
                 weight_decay_mask=None, initial_accumulator_value=0.0, epsilon=1e-10,
                 maximize=False, max_grad_norm=None, skip_nonfinite=False, arena=True):
        self._state_fill = check.nonnegative(initial_accumulator_value,
                                             "initial_accumulator_value")
        super().__init__(parameters, learning_rate, arena,
                         {"lr_decay": lr_decay, "epsilon": epsilon}, {"maximize": maximize},
                         ("sum",), max_grad_norm=max_grad_norm, skip_nonfinite=skip_nonfinite,
                         weight_decay=weight_decay, weight_decay_mask=weight_decay_mask)

    def _update(self, grads, t, lr, scale):
        h = self._h
        _impl.adagrad(self._params, grads, self._state["sum"], t, lr, h["lr_decay"],
                      h["epsilon"], self._wd_arg(), scale)


class _AdamLike(_Family):
    _hyper = {"beta1": check.beta, "beta2": check.beta, "epsilon": check.epsilon}
    _has_weight_decay = True
    beta1 = _param("beta1", "Decay of the first moment, in [0, 1).")
    beta2 = _param("beta2", "Decay of the second moment, in [0, 1).")
    epsilon = _param("epsilon", "Added to the denominator.")


class Adamax(_AdamLike):
    """torch.optim.Adamax (Adam with the infinity norm): g = dW + weight_decay*W;
    v = beta1*v + (1-beta1)*g;  exp_inf = max(beta2*exp_inf, |g| + epsilon);
    W -= learning_rate/(1-beta1**t) * v/exp_inf."""

    _flags = ("maximize",)

    def __init__(self, parameters, learning_rate=0.002, *, beta1=0.9, beta2=0.999,
                 epsilon=1e-8, weight_decay=0.0, weight_decay_mask=None, maximize=False,
                 max_grad_norm=None, skip_nonfinite=False, arena=True):
        super().__init__(parameters, learning_rate, arena,
                         {"beta1": beta1, "beta2": beta2, "epsilon": epsilon},
                         {"maximize": maximize}, ("v", "exp_inf"),
                         max_grad_norm=max_grad_norm, skip_nonfinite=skip_nonfinite,
                         weight_decay=weight_decay, weight_decay_mask=weight_decay_mask)

    def _update(self, grads, t, lr, scale):
        h = self._h
        _impl.adamax(self._params, grads, self._state["v"], self._state["exp_inf"], t, lr,
                     h["beta1"], h["beta2"], h["epsilon"], self._wd_arg(), scale)


class NAdam(_AdamLike):
    """torch.optim.NAdam: moments as Adam; mu_t = beta1*(1 - 0.5*0.96**(t*momentum_decay)),
    mu_product = mu_1*...*mu_t (a scalar state, in double);
    d = sqrt(s/(1-beta2**t)) + epsilon;
    W -= learning_rate*(1-mu_t)/(1-mu_product) * g/d
         + learning_rate*mu_{t+1}/(1-mu_product*mu_{t+1}) * v/d.
    weight_decay is L2, or decoupled (as AdamW) with decoupled_weight_decay=True."""

    _hyper = dict(_AdamLike._hyper, momentum_decay=check.nonnegative)
    _flags = ("decoupled_weight_decay", "maximize")
    momentum_decay = _param("momentum_decay", "The momentum schedule's decay.")

    def __init__(self, parameters, learning_rate=0.002, *, beta1=0.9, beta2=0.999,
                 epsilon=1e-8, weight_decay=0.0, weight_decay_mask=None,
                 momentum_decay=0.004, decoupled_weight_decay=False, maximize=False,
                 max_grad_norm=None, skip_nonfinite=False, arena=True):
        super().__init__(parameters, learning_rate, arena,
                         {"beta1": beta1, "beta2": beta2, "epsilon": epsilon,
                          "momentum_decay": momentum_decay},
                         {"decoupled_weight_decay": decoupled_weight_decay,
                          "maximize": maximize}, ("v", "s"),
                         max_grad_norm=max_grad_norm, skip_nonfinite=skip_nonfinite,
                         weight_decay=weight_decay, weight_decay_mask=weight_decay_mask)
        self._mu_product = 1.0

    @property
    def mu_product(self):
        """The product of the momentum schedule mu_1 ... mu_t."""
        return self._mu_product

    def _update(self, grads, t, lr, scale):
        h = self._h
        self._mu_product = _impl.nadam(
            self._params, grads, self._state["v"], self._state["s"], t, self._mu_product, lr,
            h["beta1"], h["beta2"], h["epsilon"], h["momentum_decay"], self._wd_arg(),
            self._opts["decoupled_weight_decay"], scale)

    def _extra_state(self):
        return {"mu_product": self._mu_product}

    def _check_extra_state(self, values):
        check.fraction(values["mu_product"], "state_dict['mu_product']")

    def _load_extra_state(self, values):
        self._mu_product = float(values["mu_product"])


class RAdam(_AdamLike):
    """torch.optim.RAdam: moments as Adam; rho_inf = 2/(1-beta2) - 1,
    rho_t = rho_inf - 2t*beta2**t/(1-beta2**t). While rho_t <= 5,
    W -= learning_rate * v/(1-beta1**t) (no adaptive term); after,
    W -= learning_rate * r_t * v/(1-beta1**t) * sqrt(1-beta2**t)/(sqrt(s) + epsilon)
    with r_t torch's rectification; epsilon is added to the uncorrected root.
    weight_decay is L2, or decoupled with decoupled_weight_decay=True."""

    _flags = ("decoupled_weight_decay", "maximize")

    def __init__(self, parameters, learning_rate=0.001, *, beta1=0.9, beta2=0.999,
                 epsilon=1e-8, weight_decay=0.0, weight_decay_mask=None,
                 decoupled_weight_decay=False, maximize=False, max_grad_norm=None,
                 skip_nonfinite=False, arena=True):
        super().__init__(parameters, learning_rate, arena,
                         {"beta1": beta1, "beta2": beta2, "epsilon": epsilon},
                         {"decoupled_weight_decay": decoupled_weight_decay,
                          "maximize": maximize}, ("v", "s"),
                         max_grad_norm=max_grad_norm, skip_nonfinite=skip_nonfinite,
                         weight_decay=weight_decay, weight_decay_mask=weight_decay_mask)

    def _update(self, grads, t, lr, scale):
        h = self._h
        _impl.radam(self._params, grads, self._state["v"], self._state["s"], t, lr, h["beta1"],
                    h["beta2"], h["epsilon"], self._wd_arg(),
                    self._opts["decoupled_weight_decay"], scale)


class Lion(_Family):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"; optax.lion):
    W *= 1 - learning_rate*weight_decay (decoupled);
    W -= learning_rate * sign(beta1*v + (1-beta1)*dW);  v = beta2*v + (1-beta2)*dW.
    sign(0) = 0: an element whose interpolation is exactly zero does not move."""

    _hyper = {"beta1": check.beta, "beta2": check.beta}
    _flags = ("maximize",)
    _has_weight_decay = True
    beta1 = _param("beta1", "Interpolation for the update's sign, in [0, 1).")
    beta2 = _param("beta2", "Decay of the momentum v, in [0, 1).")

    def __init__(self, parameters, learning_rate=1e-4, *, beta1=0.9, beta2=0.99,
                 weight_decay=0.0, weight_decay_mask=None, maximize=False, max_grad_norm=None,
                 skip_nonfinite=False, arena=True):
        super().__init__(parameters, learning_rate, arena, {"beta1": beta1, "beta2": beta2},
                         {"maximize": maximize}, ("v",), max_grad_norm=max_grad_norm,
                         skip_nonfinite=skip_nonfinite, weight_decay=weight_decay,
                         weight_decay_mask=weight_decay_mask)

    def _update(self, grads, t, lr, scale):
        h = self._h
        _impl.lion(self._params, grads, self._state["v"], lr, h["beta1"], h["beta2"],
                   self._wd_arg(), scale)
