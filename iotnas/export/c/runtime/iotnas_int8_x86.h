/* The x86 (SSE2) kernels of iotnas_int8.c, included by it alone, after its window_t, whole() and
 * padded_rows() / padded_columns(),
 * where __SSE2__ is defined (every x86-64 compiler's baseline): the same integers as its plain C,
 * in vectors. Other targets (Cortex-M) never read this file. */
#ifndef IOTNAS_INT8_X86_H
#define IOTNAS_INT8_X86_H

#include <string.h>

#include "iotnas_int8.h"

/* The 8 int8 at p as int16. */
static __m128i load8_i16(const int8_t *p) {
    const __m128i v = _mm_loadl_epi64((const __m128i *)(const void *)p);
    return _mm_srai_epi16(_mm_unpacklo_epi8(v, v), 8);
}

static __m128i load4_i32(const int32_t *p) {
    return _mm_loadu_si128((const __m128i *)(const void *)p);
}

/* Eight requantised values (two vectors of int32) as int8 codes: the zero point added, saturated
 * to int16 then clamped to the activation range, narrowed to int8 in the low 8 bytes. */
static __m128i codes8(__m128i a, __m128i b, __m128i out_zp, __m128i lo, __m128i hi) {
    const __m128i v = _mm_packs_epi32(_mm_add_epi32(a, out_zp), _mm_add_epi32(b, out_zp));
    const __m128i clamped = _mm_min_epi16(_mm_max_epi16(v, lo), hi);
    return _mm_packs_epi16(clamped, clamped);
}

/* The sum of the four int32 lanes. */
static int32_t lanes_sum(__m128i v) {
    v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0x4e));
    v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0xb1));
    return _mm_cvtsi128_si32(v);
}

/* The four int32 lanes (int8 code - zero point) * 2^left, of the low (first) or high eight int16 at v. */
static __m128i widen_lo(__m128i v, int left) {
    return _mm_slli_epi32(_mm_srai_epi32(_mm_unpacklo_epi16(v, v), 16), left);
}
static __m128i widen_hi(__m128i v, int left) {
    return _mm_slli_epi32(_mm_srai_epi32(_mm_unpackhi_epi16(v, v), 16), left);
}

/* The direct kernel's filter, widened to int16 once per call (vectors), the loads of a window, and
 * the bytes of a padded copy of a layer's input (on the stack). */
#define IOTNAS_DIRECT_VECTORS 512
#define IOTNAS_DIRECT_LOADS 32
#define IOTNAS_PLANE_MAX 16384

/* A convolution whose outputs are requantised in runs of pixels, summed straight from the input
 * inside the image: 8 values a load, each 4 output channels' sums in registers over the window's
 * loads. A kernel row is one run of the input when the layer reads every channel of its input
 * (loads along the run), else each tap's cin channels are (loads per tap, one group of a grouped
 * convolution). The filter rows are widened once and zero-padded to whole loads, so what a load
 * takes past the run or the group is multiplied by 0. Windows at the border, and the last ones
 * whose loads would pass the input's end, go through the patch.
 * A window of one load (a pointwise layer of up to 8 input channels) is summed the other way
 * round: each pair of its values broadcast to the four lanes, one pmaddwd with 4 output channels'
 * pairs of weights gives those channels' partial sums in order, so few inputs take no horizontal
 * sums. */
typedef struct {
    int32_t loads_per_row, loads; /* a kernel row's loads, a window's */
    int32_t pairs; /* > 0: a window of one load summed by broadcast pairs of values */
    int32_t load_pairs; /* > 0: in AVX2, loads two at a time (the last one alone with zeros) */
    int32_t runs; /* in AVX2, a pair of loads is 16 bytes of one run of the input (a kernel row's) */
    int32_t offset[IOTNAS_DIRECT_LOADS]; /* of each load of a kernel row, from the row's first tap */
    /* [cout / 4][kh][loads_per_row][4 channels], or [cout / 4][pairs]; in AVX2 (load_pairs > 0)
     * [cout / 4][load_pairs][4 channels][2 loads] */
    __m128i filter[IOTNAS_DIRECT_VECTORS];
} direct_t;

static int direct_init(direct_t *d, const iotnas_geometry_t *g, int32_t cin, int32_t in_stride, int32_t cout,
                       const int8_t *filter) {
    const int32_t blocks = (cout + 3) / 4, row = g->kw * cin, per_tap = (cin + 7) / 8;
    const int contiguous = in_stride == cin; /* a kernel row is one run of the input */
    d->loads_per_row = contiguous ? (row + 7) / 8 : g->kw * per_tap, d->loads = g->kh * d->loads_per_row;
    if (d->loads > IOTNAS_DIRECT_LOADS || blocks * d->loads * 4 > IOTNAS_DIRECT_VECTORS) return 0;
    d->pairs = g->kh == 1 && d->loads_per_row == 1 ? (row + 1) / 2 : 0;
    d->load_pairs = 0;
#if defined(IOTNAS_AVX2)
    if (!d->pairs && iotnas_avx2_present() && blocks * (d->loads + 1) / 2 * 8 <= IOTNAS_DIRECT_VECTORS)
        d->load_pairs = (d->loads + 1) / 2;
#endif
    d->runs = contiguous && (g->kh == 1 || d->loads_per_row % 2 == 0);
    for (int32_t l = 0; l < d->loads_per_row; ++l)
        d->offset[l] = contiguous ? 8 * l : l / per_tap * in_stride + l % per_tap * 8;
    if (d->pairs) { /* channel c's weights k and k + 1 in lanes 2 (c % 4) and 2 (c % 4) + 1 */
        for (int32_t b = 0; b < blocks; ++b)
            for (int32_t pair = 0; pair < d->pairs; ++pair) {
                int16_t v[8];
                for (int32_t i = 0; i < 8; ++i) {
                    const int32_t c = 4 * b + i / 2, k = 2 * pair + i % 2;
                    v[i] = (int16_t)(c < cout && k < row ? filter[c * row + k] : 0);
                }
                d->filter[b * d->pairs + pair] = _mm_loadu_si128((const __m128i *)(const void *)v);
            }
        return 1;
    }
    for (int32_t b = 0; b < blocks; ++b)
        for (int32_t t = 0; t < d->loads; ++t)
            for (int32_t j = 0; j < 4; ++j) {
                const int32_t c = 4 * b + j, ky = t / d->loads_per_row, l = t % d->loads_per_row;
                /* the load's values in the kernel row, [first, end) */
                const int32_t first = contiguous ? 8 * l : l / per_tap * cin + l % per_tap * 8;
                const int32_t end = contiguous ? row : l / per_tap * cin + cin;
                int16_t v[8];
                for (int32_t i = 0; i < 8; ++i)
                    v[i] = (int16_t)(c < cout && first + i < end ? filter[(c * g->kh + ky) * row + first + i] : 0);
                const int32_t at = d->load_pairs ? ((b * d->load_pairs + t / 2) * 4 + j) * 2 + t % 2
                                                 : (b * d->loads + t) * 4 + j;
                d->filter[at] = _mm_loadu_si128((const __m128i *)(const void *)v);
            }
    for (int32_t b = 0; d->load_pairs && d->loads % 2 && b < blocks; ++b) /* the last load's partner: zeros */
        for (int32_t j = 0; j < 4; ++j) d->filter[((b * d->load_pairs + d->loads / 2) * 4 + j) * 2 + 1] = _mm_setzero_si128();
    return 1;
}

