"""The documentation covers the public API: every public name of fastoptim and
of fastoptim.schedules has its entry in docs/ (tools/check_docs.sh builds the
site and fails on any warning; this test needs no Sphinx)."""
import glob
import os
import re

import fastoptim
import fastoptim.optimizers
import fastoptim.schedules

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


def documented():
    """Names given to an auto* or py directive in docs/*.rst."""
    names = set()
    for path in glob.glob(os.path.join(DOCS, "*.rst")):
        with open(path, encoding="utf-8") as f:
            names.update(re.findall(r"^\s*\.\. (?:auto)?(?:class|function|data|module)::\s+(\S+)",
                                    f.read(), re.MULTILINE))
    return names


def test_every_public_name_is_documented():
    names = documented()
    expected = {f"fastoptim.{n}" for n in fastoptim.__all__}
    expected |= {f"fastoptim.schedules.{n}" for n in fastoptim.schedules.__all__
                 if n not in ("update_lr", "schedule_lr_decay")}   # as fastoptim.update_lr, ...
    missing = sorted(expected - names)
    assert not missing, f"not in docs/*.rst: {missing}"


def test_every_optimizer_has_its_class_entry():
    """A class added to optimizers.__all__ needs its autoclass in docs/optimizers.rst."""
    with open(os.path.join(DOCS, "optimizers.rst"), encoding="utf-8") as f:
        text = f.read()
    for name in fastoptim.optimizers.__all__:
        if name != "Optimizer":
            assert f".. autoclass:: fastoptim.{name}\n" in text, name
