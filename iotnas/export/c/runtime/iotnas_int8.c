/* iotnas int8 kernels (see iotnas_int8.h): TensorFlow Lite's reference integer arithmetic. */
#include "iotnas_int8.h"

#include <string.h>

/* The window of output pixel (oy, ox): the input position of its top-left kernel tap (y0, x0)
 * and the kernel rows [ky0, ky1) and columns [kx0, kx1) that fall inside the input. */
typedef struct {
    int32_t y0, x0, ky0, ky1, kx0, kx1;
} window_t;

static window_t window_at(const iotnas_geometry_t *g, int32_t oy, int32_t ox) {
    window_t w;
    w.y0 = oy * g->sh - g->pt;
    w.x0 = ox * g->sw - g->pl;
    w.ky0 = w.y0 < 0 ? -w.y0 : 0;
    w.ky1 = w.y0 + g->kh > g->hin ? g->hin - w.y0 : g->kh;
    w.kx0 = w.x0 < 0 ? -w.x0 : 0;
    w.kx1 = w.x0 + g->kw > g->win ? g->win - w.x0 : g->kw;
    return w;
}

static int whole(const iotnas_geometry_t *g, window_t w) {
    return w.ky0 == 0 && w.kx0 == 0 && w.ky1 == g->kh && w.kx1 == g->kw;
}

#if defined(__SSE2__)
/* The rows and columns of a layer's input padded so that every window is whole: the padding above
 * and left, the input, and below and right what the last window reaches (the x86 kernels' copies). */
static int32_t padded_rows(const iotnas_geometry_t *g) {
    const int32_t reach = (g->hout - 1) * g->sh + g->kh;
    return g->hin + g->pt > reach ? g->hin + g->pt : reach;
}
static int32_t padded_columns(const iotnas_geometry_t *g) {
    const int32_t reach = (g->wout - 1) * g->sw + g->kw;
    return g->win + g->pl > reach ? g->win + g->pl : reach;
}

#include "iotnas_int8_x86.h"
#endif

void iotnas_qinput(const uint8_t *image, uint32_t pixels, uint32_t c, const int8_t *table, int8_t *out) {
    if (c == 3) { /* RGB: each channel's table at a constant offset, no inner loop */
        for (uint32_t i = 0; i < 3 * pixels; i += 3) {
            out[i] = table[image[i]];
            out[i + 1] = table[256u + image[i + 1]];
            out[i + 2] = table[512u + image[i + 2]];
        }
        return;
    }
    for (uint32_t i = 0; i < pixels; ++i)
        for (uint32_t ch = 0; ch < c; ++ch) out[i * c + ch] = table[ch * 256u + image[i * c + ch]];
}

/* The bias holds the input zero point's share (bias - zp * sum of the channel's weights), so a
 * layer sums plain products x * w; a tap in the padding reads the zero point. */
static int8_t requantize_channel(const iotnas_requant_t *q, int32_t c, int32_t acc) {
    if (q->bias) acc += q->bias[c];
    return iotnas_saturate(iotnas_requantize(acc, q->multiplier[c], q->shift[c]) + q->out_zp, q->act_min,
                           q->act_max);
}

/* Channels summed before they are requantised together (a stack frame of int32). */
#define IOTNAS_CHANNEL_BLOCK 32

/* out[i] = channel c0 + i of acc[i] requantised, for n channels: one loop, no call per output; on
 * x86 eight at a time in SSE2 lanes (the same integers, iotnas_requantize4) while the shifts are
 * right shifts (an effective scale under 1, as nearly every channel's is). */
static void requantize_run(const iotnas_requant_t *q, int32_t c0, int32_t n, const int32_t *acc, int8_t *out) {
    const int32_t *const bias = q->bias ? q->bias + c0 : 0, *const multiplier = q->multiplier + c0;
    const int8_t *const shift = q->shift + c0;
    const int32_t out_zp = q->out_zp, lo = q->act_min, hi = q->act_max;
    int32_t i = 0;
#if defined(__SSE2__)
    const __m128i zero = _mm_setzero_si128(), zp = _mm_set1_epi32(out_zp);
    const __m128i lo16 = _mm_set1_epi16((int16_t)lo), hi16 = _mm_set1_epi16((int16_t)hi);
    for (; i + 8 <= n; i += 8) {
        const __m128i shifts = load8_i16(shift + i), right = _mm_sub_epi16(zero, shifts);
        if (_mm_movemask_epi8(_mm_cmpgt_epi16(shifts, zero))) break; /* a left shift: the scalar form */
        __m128i a = load4_i32(acc + i), b = load4_i32(acc + i + 4);
        if (bias) a = _mm_add_epi32(a, load4_i32(bias + i)), b = _mm_add_epi32(b, load4_i32(bias + i + 4));
        a = iotnas_requantize4(a, load4_i32(multiplier + i), _mm_unpacklo_epi16(right, zero));
        b = iotnas_requantize4(b, load4_i32(multiplier + i + 4), _mm_unpackhi_epi16(right, zero));
        _mm_storel_epi64((__m128i *)(void *)(out + i), codes8(a, b, zp, lo16, hi16));
    }
#endif
    for (; i < n; ++i) {
        const int32_t v = bias ? acc[i] + bias[i] : acc[i];
        out[i] = iotnas_saturate(iotnas_requantize(v, multiplier[i], shift[i]) + out_zp, lo, hi);
    }
}

/* Values summed side by side: constant trip counts that gcc vectorises at -O2 (its cheapest
 * vectoriser model), the remainder scalar. A dot product takes 16 int8 pairs a step; a run of
 * channels 8 int32 sums (two vectors: depthwise layers of 8 channels are common). On x86 the
 * steps are SSE2 instructions instead (pmaddwd: int8 widened to int16, pairs of products summed
 * in int32); the integers are the same either way. */
#define IOTNAS_RUN 16
#define IOTNAS_CHANNEL_RUN 8

/* The sum of x[i] * f[i] over n int8 pairs. */
static int32_t dot(int32_t n, const int8_t *restrict x, const int8_t *restrict f) {
    int32_t acc = 0;
#if defined(__SSE2__)
    if (n >= 8) {
        __m128i sums = _mm_setzero_si128();
        for (; n >= 8; n -= 8, x += 8, f += 8) sums = _mm_add_epi32(sums, _mm_madd_epi16(load8_i16(x), load8_i16(f)));
        acc = lanes_sum(sums);
    }
#else
    for (; n >= IOTNAS_RUN; n -= IOTNAS_RUN, x += IOTNAS_RUN, f += IOTNAS_RUN) {
        int32_t s = 0;
        for (int i = 0; i < IOTNAS_RUN; ++i) s += (int32_t)x[i] * (int32_t)f[i];
        acc += s;
    }
#endif
    for (int32_t i = 0; i < n; ++i) acc += (int32_t)x[i] * (int32_t)f[i];
    return acc;
}

/* The sum of x[i] * f[i] over n int8 pairs, n a multiple of 8 (a zero-padded copy of the input:
 * the filter is read past its row, where the zeros cancel it; the generator pads the array). */
#define IOTNAS_DOT_STEP 8
static int32_t dot_steps(int32_t n, const int8_t *restrict x, const int8_t *restrict f) {
#if defined(__SSE2__)
    __m128i sums = _mm_setzero_si128();
    for (; n > 0; n -= 8, x += 8, f += 8) sums = _mm_add_epi32(sums, _mm_madd_epi16(load8_i16(x), load8_i16(f)));
    return lanes_sum(sums);
#else
    int32_t acc = 0;
    for (int32_t i = 0; i < n; ++i) acc += (int32_t)x[i] * (int32_t)f[i];
    return acc;
#endif
}

static int32_t round_up_steps(int32_t n) {
    return (n + IOTNAS_DOT_STEP - 1) / IOTNAS_DOT_STEP * IOTNAS_DOT_STEP;
}