/* sums[0 .. cout) of a window of one load (d->pairs > 0), its 8 values v as int16: each pair of
 * them broadcast to the four lanes against 4 channels' pairs of weights. pairs is a constant in
 * each of pair_sums' cases, so the compiler unrolls the loop over them. */
static inline void pair_sums_n(const __m128i *filter, int32_t pairs, int32_t cout, __m128i v, int32_t *sums) {
    const __m128i pair[4] = {_mm_shuffle_epi32(v, 0x00), _mm_shuffle_epi32(v, 0x55), _mm_shuffle_epi32(v, 0xaa),
                             _mm_shuffle_epi32(v, 0xff)};
    for (int32_t c = 0; c < cout; c += 4) {
        const __m128i *f = filter + c / 4 * pairs;
        __m128i sum = _mm_madd_epi16(pair[0], f[0]);
        for (int32_t k = 1; k < pairs; ++k) sum = _mm_add_epi32(sum, _mm_madd_epi16(pair[k], f[k]));
        if (c + 4 <= cout) {
            _mm_storeu_si128((__m128i *)(void *)(sums + c), sum);
        } else { /* the last 1 to 3 channels */
            int32_t last[4];
            _mm_storeu_si128((__m128i *)(void *)last, sum);
            for (int32_t i = 0; c + i < cout; ++i) sums[c + i] = last[i];
        }
    }
}

static void pair_sums(const direct_t *d, int32_t cout, const int8_t *x, int32_t *sums) {
    const __m128i v = load8_i16(x);
    switch (d->pairs) {
    case 1: pair_sums_n(d->filter, 1, cout, v, sums); return;
    case 2: pair_sums_n(d->filter, 2, cout, v, sums); return;
    case 3: pair_sums_n(d->filter, 3, cout, v, sums); return;
    default: pair_sums_n(d->filter, 4, cout, v, sums); return;
    }
}

/* pair_sums of n pixels of a pointwise layer (stride values apart, from x), their sums one after the
 * other: one call for a run of outputs, the loop inside each case. */
static void pair_sums_pixels(const direct_t *d, int32_t cout, const int8_t *x, int32_t stride, int32_t n, int32_t *sums) {
    switch (d->pairs) {
    case 1: for (int32_t i = 0; i < n; ++i) pair_sums_n(d->filter, 1, cout, load8_i16(x + i * stride), sums + i * cout); return;
    case 2: for (int32_t i = 0; i < n; ++i) pair_sums_n(d->filter, 2, cout, load8_i16(x + i * stride), sums + i * cout); return;
    case 3: for (int32_t i = 0; i < n; ++i) pair_sums_n(d->filter, 3, cout, load8_i16(x + i * stride), sums + i * cout); return;
    default: for (int32_t i = 0; i < n; ++i) pair_sums_n(d->filter, 4, cout, load8_i16(x + i * stride), sums + i * cout); return;
    }
}

/* sums[c .. c + 4) = the four lanes of four, those below cout only (a last block of 1 to 3 channels). */
static inline void store_sums4(int32_t *sums, int32_t c, int32_t cout, __m128i four) {
    if (c + 4 <= cout) {
        _mm_storeu_si128((__m128i *)(void *)(sums + c), four);
        return;
    }
    int32_t last[4];
    _mm_storeu_si128((__m128i *)(void *)last, four);
    for (int32_t i = 0; c + i < cout; ++i) sums[c + i] = last[i];
}

#if defined(IOTNAS_AVX2)
/* The four channels' sums of 256-bit vectors s0..s3 (two halves each) in order. */
IOTNAS_AVX2_FN static __m128i sums4_avx2(__m256i s0, __m256i s1, __m256i s2, __m256i s3) {
    const __m128i t0 = _mm_add_epi32(_mm256_castsi256_si128(s0), _mm256_extracti128_si256(s0, 1));
    const __m128i t1 = _mm_add_epi32(_mm256_castsi256_si128(s1), _mm256_extracti128_si256(s1, 1));
    const __m128i t2 = _mm_add_epi32(_mm256_castsi256_si128(s2), _mm256_extracti128_si256(s2, 1));
    const __m128i t3 = _mm_add_epi32(_mm256_castsi256_si128(s3), _mm256_extracti128_si256(s3, 1));
    const __m128i a = _mm_add_epi32(_mm_unpacklo_epi32(t0, t1), _mm_unpackhi_epi32(t0, t1));
    const __m128i b = _mm_add_epi32(_mm_unpacklo_epi32(t2, t3), _mm_unpackhi_epi32(t2, t3));
    return _mm_add_epi32(_mm_unpacklo_epi64(a, b), _mm_unpackhi_epi64(a, b));
}

