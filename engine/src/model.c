// The architecture-independent half of a model: config dispatch and validation, the flat
// parameter table, token batches (plain and shared-prompt pairs) and the LM head on scored rows.
#include "model.h"
#include "cpu/kernels.h"
#include "util.h"
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct { const char *type; ModelArch arch; const ModelOps *ops; } TYPES[] = {
    {"gpt2", ARCH_GPT2, &gpt2_ops}, {"llama", ARCH_LLAMA, &llama_ops},
    {"mistral", ARCH_LLAMA, &llama_ops}, {"qwen2", ARCH_LLAMA, &llama_ops}};
#define NTYPES (int)(sizeof TYPES / sizeof *TYPES)

static const ModelOps *ops_of(ModelArch arch) { return arch == ARCH_GPT2 ? &gpt2_ops : &llama_ops; }

int config_int(const JsonValue *root, const char *path, const char *key, int required, int lo,
               int def, int *out) {
    const JsonValue *v = json_get(root, key);
    if (!v || (!required && v->type == JSON_NULL)) {
        if (required)
            return err_set(EXIT_BAD_INPUT, "bad_config", "%s: field %s is missing (an integer >= %d is required)", path,
                           key, lo);
        *out = def;
        return 0;
    }
    if (!json_is_int(v, lo, 1 << 30))
        return err_set(EXIT_BAD_INPUT, "bad_config", "%s: field %s must be an integer in [%d, 2^30], got %s", path, key,
                       lo, v->type == JSON_NUMBER ? "a number outside it" : json_type_name(v->type));
    *out = (int)v->num;
    return 0;
}

int config_float(const JsonValue *root, const char *path, const char *key, float def, float *out) {
    const JsonValue *v = json_get(root, key);
    if (!v || v->type == JSON_NULL) { *out = def; return 0; }
    if (v->type != JSON_NUMBER || !(v->num > 0) || !isfinite((float)v->num))
        return err_set(EXIT_BAD_INPUT, "bad_config", "%s: field %s must be a positive finite number", path, key);
    *out = (float)v->num;
    return 0;
}

int config_bool(const JsonValue *root, const char *path, const char *key, int def, int *out) {
    const JsonValue *v = json_get(root, key);
    if (!v || v->type == JSON_NULL) { *out = def; return 0; }
    if (v->type != JSON_BOOL)
        return err_set(EXIT_BAD_INPUT, "bad_config", "%s: field %s must be true or false", path, key);
    *out = v->boolean;
    return 0;
}

// Every tensor's size (and the model's) must fit the kernels' indices: a layer's slice below
// 2^31 elements, the whole model in memory addresses.
static int check_sizes(const Model *m, const char *path) {
    size_t total = 0;
    for (int t = 0; t < m->ntensors; t++) {
        const ParamTensor *p = &m->tensor[t];
        size_t n = 1;
        for (int d = 0; d < p->ndim; d++)
            if (__builtin_mul_overflow(n, (size_t)p->shape[d], &n)) n = SIZE_MAX;
        size_t all = n;
        if (p->per_layer && __builtin_mul_overflow(n, (size_t)m->cfg.n_layer, &all)) all = SIZE_MAX;
        if (n > INT_MAX || all == SIZE_MAX || __builtin_add_overflow(total, all, &total) ||
            total > SIZE_MAX / sizeof(float) / 4)
            return err_set(
                EXIT_BAD_INPUT, "bad_config",
                "%s: tensor %s is too large for the engine (its dimensions multiply past 2^31 elements per layer)",
                path, p->name);
    }
    return 0;
}

int model_parse_config(const JsonValue *root, const char *path, ModelConfig *cfg) {
    memset(cfg, 0, sizeof *cfg);
    if (root->type != JSON_OBJECT)
        return err_set(EXIT_BAD_INPUT, "bad_config", "%s: expected a JSON object, got a %s", path,
                       json_type_name(root->type));
    const JsonValue *mt = json_get(root, "model_type");
    int k = 0;
    if (mt) {
        for (k = 0; k < NTYPES && !(mt->type == JSON_STRING && !strcmp(mt->str, TYPES[k].type)); k++) {}
        if (k == NTYPES)
            return err_set(
                EXIT_BAD_INPUT, "bad_config", "%s: field model_type is %s%s%s; supported: gpt2, llama, mistral, qwen2",
                path, mt->type == JSON_STRING ? "\"" : "a ",
                mt->type == JSON_STRING ? mt->str : json_type_name(mt->type), mt->type == JSON_STRING ? "\"" : "");
    }
    cfg->arch = TYPES[k].arch;
    snprintf(cfg->model_type, sizeof cfg->model_type, "%s", TYPES[k].type);
    cfg->pad_token_id = -1;
    if (TYPES[k].ops->parse_config(root, path, cfg)) return -1;
    Model tmp = {.cfg = *cfg, .ops = TYPES[k].ops};
    tmp.ops->describe(&tmp);
    return check_sizes(&tmp, path);
}

