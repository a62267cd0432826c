/* Storage formats' element operations. Compiled once per instruction set with
 * FO_ISA set (see CMakeLists.txt): baseline (portable bit manipulation), avx2
 * (F16C for float16), avx512 (AVX-512F's float16 conversions), avx512bf16
 * (also vcvtneps2bf16 for bfloat16). Every path gives the same bits as the
 * others and as the NumPy twin (fastoptim._fallback's storage section):
 *   float16   IEEE round to nearest even, subnormals kept, overflow to Inf; a NaN
 *             keeps its sign and top payload bits and is made quiet (F16C's rule);
 *   bfloat16  round to nearest even of float32's top half; float32 subnormals
 *             and zeros become signed zeros and a NaN is made quiet
 *             (vcvtneps2bf16's rule); widening is exact (a shift).
 * Same flags as kernels.c: -fno-math-errno -ffp-contract=off, never -ffast-math. */
#include <math.h>
#include <string.h>

#include "formats.h"
#include "isa.h"

#if defined(__AVX512F__) || defined(__AVX2__) || defined(__F16C__) || defined(__AVX512BF16__)
#include <immintrin.h>
#endif

#define F16 0   /* table index of FO_FMT_F16 */
#define BF16 1  /* of FO_FMT_BF16 */

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

/* The random bits of elements first .. first+n-1 (n <= CHUNK): 16 each
 * (bfloat16) or 32 each (float16), per the layout above. */
#define CHUNK 256  /* the buffers on the stack below */

static void draw16(size_t n, uint16_t *out, uint64_t key, uint64_t first)
{
    uint64_t word[CHUNK / 4 + 2];
    const uint64_t w0 = first >> 2, off = first & 3;
    const size_t nw = (size_t)((off + n + 3) >> 2);
    for (size_t w = 0; w < nw; w++)
        word[w] = mix64(key + (w0 + w) * FO_GOLDEN);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(out, (const uint16_t *)(const void *)word + off, n * sizeof *out);
#else
    for (size_t i = 0; i < n; i++)
        out[i] = (uint16_t)(word[(off + i) >> 2] >> (16 * ((off + i) & 3)));
#endif
}

static void draw32(size_t n, uint32_t *out, uint64_t key, uint64_t first)
{
    uint64_t word[CHUNK / 2 + 2];
    const uint64_t w0 = first >> 1, off = first & 1;
    const size_t nw = (size_t)((off + n + 1) >> 1);
    for (size_t w = 0; w < nw; w++)
        word[w] = mix64(key + (w0 + w) * FO_GOLDEN);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(out, (const uint32_t *)(const void *)word + off, n * sizeof *out);
#else
    for (size_t i = 0; i < n; i++)
        out[i] = (uint32_t)(word[(off + i) >> 1] >> (32 * ((off + i) & 1)));
#endif
}

/* 16-bit lanes in vector registers: widen (exact) and narrow (the rules above),
 * V lanes at a time; shared by the block conversions and the fused write-backs. */
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

/* ---- blocks: 16-bit to float32 and back ------------------------------------------ */