/* acc[i] += x[i] * f[i] over n values. */
static void multiply_add(int32_t n, const int8_t *restrict x, const int8_t *restrict f, int32_t *restrict acc) {
#if defined(__SSE2__)
    for (; n >= 8; n -= 8, x += 8, f += 8, acc += 8) { /* int8 products fit int16 */
        const __m128i p = _mm_mullo_epi16(load8_i16(x), load8_i16(f));
        const __m128i lo = _mm_srai_epi32(_mm_unpacklo_epi16(p, p), 16), hi = _mm_srai_epi32(_mm_unpackhi_epi16(p, p), 16);
        _mm_storeu_si128((__m128i *)(void *)acc, _mm_add_epi32(_mm_loadu_si128((const __m128i *)(const void *)acc), lo));
        _mm_storeu_si128((__m128i *)(void *)(acc + 4),
                         _mm_add_epi32(_mm_loadu_si128((const __m128i *)(const void *)(acc + 4)), hi));
    }
#else
    for (; n >= IOTNAS_CHANNEL_RUN; n -= IOTNAS_CHANNEL_RUN, x += IOTNAS_CHANNEL_RUN, f += IOTNAS_CHANNEL_RUN,
                                    acc += IOTNAS_CHANNEL_RUN)
        for (int i = 0; i < IOTNAS_CHANNEL_RUN; ++i) acc[i] += (int32_t)x[i] * (int32_t)f[i];
#endif
    for (int32_t i = 0; i < n; ++i) acc[i] += (int32_t)x[i] * (int32_t)f[i];
}

/* The sum of n filter values: what a tap in the padding adds, once times the zero point. */
static int32_t filter_sum(int32_t n, const int8_t *f) {
    int32_t s = 0;
    for (int32_t i = 0; i < n; ++i) s += f[i];
    return s;
}

/* A window's inputs (or a pixel's channels) copied as one run in the filter's order [kh][kw][cin]
 * and zero-padded to whole dot steps, when they fit this stack buffer: the dot product with each
 * output channel's filter is then one call without a scalar rest, the copy made once for every
 * output channel. */
#define IOTNAS_PATCH_MAX 256

/* acc[i] = the dot product of run (steps values, a multiple of 8) with filter row i (rows row
 * values apart), for n rows; on x86 four rows a pass, each step of the run loaded once for the
 * four and their sums reduced together. */
static void dots(int32_t n, int32_t steps, const int8_t *restrict run, const int8_t *restrict filter, int32_t row,
                 int32_t *restrict acc) {
    int32_t i = 0;
#if defined(__SSE2__)
    for (; i + 4 <= n; i += 4) {
        const int8_t *const f = filter + i * row;
        __m128i s0 = _mm_setzero_si128(), s1 = s0, s2 = s0, s3 = s0;
        for (int32_t k = 0; k < steps; k += 8) {
            const __m128i x = load8_i16(run + k);
            s0 = _mm_add_epi32(s0, _mm_madd_epi16(x, load8_i16(f + k)));
            s1 = _mm_add_epi32(s1, _mm_madd_epi16(x, load8_i16(f + row + k)));
            s2 = _mm_add_epi32(s2, _mm_madd_epi16(x, load8_i16(f + 2 * row + k)));
            s3 = _mm_add_epi32(s3, _mm_madd_epi16(x, load8_i16(f + 3 * row + k)));
        }
        /* lanes (0 + 2, 1 + 3) of each, then the two halves: the four sums in order */
        const __m128i a = _mm_add_epi32(_mm_unpacklo_epi32(s0, s1), _mm_unpackhi_epi32(s0, s1));
        const __m128i b = _mm_add_epi32(_mm_unpacklo_epi32(s2, s3), _mm_unpackhi_epi32(s2, s3));
        _mm_storeu_si128((__m128i *)(void *)(acc + i), _mm_add_epi32(_mm_unpacklo_epi64(a, b), _mm_unpackhi_epi64(a, b)));
    }
#endif
    for (; i < n; ++i) acc[i] = dot_steps(steps, run, filter + i * row);
}

/* n bytes copied (a pixel's channels, a kernel row's): up to 16 as two fixed-size copies that
 * may overlap, which the compiler turns into moves, not a call. */
static void copy_bytes(int8_t *restrict dst, const int8_t *restrict src, int32_t n) {
    if (n >= 8 && n <= 16) {
        memcpy(dst, src, 8);
        memcpy(dst + n - 8, src + n - 8, 8);
    } else if (n >= 4 && n < 8) {
        memcpy(dst, src, 4);
        memcpy(dst + n - 4, src + n - 4, 4);
    } else if (n < 4) {
        for (int32_t i = 0; i < n; ++i) dst[i] = src[i];
    } else {
        memcpy(dst, src, (size_t)n);
    }
}

/* Output values requantised together: on x86 a run of whole pixels, a multiple of 8 values, when
 * lcm(cout, 8) values fit (a layer of 2, 3 or 5 channels then requantises in full vectors too, its
 * parameters repeated once per pixel of the run), else, and on other targets (a Cortex-M's stack stays small), a pixel
 * at a time in blocks of channels. */
#if defined(__SSE2__)
#define IOTNAS_RUN_VALUES 64
#else
#define IOTNAS_RUN_VALUES 1
#endif
typedef struct {
    iotnas_requant_t q; /* the layer's; in runs of pixels, the arrays below */
    int32_t cout, pixels, filled; /* pixels in a run (0: pixel by pixel), pixels summed so far */
    int32_t acc[IOTNAS_RUN_VALUES], bias[IOTNAS_RUN_VALUES], multiplier[IOTNAS_RUN_VALUES];
    int8_t shift[IOTNAS_RUN_VALUES];
#if defined(__SSE2__)
    int lanes_ready; /* every shift of the run a right shift: its lanes' constants made once */
    int32_t shared_right; /* the run's one right shift, or -1 */
    iotnas_lanes_t lanes[IOTNAS_RUN_VALUES / 4];
#endif
#if defined(IOTNAS_AVX2)
    int avx2; /* lanes8 made: the run requantised eight values a step in AVX2 */
    int any_left; /* some shift of the run a left shift: each value shifted by left[] first */
    iotnas_lanes8_t lanes8[IOTNAS_RUN_VALUES / 8];
    int32_t left[IOTNAS_RUN_VALUES];
#endif
} outputs_t;

/* A run's parameters and lanes' constants repeat every lcm(cout, 8) values (unit): made once per
 * channel or per unit, then copied. */
static void outputs_init(outputs_t *o, const iotnas_requant_t *q, int32_t cout) {
    int32_t pixels = 1;
    while (pixels * cout % 8 != 0) ++pixels;
    const int32_t unit = pixels * cout;
    o->q = *q, o->cout = cout, o->filled = 0;
    o->pixels = unit <= IOTNAS_RUN_VALUES ? pixels * (IOTNAS_RUN_VALUES / unit) : 0;
#if defined(__SSE2__)
    o->lanes_ready = 0;
#endif
#if defined(IOTNAS_AVX2)
    o->avx2 = 0;
#endif
    if (!o->pixels) return;
    const int32_t n = o->pixels * cout;
    for (int32_t i = 0; i < n; ++i) {
        o->bias[i] = i >= cout ? o->bias[i - cout] : q->bias ? q->bias[i] : 0;
        o->multiplier[i] = i >= cout ? o->multiplier[i - cout] : q->multiplier[i];
        o->shift[i] = i >= cout ? o->shift[i - cout] : q->shift[i];
    }
    o->q.bias = o->bias, o->q.multiplier = o->multiplier, o->q.shift = o->shift;
#if defined(__SSE2__)
    o->lanes_ready = 1, o->shared_right = -o->shift[0];
    for (int32_t c = 0; c < cout; ++c) {
        o->lanes_ready &= o->shift[c] <= 0;
        if (o->shift[c] != o->shift[0]) o->shared_right = -1;
    }
    if (!o->lanes_ready) o->shared_right = -1;
#if defined(IOTNAS_AVX2)
    /* a left shift l is x << l (wrapping, as the scalar form's) requantised with a right shift of 0 */
    o->avx2 = iotnas_avx2_present(), o->any_left = 0;
    for (int32_t i = 0; o->avx2 && i < n; ++i) {
        o->left[i] = o->shift[i] > 0 ? o->shift[i] : 0;
        o->any_left |= o->left[i];
    }
    for (int32_t i = 0; o->avx2 && i < n; i += 8) {
        int32_t right[8];
        if (i >= unit) {
            o->lanes8[i / 8] = o->lanes8[(i - unit) / 8];
            continue;
        }
        for (int32_t k = 0; k < 8; ++k) right[k] = o->shift[i + k] < 0 ? -o->shift[i + k] : 0;
        iotnas_requantize8_lanes(right, &o->lanes8[i / 8]);
    }
    if (o->avx2) return;
#endif
    for (int32_t i = 0; o->lanes_ready && i < n; i += 4) {
        if (i >= unit) {
            o->lanes[i / 4] = o->lanes[(i - unit) / 4];
            continue;
        }
        const __m128i right = _mm_set_epi32(-o->shift[i + 3], -o->shift[i + 2], -o->shift[i + 1], -o->shift[i]);
        o->lanes[i / 4] = iotnas_requantize4_lanes(load4_i32(o->multiplier + i), right);
    }
#endif
}