/* direct_sums in AVX2 (d->load_pairs > 0): two loads of the window side by side in a 256-bit
 * vector against the filter's two, so one vpmaddwd takes 16 values of a channel. */
IOTNAS_AVX2_FN static void direct_sums_avx2(const direct_t *d, int32_t kh, int32_t stride, int32_t cout, const int8_t *x,
                                            int32_t *sums) {
    __m256i xp[IOTNAS_DIRECT_LOADS / 2 + 1];
    if (d->runs) { /* 16 bytes widened at once; an odd last load's 8 (the upper ones read as 0) */
        for (int32_t ky = 0, t = 0; ky < kh; ++ky)
            for (int32_t l = 0; l < d->loads_per_row; l += 2, ++t) {
                const __m128i *const p = (const __m128i *)(const void *)(x + ky * stride + 8 * l);
                xp[t] = _mm256_cvtepi8_epi16(l + 1 < d->loads_per_row ? _mm_loadu_si128(p) : _mm_loadl_epi64(p));
            }
    } else {
        __m128i xs[IOTNAS_DIRECT_LOADS + 1];
        for (int32_t ky = 0, t = 0; ky < kh; ++ky)
            for (int32_t l = 0; l < d->loads_per_row; ++l, ++t) xs[t] = load8_i16(x + ky * stride + d->offset[l]);
        xs[d->loads] = _mm_setzero_si128();
        for (int32_t t = 0; t < d->load_pairs; ++t)
            xp[t] = _mm256_inserti128_si256(_mm256_castsi128_si256(xs[2 * t]), xs[2 * t + 1], 1);
    }
    const __m256i *const filter = (const __m256i *)(const void *)d->filter;
    int32_t c = 0;
    for (; c + 3 <= cout; c += 4) { /* 4 channels a pass (3: the fourth weighs 0) */
        const __m256i *f = filter + c / 4 * d->load_pairs * 4;
        __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
        for (int32_t t = 0; t < d->load_pairs; ++t, f += 4) {
            s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(xp[t], _mm256_loadu_si256(f)));
            s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(xp[t], _mm256_loadu_si256(f + 1)));
            s2 = _mm256_add_epi32(s2, _mm256_madd_epi16(xp[t], _mm256_loadu_si256(f + 2)));
            s3 = _mm256_add_epi32(s3, _mm256_madd_epi16(xp[t], _mm256_loadu_si256(f + 3)));
        }
        store_sums4(sums, c, cout, sums4_avx2(s0, s1, s2, s3));
    }
    if (c < cout) { /* the last 1 or 2 channels, at the start of their block */
        const __m256i *f = filter + c / 4 * d->load_pairs * 4;
        __m256i s0 = _mm256_setzero_si256(), s1 = s0;
        for (int32_t t = 0; t < d->load_pairs; ++t, f += 4) {
            s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(xp[t], _mm256_loadu_si256(f)));
            if (c + 2 <= cout) s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(xp[t], _mm256_loadu_si256(f + 1)));
        }
        const __m128i t0 = _mm_add_epi32(_mm256_castsi256_si128(s0), _mm256_extracti128_si256(s0, 1));
        const __m128i t1 = _mm_add_epi32(_mm256_castsi256_si128(s1), _mm256_extracti128_si256(s1, 1));
        const __m128i a = _mm_add_epi32(_mm_unpacklo_epi32(t0, t1), _mm_unpackhi_epi32(t0, t1));
        int32_t two[4];
        _mm_storeu_si128((__m128i *)(void *)two, _mm_add_epi32(a, _mm_unpackhi_epi64(a, a)));
        sums[c] = two[0];
        if (c + 2 <= cout) sums[c + 1] = two[1];
    }
}
#endif

#if defined(IOTNAS_AVX2)
/* The sums of n pixels of a pointwise layer of 9 to 16 input channels (d->loads_per_row == 2, one
 * run: d->runs), stride values apart from x, one pixel's cout sums after another: each pixel's 16
 * values one 256-bit vector, one vpmaddwd per output channel, four channels reduced together; no
 * call per pixel. */
IOTNAS_AVX2_FN static void direct_pixels_avx2(const direct_t *d, int32_t cout, const int8_t *x, int32_t stride, int32_t n,
                                              int32_t *sums) {
    const __m256i *const filter = (const __m256i *)(const void *)d->filter; /* [cout / 4][4 channels] */
    for (int32_t i = 0; i < n; ++i, x += stride, sums += cout) {
        const __m256i v = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)x));
        for (int32_t c = 0; c < cout; c += 4) {
            const __m256i *const f = filter + c;
            store_sums4(sums, c, cout,
                        sums4_avx2(_mm256_madd_epi16(v, _mm256_loadu_si256(f)), _mm256_madd_epi16(v, _mm256_loadu_si256(f + 1)),
                                   _mm256_madd_epi16(v, _mm256_loadu_si256(f + 2)), _mm256_madd_epi16(v, _mm256_loadu_si256(f + 3))));
        }
    }
}
#endif

/* sums[0 .. cout) of the window whose top-left input pixel is x (rows stride apart): 4 channels a
 * pass, then 2, then 1. */
