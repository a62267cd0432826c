"""The type stubs (src/fastoptim/*.pyi): the optimizer stub is what
tools/optimizer_stubs.py writes from the declarations, the typed example runs
and passes mypy --strict, and stubtest finds no difference between the stubs and
the runtime. The mypy checks skip when mypy is not installed (pip install ".[docs]")."""
import ast
import importlib.util
import inspect
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src")
TYPED_EXAMPLE = os.path.join(ROOT, "examples", "typed_usage.py")


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_optimizer_stub_is_up_to_date():
    tool = _tool("optimizer_stubs")
    with open(tool.STUB) as f:
        assert f.read() == tool.stub(), "run python tools/optimizer_stubs.py"


def test_optimizer_stub_spells_out_every_constructor():
    """Each class's __init__ in the stub has the arguments of its signature, in
    order, of the same kinds and with the same defaults."""
    import fastoptim.optimizers as optimizers

    tree = ast.parse(_tool("optimizer_stubs").stub())
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    assert set(classes) == set(optimizers.__all__)
    for name in optimizers.__all__:
        if name == "Optimizer":
            continue
        init = next(f for f in classes[name].body
                    if isinstance(f, ast.FunctionDef) and f.name == "__init__")
        a = init.args
        stub = ([(x.arg, "POSITIONAL_OR_KEYWORD", d) for x, d in
                 zip(a.args[1:], [None] * (len(a.args) - 1 - len(a.defaults)) + a.defaults)]
                + [(x.arg, "KEYWORD_ONLY", d) for x, d in zip(a.kwonlyargs, a.kw_defaults)])
        runtime = getattr(optimizers, name).__signature__.parameters.values()
        assert [(n, k) for n, k, _ in stub] == [(p.name, p.kind.name) for p in runtime], name
        for (arg, _, default), p in zip(stub, runtime):
            if arg == "learning_rate":
                assert isinstance(default, ast.Constant) and default.value is Ellipsis
            elif p.default is not inspect.Parameter.empty:
                assert ast.literal_eval(default) == p.default, (name, arg)


def test_typed_example_runs():
    proc = subprocess.run([sys.executable, TYPED_EXAMPLE], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "objects: True" in proc.stdout, proc.stdout


def _run(module, args, cwd, mypypath):
    pytest.importorskip("mypy")
    env = dict(os.environ, MYPYPATH=mypypath)
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env=env)


def test_typed_example_passes_mypy_strict(tmp_path):
    proc = _run("mypy", ["--strict", "--cache-dir", str(tmp_path), TYPED_EXAMPLE], ROOT, SRC)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_sees_the_optimizers_signatures(tmp_path):
    """A misspelt keyword, a wrong type and a read-only option are type errors."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import numpy as np\n"
        "import fastoptim as fo\n"
        "p = {'W': np.zeros(3)}\n"
        "fo.Adam(p, beta3=0.9)\n"
        "fo.SGD(p, momentum='0.9')\n"
        "fo.Adam(p).amsgrad = True\n"
        "fo.GD(p).weight_decay = 0.1\n")
    proc = _run("mypy", ["--strict", "--cache-dir", str(tmp_path / "cache"), str(bad)],
                str(tmp_path), SRC)
    assert proc.returncode == 1
    for line, code in [(4, "call-arg"), (5, "arg-type"), (6, "misc"), (7, "attr-defined")]:
        assert f"bad.py:{line}: error:" in proc.stdout and f"[{code}]" in proc.stdout, proc.stdout
    assert "Found 4 errors" in proc.stdout, proc.stdout


def test_stubs_match_the_runtime(tmp_path):
    """mypy's stubtest over the stubs alone (the modules without stubs are not
    type-checked; tools/stubtest-allowlist.txt lists the accepted differences)."""
    stubs = tmp_path / "stubs"
    for folder, _, files in os.walk(os.path.join(SRC, "fastoptim")):
        for name in files:
            if name.endswith(".pyi"):
                dest = stubs / os.path.relpath(folder, SRC)
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copy(os.path.join(folder, name), dest / name)
    proc = _run("mypy.stubtest", ["--concise", "--ignore-unused-allowlist", "--allowlist",
                                  os.path.join(ROOT, "tools", "stubtest-allowlist.txt"),
                                  "fastoptim"], str(tmp_path), str(stubs))
    assert proc.returncode == 0, proc.stdout + proc.stderr
