/* For the files compiled once per instruction set (kernels.c, formats.c; see
 * CMakeLists.txt): FO_FN(name) is name_<FO_ISA>, the symbol the driver's
 * dispatch table picks at run time; FO_INLINE forces inlining, so that each
 * loop is instantiated with its flags as constants. */
#ifndef FASTOPTIM_ISA_H
#define FASTOPTIM_ISA_H

#ifndef FO_ISA
#define FO_ISA baseline
#endif
#define FO_CAT_(a, b) a##_##b
#define FO_CAT(a, b) FO_CAT_(a, b)
#define FO_FN(name) FO_CAT(name, FO_ISA)

#if defined(__GNUC__) || defined(__clang__)
#define FO_INLINE static inline __attribute__((always_inline))
#else
#define FO_INLINE static inline
#endif

#endif
