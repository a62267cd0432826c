"""The optimizer base: everything an optimizer class does not declare itself.

An optimizer is a declaration (see `Optimizer`): its rule (csrc/rules.h and its
NumPy twin in fastoptim._fallback), default learning rate, hyperparameters with
their checks, boolean options, weight-decay style and any renamed state. From
it follow the constructor and its signature, validation, the state arrays and
their arena, the attributes, state_dict/load_state_dict (so checkpoints), the
step (compiled: _core.Stepper; NumPy: _fallback.Stepper and `_step_numpy`
here), pickling, the docstring's parameter list and the benchmarks' byte counts.
"""
import inspect
import math
import numbers
import textwrap
import warnings
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .. import _backend
from .. import _validate as check
from .. import schedules as _schedules

_fallback = _backend.fallback
_ALIGN = 64  # bytes: every array of an arena starts on a cache line
# The buffers of one dtype start at different offsets within a 4 KiB page: when
# p[i], m[i] and v[i] share their address bits below 4 KiB the CPU mistakes the
# stores of one stream for the loads of another (4K aliasing): the MLP step ran
# 5-9% slower with all buffers at the same page offset.
_PAGE = 4096
_STAGGER = 640
_CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s
MIN_8BIT_SIZE = 4096  # bitsandbytes' min_8bit_size: smaller arrays keep float32 state
_UNSET = object()
# Arena buffers of live optimizers: id(buffer) -> optimizer (see _claim).
_ARENAS = weakref.WeakValueDictionary()


class Hyperparameter:
    """A real-valued setting: its default, its check (a function of (value,
    name) in fastoptim._validate) and its documentation (one line: what it is,
    its range and units). `state`: set when the value is the initial value of
    that state (a constructor argument only, not restored by load_state_dict).
    A default of None makes it optional: None is then a value (its check takes
    it), left out of state dicts, and a state dict without it restores None."""

    def __init__(self, default, check, doc, state=None):
        self.default = default
        self.check = check
        self.doc = doc
        self.state = state
        self.optional = default is None


class Argument:
    """A constructor-only setting that is not a number or a flag (e.g. Muon's
    key predicate): its default, its documentation and its type in the stubs.
    The class resolves it (`_resolve_arguments`) to a value that, given back to
    the constructor, builds the same object (pickling passes it so)."""

    def __init__(self, default, doc, kind, stub):
        self.default = default
        self.doc = doc
        self.kind = kind    # the docstring's type
        self.stub = stub    # the type stub's


class Option:
    """A boolean setting, off unless `default` is True. `structural`: it decides
    which state arrays exist, so a state dict must match it. A state dict holds
    an option when it is on, or off against its default; absent, it is the
    default."""

    def __init__(self, doc, structural=False, default=False):
        self.doc = doc
        self.structural = structural
        self.default = default


@dataclass(frozen=True)
class Declaration:
    """What an optimizer class declares; everything else follows from it.

    rule: the name of its rule in csrc/rules.h (and fastoptim._fallback.RULES).
    learning_rate: the default learning rate.
    hyperparameters: name -> Hyperparameter; the rule's hyperparameters by
        name unless the class overrides `_rule_hyperparameters`.
    options: name -> Option; an option named like one of the rule's flags sets
        it; "maximize" negates the gradient; "decoupled_weight_decay" turns L2
        decay into decoupled decay.
    weight_decay: "l2", "decoupled", "update" (the rule adds weight_decay * W
        to its update direction) or None (no weight decay); its default.
    state_names: the rule's state slot name -> the public name.
    fixed_flags: rule flags that are always on.
    states: the class's own state arrays beyond the rule's slots (kept by its
        NumPy phase, or given to the kernel as a factored state), laid out
        per key by `_state_shapes`.
    state_from_parameters: states that start as a copy of the parameters.
    scalar_defaults: the rule's scalar state's initial values (default 1.0).
    arguments: name -> Argument, constructor-only settings of other kinds.
    """

    rule: str
    learning_rate: float = 0.01
    hyperparameters: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    weight_decay: str = None
    weight_decay_default: float = 0.0
    state_names: dict = field(default_factory=dict)
    fixed_flags: tuple = ()
    states: tuple = ()
    state_from_parameters: tuple = ()
    scalar_defaults: dict = field(default_factory=dict)
    arguments: dict = field(default_factory=dict)


MAXIMIZE = Option("Ascend instead of descend: the gradient is negated before the "
                  "weight decay is added, as torch does.")


