// GPT-2 architecture: parameter layout, HF-style init, training forward/backward (llm.c style).
// Activations for every layer are kept for backward; the LM head runs only on scored positions.
// Inputs are B rows of T tokens with a position id each and an optional branch per row (the
// packed preference pairs of gpt2_forward_pairs); scored rows of the head name their output slot.
#include "gpt2.h"
#include "cpu/kernels.h"
#include "util.h"
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct GPT2Acts {
    int B, T;             // shape of the last forward
    int *tokens, *pos;    // [BT] its input ids and position ids
    int *branch;          // [2B] per row: prompt length S, rejected start R (see kernels.h)
    int has_branch;
    size_t cap_bt, cap_rows, cap_scratch;  // allocated capacities (tokens, head rows, scratch)
    float *encoded;       // [BT, C]
    float *ln1_mean, *ln1_rstd;         // [L, BT]
    float *qkv;           // [L, BT, 3C]
    float *lse;           // [L, B, NH, T] attention log-sum-exp per query
    float *atty;          // [L, BT, C]
    float *resid2;        // [L, BT, C]
    float *ln2_mean, *ln2_rstd;
    float *fch;           // [L, BT, F] MLP hidden state before GELU
    // one layer's LayerNorm and GELU outputs [BT, C], [BT, F]: cheap to recompute in backward,
    // so they are not kept per layer (6 of every 16 floats of activations per token)
    float *ln, *fch_gelu;
    float *resid3;        // [L, BT, C]
    float *lnf, *lnf_mean, *lnf_rstd;  // [BT, C], [BT]
    float *tmp;           // [BT, C] projection output before the residual add
    // backward scratch, reused across layers
    float *dresid, *dln, *datty, *dfch, *dfch_gelu, *dqkv, *att_scratch;
    // LM head on scored rows: row positions (index in BT), targets, output slots, inputs, probs
    int nrows;
    int *row_pos, *row_tgt, *row_slot;
    float *row_x;         // [rows, C]
    float *row_p;         // [rows, V] probabilities, turned into dlogits by backward
    float *row_lp;        // [rows] log p(target)
};

void gpt2_param_sizes(const GPT2Config *c, size_t s[NUM_PARAM_TENSORS]) {
    size_t V = c->vocab_size, P = c->max_seq_len, L = c->n_layer, C = c->n_embd, F = c->n_inner;
    s[P_WTE] = V * C;       s[P_WPE] = P * C;
    s[P_LN1W] = L * C;      s[P_LN1B] = L * C;
    s[P_QKVW] = L * C * 3 * C; s[P_QKVB] = L * 3 * C;
    s[P_ATTPROJW] = L * C * C; s[P_ATTPROJB] = L * C;
    s[P_LN2W] = L * C;      s[P_LN2B] = L * C;
    s[P_FCW] = L * C * F;   s[P_FCB] = L * F;
    s[P_FCPROJW] = L * F * C; s[P_FCPROJB] = L * C;
    s[P_LNFW] = C;          s[P_LNFB] = C;
}

static void point_views(float *base, float *view[NUM_PARAM_TENSORS], const size_t *sizes) {
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) { view[i] = base; base += sizes[i]; }
}

int gpt2_build(GPT2 *m, const GPT2Config *cfg) {
    blas_init();
    memset(m, 0, sizeof(*m));
    m->cfg = *cfg;
    gpt2_param_sizes(cfg, m->param_sizes);
    for (int i = 0; i < NUM_PARAM_TENSORS; i++) m->num_params += m->param_sizes[i];
    m->params = malloc(m->num_params * sizeof(float));
    m->acts = calloc(1, sizeof(GPT2Acts));
    if (!m->params || !m->acts) { gpt2_free(m); return -1; }
    point_views(m->params, m->param, m->param_sizes);
    return 0;
}

int gpt2_alloc_grads(GPT2 *m) {
    if (m->grads) return 0;
    m->grads = calloc(m->num_params, sizeof(float));
    if (!m->grads) return -1;
    point_views(m->grads, m->grad, m->param_sizes);
    return 0;
}

