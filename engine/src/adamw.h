// AdamW with PyTorch semantics and global-norm gradient clipping for a model's parameters.
#pragma once
#include "model.h"

typedef struct {
    float beta1, beta2, eps;  // 0.9, 0.999, 1e-8
    float weight_decay;       // decoupled; applied only to 2-D weight matrices
} AdamWConfig;

// Like torch.nn.utils.clip_grad_norm_(params, max_norm): scales the gradients by
// min(1, max_norm / (norm + 1e-6)) and returns the pre-clip global L2 norm. max_norm <= 0 only
// measures. Deterministic for any thread count.
float clip_grad_norm(float *grads, size_t n, float max_norm);

// One torch.optim.AdamW step (step = 1 for the first update) on m->params with m->grads.
// mom1/mom2 are flat arrays of m->num_params floats (zero before the first step). Weight decay
// applies to the tensors the parameter table marks (the HF Trainer's rule: no decay on biases
// and norm weights).
void adamw_step(Model *m, float *mom1, float *mom2, const AdamWConfig *cfg, float lr, long step);
