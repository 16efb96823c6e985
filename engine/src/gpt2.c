// GPT-2 architecture (llm.c style): parameter table, HF config, HF init, the transformer body's
// forward/backward for training and its KV-cache step for generation. The batch bookkeeping and
// the LM head are model.c's; kernels are cpu/'s.
#include "gpt2.h"
#include "cpu/kernels.h"
#include "util.h"
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    size_t cap_bt, cap_scratch;  // allocated capacities (tokens, scratch)
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
} GPT2Acts;

static int parse_config(const JsonValue *root, const char *path, ModelConfig *c) {
    const JsonValue *act = json_get(root, "activation_function");
    if (config_int(root, path, "vocab_size", 1, 1, 0, &c->vocab_size) ||
        config_int(root, path, "n_positions", 1, 1, 0, &c->max_seq_len) ||
        config_int(root, path, "n_layer", 1, 1, 0, &c->n_layer) ||
        config_int(root, path, "n_head", 1, 1, 0, &c->n_head) ||
        config_int(root, path, "n_embd", 1, 1, 0, &c->n_embd) ||
        config_int(root, path, "n_inner", 0, 1, 4 * c->n_embd, &c->n_inner) ||
        config_float(root, path, "layer_norm_epsilon", 1e-5f, &c->norm_eps) ||
        config_float(root, path, "initializer_range", 0.02f, &c->init_std))
        return -1;
    if (c->n_embd % c->n_head)
        return err_set(EXIT_BAD_INPUT, "bad_config", "%s: field n_embd (%d) must be divisible by n_head (%d)", path,
                       c->n_embd, c->n_head);
    c->n_kv_head = c->n_head;
    c->head_dim = c->n_embd / c->n_head;
    c->tied_embeddings = 1;
    // gelu_pytorch_tanh is the same tanh approximation as gelu_new.
    if (act && (act->type != JSON_STRING || (strcmp(act->str, "gelu_new") && strcmp(act->str, "gelu_pytorch_tanh"))))
        return err_set(EXIT_BAD_INPUT, "bad_config",
                       "%s: field activation_function must be \"gelu_new\" (or \"gelu_pytorch_tanh\")", path);
    static const struct { const char *key; int supported; } flags[] = {
        {"scale_attn_weights", 1}, {"scale_attn_by_inverse_layer_idx", 0}, {"add_cross_attention", 0}};
    for (size_t i = 0; i < sizeof flags / sizeof *flags; i++) {
        const JsonValue *v = json_get(root, flags[i].key);
        if (v && v->type == JSON_BOOL && v->boolean != flags[i].supported)
            return err_set(EXIT_BAD_INPUT, "bad_config",
                           "%s: field %s must be %s (the engine implements standard GPT-2)", path, flags[i].key,
                           flags[i].supported ? "true" : "false");
    }
    return 0;
}

static void describe(Model *m) {
    const ModelConfig *c = &m->cfg;
    int64_t V = c->vocab_size, P = c->max_seq_len, C = c->n_embd, I = c->n_inner;
    static const struct { const char *name; int per_layer, decay; } T[GPT2_NUM_TENSORS] = {
        {"transformer.wte.weight", 0, 1}, {"transformer.wpe.weight", 0, 1},
        {"transformer.h.%d.ln_1.weight", 1, 0}, {"transformer.h.%d.ln_1.bias", 1, 0},
        {"transformer.h.%d.attn.c_attn.weight", 1, 1}, {"transformer.h.%d.attn.c_attn.bias", 1, 0},
        {"transformer.h.%d.attn.c_proj.weight", 1, 1}, {"transformer.h.%d.attn.c_proj.bias", 1, 0},
        {"transformer.h.%d.ln_2.weight", 1, 0}, {"transformer.h.%d.ln_2.bias", 1, 0},
        {"transformer.h.%d.mlp.c_fc.weight", 1, 1}, {"transformer.h.%d.mlp.c_fc.bias", 1, 0},
        {"transformer.h.%d.mlp.c_proj.weight", 1, 1}, {"transformer.h.%d.mlp.c_proj.bias", 1, 0},
        {"transformer.ln_f.weight", 0, 0}, {"transformer.ln_f.bias", 0, 0}};
    const int64_t shapes[GPT2_NUM_TENSORS][2] = {
        {V, C}, {P, C}, {C, 0}, {C, 0}, {C, 3 * C}, {3 * C, 0}, {C, C}, {C, 0},
        {C, 0}, {C, 0}, {C, I}, {I, 0}, {I, C}, {C, 0}, {C, 0}, {C, 0}};
    m->ntensors = GPT2_NUM_TENSORS;
    for (int t = 0; t < GPT2_NUM_TENSORS; t++)
        m->tensor[t] = (ParamTensor){T[t].name, T[t].per_layer, shapes[t][1] ? 2 : 1,
                                     {shapes[t][0], shapes[t][1]}, T[t].decay};
    m->head = P_WTE;
}