class Optimizer(_backend.Stepper):
    """Base class of the optimizer objects; a subclass is a declaration.

    A subclass sets `declaration` (a Declaration): its rule, defaults,
    hyperparameters, options and weight-decay style; it overrides
    `_rule_hyperparameters` when its hyperparameters are not the rule's by
    name, and `_check_settings` for cross-checks between settings.

    A class whose step is more than its rule overrides some of: `_phase`
    (NumPy work of each step between the gradients' norm and the rule's
    update, in both backends), `_rule_takes` (the keys the rule updates; the
    phase updates the others), `_state_shapes` (which states a key has, of
    which shape), `_factors_of` (a key's factored state for the kernel),
    `_resolve_arguments`, and `_state_extras`/`_check_state_extras` (state
    dict entries of its own).
    """

    declaration = None
    _phase = None  # or a method (grads, scale, t, lr): see _phase_step

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        d = cls.declaration
        cls._rule = _fallback.RULES[d.rule]
        for name, h in d.hyperparameters.items():
            if h.state is None and name not in cls.__dict__:
                setattr(cls, name, _hyperparameter_property(name, h))
        for name, o in d.options.items():
            if name not in cls.__dict__:
                setattr(cls, name, _option_property(name, o))
        for j, name in enumerate(cls._rule.scalars):
            if name not in cls.__dict__:
                setattr(cls, name, property(lambda self, j=j: self._scalars[j],
                                            doc=f"The scalar state {name} (read-only)."))
        cls.__signature__ = _signature(cls)
        if cls.__doc__:
            cls.__doc__ = inspect.cleandoc(cls.__doc__).replace("{parameters}",
                                                                _parameters_doc(cls))

    def __init__(self, parameters, learning_rate=_UNSET, **settings):
        try:
            bound = self.__signature__.bind(parameters, learning_rate, **settings)
        except TypeError as exc:
            raise TypeError(f"{type(self).__name__}(): {exc}") from None
        bound.apply_defaults()
        args = bound.arguments
        if learning_rate is _UNSET:
            args["learning_rate"] = self.declaration.learning_rate
        arena = check.flag(args["arena"], "arena")

        # Everything is checked before the parameters move.
        self._schedule = None
        self._lr = 0.0
        self.learning_rate = args["learning_rate"]
        self._h = {}
        init = {}
        for name, h in self.declaration.hyperparameters.items():
            value = h.check(args[name], name)
            if h.state is None:
                self._h[name] = value
            else:
                init[h.state] = value
        self._opts = {name: check.flag(args[name], name) for name in self.declaration.options}
        self._max_norm = _max_grad_norm(args["max_grad_norm"])
        self._skip = check.flag(args["skip_nonfinite"], "skip_nonfinite")
        self._ema_decay = _ema_decay(args["ema_decay"])
        self._ema_warmup = check.flag(args["ema_warmup"], "ema_warmup")
        self._accumulate = check.integer(args["gradient_accumulation_steps"],
                                         "gradient_accumulation_steps", minimum=1)
        self._state_bits = _state_bits(args["state_bits"])
        self._min_8bit = check.integer(args["min_8bit_size"], "min_8bit_size", minimum=0)
        self._kahan = check.flag(args["kahan_summation"], "kahan_summation")
        self._sr = check.flag(args["stochastic_rounding"], "stochastic_rounding")
        if self._kahan and self._sr:
            raise ValueError("kahan_summation and stochastic_rounding are two ways to write "
                             "16-bit parameters back; choose one")
        self._seed = _seed(args["seed"], "seed")
        arrays = _check_parameters(parameters)
        self._arguments = {name: args[name] for name in self.declaration.arguments}
        self._resolve_arguments(arrays)
        self._check_storage(arrays)
        self._keys = [k for k, _ in arrays]
        self._mask = None
        self._wd = {k: 0.0 for k in self._keys}
        if self.declaration.weight_decay is not None:
            self._mask = _per_key(self._keys, args["weight_decay_mask"], "weight_decay_mask",
                                  check.flag) if args["weight_decay_mask"] is not None else None
            self._wd = self._resolve_decay(args["weight_decay"])
        self._check_settings()

        self._t = 0
        self.last_grad_norm = None
        self._superseded = None
        self._blocked = None
        self._arena = arena
        self._scalars = tuple(float(self.declaration.scalar_defaults.get(name, 1.0))
                              for name in self._rule.scalars)
        flags = self._rule_flags(construction=True)
        # the rule's state slots this object keeps (by its flags now)
        self._slots = tuple(not need or bool(flags & need) for need in self._rule.state_flags)
        names = tuple(self.declaration.state_names.get(s, s) for s in self._rule.states)
        kept = tuple(n for n, keep in zip(names, self._slots) if keep)
        own = kept + self.declaration.states
        extra = (("ema",) if self._ema_decay is not None else ()) + \
            (("grad_sum",) if self._accumulate > 1 else ())
        # the keys the rule updates (the phase updates the others)
        self._takes = [bool(self._rule_takes(k, p)) for k, p in arrays]
        shapes = {name: {} for name in own + extra}
        for k, p in arrays:
            for name, shape in self._state_shapes(k, p, own).items():
                shapes[name][k] = shape
            for name in extra:
                shapes[name][k] = p.shape
        if arena:
            self._claim(arrays)
        layout = _Layout(kept, self.declaration.states, extra, shapes, self._state_bits,
                         self._min_8bit, self._kahan, self.declaration.state_from_parameters)
        self._params, self._state, self._buffers = _build(arrays, layout, arena)
        # per key, how its streams are stored (None: all in the parameter's dtype)
        unsigned = dict(zip(names, self._rule.unsigned))
        self._storage = {k: layout.storage(self._params[k], [n if keep else None for n, keep in
                                                              zip(names, self._slots)],
                                           unsigned, self._state, "d" + k, i)
                         for i, k in enumerate(self._keys)}
        for slot, value in init.items():
            name = self.declaration.state_names.get(slot, slot)
            for k in self._keys:
                if "d" + k in self._state[name]:
                    _fill_state(self._storage[k], names.index(name),
                                self._state[name]["d" + k], value)
        for name in self.declaration.state_from_parameters:
            for k in self._keys:
                if "d" + k in self._state[name]:
                    _fill_state(self._storage[k], names.index(name) if name in names else -1,
                                self._state[name]["d" + k], _fallback.widen_any(self._params[k]))
        if "ema" in self._state:  # the moving average starts at the parameters too
            for k in self._keys:
                self._state["ema"]["d" + k][...] = _fallback.widen_any(self._params[k])
        self._accumulated = 0  # gradients summed so far in this cycle
        self._groups = _groups(self._params)
        # what a step writes (the gradient sum is the accumulation's, read by the step)
        self._written = _written_spans(self._params, {n: d for n, d in self._state.items()
                                                      if n != "grad_sum"})
        self._written_roots = {id(_root(a)) for a in self._written[2]}
        # per key: p, the rule's state slots (padded to the C slots), the EMA, the
        # Kahan compensation, the slots' block maxima
        pad = (None,) * (_fallback.MAX_STATES - len(names))
        self._rows = []
        for k in self._keys:
            st = self._storage[k]
            self._rows.append([self._params[k]]
                              + [self._state[n].get("d" + k) if keep else None
                                 for n, keep in zip(names, self._slots)] + list(pad)
                              + [self._state["ema"]["d" + k] if "ema" in self._state else None]
                              + ([None] * (1 + _fallback.MAX_STATES) if st is None
                                 else [st.kahan, *st.absmax]))
        rows = self._rows
        # a key's factored state for the kernel: (row, col, per) shaped to broadcast
        self._factors = [self._factors_of(k, self._params[k]) for k in self._keys]
        self._bind_all()
        # the NumPy step's arrays, by dtype group: (index, key, p, state slots,
        # ema, () or (factors,))
        self._arrays_by_group = {
            group[0]: [(i, self._keys[i], np.asarray(rows[i][0]),
                        [None if a is None else np.asarray(a) for a in rows[i][1:1 + len(names)]],
                        rows[i][1 + _fallback.MAX_STATES],
                        () if self._factors[i] is None else (self._factors[i],))
                       for i in group]
            for group in self._groups}
        if self._accumulate > 1:  # every call goes through the accumulation first
            self.step = self._accumulating_step
        self._configure_step()
        if arena:
            parameters.update(self._params)
            for buffer in self._buffers:
                _ARENAS[id(buffer)] = self

    def _bind_all(self):
        """Hand the compiled step its arrays (the NumPy step keeps its own): every
        key's row, which keys the rule takes, the phase, the factored state."""
        takes = None if all(self._takes) else list(self._takes)
        bound = self._bind(self.declaration.rule, list(self._keys), self._rows,
                           self._rule.unsigned, takes, self._phase is not None)
        if bound and any(f is not None for f in self._factors):
            views = [None if f is None else _factor_views(self._params[k], *f)
                     for k, f in zip(self._keys, self._factors)]
            if any(v is None and f is not None for v, f in zip(views, self._factors)) \
                    or not self._bind_factors(views):
                bound = False
                self._unbind()  # a layout the kernel does not take: every step in NumPy
        # every step in NumPy because of the arrays (not _block, not a test's _unbind)
        self._refused = not bound

    def _block(self, message):
        """Refuse to step (RuntimeError(message)) until _unblock(); nothing else changes."""
        self._blocked = message
        self._unbind()

    def _unblock(self):
        self._blocked = None
        if self._superseded is None:
            self._bind_all()
            self._configure_step()

    def _check_storage(self, arrays):
        """Refuse, before anything changes, the storage settings of a class
        whose step is not elementwise (the C driver stages 16-bit and 8-bit
        streams for elementwise rules only; _storage_refusal says why)."""
        why = self._storage_refusal()
        if why is not None:
            refuse_storage(type(self).__name__, why, self._state_bits,
                           {"kahan_summation": self._kahan, "stochastic_rounding": self._sr},
                           arrays)

    def _storage_refusal(self):
        """None when the class takes 16-bit parameters and bfloat16 or 8-bit
        state, else why not."""
        if self._rule.reduce is not None:
            return "its rule reduces over whole arrays"
        if self._phase is not None:
            return "its step has a NumPy phase"
        if self.declaration.states or type(self)._factors_of is not Optimizer._factors_of:
            return "its state is factored"
        return None

    # --- what a class whose step is more than its rule overrides ------------------------

    def _resolve_arguments(self, arrays):
        """Check self._arguments (the constructor's Arguments) against the
        parameters, a list of (key, array), and resolve them in place."""

    def _rule_takes(self, key, p):
        """Does the rule update parameters[key]? (else the phase does)"""
        return True

    def _state_shapes(self, key, p, names):
        """{state name: shape} of the states key has, of `names` (the rule's
        slots this object keeps, then the declaration's own states): by
        default every one, of the parameter's shape."""
        return {name: p.shape for name in names}

    def _factors_of(self, key, p):
        """None, or key's factored state as (row, col, per): arrays of the
        parameter's dtype that broadcast against it, whose row*col/per is the
        rule's estimate (fo_factors); the last two dimensions are factored."""
        return None

    def _phase_step(self, grads, scale, t, lr):
        """The class's NumPy phase of a step (_phase), given the gradients in key
        order (their dtype and shape checked), the scale the update reads them
        with (clipping, maximize: negative), the step number and the learning
        rate; then the moving average of the keys the rule does not take."""
        self._phase(grads, scale, t, lr)
        if self._ema_decay is not None and not all(self._takes):
            d = _fallback.ema_decay(self._ema_decay, self._ema_warmup, t)
            for k, takes in zip(self._keys, self._takes):
                if not takes:
                    _fallback.ema_update(self._state["ema"]["d" + k], self._params[k], d)

    def _state_extras(self):
        """State dict entries of the class's own."""
        return {}

    def _check_state_extras(self, sd):
        """Take (pop) and check the class's own entries of the state dict `sd`;
        return a function that applies them."""
        return lambda: None

    # --- settings ---------------------------------------------------------------------

    def _check_settings(self):
        """Cross-checks of a subclass, run before anything moves."""

    def _rule_hyperparameters(self):
        """The rule's hyperparameters (csrc/rules.h order) from this object's."""
        return tuple(self._h[name] for name in self._rule.hyper)

    def _rule_flags(self, construction=False):
        """The rule's flags: a fixed flag, an option that is on, or a
        hyperparameter that is non-zero; a flag whose state slot this object
        does not keep stays off."""
        f = 0
        for bit, name in enumerate(self._rule.flags):
            on = (name in self.declaration.fixed_flags or self._opts.get(name, False)
                  or self._h.get(name, 0.0) != 0.0)
            f |= int(bool(on)) << bit
        if not construction:
            for keep, need in zip(self._slots, self._rule.state_flags):
                if need and not keep:
                    f &= ~need
        return f

    def _decay_style(self):
        style = self.declaration.weight_decay
        if self._opts.get("decoupled_weight_decay"):
            style = "decoupled"
        return {"l2": _fallback.DECAY_L2, "decoupled": _fallback.DECAY_DECOUPLED,
                "update": _fallback.DECAY_UPDATE}.get(style, 0)

    def _rounding(self):
        return (_fallback.ROUND_KAHAN if self._kahan else
                _fallback.ROUND_STOCHASTIC if self._sr else _fallback.ROUND_NEAREST)

    def _configure_step(self):
        """After a setting changes: hand the step its settings."""
        for st in self._storage.values():
            if st is not None:
                st.rounding, st.seed = self._rounding(), self._seed
        self._configure(self._rule_hyperparameters(), self._rule_flags(), self._decay_style(),
                        [self._wd[k] for k in self._keys], self._max_norm, self._skip,
                        self._opts.get("maximize", False),
                        self._ema_decay if self._ema_decay is not None else 0.0,
                        self._ema_warmup, self._rounding(), self._seed)

    def _resolve_decay(self, value):
        wd = _per_key(self._keys, value, "weight_decay", check.nonnegative)
        if self._mask is not None:
            wd = {k: (x if self._mask[k] else 0.0) for k, x in wd.items()}
        return wd

    # --- the step (step() itself: the backend's Stepper) ----------------------------------

    def _scheduled_lr(self, t):
        value = self._schedule(t)
        try:
            return check.learning_rate(value)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"the learning-rate schedule at step {t}: {exc}") from None

    def _step_numpy(self, grads, t, lr, compiled=False):
        """The step in NumPy (the NumPy backend's, and, `compiled`, the
        compiled backend's for what its C path does not take): checks the
        gradients only (the parameters and state are this object's own), then
        (compiled) a PerformanceWarning that says why, unless the optimizer was
        unbound on purpose (_block, a test's _unbind), then the same norm,
        skip, scale and update as the compiled step."""
        if self._superseded is not None:
            raise RuntimeError(self._superseded)
        if self._blocked is not None:
            raise RuntimeError(self._blocked)
        gs = self._checked_grads(grads)
        if compiled and (self._compiled or self._refused or t > check.COMPILED_MAX_T):
            check.warn_numpy_step(f"{type(self).__name__}.step()", self._numpy_reason(grads, t))
        scale = 1.0
        if self._max_norm is not None or self._skip:
            norm, finite = _fallback.norm([[gs[i] for i in group] for group in self._groups])
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
        if self._phase is not None:
            self._phase_step(gs, scale, t, lr)
        hyper, flags, decay = self._rule_hyperparameters(), self._rule_flags(), self._decay_style()
        scalars = self._scalars
        ema = None
        if self._ema_decay is not None:
            ema = _fallback.ema_decay(self._ema_decay, self._ema_warmup, t)
        for group in self._groups:
            entries = [e for e in self._arrays_by_group[group[0]] if self._takes[e[0]]]
            rows = [(p, gs[i], s, self._wd[k], self._storage[k], *f)
                    for i, k, p, s, _, f in entries]
            new = _fallback.apply(self._rule, rows, t, lr, hyper, flags, decay, scale, scalars)
            if ema is not None:
                for _, _, p, _, e, _ in entries:
                    _fallback.ema_update(e, _fallback.widen_any(p), ema)
        if self._groups:
            self._scalars = new
        self._t = t
        return True

    def _numpy_reason(self, grads, t):
        if t > check.COMPILED_MAX_T:
            return "the step count is past 2**62"
        if type(grads) is not dict:
            return f"grads is of type {type(grads).__name__}, not dict"
        labels = {id(a): f"parameters[{k!r}]" for k, a in self._params.items()}
        labels.update((id(a), f"the state {name}[{k!r}]")
                      for name, d in self._state.items() for k, a in d.items())
        starts, ends, arrays = self._written
        return (check.numpy_step_reason(
            [(f"parameters[{k!r}]", self._params[k], [(f"grads['d{k}']", grads["d" + k], None)])
             for k in self._keys],
            written=(starts, ends, [labels[id(a)] for a in arrays]))
            or (None if self._compiled else "its arrays are laid out in a way the C kernel "
                "does not take"))

    def _checked_grads(self, grads):
        """The gradients in key order, each a plain array of its parameter's
        dtype (a copy when it shares memory with an array the step writes)."""
        check.check_dict("grads", grads)
        out = []
        for k in self._keys:
            p = self._params[k]
            dkey = "d" + k
            g = check._lookup("grads", grads, dkey, k)
            label = f"grads[{dkey!r}]"
            check.parameter(label, g)
            check._same_shape(label, g, f"parameters[{k!r}]", p)
            # an array that owns its memory shares it only with views of itself
            if g.size and (g.base is not None or id(g) in self._written_roots) \
                    and self._overlaps_written(g):
                g = g.copy()
            out.append(check.gradient_as(np.asarray(g), p))
        return out

    def _overlaps_written(self, g):
        return any(check._shares_memory(g, self._written[2][j])
                   for j in check.ranges_meeting(self._written, *check.byte_bounds(g)))

    def _claim(self, arrays):
        """A parameter that lives in another optimizer's arena (a second
        optimizer built on the same dict, e.g. a notebook cell run again): warn,
        and make the other one refuse to step, since its steps would no longer
        reach the dict."""
        owners = {}
        for key, p in arrays:
            owner = _ARENAS.get(id(_root(p)))
            if owner is not None and owner is not self:
                owners.setdefault(id(owner), (owner, key))
        for owner, key in owners.values():
            name = type(owner).__name__
            owner._superseded = (
                f"this {name}'s parameters were taken over by a {type(self).__name__} built "
                f"on the same dict; its steps would no longer reach that dict")
            owner._unbind()  # its compiled step goes: step() takes _step_numpy, which raises
            warnings.warn(
                f"parameters[{key!r}] lives in the arena of a {name} optimizer; the new "
                f"{type(self).__name__} takes the parameters over and the {name} refuses to "
                f"step from now on (build one optimizer per dict, or pass arena=False)",
                RuntimeWarning, stacklevel=4)

    def _accumulating_step(self, grads):
        """step() with gradient_accumulation_steps = k > 1: the gradients of k
        calls are summed in call order (in the parameters' dtype) and scaled by
        1/k; every k-th call steps with them and returns what that step returns,
        the others return False. A call that raises changes nothing."""
        for refusal in (self._superseded, self._blocked):
            if refusal is not None:
                raise RuntimeError(refusal)
        gs = self._checked_grads(grads)
        acc = self._state["grad_sum"]
        with np.errstate(all="ignore"):
            for k, g in zip(self._keys, gs):
                a = acc["d" + k]
                g = _fallback.widen_any(g)  # 16-bit parameters accumulate in float32
                if self._accumulated == 0:
                    np.copyto(a, g)
                else:
                    np.add(a, g, out=a)
        self._accumulated += 1
        if self._accumulated < self._accumulate:
            return False
        self._accumulated = 0
        scale = 1.0 / self._accumulate
        with np.errstate(all="ignore"):
            for a in acc.values():
                np.multiply(a, scale, out=a)
        return type(self).step(self, acc)

    # --- attributes -----------------------------------------------------------------------

    @property
    def ema(self):
        """The parameters' exponential moving average by key (the optimizer's own
        arrays; a new dict), or None without ema_decay. Updated by every step
        inside the same pass: ema = d*ema + (1-d)*W, d = ema_decay (with
        ema_warmup: min(ema_decay, (1 + t)/(10 + t)))."""
        if "ema" not in self._state:
            return None
        return {k: self._state["ema"]["d" + k] for k in self._keys}

    @property
    def gradient_accumulation_steps(self):
        """Calls whose gradients are summed (and scaled by 1/k) into one step."""
        return self._accumulate

    @property
    def state_bits(self):
        """32, 16 (bfloat16) or 8 (block-wise 8-bit): how state is stored."""
        return self._state_bits

    @property
    def min_8bit_size(self):
        """With state_bits=8, smaller parameters keep float32 state."""
        return self._min_8bit

    @property
    def kahan_summation(self):
        """16-bit parameters keep a Kahan compensation (state kahan_comp)."""
        return self._kahan

    @property
    def stochastic_rounding(self):
        """16-bit parameters are rounded stochastically (keyed on seed)."""
        return self._sr

    @property
    def seed(self):
        """The stochastic rounding's seed. May be changed between steps."""
        return self._seed

    @seed.setter
    def seed(self, value):
        self._seed = _seed(value, "seed")
        self._configure_step()

    @property
    def t(self):
        """Steps taken (the next step's bias corrections use t + 1)."""
        return self._t

    @property
    def learning_rate(self):
        """A float, or a schedule: a callable given the step count `t` before
        each step (see fastoptim.schedules). May be changed between steps."""
        return self._lr if self._schedule is None else self._schedule

    @learning_rate.setter
    def learning_rate(self, value):
        if callable(value) and not isinstance(value, (numbers.Real, np.ndarray)):
            self._schedule = value
        else:
            self._lr = check.learning_rate(value)
            self._schedule = None

    @property
    def arena(self):
        """True when the parameters were moved into the optimizer's buffers."""
        return self._arena

    @property
    def parameters(self):
        """The arrays the optimizer updates, by key (a new dict of the same arrays)."""
        return dict(self._params)

    @property
    def state(self):
        """The state dicts by name (e.g. {"v": {...}, "s": {...}}), keyed
        "d" + key like the dict API's (new dicts of the same arrays)."""
        return {name: dict(d) for name, d in self._state.items()}

    @property
    def options(self):
        """The boolean options by name (e.g. {"amsgrad": False, "maximize": True})."""
        return dict(self._opts)

    @property
    def max_grad_norm(self):
        """Clip the gradients' global norm to this (None: no clipping). May be
        changed between steps."""
        return self._max_norm

    @max_grad_norm.setter
    def max_grad_norm(self, value):
        self._max_norm = _max_grad_norm(value)
        self._configure_step()

    @property
    def skip_nonfinite(self):
        """Skip a step whose gradients hold an Inf or NaN (step() returns False).
        May be changed between steps."""
        return self._skip

    @skip_nonfinite.setter
    def skip_nonfinite(self, value):
        self._skip = check.flag(value, "skip_nonfinite")
        self._configure_step()

    @property
    def weight_decay(self):
        """One float when every key has the same decay, else a dict by key. Set
        a float, a dict of every key or a callable key -> float (the mask still
        applies). May be changed between steps."""
        if self.declaration.weight_decay is None:
            raise AttributeError(f"{type(self).__name__} has no weight decay")
        values = set(self._wd.values())
        return values.pop() if len(values) == 1 else dict(self._wd)

    @weight_decay.setter
    def weight_decay(self, value):
        if self.declaration.weight_decay is None:
            raise AttributeError(f"{type(self).__name__} has no weight decay")
        self._wd = self._resolve_decay(value)
        self._configure_step()

    def __repr__(self):
        hyper = "".join(f", {k}={v!r}" for k, v in self._h.items())
        opts = "".join(f", {k}=True" for k, v in self._opts.items() if v)
        return (f"{type(self).__name__}(learning_rate={self.learning_rate!r}{hyper}{opts}, "
                f"t={self._t}, arena={self._arena}, arrays={len(self._params)})")

    # --- state_dict -----------------------------------------------------------------

    def state_dict(self, copy=True):
        """The optimizer's state as a flat dict that np.savez can store.

        Parameters
        ----------
        copy : bool, default True
            Copies of the state arrays; False gives the optimizer's own arrays
            (for writing them out without a copy; do not modify them).

        Returns
        -------
        dict
            "optimizer" (the class name), "t", the learning rate (a float, or
            one of fastoptim.schedules' schedules as "learning_rate/..."
            entries; another callable is not stored), every hyperparameter,
            the options that are on, the weight decay when any is non-zero
            ("weight_decay", or "weight_decay/<key>" when keys differ), the
            rule's scalar state (e.g. NAdam's "mu_product"), the storage
            settings that are not the defaults ("state_bits",
            "min_8bit_size", "kahan_summation", "stochastic_rounding" and
            "seed"), and copies of the state arrays as "<state>/d<key>"
            (e.g. "v/dW1", "s/dW1"; with 8-bit state also "v_absmax/dW1",
            the block maxima).
        """
        return self._state_items(check.flag(copy, "copy"))

    def _state_items(self, copy):
        items = {"optimizer": type(self).__name__, "t": self._t}
        if self._schedule is None:
            items["learning_rate"] = self._lr
        else:
            schedule = _schedules.to_state(self._schedule)
            if schedule is not None:
                items.update({"learning_rate/" + k: v for k, v in schedule.items()})
        items.update({k: v for k, v in self._h.items() if v is not None})
        items.update({name: on for name, on in self._opts.items()
                      if on or self.declaration.options[name].default})
        if any(self._wd.values()):
            wd = self.weight_decay
            if isinstance(wd, dict):
                items.update({f"weight_decay/{k}": x for k, x in wd.items()})
            else:
                items["weight_decay"] = wd
        items.update(zip(self._rule.scalars, self._scalars))
        if self._accumulate > 1:
            items["accumulated"] = self._accumulated
        if self._state_bits != 32:
            items["state_bits"] = self._state_bits
        if self._state_bits == 8:
            items["min_8bit_size"] = self._min_8bit
        if self._kahan:
            items["kahan_summation"] = True
        if self._sr:
            items["stochastic_rounding"] = True
            items["seed"] = self._seed
        items.update(self._state_extras())
        for name, d in self._state.items():
            for dkey, a in d.items():
                items[f"{name}/{dkey}"] = a.copy() if copy else a
        return items

    def load_state_dict(self, state_dict):
        """Restore what state_dict() returned (or np.load of it).

        Parameters
        ----------
        state_dict : mapping
            As state_dict() returns it: t, the hyperparameters, the options,
            the weight decay, the scalar state, the learning rate (optional:
            kept when absent) and the state arrays, whose keys, shapes and
            dtypes must match this optimizer's exactly.

        Raises
        ------
        KeyError
            A missing or unexpected entry (named).
        TypeError, ValueError
            An entry of the wrong type, shape, dtype or value (named), a
            state dict of another optimizer class, or a structural option
            (e.g. amsgrad) that differs. Everything is checked before anything
            changes: on any error the optimizer is left as it was.
        """
        self.check_state_dict(state_dict)()

    def check_state_dict(self, state_dict):
        """Check `state_dict` entirely, changing nothing.

        Parameters
        ----------
        state_dict : mapping
            As for load_state_dict; an open np.load of a .npz is read entry by
            entry, each within the size its destination needs.

        Returns
        -------
        callable
            A function of no arguments that applies it (load_state_dict calls
            it at once; save and load of checkpoints check the parameters too
            before applying anything).

        Raises
        ------
        KeyError, TypeError, ValueError
            As load_state_dict.
        """
        if isinstance(state_dict, np.lib.npyio.NpzFile):
            from ..checkpoint import read_state_dict

            state_dict = read_state_dict(state_dict, self)
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        sd = {}
        for key in state_dict:
            if not isinstance(key, str):
                raise TypeError(f"state_dict keys must be str, got {key!r}")
            sd[key] = state_dict[key]
        name = type(self).__name__

        def take(key):
            try:
                return _scalar(sd.pop(key))
            except KeyError:
                raise KeyError(f"state_dict has no key {key!r} (needed by {name})") from None

        owner = take("optimizer")
        if not isinstance(owner, str):
            raise TypeError(f"state_dict['optimizer'] must be a str (the class name), got "
                            f"{type(owner).__name__}")
        if owner != name:
            raise ValueError(f"state_dict is for {owner!r}, not {name!r}")
        t = take("t")
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, numbers.Integral):
            raise TypeError(f"state_dict['t'] must be an integer, got {type(t).__name__}")
        t = int(t)
        if t < 0:
            raise ValueError(f"state_dict['t'] must be >= 0, got {t}")
        hyper = {k: h.check(take(k) if k in sd or not h.optional else None, k)
                 for k, h in self.declaration.hyperparameters.items() if h.state is None}
        opts = {}
        for opt, o in self.declaration.options.items():  # absent: the default
            value = check.flag(take(opt), f"state_dict[{opt!r}]") if opt in sd else o.default
            if o.structural and value != self._opts[opt]:
                raise ValueError(f"state_dict has {opt}={value} but this {name} has "
                                 f"{opt}={self._opts[opt]}")
            opts[opt] = value
        wd = None
        if self.declaration.weight_decay is not None:  # absent: none
            if "weight_decay" in sd:
                wd = take("weight_decay")
            elif any(f"weight_decay/{k}" in sd for k in self._keys):
                wd = {k: take(f"weight_decay/{k}") for k in self._keys}
            else:
                wd = 0.0
            wd = _per_key(self._keys, wd, "state_dict weight_decay", check.nonnegative)
        scalars = tuple(_fallback._KINDS[kind](take(s), f"state_dict[{s!r}]")
                        for s, kind in zip(self._rule.scalars, self._rule.scalar_kinds))
        accumulated = 0
        if self._accumulate > 1:
            accumulated = check.integer(take("accumulated"), "state_dict['accumulated']",
                                        minimum=0)
            if accumulated >= self._accumulate:
                raise ValueError(f"state_dict['accumulated'] is {accumulated}; this {name} "
                                 f"accumulates {self._accumulate} steps")

        storage = {"state_bits": 32, "min_8bit_size": MIN_8BIT_SIZE,
                   "kahan_summation": False, "stochastic_rounding": False}
        for entry, default in storage.items():
            if entry not in sd:
                continue
            value = take(entry)
            label = f"state_dict[{entry!r}]"
            storage[entry] = (check.flag(value, label) if isinstance(default, bool)
                              else check.integer(value, label, minimum=0))
        mine = {"state_bits": self._state_bits, "min_8bit_size": self._min_8bit,
                "kahan_summation": self._kahan, "stochastic_rounding": self._sr}
        if self._state_bits != 8 and storage["state_bits"] != 8:
            storage["min_8bit_size"] = self._min_8bit  # without 8-bit state it does not matter
        for entry, value in storage.items():
            if value != mine[entry]:
                raise ValueError(f"state_dict has {entry}={value} but this {name} has "
                                 f"{entry}={mine[entry]}")
        seed = _seed(take("seed"), "state_dict['seed']") if "seed" in sd else self._seed

        lr = keep = object()
        if "learning_rate" in sd:
            lr = check.learning_rate(take("learning_rate"))
        elif "learning_rate/schedule" in sd:
            prefix = "learning_rate/"
            entries = {k[len(prefix):]: sd.pop(k) for k in list(sd) if k.startswith(prefix)}
            try:
                lr = _schedules.from_state(entries)
            except (KeyError, TypeError, ValueError) as exc:
                message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
                raise type(exc)(f"state_dict['learning_rate/schedule']: {message}") from None

        copies = []
        for state_name, d in self._state.items():
            for dkey, dest in d.items():
                key = f"{state_name}/{dkey}"
                if key not in sd:
                    raise KeyError(f"state_dict has no key {key!r} (needed by {name})")
                src = sd.pop(key)
                if not isinstance(src, np.ndarray):
                    raise TypeError(f"state_dict[{key!r}] must be a numpy.ndarray, "
                                    f"got {type(src).__name__}")
                if src.shape != dest.shape:
                    raise ValueError(f"state_dict[{key!r}] has shape {src.shape} but the "
                                     f"optimizer's {key} has shape {dest.shape}")
                if src.dtype != dest.dtype:
                    raise TypeError(f"state_dict[{key!r}] has dtype {src.dtype} but the "
                                    f"optimizer's {key} has dtype {dest.dtype}")
                if id(_root(src)) in self._written_roots:  # one of our own arrays
                    src = src.copy()
                copies.append((dest, src))
        apply_extras = self._check_state_extras(sd)
        if sd:
            raise KeyError(f"state_dict has unexpected keys for {name}: "
                           f"{', '.join(repr(k) for k in sorted(sd))}")
        self._check_settings_with(hyper, opts)

        def apply():
            for dest, src in copies:
                np.copyto(dest, src)
            self._t = t
            self._h.update(hyper)
            self._opts.update(opts)
            if wd is not None:
                self._wd = wd
            self._scalars = scalars
            self._accumulated = accumulated
            self._seed = seed
            if lr is not keep:
                self.learning_rate = lr
            self._configure_step()
            apply_extras()

        return apply

    def _check_settings_with(self, hyper, opts):
        """_check_settings on the settings a state dict would restore."""
        saved = self._h, self._opts
        self._h, self._opts = dict(self._h, **hyper), dict(self._opts, **opts)
        try:
            self._check_settings()
            for name, h in hyper.items():
                _check_slot(self, name, h)
        finally:
            self._h, self._opts = saved

    # --- pickle and copy --------------------------------------------------------------------

    def __reduce__(self):
        """Pickle and copy.deepcopy through the state: the copy updates the
        copied parameter arrays in place (arena=False), so arrays shared with
        other pickled objects (an estimator's coefficients) stay shared."""
        settings = dict(self._h)
        settings.update(self._opts)
        if self.declaration.weight_decay is not None:
            settings["weight_decay"] = dict(self._wd)
        settings.update(learning_rate=self.learning_rate, max_grad_norm=self._max_norm,
                        skip_nonfinite=self._skip, ema_decay=self._ema_decay,
                        ema_warmup=self._ema_warmup,
                        gradient_accumulation_steps=self._accumulate,
                        state_bits=self._state_bits, min_8bit_size=self._min_8bit,
                        kahan_summation=self._kahan, stochastic_rounding=self._sr,
                        seed=self._seed)
        settings.update(self._arguments)
        return (_restore, (type(self), self._params, settings, self._state_items(copy=False)))


