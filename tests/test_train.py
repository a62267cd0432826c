"""fastoptim.demo.train: the course's training runs reproduced, and the CLI end to end.

Published numbers come from the course's "Optimization methods" notebook: its
accuracy table (5000 epochs in the edition with learning-rate decay, 10000 in
v1b; see shared/fixtures/course-v1b.md) and the cost lines it prints. The
10000-epoch table is checked through the CLI, which trains with the same loop
as model() (test_model_equals_the_course_loop).
"""
import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import fastoptim
from fastoptim.demo import train
from fastoptim.demo.datasets import load_dataset
from fastoptim.demo.nn import (
    backward_propagation,
    compute_cost,
    forward_propagation,
    initialize_parameters,
    predict,
)
from fastoptim.demo.train import model
from fastoptim.schedules import schedule_lr_decay, update_lr

LAYERS = [2, 5, 2, 1]
TWO_SAMPLES = 100 * 2 / 300  # percent

# The course's printed costs at epochs 0, 1000, ..., 4000 (learning rate 0.0007).
COURSE_COSTS = {
    "gd": [0.702405, 0.668101, 0.635288, 0.600491, 0.573367],
    "momentum": [0.702413, 0.668167, 0.635388, 0.600591, 0.573444],
    "adam": [0.702166, 0.167845, 0.141316, 0.138788, 0.136066],
}
COURSE_ACCURACY_5000 = {"gd": 71.7, "momentum": 71.7, "adam": 94.3}
COURSE_ACCURACY_10000 = {"gd": 79.7, "momentum": 79.7, "adam": 94.0}


@pytest.fixture(scope="module")
def data():
    return load_dataset()


def accuracy_percent(X, Y, parameters):
    return 100.0 * np.mean(predict(X, parameters) == Y)


def printed(pattern, text):
    return [(int(i), float(x)) for i, x in re.findall(pattern, text)]


COST_LINE = r"Cost after epoch (\d+): ([0-9.]+)\n"
RATE_LINE = r"learning rate after epoch (\d+): ([0-9.]+)\n"


# ------------------------------------------------ learning-rate decay


def test_update_lr_is_the_course_formula():
    for lr0, epoch, rate in [(0.5, 2, 1), (0.1, 0, 1), (0.01, 1000, 0.3), (1.0, 7, 0.0)]:
        assert update_lr(lr0, epoch, rate) == pytest.approx(lr0 / (1 + rate * epoch), rel=1e-15)


def test_schedule_lr_decay_is_the_course_formula():
    # the course's printed example: 0.5 -> 0.5 after 10 epochs, 0.3846153846153846 after 100
    assert schedule_lr_decay(0.5, 10, 0.3, 100) == 0.5
    assert schedule_lr_decay(0.5, 100, 0.3, 100) == pytest.approx(0.3846153846153846, rel=1e-15)
    for epoch in [0, 1, 999, 1000, 1999, 2000, 4500]:
        expected = 0.1 / (1 + 1 * np.floor(epoch / 1000))
        assert schedule_lr_decay(0.1, epoch, 1) == pytest.approx(expected, rel=1e-15)


def test_decay_functions_are_exported():
    assert fastoptim.update_lr is update_lr
    assert fastoptim.schedule_lr_decay is schedule_lr_decay
    assert {"update_lr", "schedule_lr_decay"} <= set(fastoptim.__all__)


# ------------------------------------------------ the course's runs


@pytest.mark.parametrize("optimizer", ["gd", "momentum", "adam"])
def test_course_run_5000_epochs(optimizer, data, capsys):
    X, Y = data
    parameters = model(X, Y, LAYERS, optimizer)  # the defaults are the course's run
    lines = printed(COST_LINE, capsys.readouterr().out)
    assert [i for i, _ in lines] == [0, 1000, 2000, 3000, 4000]
    np.testing.assert_allclose([c for _, c in lines], COURSE_COSTS[optimizer], rtol=0,
                               atol=1.01e-6)
    expected = COURSE_ACCURACY_5000[optimizer]
    assert abs(accuracy_percent(X, Y, parameters) - expected) <= TWO_SAMPLES


