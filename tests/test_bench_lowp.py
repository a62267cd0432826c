"""python -m fastoptim bench --algo lowp runs and reports every configuration
(no timing is asserted), with state bytes per parameter counted from the
formats (independently here)."""
import io
import math

import pytest

import fastoptim
from fastoptim.benchmarks import cli as _cli

pytest.importorskip("fastoptim._core", reason="the lowp bench times the compiled backend")
pytest.importorskip("ml_dtypes")
if fastoptim.BACKEND != "c":
    pytest.skip("the lowp bench's rows are the compiled step's and its ceiling",
                allow_module_level=True)
from fastoptim.benchmarks import lowp as _lowp  # noqa: E402

TINY = ["--algo", "lowp", "--quick", "--rounds", "1", "--min-ms", "0.2", "--threads", "1"]


def _expected_bytes(config_id, n):
    """Adam's two states per parameter: float32 (4 + 4), bfloat16 (2 + 2), or
    8-bit codes (1 + 1) with one float32 maximum per block of 256 for each; a
    Kahan compensation in the parameter's 16 bits."""
    blocks = math.ceil(n / 256)
    return n * {"fp32": 8, "bf16": 8, "bf16-kahan": 10, "bf16-sr": 8, "f16": 8,
                "bf16-bf16-sr": 4, "fp32-bf16": 4}.get(config_id, 2) + (
        2 * 4 * blocks if "8bit" in config_id else 0)


def test_every_configuration_has_a_row_and_its_state_bytes():
    out = io.StringIO()
    n = 5000  # above min_8bit_size (4096): the 8-bit rows keep codes
    assert _cli.main(TINY + ["--sizes", str(n)], out=out) == 0
    text = out.getvalue().splitlines()
    for config in _lowp.CONFIGS:
        row = next(line for line in text if line.startswith(config.title + " "))
        cells = row[len(config.title):].split()
        assert float(cells[0]) == pytest.approx(_expected_bytes(config.id, n) / n, rel=1e-3)
        assert float(cells[1]) > 0 and cells[3].endswith("%"), row
    assert any("state bytes per parameter" in line and "met" in line for line in text)


@pytest.mark.parametrize("config", _lowp.CONFIGS, ids=lambda c: c.id)
def test_each_contender_steps(config):
    inputs = _lowp.Inputs(1000, config)
    steps, skipped = _lowp.B.build(config.name, inputs)
    assert _lowp.B.SUBJECT in steps and _lowp.B.CEILING in steps
    for step in steps.values():
        step()