def _restore(cls, params, settings, state):
    opt = cls(dict(params), arena=False, **settings)
    opt.load_state_dict(state)
    return opt


# --- declarations -> attributes, signature, docstring ---------------------------------------

def _hyperparameter_property(name, h):
    def get(self):
        return self._h[name]

    def set(self, value):
        x = h.check(value, name)
        _check_slot(self, name, x)
        saved = self._h[name]
        self._h[name] = x
        try:
            self._check_settings()
        except ValueError:
            self._h[name] = saved
            raise
        self._configure_step()

    return property(get, set, doc=h.doc + " May be changed between steps.")


def _check_slot(self, name, value):
    """A hyperparameter that turns on a state slot (e.g. momentum's buffer) can
    only be non-zero when the object keeps that slot."""
    if name in self._rule.flags and value != 0.0:
        need = 1 << self._rule.flags.index(name)
        for keep, slot_need, slot in zip(self._slots, self._rule.state_flags, self._rule.states):
            if slot_need == need and not keep:
                raise ValueError(f"{type(self).__name__} was built with {name}=0 and has no "
                                 f"{self.declaration.state_names.get(slot, slot)}; build it with {name} > 0")


def _option_property(name, o):
    def get(self):
        return self._opts[name]

    def set(self, value):
        if o.structural:
            raise AttributeError(f"{name} decides which state arrays exist; it is set when "
                                 "the optimizer is built")
        x = check.flag(value, name)
        saved = self._opts[name]
        self._opts[name] = x
        try:
            self._check_settings()
        except ValueError:
            self._opts[name] = saved
            raise
        self._configure_step()

    return property(get, set, doc=o.doc + ("" if o.structural else " May be changed between steps."))