#if defined(V)
#define BLOCK_CONVERSIONS(fmt, f32_of, of_f32)                                               \
    static void FO_FN(load_##fmt)(size_t n, float *restrict dst, const uint16_t *restrict src) \
    {                                                                                        \
        size_t i = 0;                                                                        \
        for (; i + V <= n; i += V)                                                           \
            VF_STORE(dst + i, widen_##fmt(VH_LOAD(src + i)));                                \
        for (; i < n; i++)                                                                   \
            dst[i] = f32_of(src[i]);                                                         \
    }                                                                                        \
    static void FO_FN(store_##fmt)(size_t n, uint16_t *restrict dst, const float *restrict src) \
    {                                                                                        \
        size_t i = 0;                                                                        \
        for (; i + V <= n; i += V)                                                           \
            VH_STORE(dst + i, narrow_##fmt(VF_LOAD(src + i)));                               \
        for (; i < n; i++)                                                                   \
            dst[i] = of_f32(src[i]);                                                         \
    }
#else
#define BLOCK_CONVERSIONS(fmt, f32_of, of_f32)                                               \
    static void FO_FN(load_##fmt)(size_t n, float *restrict dst, const uint16_t *restrict src) \
    {                                                                                        \
        for (size_t i = 0; i < n; i++)                                                       \
            dst[i] = f32_of(src[i]);                                                         \
    }                                                                                        \
    static void FO_FN(store_##fmt)(size_t n, uint16_t *restrict dst, const float *restrict src) \
    {                                                                                        \
        for (size_t i = 0; i < n; i++)                                                       \
            dst[i] = of_f32(src[i]);                                                         \
    }
#endif
BLOCK_CONVERSIONS(f16, f16_to_f32, f32_to_f16)
BLOCK_CONVERSIONS(bf16, bf16_to_f32, f32_to_bf16)

#define STORE16(fmt) ((fmt) == F16 ? FO_FN(store_f16) : FO_FN(store_bf16))
#define LOAD16(fmt) ((fmt) == F16 ? FO_FN(load_f16) : FO_FN(load_bf16))

static void sr(int fmt, size_t n, uint16_t *restrict dst, const float *restrict src,
               uint64_t key, uint64_t first)
{
    float grid[CHUNK];
    uint32_t r32[CHUNK];
    uint16_t r16[CHUNK];
    for (size_t c = 0; c < n; c += CHUNK) {
        const size_t m = n - c < CHUNK ? n - c : CHUNK;
        const float *restrict s = src + c;
        if (fmt == F16) {
            draw32(m, r32, key, first + c);
            for (size_t i = 0; i < m; i++)
                grid[i] = f16_sr_grid(s[i], r32[i]);
        } else {
            draw16(m, r16, key, first + c);
            for (size_t i = 0; i < m; i++)
                grid[i] = bf16_sr_grid(s[i], r16[i]);
        }
        STORE16(fmt)(m, dst + c, grid);  /* exact on the grid; nearest for the rest */
    }
}

static void FO_FN(store_f16_sr)(size_t n, uint16_t *dst, const float *src, uint64_t key,
                                uint64_t first)
{
    sr(F16, n, dst, src, key, first);
}

static void FO_FN(store_bf16_sr)(size_t n, uint16_t *dst, const float *src, uint64_t key,
                                 uint64_t first)
{
    sr(BF16, n, dst, src, key, first);
}

/* Kahan-compensated write-back (Zamirai et al. 2020; optimi's kahan_sum): with
 * c the compensation, v = v + c is rounded into p, and c = v - p (what the
 * rounding lost; 0 where p is not finite) is rounded into c's 16 bits. */
#if defined(V)
#define KAHAN_VECTOR(fmt)                                                        \
    for (; i + V <= n; i += V) {                                                 \
        const vf x = VF_ADD(VF_LOAD(v + i), widen_##fmt(VH_LOAD(c + i)));      \
        const vh h = narrow_##fmt(x);                                            \
        const vf back = widen_##fmt(h);                                          \
        VH_STORE(p + i, h);                                                      \
        VH_STORE(c + i, narrow_##fmt(sub_where_finite(x, back)));                \
        VF_STORE(v + i, back);                                                   \
    }
#else
#define KAHAN_VECTOR(fmt)
#endif
#define KAHAN_SCALAR(f32_of, of_f32)                                             \
    for (; i < n; i++) {                                                         \
        const float x = v[i] + f32_of(c[i]);                                     \
        const uint16_t h = of_f32(x);                                            \
        const float back = f32_of(h);                                            \
        p[i] = h;                                                                \
        c[i] = of_f32(fabsf(back) < INFINITY ? x - back : 0.0f);                 \
        v[i] = back;                                                             \
    }

static void FO_FN(kahan_f16)(size_t n, uint16_t *restrict p, uint16_t *restrict c,
                             float *restrict v)
{
    size_t i = 0;
    KAHAN_VECTOR(f16)
    KAHAN_SCALAR(f16_to_f32, f32_to_f16)
}

static void FO_FN(kahan_bf16)(size_t n, uint16_t *restrict p, uint16_t *restrict c,
                              float *restrict v)
{
    size_t i = 0;
    KAHAN_VECTOR(bf16)
    KAHAN_SCALAR(bf16_to_f32, f32_to_bf16)
}

/* ---- 8-bit block-wise state (Dettmers et al. 2022) -------------------------------- */

static void FO_FN(q8_load)(size_t n, float *restrict dst, const uint8_t *restrict codes,
                           float absmax, const fo_qmap *q)
{
    const float *restrict value = q->value;
    size_t i = 0;
    /* gathers written out: the compiler's generic tuning loads each one alone */
#if defined(__AVX512F__)
    const __m512 vmax = _mm512_set1_ps(absmax);
    for (; i + 16 <= n; i += 16) {
        const __m512i c = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(codes + i)));
        _mm512_storeu_ps(dst + i, _mm512_mul_ps(_mm512_i32gather_ps(c, value, 4), vmax));
    }
#elif defined(__AVX2__)
    const __m256 vmax = _mm256_set1_ps(absmax);
    for (; i + 8 <= n; i += 8) {
        const __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codes + i)));
        _mm256_storeu_ps(dst + i, _mm256_mul_ps(_mm256_i32gather_ps(value, c, 4), vmax));
    }
#endif
    for (; i < n; i++)
        dst[i] = value[codes[i]] * absmax;
}

/* The block's absolute maximum (a NaN if any element is Inf or NaN: the largest
 * magnitude's bits, compared as integers), then each x = s * (1/absmax) (s /
 * absmax where 1/absmax would overflow: absmax below float32's normal range)
 * to its nearest code; |x| may exceed 1 by an ulp, which the code of the
 * largest magnitude takes. A block of zeros, or with a non-finite element,
 * stores the code of 0 everywhere, with absmax 0 or NaN (every element then
 * decodes to NaN). */
FO_INLINE uint32_t q8_code(float x, const uint32_t *restrict bucket, int is_signed)
{
    const float a = is_signed ? fabsf(x) : (x > 0.0f ? x : 0.0f);
    const uint32_t ab = fbits(a);
    uint32_t key = ab >> 16;
    key = key < FO_Q8_KEY0 ? 0 : key - FO_Q8_KEY0;
    key = key < FO_Q8_KEYS ? key : FO_Q8_KEYS - 1;
    const uint32_t e = bucket[key];
    const uint32_t j = (e >> 17) + ((ab & 0xFFFFu) >= (e & 0x1FFFFu));
    return !is_signed ? j : x < 0.0f ? 127u - (j < 127u ? j : 127u) : 127u + j;
}

static float FO_FN(q8_store)(size_t n, uint8_t *restrict codes, const float *restrict src,
                             const fo_qmap *q)
{
    uint32_t mx = 0;
    for (size_t i = 0; i < n; i++) {
        const uint32_t a = fbits(src[i]) & 0x7FFFFFFFu;
        mx = a > mx ? a : mx;
    }
    if (mx == 0 || mx >= 0x7F800000u) {
        memset(codes, q->zero, n);
        return mx ? bitsf(0x7FC00000u) : 0.0f;
    }
    const float absmax = bitsf(mx);
    const uint32_t *restrict bucket = q->bucket;
    const int is_signed = q->zero != 0;
    if (mx < 0x00800000u) {  /* the rare path: 1/absmax overflows */
        for (size_t i = 0; i < n; i++)
            codes[i] = (uint8_t)q8_code(src[i] / absmax, bucket, is_signed);
        return absmax;
    }
    const float inv = 1.0f / absmax;
    size_t i = 0;
#if defined(__AVX512F__)
    {
        const __m512 vinv = _mm512_set1_ps(inv), zero = _mm512_setzero_ps();
        const __m512i key0 = _mm512_set1_epi32((int)FO_Q8_KEY0), top = _mm512_set1_epi32(FO_Q8_KEYS - 1);
        const __m512i izero = _mm512_setzero_si512(), one = _mm512_set1_epi32(1);
        const __m512i mid = _mm512_set1_epi32(127), low16 = _mm512_set1_epi32(0xFFFF);
        const __m512i low17 = _mm512_set1_epi32(0x1FFFF);
        for (; i + 16 <= n; i += 16) {
            const __m512 x = _mm512_mul_ps(_mm512_loadu_ps(src + i), vinv);
            const __m512i ab = _mm512_castps_si512(is_signed ? _mm512_abs_ps(x)
                                                             : _mm512_max_ps(x, zero));
            __m512i key = _mm512_sub_epi32(_mm512_srli_epi32(ab, 16), key0);
            key = _mm512_min_epi32(_mm512_max_epi32(key, izero), top);
            const __m512i e = _mm512_i32gather_epi32(key, (const void *)bucket, 4);
            const __mmask16 up = _mm512_cmpge_epu32_mask(_mm512_and_si512(ab, low16),
                                                         _mm512_and_si512(e, low17));
            const __m512i base = _mm512_srli_epi32(e, 17);
            __m512i j = _mm512_mask_add_epi32(base, up, base, one);
            if (is_signed) {
                const __mmask16 neg = _mm512_cmp_ps_mask(x, zero, _CMP_LT_OQ);
                j = _mm512_mask_sub_epi32(_mm512_add_epi32(mid, j), neg, mid,
                                          _mm512_min_epi32(j, mid));
            }
            _mm_storeu_si128((__m128i *)(codes + i), _mm512_cvtepi32_epi8(j));
        }
    }
#elif defined(__AVX2__)
    {
        const __m256 vinv = _mm256_set1_ps(inv), zero = _mm256_setzero_ps();
        const __m256 sign = _mm256_set1_ps(-0.0f);
        const __m256i key0 = _mm256_set1_epi32((int)FO_Q8_KEY0), top = _mm256_set1_epi32(FO_Q8_KEYS - 1);
        const __m256i izero = _mm256_setzero_si256(), one = _mm256_set1_epi32(1);
        const __m256i mid = _mm256_set1_epi32(127), low16 = _mm256_set1_epi32(0xFFFF);
        const __m256i low17 = _mm256_set1_epi32(0x1FFFF);
        const __m256i pick = _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0);
        for (; i + 8 <= n; i += 8) {
            const __m256 x = _mm256_mul_ps(_mm256_loadu_ps(src + i), vinv);
            const __m256i ab = _mm256_castps_si256(is_signed ? _mm256_andnot_ps(sign, x)
                                                             : _mm256_max_ps(x, zero));
            __m256i key = _mm256_sub_epi32(_mm256_srli_epi32(ab, 16), key0);
            key = _mm256_min_epi32(_mm256_max_epi32(key, izero), top);
            const __m256i e = _mm256_i32gather_epi32((const int *)(const void *)bucket, key, 4);
            /* both below 2^17: a signed comparison; j = base + 1 - (inside > low bits) */
            const __m256i above = _mm256_cmpgt_epi32(_mm256_and_si256(e, low17),
                                                     _mm256_and_si256(ab, low16));
            __m256i j = _mm256_add_epi32(_mm256_add_epi32(_mm256_srli_epi32(e, 17), one), above);
            if (is_signed) {
                const __m256i neg = _mm256_castps_si256(_mm256_cmp_ps(x, zero, _CMP_LT_OQ));
                j = _mm256_blendv_epi8(_mm256_add_epi32(mid, j),
                                       _mm256_sub_epi32(mid, _mm256_min_epi32(j, mid)), neg);
            }
            /* 8 int32 in 0..255 to 8 bytes */
            const __m256i w = _mm256_packus_epi16(_mm256_packus_epi32(j, j), izero);
            _mm_storel_epi64((__m128i *)(codes + i),
                             _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(w, pick)));
        }
    }
#endif
    for (; i < n; i++)
        codes[i] = (uint8_t)q8_code(src[i] * inv, bucket, is_signed);
    return absmax;
}

/* ---- ceilings: g read once (its words xor-ed), each stream x += that --------- */

static uint32_t FO_FN(read_bytes)(size_t nbytes, const void *gv)
{
    const uint8_t *g = gv;
    uint32_t acc = 0, w;
    size_t i = 0;
    for (; i + 4 <= nbytes; i += 4) {
        memcpy(&w, g + i, sizeof w);
        acc ^= w;
    }
    for (; i < nbytes; i++)
        acc ^= g[i];
    return acc;
}

static void FO_FN(touch1)(size_t n, void *xv, uint32_t c)
{
    uint8_t *restrict x = xv;
    for (size_t i = 0; i < n; i++)
        x[i] = (uint8_t)(x[i] + c);
}

static void FO_FN(touch2)(size_t n, void *xv, uint32_t c)
{
    uint16_t *restrict x = xv;
    for (size_t i = 0; i < n; i++)
        x[i] = (uint16_t)(x[i] + c);
}

static void FO_FN(touch4)(size_t n, void *xv, uint32_t c)
{
    uint32_t *restrict x = xv;
    for (size_t i = 0; i < n; i++)
        x[i] = x[i] + c;
}

#define FO_STR_(x) #x
#define FO_STR(x) FO_STR_(x)
#if defined(__AVX512BF16__)
#define FO_IMPL "float16: AVX-512F vcvtph2ps/vcvtps2ph; bfloat16: AVX-512 BF16 vcvtneps2bf16"
#elif defined(__AVX512F__)
#define FO_IMPL "float16: AVX-512F vcvtph2ps/vcvtps2ph; bfloat16: portable"
#elif defined(__F16C__)
#define FO_IMPL "float16: F16C vcvtph2ps/vcvtps2ph; bfloat16: portable"
#else
#define FO_IMPL "float16, bfloat16: portable"
#endif

const fo_formats_kernels FO_CAT(fo_formats, FO_ISA) = {
    .load16 = {FO_FN(load_f16), FO_FN(load_bf16)},
    .store16 = {FO_FN(store_f16), FO_FN(store_bf16)},
    .store16_sr = {FO_FN(store_f16_sr), FO_FN(store_bf16_sr)},
    .kahan16 = {FO_FN(kahan_f16), FO_FN(kahan_bf16)},
    .q8_load = FO_FN(q8_load),
    .q8_store = FO_FN(q8_store),
    .read_bytes = FO_FN(read_bytes),
    .touch = {FO_FN(touch1), FO_FN(touch2), FO_FN(touch4)},
    .impl = FO_IMPL,
};