#if defined(IOTNAS_AVX2)
/* outputs_flush's whole vectors of 8 values in AVX2 (o->avx2): how many were requantised. */
IOTNAS_AVX2_FN static int32_t outputs_flush_avx2(const outputs_t *o, int32_t n, int8_t *out) {
    const __m128i zp = _mm_set1_epi32(o->q.out_zp);
    const __m128i lo = _mm_set1_epi16((int16_t)o->q.act_min), hi = _mm_set1_epi16((int16_t)o->q.act_max);
    int32_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i x = _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(o->acc + i)),
                                     _mm256_loadu_si256((const __m256i *)(const void *)(o->bias + i)));
        if (o->any_left) x = _mm256_sllv_epi32(x, _mm256_loadu_si256((const __m256i *)(const void *)(o->left + i)));
        const __m256i v = iotnas_requantize8(x, _mm256_loadu_si256((const __m256i *)(const void *)(o->multiplier + i)),
                                             &o->lanes8[i / 8]);
        _mm_storel_epi64((__m128i *)(void *)(out + i),
                         codes8(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1), zp, lo, hi));
    }
    return i;
}
#endif

/* Requantises the pixels summed so far, the last of which ends at end. */
static void outputs_flush(outputs_t *o, int8_t *end) {
    const int32_t n = o->filled * o->cout;
    int32_t i = 0;
    o->filled = 0;
#if defined(IOTNAS_AVX2)
    if (o->avx2) i = outputs_flush_avx2(o, n, end - n);
    else
#endif
#if defined(__SSE2__)
    if (o->lanes_ready) { /* requantize_run with the lanes' constants made */
        const __m128i zp = _mm_set1_epi32(o->q.out_zp);
        const __m128i lo = _mm_set1_epi16((int16_t)o->q.act_min), hi = _mm_set1_epi16((int16_t)o->q.act_max);
        for (const int32_t r = o->shared_right; r >= 0 && i + 8 <= n; i += 8) { /* one shift for the run */
            const __m128i a = _mm_add_epi32(load4_i32(o->acc + i), load4_i32(o->bias + i));
            const __m128i b = _mm_add_epi32(load4_i32(o->acc + i + 4), load4_i32(o->bias + i + 4));
            _mm_storel_epi64((__m128i *)(void *)(end - n + i),
                             codes8(iotnas_requantize4_shared(a, load4_i32(o->multiplier + i), r),
                                    iotnas_requantize4_shared(b, load4_i32(o->multiplier + i + 4), r), zp, lo, hi));
        }
        for (; i + 8 <= n; i += 8) {
            const __m128i a = _mm_add_epi32(load4_i32(o->acc + i), load4_i32(o->bias + i));
            const __m128i b = _mm_add_epi32(load4_i32(o->acc + i + 4), load4_i32(o->bias + i + 4));
            _mm_storel_epi64((__m128i *)(void *)(end - n + i),
                             codes8(iotnas_requantize4_with(a, &o->lanes[i / 4]),
                                    iotnas_requantize4_with(b, &o->lanes[i / 4 + 1]), zp, lo, hi));
        }
    }
#endif
    if (i < n) requantize_run(&o->q, i, n - i, o->acc + i, end - n + i);
}

/* The sums of the next pixel go here (its cout channels; in a run of pixels only). */
static int32_t *outputs_sums(outputs_t *o) {
    return o->acc + o->filled * o->cout;
}

/* The next pixel's sums are in place: its codes (at out) once its run is complete. */
static void outputs_summed(outputs_t *o, int8_t *out) {
    if (++o->filled == o->pixels) outputs_flush(o, out + o->cout);
}

/* The cout outputs (at out) of one zero-padded run of steps values (a pixel's channels or a
 * window's patch): a dot product with each output channel's filter row (row values apart). */
static void padded_outputs(outputs_t *o, int32_t steps, const int8_t *run, const int8_t *filter, int32_t row,
                           int8_t *out) {
    if (o->pixels) {
        dots(o->cout, steps, run, filter, row, outputs_sums(o));
        outputs_summed(o, out);
        return;
    }
    for (int32_t c0 = 0; c0 < o->cout; c0 += IOTNAS_CHANNEL_BLOCK) {
        const int32_t n = o->cout - c0 < IOTNAS_CHANNEL_BLOCK ? o->cout - c0 : IOTNAS_CHANNEL_BLOCK;
        int32_t acc[IOTNAS_CHANNEL_BLOCK];
        dots(n, steps, run, filter + c0 * row, row, acc);
        requantize_run(&o->q, c0, n, acc, out + c0);
    }
}

/* A pointwise convolution: one dot product over the cin channels (of stride) per output, no
 * window to clip; a pixel's channels copied zero-padded to whole steps first unless whole already. */
static void pointwise(outputs_t *o, int32_t pixels, int32_t cin, int32_t stride, const int8_t *x, const int8_t *filter,
                      int8_t *out) {
    const iotnas_requant_t *const q = &o->q;
    const int32_t steps = round_up_steps(cin), cout = o->cout;
    if (steps != cin && steps > IOTNAS_PATCH_MAX) { /* a dot product with a scalar rest */
        for (int32_t pixel = 0; pixel < pixels; ++pixel, x += stride, out += cout)
            for (int32_t c0 = 0; c0 < cout; c0 += IOTNAS_CHANNEL_BLOCK) {
                const int32_t n = cout - c0 < IOTNAS_CHANNEL_BLOCK ? cout - c0 : IOTNAS_CHANNEL_BLOCK;
                int32_t acc[IOTNAS_CHANNEL_BLOCK];
                for (int32_t i = 0; i < n; ++i) acc[i] = dot(cin, x, filter + (c0 + i) * cin);
                requantize_run(q, c0, n, acc, out + c0); /* a run's parameters begin with each channel's */
            }
        return;
    }
    int8_t pixel_in[IOTNAS_PATCH_MAX];
    memset(pixel_in, 0, sizeof pixel_in);
    for (int32_t pixel = 0; pixel < pixels; ++pixel, x += stride, out += cout) {
        if (steps != cin) copy_bytes(pixel_in, x, cin);
        padded_outputs(o, steps, steps != cin ? pixel_in : x, filter, cin, out);
    }
    outputs_flush(o, out);
}

/* The cin channels (of in_stride, from x) under each tap of window w; a tap in the padding holds
 * the input zero point, which adds nothing (the bias holds the zero point's share). */