// Buffers HF keeps in GPT-2 checkpoints that are not parameters; lm_head is tied to wte.
static int ignored(const Model *m, const char *name) {
    size_t n = strlen(name);
    return !strcmp(name, "lm_head.weight") || (n > 10 && !strcmp(name + n - 10, ".attn.bias")) ||
           (n > 17 && !strcmp(name + n - 17, ".attn.masked_bias"));
}

static void init_random(Model *m, uint64_t seed) {
    uint64_t s = seed;
    float std = 0.02f, proj_std = 0.02f / sqrtf(2.0f * m->cfg.n_layer);
    for (int t = 0; t < GPT2_NUM_TENSORS; t++) {
        float *p = m->param[t];
        size_t n = m->param_sizes[t];
        switch (t) {
        case P_WTE: case P_WPE: case P_QKVW: case P_FCW: model_fill_normal(p, n, std, &s); break;
        case P_ATTPROJW: case P_FCPROJW: model_fill_normal(p, n, proj_std, &s); break;
        case P_LN1W: case P_LN2W: case P_LNFW: for (size_t i = 0; i < n; i++) p[i] = 1.0f; break;
        default: memset(p, 0, n * sizeof(float)); break;  // biases
        }
    }
}

static char *config_json(const ModelConfig *c, int bos, int eos) {
    if (bos < 0) bos = c->vocab_size - 1;
    if (eos < 0) eos = c->vocab_size - 1;
    char *s = malloc(2048);
    if (!s) return NULL;
    char inner[32], eps[32];
    for (int prec = 6; prec <= 9; prec++) {  // shortest text that reads back as the same float
        snprintf(eps, sizeof eps, "%.*g", prec, (double)c->norm_eps);
        if ((float)strtod(eps, NULL) == c->norm_eps) break;
    }
    if (c->n_inner == 4 * c->n_embd) snprintf(inner, sizeof inner, "null");
    else snprintf(inner, sizeof inner, "%d", c->n_inner);
    snprintf(s, 2048,
             "{\n  \"activation_function\": \"gelu_new\",\n  \"architectures\": [\"GPT2LMHeadModel\"],\n"
             "  \"attn_pdrop\": 0.1,\n  \"bos_token_id\": %d,\n  \"embd_pdrop\": 0.1,\n  \"eos_token_id\": %d,\n"
             "  \"initializer_range\": 0.02,\n  \"layer_norm_epsilon\": %s,\n  \"model_type\": \"gpt2\",\n"
             "  \"n_ctx\": %d,\n  \"n_embd\": %d,\n  \"n_head\": %d,\n  \"n_inner\": %s,\n  \"n_layer\": %d,\n"
             "  \"n_positions\": %d,\n  \"reorder_and_upcast_attn\": false,\n  \"resid_pdrop\": 0.1,\n"
             "  \"scale_attn_by_inverse_layer_idx\": false,\n  \"scale_attn_weights\": true,\n"
             "  \"summary_activation\": null,\n  \"summary_first_dropout\": 0.1,\n  \"summary_proj_to_labels\": true,\n"
             "  \"summary_type\": \"cls_index\",\n  \"summary_use_proj\": true,\n  \"tie_word_embeddings\": true,\n"
             "  \"torch_dtype\": \"float32\",\n  \"use_cache\": true,\n  \"vocab_size\": %d\n}\n",
             bos, eos, eps, c->max_seq_len, c->n_embd, c->n_head, inner, c->n_layer, c->max_seq_len,
             c->vocab_size);
    return s;
}

