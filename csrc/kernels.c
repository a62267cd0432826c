/* The rules' element loops. This file is compiled once per instruction set with
 * FO_ISA set to baseline, avx2 or avx512 (see CMakeLists.txt); the compiler
 * vectorizes each loop for that set. Build flags that matter:
 *   -fno-math-errno   lets sqrt vectorize (else a libm call per element);
 *   -ffp-contract=off no fused multiply-add, so every level gives bitwise the
 *                     same results as the others and as the NumPy fallback. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "convert.h"
#include "isa.h"
#include "kernels.h"

/* Vector types with element-wise arithmetic (gcc >= 9, clang). */
#if ((defined(__GNUC__) && __GNUC__ >= 9) || defined(__clang__)) && !defined(FO_NO_VECTOR_EXT)
#define FO_VECTOR_EXT 1
#endif

#define T float
#define SFX f32
#define FO_SQRT sqrtf
#define FO_FABS fabsf
#define FO_L2_SUM(g, wd, p) ((float)((double)(g) + (double)(wd) * (double)(p)))
#define FO_EPSILON FLT_EPSILON
#define FO_STAGED
#include "kernels.inc"
#undef FO_STAGED
#undef T
#undef SFX
#undef FO_SQRT
#undef FO_FABS
#undef FO_L2_SUM
#undef FO_EPSILON

#define T double
#define SFX f64
#define FO_SQRT sqrt
#define FO_FABS fabs
#define FO_L2_SUM(g, wd, p) ((g) + (wd) * (p))
#define FO_EPSILON DBL_EPSILON
#include "kernels.inc"
#undef T
#undef SFX
#undef FO_SQRT
#undef FO_FABS
#undef FO_EPSILON

#define FO_ENTRY(ID, name, ...) [FO_RULE_##ID] = {FO_FN(name##_prepare_f32), FO_FN(name##_prepare_f64)},
#define FO_KERNEL(ID, name, ...) [FO_RULE_##ID] = {FO_FN(name##_f32), FO_FN(name##_f64)},
#define FO_STAGED_KERNEL(ID, name, ...) [FO_RULE_##ID] = FO_FN(name##_staged_f32),
#define FO_FINISH(ID, name) [FO_RULE_##ID] = {FO_FN(name##_finish_f32), FO_FN(name##_finish_f64)},
const fo_kernels FO_CAT(fo_kernels, FO_ISA) = {
    .prepare = {FO_RULES(FO_ENTRY)},
    .kernel = {FO_RULES(FO_KERNEL)},
    .finish = {FO_REDUCE_RULES(FO_FINISH)},
    .staged = {FO_RULES(FO_STAGED_KERNEL)},
    .sumsq = {FO_FN(sumsq_f32), FO_FN(sumsq_f64)},
    .maxabs = {FO_FN(maxabs_f32), FO_FN(maxabs_f64)},
    .ema = {FO_FN(ema_f32), FO_FN(ema_f64)},
    .sum_sources = {FO_FN(sum_sources_f32), FO_FN(sum_sources_f64)},
    .ceiling = {FO_FN(ceiling_f32), FO_FN(ceiling_f64)},
};