static void direct_sums(const direct_t *d, int32_t kh, int32_t stride, int32_t cout, const int8_t *x, int32_t *sums) {
    if (d->pairs) {
        pair_sums(d, cout, x, sums);
        return;
    }
#if defined(IOTNAS_AVX2)
    if (d->load_pairs) {
        direct_sums_avx2(d, kh, stride, cout, x, sums);
        return;
    }
#endif
    __m128i xs[IOTNAS_DIRECT_LOADS];
    for (int32_t ky = 0, t = 0; ky < kh; ++ky)
        for (int32_t l = 0; l < d->loads_per_row; ++l, ++t) xs[t] = load8_i16(x + ky * stride + d->offset[l]);
    int32_t c = 0;
    for (; c + 4 <= cout; c += 4) {
        const __m128i *f = d->filter + c * d->loads;
        __m128i s0 = _mm_setzero_si128(), s1 = s0, s2 = s0, s3 = s0;
        for (int32_t t = 0; t < d->loads; ++t, f += 4) {
            s0 = _mm_add_epi32(s0, _mm_madd_epi16(xs[t], f[0]));
            s1 = _mm_add_epi32(s1, _mm_madd_epi16(xs[t], f[1]));
            s2 = _mm_add_epi32(s2, _mm_madd_epi16(xs[t], f[2]));
            s3 = _mm_add_epi32(s3, _mm_madd_epi16(xs[t], f[3]));
        }
        const __m128i a = _mm_add_epi32(_mm_unpacklo_epi32(s0, s1), _mm_unpackhi_epi32(s0, s1));
        const __m128i b = _mm_add_epi32(_mm_unpacklo_epi32(s2, s3), _mm_unpackhi_epi32(s2, s3));
        _mm_storeu_si128((__m128i *)(void *)(sums + c), _mm_add_epi32(_mm_unpacklo_epi64(a, b), _mm_unpackhi_epi64(a, b)));
    }
    if (c + 2 <= cout) { /* the last 2 or 3 channels: 2 in a pass */
        const __m128i *f = d->filter + c * d->loads;
        __m128i s0 = _mm_setzero_si128(), s1 = s0;
        for (int32_t t = 0; t < d->loads; ++t, f += 4) {
            s0 = _mm_add_epi32(s0, _mm_madd_epi16(xs[t], f[0]));
            s1 = _mm_add_epi32(s1, _mm_madd_epi16(xs[t], f[1]));
        }
        const __m128i a = _mm_add_epi32(_mm_unpacklo_epi32(s0, s1), _mm_unpackhi_epi32(s0, s1));
        _mm_storel_epi64((__m128i *)(void *)(sums + c), _mm_add_epi32(a, _mm_unpackhi_epi64(a, a)));
        c += 2;
    }
    if (c < cout) { /* and the last one */
        const __m128i *f = d->filter + (c & ~3) * d->loads + (c & 3);
        __m128i s0 = _mm_setzero_si128();
        for (int32_t t = 0; t < d->loads; ++t, f += 4) s0 = _mm_add_epi32(s0, _mm_madd_epi16(xs[t], f[0]));
        sums[c] = lanes_sum(s0);
    }
}

/* A depthwise filter with its taps in pairs along each kernel row, widened once per call: for each 8
 * channels, kernel row and pair of columns (kx, kx + 1), two vectors of int16 (channels 0-3 and
 * 4-7), each channel's two weights side by side (the second 0 after an odd row's last tap), so one
 * pmaddwd sums two taps of four channels. */
#define IOTNAS_PAIR_VECTORS 512
typedef struct {
    int32_t pairs; /* pairs of taps in a kernel row */
    __m128i filter[IOTNAS_PAIR_VECTORS]; /* [cout / 8, rounded up][kh][pairs][2], 0 past cout */
} tap_pairs_t;

static int tap_pairs_init(tap_pairs_t *t, const iotnas_geometry_t *g, int32_t cout, const int8_t *filter) {
    t->pairs = (g->kw + 1) / 2;
    if ((cout + 7) / 8 * g->kh * t->pairs * 2 > IOTNAS_PAIR_VECTORS) return 0;
    __m128i *v = t->filter;
    for (int32_t c0 = 0; c0 < cout; c0 += 8)
        for (int32_t ky = 0; ky < g->kh; ++ky)
            for (int32_t j = 0; j < t->pairs; ++j)
                for (int32_t half = 0; half < 2; ++half, ++v) {
                    int16_t w[8];
                    for (int32_t i = 0; i < 4; ++i) {
                        const int32_t c = c0 + 4 * half + i, kx = 2 * j;
                        w[2 * i] = (int16_t)(c < cout ? filter[(ky * g->kw + kx) * cout + c] : 0);
                        w[2 * i + 1] = (int16_t)(c < cout && kx + 1 < g->kw ? filter[(ky * g->kw + kx + 1) * cout + c] : 0);
                    }
                    *v = _mm_loadu_si128((const __m128i *)(const void *)w);
                }
    return 1;
}

/* acc[0..8) = the sums of 8 consecutive channels (block b of 8) over window w, two taps a pmaddwd:
 * x the image's first pixel at those channels (pixels in_stride apart); a tap in the padding reads
 * zp8, 8 copies of the zero point. */
static void tap_pairs8(const tap_pairs_t *t, const iotnas_geometry_t *g, window_t w, const int8_t *x, int32_t in_stride,
                       const int8_t *zp8, int32_t b, int32_t *acc) {
    const __m128i *f = t->filter + b * g->kh * t->pairs * 2;
    const int inside = whole(g, w);
    __m128i lo = _mm_setzero_si128(), hi = _mm_setzero_si128();
    for (int32_t ky = 0; ky < g->kh; ++ky) {
        const int row = ky >= w.ky0 && ky < w.ky1;
        const int32_t start = ((w.y0 + ky) * g->win + w.x0) * in_stride; /* of tap (ky, 0), if in the image */
        for (int32_t kx = 0; kx < g->kw; kx += 2, f += 2) {
            const int8_t *const pa = inside || (row && kx >= w.kx0 && kx < w.kx1) ? x + start + kx * in_stride : zp8;
            const __m128i a = _mm_loadl_epi64((const __m128i *)(const void *)pa);
            __m128i next = _mm_setzero_si128(); /* after an odd row's last tap: a weight of 0 */
            if (kx + 1 < g->kw) {
                const int8_t *const pb = inside || (row && kx + 1 >= w.kx0 && kx + 1 < w.kx1)
                                             ? x + start + (kx + 1) * in_stride : zp8;
                next = _mm_loadl_epi64((const __m128i *)(const void *)pb);
            }
            const __m128i pairs = _mm_unpacklo_epi8(a, next); /* each channel's two taps side by side */
            lo = _mm_add_epi32(lo, _mm_madd_epi16(_mm_srai_epi16(_mm_unpacklo_epi8(pairs, pairs), 8), f[0]));
            hi = _mm_add_epi32(hi, _mm_madd_epi16(_mm_srai_epi16(_mm_unpackhi_epi8(pairs, pairs), 8), f[1]));
        }
    }
    _mm_storeu_si128((__m128i *)(void *)acc, lo);
    _mm_storeu_si128((__m128i *)(void *)(acc + 4), hi);
}

