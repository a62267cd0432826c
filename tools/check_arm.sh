#!/usr/bin/env bash
# aarch64: every rule of csrc/rules.h through the C API (tests/kernels_check.c),
# cross-compiled with Debian's aarch64 compiler and run under qemu-user, in two
# builds: NEON (ARMv8-A's vector unit, always present on aarch64: the compiler
# vectorizes the kernels for it, as a wheel's build does) and scalar (no
# vectorization, no vector types). Both must print the same hashes of every
# output bit, and the same as this machine's native build: the kernels give the
# same bits on ARM, with or without NEON, as on x86.
#
# Needs gcc-aarch64-linux-gnu and qemu-user (Debian packages; .ci/run installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
src="tests/kernels_check.c csrc/driver.c csrc/pool.c csrc/spans.c csrc/kernels.c csrc/formats.c"
flags="-O3 -std=c99 -D_GNU_SOURCE -Icsrc -fno-math-errno -ffp-contract=off"
scalar="-DFO_NO_VECTOR_EXT -fno-tree-vectorize -fno-tree-slp-vectorize"

# shellcheck disable=SC2086
cc $flags $src -lm -lpthread -o "$tmp/native"
# shellcheck disable=SC2086
aarch64-linux-gnu-gcc $flags $src -lm -lpthread -o "$tmp/neon"
# shellcheck disable=SC2086
aarch64-linux-gnu-gcc $flags $scalar $src -lm -lpthread -o "$tmp/scalar"
vectors=$(aarch64-linux-gnu-objdump -d "$tmp/neon" | grep -cE 'f(sqrt|div|mul)\s+v[0-9]+\.[24][sd]' || true)
echo "aarch64 NEON build: $vectors vector sqrt/div/mul instructions"
[ "$vectors" -gt 0 ] || { echo "check_arm.sh: the NEON build is not vectorized" >&2; exit 1; }

"$tmp/native" > "$tmp/native.txt"
qemu-aarch64 -L /usr/aarch64-linux-gnu "$tmp/neon" > "$tmp/neon.txt"
qemu-aarch64 -L /usr/aarch64-linux-gnu "$tmp/scalar" > "$tmp/scalar.txt"
cases=$(wc -l < "$tmp/native.txt")
grep -q refused "$tmp/native.txt" && { echo "check_arm.sh: a case was refused" >&2; exit 1; }
diff "$tmp/neon.txt" "$tmp/scalar.txt" > /dev/null || { echo "NEON != scalar" >&2; diff "$tmp/neon.txt" "$tmp/scalar.txt" | head >&2; exit 1; }
diff "$tmp/neon.txt" "$tmp/native.txt" > /dev/null || { echo "aarch64 != native" >&2; diff "$tmp/neon.txt" "$tmp/native.txt" | head >&2; exit 1; }
echo "aarch64 NEON == aarch64 scalar == $(uname -m) native, bitwise: $cases cases"