static void gather_patch(const iotnas_geometry_t *g, window_t w, const int8_t *x, int32_t in_stride, int32_t cin,
                         int8_t zp, int8_t *patch) {
    if (whole(g, w) && in_stride == cin) { /* a kernel row is one run of the input */
        for (int32_t ky = 0; ky < g->kh; ++ky, patch += g->kw * cin)
            copy_bytes(patch, x + ((w.y0 + ky) * g->win + w.x0) * in_stride, g->kw * cin);
        return;
    }
    for (int32_t ky = 0; ky < g->kh; ++ky)
        for (int32_t kx = 0; kx < g->kw; ++kx, patch += cin) {
            if (ky >= w.ky0 && ky < w.ky1 && kx >= w.kx0 && kx < w.kx1)
                copy_bytes(patch, x + ((w.y0 + ky) * g->win + w.x0 + kx) * in_stride, cin);
            else
                memset(patch, zp, (size_t)cin);
        }
}

/* The input pixel under kernel tap (ky, kx) of window w (formed only for a tap in the image). */
#define IOTNAS_TAP_INPUT(kx) (in + ((w.y0 + ky) * g->win + w.x0 + (kx)) * in_stride + in_offset)

#if defined(__SSE2__)
/* A convolution of few channels from its channel planes (see channel_planes_init), when they fit: 0
 * otherwise, nothing done. A row's last group of four pixels ends at its last pixel (overlapping the
 * group before when the row is not a multiple of 4 long; the overlap's sums are made twice, kept once). */
static int conv_few_channels(const iotnas_geometry_t *g, outputs_t *o, const int8_t *x, int32_t in_stride, int32_t cin,
                             const int8_t *filter, int8_t zp, int8_t *out) {
    int16_t plane[IOTNAS_CHANNEL_PLANES];
    channel_planes_t cp;
    const int32_t cout = o->cout;
    if (!channel_planes_init(&cp, plane, g, x, in_stride, cin, cout, filter, zp)) return 0;
    int32_t group = 4; /* output pixels a step; in AVX2, on rows of 16 or more, 16 (of 8 or more, 8 for
                        * 5 to 8 output channels) */
#if defined(IOTNAS_AVX2)
    __m256i wide[IOTNAS_FEW_VECTORS];
    if (cout > 4 && g->wout >= 8 && iotnas_avx2_present()) {
        group = 8;
        channel_planes_wide(&cp, g, cin, cout, wide);
    } else if (g->wout >= 16 && iotnas_avx2_present()) {
        group = 16;
    }
#endif
    for (int32_t oy = 0; oy < g->hout; ++oy)
        for (int32_t ox = 0; ox < g->wout; ox += group) {
            const int32_t start = ox + group <= g->wout ? ox : g->wout - group;
            int32_t sums[16 * IOTNAS_FEW_OUT];
#if defined(IOTNAS_AVX2)
            if (group == 8) channel_planes_sums8_wide(&cp, g, wide, plane, cin, cout, oy, start, sums);
            else if (group == 16) channel_planes_sums16(&cp, g, plane, cin, cout, oy, start, sums);
            else
#endif
            channel_planes_sums4(&cp, g, plane, cin, cout, oy, start, sums);
            for (int32_t p = ox - start; p < group;) { /* the new pixels' sums, as many a copy as the run takes */
                const int32_t n = group - p < o->pixels - o->filled ? group - p : o->pixels - o->filled;
                memcpy(outputs_sums(o), sums + p * cout, (size_t)(n * cout) * sizeof *sums);
                o->filled += n - 1, p += n, out += n * cout;
                outputs_summed(o, out - cout);
            }
        }
    outputs_flush(o, out);
    return 1;
}
#endif

#if defined(__SSE2__)
/* A pointwise layer's outputs a run of pixels a call: sums(d, cout, x, stride, n, acc) gives n
 * pixels' sums one after another from a load of load bytes per pixel; the pixels whose load would
 * pass the input's end (bytes from x) have their cin channels copied into a zeroed block first. */
typedef void (*pixel_sums_t)(const direct_t *, int32_t, const int8_t *, int32_t, int32_t, int32_t *);
static void pointwise_runs(const direct_t *d, outputs_t *o, pixel_sums_t sums, int32_t load, int32_t pixels,
                           const int8_t *x, int32_t stride, int32_t cin, int32_t bytes, int8_t *out) {
    const int32_t cout = o->cout, loadable = bytes >= load ? (bytes - load) / stride + 1 : 0;
    for (int32_t pixel = 0; pixel < pixels; pixel += o->pixels) {
        const int32_t n = pixels - pixel < o->pixels ? pixels - pixel : o->pixels;
        const int32_t direct_n = loadable - pixel < n ? (loadable > pixel ? loadable - pixel : 0) : n;
        sums(d, cout, x + pixel * stride, stride, direct_n, o->acc);
        for (int32_t i = direct_n; i < n; ++i) {
            int8_t last[16] = {0};
            memcpy(last, x + (pixel + i) * stride, (size_t)cin);
            sums(d, cout, last, 0, 1, o->acc + i * cout);
        }
        o->filled = n;
        outputs_flush(o, out + (pixel + n) * cout);
    }
}
#endif

/* A convolution with a window: a patch per output pixel when the window is small, else inside the
 * image a kernel row is one run of input and of filter when the layer reads every channel of its
 * input; at the borders, a tap in the padding adds the zero point times its weights. */