def _signature(cls):
    P = inspect.Parameter
    params = [P("parameters", P.POSITIONAL_OR_KEYWORD),
              P("learning_rate", P.POSITIONAL_OR_KEYWORD, default=cls.declaration.learning_rate)]
    params += [P(name, P.KEYWORD_ONLY, default=h.default) for name, h in cls.declaration.hyperparameters.items()]
    if cls.declaration.weight_decay is not None:
        params += [P("weight_decay", P.KEYWORD_ONLY, default=cls.declaration.weight_decay_default),
                   P("weight_decay_mask", P.KEYWORD_ONLY, default=None)]
    params += [P(name, P.KEYWORD_ONLY, default=o.default)
               for name, o in cls.declaration.options.items()]
    params += [P(name, P.KEYWORD_ONLY, default=a.default)
               for name, a in cls.declaration.arguments.items()]
    params += [P("max_grad_norm", P.KEYWORD_ONLY, default=None),
               P("skip_nonfinite", P.KEYWORD_ONLY, default=False),
               P("ema_decay", P.KEYWORD_ONLY, default=None),
               P("ema_warmup", P.KEYWORD_ONLY, default=False),
               P("gradient_accumulation_steps", P.KEYWORD_ONLY, default=1),
               P("state_bits", P.KEYWORD_ONLY, default=32),
               P("min_8bit_size", P.KEYWORD_ONLY, default=MIN_8BIT_SIZE),
               P("kahan_summation", P.KEYWORD_ONLY, default=False),
               P("stochastic_rounding", P.KEYWORD_ONLY, default=False),
               P("seed", P.KEYWORD_ONLY, default=0),
               P("arena", P.KEYWORD_ONLY, default=True)]
    return inspect.Signature(params)


