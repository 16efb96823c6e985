// CPU layer kernels shared by training (model.c, gpt2.c, llama.c, adamw.c) and generation.
// Row-major; N rows of C features. Matrix products go to BLAS (OpenBLAS, OpenMP build). A device
// backend (cuda/) implements the same interface.
#pragma once
#include <stddef.h>

// Selects the BLAS's fastest kernels for this CPU where its own detection falls short (see
// kernels.c); called once by model_build, before any product. Returns the BLAS core name in use.
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
// out[N,OUT] (row stride ldo) = inp[N,IN] @ w^T + bias for nn.Linear weights w[OUT,IN].
void matmul_nt_forward(float *out, int ldo, const float *inp, const float *w, const float *bias,
                       int N, int IN, int OUT);
// dinp[N,IN] += dout @ w ; dw[OUT,IN] += dout^T @ inp ; dbias += colsum(dout) (dout stride
// ldd). Any of dinp, dw, dbias may be NULL.
void matmul_nt_backward(float *dinp, float *dw, float *dbias, const float *dout, int ldd,
                        const float *inp, const float *w, int N, int IN, int OUT);
// RMSNorm in fp32: out = w * x * rstd, rstd = 1/sqrt(mean(x^2) + eps); rstd [N] may be NULL.
void rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int N, int C,
                     float eps);
// dinp += ..., dw += ... (rstd from the forward).
void rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w,
                      const float *rstd, int N, int C);
// Rotary embedding tables in Hugging Face's rotate-half layout: cos/sin [P, hd/2] for positions
// [0, P), inv_freq = theta^(-2i/hd) in fp32, rescaled per Llama 3's rope_scaling when llama3.
void rope_tables(float *cos_t, float *sin_t, int P, int hd, float theta, int llama3, float factor,
                 float low_freq_factor, float high_freq_factor, int original_max_pos);
// Rotates nheads heads of hd features per row in place (row stride ld) at position pos[row]:
// dims [0, hd/2) pair with [hd/2, hd). rope_backward applies the inverse rotation to gradients.
void rope_forward(float *x, int ld, const int *pos, const float *cos_t, const float *sin_t, int N,
                  int nheads, int hd);
void rope_backward(float *dx, int ld, const int *pos, const float *cos_t, const float *sin_t,
                   int N, int nheads, int hd);
// SwiGLU: out = silu(gate) * up. Backward writes (=) dgate and dup.
void swiglu_forward(float *out, const float *gate, const float *up, size_t n);
void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                     const float *up, size_t n);
// Token (+ position, when wpe is not NULL) embeddings: out[i] = wte[tokens[i]] + wpe[pos[i]].
void encoder_forward(float *out, const int *tokens, const int *pos, const float *wte,
                     const float *wpe, int N, int C);
// dwte[tokens[i]] += dout[i], dwpe[pos[i]] += dout[i] (dwpe may be NULL); deterministic.
void encoder_backward(float *dwte, float *dwpe, const float *dout, const int *tokens,
                      const int *pos, int N, int C);
// LM head on n gathered rows: x[r] = hidden[rows[r]]; probs[n,V] = softmax(x @ w^T) for the head
// weight w[V,C]; lp[r] = log p(tgt[r]) (from the logit, finite when p underflows).
void head_forward(float *x, float *probs, float *lp, const float *hidden, const int *rows,
                  const int *tgt, const float *w, int n, int C, int V);
// Turns probs into dlogits (scaled by dlogp[slot[r]]), then dhidden[rows[r]] += dlogits @ w
// (rows in order: deterministic; dhidden zeroed here first, N rows) and dw += dlogits^T @ x.
// dx [n, C] is scratch.
void head_backward(float *dhidden, float *dw, float *probs, float *dx, const float *x,
                   const int *rows, const int *tgt, const int *slot, const float *dlogp,
                   const float *w, int n, int N, int C, int V);
// logits[N,V] = hidden[N,C] @ w^T (full logits for analysis).
void logits_forward(float *logits, const float *hidden, const float *w, int N, int C, int V);
// Sum of squares of g[n] in double, summed in a fixed chunking (thread-count independent).
double sum_squares(const float *g, size_t n);
void scale_inplace(float *x, size_t n, float coef);
// One torch.optim.AdamW update of n parameters: p *= decay; moments; p -= step_size * m1 /
// (sqrt(m2) / bc2_sqrt + eps).
void adamw_update(float *p, const float *g, float *m1, float *m2, size_t n, float decay, float b1,
                  float b2, float eps, float step_size, float bc2_sqrt);

// Causal self-attention with grouped-query heads over B rows of T tokens. A qkv row holds NH
// query heads, then KVH key heads, then KVH value heads, hd floats each (HF GPT-2's c_attn
// output when KVH = NH); query head h reads key/value head h / (NH / KVH). out [B,T,NH*hd] (=);
// lse [B,NH,T] receives each query's log-sum-exp for backward, which recomputes the
// probabilities. window > 0: a query at position p sees keys at positions > p - window only.
// branch: NULL (plain causal) or [2B] pairs (S, R): on row b, tokens at i >= R form a second
// branch at positions S + i - R that sees the first S tokens (the shared prompt) and [R, i],
// not [S, R). scratch: attention_scratch_floats(T) floats.
typedef struct { int B, T, NH, KVH, hd, window; } AttnDims;
size_t attention_scratch_floats(int T);
void attention_forward(float *out, float *lse, const float *qkv, float *scratch,
                       const int *branch, const AttnDims *d);
// dqkv += gradient for dout, from the forward's qkv and lse.
void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *lse,
                        float *scratch, const int *branch, const AttnDims *d);

// KV caches of generation, one per sequence, all layers: per layer the keys
// [KVH][cap/16][hd][16] (16 positions transposed per block: one head's scores for 16 positions
// are 16-lane products over contiguous memory), then the values [cap][KVH*hd]. cap is a
// multiple of 16.
size_t kvcache_floats(int cap, int L, int KVH, int hd);
// A cache of new_cap positions holding the first len positions of old (old_cap; may be NULL);
// NULL when out of memory.
float *kvcache_grow(const float *old, int old_cap, int len, int new_cap, int L, int KVH, int hd);
void kvcache_store(float *cache, int cap, int l, int pos, const float *k, const float *v, int KVH,
                   int hd);
// Rows of one step: row r's query heads q[r] (row stride ldq) attend its cache (cache[r],
// cap[r]) at positions [max(0, pos[r] - window + 1), pos[r]] of layer l; out [n, NH*hd].
// scratch: nthreads * kvcache_scratch_floats(P).
size_t kvcache_scratch_floats(int P);
void kvcache_attend(float *out, const float *q, int ldq, float *const *cache, const int *cap,
                    const int *pos, int n, int l, int NH, int KVH, int hd, int window,
                    float *scratch, size_t scratch_stride);
