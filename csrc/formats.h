/* Storage formats: per-block element operations, compiled once per instruction
 * set (formats.c) and reached through a table picked at run time (driver.c).
 * Internal to the library. */
#ifndef FASTOPTIM_FORMATS_H
#define FASTOPTIM_FORMATS_H

#include <stddef.h>
#include <stdint.h>

#include "fastoptim.h"

/* The 8-bit quantizer of one dynamic map (FO_FMT_Q8, FO_FMT_Q8_UNSIGNED): the
 * 256 values in code order, and the nearest code of a value x in [-1, 1]
 * (x = s / absmax) found from its magnitude a = |x|: j = the number of
 * magnitude thresholds <= a, where thr[j] is the smallest float above the
 * midpoint of magnitudes j and j+1 (so a tie goes to the smaller magnitude).
 * Every float with the same top 16 bits (a "bucket", key = bits >> 16) lies
 * between the same thresholds but at most one, which then has the bucket's
 * top bits too (checked at start-up): bucket[key] = (the thresholds below the
 * bucket) << 17 | (the low 16 bits of the one inside it, or 0x10000), so that
 * j = (bucket >> 17) + (a's low 16 bits >= bucket & 0x1FFFF): one table read
 * and one integer comparison. Signed map: the code of x is 127 + j, or
 * 127 - min(j, 127) below zero; unsigned map: j (x <= 0: 0). */
#define FO_Q8_KEY0 0x3400u        /* 2^-23: every threshold is above it */
#define FO_Q8_KEYS 0xB81u         /* keys 0x3400 .. 0x3F80 (1.0) */
typedef struct {
    float value[256];             /* the map, in code order */
    float thr[257];               /* magnitude thresholds, then +inf */
    uint32_t bucket[FO_Q8_KEYS];  /* keys below 0x3400 read 0, above 0x3F80 the last */
    int zero;                     /* the code of 0 */
    int nmag;                     /* magnitudes: 129 (signed) or 256 */
} fo_qmap;

/* maps[0] signed, maps[1] unsigned; built by fo_qmaps_init (driver.c). */
extern fo_qmap fo_qmaps[2];

typedef struct {
    /* 16-bit to float32 and back (nearest even; stochastic from element `first`) */
    void (*load16[2])(size_t n, float *dst, const uint16_t *src);
    void (*store16[2])(size_t n, uint16_t *dst, const float *src);
    void (*store16_sr[2])(size_t n, uint16_t *dst, const float *src, uint64_t key,
                          uint64_t first);
    /* 8-bit: one block (n <= FO_Q8_BLOCK) of codes to values, and values to
     * codes, returning the block's absolute maximum */
    void (*q8_load)(size_t n, float *dst, const uint8_t *codes, float absmax,
                    const fo_qmap *q);
    float (*q8_store)(size_t n, uint8_t *codes, const float *src, const fo_qmap *q);
    /* ceilings: read nbytes of g once (an xor of its words), and add that to
     * n elements of 1, 2 or 4 bytes */
    uint32_t (*read_bytes)(size_t nbytes, const void *g);
    void (*touch[3])(size_t n, void *x, uint32_t c);
    const char *impl;
} fo_formats_kernels;

extern const fo_formats_kernels fo_formats_baseline;
#ifdef FO_MULTI_ISA
extern const fo_formats_kernels fo_formats_avx2;
extern const fo_formats_kernels fo_formats_avx512;
extern const fo_formats_kernels fo_formats_avx512bf16;
#endif

#endif