static void free_acts(Model *m) {
    GPT2Acts *a = m->acts;
    float *fs[] = {a->encoded, a->ln, a->ln1_mean, a->ln1_rstd, a->qkv, a->lse, a->atty,
                   a->resid2, a->ln2_mean, a->ln2_rstd, a->fch, a->fch_gelu, a->resid3, a->lnf,
                   a->lnf_mean, a->lnf_rstd, a->tmp, a->dresid, a->dln, a->datty, a->dfch,
                   a->dfch_gelu, a->dqkv, a->att_scratch};
    for (size_t i = 0; i < sizeof(fs) / sizeof(fs[0]); i++) free(fs[i]);
    free(a);
    m->acts = NULL;
}

static GPT2Acts *ensure_acts(Model *m, int B, int T) {
    if (!m->acts) {
        m->acts = model_xrealloc(NULL, sizeof(GPT2Acts));
        memset(m->acts, 0, sizeof(GPT2Acts));
    }
    GPT2Acts *a = m->acts;
    size_t L = m->cfg.n_layer, C = m->cfg.n_embd, F = m->cfg.n_inner, NH = m->cfg.n_head;
    size_t BT = (size_t)B * T, nscratch = attention_scratch_floats(T);
    #define GROW(f, n) a->f = model_xrealloc(a->f, (n) * sizeof(float))
    if (BT > a->cap_bt) {
        GROW(encoded, BT * C); GROW(ln, BT * C); GROW(ln1_mean, L * BT); GROW(ln1_rstd, L * BT);
        GROW(qkv, L * BT * 3 * C); GROW(lse, L * BT * NH); GROW(atty, L * BT * C); GROW(resid2, L * BT * C);
        GROW(ln2_mean, L * BT); GROW(ln2_rstd, L * BT);
        GROW(fch, L * BT * F); GROW(fch_gelu, BT * F); GROW(resid3, L * BT * C);
        GROW(lnf, BT * C); GROW(lnf_mean, BT); GROW(lnf_rstd, BT); GROW(tmp, BT * C);
        GROW(dresid, BT * C); GROW(dln, BT * C); GROW(datty, BT * C); GROW(dfch, BT * F);
        GROW(dfch_gelu, BT * F); GROW(dqkv, BT * 3 * C);
        a->cap_bt = BT;
    }
    if (nscratch > a->cap_scratch) { GROW(att_scratch, nscratch); a->cap_scratch = nscratch; }
    #undef GROW
    return a;
}

// Embeddings + transformer blocks + final LayerNorm into acts->lnf, for the batch in m->batch.
static const float *body_forward(Model *m) {
    const ModelBatch *bt = &m->batch;
    int B = bt->B, T = bt->T;
    GPT2Acts *a = ensure_acts(m, B, T);
    const int *branch = bt->has_branch ? bt->branch : NULL;
    int C = m->cfg.n_embd, F = m->cfg.n_inner, NH = m->cfg.n_head, L = m->cfg.n_layer;
    int BT = B * T;
    AttnDims ad = {B, T, NH, NH, C / NH, 0};
    encoder_forward(a->encoded, bt->tokens, bt->pos, m->param[P_WTE], m->param[P_WPE], BT, C);
    for (int l = 0; l < L; l++) {
        const float *res = l == 0 ? a->encoded : a->resid3 + (size_t)(l - 1) * BT * C;
        float *qkv = a->qkv + (size_t)l * BT * 3 * C;
        float *atty = a->atty + (size_t)l * BT * C, *lse = a->lse + (size_t)l * BT * NH;
        float *resid2 = a->resid2 + (size_t)l * BT * C, *fch = a->fch + (size_t)l * BT * F;
        float *resid3 = a->resid3 + (size_t)l * BT * C;
        layernorm_forward(a->ln, a->ln1_mean + (size_t)l * BT, a->ln1_rstd + (size_t)l * BT, res,
                          m->param[P_LN1W] + l * C, m->param[P_LN1B] + l * C, BT, C, m->cfg.norm_eps);
        matmul_forward(qkv, a->ln, m->param[P_QKVW] + (size_t)l * C * 3 * C,
                       m->param[P_QKVB] + l * 3 * C, BT, C, 3 * C);
        attention_forward(atty, lse, qkv, a->att_scratch, branch, &ad);
        matmul_forward(a->tmp, atty, m->param[P_ATTPROJW] + (size_t)l * C * C,
                       m->param[P_ATTPROJB] + l * C, BT, C, C);
        residual_forward(resid2, res, a->tmp, BT * C);
        layernorm_forward(a->ln, a->ln2_mean + (size_t)l * BT, a->ln2_rstd + (size_t)l * BT, resid2,
                          m->param[P_LN2W] + l * C, m->param[P_LN2B] + l * C, BT, C, m->cfg.norm_eps);
        matmul_forward(fch, a->ln, m->param[P_FCW] + (size_t)l * C * F, m->param[P_FCB] + l * F,
                       BT, C, F);
        gelu_forward(a->fch_gelu, fch, BT * F);
        matmul_forward(a->tmp, a->fch_gelu, m->param[P_FCPROJW] + (size_t)l * F * C,
                       m->param[P_FCPROJB] + l * C, BT, F, C);
        residual_forward(resid3, resid2, a->tmp, BT * C);
    }
    layernorm_forward(a->lnf, a->lnf_mean, a->lnf_rstd, a->resid3 + (size_t)(L - 1) * BT * C,
                      m->param[P_LNFW], m->param[P_LNFB], BT, C, m->cfg.norm_eps);
    return a->lnf;
}