# The course's runs with learning-rate decay: its printed first two cost and
# learning-rate lines (epochs 0 and 1000).
DECAY_RUNS = [
    ("gd", 0.1, update_lr, [0.701091, 0.661884], [0.100000, 0.000100]),
    ("gd", 0.1, schedule_lr_decay, [0.701091, 0.127161], [0.100000, 0.050000]),
    ("momentum", 0.1, schedule_lr_decay, [0.702226, 0.128974], [0.100000, 0.050000]),
    ("adam", 0.01, schedule_lr_decay, [0.699346, 0.130074], [0.010000, 0.005000]),
]


@pytest.mark.parametrize("optimizer, lr, decay, costs, rates", DECAY_RUNS,
                         ids=[f"{r[0]}-{r[2].__name__}" for r in DECAY_RUNS])
def test_course_runs_with_decay(optimizer, lr, decay, costs, rates, data, capsys):
    X, Y = data
    model(X, Y, LAYERS, optimizer, learning_rate=lr, num_epochs=1001, decay=decay)
    out = capsys.readouterr().out
    assert printed(COST_LINE, out) == [(i, pytest.approx(c, abs=1.01e-6))
                                       for i, c in zip((0, 1000), costs)]
    assert printed(RATE_LINE, out) == [(i, pytest.approx(r, abs=1e-6))
                                       for i, r in zip((0, 1000), rates)]


# ------------------------------------------------ model against the course's loop


def course_loop(X, Y, optimizer, learning_rate, mini_batch_size, num_epochs, decay=None,
                decay_rate=1, beta=0.9, beta1=0.9, beta2=0.999, epsilon=1e-8):
    """The course's model(), written out with the course's (corrected) dict
    updates, which rebind new arrays; returns the parameters and epoch costs."""
    parameters = initialize_parameters(LAYERS)
    keys = list(parameters)
    v = {"d" + k: np.zeros_like(a) for k, a in parameters.items()}
    s = {"d" + k: np.zeros_like(a) for k, a in parameters.items()}
    m = X.shape[1]
    t, seed, learning_rate0, costs = 0, 10, learning_rate, []
    for i in range(num_epochs):
        seed = seed + 1
        permutation = np.random.RandomState(seed).permutation(m)  # np.random.seed(seed)
        shuffled_X, shuffled_Y = X[:, permutation], Y[:, permutation]
        cost_total = 0
        for k in range(0, m, mini_batch_size):
            mb_X = shuffled_X[:, k:k + mini_batch_size]
            mb_Y = shuffled_Y[:, k:k + mini_batch_size]
            a3, caches = forward_propagation(mb_X, parameters)
            cost_total += compute_cost(a3, mb_Y)
            grads = backward_propagation(mb_X, mb_Y, caches)
            t = t + 1
            for key in keys:
                g = grads["d" + key]
                if optimizer == "gd":
                    parameters[key] = parameters[key] - learning_rate * g
                elif optimizer == "momentum":
                    v["d" + key] = beta * v["d" + key] + (1 - beta) * g
                    parameters[key] = parameters[key] - learning_rate * v["d" + key]
                else:
                    v["d" + key] = beta1 * v["d" + key] + (1 - beta1) * g
                    s["d" + key] = beta2 * s["d" + key] + (1 - beta2) * g ** 2
                    v_hat = v["d" + key] / (1 - beta1 ** t)
                    s_hat = s["d" + key] / (1 - beta2 ** t)
                    parameters[key] = parameters[key] - learning_rate * (
                        v_hat / (np.sqrt(s_hat) + epsilon))
        costs.append(cost_total / m)
        if decay:
            learning_rate = decay(learning_rate0, i, decay_rate)
    return parameters, costs