void iotnas_qconv(const iotnas_qconv_t *p, const int8_t *in, int8_t *out) {
    const iotnas_geometry_t geometry = p->g, *g = &geometry; /* locals: int8 stores may alias *p */
    const iotnas_requant_t q = p->q;
    const int32_t cin = p->cin, cout = p->cout, in_stride = p->in_stride, in_offset = p->in_offset;
    const int8_t *const filter = p->filter;
    const int32_t zp = q.in_zp;
    const int32_t patch_len = g->kh * g->kw * cin, steps = round_up_steps(patch_len);
    int direct = 0;
    outputs_t outputs;
    outputs_init(&outputs, &q, cout);
    const int pointwise_layer = g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->pt == 0 && g->pl == 0;
#if defined(__SSE2__)
    if (!pointwise_layer && outputs.pixels && conv_few_channels(g, &outputs, in + in_offset, in_stride, cin, filter, (int8_t)zp, out))
        return;
    /* a padded layer, or one group of a grouped layer with a window: its input channels copied once
     * into a plane padded with the zero point (and 8 bytes of slack for the last load), so every
     * window is whole, and a group's kernel row is one run (loads along it, not per tap) */
    const int32_t plane_h = padded_rows(g), plane_w = padded_columns(g);
    const int padded = g->pt || g->pl || plane_h > g->hin || plane_w > g->win;
    const int planar = (padded || (in_stride != cin && !pointwise_layer)) && plane_h * plane_w * cin + 8 <= IOTNAS_PLANE_MAX;
    direct_t d;
    direct = outputs.pixels && steps <= IOTNAS_PATCH_MAX && direct_init(&d, g, cin, planar ? cin : in_stride, cout, filter);
    const int32_t input_bytes = g->hin * g->win * in_stride; /* a load must not pass the input's end */
#endif
    if (!direct && pointwise_layer) {
        pointwise(&outputs, g->hout * g->wout, cin, in_stride, in + in_offset, filter, out);
        return;
    }
#if defined(__SSE2__)
    if (direct && d.pairs && pointwise_layer) { /* up to 8 input channels: a run of pixels a call, no window to place */
        pointwise_runs(&d, &outputs, pair_sums_pixels, 8, g->hout * g->wout, in + in_offset, in_stride, cin,
                       input_bytes - in_offset, out);
        return;
    }
#if defined(IOTNAS_AVX2)
    if (direct && pointwise_layer && d.load_pairs == 1 && d.runs && d.loads_per_row == 2) { /* 9 to 16: the same */
        pointwise_runs(&d, &outputs, direct_pixels_avx2, 16, g->hout * g->wout, in + in_offset, in_stride, cin,
                       input_bytes - in_offset, out);
        return;
    }
#endif
#endif
#if defined(__SSE2__)
    if (direct && planar) {
        int8_t plane[IOTNAS_PLANE_MAX];
        memset(plane, zp, (size_t)(plane_h * plane_w * cin + 8));
        for (int32_t y = 0; y < g->hin; ++y) {
            int8_t *const row = plane + ((y + g->pt) * plane_w + g->pl) * cin;
            const int8_t *const src = in + in_offset + y * g->win * in_stride;
            if (in_stride == cin) {
                memcpy(row, src, (size_t)(g->win * cin));
                continue;
            }
            /* a group's pixels: 8 bytes a move while the read stays in the input and the write in the
             * row (the next pixels' moves overwrite what one writes past its cin) */
            const int32_t readable = input_bytes - in_offset - y * g->win * in_stride;
            int32_t x = 0;
            if (cin <= 8)
                for (; x * cin + 8 <= g->win * cin && x * in_stride + 8 <= readable; ++x)
                    memcpy(row + x * cin, src + x * in_stride, 8);
            for (; x < g->win; ++x) copy_bytes(row + x * cin, src + x * in_stride, cin);
        }
        int8_t *o = out;
        for (int32_t oy = 0; oy < g->hout; ++oy)
            for (int32_t ox = 0; ox < g->wout; ++ox, o += cout) {
                direct_sums(&d, g->kh, plane_w * cin, cout, plane + (oy * g->sh * plane_w + ox * g->sw) * cin,
                            outputs_sums(&outputs));
                outputs_summed(&outputs, o);
            }
        outputs_flush(&outputs, o);
        return;
    }
#endif
    if (steps <= IOTNAS_PATCH_MAX) {
        int8_t patch[IOTNAS_PATCH_MAX];
        memset(patch + patch_len, 0, (size_t)(steps - patch_len));
#if defined(__SSE2__)
        /* the output columns whose windows lie inside the input's columns: [first, last) */
        const int32_t first = (g->pl + g->sw - 1) / g->sw, last_inside = (g->win - g->kw + g->pl) / g->sw + 1;
        const int32_t last = last_inside < g->wout ? last_inside : g->wout;
#endif
        int8_t *o = out;
        for (int32_t oy = 0; oy < g->hout; ++oy) {
#if defined(__SSE2__)
            const window_t rows = window_at(g, oy, 0);
            const int rows_inside = rows.ky0 == 0 && rows.ky1 == g->kh;
#endif
            for (int32_t ox = 0; ox < g->wout; ++ox, o += cout) {
#if defined(__SSE2__)
                const int32_t at = (rows.y0 * g->win + ox * g->sw - g->pl) * in_stride + in_offset; /* window's corner */
                if (direct && rows_inside && ox >= first && ox < last
                    && at + (g->kh - 1) * g->win * in_stride + d.offset[d.loads_per_row - 1] + 8 <= input_bytes) {
                    direct_sums(&d, g->kh, g->win * in_stride, cout, in + at, outputs_sums(&outputs));
                    outputs_summed(&outputs, o);
                    continue;
                }
#endif
                gather_patch(g, window_at(g, oy, ox), in + in_offset, in_stride, cin, (int8_t)zp, patch);
                padded_outputs(&outputs, steps, patch, filter, patch_len, o);
            }
        }
        outputs_flush(&outputs, o);
        return;
    }
    for (int32_t pixel = 0; pixel < g->hout * g->wout; ++pixel) {
        const window_t w = window_at(g, pixel / g->wout, pixel % g->wout);
        const int inside = whole(g, w);
        int8_t *o = out + pixel * cout;
        for (int32_t oc = 0; oc < cout; ++oc) {
            int32_t acc = 0;
            for (int32_t ky = 0; ky < g->kh; ++ky) {
                const int8_t *f = filter + (oc * g->kh + ky) * g->kw * cin;
                if (inside && in_stride == cin) { /* the kernel row is one run of input and of filter */
                    acc += dot(g->kw * cin, IOTNAS_TAP_INPUT(0), f);
                    continue;
                }
                for (int32_t kx = 0; kx < g->kw; ++kx, f += cin) {
                    if (ky >= w.ky0 && ky < w.ky1 && kx >= w.kx0 && kx < w.kx1)
                        acc += dot(cin, IOTNAS_TAP_INPUT(kx), f);
                    else
                        acc += zp * filter_sum(cin, f);
                }
            }
            o[oc] = requantize_channel(&q, oc, acc);
        }
    }
}

/* A pointwise depthwise convolution (a per-channel scale, as after a concatenation): a product
 * per value, over runs of whole pixels with the channels' weights repeated, then requantised. */
static void depthwise_pointwise(outputs_t *o, int32_t pixels, const int8_t *x, const int8_t *filter, int8_t *out) {
    const int32_t cout = o->cout, run = o->pixels * cout;
    int8_t f[IOTNAS_RUN_VALUES];
    for (int32_t i = 0; i < run; ++i) f[i] = filter[i % cout];
    for (int32_t pixel = 0; pixel < pixels; pixel += o->pixels) {
        const int32_t n = (pixels - pixel < o->pixels ? pixels - pixel : o->pixels) * cout;
        for (int32_t i = 0; i < n; ++i) o->acc[i] = 0;
        multiply_add(n, x + pixel * cout, f, o->acc);
        o->filled = n / cout;
        outputs_flush(o, out + pixel * cout + n);
    }
}

#if defined(__SSE2__)
/* A depthwise layer of one weight per channel and tap from its paired plane (see paired_plane_init),
 * when the plane fits: 0 otherwise, nothing done. */
static int depthwise_paired(const tap_pairs_t *t, const iotnas_geometry_t *g, outputs_t *o, const int8_t *x,
                            int32_t in_stride, int8_t zp, int8_t *out) {
    __m128i plane[IOTNAS_PAIRED_PLANE_VECTORS];
    paired_plane_t pp;
    const int32_t cout = o->cout;
    if (!paired_plane_init(&pp, plane, g, x, in_stride, cout, zp)) return 0;
#if defined(IOTNAS_AVX2)
    if (g->wout >= 8 && 8 * pp.blocks <= IOTNAS_RUN_VALUES && iotnas_avx2_present()) {
        /* 8 output pixels a step, the row's last 8 overlapping */
        const int32_t stride = 8 * pp.blocks;
        int32_t sums8[8 * IOTNAS_RUN_VALUES]; /* 8 pixels' sums, each pixel's channels padded to whole blocks */
        for (int32_t oy = 0; oy < g->hout; ++oy)
            for (int32_t ox = 0; ox < g->wout; ox += 8) {
                const int32_t start = ox + 8 <= g->wout ? ox : g->wout - 8;
                if (start == ox && stride == cout && o->pixels - o->filled >= 8) { /* straight into the run */
                    for (int32_t b = 0; b < pp.blocks; ++b)
                        paired_plane_sums8x8_avx2(t, g, &pp, plane, oy, ox, b, outputs_sums(o) + 8 * b, cout);
                    for (int32_t k = 0; k < 8; ++k, out += cout) outputs_summed(o, out);
                    continue;
                }
                for (int32_t b = 0; b < pp.blocks; ++b)
                    paired_plane_sums8x8_avx2(t, g, &pp, plane, oy, start, b, sums8 + 8 * b, stride);
                for (int32_t k = ox - start; k < 8; ++k, out += cout) {
                    int32_t *const to = outputs_sums(o);
                    for (int32_t c = 0; c < cout; ++c) to[c] = sums8[k * stride + c]; /* no call per pixel */
                    outputs_summed(o, out);
                }
            }
        outputs_flush(o, out);
        return 1;
    }
#endif
    void (*paired_plane_sums)(const tap_pairs_t *, const iotnas_geometry_t *, const paired_plane_t *, const __m128i *,
                              int32_t, int32_t, int32_t, int32_t *) = paired_plane_sums8;
#if defined(IOTNAS_AVX2)
    if (iotnas_avx2_present()) paired_plane_sums = paired_plane_sums8_avx2;
#endif
    for (int32_t oy = 0; oy < g->hout; ++oy)
        for (int32_t ox = 0; ox < g->wout; ++ox, out += cout) {
            int32_t *const sums = outputs_sums(o);
            for (int32_t b = 0; b < pp.blocks; ++b) {
                if (8 * b + 8 <= cout) {
                    paired_plane_sums(t, g, &pp, plane, oy, ox, b, sums + 8 * b);
                    continue;
                }
                int32_t part[8]; /* the last 1 to 7 channels */
                paired_plane_sums(t, g, &pp, plane, oy, ox, b, part);
                for (int32_t i = 8 * b; i < cout; ++i) sums[i] = part[i - 8 * b];
            }
            outputs_summed(o, out);
        }
    outputs_flush(o, out);
    return 1;
}
#endif

