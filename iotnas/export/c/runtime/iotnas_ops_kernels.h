/* The vector kernels of iotnas_ops.c (see iotnas_ops.h), written once for every vector width:
 * iotnas_ops.c includes this file for the width its target fixes (1, 4 or 8 floats), and on x86,
 * where that width is 4, iotnas_ops_avx2.c includes it again compiled for AVX2 (8 floats) with
 * IOTNAS_OPS_AVX2 defined; the public kernels of that copy end in _avx2 and run where
 * iotnas_avx2_present() says so. Either copy gives each output the same operations in the same
 * order (no fused multiply-add), so the logits do not depend on the copy that runs. */
#ifndef IOTNAS_OPS_KERNELS_H
#define IOTNAS_OPS_KERNELS_H

#include <float.h>
#include <string.h>

#include "iotnas_avx2.h"
#include "iotnas_ops.h"

#if defined(IOTNAS_OPS_AVX2)
#define IOTNAS_KERNEL(name) iotnas_##name##_avx2
#define IOTNAS_DISPATCH(name, args)
#else
#define IOTNAS_KERNEL(name) iotnas_##name
#if defined(IOTNAS_AVX2) && !defined(__AVX__) /* 4 floats a vector here; 8 where the processor has AVX2 */
void iotnas_conv_avx2(const iotnas_conv_t *p, const float *in, float *out, float *scratch);
void iotnas_affine_avx2(const iotnas_affine_t *p, const float *in, float *out);
void iotnas_relu_avx2(uint32_t n, const float *in, float *out);
void iotnas_maxpool_avx2(const iotnas_pool_t *p, const float *in, float *out, float *scratch);
void iotnas_add_avx2(uint32_t n, const float *a, const float *b, uint32_t relu, float *out);
#define IOTNAS_DISPATCH(name, args)                                                                \
    if (iotnas_avx2_present()) {                                                                   \
        iotnas_##name##_avx2 args;                                                                 \
        return;                                                                                    \
    }
#else
#define IOTNAS_DISPATCH(name, args)
#endif
#endif

static float value_at(iotnas_w_t w, uint32_t i) {
    float v;
    iotnas_decode(w.first + i, 1u, w.scale, &v);
    return v;
}

/* y += a * x over n floats. Blocks of 8 with a constant trip count and restrict pointers let
 * a compiler vectorise it at -O2 (gcc's cheapest vectoriser model); the tail is scalar. */
static void axpy(uint32_t n, float a, const float *restrict x, float *restrict y) {
    for (; n >= 8u; n -= 8u, x += 8, y += 8)
        for (int j = 0; j < 8; ++j) y[j] += a * x[j];
    for (uint32_t i = 0; i < n; ++i) y[i] += a * x[i];
}

/* Vectors of floats for the window kernel: GCC's vector extension where the target has float
 * vectors (x86 SSE2 or AVX, Arm NEON), a single float elsewhere (Cortex-M, other compilers). Each
 * output gets the same arithmetic either way: its sum starts at 0 (or at the previous input
 * channels' sum), then one multiply and one add per tap, in the same order. */
#if defined(__GNUC__) && (defined(__AVX__) || defined(IOTNAS_OPS_AVX2))
#define IOTNAS_LANES 8u
typedef float iotnas_vec __attribute__((vector_size(32)));
#elif defined(__GNUC__) && (defined(__SSE2__) || defined(__ARM_NEON))
#define IOTNAS_LANES 4u
typedef float iotnas_vec __attribute__((vector_size(16)));
#else
#define IOTNAS_LANES 1u
typedef float iotnas_vec;
#endif
/* Vector sums kept in registers at once: enough independent additions to hide the adder's
 * latency (a block of 8 outputs in 1-2 chains was bound by it). */
#define IOTNAS_BLOCK 8u