size_t model_slice(const Model *m, int t) {
    size_t n = 1;
    for (int d = 0; d < m->tensor[t].ndim; d++) n *= (size_t)m->tensor[t].shape[d];
    return n;
}

static void point_views(float *base, float **view, const size_t *sizes, int n) {
    for (int i = 0; i < n; i++) { view[i] = base; base += sizes[i]; }
}

int model_build(Model *m, const ModelConfig *cfg) {
    blas_init();
    memset(m, 0, sizeof(*m));
    m->cfg = *cfg;
    m->ops = ops_of(cfg->arch);
    m->ops->describe(m);
    for (int t = 0; t < m->ntensors; t++) {
        m->param_sizes[t] = model_slice(m, t) * (m->tensor[t].per_layer ? (size_t)cfg->n_layer : 1);
        m->num_params += m->param_sizes[t];
    }
    m->params = malloc(m->num_params * sizeof(float));
    if (!m->params) { model_free(m); return -1; }
    point_views(m->params, m->param, m->param_sizes, m->ntensors);
    return 0;
}

int model_alloc_grads(Model *m) {
    if (m->grads) return 0;
    m->grads = calloc(m->num_params, sizeof(float));
    if (!m->grads) return -1;
    point_views(m->grads, m->grad, m->param_sizes, m->ntensors);
    return 0;
}

void model_free(Model *m) {
    if (m->ops && m->acts) m->ops->free_acts(m);
    ModelBatch *b = &m->batch;
    void *ps[] = {b->tokens, b->pos, b->branch, b->row_pos, b->row_tgt, b->row_slot, b->row_x,
                  b->row_dx, b->row_p, b->row_lp, b->dhidden};
    for (size_t i = 0; i < sizeof ps / sizeof *ps; i++) free(ps[i]);
    free(m->params);
    free(m->grads);
    memset(m, 0, sizeof(*m));
}

void model_zero_grad(Model *m) {
    if (m->grads) memset(m->grads, 0, m->num_params * sizeof(float));
}

void *model_xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q)
        die(EXIT_IO, "out_of_memory", "model activations: cannot allocate %zu bytes (use a smaller --batch-size)", n);
    return q;
}

