/* 16-bit conversions, one element portably and V lanes in vector registers,
 * for the files compiled once per instruction set that stage 16-bit streams
 * (formats.c: the block conversions and write-backs; kernels.inc: the staged
 * rule loops). Every path gives the same bits as the others and as the NumPy
 * twin (fastoptim._fallback's storage section):
 *   float16   IEEE round to nearest even, subnormals kept, overflow to Inf; a NaN
 *             keeps its sign and top payload bits and is made quiet (F16C's rule);
 *   bfloat16  round to nearest even of float32's top half; float32 subnormals
 *             and zeros become signed zeros and a NaN is made quiet
 *             (vcvtneps2bf16's rule); widening is exact (a shift).
 * V is defined where the instruction set has vector conversions (AVX2 with
 * F16C, AVX-512F). */
#ifndef FASTOPTIM_CONVERT_H
#define FASTOPTIM_CONVERT_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "fastoptim.h"
#include "isa.h"

#if defined(__AVX512F__) || defined(__AVX2__) || defined(__F16C__) || defined(__AVX512BF16__)
#include <immintrin.h>
#endif

FO_INLINE uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

FO_INLINE float bitsf(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ---- one element, portably --------------------------------------------------- */

FO_INLINE float f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
    uint32_t u;
    if (e == 0x1Fu)                      /* Inf, NaN (made quiet) */
        u = sign | 0x7F800000u | (m << 13) | (m ? 0x00400000u : 0u);
    else if (e)                          /* normal */
        u = sign | ((e + 112u) << 23) | (m << 13);
    else                                 /* zero, subnormal: m * 2^-24, exact */
        u = sign | fbits((float)m * 0x1p-24f);
    return bitsf(u);
}

FO_INLINE uint16_t f32_to_f16(float f)
{
    const uint32_t u = fbits(f), sign = (u >> 16) & 0x8000u, a = u & 0x7FFFFFFFu;
    uint32_t h;
    if (a > 0x7F800000u)                 /* NaN: quiet, top payload bits */
        h = 0x7E00u | ((a >> 13) & 0x3FFu);
    else if (a >= 0x477FF000u)           /* >= 65520 (the midpoint above 65504): Inf */
        h = 0x7C00u;
    else if (a >= 0x38800000u)           /* >= 2^-14: normal, round at bit 13 */
        h = ((a + 0x0FFFu + ((a >> 13) & 1u)) >> 13) - (112u << 10);
    else {                               /* subnormal or zero: round(a * 2^24) */
        const uint32_t e = a >> 23, mant = (a & 0x7FFFFFu) | (e ? 0x800000u : 0u);
        const uint32_t s = e > 95u ? 126u - e : 31u;  /* 14 .. 31 */
        h = (mant + (1u << (s - 1)) - 1u + ((mant >> s) & 1u)) >> s;
    }
    return (uint16_t)(sign | h);
}

FO_INLINE float bf16_to_f32(uint16_t h) { return bitsf((uint32_t)h << 16); }

FO_INLINE uint16_t f32_to_bf16(float f)
{
    const uint32_t u = fbits(f), a = u & 0x7FFFFFFFu;
    const uint32_t nan = (u >> 16) | 0x40u;                       /* quiet */
    const uint32_t zero = (u >> 16) & 0x8000u;                    /* signed zero */
    const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    return (uint16_t)(a > 0x7F800000u ? nan : a < 0x00800000u ? zero : rounded);
}

/* ---- V lanes in vector registers: widen (exact) and narrow (the rules above) ---- */
#if defined(__AVX512F__)
#define V 16
typedef __m512 vf;
typedef __m256i vh;
#define VH_LOAD(p) _mm256_loadu_si256((const __m256i *)(const void *)(p))
#define VH_STORE(p, h) _mm256_storeu_si256((__m256i *)(void *)(p), (h))
#define VF_LOAD(p) _mm512_loadu_ps(p)
#define VF_STORE(p, x) _mm512_storeu_ps((p), (x))
#define VF_ADD(a, b) _mm512_add_ps((a), (b))

