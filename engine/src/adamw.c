#include "adamw.h"
#include "cpu/kernels.h"
#include <math.h>

float clip_grad_norm(float *grads, size_t n, float max_norm) {
    float norm = (float)sqrt(sum_squares(grads, n));
    if (max_norm > 0.0f) {
        float coef = max_norm / (norm + 1e-6f);
        if (coef < 1.0f) scale_inplace(grads, n, coef);
    }
    return norm;
}

void adamw_step(Model *m, float *mom1, float *mom2, const AdamWConfig *cfg, float lr, long step) {
    // scalars in double, as torch computes them in Python floats
    double bc1 = 1.0 - pow(cfg->beta1, (double)step);
    float bc2_sqrt = (float)sqrt(1.0 - pow(cfg->beta2, (double)step));
    float step_size = (float)(lr / bc1);
    size_t off = 0;
    for (int t = 0; t < m->ntensors; t++) {
        float decay = m->tensor[t].decay ? (float)(1.0 - (double)lr * cfg->weight_decay) : 1.0f;
        adamw_update(m->params + off, m->grads + off, mom1 + off, mom2 + off, m->param_sizes[t],
                     decay, cfg->beta1, cfg->beta2, cfg->eps, step_size, bc2_sqrt);
        off += m->param_sizes[t];
    }
}