/* A depthwise layer's input widened once per call into a plane padded with the zero point (every
 * window whole), whose pixel x holds, for each 8 channels, their codes at x and at x + 1 side by side
 * as int16 (two vectors: channels 0-3, then 4-7), in tap_pairs_t's order: a pair of taps is then two
 * aligned loads and two pmaddwd, with no widening or interleaving per window (a 7 x 7 layer reads each
 * input pixel 49 times). The plane lies on the stack. */
#ifndef IOTNAS_PAIRED_PLANE_VECTORS /* a build may set it: 1 leaves every depthwise layer to tap_pairs8 */
#define IOTNAS_PAIRED_PLANE_VECTORS 4096
#endif
typedef struct {
    int32_t width, blocks; /* pixels of a plane row, blocks of 8 channels per pixel */
} paired_plane_t;

/* The codes of a block of n channels (n <= 8) at offset at of the input x (bytes in all) as 8 int16:
 * one 8-byte load (past n, other channels' codes, which the filter weights 0), unless it would pass
 * the input's end. */
static __m128i block_codes(const int8_t *x, int32_t at, int32_t bytes, int32_t n) {
    if (at + 8 <= bytes) return load8_i16(x + at);
    int8_t codes[8] = {0};
    memcpy(codes, x + at, (size_t)n);
    return load8_i16(codes);
}

static int paired_plane_init(paired_plane_t *pp, __m128i *plane, const iotnas_geometry_t *g, const int8_t *x,
                             int32_t in_stride, int32_t c, int8_t zp) {
    const int32_t height = padded_rows(g), width = padded_columns(g), blocks = (c + 7) / 8;
    if (height * width * blocks * 2 > IOTNAS_PAIRED_PLANE_VECTORS) return 0;
    pp->width = width, pp->blocks = blocks;
    const __m128i zp16 = _mm_set1_epi16(zp);
    const int32_t bytes = g->hin * g->win * in_stride;
    const int32_t left = g->pl; /* plane columns before the image's, and the first after it */
    const int32_t end = g->pl + g->win; /* (padded_columns: at most width) */
    for (int32_t b = 0; b < blocks; ++b) {
        const int32_t n = c - 8 * b < 8 ? c - 8 * b : 8; /* channels of the block; the others weighted 0 */
        for (int32_t y = 0; y < height; ++y) {
            const int32_t iy = y - g->pt, row = iy * g->win * in_stride + 8 * b;
            __m128i *v = plane + (y * width * blocks + b) * 2;
            if (iy < 0 || iy >= g->hin) { /* a row of padding */
                for (int32_t px = 0; px < width; ++px, v += 2 * blocks) v[0] = zp16, v[1] = zp16;
                continue;
            }
            /* a row of the image, no check per pixel: plane pixel px holds columns px and px + 1 */
            __m128i here = left > 0 ? zp16 : block_codes(x, row, bytes, n);
            int32_t px = 0;
            for (; px + 1 < left; ++px, v += 2 * blocks) v[0] = zp16, v[1] = zp16; /* both taps padding */
            for (; px + 1 < end; ++px, v += 2 * blocks) { /* the next column in the image */
                const __m128i next = block_codes(x, row + (px + 1 - g->pl) * in_stride, bytes, n);
                v[0] = _mm_unpacklo_epi16(here, next), v[1] = _mm_unpackhi_epi16(here, next);
                here = next;
            }
            for (; px < width; ++px, v += 2 * blocks) { /* the next column in the padding */
                v[0] = _mm_unpacklo_epi16(here, zp16), v[1] = _mm_unpackhi_epi16(here, zp16);
                here = zp16;
            }
        }
    }
    return 1;
}

/* The sums of block b's 8 channels over the window of output (oy, ox), from the paired plane. */
static void paired_plane_sums8(const tap_pairs_t *t, const iotnas_geometry_t *g, const paired_plane_t *pp,
                               const __m128i *plane, int32_t oy, int32_t ox, int32_t b, int32_t *acc) {
    const int32_t step = 2 * pp->blocks; /* vectors from a plane pixel to the next */
    const __m128i *f = t->filter + b * g->kh * t->pairs * 2;
    const __m128i *corner = plane + (oy * g->sh * pp->width + ox * g->sw) * step + 2 * b;
    __m128i lo = _mm_setzero_si128(), hi = _mm_setzero_si128();
    for (int32_t ky = 0; ky < g->kh; ++ky) {
        const __m128i *p = corner + ky * pp->width * step;
        for (int32_t j = 0; j < t->pairs; ++j, p += 2 * step, f += 2) {
            lo = _mm_add_epi32(lo, _mm_madd_epi16(p[0], f[0]));
            hi = _mm_add_epi32(hi, _mm_madd_epi16(p[1], f[1]));
        }
    }
    _mm_storeu_si128((__m128i *)(void *)acc, lo);
    _mm_storeu_si128((__m128i *)(void *)(acc + 4), hi);
}

#if defined(IOTNAS_AVX2)
/* paired_plane_sums8 in AVX2: a plane pixel's two vectors (channels 0-3, 4-7) are one 256-bit
 * load, as are the filter's, so one vpmaddwd sums a pair of taps of all 8 channels. */