FO_INLINE vf widen_f16(vh h) { return _mm512_cvtph_ps(h); }
FO_INLINE vf widen_bf16(vh h)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
FO_INLINE vh narrow_f16(vf x)
{
    return _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
FO_INLINE vh narrow_bf16(vf x)
{
#if defined(__AVX512BF16__)
    const __m256bh h = _mm512_cvtneps_pbh(x);
    vh r;
    memcpy(&r, &h, sizeof r);
    return r;
#else
    /* f32_to_bf16, 16 at a time (the compiler vectorizes it poorly) */
    const __m512i u = _mm512_castps_si512(x);
    const __m512i a = _mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF));
    const __m512i top = _mm512_srli_epi32(u, 16);
    __m512i r = _mm512_srli_epi32(
        _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7FFF),
                                             _mm512_and_si512(top, _mm512_set1_epi32(1)))), 16);
    r = _mm512_mask_mov_epi32(r, _mm512_cmpgt_epu32_mask(a, _mm512_set1_epi32(0x7F800000)),
                              _mm512_or_si512(top, _mm512_set1_epi32(0x40)));
    r = _mm512_mask_mov_epi32(r, _mm512_cmplt_epu32_mask(a, _mm512_set1_epi32(0x00800000)),
                              _mm512_and_si512(top, _mm512_set1_epi32(0x8000)));
    return _mm512_cvtepi32_epi16(r);
#endif
}
/* 32 elements, lo then hi, narrowed to bfloat16 into dst: one instruction
 * with AVX-512 BF16 */
FO_INLINE void store_bf16_x32(uint16_t *dst, vf lo, vf hi)
{
#if defined(__AVX512BF16__)
    const __m512bh h = _mm512_cvtne2ps_pbh(hi, lo);
    memcpy(dst, &h, sizeof h);
#else
    VH_STORE(dst, narrow_bf16(lo));
    VH_STORE(dst + 16, narrow_bf16(hi));
#endif
}
/* where |b| is finite, x - b; elsewhere +0 */
FO_INLINE vf sub_where_finite(vf x, vf b)
{
    const __mmask16 fin = _mm512_cmp_ps_mask(_mm512_abs_ps(b), _mm512_set1_ps(INFINITY), _CMP_LT_OQ);
    return _mm512_maskz_sub_ps(fin, x, b);
}
#elif defined(__AVX2__)
#define V 8
typedef __m256 vf;
typedef __m128i vh;
#define VH_LOAD(p) _mm_loadu_si128((const __m128i *)(const void *)(p))
#define VH_STORE(p, h) _mm_storeu_si128((__m128i *)(void *)(p), (h))
#define VF_LOAD(p) _mm256_loadu_ps(p)
#define VF_STORE(p, x) _mm256_storeu_ps((p), (x))
#define VF_ADD(a, b) _mm256_add_ps((a), (b))

FO_INLINE vf widen_f16(vh h) { return _mm256_cvtph_ps(h); }
FO_INLINE vf widen_bf16(vh h)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
FO_INLINE vh narrow_f16(vf x)
{
    return _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
FO_INLINE vh narrow_bf16(vf x)
{
    const __m256i u = _mm256_castps_si256(x);
    const __m256i a = _mm256_and_si256(u, _mm256_set1_epi32(0x7FFFFFFF));
    const __m256i top = _mm256_srli_epi32(u, 16);
    __m256i r = _mm256_srli_epi32(
        _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7FFF),
                                             _mm256_and_si256(top, _mm256_set1_epi32(1)))), 16);
    /* a < 2^31: signed comparisons */
    r = _mm256_blendv_epi8(r, _mm256_or_si256(top, _mm256_set1_epi32(0x40)),
                           _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x7F800000)));
    r = _mm256_blendv_epi8(r, _mm256_and_si256(top, _mm256_set1_epi32(0x8000)),
                           _mm256_cmpgt_epi32(_mm256_set1_epi32(0x00800000), a));
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0xD8);
    return _mm256_castsi256_si128(packed);
}
FO_INLINE vf sub_where_finite(vf x, vf b)
{
    const vf absb = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), b);
    const vf fin = _mm256_cmp_ps(absb, _mm256_set1_ps(INFINITY), _CMP_LT_OQ);
    return _mm256_and_ps(fin, _mm256_sub_ps(x, b));
}
#endif