/* A depthwise convolution: the channels of a pixel summed side by side, tap by tap; inside the
 * image without bounds checks, at the borders a tap in the padding adds the zero point times its
 * weights. */
void iotnas_qdepthwise(const iotnas_qconv_t *p, const int8_t *in, int8_t *out) {
    const iotnas_geometry_t geometry = p->g, *g = &geometry; /* locals: int8 stores may alias *p */
    const iotnas_requant_t q = p->q;
    const int32_t cin = p->cin, cout = p->cout, in_stride = p->in_stride, in_offset = p->in_offset;
    const int8_t *const filter = p->filter;
    const int32_t zp = q.in_zp, multiplier = cout / cin;
    outputs_t outputs;
    int32_t block[IOTNAS_CHANNEL_BLOCK];
    outputs_init(&outputs, &q, cout);
#if defined(__SSE2__)
    tap_pairs_t pairs;
    const int paired = multiplier == 1 && tap_pairs_init(&pairs, g, cout, filter);
    int8_t zp8[8]; /* a tap in the padding reads the zero point */
    memset(zp8, zp, sizeof zp8);
#endif
    if (outputs.pixels && g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->pt == 0 && g->pl == 0
        && multiplier == 1 && in_stride == cin) {
        depthwise_pointwise(&outputs, g->hout * g->wout, in + in_offset, filter, out);
        return;
    }
#if defined(__SSE2__)
    if (paired && outputs.pixels && depthwise_paired(&pairs, g, &outputs, in + in_offset, in_stride, (int8_t)zp, out))
        return;
#endif
    for (int32_t pixel = 0; pixel < g->hout * g->wout; ++pixel) {
        const window_t w = window_at(g, pixel / g->wout, pixel % g->wout);
        const int inside = whole(g, w);
        int8_t *o = out + pixel * cout;
        int32_t *const sums = outputs.pixels ? outputs_sums(&outputs) : block; /* a run's, or a block's */
        for (int32_t c0 = 0; c0 < cout; c0 += IOTNAS_CHANNEL_BLOCK) {
            const int32_t n = cout - c0 < IOTNAS_CHANNEL_BLOCK ? cout - c0 : IOTNAS_CHANNEL_BLOCK;
            int32_t *const acc = outputs.pixels ? sums + c0 : block;
            int32_t done = 0; /* channels of the block summed in registers */
            for (int32_t i = 0; i < n; ++i) acc[i] = 0;
#if defined(__SSE2__)
            for (; paired && done < n; done += 8) { /* 8 channels' sums in registers over every tap */
                const int8_t *const x = in + in_offset + c0 + done;
                if (done + 8 <= n) {
                    tap_pairs8(&pairs, g, w, x, in_stride, zp8, (c0 + done) / 8, acc + done);
                    continue;
                }
                /* the last 1 to 7 channels: 8 loaded, the others weighted 0, unless a load would pass the
                 * input's end (its last window); then tap by tap below */
                int32_t part[8];
                const int32_t last_tap = ((w.y0 + w.ky1 - 1) * g->win + w.x0 + w.kx1 - 1) * in_stride;
                if (in_offset + c0 + done + last_tap + 8 > g->hin * g->win * in_stride) break;
                tap_pairs8(&pairs, g, w, x, in_stride, zp8, (c0 + done) / 8, part);
                for (int32_t i = done; i < n; ++i) acc[i] = part[i - done];
            }
#endif
            if (done < n && inside && multiplier == 1) { /* no checks: tap after tap along each kernel row */
                for (int32_t ky = 0; ky < g->kh; ++ky) {
                    const int8_t *x = IOTNAS_TAP_INPUT(0) + c0 + done, *f = filter + ky * g->kw * cout + c0 + done;
                    for (int32_t kx = 0; kx < g->kw; ++kx, x += in_stride, f += cout)
                        multiply_add(n - done, x, f, acc + done);
                }
            } else if (done < n) for (int32_t ky = 0; ky < g->kh; ++ky) {
                for (int32_t kx = 0; kx < g->kw; ++kx) {
                    const int8_t *f = filter + (ky * g->kw + kx) * cout + c0;
                    if (!inside && (ky < w.ky0 || ky >= w.ky1 || kx < w.kx0 || kx >= w.kx1)) {
                        for (int32_t i = done; i < n; ++i) acc[i] += zp * (int32_t)f[i];
                    } else if (multiplier == 1) {
                        multiply_add(n - done, IOTNAS_TAP_INPUT(kx) + c0 + done, f + done, acc + done);
                    } else { /* output channel c reads input channel c / multiplier */
                        const int8_t *x = IOTNAS_TAP_INPUT(kx);
                        for (int32_t i = done; i < n; ++i) acc[i] += (int32_t)x[(c0 + i) / multiplier] * (int32_t)f[i];
                    }
                }
            }
            if (!outputs.pixels) requantize_run(&q, c0, n, acc, o + c0);
        }
        if (outputs.pixels) outputs_summed(&outputs, o);
    }
    outputs_flush(&outputs, out + g->hout * g->wout * cout);
}

void iotnas_qlinear(const iotnas_qlinear_t *p, const int8_t *in, int8_t *out) {
    for (int32_t o = 0; o < p->out; ++o) {
        const int8_t *w = p->filter + o * p->in;
        out[o] = requantize_channel(&p->q, o, dot(p->in, in, w));
    }
}

#define IOTNAS_ADD_LEFT_SHIFT 20 /* TensorFlow Lite's headroom for int8 additions */

#if defined(IOTNAS_AVX2)
/* iotnas_qadd's elements eight at a time in AVX2 (every shift a right shift): how many were added. */
IOTNAS_AVX2_FN static int32_t qadd_avx2(const iotnas_qadd_t *q, const int8_t *a, const int8_t *b, int8_t *out) {
    int32_t right[8];
    iotnas_lanes8_t a_l, b_l, o_l;
    for (int32_t k = 0; k < 8; ++k) right[k] = -q->a_shift;
    iotnas_requantize8_lanes(right, &a_l);
    for (int32_t k = 0; k < 8; ++k) right[k] = -q->b_shift;
    iotnas_requantize8_lanes(right, &b_l);
    for (int32_t k = 0; k < 8; ++k) right[k] = -q->out_shift;
    iotnas_requantize8_lanes(right, &o_l);
    const __m256i a_zp = _mm256_set1_epi32(q->a_zp), b_zp = _mm256_set1_epi32(q->b_zp);
    const __m256i a_m = _mm256_set1_epi32(q->a_multiplier), b_m = _mm256_set1_epi32(q->b_multiplier);
    const __m256i o_m = _mm256_set1_epi32(q->out_multiplier);
    const __m128i zp = _mm_set1_epi32(q->out_zp);
    const __m128i lo = _mm_set1_epi16((int16_t)q->act_min), hi = _mm_set1_epi16((int16_t)q->act_max);
    /* the input of the larger scale has a multiplier of exactly a half and no shift (both inputs go to
     * twice the larger scale): its (q - zp) 2^20 requantises to (q - zp) 2^19, no rounding */
    const int a_half = q->a_multiplier == 1 << 30 && q->a_shift == 0, b_half = q->b_multiplier == 1 << 30 && q->b_shift == 0;
    int32_t i = 0;
    for (; i + 8 <= q->n; i += 8) {
        const __m256i x = _mm256_sub_epi32(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(a + i))), a_zp);
        const __m256i y = _mm256_sub_epi32(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)(b + i))), b_zp);
        const __m256i sum = _mm256_add_epi32(
            a_half ? _mm256_slli_epi32(x, IOTNAS_ADD_LEFT_SHIFT - 1)
                   : iotnas_requantize8(_mm256_slli_epi32(x, IOTNAS_ADD_LEFT_SHIFT), a_m, &a_l),
            b_half ? _mm256_slli_epi32(y, IOTNAS_ADD_LEFT_SHIFT - 1)
                   : iotnas_requantize8(_mm256_slli_epi32(y, IOTNAS_ADD_LEFT_SHIFT), b_m, &b_l));
        const __m256i v = iotnas_requantize8(sum, o_m, &o_l);
        _mm_storel_epi64((__m128i *)(void *)(out + i),
                         codes8(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1), zp, lo, hi));
    }
    return i;
}
#endif

