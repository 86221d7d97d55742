/* iotnas C kernels (see iotnas_ops.h). */
#include "iotnas_ops.h"

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

void iotnas_input(const uint8_t *image, uint32_t c, uint32_t h, uint32_t w, const float *mean,
                  const float *inv_std, float *out) {
    for (uint32_t ch = 0; ch < c; ++ch)
        for (uint32_t i = 0; i < h * w; ++i)
            out[ch * h * w + i] = ((float)image[i * c + ch] - mean[ch]) * inv_std[ch];
}

void iotnas_conv(const iotnas_conv_t *p, const float *in, float *out, float *scratch) {
    const uint32_t cin_g = p->cin / p->groups, cout_g = p->cout / p->groups;
    const uint32_t ksize = cin_g * p->kh * p->kw;
    const uint32_t plane_in = p->hin * p->win, plane_out = p->hout * p->wout;
    for (uint32_t oc = 0; oc < p->cout; ++oc) {
        const uint32_t g = oc / cout_g;
        float *o = out + oc * plane_out;
        iotnas_decode(p->weight.first + oc * ksize, ksize, p->weight.scale + oc, scratch);
        for (uint32_t i = 0; i < plane_out; ++i) o[i] = 0.0f;
        if (p->kh == 1u && p->kw == 1u && p->sh == 1u && p->sw == 1u && p->ph == 0u && p->pw == 0u) {
            /* pointwise: each input channel's whole plane at once */
            for (uint32_t ic = 0; ic < cin_g; ++ic) axpy(plane_out, scratch[ic], in + (g * cin_g + ic) * plane_in, o);
        } else for (uint32_t kx = 0; kx < p->kw; ++kx) {
            /* output columns whose input column ox * sw + kx - pw lies inside the image */
            uint32_t ox0 = 0, ox1 = p->wout;
            while (ox0 < ox1 && ox0 * p->sw + kx < p->pw) ++ox0;
            while (ox1 > ox0 && (ox1 - 1u) * p->sw + kx >= p->win + p->pw) --ox1;
            for (uint32_t ky = 0; ky < p->kh; ++ky) {
                for (uint32_t oy = 0; oy < p->hout; ++oy) {
                    const uint32_t iy_pad = oy * p->sh + ky;
                    if (iy_pad < p->ph || iy_pad >= p->hin + p->ph) continue;
                    const uint32_t iy = iy_pad - p->ph;
                    float *orow = o + oy * p->wout;
                    for (uint32_t ic = 0; ic < cin_g; ++ic) {
                        const float wv = scratch[(ic * p->kh + ky) * p->kw + kx];
                        const float *xrow = in + (g * cin_g + ic) * plane_in + iy * p->win;
                        if (p->sw == 1u) {
                            /* in bounds for ox in [ox0, ox1) */
                            axpy(ox1 - ox0, wv, xrow + ox0 + kx - p->pw, orow + ox0);
                        } else {
                            for (uint32_t ox = ox0; ox < ox1; ++ox) orow[ox] += wv * xrow[ox * p->sw + kx - p->pw];
                        }
                    }
                }
            }
        }
        const float bias = p->bias.present ? value_at(p->bias, oc) : 0.0f;
        for (uint32_t i = 0; i < plane_out; ++i) {
            const float v = o[i] + bias;
            o[i] = (p->relu && v < 0.0f) ? 0.0f : v;
        }
    }
}

void iotnas_affine(const iotnas_affine_t *p, const float *in, float *out) {
    const uint32_t plane = p->h * p->w;
    for (uint32_t c = 0; c < p->c; ++c) {
        const float scale = value_at(p->scale, c), shift = value_at(p->shift, c);
        for (uint32_t i = 0; i < plane; ++i) {
            const float v = in[c * plane + i] * scale + shift;
            out[c * plane + i] = (p->relu && v < 0.0f) ? 0.0f : v;
        }
    }
}

void iotnas_relu(uint32_t n, const float *in, float *out) {
    for (uint32_t i = 0; i < n; ++i) out[i] = in[i] < 0.0f ? 0.0f : in[i];
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

static float max3(const float *row) {
    const float a = row[0] > row[1] ? row[0] : row[1];
    return a > row[2] ? a : row[2];
}

void iotnas_maxpool(const iotnas_pool_t *p, const float *in, float *out) {
    for (uint32_t c = 0; c < p->c; ++c) {
        const float *x = in + c * p->hin * p->win;
        for (uint32_t oy = 0; oy < p->hout; ++oy) {
            uint32_t y0, y1;
            (void)span(oy, p->sh, p->ph, p->kh, p->hin, &y0, &y1);
            float *o = out + (c * p->hout + oy) * p->wout;
            for (uint32_t ox = 0; ox < p->wout; ++ox) {
                uint32_t x0, x1;
                (void)span(ox, p->sw, p->pw, p->kw, p->win, &x0, &x1);
                if (y1 - y0 == 3u && x1 - x0 == 3u) { /* a whole 3x3 window, the common case */
                    const float *r = x + y0 * p->win + x0;
                    const float a = max3(r), b = max3(r + p->win), d = max3(r + 2u * p->win);
                    const float m = a > b ? a : b;
                    o[ox] = m > d ? m : d;
                    continue;
                }
                float m = x[y0 * p->win + x0];
                for (uint32_t y = y0; y < y1; ++y) {
                    const float *row = x + y * p->win;
                    for (uint32_t xx = x0; xx < x1; ++xx) m = row[xx] > m ? row[xx] : m;
                }
                o[ox] = m;
            }
        }
    }
}

void iotnas_avgpool(const iotnas_pool_t *p, const float *in, float *out) {
    for (uint32_t c = 0; c < p->c; ++c) {
        const float *x = in + c * p->hin * p->win;
        for (uint32_t oy = 0; oy < p->hout; ++oy) {
            uint32_t y0, y1;
            const uint32_t rows = span(oy, p->sh, p->ph, p->kh, p->hin, &y0, &y1);
            float *o = out + (c * p->hout + oy) * p->wout;
            for (uint32_t ox = 0; ox < p->wout; ++ox) {
                uint32_t x0, x1;
                const uint32_t cols = span(ox, p->sw, p->pw, p->kw, p->win, &x0, &x1);
                float s = 0.0f;
                for (uint32_t y = y0; y < y1; ++y) {
                    const float *row = x + y * p->win;
                    for (uint32_t xx = x0; xx < x1; ++xx) s += row[xx];
                }
                o[ox] = s / (float)(p->count_pad ? rows * cols : (y1 - y0) * (x1 - x0));
            }
        }
    }
}

void iotnas_add(uint32_t n, const float *a, const float *b, uint32_t relu, float *out) {
    for (uint32_t i = 0; i < n; ++i) {
        const float v = a[i] + b[i];
        out[i] = (relu && v < 0.0f) ? 0.0f : v;
    }
}

void iotnas_copy(uint32_t n, const float *in, float *out) {
    memcpy(out, in, n * sizeof *out);
}

void iotnas_linear(const iotnas_linear_t *p, const float *in, float *out, float *scratch) {
    for (uint32_t o = 0; o < p->out; ++o) {
        iotnas_decode(p->weight.first + o * p->in, p->in, p->weight.scale + o, scratch);
        float s = 0.0f;
        for (uint32_t i = 0; i < p->in; ++i) s += scratch[i] * in[i];
        out[o] = p->bias.present ? s + value_at(p->bias, o) : s;
    }
}