static void free_acts(GPT2Acts *a) {
    float **fs[] = {&a->encoded, &a->ln, &a->ln1_mean, &a->ln1_rstd, &a->qkv, &a->lse, &a->atty,
                    &a->resid2, &a->ln2_mean, &a->ln2_rstd, &a->fch, &a->fch_gelu,
                    &a->resid3, &a->lnf, &a->lnf_mean, &a->lnf_rstd, &a->tmp, &a->dresid, &a->dln,
                    &a->datty, &a->dfch, &a->dfch_gelu, &a->dqkv, &a->att_scratch, &a->row_x,
                    &a->row_p, &a->row_lp};
    for (size_t i = 0; i < sizeof(fs) / sizeof(fs[0]); i++) { free(*fs[i]); *fs[i] = NULL; }
    int **is[] = {&a->row_pos, &a->row_tgt, &a->row_slot, &a->tokens, &a->pos, &a->branch};
    for (size_t i = 0; i < sizeof(is) / sizeof(is[0]); i++) { free(*is[i]); *is[i] = NULL; }
    a->cap_bt = a->cap_rows = a->cap_scratch = 0;
}

void gpt2_free(GPT2 *m) {
    if (m->acts) { free_acts(m->acts); free(m->acts); }
    free(m->params);
    free(m->grads);
    memset(m, 0, sizeof(*m));
}

// Activation buffers grow on demand; the forward has no error path, so running out of memory
// ends the process with the engine's error line (the caller sized the batch from the config).
static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) die(EXIT_IO, "out_of_memory", "model activations: cannot allocate %zu bytes (use a smaller --batch-size)", n);
    return q;
}

// Inputs come from validated data files; a violation here is a caller bug, reported as bad
// input instead of an out-of-bounds read.
static void check_inputs(const GPT2 *m, int B, int T) {
    const GPT2Acts *a = m->acts;
    for (int i = 0; i < B * T; i++) {
        if (a->tokens[i] < 0 || a->tokens[i] >= m->cfg.vocab_size)
            die(EXIT_BAD_INPUT, "token_out_of_range", "model input: token id %d (sequence %d, index %d) is outside [0, %d)",
                a->tokens[i], i / T, i % T, m->cfg.vocab_size);
        if (a->pos[i] >= m->cfg.max_seq_len)
            die(EXIT_BAD_INPUT, "sequence_too_long", "model input: sequence %d needs position %d but n_positions is %d",
                i / T, a->pos[i], m->cfg.max_seq_len);
    }
    for (int r = 0; r < a->nrows; r++)
        if (a->row_tgt[r] < 0 || a->row_tgt[r] >= m->cfg.vocab_size)
            die(EXIT_BAD_INPUT, "token_out_of_range", "model target: token id %d (sequence %d) is outside [0, %d)",
                a->row_tgt[r], a->row_pos[r] / T, m->cfg.vocab_size);
}

static void ensure_acts(GPT2 *m, int B, int T) {
    GPT2Acts *a = m->acts;
    size_t L = m->cfg.n_layer, C = m->cfg.n_embd, F = m->cfg.n_inner, NH = m->cfg.n_head;
    size_t BT = (size_t)B * T, nscratch = attention_scratch_floats(T);
    if (BT > a->cap_bt) {
        #define GROW(f, n) a->f = xrealloc(a->f, (n) * sizeof(float))
        GROW(encoded, BT * C); GROW(ln, BT * C); GROW(ln1_mean, L * BT); GROW(ln1_rstd, L * BT);
        GROW(qkv, L * BT * 3 * C); GROW(lse, L * BT * NH); GROW(atty, L * BT * C); GROW(resid2, L * BT * C);
        GROW(ln2_mean, L * BT); GROW(ln2_rstd, L * BT);
        GROW(fch, L * BT * F); GROW(fch_gelu, BT * F); GROW(resid3, L * BT * C);
        GROW(lnf, BT * C); GROW(lnf_mean, BT); GROW(lnf_rstd, BT); GROW(tmp, BT * C);
        GROW(dresid, BT * C); GROW(dln, BT * C); GROW(datty, BT * C); GROW(dfch, BT * F);
        GROW(dfch_gelu, BT * F); GROW(dqkv, BT * 3 * C);
        a->tokens = xrealloc(a->tokens, BT * sizeof(int));
        a->pos = xrealloc(a->pos, BT * sizeof(int));
        a->branch = xrealloc(a->branch, 2 * BT * sizeof(int));  // B <= BT
        a->cap_bt = BT;
    }
    if (nscratch > a->cap_scratch) { GROW(att_scratch, nscratch); a->cap_scratch = nscratch; }
    #undef GROW
    a->B = B; a->T = T;
}