// splitmix64 + Box-Muller: a tiny, portable, seedable normal generator for the init.
static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static double uniform01(uint64_t *s) { return ((splitmix64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

void model_fill_normal(float *x, size_t n, float std, uint64_t *s) {
    for (size_t i = 0; i < n; i += 2) {
        double r = sqrt(-2.0 * log(uniform01(s))), th = 2.0 * M_PI * uniform01(s);
        x[i] = (float)(r * cos(th)) * std;
        if (i + 1 < n) x[i + 1] = (float)(r * sin(th)) * std;
    }
}

static void ensure_batch(Model *m, int B, int T) {
    ModelBatch *a = &m->batch;
    size_t BT = (size_t)B * T;
    if (BT > a->cap_bt) {
        a->tokens = model_xrealloc(a->tokens, BT * sizeof(int));
        a->pos = model_xrealloc(a->pos, BT * sizeof(int));
        a->branch = model_xrealloc(a->branch, 2 * BT * sizeof(int));  // B <= BT
        a->dhidden = model_xrealloc(a->dhidden, BT * m->cfg.n_embd * sizeof(float));
        a->cap_bt = BT;
    }
    a->B = B; a->T = T;
}

static void ensure_rows(Model *m, size_t rows) {
    ModelBatch *a = &m->batch;
    if (rows <= a->cap_rows) return;
    a->row_pos = model_xrealloc(a->row_pos, rows * sizeof(int));
    a->row_tgt = model_xrealloc(a->row_tgt, rows * sizeof(int));
    a->row_slot = model_xrealloc(a->row_slot, rows * sizeof(int));
    a->row_x = model_xrealloc(a->row_x, rows * m->cfg.n_embd * sizeof(float));
    a->row_dx = model_xrealloc(a->row_dx, rows * m->cfg.n_embd * sizeof(float));
    a->row_p = model_xrealloc(a->row_p, rows * m->cfg.vocab_size * sizeof(float));
    a->row_lp = model_xrealloc(a->row_lp, rows * sizeof(float));
    a->cap_rows = rows;
}

// Inputs come from validated data files; a violation here is a caller bug, reported as bad
// input instead of an out-of-bounds read.
static void check_inputs(const Model *m) {
    const ModelBatch *a = &m->batch;
    int T = a->T;
    for (int i = 0; i < a->B * T; i++) {
        if (a->tokens[i] < 0 || a->tokens[i] >= m->cfg.vocab_size)
            die(EXIT_BAD_INPUT, "token_out_of_range",
                "model input: token id %d (sequence %d, index %d) is outside [0, %d)", a->tokens[i], i / T, i % T,
                m->cfg.vocab_size);
        if (a->pos[i] >= m->cfg.max_seq_len)
            die(EXIT_BAD_INPUT, "sequence_too_long",
                "model input: sequence %d needs position %d but the context holds %d", i / T, a->pos[i],
                m->cfg.max_seq_len);
    }
    for (int r = 0; r < a->nrows; r++)
        if (a->row_tgt[r] < 0 || a->row_tgt[r] >= m->cfg.vocab_size)
            die(EXIT_BAD_INPUT, "token_out_of_range", "model target: token id %d (sequence %d) is outside [0, %d)",
                a->row_tgt[r], a->row_pos[r] / T, m->cfg.vocab_size);
}

// Body, then the LM head on the scored rows: log p of each target, summed per output slot in
// row order (fixed order: deterministic sums).
static void run(Model *m, int nslots, float *logp_sum, int *ntok) {
    ModelBatch *a = &m->batch;
    check_inputs(m);
    const float *hidden = m->ops->body_forward(m);
    head_forward(a->row_x, a->row_p, a->row_lp, hidden, a->row_pos, a->row_tgt, m->param[m->head],
                 a->nrows, m->cfg.n_embd, m->cfg.vocab_size);
    double *sum = model_xrealloc(NULL, (size_t)nslots * sizeof(double));
    for (int b = 0; b < nslots; b++) { sum[b] = 0.0; ntok[b] = 0; }
    for (int r = 0; r < a->nrows; r++) { sum[a->row_slot[r]] += a->row_lp[r]; ntok[a->row_slot[r]]++; }
    for (int b = 0; b < nslots; b++) logp_sum[b] = (float)sum[b];
    free(sum);
}

void model_forward(Model *m, const int *tokens, const int *targets, int B, int T, float *logp_sum,
                   int *ntok) {
    ensure_batch(m, B, T);
    ModelBatch *a = &m->batch;
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
    run(m, B, logp_sum, ntok);
}

void model_forward_pairs(Model *m, const ModelPair *pairs, int n, float *logp_sum, int *ntok) {
    int T = 1, rows = 0;
    for (int b = 0; b < n; b++) {
        const ModelPair *p = &pairs[b];
        int len = p->prompt_len + p->chosen_len + p->rejected_len - 2;
        if (len > T) T = len;
        rows += p->chosen_len + p->rejected_len;
    }
    ensure_batch(m, n, T);
    ensure_rows(m, rows);
    ModelBatch *a = &m->batch;
    a->has_branch = 1;
    int r = 0;
    for (int b = 0; b < n; b++) {
        const ModelPair *p = &pairs[b];
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
    run(m, 2 * n, logp_sum, ntok);
}

void model_backward(Model *m, const float *dlogp) {
    ModelBatch *a = &m->batch;
    head_backward(a->dhidden, m->grad[m->head], a->row_p, a->row_dx, a->row_x, a->row_pos, a->row_tgt,
                  a->row_slot, dlogp, m->param[m->head], a->nrows, a->B * a->T, m->cfg.n_embd,
                  m->cfg.vocab_size);
    m->ops->body_backward(m);
}

void model_logits(Model *m, const int *tokens, int B, int T, float *logits) {
    ensure_batch(m, B, T);
    ModelBatch *a = &m->batch;
    memcpy(a->tokens, tokens, (size_t)B * T * sizeof(int));
    for (int i = 0; i < B * T; i++) a->pos[i] = i % T;
    a->has_branch = 0;
    a->nrows = 0;  // no head rows: a backward after this would be meaningless
    check_inputs(m);
    const float *hidden = m->ops->body_forward(m);
    logits_forward(logits, hidden, m->param[m->head], B * T, m->cfg.n_embd, m->cfg.vocab_size);
}