/* On x86 eight elements at a time when every shift is a right shift (TensorFlow Lite's input
 * multipliers are at most a half, so theirs always are), in AVX2 where the processor has it. */
void iotnas_qadd(const iotnas_qadd_t *p, const int8_t *a, const int8_t *b, int8_t *out) {
    const iotnas_qadd_t q = *p; /* locals: int8 stores may alias *p */
    int32_t i = 0;
#if defined(IOTNAS_AVX2)
    if (q.a_shift <= 0 && q.b_shift <= 0 && q.out_shift <= 0 && iotnas_avx2_present()) i = qadd_avx2(&q, a, b, out);
    else
#endif
#if defined(__SSE2__)
    if (q.a_shift <= 0 && q.b_shift <= 0 && q.out_shift <= 0) {
        const __m128i a_zp = _mm_set1_epi16((int16_t)q.a_zp), b_zp = _mm_set1_epi16((int16_t)q.b_zp);
        const __m128i a_m = _mm_set1_epi32(q.a_multiplier), b_m = _mm_set1_epi32(q.b_multiplier);
        const __m128i o_m = _mm_set1_epi32(q.out_multiplier);
        const int32_t a_r = -q.a_shift, b_r = -q.b_shift, o_r = -q.out_shift;
        const __m128i zp = _mm_set1_epi32(q.out_zp);
        const __m128i lo = _mm_set1_epi16((int16_t)q.act_min), hi = _mm_set1_epi16((int16_t)q.act_max);
        for (; i + 8 <= q.n; i += 8) {
            const __m128i x = _mm_sub_epi16(load8_i16(a + i), a_zp), y = _mm_sub_epi16(load8_i16(b + i), b_zp);
            const __m128i sum_lo = _mm_add_epi32(iotnas_requantize4_shared(widen_lo(x, IOTNAS_ADD_LEFT_SHIFT), a_m, a_r),
                                                 iotnas_requantize4_shared(widen_lo(y, IOTNAS_ADD_LEFT_SHIFT), b_m, b_r));
            const __m128i sum_hi = _mm_add_epi32(iotnas_requantize4_shared(widen_hi(x, IOTNAS_ADD_LEFT_SHIFT), a_m, a_r),
                                                 iotnas_requantize4_shared(widen_hi(y, IOTNAS_ADD_LEFT_SHIFT), b_m, b_r));
            _mm_storel_epi64((__m128i *)(void *)(out + i),
                             codes8(iotnas_requantize4_shared(sum_lo, o_m, o_r),
                                    iotnas_requantize4_shared(sum_hi, o_m, o_r), zp, lo, hi));
        }
    }
#endif
    for (; i < q.n; ++i) {
        const int32_t x = ((int32_t)a[i] - q.a_zp) * (1 << IOTNAS_ADD_LEFT_SHIFT);
        const int32_t y = ((int32_t)b[i] - q.b_zp) * (1 << IOTNAS_ADD_LEFT_SHIFT);
        const int32_t sum = iotnas_requantize(x, q.a_multiplier, q.a_shift) + iotnas_requantize(y, q.b_multiplier, q.b_shift);
        out[i] = iotnas_saturate(iotnas_requantize(sum, q.out_multiplier, q.out_shift) + q.out_zp, q.act_min, q.act_max);
    }
}

/* o[i] = max(o[i], x[i]) over n values: on x86 32 at a time in AVX2 where the processor has it, then
 * 16 and 8 (SSE2's byte maximum is unsigned: the sign bit flipped on the way in and out), elsewhere
 * in runs of 16 and 8 for the vectoriser. */
#if defined(IOTNAS_AVX2)
/* max_run's whole vectors of 32 values in AVX2 (a signed byte maximum): how many were taken. */
IOTNAS_AVX2_FN static int32_t max_run_avx2(int32_t n, const int8_t *restrict x, int8_t *restrict o) {
    int32_t i = 0;
    for (; i + 32 <= n; i += 32)
        _mm256_storeu_si256((__m256i *)(void *)(o + i),
                            _mm256_max_epi8(_mm256_loadu_si256((const __m256i *)(const void *)(x + i)),
                                            _mm256_loadu_si256((const __m256i *)(const void *)(o + i))));
    return i;
}
#endif

static void max_run(int32_t n, const int8_t *restrict x, int8_t *restrict o) {
#if defined(IOTNAS_AVX2)
    if (n >= 32 && iotnas_avx2_present()) {
        const int32_t done = max_run_avx2(n, x, o);
        n -= done, x += done, o += done;
    }
#endif
#if defined(__SSE2__)
    const __m128i flip = _mm_set1_epi8(INT8_MIN);
    for (; n >= 16; n -= 16, x += 16, o += 16) {
        const __m128i a = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(const void *)x), flip);
        const __m128i b = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(const void *)o), flip);
        _mm_storeu_si128((__m128i *)(void *)o, _mm_xor_si128(_mm_max_epu8(a, b), flip));
    }
    if (n >= 8) {
        const __m128i a = _mm_xor_si128(_mm_loadl_epi64((const __m128i *)(const void *)x), flip);
        const __m128i b = _mm_xor_si128(_mm_loadl_epi64((const __m128i *)(const void *)o), flip);
        _mm_storel_epi64((__m128i *)(void *)o, _mm_xor_si128(_mm_max_epu8(a, b), flip));
        n -= 8, x += 8, o += 8;
    }
#else
    for (; n >= IOTNAS_RUN; n -= IOTNAS_RUN, x += IOTNAS_RUN, o += IOTNAS_RUN)
        for (int i = 0; i < IOTNAS_RUN; ++i) o[i] = x[i] > o[i] ? x[i] : o[i];
    for (; n >= IOTNAS_CHANNEL_RUN; n -= IOTNAS_CHANNEL_RUN, x += IOTNAS_CHANNEL_RUN, o += IOTNAS_CHANNEL_RUN)
        for (int i = 0; i < IOTNAS_CHANNEL_RUN; ++i) o[i] = x[i] > o[i] ? x[i] : o[i];
#endif
    for (int32_t i = 0; i < n; ++i) o[i] = x[i] > o[i] ? x[i] : o[i];
}

#if defined(IOTNAS_AVX2)
/* max_of_runs' whole vectors of 32 values in AVX2: how many were taken. */
IOTNAS_AVX2_FN static int32_t max_of_runs_avx2(int32_t n, const int8_t *x, int32_t stride, int32_t count, int8_t *o) {
    int32_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i m = _mm256_loadu_si256((const __m256i *)(const void *)(x + i));
        for (int32_t k = 1; k < count; ++k)
            m = _mm256_max_epi8(m, _mm256_loadu_si256((const __m256i *)(const void *)(x + k * stride + i)));
        _mm256_storeu_si256((__m256i *)(void *)(o + i), m);
    }
    return i;
}
#endif

/* o[i] = the maximum of x[k stride + i] over k < count (count >= 1) for i < n (o apart from x): in
 * AVX2 where the processor has it each value's maximum in a register, one store; else max_run. */