static void ensure_rows(GPT2 *m, size_t rows) {
    GPT2Acts *a = m->acts;
    if (rows <= a->cap_rows) return;
    a->row_pos = xrealloc(a->row_pos, rows * sizeof(int));
    a->row_tgt = xrealloc(a->row_tgt, rows * sizeof(int));
    a->row_slot = xrealloc(a->row_slot, rows * sizeof(int));
    a->row_x = xrealloc(a->row_x, rows * m->cfg.n_embd * sizeof(float));
    a->row_p = xrealloc(a->row_p, rows * m->cfg.vocab_size * sizeof(float));
    a->row_lp = xrealloc(a->row_lp, rows * sizeof(float));
    a->cap_rows = rows;
}

// splitmix64 + Box-Muller: a tiny, portable, seedable normal generator for the init.
static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static double uniform01(uint64_t *s) { return ((splitmix64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
static void fill_normal(float *x, size_t n, float std, uint64_t *s) {
    for (size_t i = 0; i < n; i += 2) {
        double r = sqrt(-2.0 * log(uniform01(s))), th = 2.0 * M_PI * uniform01(s);
        x[i] = (float)(r * cos(th)) * std;
        if (i + 1 < n) x[i + 1] = (float)(r * sin(th)) * std;
    }
}

void gpt2_init_random(GPT2 *m, uint64_t seed) {
    uint64_t s = seed;
    float std = 0.02f, proj_std = 0.02f / sqrtf(2.0f * m->cfg.n_layer);
    for (int t = 0; t < NUM_PARAM_TENSORS; t++) {
        float *p = m->param[t];
        size_t n = m->param_sizes[t];
        switch (t) {
        case P_WTE: case P_WPE: case P_QKVW: case P_FCW: fill_normal(p, n, std, &s); break;
        case P_ATTPROJW: case P_FCPROJW: fill_normal(p, n, proj_std, &s); break;
        case P_LN1W: case P_LN2W: case P_LNFW: for (size_t i = 0; i < n; i++) p[i] = 1.0f; break;
        default: memset(p, 0, n * sizeof(float)); break;  // biases
        }
    }
}

// Embeddings + transformer blocks + final LayerNorm into acts->lnf, for the B x T inputs the
// caller placed in acts (tokens, pos, branch) after ensure_acts.
static void forward_body(GPT2 *m) {
    GPT2Acts *a = m->acts;
    int B = a->B, T = a->T;
    check_inputs(m, B, T);
    const int *branch = a->has_branch ? a->branch : NULL;
    int C = m->cfg.n_embd, F = m->cfg.n_inner, NH = m->cfg.n_head, L = m->cfg.n_layer;
    int BT = B * T;
    const float *wte = m->param[P_WTE], *wpe = m->param[P_WPE];
    #pragma omp parallel for
    for (int i = 0; i < BT; i++) {
        const float *e = wte + (size_t)a->tokens[i] * C, *p = wpe + (size_t)a->pos[i] * C;
        float *o = a->encoded + (size_t)i * C;
        for (int j = 0; j < C; j++) o[j] = e[j] + p[j];
    }
    for (int l = 0; l < L; l++) {
        const float *res = l == 0 ? a->encoded : a->resid3 + (size_t)(l - 1) * BT * C;
        float *qkv = a->qkv + (size_t)l * BT * 3 * C;
        float *atty = a->atty + (size_t)l * BT * C, *lse = a->lse + (size_t)l * BT * NH;
        float *resid2 = a->resid2 + (size_t)l * BT * C, *fch = a->fch + (size_t)l * BT * F;
        float *resid3 = a->resid3 + (size_t)l * BT * C;
        layernorm_forward(a->ln, a->ln1_mean + (size_t)l * BT, a->ln1_rstd + (size_t)l * BT, res,
                          m->param[P_LN1W] + l * C, m->param[P_LN1B] + l * C, BT, C, m->cfg.ln_eps);
        matmul_forward(qkv, a->ln, m->param[P_QKVW] + (size_t)l * C * 3 * C,
                       m->param[P_QKVB] + l * 3 * C, BT, C, 3 * C);
        attention_forward(atty, lse, qkv, a->att_scratch, branch, B, T, C, NH);
        matmul_forward(a->tmp, atty, m->param[P_ATTPROJW] + (size_t)l * C * C,
                       m->param[P_ATTPROJB] + l * C, BT, C, C);
        residual_forward(resid2, res, a->tmp, BT * C);
        layernorm_forward(a->ln, a->ln2_mean + (size_t)l * BT, a->ln2_rstd + (size_t)l * BT, resid2,
                          m->param[P_LN2W] + l * C, m->param[P_LN2B] + l * C, BT, C, m->cfg.ln_eps);
        matmul_forward(fch, a->ln, m->param[P_FCW] + (size_t)l * C * F, m->param[P_FCB] + l * F,
                       BT, C, F);
        gelu_forward(a->fch_gelu, fch, BT * F);
        matmul_forward(a->tmp, a->fch_gelu, m->param[P_FCPROJW] + (size_t)l * F * C,
                       m->param[P_FCPROJB] + l * C, BT, F, C);
        residual_forward(resid3, resid2, a->tmp, BT * C);
    }
    layernorm_forward(a->lnf, a->lnf_mean, a->lnf_rstd, a->resid3 + (size_t)(L - 1) * BT * C,
                      m->param[P_LNFW], m->param[P_LNFB], BT, C, m->cfg.ln_eps);
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

// LM head on the a->nrows scored rows (row_pos/row_tgt/row_slot set by the caller): log p of
// each target, summed per output slot in row order (fixed order: deterministic sums).
static void head_forward(GPT2 *m, int nslots, float *logp_sum, int *ntok) {
    GPT2Acts *a = m->acts;
    int C = m->cfg.n_embd, V = m->cfg.vocab_size, n = a->nrows;
    #pragma omp parallel for
    for (int r = 0; r < n; r++)
        memcpy(a->row_x + (size_t)r * C, a->lnf + (size_t)a->row_pos[r] * C, C * sizeof(float));
    if (n) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, V, C, 1.0f, a->row_x, C,
                    m->param[P_WTE], C, 0.0f, a->row_p, V);
        softmax_rows(a->row_p, a->row_tgt, a->row_lp, n, V);
    }
    double *sum = xrealloc(NULL, (size_t)nslots * sizeof(double));
    for (int b = 0; b < nslots; b++) sum[b] = 0.0;
    for (int b = 0; b < nslots; b++) ntok[b] = 0;
    for (int r = 0; r < n; r++) { sum[a->row_slot[r]] += a->row_lp[r]; ntok[a->row_slot[r]]++; }
    for (int b = 0; b < nslots; b++) logp_sum[b] = (float)sum[b];
    free(sum);
}

void gpt2_forward(GPT2 *m, const int *tokens, const int *targets, int B, int T,
                  float *logp_sum, int *ntok) {
    ensure_acts(m, B, T);
    GPT2Acts *a = m->acts;
    int BT = B * T, n = 0;
    memcpy(a->tokens, tokens, (size_t)BT * sizeof(int));
    for (int i = 0; i < BT; i++) a->pos[i] = i % T;
    a->has_branch = 0;
    for (int i = 0; i < BT; i++) n += targets[i] >= 0;
    ensure_rows(m, n);
    n = 0;
    for (int i = 0; i < BT; i++) {
        if (targets[i] < 0) continue;
        a->row_pos[n] = i; a->row_tgt[n] = targets[i]; a->row_slot[n] = i / T;
        n++;
    }
    a->nrows = n;
    forward_body(m);
    head_forward(m, B, logp_sum, ntok);
}

void gpt2_forward_pairs(GPT2 *m, const GPT2Pair *pairs, int n, float *logp_sum, int *ntok) {
    int T = 1, rows = 0;
    for (int b = 0; b < n; b++) {
        const GPT2Pair *p = &pairs[b];
        int len = p->prompt_len + p->chosen_len + p->rejected_len - 2;
        if (len > T) T = len;
        rows += p->chosen_len + p->rejected_len;
    }
    ensure_acts(m, n, T);
    ensure_rows(m, rows);
    GPT2Acts *a = m->acts;
    a->has_branch = 1;
    int r = 0;
    for (int b = 0; b < n; b++) {
        const GPT2Pair *p = &pairs[b];
        int S = p->prompt_len, R = S + p->chosen_len - 1, len = R + p->rejected_len - 1;
        int *tok = a->tokens + (size_t)b * T, *pos = a->pos + (size_t)b * T;
        a->branch[2 * b] = S;
        a->branch[2 * b + 1] = R;
        for (int t = 0; t < T; t++) {
            if (t < S) { tok[t] = (int)p->prompt[t]; pos[t] = t; }
            else if (t < R) { tok[t] = (int)p->chosen[t - S]; pos[t] = t; }
            else if (t < len) { tok[t] = (int)p->rejected[t - R]; pos[t] = S + t - R; }
            else { tok[t] = 0; pos[t] = 0; }  // padding: never seen by real tokens
        }
        // the last prompt token predicts the first token of both responses
        for (int k = 0; k < p->chosen_len; k++, r++) {
            a->row_pos[r] = b * T + (k == 0 ? S - 1 : S + k - 1);
            a->row_tgt[r] = (int)p->chosen[k];
            a->row_slot[r] = 2 * b;
        }
        for (int k = 0; k < p->rejected_len; k++, r++) {
            a->row_pos[r] = b * T + (k == 0 ? S - 1 : R + k - 1);
            a->row_tgt[r] = (int)p->rejected[k];
            a->row_slot[r] = 2 * b + 1;
        }
    }
    a->nrows = rows;
    forward_body(m);
    head_forward(m, 2 * n, logp_sum, ntok);
}

void gpt2_zero_grad(GPT2 *m) {
    if (m->grads) memset(m->grads, 0, m->num_params * sizeof(float));
}

void gpt2_backward(GPT2 *m, const float *dlogp) {
    GPT2Acts *a = m->acts;
    int B = a->B, T = a->T, BT = B * T, n = a->nrows;
    int C = m->cfg.n_embd, F = m->cfg.n_inner, NH = m->cfg.n_head, L = m->cfg.n_layer;
    int V = m->cfg.vocab_size;
    float **g = m->grad, **p = m->param;

    // LM head: d logp(target)/d logits = onehot - softmax, scaled by the sequence's dlogp.
    #pragma omp parallel for
    for (int r = 0; r < n; r++) {
        float d = dlogp[a->row_slot[r]], *row = a->row_p + (size_t)r * V;
        for (int v = 0; v < V; v++) row[v] *= -d;
        row[a->row_tgt[r]] += d;
    }
    float *dx = a->dln;  // [n, C] gradient of the gathered lnf rows
    memset(a->dresid, 0, (size_t)BT * C * sizeof(float));
    if (n) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, C, V, 1.0f, a->row_p, V,
                    p[P_WTE], C, 0.0f, dx, C);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, V, C, n, 1.0f, a->row_p, V,
                    a->row_x, C, 1.0f, g[P_WTE], C);
    }
    // scatter-add into a full [BT, C] gradient of lnf (zero at unscored positions; a pair's
    // last prompt token is scored twice), rows in order: deterministic
    memset(a->tmp, 0, (size_t)BT * C * sizeof(float));
    for (int r = 0; r < n; r++) {
        float *d = a->tmp + (size_t)a->row_pos[r] * C;
        const float *s = dx + (size_t)r * C;
        for (int j = 0; j < C; j++) d[j] += s[j];
    }
    layernorm_backward(a->dresid, g[P_LNFW], g[P_LNFB], a->tmp,
                       a->resid3 + (size_t)(L - 1) * BT * C, p[P_LNFW], a->lnf_mean, a->lnf_rstd,
                       BT, C);

    // dresid holds d(block output); each block adds its branch gradients into it in place.
    for (int l = L - 1; l >= 0; l--) {
        const float *res = l == 0 ? a->encoded : a->resid3 + (size_t)(l - 1) * BT * C;
        size_t o = (size_t)l * BT;
        const float *resid2 = a->resid2 + o * C;
        memset(a->dfch_gelu, 0, (size_t)BT * F * sizeof(float));
        gelu_forward(a->fch_gelu, a->fch + o * F, BT * F);
        matmul_backward(a->dfch_gelu, g[P_FCPROJW] + (size_t)l * F * C, g[P_FCPROJB] + l * C,
                        a->dresid, a->fch_gelu, p[P_FCPROJW] + (size_t)l * F * C, BT, F, C);
        gelu_backward(a->dfch, a->fch + o * F, a->dfch_gelu, BT * F);
        memset(a->dln, 0, (size_t)BT * C * sizeof(float));
        layernorm_forward(a->ln, NULL, NULL, resid2, p[P_LN2W] + l * C, p[P_LN2B] + l * C, BT, C,
                          m->cfg.ln_eps);
        matmul_backward(a->dln, g[P_FCW] + (size_t)l * C * F, g[P_FCB] + l * F, a->dfch,
                        a->ln, p[P_FCW] + (size_t)l * C * F, BT, C, F);
        layernorm_backward(a->dresid, g[P_LN2W] + l * C, g[P_LN2B] + l * C, a->dln,
                           resid2, p[P_LN2W] + l * C, a->ln2_mean + o, a->ln2_rstd + o,
                           BT, C);
        memset(a->datty, 0, (size_t)BT * C * sizeof(float));
        matmul_backward(a->datty, g[P_ATTPROJW] + (size_t)l * C * C, g[P_ATTPROJB] + l * C,
                        a->dresid, a->atty + o * C, p[P_ATTPROJW] + (size_t)l * C * C, BT, C, C);
        memset(a->dqkv, 0, (size_t)BT * 3 * C * sizeof(float));
        attention_backward(a->dqkv, a->datty, a->qkv + o * 3 * C, a->lse + o * NH,
                           a->att_scratch, a->has_branch ? a->branch : NULL, B, T, C, NH);
        memset(a->dln, 0, (size_t)BT * C * sizeof(float));
        layernorm_forward(a->ln, NULL, NULL, res, p[P_LN1W] + l * C, p[P_LN1B] + l * C, BT, C,
                          m->cfg.ln_eps);
        matmul_backward(a->dln, g[P_QKVW] + (size_t)l * C * 3 * C, g[P_QKVB] + l * 3 * C, a->dqkv,
                        a->ln, p[P_QKVW] + (size_t)l * C * 3 * C, BT, C, 3 * C);
        layernorm_backward(a->dresid, g[P_LN1W] + l * C, g[P_LN1B] + l * C, a->dln, res,
                           p[P_LN1W] + l * C, a->ln1_mean + o, a->ln1_rstd + o, BT, C);
    }
    // embeddings: threads split the C columns (repeated ids never race), tokens in order
    #pragma omp parallel for
    for (int j0 = 0; j0 < C; j0 += 64) {
        int j1 = j0 + 64 < C ? j0 + 64 : C;
        for (int i = 0; i < BT; i++) {
            const float *d = a->dresid + (size_t)i * C;
            float *ge = g[P_WTE] + (size_t)a->tokens[i] * C, *gp = g[P_WPE] + (size_t)a->pos[i] * C;
            for (int j = j0; j < j1; j++) { ge[j] += d[j]; gp[j] += d[j]; }
        }
    }
}

void gpt2_logits(GPT2 *m, const int *tokens, int B, int T, float *logits) {
    ensure_acts(m, B, T);
    memcpy(m->acts->tokens, tokens, (size_t)B * T * sizeof(int));
    for (int i = 0; i < B * T; i++) m->acts->pos[i] = i % T;
    m->acts->has_branch = 0;
    m->acts->nrows = 0;  // no head rows: a backward after this would be meaningless
    forward_body(m);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B * T, m->cfg.vocab_size, m->cfg.n_embd,
                1.0f, m->acts->lnf, m->cfg.n_embd, m->param[P_WTE], m->cfg.n_embd, 0.0f, logits,
                m->cfg.vocab_size);
}