static void body_backward(Model *m) {
    GPT2Acts *a = m->acts;
    const ModelBatch *bt = &m->batch;
    int B = bt->B, T = bt->T, BT = B * T;
    int C = m->cfg.n_embd, F = m->cfg.n_inner, NH = m->cfg.n_head, L = m->cfg.n_layer;
    AttnDims ad = {B, T, NH, NH, C / NH, 0};
    float **g = m->grad, **p = m->param;

    memset(a->dresid, 0, (size_t)BT * C * sizeof(float));
    layernorm_backward(a->dresid, g[P_LNFW], g[P_LNFB], bt->dhidden,
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
                          m->cfg.norm_eps);
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
                           a->att_scratch, bt->has_branch ? bt->branch : NULL, &ad);
        memset(a->dln, 0, (size_t)BT * C * sizeof(float));
        layernorm_forward(a->ln, NULL, NULL, res, p[P_LN1W] + l * C, p[P_LN1B] + l * C, BT, C,
                          m->cfg.norm_eps);
        matmul_backward(a->dln, g[P_QKVW] + (size_t)l * C * 3 * C, g[P_QKVB] + l * 3 * C, a->dqkv,
                        a->ln, p[P_QKVW] + (size_t)l * C * 3 * C, BT, C, 3 * C);
        layernorm_backward(a->dresid, g[P_LN1W] + l * C, g[P_LN1B] + l * C, a->dln, res,
                           p[P_LN1W] + l * C, a->ln1_mean + o, a->ln1_rstd + o, BT, C);
    }
    encoder_backward(g[P_WTE], g[P_WPE], a->dresid, bt->tokens, bt->pos, BT, C);
}

// ---- generation: every weight matrix packed once (per layer qkv, attention projection, fc, fc
// projection; then the tied LM head, wte transposed) and one step over rows.
enum { MAT_QKV, MAT_ATTPROJ, MAT_FC, MAT_FCPROJ, MATS_PER_LAYER };
enum { BUF_X, BUF_LN, BUF_QKV, BUF_ATTY, BUF_PROJ, BUF_FCH, NBUF };

