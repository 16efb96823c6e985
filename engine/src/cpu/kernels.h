// CPU layer kernels shared by training (gpt2.c) and generation (generate.c).
// Row-major; N rows of C features. Matrix products go to BLAS (OpenBLAS, OpenMP build).
#pragma once
#include <stddef.h>

// Selects the BLAS's fastest kernels for this CPU where its own detection falls short (see
// kernels.c); called once by gpt2_build, before any product. Returns the BLAS core name in use.
const char *blas_init(void);
// out[N,OUT] = inp[N,IN] @ w[IN,OUT] + bias[OUT] (bias may be NULL). HF Conv1D layout.
void matmul_forward(float *out, const float *inp, const float *w, const float *bias,
                    int N, int IN, int OUT);
// dinp[N,IN] += dout @ w^T ; dw[IN,OUT] += inp^T @ dout ; dbias[OUT] += colsum(dout).
// Any of dinp, dw, dbias may be NULL to skip it.
void matmul_backward(float *dinp, float *dw, float *dbias, const float *dout,
                     const float *inp, const float *w, int N, int IN, int OUT);
// mean/rstd [N] may be NULL (inference).
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *w, const float *b, int N, int C, float eps);
void layernorm_backward(float *dinp, float *dw, float *db, const float *dout,
                        const float *inp, const float *w, const float *mean,
                        const float *rstd, int N, int C);
// layernorm_backward: dinp += ..., dw += ..., db += ... (mean/rstd from the forward).
// GPT-2's tanh approximation ("gelu_new"). gelu_backward writes dinp (=, not +=).
void gelu_forward(float *out, const float *inp, int n);
void gelu_backward(float *dinp, const float *inp, const float *dout, int n);
void residual_forward(float *out, const float *a, const float *b, int n);
// Causal self-attention over B sequences of T tokens. qkv [B,T,3C] holds q|k|v per token
// (HF c_attn output), heads are contiguous hs = C/NH slices. out [B,T,C] (=); lse [B,NH,T]
// receives each query's log-sum-exp for backward, which recomputes the probabilities.
// branch: NULL (plain causal) or [2B] pairs (S, R): on row b, tokens at i >= R form a second
// branch that sees the first S tokens (the shared prompt) and [R, i], not [S, R).
// scratch: attention_scratch_floats(T) floats.
size_t attention_scratch_floats(int T);
void attention_forward(float *out, float *lse, const float *qkv, float *scratch,
                       const int *branch, int B, int T, int C, int NH);
// dqkv [B,T,3C] += gradient for dout, from the forward's qkv and lse.
void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *lse,
                        float *scratch, const int *branch, int B, int T, int C, int NH);
