#include "adamw.h"
#include <math.h>

// Fixed chunking makes the norm's summation order independent of the thread count.
#define NORM_CHUNKS 256

float clip_grad_norm(float *grads, size_t n, float max_norm) {
    double part[NORM_CHUNKS];
    size_t chunk = (n + NORM_CHUNKS - 1) / NORM_CHUNKS;
    #pragma omp parallel for
    for (int c = 0; c < NORM_CHUNKS; c++) {
        size_t lo = c * chunk, hi = lo + chunk < n ? lo + chunk : n;
        double s = 0.0;
        for (size_t i = lo; i < hi; i++) s += (double)grads[i] * grads[i];
        part[c] = s;
    }
    double total = 0.0;
    for (int c = 0; c < NORM_CHUNKS; c++) total += part[c];
    float norm = (float)sqrt(total);
    if (max_norm > 0.0f) {
        float coef = max_norm / (norm + 1e-6f);
        if (coef < 1.0f) {
            #pragma omp parallel for
            for (size_t i = 0; i < n; i++) grads[i] *= coef;
        }
    }
    return norm;
}

static int decays(int t) {
    return t == P_WTE || t == P_WPE || t == P_QKVW || t == P_ATTPROJW || t == P_FCW ||
           t == P_FCPROJW;
}

void adamw_step(GPT2 *m, float *mom1, float *mom2, const AdamWConfig *cfg, float lr, long step) {
    float b1 = cfg->beta1, b2 = cfg->beta2, eps = cfg->eps;
    // scalars in double, as torch computes them in Python floats
    double bc1 = 1.0 - pow(b1, (double)step);
    float bc2_sqrt = (float)sqrt(1.0 - pow(b2, (double)step));
    float step_size = (float)(lr / bc1);
    size_t off = 0;
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        size_t n = m->param_sizes[t];
        float decay = decays(t) ? (float)(1.0 - (double)lr * cfg->weight_decay) : 1.0f;
        float *p = m->params + off, *g = m->grads + off, *m1 = mom1 + off, *m2 = mom2 + off;
        #pragma omp parallel for
        for (size_t i = 0; i < n; i++) {
            p[i] *= decay;
            m1[i] += (1.0f - b1) * (g[i] - m1[i]);
            m2[i] = b2 * m2[i] + (1.0f - b2) * g[i] * g[i];
            p[i] -= step_size * m1[i] / (sqrtf(m2[i]) / bc2_sqrt + eps);
        }
        off += n;
    }
}