/* ---- n elements: 16-bit to float32 and back (fmt: FO_FMT_F16 or FO_FMT_BF16) ---- */

FO_INLINE void fo_load16(int fmt, size_t n, float *restrict dst, const uint16_t *restrict src)
{
    size_t i = 0;
#if defined(V)
    for (; i + V <= n; i += V)
        VF_STORE(dst + i, fmt == FO_FMT_F16 ? widen_f16(VH_LOAD(src + i))
                                            : widen_bf16(VH_LOAD(src + i)));
#endif
    for (; i < n; i++)
        dst[i] = fmt == FO_FMT_F16 ? f16_to_f32(src[i]) : bf16_to_f32(src[i]);
}

FO_INLINE void fo_store16(int fmt, size_t n, uint16_t *restrict dst, const float *restrict src)
{
    size_t i = 0;
#if defined(__AVX512BF16__)
    if (fmt == FO_FMT_BF16)  /* 32 at a time: one instruction narrows two vectors */
        for (; i + 32 <= n; i += 32)
            store_bf16_x32(dst + i, VF_LOAD(src + i), VF_LOAD(src + i + 16));
#endif
#if defined(V)
    for (; i + V <= n; i += V)
        VH_STORE(dst + i, fmt == FO_FMT_F16 ? narrow_f16(VF_LOAD(src + i))
                                            : narrow_bf16(VF_LOAD(src + i)));
#endif
    for (; i < n; i++)
        dst[i] = fmt == FO_FMT_F16 ? f32_to_f16(src[i]) : f32_to_bf16(src[i]);
}

/* The stochastic rounding's generator, counter-based: word w of a call's array
 * is mix(key + w * golden), splitmix64's output function (Steele et al. 2014)
 * on a counter, and element j takes bits of word j/4 (bfloat16: 16 bits, from
 * bit 16*(j%4)) or of word j/2 (float16: the top 24 of 32 bits from bit
 * 32*(j%2)): a function of (seed, step, array, element) only. */
#define FO_GOLDEN 0x9E3779B97F4A7C15u

FO_INLINE uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

/* x rounded stochastically to the 16-bit grid (Gupta et al. 2015), still as a
 * float32 that the format holds exactly: of the two grid neighbours of |x|,
 * the upper with probability (|x| - lower) / (upper - lower), drawn from the
 * random bits r; a NaN and values from the largest finite one up are left to
 * round to nearest. bfloat16: the lower neighbour is x's top half, the
 * fraction its low 16 bits, compared with 16 random bits. float16: the lower
 * neighbour is |x| truncated to 10 fraction bits (or, below 2^-14, to a
 * multiple of 2^-24), the gap its spacing, compared with 24 random bits. */
FO_INLINE float bf16_sr_grid(float x, uint32_t r16)
{
    const uint32_t u = fbits(x), a = u & 0x7FFFFFFFu;
    const uint32_t up = (u & 0xFFFFu) > r16 ? 0x10000u : 0u;
    return a >= 0x7F7F0000u ? x : bitsf((u & 0xFFFF0000u) + up);
}

FO_INLINE float f16_sr_grid(float x, uint32_t r32)
{
    const uint32_t u = fbits(x), a = u & 0x7FFFFFFFu, e = a >> 23;
    /* |x| truncated to the grid: 13 fraction bits dropped from 2^-14 up (float16's
     * normal range), more below it (its subnormals, multiples of 2^-24), and
     * everything below 2^-24; in integer arithmetic (no float-to-int conversion,
     * which the compiler may not if-convert) */
    const uint32_t drop = e >= 113u ? 13u : e >= 103u ? 126u - e : 0u;
    const float lo = bitsf(e >= 103u ? a & (0xFFFFFFFFu << drop) : 0u);
    const float gap = e >= 113u ? bitsf((a & 0x7F800000u) - (10u << 23)) : 0x1p-24f;
    const float up = bitsf(a) - lo > (float)(r32 >> 8) * 0x1p-24f * gap ? gap : 0.0f;
    const uint32_t grid = fbits(lo + up) | (u & 0x80000000u);
    return bitsf(a >= 0x477FE000u ? u : grid);
}

