/* iotnas C kernels (see iotnas_ops.h): the vector kernels for this target's width
 * (iotnas_ops_kernels.h), and the scalar ones. */
#include "iotnas_ops_kernels.h"

void iotnas_input(const uint8_t *image, uint32_t c, uint32_t h, uint32_t w, const float *mean,
                  const float *inv_std, float *out) {
    for (uint32_t ch = 0; ch < c; ++ch)
        for (uint32_t i = 0; i < h * w; ++i)
            out[ch * h * w + i] = ((float)image[i * c + ch] - mean[ch]) * inv_std[ch];
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
