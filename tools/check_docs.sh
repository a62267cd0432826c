#!/usr/bin/env bash
# The documentation and the type stubs: the Sphinx site built with every warning
# and every broken cross-reference an error, the optimizer stub up to date with
# the declarations, the typed example under mypy --strict, and stubtest's
# comparison of the stubs with the runtime. Needs fastoptim installed with the
# docs extra (pip install ".[docs]"); exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "=== Sphinx: docs -> docs/_build/html (-W -n) ==="
start=$SECONDS
python -m sphinx -E -W --keep-going -n -q -b html docs docs/_build/html
echo "built in $((SECONDS - start)) s"

echo "=== the optimizer stub is what tools/optimizer_stubs.py writes ==="
python tools/optimizer_stubs.py --check

echo "=== mypy --strict examples/typed_usage.py ==="
MYPYPATH="$root/src" python -m mypy --strict --cache-dir "$tmp/mypy-cache" examples/typed_usage.py

echo "=== stubtest: src/fastoptim/**/*.pyi against the runtime ==="
(cd src && find fastoptim -name '*.pyi' -exec install -D -m 644 {} "$tmp/stubs/{}" \;)
(cd "$tmp" && MYPYPATH="$tmp/stubs" python -m mypy.stubtest --concise --ignore-unused-allowlist \
    --allowlist "$root/tools/stubtest-allowlist.txt" fastoptim)
echo "stubtest: no differences"