IOTNAS_AVX2_FN static void paired_plane_sums8_avx2(const tap_pairs_t *t, const iotnas_geometry_t *g,
                                                   const paired_plane_t *pp, const __m128i *plane, int32_t oy,
                                                   int32_t ox, int32_t b, int32_t *acc) {
    const int32_t step = 2 * pp->blocks;
    const __m128i *f = t->filter + b * g->kh * t->pairs * 2;
    const __m128i *corner = plane + (oy * g->sh * pp->width + ox * g->sw) * step + 2 * b;
    __m256i sum = _mm256_setzero_si256(), other = sum; /* two chains of additions, not one */
    for (int32_t ky = 0; ky < g->kh; ++ky) {
        const __m128i *p = corner + ky * pp->width * step;
        int32_t j = 0;
        for (; j + 2 <= t->pairs; j += 2, p += 4 * step, f += 4) {
            sum = _mm256_add_epi32(sum, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(const void *)p),
                                                          _mm256_loadu_si256((const __m256i *)(const void *)f)));
            other = _mm256_add_epi32(other, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(const void *)(p + 2 * step)),
                                                              _mm256_loadu_si256((const __m256i *)(const void *)(f + 2))));
        }
        if (j < t->pairs) {
            sum = _mm256_add_epi32(sum, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(const void *)p),
                                                          _mm256_loadu_si256((const __m256i *)(const void *)f)));
            f += 2;
        }
    }
    _mm256_storeu_si256((__m256i *)(void *)acc, _mm256_add_epi32(sum, other));
}
#endif

#if defined(IOTNAS_AVX2)
/* The sums of block b's 8 channels at 8 output pixels (oy, ox + k), k < 8, into acc + k * stride:
 * each filter vector loaded once for the 8 pixels, whose sums stay in registers, so a pair of taps
 * costs a pixel one vpmaddwd (its plane vector a memory operand) and one addition. */
#define IOTNAS_PAIRED8_ACC(k) \
    s##k = _mm256_add_epi32(s##k, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(const void *)(p + k * next)), w))
#define IOTNAS_PAIRED8_STORE(k) _mm256_storeu_si256((__m256i *)(void *)(acc + k * stride), s##k)
IOTNAS_AVX2_FN static void paired_plane_sums8x8_avx2(const tap_pairs_t *t, const iotnas_geometry_t *g,
                                                     const paired_plane_t *pp, const __m128i *plane, int32_t oy,
                                                     int32_t ox, int32_t b, int32_t *acc, int32_t stride) {
    const int32_t step = 2 * pp->blocks, next = g->sw * step; /* vectors from a window to the next pixel's */
    const __m128i *f = t->filter + b * g->kh * t->pairs * 2;
    const __m128i *corner = plane + (oy * g->sh * pp->width + ox * g->sw) * step + 2 * b;
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
    for (int32_t ky = 0; ky < g->kh; ++ky) {
        const __m128i *p = corner + ky * pp->width * step;
        for (int32_t j = 0; j < t->pairs; ++j, p += 2 * step, f += 2) {
            const __m256i w = _mm256_loadu_si256((const __m256i *)(const void *)f);
            IOTNAS_PAIRED8_ACC(0); IOTNAS_PAIRED8_ACC(1); IOTNAS_PAIRED8_ACC(2); IOTNAS_PAIRED8_ACC(3);
            IOTNAS_PAIRED8_ACC(4); IOTNAS_PAIRED8_ACC(5); IOTNAS_PAIRED8_ACC(6); IOTNAS_PAIRED8_ACC(7);
        }
    }
    IOTNAS_PAIRED8_STORE(0); IOTNAS_PAIRED8_STORE(1); IOTNAS_PAIRED8_STORE(2); IOTNAS_PAIRED8_STORE(3);
    IOTNAS_PAIRED8_STORE(4); IOTNAS_PAIRED8_STORE(5); IOTNAS_PAIRED8_STORE(6); IOTNAS_PAIRED8_STORE(7);
}
#undef IOTNAS_PAIRED8_ACC
#undef IOTNAS_PAIRED8_STORE
#endif

/* A convolution of few input and output channels (up to 8 each) at stride 1 along the rows, four
 * output pixels of a row at a time: its input widened once per call into int16 planes, one per input
 * channel ([y][channel][x]), padded with the zero point, so each tap pair (kx, kx + 1) of a kernel row
 * and input channel is two loads and one unpack for the four pixels, and one pmaddwd per output channel
 * against that channel's two weights (in every lane pair) gives the four pixels' partial sums: no
 * horizontal sums, and each load serves every output channel (the direct kernel's loads of 8 values
 * are mostly padding when a kernel row holds 3 x 3 values). */
#define IOTNAS_FEW_IN 8
#define IOTNAS_FEW_OUT 8
#define IOTNAS_FEW_VECTORS 512
#define IOTNAS_CHANNEL_PLANES 16384 /* int16 values of the planes, on the stack */
typedef struct {
    int32_t width, pairs; /* values of a plane row; tap pairs of a kernel row */
    __m128i filter[IOTNAS_FEW_VECTORS]; /* [kh][pairs][cin][cout]: the weights at kx and kx + 1 in each lane pair */
} channel_planes_t;

static int channel_planes_init(channel_planes_t *cp, int16_t *plane, const iotnas_geometry_t *g, const int8_t *x,
                               int32_t in_stride, int32_t cin, int32_t cout, const int8_t *filter, int8_t zp) {
    /* one column more than the padded input: the second tap of an odd row's last pair, weighted 0 */
    const int32_t height = padded_rows(g), width = padded_columns(g) + 1;
    const int32_t pairs = (g->kw + 1) / 2;
    if (g->sw != 1 || g->wout < 4 || cin > IOTNAS_FEW_IN || cout > IOTNAS_FEW_OUT || height * cin * width > IOTNAS_CHANNEL_PLANES
        || g->kh * pairs * cin * cout > IOTNAS_FEW_VECTORS)
        return 0;
    cp->width = width, cp->pairs = pairs;
    __m128i *f = cp->filter;
    for (int32_t ky = 0; ky < g->kh; ++ky)
        for (int32_t j = 0; j < pairs; ++j)
            for (int32_t ci = 0; ci < cin; ++ci)
                for (int32_t co = 0; co < cout; ++co, ++f) {
                    const int8_t *const w = filter + ((co * g->kh + ky) * g->kw + 2 * j) * cin + ci;
                    const uint32_t first = (uint16_t)(int16_t)w[0], second = 2 * j + 1 < g->kw ? (uint16_t)(int16_t)w[cin] : 0;
                    *f = _mm_set1_epi32((int32_t)(first | second << 16));
                }
    for (int32_t y = 0; y < height; ++y) {
        const int32_t iy = y - g->pt;
        for (int32_t ci = 0; ci < cin; ++ci) {
            int16_t *const row = plane + (y * cin + ci) * width;
            const int32_t n = g->win < width - g->pl ? g->win : width - g->pl; /* input columns in the plane */
            int32_t px = 0;
            if (iy >= 0 && iy < g->hin) {
                const int8_t *const src = x + iy * g->win * in_stride + ci;
                for (; px < g->pl; ++px) row[px] = zp;
                for (int32_t i = 0; i < n; ++i) row[g->pl + i] = src[i * in_stride];
                px += n;
            }
            for (; px < width; ++px) row[px] = zp;
        }
    }
    return 1;
}