_COMMON_DOC = {
    "parameters": ("dict of str to numpy.ndarray",
                   "The parameters, float32, float64, float16 or bfloat16 (ml_dtypes) arrays of "
                   "any shape (other float dtypes take the NumPy path). 16-bit parameters are "
                   "updated in float32 arithmetic, with float32 state by default, and rounded "
                   "once to their dtype (see kahan_summation, stochastic_rounding). With "
                   "arena=True their values are moved into the optimizer's buffers and the "
                   "dict's values replaced by views of them (same keys, shapes, dtypes, layouts "
                   "and values)."),
    "learning_rate": ("float or callable",
                      "Step size, >= 0; or a schedule: a callable given the number of steps "
                      "taken that returns the rate (see fastoptim.schedules)."),
    "weight_decay": ("float, dict or callable",
                     "Weight-decay coefficient, >= 0: one for every key, a dict with every "
                     "parameter key, or a callable key -> float."),
    "weight_decay_mask": ("callable, dict or None",
                          "key -> bool (or a dict of every key): False turns the decay off "
                          "for that key, e.g. ``lambda key: key.startswith('W')``."),
    "max_grad_norm": ("float or None",
                      "Clip by global norm (Pascanu et al. 2013): one fused pass measures "
                      "the norm of all gradients together, and the update scales them by "
                      "min(1, max_grad_norm / (norm + 1e-6)) as it reads them (torch's "
                      "``clip_grad_norm_`` rule); the gradient arrays are not modified."),
    "skip_nonfinite": ("bool",
                       "If any gradient element is Inf or NaN, skip the step: parameters, "
                       "state and t stay unchanged and step() returns False."),
    "ema_decay": ("float in [0, 1) or None",
                  "Keep an exponential moving average of the parameters (attribute ema), "
                  "updated in the same pass as the step: ema = d*ema + (1 - d)*W, starting "
                  "at the parameters (timm's ModelEmaV2, optax.ema without debiasing)."),
    "ema_warmup": ("bool",
                   "Use d = min(ema_decay, (1 + t)/(10 + t)) at step t, so that early "
                   "parameters weigh less (tf.train.ExponentialMovingAverage's num_updates)."),
    "gradient_accumulation_steps": ("int",
                                    "k >= 1: step() sums the gradients of k calls in call "
                                    "order, and every k-th call steps with the sum times 1/k "
                                    "(returning what that step returns; the other calls "
                                    "return False)."),
    "state_bits": ("int",
                   "How the state of float32 and 16-bit parameters is stored: 32 (float32); "
                   "16 (bfloat16, rounded to nearest even: uint16 arrays of bfloat16 bits); "
                   "8 (block-wise 8-bit: per block of 256 elements one float32 absolute "
                   "maximum, state '<name>_absmax', and uint8 codes of the dynamic map of "
                   "Dettmers et al. 2022, signed for first moments and momentum, unsigned "
                   "for second moments, each the exact nearest code; dequantized, updated "
                   "and requantized in one pass). float64 parameters keep float64 state; "
                   "the moving average and the gradient sum stay in full precision, and a "
                   "state that starts at the parameters (Schedule-Free's z) stays float32 "
                   "with 8. Classes whose step is not elementwise (LAMB, Adafactor, Muon) "
                   "take 32 only, float32 or float64 parameters, and neither "
                   "kahan_summation nor stochastic_rounding."),
    "min_8bit_size": ("int",
                      "With state_bits=8, parameters with fewer elements keep float32 state "
                      "(as bitsandbytes does)."),
    "kahan_summation": ("bool",
                        "16-bit parameters: keep a 16-bit compensation per parameter (state "
                        "'kahan_comp') that carries what rounding the parameter loses into "
                        "the next step (Kahan summation, as the optimi library does), so "
                        "updates smaller than the parameter's precision accumulate."),
    "stochastic_rounding": ("bool",
                            "16-bit parameters: round the float32 result up or down at "
                            "random, with probability proportional to its distance from "
                            "each neighbour (unbiased), from a counter-based generator "
                            "keyed on seed, the step, the array and the element: the same "
                            "bits at any thread count and in every run."),
    "seed": ("int",
             "The stochastic rounding's seed, 0 <= seed < 2**64; saved in the state dict. "
             "May be changed between steps."),
    "arena": ("bool",
              "Move the parameters into one 64-byte-aligned buffer per dtype (True), or "
              "update the given arrays where they are (False)."),
}


