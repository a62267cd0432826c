"""Write src/fastoptim/optimizers/__init__.pyi, the optimizer classes' type stub,
from their declarations (fastoptim.optimizers).

Every class builds its constructor's signature from its declaration at import
time, which a type checker cannot see; the stub spells each one out, with its
hyperparameters, options and state attributes. tests/test_typing.py fails when
the stub differs from what this script writes.

    python tools/optimizer_stubs.py           # rewrite the stub
    python tools/optimizer_stubs.py --check   # exit 1 if it is out of date
"""
import inspect
import os
import sys

STUB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    "src", "fastoptim", "optimizers", "__init__.pyi")

HEADER = '''\
# Written by tools/optimizer_stubs.py from the classes' declarations; do not edit.
import inspect
from contextlib import AbstractContextManager
from typing import Any, Callable, ClassVar, Mapping

from numpy.typing import NDArray

_Arrays = dict[str, NDArray[Any]]
_Rate = float | Callable[[int], float]
_Decay = float | Mapping[str, float] | Callable[[str], float]
_Mask = Mapping[str, bool] | Callable[[str], bool] | None

__all__ = {all}

class Optimizer:
    """Base class of the optimizer objects."""
    declaration: ClassVar[Any]
    __signature__: ClassVar[inspect.Signature]
    last_grad_norm: float | None
    def __init__(
        self, parameters: _Arrays, learning_rate: _Rate = ..., **settings: Any
    ) -> None: ...
    def step(self, grads: _Arrays) -> bool: ...
    def state_dict(self, copy: bool = True) -> dict[str, Any]: ...
    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None: ...
    def check_state_dict(self, state_dict: Mapping[str, Any]) -> Callable[[], None]: ...
    @property
    def t(self) -> int: ...
    @property
    def learning_rate(self) -> _Rate: ...
    @learning_rate.setter
    def learning_rate(self, value: _Rate) -> None: ...
    @property
    def arena(self) -> bool: ...
    @property
    def parameters(self) -> _Arrays: ...
    @property
    def state(self) -> dict[str, _Arrays]: ...
    @property
    def options(self) -> dict[str, bool]: ...
    @property
    def max_grad_norm(self) -> float | None: ...
    @max_grad_norm.setter
    def max_grad_norm(self, value: float | None) -> None: ...
    @property
    def skip_nonfinite(self) -> bool: ...
    @skip_nonfinite.setter
    def skip_nonfinite(self, value: bool) -> None: ...
    @property
    def ema(self) -> _Arrays | None: ...
    @property
    def gradient_accumulation_steps(self) -> int: ...
    @property
    def state_bits(self) -> int: ...
    @property
    def min_8bit_size(self) -> int: ...
    @property
    def kahan_summation(self) -> bool: ...
    @property
    def stochastic_rounding(self) -> bool: ...
    @property
    def seed(self) -> int: ...
    @seed.setter
    def seed(self, value: int) -> None: ...
'''

TYPES = {"parameters": "_Arrays", "learning_rate": "_Rate", "weight_decay": "_Decay",
         "weight_decay_mask": "_Mask", "max_grad_norm": "float | None",
         "skip_nonfinite": "bool", "ema_decay": "float | None", "ema_warmup": "bool",
         "gradient_accumulation_steps": "int", "state_bits": "int", "min_8bit_size": "int",
         "kahan_summation": "bool", "stochastic_rounding": "bool", "seed": "int",
         "arena": "bool"}


def public_base(cls):
    """The class a stub names as the base: the first public one (a class may mix
    in private helpers, whose members are written into its own stub)."""
    return next(c for c in cls.__mro__[1:] if not c.__name__.startswith("_"))


