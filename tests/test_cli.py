"""The command line a newcomer meets: `python -m fastoptim` and the `fastoptim` script."""
import json
import os
import subprocess
import sys
from importlib import metadata

import pytest

import fastoptim
from fastoptim.__main__ import COMMANDS, main


def run(argv, capsys):
    """(exit status, stdout, stderr) of the command line, in this process."""
    try:
        status = main(argv)
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


def one_line(text):
    return " ".join(text.split())


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_has_a_line_per_command(flag, capsys):
    status, out, err = run([flag], capsys)
    assert status == 0 and err == ""
    assert out.startswith("usage: fastoptim ")
    text = one_line(out)
    for name, line in COMMANDS.items():
        assert f"{name} {line}" in text
    assert "--version" in text
    assert "fastoptim COMMAND --help" in text


def test_no_arguments_shows_the_help_and_fails(capsys):
    status, out, err = run([], capsys)
    assert status == 2 and out == ""
    text = one_line(err)
    for name, line in COMMANDS.items():
        assert f"{name} {line}" in text


def test_version(capsys):
    status, out, _ = run(["--version"], capsys)
    assert status == 0
    assert out == f"fastoptim {fastoptim.__version__}\n"


def test_unknown_command_is_named(capsys):
    status, out, err = run(["trian"], capsys)
    assert status == 2 and out == ""
    assert "invalid choice: 'trian'" in err
    assert "usage: fastoptim" in err


@pytest.mark.parametrize("argv, prog", [
    (["--verbose"], "fastoptim"),
    (["--verbose", "train"], "fastoptim"),
    (["info", "--verbose"], "fastoptim info"),
    (["info", "extra"], "fastoptim info"),
    (["bench", "--verbose"], "fastoptim bench"),
    (["train", "--verbose"], "fastoptim train"),
])
def test_unknown_options_are_named_by_the_command_that_refuses_them(argv, prog, capsys):
    status, out, err = run(argv, capsys)
    assert status == 2 and out == ""
    unknown = argv[-1] if argv[-1] != "train" else argv[0]
    assert f"{prog}: error: unrecognized arguments: {unknown}" in err


def test_info_shows_the_version_first(capsys):
    status, out, _ = run(["info"], capsys)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["version:", fastoptim.__version__]
    assert ["backend:", fastoptim.BACKEND] in [line.split() for line in lines]


def test_info_json(capsys):
    status, out, _ = run(["info", "--json"], capsys)
    assert status == 0
    info = json.loads(out)
    assert info["version"] == fastoptim.__version__
    assert info["backend"] == fastoptim.BACKEND
    assert info["extension"] is ("isa_in_use" in info)
    if fastoptim.BACKEND == "c":
        assert info["extension"] is True


def test_info_help(capsys):
    status, out, _ = run(["info", "--help"], capsys)
    assert status == 0
    assert out.startswith("usage: fastoptim info [-h] [--json]")
    assert "version" in out


def test_bench_help_speaks_of_what_a_user_has(capsys):
    status, out, _ = run(["bench", "--help"], capsys)
    assert status == 0
    assert out.startswith("usage: fastoptim bench ")
    for absent in (".md", "fastoptim.benchmarks", "_bench"):
        assert absent not in out
    # every contender a row can name is explained
    for name in ("fastoptim C", "fastoptim Adam()", "fastoptim numpy", "seed numpy",
                 "torch fused", "ceiling"):
        assert f"\n  {name} " in out


def test_train_receives_its_options(capsys):
    status, out, _ = run(["train", "--epochs", "2", "--optimizer", "gd"], capsys)
    assert status == 0
    assert "Cost after epoch 0: 0.702405" in out
    assert "== momentum ==" not in out
    status, out, _ = run(["train", "--help"], capsys)
    assert status == 0 and out.startswith("usage: fastoptim train ")


def test_python_dash_m_fastoptim():
    def cli(*argv):
        return subprocess.run([sys.executable, "-m", "fastoptim", *argv], capture_output=True,
                              text=True, timeout=300)

    proc = cli("--version")
    assert proc.returncode == 0 and proc.stdout == f"fastoptim {fastoptim.__version__}\n"
    proc = cli("info", "--json")
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["version"] == fastoptim.__version__
    proc = cli("bogus")
    assert proc.returncode == 2
    assert "usage: python -m fastoptim " in proc.stderr and "'bogus'" in proc.stderr


@pytest.mark.parametrize("argv", [["info"], ["train", "--epochs", "2", "--optimizer", "gd"]])
def test_a_reader_that_went_away_is_no_traceback(argv):
    read, write = os.pipe()
    os.close(read)  # like `| head -1` that has exited: every write fails
    try:
        proc = subprocess.run([sys.executable, "-m", "fastoptim", *argv], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write)
    assert proc.returncode == 1
    assert proc.stderr == ""


def test_the_console_script_is_declared():
    entry_points = metadata.entry_points()
    if hasattr(entry_points, "select"):
        scripts = entry_points.select(group="console_scripts")
    else:  # Python 3.9
        scripts = entry_points.get("console_scripts", [])
    script = next(ep for ep in scripts if ep.name == "fastoptim")
    assert script.value == "fastoptim.__main__:main"
    assert script.load() is main