/* The random bits of elements first .. first+n-1 (n <= FO_SR_CHUNK) into out,
 * `per` elements to a word: 4 (bfloat16: uint16_t each) or 2 (float16:
 * uint32_t each), per the layout above. */
#define FO_SR_CHUNK 256  /* the buffers on the stack below */

FO_INLINE void fo_draw(unsigned per, size_t n, void *out, uint64_t key, uint64_t first)
{
    uint64_t word[FO_SR_CHUNK / 2 + 2];
    const uint64_t w0 = first / per, off = first % per;
    const size_t nw = (size_t)((off + n + per - 1) / per);
    for (size_t w = 0; w < nw; w++)
        word[w] = mix64(key + (w0 + w) * FO_GOLDEN);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* (the bound restated, which the compiler cannot always see) */
    memcpy(out, (const char *)(const void *)word + off * (8 / per),
           (n < FO_SR_CHUNK ? n : FO_SR_CHUNK) * (8 / per));
#else
    for (size_t i = 0; i < n; i++) {
        const uint64_t bits = word[(off + i) / per] >> (64 / per * ((off + i) % per));
        if (per == 4)
            ((uint16_t *)out)[i] = (uint16_t)bits;
        else
            ((uint32_t *)out)[i] = (uint32_t)bits;
    }
#endif
}

/* ---- stochastic rounding and Kahan summation, n elements ------------------------ */

/* n <= FO_SR_CHUNK elements of src rounded stochastically into dst (fmt:
 * FO_FMT_F16 or FO_FMT_BF16), element j of the array being `first` + j: the
 * grid values are exact in the format, and the rest round to nearest. */
#if defined(__AVX512F__) && defined(__AVX512DQ__)
FO_INLINE __m512i mix64x8(__m512i z)
{
    z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 30)),
                           _mm512_set1_epi64((long long)0xBF58476D1CE4E5B9u));
    z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 27)),
                           _mm512_set1_epi64((long long)0x94D049BB133111EBu));
    return _mm512_xor_si512(z, _mm512_srli_epi64(z, 31));
}

/* bfloat16, fo_draw + bf16_sr_grid + narrow_bf16 in registers, 32 elements
 * (8 words) at a time, `first` a multiple of 4: u16 lane j of the 8 words is
 * element j's 16 random bits. Returns how many elements it did. */
FO_INLINE size_t fo_store_bf16_sr_x32(size_t n, uint16_t *restrict dst, const float *restrict src,
                                      uint64_t key, uint64_t first)
{
    /* word counters key + w * golden as a sum: one 64-bit product fewer per 8
     * words (the products run on the port the divider uses) */
    const __m512i step = _mm512_setr_epi64(0, (long long)FO_GOLDEN, (long long)(2 * FO_GOLDEN),
                                           (long long)(3 * FO_GOLDEN), (long long)(4 * FO_GOLDEN),
                                           (long long)(5 * FO_GOLDEN), (long long)(6 * FO_GOLDEN),
                                           (long long)(7 * FO_GOLDEN));
    const __m512i high = _mm512_set1_epi32((int)0xFFFF0000u), big = _mm512_set1_epi32(0x7F7F0000);
    const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF), ones = _mm512_set1_epi32(-1);
    size_t i = 0;
    if (first & 3)
        return 0;
    for (; i + 32 <= n; i += 32) {
        const uint64_t base = key + ((first + i) >> 2) * FO_GOLDEN;
        /* 0xFFFF - r16 in every u16 lane: u + (0xFFFF - r16) carries into u's
         * top half exactly when its low half exceeds r16 (bf16_sr_grid's test),
         * and the top half is then the upper neighbour */
        const __m512i r = _mm512_xor_si512(
            mix64x8(_mm512_add_epi64(_mm512_set1_epi64((long long)base), step)), ones);
        __m512i g[2];
        for (int h = 0; h < 2; h++) {
            const __m512i r16 = _mm512_cvtepu16_epi32(h ? _mm512_extracti64x4_epi64(r, 1)
                                                         : _mm512_castsi512_si256(r));
            const __m512i u = _mm512_castps_si512(_mm512_loadu_ps(src + i + 16 * h));
            const __mmask16 small = _mm512_cmplt_epu32_mask(_mm512_and_si512(u, abs_mask), big);
            g[h] = _mm512_mask_and_epi32(u, small, _mm512_add_epi32(u, r16), high);
        }
        store_bf16_x32(dst + i, _mm512_castsi512_ps(g[0]), _mm512_castsi512_ps(g[1]));
    }
    return i;
}
#endif

