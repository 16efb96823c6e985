// CPU kernels of the shared training path (embeddings, LM head, optimizer) and of the Llama
// family (RMSNorm, rotary embeddings, SwiGLU; its nn.Linear products are in kernels.c). Fixed reduction orders for a
// given thread count keep training bit-reproducible.
#include "kernels.h"
#include "vec.h"
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define COL_BLOCK 64  // columns per thread when summing over rows (see kernels.c)

void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int N, int C,
                     float eps) {
    #pragma omp parallel for
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C;
        float ss = 0.0f;
        for (int j = 0; j < C; j++) ss += x[j] * x[j];
        float s = 1.0f / sqrtf(ss / C + eps);
        float *o = out + (size_t)i * C;
        for (int j = 0; j < C; j++) o[j] = w[j] * (x[j] * s);
        if (rstd) rstd[i] = s;
    }
}

void rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                      const float *rstd, int N, int C) {
    #pragma omp parallel for
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C, *dy = dout + (size_t)i * C;
        float s = rstd[i], dot = 0.0f;
        for (int j = 0; j < C; j++) dot += w[j] * dy[j] * x[j] * s;
        dot /= C;
        float *dx = dinp + (size_t)i * C;
        for (int j = 0; j < C; j++) dx[j] += (w[j] * dy[j] - x[j] * s * dot) * s;
    }
    int nblocks = (C + COL_BLOCK - 1) / COL_BLOCK;
    #pragma omp parallel for
    for (int blk = 0; blk < nblocks; blk++) {
        int j0 = blk * COL_BLOCK, j1 = j0 + COL_BLOCK < C ? j0 + COL_BLOCK : C;
        float aw[COL_BLOCK] = {0};
        for (int i = 0; i < N; i++) {
            const float *x = inp + (size_t)i * C, *dy = dout + (size_t)i * C;
            for (int j = j0; j < j1; j++) aw[j - j0] += x[j] * rstd[i] * dy[j];
        }
        for (int j = j0; j < j1; j++) dw[j] += aw[j - j0];
    }
}

void rope_tables(float *cos_t, float *sin_t, int P, int hd, float theta, int llama3, float factor,
                 float low_freq_factor, float high_freq_factor, int original_max_pos) {
    int half = hd / 2;
    float *inv = malloc((size_t)half * sizeof(float));
    if (!inv) abort();
    for (int i = 0; i < half; i++) {
        // as transformers: 1 / theta ** (arange(0, hd, 2).float() / hd), all in fp32
        inv[i] = 1.0f / powf(theta, (float)(2 * i) / (float)hd);
        if (llama3) {
            float old = (float)original_max_pos, wavelen = 2.0f * (float)M_PI / inv[i];
            float lo_wavelen = old / low_freq_factor, hi_wavelen = old / high_freq_factor;
            float scaled = wavelen > lo_wavelen ? inv[i] / factor : inv[i];
            if (!(wavelen < hi_wavelen) && !(wavelen > lo_wavelen)) {
                float smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                scaled = (1.0f - smooth) * scaled / factor + smooth * scaled;
            }
            inv[i] = scaled;
        }
    }
    for (int p = 0; p < P; p++)
        for (int i = 0; i < half; i++) {
            float f = (float)p * inv[i];
            cos_t[(size_t)p * half + i] = cosf(f);
            sin_t[(size_t)p * half + i] = sinf(f);
        }
    free(inv);
}

// sign = 1: forward rotation; -1: its inverse (the transpose), for gradients.
static void rope_rotate(float *x, int ld, const int *pos, const float *cos_t, const float *sin_t,
                        int N, int nheads, int hd, float sign) {
    int half = hd / 2;
    #pragma omp parallel for
    for (int r = 0; r < N; r++) {
        const float *c = cos_t + (size_t)pos[r] * half, *s = sin_t + (size_t)pos[r] * half;
        for (int h = 0; h < nheads; h++) {
            float *v = x + (size_t)r * ld + (size_t)h * hd;
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half], si = sign * s[i];
                v[i] = a * c[i] - b * si;
                v[i + half] = b * c[i] + a * si;
            }
        }
    }
}

void rope_forward(float *x, int ld, const int *pos, const float *cos_t, const float *sin_t, int N,
                  int nheads, int hd) {
    rope_rotate(x, ld, pos, cos_t, sin_t, N, nheads, hd, 1.0f);
}

void rope_backward(float *dx, int ld, const int *pos, const float *cos_t, const float *sin_t,
                   int N, int nheads, int hd) {
    rope_rotate(dx, ld, pos, cos_t, sin_t, N, nheads, hd, -1.0f);
}

static inline float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

void swiglu_forward(float *out, const float *gate, const float *up, size_t n) {
    #pragma omp parallel for simd
    for (size_t i = 0; i < n; i++) out[i] = gate[i] * sigmoid(gate[i]) * up[i];
}

void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                     const float *up, size_t n) {
    #pragma omp parallel for simd
    for (size_t i = 0; i < n; i++) {
        float g = gate[i], sg = sigmoid(g);
        dgate[i] = dout[i] * up[i] * sg * (1.0f + g * (1.0f - sg));
        dup[i] = dout[i] * g * sg;
    }
}