@pytest.mark.parametrize("optimizer, lr, batch, decay", [
    ("gd", 0.05, 64, None),
    ("momentum", 0.05, 50, None),      # 300 = 6 x 50: no short last batch
    ("adam", 0.01, 64, None),
    ("adam", 0.01, 128, update_lr),
    ("momentum", 0.3, 300, schedule_lr_decay),  # batch gradient descent
    ("gd", 0.01, 1, None),             # stochastic gradient descent
])
def test_model_equals_the_course_loop(optimizer, lr, batch, decay, data):
    X, Y = data
    epochs = 3 if batch == 1 else 40
    expected, costs = course_loop(X, Y, optimizer, lr, batch, epochs, decay=decay,
                                  decay_rate=0.5)
    parameters = model(X, Y, LAYERS, optimizer, learning_rate=lr, mini_batch_size=batch,
                       num_epochs=epochs, print_cost=False, decay=decay, decay_rate=0.5)
    assert list(parameters) == list(expected)
    for key in expected:
        np.testing.assert_allclose(parameters[key], expected[key], rtol=1e-10, atol=1e-12,
                                   err_msg=key)
    # the per-epoch costs model's loop yields
    p = initialize_parameters(LAYERS)
    state = train.initial_state(optimizer, p)
    step = train.update_step(optimizer, fastoptim.update_parameters_with_gd,
                             fastoptim.update_parameters_with_momentum,
                             fastoptim.update_parameters_with_adam)
    yielded = [c for _, c, _ in train.train_epochs(X, Y, p, state, step, lr, batch, epochs,
                                                   decay, 0.5)]
    np.testing.assert_allclose(yielded, costs, rtol=1e-10)


def test_model_prints_every_1000_epochs_only_when_asked(data, capsys):
    X, Y = data
    model(X, Y, LAYERS, "gd", num_epochs=1001)
    out = capsys.readouterr().out
    assert [i for i, _ in printed(COST_LINE, out)] == [0, 1000]
    assert "learning rate" not in out
    model(X, Y, LAYERS, "gd", num_epochs=5, print_cost=False)
    assert capsys.readouterr().out == ""


def test_model_float32(data):
    X, Y = data
    p32 = model(X.astype(np.float32), Y, LAYERS, "adam", num_epochs=100, print_cost=False)
    p64 = model(X, Y, LAYERS, "adam", num_epochs=100, print_cost=False)
    for key in p64:
        assert p32[key].dtype == np.float32
        np.testing.assert_allclose(p32[key], p64[key], rtol=1e-3, atol=1e-4, err_msg=key)


def test_model_leaves_the_inputs_and_global_random_state_alone(data):
    X, Y = data
    X_before, Y_before = X.copy(), Y.copy()
    saved = np.random.get_state()
    model(X, Y, LAYERS, "momentum", num_epochs=3, print_cost=False)
    now = np.random.get_state()
    np.testing.assert_array_equal(now[1], saved[1])
    assert now[2:] == saved[2:]
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(Y, Y_before)


def test_model_rejects_bad_arguments(data):
    X, Y = data
    with pytest.raises(ValueError, match="optimizer"):
        model(X, Y, LAYERS, "sgd", num_epochs=1)
    with pytest.raises(ValueError, match="X and Y"):
        model(X, Y[:, :10], LAYERS, "gd", num_epochs=1)
    with pytest.raises(ValueError, match="learning_rate"):
        model(X, Y, LAYERS, "gd", learning_rate=-1.0, num_epochs=1, print_cost=False)


# ------------------------------------------------ the CLI