static void *gen_create(Model *m, PackFormat fmt) {
    const ModelConfig *c = &m->cfg;
    int L = c->n_layer, C = c->n_embd, F = c->n_inner;
    size_t widths[NBUF] = {C, C, 3 * C, C, C, F};
    PackedSet *g = packed_set_new(fmt, L * MATS_PER_LAYER + 1, F > C ? F : C, NBUF, widths, c->max_seq_len);
    if (!g) return NULL;
    for (int l = 0; l < L; l++) {
        PackedMatrix *pm = g->mats + l * MATS_PER_LAYER;
        if (packed_make(pm + MAT_QKV, fmt, m->param[P_QKVW] + (size_t)l * C * 3 * C, C, 3 * C, 3 * C, 1) ||
            packed_make(pm + MAT_ATTPROJ, fmt, m->param[P_ATTPROJW] + (size_t)l * C * C, C, C, C, 1) ||
            packed_make(pm + MAT_FC, fmt, m->param[P_FCW] + (size_t)l * C * F, C, F, F, 1) ||
            packed_make(pm + MAT_FCPROJ, fmt, m->param[P_FCPROJW] + (size_t)l * F * C, F, C, C, 1)) {
            packed_set_free(g);
            return NULL;
        }
    }
    // logits = x @ wte^T: element (k = c, j = v) is wte[v*C + c]
    if (packed_make(g->mats + L * MATS_PER_LAYER, fmt, m->param[P_WTE], C, c->vocab_size, 1, C)) {
        packed_set_free(g);
        return NULL;
    }
    return g;
}

static void linear(PackedSet *g, float *out, const float *in, int mat, const float *bias, int M) {
    packed_matmul(out, in, &g->mats[mat], bias, M, g->scratch);
}

static int gen_forward(Model *m, void *state, const GenRows *rows, const int *sample_row,
                       int nsample, float *logits) {
    PackedSet *g = state;
    const ModelConfig *c = &m->cfg;
    int C = c->n_embd, F = c->n_inner, NH = c->n_head, n = rows->n;
    if (packed_set_rows(g, (size_t)n)) return -1;
    float *x = g->buf[BUF_X], *ln = g->buf[BUF_LN], *qkv = g->buf[BUF_QKV];
    float *atty = g->buf[BUF_ATTY], *proj = g->buf[BUF_PROJ], *fch = g->buf[BUF_FCH];
    encoder_forward(x, rows->tok, rows->pos, m->param[P_WTE], m->param[P_WPE], n, C);
    for (int l = 0; l < c->n_layer; l++) {
        layernorm_forward(ln, NULL, NULL, x, m->param[P_LN1W] + (size_t)l * C,
                          m->param[P_LN1B] + (size_t)l * C, n, C, c->norm_eps);
        linear(g, qkv, ln, l * MATS_PER_LAYER + MAT_QKV, m->param[P_QKVB] + (size_t)l * 3 * C, n);
        for (int r = 0; r < n; r++)
            kvcache_store(rows->cache[r], rows->cache_cap[r], l, rows->pos[r], qkv + (size_t)r * 3 * C + C,
                          qkv + (size_t)r * 3 * C + 2 * C, NH, C / NH);
        kvcache_attend(atty, qkv, 3 * C, rows->cache, rows->cache_cap, rows->pos, n, l, NH, NH, C / NH, 0,
                       g->att_scratch, g->att_stride);
        linear(g, proj, atty, l * MATS_PER_LAYER + MAT_ATTPROJ, m->param[P_ATTPROJB] + (size_t)l * C, n);
        residual_forward(x, x, proj, n * C);
        layernorm_forward(ln, NULL, NULL, x, m->param[P_LN2W] + (size_t)l * C,
                          m->param[P_LN2B] + (size_t)l * C, n, C, c->norm_eps);
        linear(g, fch, ln, l * MATS_PER_LAYER + MAT_FC, m->param[P_FCB] + (size_t)l * F, n);
        gelu_forward(fch, fch, n * F);
        linear(g, proj, fch, l * MATS_PER_LAYER + MAT_FCPROJ, m->param[P_FCPROJB] + (size_t)l * C, n);
        residual_forward(x, x, proj, n * C);
    }
    for (int i = 0; i < nsample; i++)  // ln: the sampled rows' final states (nsample <= n)
        memcpy(ln + (size_t)i * C, x + (size_t)sample_row[i] * C, C * sizeof(float));
    layernorm_forward(ln, NULL, NULL, ln, m->param[P_LNFW], m->param[P_LNFB], nsample, C, c->norm_eps);
    linear(g, logits, ln, c->n_layer * MATS_PER_LAYER, NULL, nsample);  // tied LM head
    return 0;
}

const ModelOps gpt2_ops = {parse_config, describe, ignored, init_random, config_json, body_forward,
                           body_backward, free_acts, gen_create, packed_set_free, gen_forward};