void encoder_forward(float *out, const int *tokens, const int *pos, const float *wte,
                     const float *wpe, int N, int C) {
    #pragma omp parallel for
    for (int i = 0; i < N; i++) {
        const float *e = wte + (size_t)tokens[i] * C;
        float *o = out + (size_t)i * C;
        if (wpe) {
            const float *p = wpe + (size_t)pos[i] * C;
            for (int j = 0; j < C; j++) o[j] = e[j] + p[j];
        } else {
            memcpy(o, e, (size_t)C * sizeof(float));
        }
    }
}

void encoder_backward(float *dwte, float *dwpe, const float *dout, const int *tokens,
                      const int *pos, int N, int C) {
    // threads split the C columns (repeated ids never race), tokens in order
    #pragma omp parallel for
    for (int j0 = 0; j0 < C; j0 += 64) {
        int j1 = j0 + 64 < C ? j0 + 64 : C;
        for (int i = 0; i < N; i++) {
            const float *d = dout + (size_t)i * C;
            float *ge = dwte + (size_t)tokens[i] * C;
            if (dwpe) {
                float *gp = dwpe + (size_t)pos[i] * C;
                for (int j = j0; j < j1; j++) { ge[j] += d[j]; gp[j] += d[j]; }
            } else {
                for (int j = j0; j < j1; j++) ge[j] += d[j];
            }
        }
    }
}

// rows [n, V] of logits -> probabilities in place; returns log p(target) per row in lp.
static void softmax_rows(float *x, const int *tgt, float *lp, int n, int V) {
    #pragma omp parallel for
    for (int r = 0; r < n; r++) {
        float *row = x + (size_t)r * V;
        float mx = row[0], logit = row[tgt[r]];
        for (int v = 1; v < V; v++) if (row[v] > mx) mx = row[v];
        double sum = 0.0;
        for (int v = 0; v < V; v++) { float e = expf(row[v] - mx); row[v] = e; sum += e; }
        float inv = (float)(1.0 / sum);
        // from the logit, not from its exp: stays finite when p(target) underflows a float
        lp[r] = (float)((double)(logit - mx) - log(sum));
        for (int v = 0; v < V; v++) row[v] *= inv;
    }
}

void head_forward(float *x, float *probs, float *lp, const float *hidden, const int *rows,
                  const int *tgt, const float *w, int n, int C, int V) {
    #pragma omp parallel for
    for (int r = 0; r < n; r++)
        memcpy(x + (size_t)r * C, hidden + (size_t)rows[r] * C, (size_t)C * sizeof(float));
    if (!n) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, V, C, 1.0f, x, C, w, C, 0.0f, probs, V);
    softmax_rows(probs, tgt, lp, n, V);
}

void head_backward(float *dhidden, float *dw, float *probs, float *dx, const float *x,
                   const int *rows, const int *tgt, const int *slot, const float *dlogp,
                   const float *w, int n, int N, int C, int V) {
    // d logp(target)/d logits = onehot - softmax, scaled by the sequence's dlogp
    #pragma omp parallel for
    for (int r = 0; r < n; r++) {
        float d = dlogp[slot[r]], *row = probs + (size_t)r * V;
        for (int v = 0; v < V; v++) row[v] *= -d;
        row[tgt[r]] += d;
    }
    if (n) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, C, V, 1.0f, probs, V, w, C, 0.0f,
                    dx, C);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, V, C, n, 1.0f, probs, V, x, C, 1.0f,
                    dw, C);
    }
    // scatter-add into the full [N, C] gradient (zero at unscored positions; a pair's last
    // prompt token is scored twice), rows in order: deterministic
    memset(dhidden, 0, (size_t)N * C * sizeof(float));
    for (int r = 0; r < n; r++) {
        float *d = dhidden + (size_t)rows[r] * C;
        const float *s = dx + (size_t)r * C;
        for (int j = 0; j < C; j++) d[j] += s[j];
    }
}

void logits_forward(float *logits, const float *hidden, const float *w, int N, int C, int V) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, V, C, 1.0f, hidden, C, w, C, 0.0f,
                logits, V);
}

// Fixed chunking makes the norm's summation order independent of the thread count.
#define NORM_CHUNKS 256

double sum_squares(const float *g, size_t n) {
    double part[NORM_CHUNKS];
    size_t chunk = (n + NORM_CHUNKS - 1) / NORM_CHUNKS;
    #pragma omp parallel for
    for (int c = 0; c < NORM_CHUNKS; c++) {
        size_t lo = c * chunk, hi = lo + chunk < n ? lo + chunk : n;
        double s = 0.0;
        for (size_t i = lo; i < hi; i++) s += (double)g[i] * g[i];
        part[c] = s;
    }
    double total = 0.0;
    for (int c = 0; c < NORM_CHUNKS; c++) total += part[c];
    return total;
}

void scale_inplace(float *x, size_t n, float coef) {
    #pragma omp parallel for
    for (size_t i = 0; i < n; i++) x[i] *= coef;
}

void adamw_update(float *p, const float *g, float *m1, float *m2, size_t n, float decay, float b1,
                  float b2, float eps, float step_size, float bc2_sqrt) {
    #pragma omp parallel for
    for (size_t i = 0; i < n; i++) {
        p[i] *= decay;
        m1[i] += (1.0f - b1) * (g[i] - m1[i]);
        m2[i] = b2 * m2[i] + (1.0f - b2) * g[i] * g[i];
        p[i] -= step_size * m1[i] / (sqrtf(m2[i]) / bc2_sqrt + eps);
    }
}
