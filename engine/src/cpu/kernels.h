// CPU layer kernels shared by training (gpt2.c) and generation (generate.c).
// Row-major; N rows of C features. Matrix products go to BLAS (OpenBLAS, OpenMP build).
#pragma once

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
// GPT-2's tanh approximation ("gelu_new").
void gelu_forward(float *out, const float *inp, int n);
void gelu_backward(float *dinp, const float *inp, const float *dout, int n);
void residual_forward(float *out, const float *a, const float *b, int n);