def table(out):
    """{optimizer name: [column values]} from the printed table."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("optimizer "))
    rows = {}
    for line in lines[start + 2:]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells[1:]
    return rows


def run_cli(argv, capsys):
    status = train.main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_cli_end_to_end_with_a_plot(tmp_path, capsys, data):
    pytest.importorskip("matplotlib")
    from matplotlib import image

    png = tmp_path / "run.png"
    status, out, err = run_cli(["--epochs", "30", "--plot", str(png)], capsys)
    assert status == 0
    assert err == ""  # not a terminal: no progress frames
    assert "== gradient descent ==" in out and "== adam ==" in out
    costs = printed(COST_LINE, out)
    np.testing.assert_allclose([c for _, c in costs],
                               [COURSE_COSTS[o][0] for o in ("gd", "momentum", "adam")],
                               atol=1.01e-6)
    rows = table(out)
    assert list(rows) == ["gradient descent", "momentum", "adam"]
    X, Y = data
    for name, optimizer in [("gradient descent", "gd"), ("momentum", "momentum"),
                            ("adam", "adam")]:
        final_cost, acc, course, ms_per_epoch, update_c, update_numpy, speedup = rows[name]
        parameters = model(X, Y, LAYERS, optimizer, num_epochs=30, print_cost=False)
        assert acc == f"{accuracy_percent(X, Y, parameters):.1f}%"
        assert course == "-"  # 30 epochs: not a published setting
        assert float(ms_per_epoch) > 0
        assert float(update_numpy.split()[0]) > 0
        if "c" in train._backends():
            assert float(update_c.split()[0]) > 0 and speedup.endswith("x")
    assert out.endswith(f"\nwrote {png}\n")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = image.imread(str(png))
    assert pixels.shape[0] >= 200 and pixels.shape[1] >= 3 * pixels.shape[0]  # four panels
    assert pixels[..., :3].std() > 0.05  # something was drawn


@pytest.mark.parametrize("name, written, magic", [
    ("noext", "noext.png", b"\x89PNG"),
    ("run.v2", "run.v2.png", b"\x89PNG"),
    ("run.svg", "run.svg", b"<?xml"),
])
def test_cli_plot_reports_the_file_it_wrote(name, written, magic, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    status, out, _ = run_cli(["--epochs", "2", "--optimizer", "gd", "--plot",
                              str(tmp_path / name)], capsys)
    assert status == 0
    assert out.endswith(f"\nwrote {tmp_path / written}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == [written]
    assert (tmp_path / written).read_bytes().startswith(magic)


def fake_runs(costs, data):
    """_Run objects with the given cost curves ({optimizer: costs per epoch})."""
    X, Y = data
    runs = []
    for optimizer, curve in costs.items():
        run = train._Run(optimizer)
        run.costs = list(enumerate(curve))
        run.parameters = initialize_parameters(LAYERS)
        run.accuracy = accuracy_percent(X, Y, run.parameters)
        runs.append(run)
    return runs


def legend_texts(legend):
    return [t.get_text() for t in legend.get_texts()]


def test_plot_every_panel_is_labelled_and_every_curve_visible(data):
    pytest.importorskip("matplotlib")
    X, Y = data
    epochs = np.arange(100)
    slow = 0.7 - 1e-4 * epochs
    runs = fake_runs({"gd": slow, "momentum": slow + 3e-5, "adam": 0.7 * np.exp(-epochs / 20)},
                     data)
    fig = train._figure(runs, X, Y, train._parser().parse_args(["--epochs", "100"]))
    cost_axes, *boundary_axes = fig.axes
    assert len(boundary_axes) == 3
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title()
    for ax, run in zip(boundary_axes, runs):
        assert ax.get_title() == (f"{train.OPTIMIZER_NAMES[run.optimizer]}: "
                                  f"{run.accuracy:.1f}% training accuracy")
    # distinct line styles and markers: a curve drawn over another still shows
    lines = cost_axes.get_lines()
    assert len(lines) == 3
    assert len({line.get_linestyle() for line in lines}) == 3
    assert len({line.get_marker() for line in lines}) == 3
    # a note where two curves coincide, and only there
    labels = legend_texts(cost_axes.get_legend())
    assert labels[0] == "gradient descent" and labels[2] == "adam"
    assert labels[1] == ("momentum\n(on top of gradient descent:\n"
                         "costs differ by 0.00003 at most)")
    # the classes: a legend for the points, the predicted regions and the boundary
    figure_legend = legend_texts(fig.legends[0])
    assert figure_legend == ["class 0 (y = 0)", "predicted 0", "class 1 (y = 1)",
                             "predicted 1", "decision boundary"]


def test_plot_has_no_note_when_curves_differ(data):
    pytest.importorskip("matplotlib")
    X, Y = data
    epochs = np.arange(100)
    runs = fake_runs({"gd": 0.7 - 1e-3 * epochs, "momentum": 0.7 - 2e-3 * epochs}, data)
    fig = train._figure(runs, X, Y, train._parser().parse_args([]))
    assert legend_texts(fig.axes[0].get_legend()) == ["gradient descent", "momentum"]


def test_no_progress_frames_when_stderr_is_not_a_terminal(capsys):
    bar = train._progress(100, "adam")
    assert isinstance(bar, train._PlainProgress)
    for _ in range(100):
        bar.update(1)
    bar.write("Cost after epoch 0: 0.5")
    bar.close()
    assert capsys.readouterr() == ("Cost after epoch 0: 0.5\n", "")


def test_tqdm_on_a_terminal(monkeypatch, capsys):
    tqdm = pytest.importorskip("tqdm")

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    bar = train._progress(100, "adam")
    assert isinstance(bar, tqdm.tqdm)
    bar.update(50)
    bar.write("Cost after epoch 0: 0.5")
    bar.close()
    assert "adam:" in term.getvalue() and "50/100" in term.getvalue()
    assert capsys.readouterr().out == "Cost after epoch 0: 0.5\n"


def backends():
    return ["numpy", "c"] if "c" in train._backends() else ["numpy"]


def test_cli_backends_train_the_same_model(capsys, data):
    X, Y = data
    results = {}
    for backend in backends():
        status, out, _ = run_cli(["--epochs", "40", "--optimizer", "adam", "--backend", backend],
                                 capsys)
        assert status == 0
        assert f"training with the {backend}" in out
        results[backend] = table(out)["adam"][:2]
    # the final cost and accuracy model() gives, whichever backend trained
    p = initialize_parameters(LAYERS)
    state = train.initial_state("adam", p)
    step = train.update_step("adam", fastoptim.update_parameters_with_gd,
                             fastoptim.update_parameters_with_momentum,
                             fastoptim.update_parameters_with_adam)
    *_, (_, final_cost, _) = train.train_epochs(X, Y, p, state, step, 0.0007, 64, 40)
    for backend, (cost, acc) in results.items():
        assert cost == f"{final_cost:.6f}", backend
        assert acc == f"{accuracy_percent(X, Y, p):.1f}%", backend


def test_cli_decay_prints_the_learning_rate(capsys):
    status, out, _ = run_cli(["--epochs", "1001", "--optimizer", "gd", "--learning-rate", "0.1",
                              "--decay", "schedule"], capsys)
    assert status == 0
    assert printed(RATE_LINE, out) == [(0, 0.1), (1000, 0.05)]
    assert printed(COST_LINE, out) == [(0, pytest.approx(0.701091, abs=1.01e-6)),
                                       (1000, pytest.approx(0.127161, abs=1.01e-6))]


@pytest.mark.slow
def test_cli_10000_epochs_reproduces_the_course_table(capsys):
    status, out, _ = run_cli(["--epochs", "10000"], capsys)  # all three optimizers
    assert status == 0
    rows = table(out)
    for name, optimizer in [("gradient descent", "gd"), ("momentum", "momentum"),
                            ("adam", "adam")]:
        acc, course = rows[name][1:3]
        assert course == f"{COURSE_ACCURACY_10000[optimizer]:.1f}%"
        assert abs(float(acc.rstrip("%")) - COURSE_ACCURACY_10000[optimizer]) <= TWO_SAMPLES


def test_cli_defaults_are_the_course_run():
    args = train._parser().parse_args([])
    assert (args.optimizer, args.epochs, args.learning_rate, args.mini_batch_size,
            args.decay) == ("all", 5000, 0.0007, 64, "none")
    for optimizer, expected in COURSE_ACCURACY_5000.items():
        assert train._course_accuracy(optimizer, args) == expected
    args = train._parser().parse_args(["--learning-rate", "0.001"])
    assert train._course_accuracy("adam", args) is None


def test_cli_plot_without_matplotlib_fails_before_training(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    status, out, err = run_cli(["--epochs", "3", "--plot", str(tmp_path / "x.png")], capsys)
    assert status == 2
    assert "matplotlib" in err and "pip install" in err
    assert "Cost after" not in out
    assert not (tmp_path / "x.png").exists()


def test_cli_without_tqdm_uses_the_plain_progress(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    assert isinstance(train._progress(10, "gd"), train._PlainProgress)
    status, out, _ = run_cli(["--epochs", "3", "--optimizer", "momentum"], capsys)
    assert status == 0 and list(table(out)) == ["momentum"]


def test_plain_progress_on_a_terminal(capsys):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    bar = train._PlainProgress(100, "adam", file=term)
    bar.update(1)
    bar.write("Cost after epoch 0: 0.5")
    for _ in range(99):
        bar.update(1)
    bar.close()
    text = term.getvalue()
    assert text.startswith("\radam:   1% 1/100 epochs\r\033[K\radam:   2% 2/100 epochs")
    assert text.count("\r") == 1 + 1 + 99  # 1%, the clear, then 2% .. 100%
    assert text.endswith("\radam: 100% 100/100 epochs\n")
    assert capsys.readouterr().out == "Cost after epoch 0: 0.5\n"
    # redrawn only when the percentage changes
    term = Terminal()
    bar = train._PlainProgress(1000, "gd", file=term)
    for _ in range(9):
        bar.update(1)
    assert term.getvalue() == "\rgd:   0% 1/1000 epochs"


def test_cli_c_backend_unavailable(monkeypatch, capsys):
    from fastoptim import _fallback

    monkeypatch.setattr(train, "_backends", lambda: {"numpy": train._Backend(_fallback)})
    status, out, err = run_cli(["--epochs", "2", "--backend", "c"], capsys)
    assert status == 2 and "not available" in err and "Cost after" not in out
    status, out, _ = run_cli(["--epochs", "2", "--backend", "numpy", "--optimizer", "gd"],
                             capsys)
    assert status == 0
    assert table(out)["gradient descent"][4:] == ["n/a", table(out)["gradient descent"][5],
                                                  "n/a"]


def test_timed_step_compares_backends_on_identical_inputs():
    seen = {"real": [], "other": []}

    def recorder(name):
        def step(p, g, state, t, lr):
            seen[name].append((t, {k: a.copy() for k, a in p.items()},
                               {k: a.copy() for k, a in state[0].items()}))
            for k in p:  # a real update: p -= lr * g, v = g
                p[k] -= lr * g["d" + k]
                state[0]["d" + k][...] = g["d" + k]
        return step

    parameters = initialize_parameters([2, 3, 1])
    state = ({"d" + k: np.zeros_like(a) for k, a in parameters.items()},)
    timed = train._TimedStep({"real": recorder("real"), "other": recorder("other")}, "real",
                             parameters, state, stride=3)
    rng = np.random.RandomState(0)
    for t in range(1, 11):
        grads = {"d" + k: rng.randn(*a.shape) for k, a in parameters.items()}
        timed(parameters, grads, state, t, 0.1)
    assert [t for t, _, _ in seen["real"]] == list(range(1, 11))
    assert [t for t, _, _ in seen["other"]] == [3, 6, 9]
    real = {t: (p, v) for t, p, v in seen["real"]}
    for t, p, v in seen["other"]:  # the same parameters and state as the real update saw
        for k in p:
            np.testing.assert_array_equal(p[k], real[t][0][k])
        for k in v:
            np.testing.assert_array_equal(v[k], real[t][1][k])
    assert timed.calls == 10 and timed.compared == 3
    assert set(timed.per_step()) == {"real", "other"}


@pytest.mark.parametrize("argv", [["--epochs", "0"], ["--optimizer", "sgd"],
                                  ["--mini-batch-size", "0"], ["--learning-rate", "nan"],
                                  ["--decay", "cosine"], ["--backend", "gpu"],
                                  ["--decay-rate", "-1"],
                                  ["--plot", "/nonexistent-folder/run.png"]])
def test_cli_rejects_bad_options(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        train.main(argv)
    assert exc.value.code == 2
    assert capsys.readouterr().err


def test_cli_leaves_the_global_random_state_alone(capsys):
    saved = np.random.get_state()
    assert train.main(["--epochs", "2", "--optimizer", "adam"]) == 0
    now = np.random.get_state()
    np.testing.assert_array_equal(now[1], saved[1])


def test_python_dash_m_fastoptim_train(tmp_path):
    env = dict(os.environ)
    result = subprocess.run(
        [sys.executable, "-m", "fastoptim", "train", "--epochs", "3", "--optimizer", "gd"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # output to a pipe: no progress frames
    assert "Cost after epoch 0: 0.702405" in result.stdout
    assert list(table(result.stdout)) == ["gradient descent"]
    assert f"training with the {fastoptim.BACKEND}" in result.stdout