static void max_of_runs(int32_t n, const int8_t *x, int32_t stride, int32_t count, int8_t *o) {
#if defined(IOTNAS_AVX2)
    if (n >= 32 && iotnas_avx2_present()) {
        const int32_t done = max_of_runs_avx2(n, x, stride, count, o);
        n -= done, x += done, o += done;
    }
#endif
    if (n <= 0) return;
    memcpy(o, x, (size_t)n);
    for (int32_t k = 1; k < count; ++k) max_run(n, x + k * stride, o);
}

/* Max pooling, row by row. On x86 the input rows under an output row are first reduced to one
 * (their maximum, a vector run over whole rows, into a stack row), so each window then spans one
 * row. At stride 1 the output pixels whose windows lie inside the input's columns are one run of
 * the row: each tap is then a maximum over the whole run (the pixels' channels side by side), not
 * pixel by pixel. Padding never wins: TensorFlow Lite pads max pooling with -128. */
#if defined(__SSE2__)
#define IOTNAS_POOL_ROW 2048 /* bytes of the stack row */
#endif
void iotnas_qmaxpool(const iotnas_qpool_t *p, const int8_t *in, int8_t *out) {
    const iotnas_geometry_t geometry = p->g, *g = &geometry; /* locals: int8 stores may alias *p */
    const int32_t c = p->c, lo = p->act_min, hi = p->act_max, row_bytes = g->win * c;
    int32_t first = g->wout, last = g->wout; /* the run [first, last) of inside windows at stride 1 */
    if (g->sw == 1) {
        last = g->win - g->kw + g->pl + 1 < g->wout ? g->win - g->kw + g->pl + 1 : g->wout;
        first = g->pl < last ? g->pl : last;
    }
#if defined(__SSE2__)
    int8_t rows_max[IOTNAS_POOL_ROW];
#endif
    for (int32_t oy = 0; oy < g->hout; ++oy) {
        int8_t *const row = out + oy * g->wout * c;
        const window_t rows = window_at(g, oy, 0);
        const int8_t *src = in + (rows.y0 + rows.ky0) * row_bytes; /* the first input row under the window */
        int32_t n_rows = rows.ky1 - rows.ky0;
#if defined(__SSE2__)
        if (n_rows > 1 && row_bytes <= IOTNAS_POOL_ROW) {
            max_of_runs(row_bytes, src, row_bytes, n_rows, rows_max);
            src = rows_max, n_rows = 1;
        }
#endif
        for (int32_t ox = 0; ox < g->wout; ++ox) {
            const int run = ox == first && first < last;
            const int32_t n = run ? (last - first) * c : c; /* the run, or one pixel */
            /* the window's first input column and its kernel columns inside the input, [kx0, kx1) */
            const int32_t x0 = ox * g->sw - g->pl, kx0 = x0 < 0 ? -x0 : 0, kx1 = x0 + g->kw > g->win ? g->win - x0 : g->kw;
            int8_t *const o = row + ox * c;
#if defined(__SSE2__)
            if (!run && c == 8) { /* a pixel of 8 channels: one vector, no call per tap */
                const __m128i flip = _mm_set1_epi8(INT8_MIN);
                __m128i m = _mm_setzero_si128(); /* INT8_MIN, sign flipped */
                for (int32_t k = 0; k < n_rows; ++k)
                    for (int32_t kx = kx0; kx < kx1; ++kx)
                        m = _mm_max_epu8(m, _mm_xor_si128(_mm_loadl_epi64((const __m128i *)(const void *)(
                                                              src + k * row_bytes + (x0 + kx) * c)),
                                                          flip));
                _mm_storel_epi64((__m128i *)(void *)o, _mm_xor_si128(m, flip));
                continue;
            }
#endif
            if (!run && c < IOTNAS_CHANNEL_RUN) { /* a pixel of few channels: no call per tap */
                for (int32_t ch = 0; ch < c; ++ch) {
                    int8_t m = INT8_MIN;
                    for (int32_t k = 0; k < n_rows; ++k)
                        for (int32_t kx = kx0; kx < kx1; ++kx) {
                            const int8_t v = src[k * row_bytes + (x0 + kx) * c + ch];
                            m = v > m ? v : m;
                        }
                    o[ch] = m;
                }
                continue;
            }
            if (n_rows == 1) { /* the window's columns of the one row */
                max_of_runs(n, src + (x0 + kx0) * c, c, kx1 - kx0, o);
                if (run) ox = last - 1;
                continue;
            }
            memset(o, INT8_MIN, (size_t)n);
            for (int32_t k = 0; k < n_rows; ++k)
                for (int32_t kx = kx0; kx < kx1; ++kx) max_run(n, src + k * row_bytes + (x0 + kx) * c, o);
            if (run) ox = last - 1;
        }
        if (lo > INT8_MIN || hi < INT8_MAX)
            for (int32_t i = 0; i < g->wout * c; ++i) row[i] = iotnas_saturate(row[i], lo, hi);
    }
}

void iotnas_qavgpool(const iotnas_qpool_t *p, const int8_t *in, int8_t *out) {
    const iotnas_geometry_t *g = &p->g;
    for (int32_t pixel = 0; pixel < g->hout * g->wout; ++pixel) {
        const window_t w = window_at(g, pixel / g->wout, pixel % g->wout);
        const int32_t inside = (w.ky1 - w.ky0) * (w.kx1 - w.kx0);
        const int32_t count = p->count_pad ? g->kh * g->kw : inside;
        for (int32_t c = 0; c < p->c; ++c) {
            int32_t acc = p->count_pad ? (count - inside) * p->pad_value : 0;
            for (int32_t ky = w.ky0; ky < w.ky1; ++ky)
                for (int32_t kx = w.kx0; kx < w.kx1; ++kx) acc += in[((w.y0 + ky) * g->win + w.x0 + kx) * p->c + c];
            /* to the nearest integer, halves away from zero */
            acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
            out[pixel * p->c + c] = iotnas_saturate(acc, p->act_min, p->act_max);
        }
    }
}

void iotnas_qrelu(const iotnas_qrelu_t *p, const int8_t *in, int8_t *out) {
    const iotnas_qrelu_t q = *p; /* locals: int8 stores may alias *p */
    int32_t i = 0;
#if defined(__SSE2__)
    if (q.shift <= 0) {
        const __m128i in_zp = _mm_set1_epi16((int16_t)q.in_zp), m = _mm_set1_epi32(q.multiplier);
        const __m128i zp = _mm_set1_epi32(q.out_zp);
        const int32_t r = -q.shift;
        const __m128i lo = _mm_set1_epi16((int16_t)q.act_min), hi = _mm_set1_epi16((int16_t)q.act_max);
        for (; i + 8 <= q.n; i += 8) {
            const __m128i x = _mm_sub_epi16(load8_i16(in + i), in_zp);
            _mm_storel_epi64((__m128i *)(void *)(out + i), codes8(iotnas_requantize4_shared(widen_lo(x, 0), m, r),
                                                                  iotnas_requantize4_shared(widen_hi(x, 0), m, r), zp, lo,
                                                                  hi));
        }
    }
#endif
    for (; i < q.n; ++i)
        out[i] = iotnas_saturate(q.out_zp + iotnas_requantize((int32_t)in[i] - q.in_zp, q.multiplier, q.shift),
                                 q.act_min, q.act_max);
}

void iotnas_qconcat(uint32_t pixels, uint32_t cin, const int8_t *in, uint32_t cout, uint32_t offset, int8_t *out) {
    for (uint32_t i = 0; i < pixels; ++i) copy_bytes(out + i * cout + offset, in + i * cin, (int32_t)cin);
}

void iotnas_dequantize(uint32_t n, const int8_t *in, int32_t zero_point, float scale, float *out) {
    for (uint32_t i = 0; i < n; ++i) out[i] = ((float)in[i] - (float)zero_point) * scale;
}