def _parameters_doc(cls):
    """The numpydoc Parameters section of a declaration."""
    lines = ["Parameters", "----------"]

    def entry(name, kind, doc):
        lines.append(f"{name} : {kind}")
        lines.extend(textwrap.wrap(doc, 79, initial_indent="    ", subsequent_indent="    "))

    entry("parameters", *_COMMON_DOC["parameters"])
    entry("learning_rate", _COMMON_DOC["learning_rate"][0] + f", default {cls.declaration.learning_rate}",
          _COMMON_DOC["learning_rate"][1])
    for name, h in cls.declaration.hyperparameters.items():
        entry(name, f"float{' or None' if h.optional else ''}, default {h.default}", h.doc)
    if cls.declaration.weight_decay is not None:
        style = {"l2": "L2: weight_decay * W is added to the gradient",
                 "decoupled": "decoupled: W is scaled by 1 - learning_rate * weight_decay "
                              "before the step (Loshchilov & Hutter 2019)",
                 "update": "weight_decay * W added to the update direction, as the update "
                           "rule above shows"}[cls.declaration.weight_decay]
        kind, doc = _COMMON_DOC["weight_decay"]
        entry("weight_decay", f"{kind}, default {cls.declaration.weight_decay_default}", f"{doc} Applied as {style}.")
        entry("weight_decay_mask", *_COMMON_DOC["weight_decay_mask"])
    for name, o in cls.declaration.options.items():
        entry(name, f"bool, default {o.default}", o.doc)
    for name, a in cls.declaration.arguments.items():
        entry(name, f"{a.kind}, default {a.default}", a.doc)
    defaults = {"max_grad_norm": "None", "skip_nonfinite": "False", "ema_decay": "None",
                "ema_warmup": "False", "gradient_accumulation_steps": "1", "state_bits": "32",
                "min_8bit_size": str(MIN_8BIT_SIZE), "kahan_summation": "False",
                "stochastic_rounding": "False", "seed": "0", "arena": "True"}
    for name, default in defaults.items():
        kind, doc = _COMMON_DOC[name]
        entry(name, f"{kind}, default {default}", doc)
    lines += ["", "Raises", "------", "TypeError"]
    lines += _wrap("`parameters` is not a dict of floating-point arrays keyed by str, or a "
                   "setting has the wrong type (named).")
    lines += ["ValueError"]
    lines += _wrap("A setting is out of range (named), kahan_summation and "
                   "stochastic_rounding are both set, or an array is read-only or shares "
                   "memory with another.")
    lines += ["", "Notes", "-----"]
    lines += _wrap("``step(grads)`` updates every parameter from ``grads['d' + key]`` in "
                   "place and returns True (False when skip_nonfinite skipped the step); bad "
                   "gradients raise an error naming the key, with nothing changed. "
                   "``state_dict()``/``load_state_dict()`` save and restore the state; "
                   "settings may be changed between steps through the attributes of the same "
                   "names.", indent="")
    return "\n".join(lines)


