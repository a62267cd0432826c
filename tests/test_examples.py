"""The examples in examples/ (the documentation includes their source) run as a
user runs them, each in a fresh interpreter, and print what they promise."""
import os
import re
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def run_example(name):
    """The stdout of `python examples/<name>`; fails with its output if it fails."""
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, name)], capture_output=True,
                          text=True, timeout=300, cwd=EXAMPLES)
    assert proc.returncode == 0, f"{name} exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    assert proc.stderr == "", f"{name} wrote to stderr:\n{proc.stderr}"
    return proc.stdout


def value(out, label):
    """The number after `label: ` on its line of `out`."""
    found = re.findall(rf"^{re.escape(label)}: ([-+0-9.e]+)", out, re.MULTILINE)
    assert len(found) == 1, f"expected one line '{label}: <number>' in:\n{out}"
    return float(found[0])


def test_course_reaches_the_course_accuracy():
    out = run_example("course.py")
    costs = [float(c) for c in re.findall(r"^Cost after epoch \d+: ([0-9.]+)$", out, re.MULTILINE)]
    assert re.findall(r"^Cost after epoch (\d+)", out, re.MULTILINE) == ["0", "1000", "2000",
                                                                         "3000", "4000"]
    assert 0.69 < costs[0] < 0.71 and costs[-1] < 0.15, out   # README: 0.702166 ... 0.136066
    assert value(out, "steps") == 25000
    # the course's published training accuracy for Adam at 5000 epochs: 94.3% (283 of 300)
    assert round(value(out, "training accuracy") * 300) == 283, out


def test_digits_mlp_learns_the_digits():
    pytest.importorskip("sklearn")
    out = run_example("digits_mlp.py")
    accuracies = [float(a) for a in re.findall(r"^epoch \d+: training accuracy ([0-9.]+)", out,
                                               re.MULTILINE)]
    assert len(accuracies) == 10, out
    assert accuracies[-1] > accuracies[0], out
    assert value(out, "steps") == 240      # 10 epochs of 24 mini-batches
    assert value(out, "training accuracy") > 0.97, out
    assert value(out, "held-out accuracy") > 0.85, out
    # the cosine schedule ends at 0 after the last step
    assert re.search(r"^epoch 9: .*next learning rate 0\.00000$", out, re.MULTILINE), out


def test_resume_is_bitwise():
    out = run_example("resume.py")
    assert "stopped after epoch 349 (t = 1750)" in out, out
    assert "resumed run: t = 1505 from the checkpoint" in out, out
    assert "ExponentialDecay(learning_rate0=0.01, decay_rate=0.5, decay_steps=1000)" in out, out
    assert value(out, "steps") == 3000
    assert value(out, "training accuracy") > 0.85, out
    assert re.search(r"^resumed bitwise: True$", out, re.MULTILINE), out