static iotnas_vec load_vec(const float *p) {
    iotnas_vec v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* The first n floats at p (the rest of the vector 0): an output vector at the end of a row. */
static iotnas_vec load_part(const float *p, uint32_t n) {
    iotnas_vec v;
    memset(&v, 0, sizeof v);
    memcpy(&v, p, n * sizeof *p);
    return v;
}

/* Store 8 consecutive vectors at o. */
static void store_block(float *o, iotnas_vec a0, iotnas_vec a1, iotnas_vec a2, iotnas_vec a3, iotnas_vec a4,
                        iotnas_vec a5, iotnas_vec a6, iotnas_vec a7) {
    memcpy(o, &a0, sizeof a0), memcpy(o + IOTNAS_LANES, &a1, sizeof a1);
    memcpy(o + 2u * IOTNAS_LANES, &a2, sizeof a2), memcpy(o + 3u * IOTNAS_LANES, &a3, sizeof a3);
    memcpy(o + 4u * IOTNAS_LANES, &a4, sizeof a4), memcpy(o + 5u * IOTNAS_LANES, &a5, sizeof a5);
    memcpy(o + 6u * IOTNAS_LANES, &a6, sizeof a6), memcpy(o + 7u * IOTNAS_LANES, &a7, sizeof a7);
}

/* ReLU: a negative value becomes 0; -0 and NaN pass. The vector form gives each lane the same. */
static float relu_value(float v) {
    return v < 0.0f ? 0.0f : v;
}

#if IOTNAS_LANES > 1u
typedef int32_t iotnas_mask __attribute__((vector_size(IOTNAS_LANES * 4u)));
static iotnas_vec relu_vec(iotnas_vec v) {
    iotnas_vec zero;
    memset(&zero, 0, sizeof zero);
    return (iotnas_vec)(~(v < zero) & (iotnas_mask)v);
}
#else
#define relu_vec relu_value
#endif

#if IOTNAS_LANES > 1u
/* The floats of two vectors a, b at even and at odd places (a[0], a[2], ... b[L - 2]; a[1], ...). */
#if IOTNAS_LANES == 8u
#define IOTNAS_EVENS 0, 2, 4, 6, 8, 10, 12, 14
#define IOTNAS_ODDS 1, 3, 5, 7, 9, 11, 13, 15
#else
#define IOTNAS_EVENS 0, 2, 4, 6
#define IOTNAS_ODDS 1, 3, 5, 7
#endif
#if defined(__clang__)
#define IOTNAS_PICK(a, b, places) __builtin_shufflevector(a, b, places)
#else
#define IOTNAS_PICK(a, b, places) __builtin_shuffle(a, b, (iotnas_mask){places})
#endif
#endif

/* e[j] = x[2j] and o[j] = x[2j + 1] for the places below n: a row's columns split by parity
 * (the phases of a stride of 2), two vectors in, one of each out, at a time. */
static void split_pairs(uint32_t n, const float *x, float *e, float *o) {
    uint32_t j = 0;
#if IOTNAS_LANES > 1u
    for (; 2u * (j + IOTNAS_LANES) <= n; j += IOTNAS_LANES) {
        const iotnas_vec a = load_vec(x + 2u * j), b = load_vec(x + 2u * j + IOTNAS_LANES);
        const iotnas_vec evens = IOTNAS_PICK(a, b, IOTNAS_EVENS), odds = IOTNAS_PICK(a, b, IOTNAS_ODDS);
        memcpy(e + j, &evens, sizeof evens), memcpy(o + j, &odds, sizeof odds);
    }
#endif
    for (; 2u * j < n; ++j) {
        e[j] = x[2u * j];
        if (2u * j + 1u < n) o[j] = x[2u * j + 1u];
    }
}

/* The end of a convolution's sum: + bias, then the ReLU when relu. */
static float finish_value(float v, float bias, uint32_t relu) {
    v = v + bias;
    return relu ? relu_value(v) : v;
}

static iotnas_vec finish_vec(iotnas_vec v, float bias, uint32_t relu) {
    v = v + bias;
    return relu ? relu_vec(v) : v;
}

/* Where a window convolution reads and writes one plane: the input plane padded with zeros,
 * each row's columns split by phase for the horizontal stride (padded column c at
 * [c % sw][c / sw]), so that a tap of consecutive outputs reads consecutive floats. */
typedef struct {
    uint32_t hout, wout, kh, kw, sh, sw;
    uint32_t phase; /* floats per phase of a padded row: ceil((win + 2 pw) / sw) */
    uint32_t row;   /* floats per padded row: sw * phase */
} plane_t;

static void pad_plane(const iotnas_conv_t *p, const plane_t *g, const float *x, float *dst) {
    const uint32_t phases = g->sw < g->kw ? g->sw : g->kw; /* phases a tap reads */
    if (p->ph != 0u || p->pw != 0u) memset(dst, 0, (p->hin + 2u * p->ph) * g->row * sizeof *dst);
    for (uint32_t iy = 0; iy < p->hin; ++iy) {
        if (g->kh < g->sh && (iy + p->ph) % g->sh >= g->kh) continue; /* a row no tap reads */
        const float *src = x + iy * p->win;
        float *d = dst + (iy + p->ph) * g->row;
        if (g->sw == 1u) {
            memcpy(d + p->pw, src, p->win * sizeof *src);
            continue;
        }
        if (g->sw == 2u && phases == 2u) { /* input column 2j at padded column 2j + pw, 2j + 1 after it */
            split_pairs(p->win, src, d + p->pw % 2u * g->phase + p->pw / 2u,
                        d + (p->pw + 1u) % 2u * g->phase + (p->pw + 1u) / 2u);
            continue;
        }
        /* padded column c = k sw + ph (input column c - pw) goes to phase ph, place k */
        for (uint32_t ph = 0; ph < phases; ++ph, d += g->phase) {
            uint32_t k = ph >= p->pw ? 0u : (p->pw - ph + g->sw - 1u) / g->sw;
            for (uint32_t ix = k * g->sw + ph - p->pw, sw = g->sw, n = p->win; ix < n; ix += sw, ++k) d[k] = src[ix];
        }
    }
}

/* Every tap of a KH x KW window at horizontal stride SW (g's, or constants that let the compiler
 * unroll the loops), TAP(j) adding tap value wv (wm[tap]) at offset at for vector j. */
#define IOTNAS_SUM_TAPS(TAP, KH, KW, SW)                                                           \
    for (uint32_t c = 0; c < s->channels; ++c)                                                     \
        for (uint32_t ky = 0; ky < (KH); ++ky)                                                     \
            for (uint32_t ph = 0; ph < (SW) && ph < (KW); ++ph) {                                  \
                uint32_t at = c * s->channel_stride + ky * g->row + ph * g->phase;                 \
                for (uint32_t kx = ph; kx < (KW); kx += (SW), ++at) {                              \
                    const uint32_t tap = (c * (KH) + ky) * (KW) + kx;                              \
                    const float wv = wm[tap];                                                      \
                    TAP(0); TAP(1); TAP(2); TAP(3); TAP(4); TAP(5); TAP(6); TAP(7);                \
                }                                                                                  \
            }
/* Vector j of a block at its own input address x##j. */
#define IOTNAS_TAP(j) a##j = a##j + wv * load_vec(x##j + at)

/* What window_plane sums: channels input planes (channel_stride floats apart) under a kh x kw
 * window, into outputs output planes (plane_out floats apart), weights [outputs][channels][kh][kw]. */
typedef struct {
    plane_t g;
    uint32_t channels, channel_stride, outputs, plane_out;
    const iotnas_conv_t *layer; /* its bias and ReLU end the sums when finish */
    uint32_t first_oc;          /* the layer's output channel of output plane 0 */
} sums_t;

/* Vector j of a block of rows, V vectors a row: row j / V of the block (rows sh input rows apart),
 * vector j % V of that row. */
#define IOTNAS_TAP_ROWS(j) a##j = a##j + wv * load_vec(x0 + at + (j) / V * step + (j) % V * IOTNAS_LANES)
#define IOTNAS_OUT(j) (o + (j) / V * g->wout + (j) % V * IOTNAS_LANES)

/* The bias of the layer's output channel oc (0 without one). */
static float bias_of(const iotnas_conv_t *p, uint32_t oc) {
    return p->bias.present ? value_at(p->bias, oc) : 0.0f;
}

/* A block of 8 vectors of type VEC summed over every tap in registers: from the sums at OUT(j)
 * when accumulate (else 0), TAP(j) for each tap, then (finish) + the bias and the ReLU of output
 * plane m (vectors 0-3) or M_HI (vectors 4-7), stored back at OUT(j). */
#define IOTNAS_BLOCK_SUMS(VEC, LOAD, FINISH, OUT, TAP, KH, KW, SW, M_HI)                           \
    {                                                                                               \
        VEC a0, a1, a2, a3, a4, a5, a6, a7;                                                         \
        if (accumulate) {                                                                           \
            a0 = LOAD(OUT(0)), a1 = LOAD(OUT(1)), a2 = LOAD(OUT(2)), a3 = LOAD(OUT(3));             \
            a4 = LOAD(OUT(4)), a5 = LOAD(OUT(5)), a6 = LOAD(OUT(6)), a7 = LOAD(OUT(7));             \
        } else {                                                                                    \
            memset(&a0, 0, sizeof a0);                                                              \
            a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;                          \
        }                                                                                           \
        IOTNAS_SUM_TAPS(TAP, KH, KW, SW)                                                            \
        if (finish) {                                                                               \
            const iotnas_conv_t *p = s->layer;                                                      \
            const float lo = bias_of(p, s->first_oc + m);                                           \
            const uint32_t m_hi = (M_HI);                                                           \
            const float hi = m_hi == m ? lo : bias_of(p, s->first_oc + m_hi);                       \
            a0 = FINISH(a0, lo, p->relu), a1 = FINISH(a1, lo, p->relu);                             \
            a2 = FINISH(a2, lo, p->relu), a3 = FINISH(a3, lo, p->relu);                             \
            a4 = FINISH(a4, hi, p->relu), a5 = FINISH(a5, hi, p->relu);                             \
            a6 = FINISH(a6, hi, p->relu), a7 = FINISH(a7, hi, p->relu);                             \
        }                                                                                           \
        memcpy(OUT(0), &a0, sizeof a0), memcpy(OUT(1), &a1, sizeof a1);                             \
        memcpy(OUT(2), &a2, sizeof a2), memcpy(OUT(3), &a3, sizeof a3);                             \
        memcpy(OUT(4), &a4, sizeof a4), memcpy(OUT(5), &a5, sizeof a5);                             \
        memcpy(OUT(6), &a6, sizeof a6), memcpy(OUT(7), &a7, sizeof a7);                             \
    }

/* window_plane where every row is whole vectors and a block is V vectors of each of 8 / V rows
 * (V = 8: a block within a row): one input address per block, the rest constant offsets, so that
 * the taps' loop keeps every address in a register. */
#define IOTNAS_WINDOW_ROWS(name, V_, KH, KW, SW)                                                    \
    static void name(const sums_t *s, const float *src, const float *w, int accumulate, int finish, \
                     float *out) {                                                                  \
        enum { V = V_ };                                                                            \
        const plane_t *g = &s->g;                                                                   \
        const uint32_t taps = s->channels * g->kh * g->kw, step = g->sh * g->row;                  \
        const uint32_t width = V * IOTNAS_LANES < g->wout ? V * IOTNAS_LANES : g->wout;             \
        for (uint32_t oy = 0; oy < g->hout; oy += IOTNAS_BLOCK / V)                                 \
            for (uint32_t ox = 0; ox < g->wout; ox += width) {                                      \
                const float *const x0 = src + oy * step + ox;                                       \
                for (uint32_t m = 0; m < s->outputs; ++m) {                                         \
                    float *const o = out + m * s->plane_out + oy * g->wout + ox;                    \
                    const float *wm = w + m * taps;                                                 \
                    IOTNAS_BLOCK_SUMS(iotnas_vec, load_vec, finish_vec, IOTNAS_OUT, IOTNAS_TAP_ROWS, KH, KW, SW, m) \
                }                                                                                   \
            }                                                                                       \
    }

IOTNAS_WINDOW_ROWS(window_rows8, 8, g->kh, g->kw, g->sw)
#if IOTNAS_LANES > 1u /* single floats: rows of 8 or more outputs fill a block (and flash stays small) */
IOTNAS_WINDOW_ROWS(window_rows4, 4, g->kh, g->kw, g->sw)
IOTNAS_WINDOW_ROWS(window_rows2, 2, g->kh, g->kw, g->sw)
IOTNAS_WINDOW_ROWS(window_rows1, 1, g->kh, g->kw, g->sw)
#endif

#if IOTNAS_LANES > 1u
/* Rows of 4 outputs (a 4 x 4 plane at the end of a network, where a vector of 8 would be half
 * empty and a block of 8 half repeats): vectors of 4 floats at any width, a block of 4 rows of two
 * output planes at once, 8 sums in registers (an odd last plane summed twice, stored twice). */
#if IOTNAS_LANES == 4u
typedef iotnas_vec iotnas_vec4;
#define finish_vec4 finish_vec
#else
typedef float iotnas_vec4 __attribute__((vector_size(16)));
typedef int32_t iotnas_mask4 __attribute__((vector_size(16)));
static iotnas_vec4 finish_vec4(iotnas_vec4 v, float bias, uint32_t relu) {
    iotnas_vec4 zero;
    memset(&zero, 0, sizeof zero);
    v = v + bias;
    return relu ? (iotnas_vec4)(~(v < zero) & (iotnas_mask4)v) : v;
}
#endif

static iotnas_vec4 load_vec4(const float *p) {
    iotnas_vec4 v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Vector j: row j % 4 of the block, of plane m (j < 4, tap value wv) or of the next (at next). */
#define IOTNAS_TAP4(j) a##j = a##j + ((j) < 4 ? wv : wm[tap + next]) * load_vec4(x0 + at + (j) % 4u * step)
#define IOTNAS_OUT4(j) (((j) < 4 ? o : q) + (j) % 4u * 4u)

#define IOTNAS_WINDOW_ROWS4(name, KH, KW, SW)                                                      \
    static void name(const sums_t *s, const float *src, const float *w, int accumulate, int finish, \
                     float *out) {                                                                  \
        const plane_t *g = &s->g;                                                                   \
        const uint32_t taps = s->channels * g->kh * g->kw, step = g->sh * g->row;                  \
        for (uint32_t oy = 0; oy < g->hout; oy += 4u) {                                             \
            const float *const x0 = src + oy * step;                                                \
            for (uint32_t m = 0; m < s->outputs; m += 2u) {                                         \
                const uint32_t n = m + 1u < s->outputs ? m + 1u : m, next = (n - m) * taps;        \
                float *const o = out + m * s->plane_out + oy * 4u, *const q = o + (n - m) * s->plane_out; \
                const float *wm = w + m * taps;                                                     \
                IOTNAS_BLOCK_SUMS(iotnas_vec4, load_vec4, finish_vec4, IOTNAS_OUT4, IOTNAS_TAP4, KH, KW, SW, n) \
            }                                                                                       \
        }                                                                                           \
    }
IOTNAS_WINDOW_ROWS4(window_rows_of4_3s1, 3u, 3u, 1u)
IOTNAS_WINDOW_ROWS4(window_rows_of4_3s2, 3u, 3u, 2u)
IOTNAS_WINDOW_ROWS4(window_rows_of4_any, g->kh, g->kw, g->sw)

static void window_rows_of4(const sums_t *s, const float *src, const float *w, int accumulate, int finish,
                            float *out) {
    const plane_t *g = &s->g;
    if (g->kh == 3u && g->kw == 3u && g->sw <= 2u)
        (g->sw == 1u ? window_rows_of4_3s1 : window_rows_of4_3s2)(s, src, w, accumulate, finish, out);
    else
        window_rows_of4_any(s, src, w, accumulate, finish, out);
}
#endif

#if IOTNAS_LANES == 8u
/* 8 floats a vector: rows of 16 and 32 outputs (the spaces' larger planes) with the window fixed
 * where it is square, 3, 5 or 7 wide, at stride 1 or 2, so that the taps' loops unroll (0.85-0.92x
 * of the time of the general form on PNASNet's layers). */
#define IOTNAS_ROWS_FIXED(V)                                                                       \
    IOTNAS_WINDOW_ROWS(window_rows##V##_3s1, V, 3u, 3u, 1u)                                         \
    IOTNAS_WINDOW_ROWS(window_rows##V##_3s2, V, 3u, 3u, 2u)                                         \
    IOTNAS_WINDOW_ROWS(window_rows##V##_5s1, V, 5u, 5u, 1u)                                         \
    IOTNAS_WINDOW_ROWS(window_rows##V##_5s2, V, 5u, 5u, 2u)                                         \
    IOTNAS_WINDOW_ROWS(window_rows##V##_7s1, V, 7u, 7u, 1u)                                         \
    IOTNAS_WINDOW_ROWS(window_rows##V##_7s2, V, 7u, 7u, 2u)                                         \
    static void window_rows##V##_any(const sums_t *s, const float *src, const float *w, int accumulate, \
                                     int finish, float *out) {                                      \
        const plane_t *g = &s->g;                                                                   \
        const uint32_t k = g->kh == g->kw && g->sw <= 2u ? g->kh : 0u;                             \
        if (k == 3u) (g->sw == 1u ? window_rows##V##_3s1 : window_rows##V##_3s2)(s, src, w, accumulate, finish, out); \
        else if (k == 5u) (g->sw == 1u ? window_rows##V##_5s1 : window_rows##V##_5s2)(s, src, w, accumulate, finish, out); \
        else if (k == 7u) (g->sw == 1u ? window_rows##V##_7s1 : window_rows##V##_7s2)(s, src, w, accumulate, finish, out); \
        else window_rows##V(s, src, w, accumulate, finish, out);                                    \
    }
IOTNAS_ROWS_FIXED(4)
IOTNAS_ROWS_FIXED(2)
#define IOTNAS_ROWS4 window_rows4_any
#define IOTNAS_ROWS2 window_rows2_any
#else
#define IOTNAS_ROWS4 window_rows4
#define IOTNAS_ROWS2 window_rows2
#endif

/* out (+)= the window sums of s over src; accumulate: add to out's sums (a later input channel);
 * finish: then add the bias and apply the ReLU (the last input channel).
 * Each output plane is cut into vectors of IOTNAS_LANES consecutive outputs of a row (the last of
 * a row may be partial), taken IOTNAS_BLOCK at a time across rows, and a block is summed over
 * every tap in registers, for one output plane after another (the block's addresses are found
 * once). A block short of vectors repeats its last one. */
static void window_plane(const sums_t *s, const float *src, const float *w, int accumulate, int finish,
                         float *out) {
    const plane_t *g = &s->g;
    const uint32_t per_row = (g->wout + IOTNAS_LANES - 1u) / IOTNAS_LANES, n = g->hout * per_row;
    const uint32_t taps = s->channels * g->kh * g->kw;
    uint32_t oy = 0, ox = 0;
    if (g->wout % IOTNAS_LANES == 0u) { /* whole vectors: blocks of whole rows, or within a row */
        if (per_row % IOTNAS_BLOCK == 0u) {
            window_rows8(s, src, w, accumulate, finish, out);
            return;
        }
#if IOTNAS_LANES > 1u
        if (per_row == 4u && g->hout % 2u == 0u) {
            IOTNAS_ROWS4(s, src, w, accumulate, finish, out);
            return;
        }
        if (per_row == 2u && g->hout % 4u == 0u) {
            IOTNAS_ROWS2(s, src, w, accumulate, finish, out);
            return;
        }
        if (per_row == 1u && g->hout % 8u == 0u) {
            window_rows1(s, src, w, accumulate, finish, out);
            return;
        }
#endif
    }
#if IOTNAS_LANES > 1u
    if (g->wout == 4u && g->hout % 4u == 0u) {
        window_rows_of4(s, src, w, accumulate, finish, out);
        return;
    }
#endif
    for (uint32_t t = 0; t < n; t += IOTNAS_BLOCK) {
        const float *x[IOTNAS_BLOCK];
        uint32_t o[IOTNAS_BLOCK], lanes[IOTNAS_BLOCK];
        for (uint32_t j = 0; j < IOTNAS_BLOCK; ++j) {
            if (t + j >= n) { /* repeat the last vector: the same sums, stored twice */
                x[j] = x[j - 1u], o[j] = o[j - 1u], lanes[j] = lanes[j - 1u];
                continue;
            }
            x[j] = src + oy * g->sh * g->row + ox;
            o[j] = oy * g->wout + ox;
            lanes[j] = g->wout - ox < IOTNAS_LANES ? g->wout - ox : IOTNAS_LANES;
            ox += IOTNAS_LANES;
            if (ox >= g->wout) ox = 0, ++oy;
        }
        for (uint32_t m = 0; m < s->outputs; ++m) {
            float *const plane = out + m * s->plane_out;
            const float *wm = w + m * taps;
            iotnas_vec a[IOTNAS_BLOCK];
            for (uint32_t j = 0; j < IOTNAS_BLOCK; ++j) {
                if (!accumulate) memset(&a[j], 0, sizeof a[j]);
                else a[j] = lanes[j] == IOTNAS_LANES ? load_vec(plane + o[j]) : load_part(plane + o[j], lanes[j]);
            }
            {
                const float *x0 = x[0], *x1 = x[1], *x2 = x[2], *x3 = x[3], *x4 = x[4], *x5 = x[5], *x6 = x[6],
                            *x7 = x[7];
                iotnas_vec a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3], a4 = a[4], a5 = a[5], a6 = a[6], a7 = a[7];
                IOTNAS_SUM_TAPS(IOTNAS_TAP, g->kh, g->kw, g->sw)
                a[0] = a0, a[1] = a1, a[2] = a2, a[3] = a3, a[4] = a4, a[5] = a5, a[6] = a6, a[7] = a7;
            }
            if (finish) {
                const iotnas_conv_t *p = s->layer;
                const float bias = p->bias.present ? value_at(p->bias, s->first_oc + m) : 0.0f;
                for (uint32_t j = 0; j < IOTNAS_BLOCK; ++j) a[j] = finish_vec(a[j], bias, p->relu);
            }
            for (uint32_t j = 0; j < IOTNAS_BLOCK; ++j) {
                if (lanes[j] == IOTNAS_LANES) memcpy(plane + o[j], &a[j], sizeof a[j]); /* a store, not a call */
                else memcpy(plane + o[j], &a[j], lanes[j] * sizeof(float));
            }
        }
    }
}

#define IOTNAS_POINT(j) a##j = a##j + wv * load_vec(x + (j) * IOTNAS_LANES)

/* A pointwise convolution: per output channel, its decoded row summed over the group's input
 * planes in place, IOTNAS_BLOCK vectors of the plane at a time in registers over every input
 * channel; a rest of whole vectors one vector at a time, a rest below a vector by axpy. */
static void pointwise(const iotnas_conv_t *p, const float *in, float *out, float *scratch) {
    const uint32_t cin_g = p->cin / p->groups, cout_g = p->cout / p->groups, plane = p->hout * p->wout;
    const uint32_t block = IOTNAS_BLOCK * IOTNAS_LANES, blocks = plane / block * block;
    const uint32_t vectors = plane / IOTNAS_LANES * IOTNAS_LANES, relu = p->relu;
    for (uint32_t oc = 0; oc < p->cout; ++oc) {
        const float *const planes = in + oc / cout_g * cin_g * plane;
        const float bias = p->bias.present ? value_at(p->bias, oc) : 0.0f;
        float *o = out + oc * plane;
        iotnas_decode(p->weight.first + oc * cin_g, cin_g, p->weight.scale + oc, scratch);
        uint32_t i = 0;
        for (; i < blocks; i += block) {
            iotnas_vec a0, a1, a2, a3, a4, a5, a6, a7;
            memset(&a0, 0, sizeof a0);
            a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
            const float *x = planes + i;
            for (uint32_t ic = 0; ic < cin_g; ++ic, x += plane) {
                const float wv = scratch[ic];
                IOTNAS_POINT(0); IOTNAS_POINT(1); IOTNAS_POINT(2); IOTNAS_POINT(3);
                IOTNAS_POINT(4); IOTNAS_POINT(5); IOTNAS_POINT(6); IOTNAS_POINT(7);
            }
            a0 = finish_vec(a0, bias, relu), a1 = finish_vec(a1, bias, relu);
            a2 = finish_vec(a2, bias, relu), a3 = finish_vec(a3, bias, relu);
            a4 = finish_vec(a4, bias, relu), a5 = finish_vec(a5, bias, relu);
            a6 = finish_vec(a6, bias, relu), a7 = finish_vec(a7, bias, relu);
            store_block(o + i, a0, a1, a2, a3, a4, a5, a6, a7);
        }
        for (; i < vectors; i += IOTNAS_LANES) {
            iotnas_vec a0;
            memset(&a0, 0, sizeof a0);
            const float *x = planes + i;
            for (uint32_t ic = 0; ic < cin_g; ++ic, x += plane) {
                const float wv = scratch[ic];
                IOTNAS_POINT(0);
            }
            a0 = finish_vec(a0, bias, relu);
            memcpy(o + i, &a0, sizeof a0);
        }
        if (i < plane) { /* below a vector: the plain form */
            for (uint32_t k = i; k < plane; ++k) o[k] = 0.0f;
            for (uint32_t ic = 0; ic < cin_g; ++ic) axpy(plane - i, scratch[ic], planes + ic * plane + i, o + i);
            for (uint32_t k = i; k < plane; ++k) o[k] = finish_value(o[k], bias, relu);
        }
    }
}

void IOTNAS_KERNEL(conv)(const iotnas_conv_t *p, const float *in, float *out, float *scratch) {
    IOTNAS_DISPATCH(conv, (p, in, out, scratch))
    const uint32_t cin_g = p->cin / p->groups, cout_g = p->cout / p->groups;
    const uint32_t taps = p->kh * p->kw, plane_in = p->hin * p->win, plane_out = p->hout * p->wout;
    if (p->kh == 1u && p->kw == 1u && p->sh == 1u && p->sw == 1u && p->ph == 0u && p->pw == 0u) {
        pointwise(p, in, out, scratch);
        return;
    }
    /* A window: each input channel padded once into scratch (after the taps of the group's output
     * channels for it, [cout_g][kh][kw]), then summed into every output channel of its group. */
    sums_t s;
    s.g.hout = p->hout, s.g.wout = p->wout, s.g.kh = p->kh, s.g.kw = p->kw, s.g.sh = p->sh, s.g.sw = p->sw;
    s.g.phase = (p->win + 2u * p->pw + p->sw - 1u) / p->sw;
    s.g.row = p->sw * s.g.phase;
    s.channels = 1u, s.channel_stride = 0u, s.outputs = cout_g, s.plane_out = plane_out, s.layer = p;
    float *const padded = scratch + cout_g * taps;
    for (uint32_t grp = 0; grp < p->groups; ++grp)
        for (uint32_t ic = 0; ic < cin_g; ++ic) {
            pad_plane(p, &s.g, in + (grp * cin_g + ic) * plane_in, padded);
            for (uint32_t m = 0; m < cout_g; ++m) {
                const uint32_t oc = grp * cout_g + m;
                iotnas_decode(p->weight.first + (oc * cin_g + ic) * taps, taps, p->weight.scale + oc,
                              scratch + m * taps);
            }
            s.first_oc = grp * cout_g;
            window_plane(&s, padded, scratch, ic > 0u, ic + 1u == cin_g, out + grp * cout_g * plane_out);
        }
}

/* The elementwise operators: a vector at a time, the rest one value at a time, each value with
 * the same operations either way. */
void IOTNAS_KERNEL(affine)(const iotnas_affine_t *p, const float *in, float *out) {
    IOTNAS_DISPATCH(affine, (p, in, out))
    const uint32_t plane = p->h * p->w, whole = plane / IOTNAS_LANES * IOTNAS_LANES, relu = p->relu;
    for (uint32_t c = 0; c < p->c; ++c, in += plane, out += plane) {
        const float scale = value_at(p->scale, c), shift = value_at(p->shift, c);
        uint32_t i = 0;
        for (; i < whole; i += IOTNAS_LANES) {
            const iotnas_vec v = finish_vec(load_vec(in + i) * scale, shift, relu);
            memcpy(out + i, &v, sizeof v);
        }
        for (; i < plane; ++i) out[i] = finish_value(in[i] * scale, shift, relu);
    }
}

void IOTNAS_KERNEL(relu)(uint32_t n, const float *in, float *out) {
    IOTNAS_DISPATCH(relu, (n, in, out))
    const uint32_t whole = n / IOTNAS_LANES * IOTNAS_LANES;
    uint32_t i = 0;
    for (; i < whole; i += IOTNAS_LANES) {
        const iotnas_vec v = relu_vec(load_vec(in + i));
        memcpy(out + i, &v, sizeof v);
    }
    for (; i < n; ++i) out[i] = relu_value(in[i]);
}

/* The input rows (or columns) [lo, hi) under output index o of a pooling window: start
 * o * stride - pad, clipped to the image; returns PyTorch's count for the divisor with
 * padding counted (the window clipped to the padded image only). */
static uint32_t span(uint32_t o, uint32_t stride, uint32_t pad, uint32_t k, uint32_t n, uint32_t *lo, uint32_t *hi) {
    const int32_t start = (int32_t)(o * stride) - (int32_t)pad, end = start + (int32_t)k;
    const int32_t end_pad = end < (int32_t)(n + pad) ? end : (int32_t)(n + pad);
    *lo = start < 0 ? 0u : (uint32_t)start;
    *hi = end > (int32_t)n ? n : (uint32_t)end;
    return (uint32_t)(end_pad - start);
}

#if IOTNAS_LANES > 1u
static iotnas_vec max_vec(iotnas_vec a, iotnas_vec b) {
    const iotnas_mask a_wins = a > b;
    return (iotnas_vec)((a_wins & (iotnas_mask)a) | (~a_wins & (iotnas_mask)b));
}
#else
static iotnas_vec max_vec(iotnas_vec a, iotnas_vec b) {
    return a > b ? a : b;
}
#endif

static float max_value(float a, float b) {
    return a > b ? a : b;
}

/* The column maxima of output row oy's window rows (inside the image) at c + pw, one vector of
 * columns at a time over every row in registers. */
static void column_maxima(const iotnas_pool_t *p, const float *x, uint32_t oy, float *c) {
    const uint32_t win = p->win, whole = win / IOTNAS_LANES * IOTNAS_LANES;
    float *const inside = c + p->pw;
    uint32_t y0, y1;
    (void)span(oy, p->sh, p->ph, p->kh, p->hin, &y0, &y1);
    const float *const top = x + y0 * win;
    uint32_t i = 0;
    for (; i < whole; i += IOTNAS_LANES) {
        iotnas_vec m = load_vec(top + i);
        for (uint32_t y = 1; y < y1 - y0; ++y) m = max_vec(m, load_vec(top + y * win + i));
        memcpy(inside + i, &m, sizeof m);
    }
    for (; i < win; ++i) {
        float m = top[i];
        for (uint32_t y = 1; y < y1 - y0; ++y) m = max_value(m, top[y * win + i]);
        inside[i] = m;
    }
}

/* Each output of a row the maximum of its window's columns of c (cols floats, and up to one more
 * read, never used), a vector of outputs at a time where the stride is 1 or 2. */
static void row_maxima(const iotnas_pool_t *p, const float *c, uint32_t cols, float *o) {
    uint32_t ox = 0;
    (void)cols; /* read by the vector forms */
    if (p->sw == 1u)
        for (; ox + IOTNAS_LANES <= p->wout; ox += IOTNAS_LANES) {
            iotnas_vec m = load_vec(c + ox);
            for (uint32_t k = 1; k < p->kw; ++k) m = max_vec(m, load_vec(c + ox + k));
            memcpy(o + ox, &m, sizeof m);
        }
#if IOTNAS_LANES > 1u
    /* stride 2: column 2 ox + k of the vector's outputs at the even (k even) or odd places of the
     * two vectors from column 2 ox + k - k % 2 */
    if (p->sw == 2u)
        for (; ox + IOTNAS_LANES <= p->wout && 2u * (ox + IOTNAS_LANES) + (p->kw - 1u) / 2u * 2u <= cols + 1u;
             ox += IOTNAS_LANES) {
            const float *w = c + 2u * ox;
            iotnas_vec m = IOTNAS_PICK(load_vec(w), load_vec(w + IOTNAS_LANES), IOTNAS_EVENS);
            for (uint32_t k = 1; k < p->kw; ++k) {
                const iotnas_vec a = load_vec(w + k / 2u * 2u), b = load_vec(w + k / 2u * 2u + IOTNAS_LANES);
                m = max_vec(m, k % 2u ? IOTNAS_PICK(a, b, IOTNAS_ODDS) : IOTNAS_PICK(a, b, IOTNAS_EVENS));
            }
            memcpy(o + ox, &m, sizeof m);
        }
#endif
    for (; ox < p->wout; ++ox) {
        const float *w = c + ox * p->sw;
        float m = w[0];
        for (uint32_t k = 1; k < p->kw; ++k) m = max_value(m, w[k]);
        o[ox] = m;
    }
}

/* Separable: per output row, the column maxima of its window's rows into scratch, between -FLT_MAX
 * columns for the padding (never the maximum: every window holds an input value); then each
 * output the maximum of its window's columns. */
void IOTNAS_KERNEL(maxpool)(const iotnas_pool_t *p, const float *in, float *out, float *scratch) {
    IOTNAS_DISPATCH(maxpool, (p, in, out, scratch))
    const uint32_t read = (p->wout - 1u) * p->sw + p->kw, cols = read > p->pw + p->win ? read : p->pw + p->win;
    for (uint32_t i = 0; i < cols + 1u; ++i) scratch[i] = -FLT_MAX;
    for (uint32_t ch = 0; ch < p->c; ++ch)
        for (uint32_t oy = 0; oy < p->hout; ++oy) {
            column_maxima(p, in + ch * p->hin * p->win, oy, scratch);
            row_maxima(p, scratch, cols, out + (ch * p->hout + oy) * p->wout);
        }
}


void IOTNAS_KERNEL(add)(uint32_t n, const float *a, const float *b, uint32_t relu, float *out) {
    IOTNAS_DISPATCH(add, (n, a, b, relu, out))
    const uint32_t whole = n / IOTNAS_LANES * IOTNAS_LANES;
    uint32_t i = 0;
    for (; i < whole; i += IOTNAS_LANES) {
        iotnas_vec v = load_vec(a + i) + load_vec(b + i);
        if (relu) v = relu_vec(v);
        memcpy(out + i, &v, sizeof v);
    }
    for (; i < n; ++i) out[i] = relu ? relu_value(a[i] + b[i]) : a[i] + b[i];
}

#endif /* IOTNAS_OPS_KERNELS_H */