def _wrap(text, indent="    "):
    return textwrap.wrap(text, 79, initial_indent=indent, subsequent_indent=indent)


# --- checks and the arena ---------------------------------------------------------------------

def _ema_decay(value):
    if value is None:
        return None
    return check.beta(value, "ema_decay")


def refuse_storage(name, why, state_bits, flags, arrays):
    """Raise, naming `name`, the argument and `why`, if the storage settings
    ask for anything but float32/float64 parameters and state: state_bits
    other than 32, a write-back flag set ({argument: bool}), a 16-bit array in
    `arrays` ((key, array) pairs). For the classes whose step is not
    elementwise and for DataParallel."""
    if type(state_bits) is not int or state_bits != 32:
        raise ValueError(f"{name} keeps its state in float32 or float64 ({why}): "
                         f"state_bits must be 32, got {state_bits!r}")
    for arg, on in flags.items():
        if on:
            raise ValueError(f"{name} does not take {arg}=True ({why}): its parameters "
                             f"are float32 or float64")
    for key, p in arrays:
        if check.is_16bit(p.dtype):
            raise TypeError(f"{name} takes float32 or float64 parameters, got "
                            f"parameters[{key!r}] of {p.dtype} ({why})")


def _state_bits(value):
    bits = check.integer(value, "state_bits", minimum=0)
    if bits not in (32, 16, 8):
        raise ValueError(f"state_bits must be 32, 16 or 8, got {bits}")
    return bits


def _seed(value, name):
    x = check.integer(value, name, minimum=0)
    if x >= 2**64:
        raise ValueError(f"{name} must be < 2**64, got {x}")
    return x


def _max_grad_norm(value):
    if value is None:
        return None
    x = check.finite(value, "max_grad_norm")
    if not x > 0.0:
        raise ValueError(f"max_grad_norm must be > 0 (or None), got {value!r}")
    return x


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


def _scalar(x):
    """A 0-d array (as np.load returns scalars) as its Python value."""
    return x.item() if isinstance(x, np.ndarray) and x.ndim == 0 else x


def _check_parameters(parameters):
    """The parameters as a list of (key, array), checked as the dict API checks
    the arrays it writes."""
    check.check_dict("parameters", parameters)
    arrays = []
    labelled = []
    for key, p in parameters.items():
        if not isinstance(key, str):
            raise TypeError(f"parameter keys must be str, got {key!r}")
        label = f"parameters[{key!r}]"
        check.parameter(label, p)
        check._writable(label, p)
        arrays.append((key, p))
        labelled.append((label, p, True))
    check._overlaps(labelled)
    return arrays


