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

#if defined(__AVX512F__) || defined(__F16C__) || defined(__AVX512BF16__)
#include <immintrin.h>
#endif

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
    if (a > 0x7F800000u)                 /* NaN: quiet */
        return (uint16_t)((u >> 16) | 0x40u);
    if (a < 0x00800000u)                 /* zero, subnormal: signed zero */
        return (uint16_t)((u >> 16) & 0x8000u);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

/* The stochastic rounding's generator: element j of a call's array draws
 * mix(key + j * golden), splitmix64's output function (Steele et al. 2014) on a
 * counter: a function of (seed, step, array, element) only. */
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
FO_INLINE float bf16_sr_grid(float x, uint64_t r)
{
    const uint32_t u = fbits(x), a = u & 0x7FFFFFFFu;
    const uint32_t up = (u & 0xFFFFu) > (uint32_t)(r >> 48) ? 0x10000u : 0u;
    return a >= 0x7F7F0000u ? x : bitsf((u & 0xFFFF0000u) + up);
}

FO_INLINE float f16_sr_grid(float x, uint64_t r)
{
    const uint32_t u = fbits(x), a = u & 0x7FFFFFFFu;
    const float ax = bitsf(a);
    const int normal = a >= 0x38800000u;
    const float lo = normal ? bitsf(a & ~0x1FFFu) : (float)(int32_t)(ax * 0x1p24f) * 0x1p-24f;
    const float gap = normal ? bitsf((a & 0x7F800000u) - (10u << 23)) : 0x1p-24f;
    const float mag = ax - lo > (float)(uint32_t)(r >> 40) * 0x1p-24f * gap ? lo + gap : lo;
    return a >= 0x477FE000u ? x : bitsf(fbits(mag) | (u & 0x80000000u));
}

/* ---- blocks: 16-bit to float32 and back ------------------------------------------ */

static void FO_FN(load_f16)(size_t n, float *restrict dst, const uint16_t *restrict src)
{
    size_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i,
                         _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
#elif defined(__F16C__)
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
#endif
    for (; i < n; i++)
        dst[i] = f16_to_f32(src[i]);
}

static void FO_FN(store_f16)(size_t n, uint16_t *restrict dst, const float *restrict src)
{
    size_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(src + i),
                                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#elif defined(__F16C__)
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#endif
    for (; i < n; i++)
        dst[i] = f32_to_f16(src[i]);
}

static void FO_FN(load_bf16)(size_t n, float *restrict dst, const uint16_t *restrict src)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = bf16_to_f32(src[i]);
}

static void FO_FN(store_bf16)(size_t n, uint16_t *restrict dst, const float *restrict src)
{
    size_t i = 0;
#if defined(__AVX512BF16__)
    for (; i + 16 <= n; i += 16) {
        const __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + i));
        memcpy(dst + i, &h, sizeof h);
    }
#endif
    for (; i < n; i++)
        dst[i] = f32_to_bf16(src[i]);
}

#define STORE16(fmt) ((fmt) == F16 ? FO_FN(store_f16) : FO_FN(store_bf16))
#define LOAD16(fmt) ((fmt) == F16 ? FO_FN(load_f16) : FO_FN(load_bf16))
#define CHUNK 256  /* the buffers on the stack below */

static void sr(int fmt, size_t n, uint16_t *restrict dst, const float *restrict src,
               uint64_t key, uint64_t first)
{
    float grid[CHUNK];
    for (size_t c = 0; c < n; c += CHUNK) {
        const size_t m = n - c < CHUNK ? n - c : CHUNK;
        const uint64_t k0 = key + (first + c) * FO_GOLDEN;
        if (fmt == F16)
            for (size_t i = 0; i < m; i++)
                grid[i] = f16_sr_grid(src[c + i], mix64(k0 + (uint64_t)i * FO_GOLDEN));
        else
            for (size_t i = 0; i < m; i++)
                grid[i] = bf16_sr_grid(src[c + i], mix64(k0 + (uint64_t)i * FO_GOLDEN));
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
static void kahan(int fmt, size_t n, uint16_t *restrict p, uint16_t *restrict c,
                  float *restrict v)
{
    float cf[CHUNK], back[CHUNK];
    for (size_t s = 0; s < n; s += CHUNK) {
        const size_t m = n - s < CHUNK ? n - s : CHUNK;
        float *restrict vs = v + s;
        LOAD16(fmt)(m, cf, c + s);
        for (size_t i = 0; i < m; i++)
            vs[i] = vs[i] + cf[i];
        STORE16(fmt)(m, p + s, vs);
        LOAD16(fmt)(m, back, p + s);
        for (size_t i = 0; i < m; i++) {
            const float b = back[i];
            cf[i] = fabsf(b) < INFINITY ? vs[i] - b : 0.0f;
            vs[i] = b;
        }
        STORE16(fmt)(m, c + s, cf);
    }
}

static void FO_FN(kahan_f16)(size_t n, uint16_t *p, uint16_t *c, float *v) { kahan(F16, n, p, c, v); }
static void FO_FN(kahan_bf16)(size_t n, uint16_t *p, uint16_t *c, float *v) { kahan(BF16, n, p, c, v); }

/* ---- 8-bit block-wise state (Dettmers et al. 2022) -------------------------------- */

static void FO_FN(q8_load)(size_t n, float *restrict dst, const uint8_t *restrict codes,
                           float absmax, const fo_qmap *q)
{
    const float *restrict value = q->value;
    for (size_t i = 0; i < n; i++)
        dst[i] = value[codes[i]] * absmax;
}

/* The block's absolute maximum (a NaN if any element is Inf or NaN: the largest
 * magnitude's bits, compared as integers), then each x = s / absmax (|x| <= 1)
 * to its nearest code. A block of zeros, or with a non-finite element, stores
 * the code of 0 everywhere, with absmax 0 or NaN (every element then decodes
 * to NaN). */
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
    const float *restrict thr = q->thr;
    const uint8_t *restrict base = q->base;
    if (q->zero) {  /* the signed map */
        for (size_t i = 0; i < n; i++) {
            const float x = src[i] / absmax, a = fabsf(x);
            uint32_t key = fbits(a) >> 16;
            key = key < FO_Q8_KEY0 ? 0 : key - FO_Q8_KEY0;
            key = key < FO_Q8_KEYS ? key : FO_Q8_KEYS - 1;
            int32_t j = base[key];
            j += a >= thr[j];
            codes[i] = (uint8_t)(x < 0.0f ? 127 - (j < 127 ? j : 127) : 127 + j);
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            const float x = src[i] / absmax, a = x > 0.0f ? x : 0.0f;
            uint32_t key = fbits(a) >> 16;
            key = key < FO_Q8_KEY0 ? 0 : key - FO_Q8_KEY0;
            key = key < FO_Q8_KEYS ? key : FO_Q8_KEYS - 1;
            int32_t j = base[key];
            j += a >= thr[j];
            codes[i] = (uint8_t)j;
        }
    }
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