FO_INLINE void fo_store16_sr(int fmt, size_t n, uint16_t *restrict dst, const float *restrict src,
                             uint64_t key, uint64_t first)
{
#if defined(__AVX512F__) && defined(__AVX512DQ__)
    if (fmt == FO_FMT_BF16) {
        const size_t done = fo_store_bf16_sr_x32(n, dst, src, key, first);
        dst += done, src += done, first += done, n -= done;
        if (!n)
            return;
    }
#endif
    float grid[FO_SR_CHUNK];
    if (fmt == FO_FMT_F16) {
        uint32_t r32[FO_SR_CHUNK];
        fo_draw(2, n, r32, key, first);
        for (size_t i = 0; i < n; i++)
            grid[i] = f16_sr_grid(src[i], r32[i]);
    } else {
        uint16_t r16[FO_SR_CHUNK];
        fo_draw(4, n, r16, key, first);
        for (size_t i = 0; i < n; i++)
            grid[i] = bf16_sr_grid(src[i], r16[i]);
    }
    fo_store16(fmt, n, dst, grid);
}

/* Kahan-compensated write-back (Zamirai et al. 2020; optimi's kahan_sum): with
 * c the compensation, v = v + c is rounded into p, and c = v - p (what the
 * rounding lost; 0 where p is not finite) is rounded into c's 16 bits; v
 * becomes the stored values. */
FO_INLINE void fo_kahan16(int fmt, size_t n, uint16_t *restrict p, uint16_t *restrict c,
                          float *restrict v)
{
    size_t i = 0;
#if defined(V)
    for (; i + V <= n; i += V) {
        const vh ch = VH_LOAD(c + i);
        const vf x = VF_ADD(VF_LOAD(v + i), fmt == FO_FMT_F16 ? widen_f16(ch) : widen_bf16(ch));
        const vh h = fmt == FO_FMT_F16 ? narrow_f16(x) : narrow_bf16(x);
        const vf back = fmt == FO_FMT_F16 ? widen_f16(h) : widen_bf16(h);
        const vf lost = sub_where_finite(x, back);
        VH_STORE(p + i, h);
        VH_STORE(c + i, fmt == FO_FMT_F16 ? narrow_f16(lost) : narrow_bf16(lost));
        VF_STORE(v + i, back);
    }
#endif
    for (; i < n; i++) {
        const float x = v[i] + (fmt == FO_FMT_F16 ? f16_to_f32(c[i]) : bf16_to_f32(c[i]));
        const uint16_t h = fmt == FO_FMT_F16 ? f32_to_f16(x) : f32_to_bf16(x);
        const float back = fmt == FO_FMT_F16 ? f16_to_f32(h) : bf16_to_f32(h);
        const float lost = fabsf(back) < INFINITY ? x - back : 0.0f;
        p[i] = h;
        c[i] = fmt == FO_FMT_F16 ? f32_to_f16(lost) : f32_to_bf16(lost);
        v[i] = back;
    }
}

#endif