def _root(a):
    """The array that owns the memory `a` views."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _order(a):
    return "F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C"


def _aligned_zeros(dtype, count, j):
    """A zeroed 1-D array of `count` elements starting on a cache line, at an
    offset within its 4 KiB page that depends on j."""
    nbytes = count * dtype.itemsize
    raw = np.zeros(nbytes + _PAGE, dtype=np.uint8)
    start = (j * _STAGGER - raw.ctypes.data) % _PAGE
    return raw[start:start + nbytes].view(dtype)


class _Layout:
    """Which state arrays each parameter has, of which shape and dtype (the
    storage formats). `shapes`: state name -> {key: shape} of the keys that
    have it (the class's _state_shapes; the extras of every key). The rule's
    kept slots `slots`: in the parameter's dtype for float64 (and other
    non-float32) parameters; for float32 and 16-bit ones, float32
    (state_bits=32), uint16 bfloat16 bits (16), or uint8 codes with float32
    block maxima "<slot>_absmax" (8) for parameters of at least min_8bit_size
    elements (float32 below; and always for the slots in `iterates`, states
    that start at the parameters: iterates, not moments, which the 8-bit maps
    are for). The class's own states `own` and a state not of
    its parameter's shape: float32 or float64, C-ordered (the classes that
    have them take no storage format: Optimizer._check_storage). Then `extra`
    ("ema", "grad_sum": float32 for 16-bit parameters) and, with
    kahan_summation, "kahan_comp" for 16-bit parameters, in their dtype."""

    def __init__(self, slots, own, extra, shapes, bits, min_8bit_size, kahan, iterates=()):
        self.slots = tuple(slots)
        self.iterates = tuple(iterates)
        self.own = tuple(own)
        self.extra = tuple(extra)
        self.shapes = shapes
        self.bits = bits
        self.min_8bit_size = min_8bit_size
        self.kahan = kahan

    def names(self):
        absmax = tuple(n + "_absmax" for n in self.slots
                       if n not in self.iterates) if self.bits == 8 else ()
        return (self.slots + absmax + self.own + self.extra
                + (("kahan_comp",) if self.kahan else ()))

    def _stored(self, p):
        """The slots of p are stored in a format (float32 and 16-bit parameters)."""
        return p.dtype == np.float32 or check.is_16bit(p.dtype)

    def _q8(self, p, name=None):
        return (self.bits == 8 and self._stored(p) and p.size >= self.min_8bit_size
                and name not in self.iterates)

    def spec(self, name, key, p):
        """(dtype, elements, shape, order) of state `name` of parameters[key] (p),
        or None when it has none."""
        like = (p.size, p.shape, _order(p))
        if name in self.shapes:
            if key not in self.shapes[name]:
                return None
            shape = self.shapes[name][key]
            if shape != p.shape:
                return (check.state_dtype(p.dtype), math.prod(shape), shape, "C")
            if name in self.own:
                return (check.state_dtype(p.dtype),) + like
        if name in self.slots:
            if not self._stored(p):
                return (p.dtype,) + like
            if self.bits == 16:
                return (np.dtype(np.uint16),) + like
            return (np.dtype(np.uint8 if self._q8(p, name) else np.float32),) + like
        slot = name[:-len("_absmax")]
        if name.endswith("_absmax") and slot in self.slots:
            if key not in self.shapes.get(slot, {key: None}) or not self._q8(p, slot):
                return None
            blocks = -(-p.size // _fallback.Q8_BLOCK)
            return (np.dtype(np.float32), blocks, (blocks,), "C")
        if name == "kahan_comp":
            return (p.dtype,) + like if check.is_16bit(p.dtype) else None
        return (check.state_dtype(p.dtype),) + like  # ema, grad_sum

    def storage(self, p, slots, unsigned, state, dkey, stream):
        """p's _fallback.Storage (None when every stream is in p's dtype):
        `slots` the public name of each rule slot (None where not kept)."""
        fmt = _fallback.format_of(p.dtype)
        if not self._stored(p) or (fmt == _fallback.FMT_NATIVE and self.bits == 32):
            return None
        kinds, absmax = [], []
        for name in slots:
            am = None
            if name is None or self.bits == 32:
                kind = _fallback.FMT_NATIVE
            elif self.bits == 16:
                kind = _fallback.FMT_BF16
            elif self._q8(p, name):
                kind = _fallback.FMT_Q8_UNSIGNED if unsigned[name] else _fallback.FMT_Q8
                am = state[name + "_absmax"][dkey]
            else:
                kind = _fallback.FMT_NATIVE
            kinds.append(kind)
            absmax.append(am)
        comp = state["kahan_comp"][dkey] if self.kahan and fmt != _fallback.FMT_NATIVE else None
        return _fallback.Storage(fmt, kinds, absmax, comp, stream=stream)


def _fill_state(storage, j, a, value):
    """Set state slot j (array a; j < 0: a state that is not a slot) to `value`,
    a number or float32 values of a's shape, in its format."""
    kind = _fallback.FMT_NATIVE if storage is None or j < 0 else storage.state[j]
    if kind == _fallback.FMT_BF16:
        a[...] = _fallback.narrow(np.broadcast_to(np.asarray(value, np.float32), a.shape),
                                  _fallback.FMT_BF16)
    elif kind in (_fallback.FMT_Q8, _fallback.FMT_Q8_UNSIGNED):
        storage.store_state(j, a, np.array(np.broadcast_to(np.asarray(value, np.float32), a.shape)))
    else:
        a[...] = value


def _build(arrays, layout, arena):
    """Lay out, per parameter dtype, one buffer for the parameters (when
    `arena`) and one per state name and state dtype (see _Layout); return
    (params, state, buffers) with params and state as dicts of views (params:
    the user's own arrays when not `arena`), in the parameters' order."""
    by_dtype = {}
    for key, p in arrays:
        by_dtype.setdefault(p.dtype, []).append((key, p))
    given = dict(arrays)
    params, state, buffers = {}, {name: {} for name in layout.names()}, []
    for dtype, items in by_dtype.items():
        streams = []  # (name or None for the parameters, dtype, [(key, count, shape, order)])
        if arena:
            streams.append((None, dtype, [(key, p.size, p.shape, _order(p)) for key, p in items]))
        for name in layout.names():
            by_sdtype = {}
            for key, p in items:
                spec = layout.spec(name, key, p)
                if spec is not None:
                    by_sdtype.setdefault(spec[0], []).append((key,) + spec[1:])
            streams += [(name, sd, specs) for sd, specs in by_sdtype.items()]
        for j, (name, sd, specs) in enumerate(streams):
            per_line = _ALIGN // math.gcd(_ALIGN, sd.itemsize)
            offsets, total = [], 0
            for _, count, _, _ in specs:
                offsets.append(total)
                total += -(-count // per_line) * per_line
            flat = _aligned_zeros(sd, total, j)
            buffers.append(_root(flat))
            for (key, count, shape, order), off in zip(specs, offsets):
                view = flat[off:off + count].reshape(shape, order=order)
                if name is None:
                    view[...] = given[key]
                    params[key] = view
                else:
                    state[name]["d" + key] = view
    params = {key: params[key] if arena else p for key, p in arrays}
    state = {name: {"d" + key: d["d" + key] for key, _ in arrays if "d" + key in d}
             for name, d in state.items()}
    return params, state, buffers


def _factor_views(p, row, col, per):
    """The kernel's view of a factored state (fo_factors): (row, col, per,
    rows, cols) in p's memory order, or None for a layout it does not take.
    A C-ordered p of shape (..., m, n) is matrices of m x n; a Fortran-ordered
    2-D p is one n x m matrix whose rows are p's columns (row*col = col*row)."""
    if p.ndim < 2 or not (p.flags.c_contiguous or (p.ndim == 2 and p.flags.f_contiguous)):
        return None
    m, n = p.shape[-2:]
    if not all(a.flags.c_contiguous and a.dtype == p.dtype for a in (row, col, per)):
        return None
    vectors = [a.reshape(-1) for a in (row, col, per)]
    if p.flags.c_contiguous:
        return (vectors[0], vectors[1], vectors[2], m, n)
    return (vectors[1], vectors[0], vectors[2], n, m)


def _groups(params):
    """Key indices by dtype, in the order each dtype first appears: the compiled
    step's groups (one C call each) and the norm's summation order."""
    groups = {}
    for i, p in enumerate(params.values()):
        groups.setdefault(p.dtype, []).append(i)
    return list(groups.values())


def _written_spans(params, state):
    """The byte ranges a step writes, sorted by start: (starts, ends, arrays)."""
    return check.byte_ranges((a, a) for d in [params, *state.values()] for a in d.values())
