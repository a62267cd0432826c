/* The element loops. This file is compiled once per instruction set with
 * FO_ISA set to baseline, avx2 or avx512 (see CMakeLists.txt); the compiler
 * vectorizes each loop for that set. Build flags that matter:
 *   -fno-math-errno   lets sqrt vectorize (else a libm call per element);
 *   -ffp-contract=off no fused multiply-add, so every level gives bitwise the
 *                     same results as the others and as the NumPy fallback. */
#include <math.h>

#include "kernels.h"

#ifndef FO_ISA
#define FO_ISA baseline
#endif
#define FO_CAT_(a, b) a##_##b
#define FO_CAT(a, b) FO_CAT_(a, b)
#define FO_FN(name) FO_CAT(name, FO_ISA)

#define T float
#define SFX f32
#define FO_SQRT sqrtf
#include "kernels.inc"
#undef T
#undef SFX
#undef FO_SQRT

#define T double
#define SFX f64
#define FO_SQRT sqrt
#include "kernels.inc"
#undef T
#undef SFX
#undef FO_SQRT

const fo_kernels FO_CAT(fo_kernels, FO_ISA) = {
    FO_FN(gd_f32), FO_FN(gd_f64),
    FO_FN(mom_f32), FO_FN(mom_f64),
    FO_FN(adam_f32), FO_FN(adam_f64),
    FO_FN(ceil_f32), FO_FN(ceil_f64),
};