def own_members(cls):
    """Public methods and properties a class (or a private mixin of it) defines
    beyond its declaration's: (name, kind, annotation text) from their
    annotations (kind: "property" or "method"; methods take no argument)."""
    d = cls.declaration
    generated = set(d.hyperparameters) | set(d.options) | set(cls._rule.scalars)
    out = []
    for klass in cls.__mro__[:cls.__mro__.index(public_base(cls))]:
        for name, value in vars(klass).items():
            if name.startswith("_") or name in generated or name == "declaration":
                continue
            if isinstance(value, property):
                ann = inspect.signature(value.fget).return_annotation
                out.append((name, "property", ann))
            elif inspect.isfunction(value):
                sig = inspect.signature(value)
                if list(sig.parameters) != ["self"]:
                    raise ValueError(f"{cls.__name__}.{name}: only methods without "
                                     "arguments are written to the stub")
                out.append((name, "method", sig.return_annotation))
    for name, _, ann in out:
        if ann is inspect.Signature.empty:
            raise ValueError(f"{cls.__name__}.{name}: annotate its return type")
    return sorted(out)


def class_stub(cls):
    d = cls.declaration
    args = []
    for p in cls.__signature__.parameters.values():
        if p.name in TYPES:
            kind = TYPES[p.name]
        elif p.name in d.hyperparameters:
            kind = "float | None" if d.hyperparameters[p.name].optional else "float"
        elif p.name in d.options:
            kind = "bool"
        elif p.name in d.arguments:
            kind = d.arguments[p.name].stub
        else:
            raise ValueError(f"{cls.__name__}: no stub type for the argument {p.name!r}")
        arg = f"{p.name}: {kind}"
        if p.name == "learning_rate":
            arg += " = ..."  # the constructor's default is a marker for the class's default
        elif p.default is not inspect.Parameter.empty:
            arg += f" = {p.default!r}"
        if p.kind is inspect.Parameter.KEYWORD_ONLY and "*" not in args:
            args.append("*")
        args.append(arg)
    base = public_base(cls)
    lines = [f"class {cls.__name__}({base.__name__}):",
             "    def __init__(",
             *_wrap(["self"] + args, "        "),
             "    ) -> None: ..."]
    for name, h in d.hyperparameters.items():
        if h.state is None:
            lines.append(f"    {name}: float{' | None' if h.optional else ''}")
    for name, o in d.options.items():
        if o.structural:
            lines += ["    @property", f"    def {name}(self) -> bool: ..."]
        else:
            lines.append(f"    {name}: bool")
    for name in cls._rule.scalars:
        lines += ["    @property", f"    def {name}(self) -> float: ..."]
    if d.weight_decay is not None:
        lines += ["    @property",
                  "    def weight_decay(self) -> float | dict[str, float]: ...",
                  "    @weight_decay.setter",
                  "    def weight_decay(self, value: _Decay) -> None: ..."]
    for name, kind, ann in own_members(cls):
        if kind == "property":
            lines += ["    @property", f"    def {name}(self) -> {ann}: ..."]
        else:
            lines.append(f"    def {name}(self) -> {ann}: ...")
    return lines


def _wrap(items, indent, width=92):
    lines, line = [], indent
    for item in items:
        piece = item + ","
        if line != indent and len(line) + 1 + len(piece) > width:
            lines.append(line)
            line = indent
        line += piece if line == indent else " " + piece
    lines.append(line)
    return lines


def stub():
    from fastoptim import optimizers

    names = [n for n in optimizers.__all__ if n != "Optimizer"]
    classes = [getattr(optimizers, n) for n in names]
    # a class is written after its base (AdamW after Adam)
    classes.sort(key=lambda c: len(c.__mro__))
    text = HEADER.format(all="[\n" + "\n".join(_wrap([repr(n) for n in optimizers.__all__], "    "))
                         + "\n]")
    for cls in classes:
        text += "\n" + "\n".join(class_stub(cls)) + "\n"
    return text


def main(argv):
    text = stub()
    if argv[1:] == ["--check"]:
        with open(STUB) as f:
            if f.read() != text:
                print(f"{STUB} is out of date: run python tools/optimizer_stubs.py",
                      file=sys.stderr)
                return 1
        return 0
    if argv[1:]:
        print(__doc__, file=sys.stderr)
        return 2
    with open(STUB, "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