/* sums[p * cout + c] = output channel c's sum at output pixels (oy, ox + p), p < 4; cout a constant in
 * each of channel_planes_sums4's cases, so the accumulators named below stay in registers (an array of
 * them would live in memory). */
#define IOTNAS_FEW_ACC(k) if (cout > k) s##k = _mm_add_epi32(s##k, _mm_madd_epi16(taps, f[k]))
#define IOTNAS_FEW_STORE(k)                                                     \
    if (cout > k) {                                                             \
        int32_t lanes[4];                                                       \
        _mm_storeu_si128((__m128i *)(void *)lanes, s##k);                       \
        for (int32_t p = 0; p < 4; ++p) sums[p * cout + k] = lanes[p];          \
    }
static inline void channel_planes_sums4_n(const channel_planes_t *cp, const iotnas_geometry_t *g, const int16_t *plane,
                                          int32_t cin, const int32_t cout, int32_t oy, int32_t ox, int32_t *sums) {
    __m128i s0 = _mm_setzero_si128(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
    const __m128i *f = cp->filter;
    for (int32_t ky = 0; ky < g->kh; ++ky) {
        const int16_t *const row = plane + (oy * g->sh + ky) * cin * cp->width + ox;
        for (int32_t j = 0; j < cp->pairs; ++j)
            for (int32_t ci = 0; ci < cin; ++ci, f += cout) {
                const int16_t *const p = row + ci * cp->width + 2 * j;
                const __m128i a = _mm_loadl_epi64((const __m128i *)(const void *)p);
                const __m128i b = _mm_loadl_epi64((const __m128i *)(const void *)(p + 1));
                const __m128i taps = _mm_unpacklo_epi16(a, b); /* each pixel's two taps side by side */
                IOTNAS_FEW_ACC(0); IOTNAS_FEW_ACC(1); IOTNAS_FEW_ACC(2); IOTNAS_FEW_ACC(3);
                IOTNAS_FEW_ACC(4); IOTNAS_FEW_ACC(5); IOTNAS_FEW_ACC(6); IOTNAS_FEW_ACC(7);
            }
    }
    IOTNAS_FEW_STORE(0) IOTNAS_FEW_STORE(1) IOTNAS_FEW_STORE(2) IOTNAS_FEW_STORE(3)
    IOTNAS_FEW_STORE(4) IOTNAS_FEW_STORE(5) IOTNAS_FEW_STORE(6) IOTNAS_FEW_STORE(7)
}
#undef IOTNAS_FEW_ACC
#undef IOTNAS_FEW_STORE

static void channel_planes_sums4(const channel_planes_t *cp, const iotnas_geometry_t *g, const int16_t *plane,
                                 int32_t cin, int32_t cout, int32_t oy, int32_t ox, int32_t *sums) {
    switch (cout) {
    case 1: channel_planes_sums4_n(cp, g, plane, cin, 1, oy, ox, sums); return;
    case 2: channel_planes_sums4_n(cp, g, plane, cin, 2, oy, ox, sums); return;
    case 3: channel_planes_sums4_n(cp, g, plane, cin, 3, oy, ox, sums); return;
    case 4: channel_planes_sums4_n(cp, g, plane, cin, 4, oy, ox, sums); return;
    case 5: channel_planes_sums4_n(cp, g, plane, cin, 5, oy, ox, sums); return;
    case 6: channel_planes_sums4_n(cp, g, plane, cin, 6, oy, ox, sums); return;
    case 7: channel_planes_sums4_n(cp, g, plane, cin, 7, oy, ox, sums); return;
    default: channel_planes_sums4_n(cp, g, plane, cin, 8, oy, ox, sums); return;
    }
}

#if defined(IOTNAS_AVX2)
/* channel_planes_sums4 in AVX2 for 16 output pixels (oy, ox + p), p < 16, and output channels
 * [c0, c0 + n), n <= 4 a constant in each of channel_planes_sums16's cases: 16 plane values and the
 * 16 after them unpacked in pairs give pixels 0-3 and 8-11 in one vector, 4-7 and 12-15 in the
 * other (vpunpck works within 128-bit halves), each against the channel's pair of weights. */
#define IOTNAS_FEW16_ACC(k)                                                            \
    if (n > k) {                                                                       \
        const __m256i w = _mm256_broadcastsi128_si256(f[k]);                           \
        lo##k = _mm256_add_epi32(lo##k, _mm256_madd_epi16(taps_lo, w));                \
        hi##k = _mm256_add_epi32(hi##k, _mm256_madd_epi16(taps_hi, w));                \
    }
#define IOTNAS_FEW16_STORE(k)                                                          \
    if (n > k) {                                                                       \
        int32_t l[8], h[8];                                                            \
        _mm256_storeu_si256((__m256i *)(void *)l, lo##k);                              \
        _mm256_storeu_si256((__m256i *)(void *)h, hi##k);                              \
        for (int32_t p = 0; p < 4; ++p) {                                              \
            sums[p * cout + c0 + k] = l[p], sums[(p + 8) * cout + c0 + k] = l[p + 4];  \
            sums[(p + 4) * cout + c0 + k] = h[p], sums[(p + 12) * cout + c0 + k] = h[p + 4]; \
        }                                                                              \
    }
IOTNAS_AVX2_FN static inline void channel_planes_sums16_n(const channel_planes_t *cp, const iotnas_geometry_t *g,
                                                          const int16_t *plane, int32_t cin, int32_t cout, int32_t c0,
                                                          const int32_t n, int32_t oy, int32_t ox, int32_t *sums) {
    __m256i lo0 = _mm256_setzero_si256(), lo1 = lo0, lo2 = lo0, lo3 = lo0, hi0 = lo0, hi1 = lo0, hi2 = lo0, hi3 = lo0;
    for (int32_t ky = 0; ky < g->kh; ++ky) {
        const int16_t *const row = plane + (oy * g->sh + ky) * cin * cp->width + ox;
        for (int32_t j = 0; j < cp->pairs; ++j)
            for (int32_t ci = 0; ci < cin; ++ci) {
                const int16_t *const p = row + ci * cp->width + 2 * j;
                const __m128i *const f = cp->filter + ((ky * cp->pairs + j) * cin + ci) * cout + c0;
                const __m256i a = _mm256_loadu_si256((const __m256i *)(const void *)p);
                const __m256i b = _mm256_loadu_si256((const __m256i *)(const void *)(p + 1));
                const __m256i taps_lo = _mm256_unpacklo_epi16(a, b), taps_hi = _mm256_unpackhi_epi16(a, b);
                IOTNAS_FEW16_ACC(0) IOTNAS_FEW16_ACC(1) IOTNAS_FEW16_ACC(2) IOTNAS_FEW16_ACC(3)
            }
    }
    IOTNAS_FEW16_STORE(0) IOTNAS_FEW16_STORE(1) IOTNAS_FEW16_STORE(2) IOTNAS_FEW16_STORE(3)
}
#undef IOTNAS_FEW16_ACC
#undef IOTNAS_FEW16_STORE

/* For 5 to 8 output channels, where channel_planes_sums16 takes two passes of 4: 8 output pixels
 * (oy, ox + p), p < 8, a step, each pixel's sums one vector with output channel c in lane c, so that
 * they come out in the outputs' order (no lanes to gather). Per tap pair and input channel, the
 * pixel's two plane values broadcast to every lane meet each channel's two weights (wide: lane c the
 * pair that cp->filter holds for channel c), one vpmaddwd per pixel. */
IOTNAS_AVX2_FN static void channel_planes_wide(const channel_planes_t *cp, const iotnas_geometry_t *g, int32_t cin,
                                               int32_t cout, __m256i *wide) {
    for (int32_t i = 0; i < g->kh * cp->pairs * cin; ++i) {
        int32_t lanes[8] = {0};
        for (int32_t co = 0; co < cout; ++co) lanes[co] = _mm_cvtsi128_si32(cp->filter[i * cout + co]);
        wide[i] = _mm256_loadu_si256((const __m256i *)(const void *)lanes);
    }
}

/* The two int16 plane values at p as one int32 in every lane. */
IOTNAS_AVX2_FN static inline __m256i plane_pair(const int16_t *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return _mm256_set1_epi32(v);
}

#define IOTNAS_WIDE_ACC(k) s##k = _mm256_add_epi32(s##k, _mm256_madd_epi16(plane_pair(p + k), w))
/* sums[p * cout + c] = output channel c's sum at (oy, ox + p), p < 8 (each pixel's store of 8 lanes
 * runs cout values into the next one's place, which that pixel's store then fills: sums holds
 * 8 cout + 8 values). */
IOTNAS_AVX2_FN static void channel_planes_sums8_wide(const channel_planes_t *cp, const iotnas_geometry_t *g,
                                                     const __m256i *wide, const int16_t *plane, int32_t cin,
                                                     int32_t cout, int32_t oy, int32_t ox, int32_t *sums) {
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
    for (int32_t ky = 0; ky < g->kh; ++ky) {
        const int16_t *const row = plane + (oy * g->sh + ky) * cin * cp->width + ox;
        for (int32_t j = 0; j < cp->pairs; ++j)
            for (int32_t ci = 0; ci < cin; ++ci, ++wide) {
                const int16_t *const p = row + ci * cp->width + 2 * j;
                const __m256i w = _mm256_loadu_si256(wide);
                IOTNAS_WIDE_ACC(0); IOTNAS_WIDE_ACC(1); IOTNAS_WIDE_ACC(2); IOTNAS_WIDE_ACC(3);
                IOTNAS_WIDE_ACC(4); IOTNAS_WIDE_ACC(5); IOTNAS_WIDE_ACC(6); IOTNAS_WIDE_ACC(7);
            }
    }
    _mm256_storeu_si256((__m256i *)(void *)sums, s0);
    _mm256_storeu_si256((__m256i *)(void *)(sums + cout), s1);
    _mm256_storeu_si256((__m256i *)(void *)(sums + 2 * cout), s2);
    _mm256_storeu_si256((__m256i *)(void *)(sums + 3 * cout), s3);
    _mm256_storeu_si256((__m256i *)(void *)(sums + 4 * cout), s4);
    _mm256_storeu_si256((__m256i *)(void *)(sums + 5 * cout), s5);
    _mm256_storeu_si256((__m256i *)(void *)(sums + 6 * cout), s6);
    _mm256_storeu_si256((__m256i *)(void *)(sums + 7 * cout), s7);
}
#undef IOTNAS_WIDE_ACC

IOTNAS_AVX2_FN static void channel_planes_sums16(const channel_planes_t *cp, const iotnas_geometry_t *g,
                                                 const int16_t *plane, int32_t cin, int32_t cout, int32_t oy, int32_t ox,
                                                 int32_t *sums) {
    for (int32_t c0 = 0; c0 < cout; c0 += 4) switch (cout - c0) {
        case 1: channel_planes_sums16_n(cp, g, plane, cin, cout, c0, 1, oy, ox, sums); break;
        case 2: channel_planes_sums16_n(cp, g, plane, cin, cout, c0, 2, oy, ox, sums); break;
        case 3: channel_planes_sums16_n(cp, g, plane, cin, cout, c0, 3, oy, ox, sums); break;
        default: channel_planes_sums16_n(cp, g, plane, cin, cout, c0, 4, oy, ox, sums); break;
        }
}
#endif

#endif /* IOTNAS_INT8_X86_H */
