// The Llama family (llama, mistral, qwen2), sibling of gpt2.c: parameter table in Hugging Face
// nn.Linear layout ([out, in], so checkpoints copy plainly), config, init, the transformer body's
// forward/backward (RMSNorm, rotate-half RoPE, grouped-query attention, SwiGLU; optional biases,
// tied or untied head, Mistral's sliding window) and its KV-cache step for generation.
#include "model.h"
#include "cpu/kernels.h"
#include "util.h"
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Tensor kinds; absent ones (biases a config does not have, a tied head) are left out of the
// parameter table, so a kind's table index comes from layout().
enum {
    K_EMB, K_LN1, K_QW, K_QB, K_KW, K_KB, K_VW, K_VB, K_OW, K_OB, K_LN2, K_GATEW, K_GATEB,
    K_UPW, K_UPB, K_DOWNW, K_DOWNB, K_NORM, K_HEAD, NKINDS
};

static const struct { const char *name; int per_layer, decay; } KINDS[NKINDS] = {
    {"model.embed_tokens.weight", 0, 1}, {"model.layers.%d.input_layernorm.weight", 1, 0},
    {"model.layers.%d.self_attn.q_proj.weight", 1, 1}, {"model.layers.%d.self_attn.q_proj.bias", 1, 0},
    {"model.layers.%d.self_attn.k_proj.weight", 1, 1}, {"model.layers.%d.self_attn.k_proj.bias", 1, 0},
    {"model.layers.%d.self_attn.v_proj.weight", 1, 1}, {"model.layers.%d.self_attn.v_proj.bias", 1, 0},
    {"model.layers.%d.self_attn.o_proj.weight", 1, 1}, {"model.layers.%d.self_attn.o_proj.bias", 1, 0},
    {"model.layers.%d.post_attention_layernorm.weight", 1, 0},
    {"model.layers.%d.mlp.gate_proj.weight", 1, 1}, {"model.layers.%d.mlp.gate_proj.bias", 1, 0},
    {"model.layers.%d.mlp.up_proj.weight", 1, 1}, {"model.layers.%d.mlp.up_proj.bias", 1, 0},
    {"model.layers.%d.mlp.down_proj.weight", 1, 1}, {"model.layers.%d.mlp.down_proj.bias", 1, 0},
    {"model.norm.weight", 0, 0}, {"lm_head.weight", 0, 1}};

static int present(const ModelConfig *c, int k) {
    switch (k) {
    case K_QB: case K_KB: case K_VB: return c->attention_bias || c->qkv_bias;
    case K_OB: return c->attention_bias;
    case K_GATEB: case K_UPB: case K_DOWNB: return c->mlp_bias;
    case K_HEAD: return !c->tied_embeddings;
    default: return 1;
    }
}

// Table index of each kind, -1 when absent.
static void layout(const ModelConfig *c, int ix[NKINDS]) {
    int n = 0;
    for (int k = 0; k < NKINDS; k++) ix[k] = present(c, k) ? n++ : -1;
}

typedef struct {
    int ix[NKINDS];
    size_t cap_bt, cap_scratch;
    float *cos_t, *sin_t;  // [P, hd/2] rotary tables
    float *encoded;        // [BT, C]
    float *ln1_rstd, *ln2_rstd;  // [L, BT]
    float *qkv;            // [L, BT, (NH + 2 KVH) hd]: q and k after RoPE, v
    float *lse;            // [L, B, NH, T]
    float *atty;           // [L, BT, NH hd]
    float *resid2, *resid3;  // [L, BT, C]
    float *gate, *up;      // [L, BT, I] before the SwiGLU
    float *lnf, *lnf_rstd; // [BT, C], [BT]
    // one layer's norm output and SwiGLU output, recomputed in backward; scratch
    float *ln, *sw, *tmp, *dresid, *dln, *datty, *dsw, *dgate, *dup, *dqkv, *att_scratch;
} LlamaActs;

static int parse_rope(const JsonValue *root, const char *path, ModelConfig *c) {
    // transformers 5 writes rope_parameters {rope_type, rope_theta, ...}; older configs
    // rope_theta plus rope_scaling {rope_type or type, ...}
    const JsonValue *rp = json_get(root, "rope_parameters"), *rs = json_get(root, "rope_scaling");
    const char *field = rp && rp->type != JSON_NULL ? "rope_parameters" : "rope_scaling";
    const JsonValue *sc = rp && rp->type != JSON_NULL ? rp : rs;
    if (config_float(root, path, "rope_theta", 10000.0f, &c->rope_theta)) return -1;
    if (!sc || sc->type == JSON_NULL) return 0;
    if (sc->type != JSON_OBJECT)
        return err_set(EXIT_BAD_INPUT, "bad_config", "%s: field %s must be an object", path, field);
    char key[64];
    snprintf(key, sizeof key, "%s.rope_theta", field);
    const JsonValue *th = json_get(sc, "rope_theta");
    if (th) {
        if (th->type != JSON_NUMBER || !(th->num > 0))
            return err_set(EXIT_BAD_INPUT, "bad_config", "%s: field %s must be a positive number", path, key);
        c->rope_theta = (float)th->num;
    }
    const JsonValue *ty = json_get(sc, "rope_type");
    if (!ty) ty = json_get(sc, "type");
    if (!ty || (ty->type == JSON_STRING && !strcmp(ty->str, "default"))) return 0;
    if (ty->type != JSON_STRING || strcmp(ty->str, "llama3"))
        return err_set(EXIT_BAD_INPUT, "bad_config", "%s: field %s.rope_type is %s; supported: default, llama3", path,
                       field, ty->type == JSON_STRING ? ty->str : json_type_name(ty->type));
    c->rope_llama3 = 1;
    static const char *keys[] = {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"};
    float v[4];
    for (int i = 0; i < 4; i++) {
        const JsonValue *x = json_get(sc, keys[i]);
        if (!x || x->type != JSON_NUMBER || !(x->num > 0))
            return err_set(EXIT_BAD_INPUT, "bad_config",
                           "%s: field %s.%s must be a positive number for rope_type llama3", path, field, keys[i]);
        v[i] = (float)x->num;
    }
    if (!(v[2] > v[1]))
        return err_set(EXIT_BAD_INPUT, "bad_config",
                       "%s: field %s.high_freq_factor must be greater than low_freq_factor", path, field);
    c->rope_factor = v[0]; c->rope_low_freq_factor = v[1]; c->rope_high_freq_factor = v[2];
    c->rope_original_max_pos = (int)v[3];
    return 0;
}

static int parse_config(const JsonValue *root, const char *path, ModelConfig *c) {
    int qwen2 = !strcmp(c->model_type, "qwen2"), mistral = !strcmp(c->model_type, "mistral");
    if (config_int(root, path, "vocab_size", 1, 1, 0, &c->vocab_size) ||
        config_int(root, path, "hidden_size", 1, 1, 0, &c->n_embd) ||
        config_int(root, path, "intermediate_size", 1, 1, 0, &c->n_inner) ||
        config_int(root, path, "num_hidden_layers", 1, 1, 0, &c->n_layer) ||
        config_int(root, path, "num_attention_heads", 1, 1, 0, &c->n_head) ||
        config_int(root, path, "max_position_embeddings", 1, 1, 0, &c->max_seq_len) ||
        config_int(root, path, "num_key_value_heads", 0, 1, c->n_head, &c->n_kv_head) ||
        config_float(root, path, "rms_norm_eps", 1e-6f, &c->norm_eps) ||
        config_float(root, path, "initializer_range", 0.02f, &c->init_std) ||
        config_bool(root, path, "attention_bias", 0, &c->attention_bias) ||
        config_bool(root, path, "mlp_bias", 0, &c->mlp_bias) ||
        config_bool(root, path, "tie_word_embeddings", 0, &c->tied_embeddings) ||
        config_int(root, path, "pad_token_id", 0, 0, -1, &c->pad_token_id) || parse_rope(root, path, c))
        return -1;
    if (c->n_head % c->n_kv_head)
        return err_set(EXIT_BAD_INPUT, "bad_config",
                       "%s: field num_attention_heads (%d) must be a multiple of num_key_value_heads (%d)", path,
                       c->n_head, c->n_kv_head);
    const JsonValue *hd = json_get(root, "head_dim");
    if ((!hd || hd->type == JSON_NULL) && c->n_embd % c->n_head)
        return err_set(
            EXIT_BAD_INPUT, "bad_config",
            "%s: field hidden_size (%d) must be divisible by num_attention_heads (%d) when head_dim is not given", path,
            c->n_embd, c->n_head);
    if (config_int(root, path, "head_dim", 0, 2, c->n_embd / c->n_head, &c->head_dim)) return -1;
    if (c->head_dim % 2)
        return err_set(EXIT_BAD_INPUT, "bad_config", "%s: field head_dim (%d) must be even (rotary pairs)", path,
                       c->head_dim);
    if (c->pad_token_id >= c->vocab_size)
        return err_set(EXIT_BAD_INPUT, "bad_config", "%s: field pad_token_id (%d) must be < vocab_size (%d)", path,
                       c->pad_token_id, c->vocab_size);
    const JsonValue *act = json_get(root, "hidden_act");
    if (act && (act->type != JSON_STRING || strcmp(act->str, "silu")))
        return err_set(EXIT_BAD_INPUT, "bad_config", "%s: field hidden_act must be \"silu\"", path);
    c->qkv_bias = qwen2;
    if (mistral && config_int(root, path, "sliding_window", 0, 1, 0, &c->sliding_window)) return -1;
    const JsonValue *usw = json_get(root, "use_sliding_window");
    if (qwen2 && usw && usw->type == JSON_BOOL && usw->boolean)
        return err_set(
            EXIT_BAD_INPUT, "bad_config",
            "%s: field use_sliding_window must be false (per-layer sliding windows of qwen2 are not supported)", path);
    return 0;
}

static void describe(Model *m) {
    const ModelConfig *c = &m->cfg;
    int64_t V = c->vocab_size, C = c->n_embd, I = c->n_inner;
    int64_t QD = (int64_t)c->n_head * c->head_dim, KVD = (int64_t)c->n_kv_head * c->head_dim;
    const int64_t shapes[NKINDS][2] = {
        {V, C}, {C, 0}, {QD, C}, {QD, 0}, {KVD, C}, {KVD, 0}, {KVD, C}, {KVD, 0}, {C, QD}, {C, 0},
        {C, 0}, {I, C}, {I, 0}, {I, C}, {I, 0}, {C, I}, {C, 0}, {C, 0}, {V, C}};
    int ix[NKINDS];
    layout(c, ix);
    m->ntensors = 0;
    for (int k = 0; k < NKINDS; k++)
        if (ix[k] >= 0)
            m->tensor[m->ntensors++] = (ParamTensor){KINDS[k].name, KINDS[k].per_layer, shapes[k][1] ? 2 : 1,
                                                     {shapes[k][0], shapes[k][1]}, KINDS[k].decay};
    m->head = c->tied_embeddings ? ix[K_EMB] : ix[K_HEAD];
}

// Not parameters: rotary buffers some checkpoints carry, and a tied head saved anyway.
static int ignored(const Model *m, const char *name) {
    size_t n = strlen(name);
    return (n > 20 && !strcmp(name + n - 20, "rotary_emb.inv_freq")) ||
           (m->cfg.tied_embeddings && !strcmp(name, "lm_head.weight"));
}

// Hugging Face's _init_weights: Linear and Embedding N(0, initializer_range), biases 0, the
// padding token's embedding 0, RMSNorm weights 1.
static void init_random(Model *m, uint64_t seed) {
    uint64_t s = seed;
    int ix[NKINDS];
    layout(&m->cfg, ix);
    for (int k = 0; k < NKINDS; k++) {
        int t = ix[k];
        if (t < 0) continue;
        float *p = m->param[t];
        size_t n = m->param_sizes[t];
        if (k == K_LN1 || k == K_LN2 || k == K_NORM) for (size_t i = 0; i < n; i++) p[i] = 1.0f;
        else if (m->tensor[t].ndim == 1) memset(p, 0, n * sizeof(float));
        else model_fill_normal(p, n, m->cfg.init_std, &s);
    }
    if (m->cfg.pad_token_id >= 0)
        memset(m->param[ix[K_EMB]] + (size_t)m->cfg.pad_token_id * m->cfg.n_embd, 0, m->cfg.n_embd * sizeof(float));
}

static void float_text(char *out, size_t cap, float x) {  // shortest text reading back as x
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(out, cap, "%.*g", prec, (double)x);
        if ((float)strtod(out, NULL) == x) break;
    }
}

static char *config_json(const ModelConfig *c, int bos, int eos) {
    static const struct { const char *type, *arch; } A[] = {
        {"llama", "LlamaForCausalLM"}, {"mistral", "MistralForCausalLM"}, {"qwen2", "Qwen2ForCausalLM"}};
    const char *arch = A[0].arch;
    for (size_t i = 0; i < sizeof A / sizeof *A; i++) if (!strcmp(c->model_type, A[i].type)) arch = A[i].arch;
    char eps[32], theta[32], std[32], rope[256], ids[96], extra[160] = "";
    float_text(eps, sizeof eps, c->norm_eps);
    float_text(theta, sizeof theta, c->rope_theta);
    float_text(std, sizeof std, c->init_std);
    if (c->rope_llama3) {
        char f[32], lo[32], hi[32];
        float_text(f, sizeof f, c->rope_factor);
        float_text(lo, sizeof lo, c->rope_low_freq_factor);
        float_text(hi, sizeof hi, c->rope_high_freq_factor);
        snprintf(rope, sizeof rope,
                 "{\"rope_type\": \"llama3\", \"rope_theta\": %s, \"factor\": %s, \"low_freq_factor\": %s, "
                 "\"high_freq_factor\": %s, \"original_max_position_embeddings\": %d}",
                 theta, f, lo, hi, c->rope_original_max_pos);
    } else {
        snprintf(rope, sizeof rope, "{\"rope_type\": \"default\", \"rope_theta\": %s}", theta);
    }
    int n = 0;
    if (bos >= 0) n += snprintf(ids + n, sizeof ids - n, "  \"bos_token_id\": %d,\n", bos);
    if (eos >= 0) n += snprintf(ids + n, sizeof ids - n, "  \"eos_token_id\": %d,\n", eos);
    if (c->pad_token_id >= 0) snprintf(ids + n, sizeof ids - n, "  \"pad_token_id\": %d,\n", c->pad_token_id);
    if (!strcmp(c->model_type, "llama"))
        snprintf(extra, sizeof extra, "  \"attention_bias\": %s,\n  \"mlp_bias\": %s,\n",
                 c->attention_bias ? "true" : "false", c->mlp_bias ? "true" : "false");
    else if (!strcmp(c->model_type, "mistral") && c->sliding_window)
        snprintf(extra, sizeof extra, "  \"sliding_window\": %d,\n", c->sliding_window);
    char *s = malloc(4096);
    if (!s) return NULL;
    snprintf(s, 4096,
             "{\n  \"architectures\": [\"%s\"],\n  \"model_type\": \"%s\",\n%s%s  \"head_dim\": %d,\n"
             "  \"hidden_act\": \"silu\",\n"
             "  \"hidden_size\": %d,\n  \"initializer_range\": %s,\n  \"intermediate_size\": %d,\n"
             "  \"max_position_embeddings\": %d,\n  \"num_attention_heads\": %d,\n  \"num_hidden_layers\": %d,\n"
             "  \"num_key_value_heads\": %d,\n  \"rms_norm_eps\": %s,\n  \"rope_parameters\": %s,\n"
             "  \"rope_theta\": %s,\n"
             "  \"tie_word_embeddings\": %s,\n  \"torch_dtype\": \"float32\",\n  \"use_cache\": true,\n"
             "  \"vocab_size\": %d\n}\n",
             arch, c->model_type, ids, extra, c->head_dim, c->n_embd, std, c->n_inner, c->max_seq_len, c->n_head,
             c->n_layer, c->n_kv_head, eps, rope, theta, c->tied_embeddings ? "true" : "false", c->vocab_size);
    return s;
}

static void free_acts(Model *m) {
    LlamaActs *a = m->acts;
    float *fs[] = {a->cos_t, a->sin_t, a->encoded, a->ln1_rstd, a->ln2_rstd, a->qkv, a->lse, a->atty,
                   a->resid2, a->resid3, a->gate, a->up, a->lnf, a->lnf_rstd, a->ln, a->sw, a->tmp,
                   a->dresid, a->dln, a->datty, a->dsw, a->dgate, a->dup, a->dqkv, a->att_scratch};
    for (size_t i = 0; i < sizeof fs / sizeof *fs; i++) free(fs[i]);
    free(a);
    m->acts = NULL;
}

// The rotary tables and the layout, once per model (training and generation).
static LlamaActs *acts_of(Model *m) {
    if (m->acts) return m->acts;
    const ModelConfig *c = &m->cfg;
    LlamaActs *a = model_xrealloc(NULL, sizeof *a);
    memset(a, 0, sizeof *a);
    layout(c, a->ix);
    size_t n = (size_t)c->max_seq_len * (c->head_dim / 2);
    a->cos_t = model_xrealloc(NULL, n * sizeof(float));
    a->sin_t = model_xrealloc(NULL, n * sizeof(float));
    rope_tables(a->cos_t, a->sin_t, c->max_seq_len, c->head_dim, c->rope_theta, c->rope_llama3, c->rope_factor,
                c->rope_low_freq_factor, c->rope_high_freq_factor, c->rope_original_max_pos);
    m->acts = a;
    return a;
}

static LlamaActs *ensure_acts(Model *m, int B, int T) {
    LlamaActs *a = acts_of(m);
    const ModelConfig *c = &m->cfg;
    size_t L = c->n_layer, C = c->n_embd, I = c->n_inner, NH = c->n_head;
    size_t QD = NH * c->head_dim, QKVD = QD + 2 * (size_t)c->n_kv_head * c->head_dim;
    size_t BT = (size_t)B * T, nscratch = attention_scratch_floats(T);
    #define GROW(f, n) a->f = model_xrealloc(a->f, (n) * sizeof(float))
    if (BT > a->cap_bt) {
        GROW(encoded, BT * C); GROW(ln1_rstd, L * BT); GROW(ln2_rstd, L * BT); GROW(qkv, L * BT * QKVD);
        GROW(lse, L * BT * NH); GROW(atty, L * BT * QD); GROW(resid2, L * BT * C); GROW(resid3, L * BT * C);
        GROW(gate, L * BT * I); GROW(up, L * BT * I); GROW(lnf, BT * C); GROW(lnf_rstd, BT);
        GROW(ln, BT * C); GROW(sw, BT * I); GROW(tmp, BT * C); GROW(dresid, BT * C); GROW(dln, BT * C);
        GROW(datty, BT * QD); GROW(dsw, BT * I); GROW(dgate, BT * I); GROW(dup, BT * I); GROW(dqkv, BT * QKVD);
        a->cap_bt = BT;
    }
    if (nscratch > a->cap_scratch) { GROW(att_scratch, nscratch); a->cap_scratch = nscratch; }
    #undef GROW
    return a;
}

// Layer l's slice of kind k (NULL when the config has none).
static float *W(const Model *m, const int *ix, float *const *base, int k, int l) {
    return ix[k] < 0 ? NULL : base[ix[k]] + (size_t)l * model_slice(m, ix[k]);
}

// The window matters only where a sequence is longer than it: a plain causal mask otherwise.
static int window_for(const ModelConfig *c, int T) {
    return c->sliding_window > 0 && c->sliding_window < T ? c->sliding_window : 0;
}

static const float *body_forward(Model *m) {
    const ModelBatch *bt = &m->batch;
    const ModelConfig *c = &m->cfg;
    int B = bt->B, T = bt->T, BT = B * T;
    LlamaActs *a = ensure_acts(m, B, T);
    const int *ix = a->ix, *branch = bt->has_branch ? bt->branch : NULL;
    float *const *p = m->param;
    int C = c->n_embd, I = c->n_inner, NH = c->n_head, KVH = c->n_kv_head, hd = c->head_dim;
    int QD = NH * hd, KVD = KVH * hd, QKVD = QD + 2 * KVD, L = c->n_layer;
    AttnDims ad = {B, T, NH, KVH, hd, window_for(c, T)};
    encoder_forward(a->encoded, bt->tokens, bt->pos, p[ix[K_EMB]], NULL, BT, C);
    for (int l = 0; l < L; l++) {
        size_t o = (size_t)l * BT;
        const float *res = l == 0 ? a->encoded : a->resid3 + (o - BT) * C;
        float *qkv = a->qkv + o * QKVD, *atty = a->atty + o * QD, *resid2 = a->resid2 + o * C;
        float *gate = a->gate + o * I, *up = a->up + o * I;
        rmsnorm_forward(a->ln, a->ln1_rstd + o, res, W(m, ix, p, K_LN1, l), BT, C, c->norm_eps);
        matmul_nt_forward(qkv, QKVD, a->ln, W(m, ix, p, K_QW, l), W(m, ix, p, K_QB, l), BT, C, QD);
        matmul_nt_forward(qkv + QD, QKVD, a->ln, W(m, ix, p, K_KW, l), W(m, ix, p, K_KB, l), BT, C, KVD);
        matmul_nt_forward(qkv + QD + KVD, QKVD, a->ln, W(m, ix, p, K_VW, l), W(m, ix, p, K_VB, l), BT, C, KVD);
        rope_forward(qkv, QKVD, bt->pos, a->cos_t, a->sin_t, BT, NH + KVH, hd);  // q and k heads
        attention_forward(atty, a->lse + o * NH, qkv, a->att_scratch, branch, &ad);
        matmul_nt_forward(a->tmp, C, atty, W(m, ix, p, K_OW, l), W(m, ix, p, K_OB, l), BT, QD, C);
        residual_forward(resid2, res, a->tmp, BT * C);
        rmsnorm_forward(a->ln, a->ln2_rstd + o, resid2, W(m, ix, p, K_LN2, l), BT, C, c->norm_eps);
        matmul_nt_forward(gate, I, a->ln, W(m, ix, p, K_GATEW, l), W(m, ix, p, K_GATEB, l), BT, C, I);
        matmul_nt_forward(up, I, a->ln, W(m, ix, p, K_UPW, l), W(m, ix, p, K_UPB, l), BT, C, I);
        swiglu_forward(a->sw, gate, up, (size_t)BT * I);
        matmul_nt_forward(a->tmp, C, a->sw, W(m, ix, p, K_DOWNW, l), W(m, ix, p, K_DOWNB, l), BT, I, C);
        residual_forward(a->resid3 + o * C, resid2, a->tmp, BT * C);
    }
    rmsnorm_forward(a->lnf, a->lnf_rstd, a->resid3 + (size_t)(L - 1) * BT * C, p[ix[K_NORM]], BT, C,
                    c->norm_eps);
    return a->lnf;
}

static void body_backward(Model *m) {
    const ModelBatch *bt = &m->batch;
    const ModelConfig *c = &m->cfg;
    int B = bt->B, T = bt->T, BT = B * T;
    LlamaActs *a = m->acts;
    const int *ix = a->ix, *branch = bt->has_branch ? bt->branch : NULL;
    float *const *p = m->param, *const *g = m->grad;
    int C = c->n_embd, I = c->n_inner, NH = c->n_head, KVH = c->n_kv_head, hd = c->head_dim;
    int QD = NH * hd, KVD = KVH * hd, QKVD = QD + 2 * KVD, L = c->n_layer;
    AttnDims ad = {B, T, NH, KVH, hd, window_for(c, T)};
    memset(a->dresid, 0, (size_t)BT * C * sizeof(float));
    rmsnorm_backward(a->dresid, g[ix[K_NORM]], bt->dhidden, a->resid3 + (size_t)(L - 1) * BT * C,
                     p[ix[K_NORM]], a->lnf_rstd, BT, C);
    // dresid holds d(block output); each block adds its branch gradients into it in place.
    for (int l = L - 1; l >= 0; l--) {
        size_t o = (size_t)l * BT;
        const float *res = l == 0 ? a->encoded : a->resid3 + (o - BT) * C, *resid2 = a->resid2 + o * C;
        const float *qkv = a->qkv + o * QKVD, *gate = a->gate + o * I, *up = a->up + o * I;
        swiglu_forward(a->sw, gate, up, (size_t)BT * I);
        memset(a->dsw, 0, (size_t)BT * I * sizeof(float));
        matmul_nt_backward(a->dsw, W(m, ix, g, K_DOWNW, l), W(m, ix, g, K_DOWNB, l), a->dresid, C, a->sw,
                           W(m, ix, p, K_DOWNW, l), BT, I, C);
        swiglu_backward(a->dgate, a->dup, a->dsw, gate, up, (size_t)BT * I);
        rmsnorm_forward(a->ln, NULL, resid2, W(m, ix, p, K_LN2, l), BT, C, c->norm_eps);
        memset(a->dln, 0, (size_t)BT * C * sizeof(float));
        matmul_nt_backward(a->dln, W(m, ix, g, K_GATEW, l), W(m, ix, g, K_GATEB, l), a->dgate, I, a->ln,
                           W(m, ix, p, K_GATEW, l), BT, C, I);
        matmul_nt_backward(a->dln, W(m, ix, g, K_UPW, l), W(m, ix, g, K_UPB, l), a->dup, I, a->ln,
                           W(m, ix, p, K_UPW, l), BT, C, I);
        rmsnorm_backward(a->dresid, W(m, ix, g, K_LN2, l), a->dln, resid2, W(m, ix, p, K_LN2, l),
                         a->ln2_rstd + o, BT, C);
        memset(a->datty, 0, (size_t)BT * QD * sizeof(float));
        matmul_nt_backward(a->datty, W(m, ix, g, K_OW, l), W(m, ix, g, K_OB, l), a->dresid, C, a->atty + o * QD,
                           W(m, ix, p, K_OW, l), BT, QD, C);
        memset(a->dqkv, 0, (size_t)BT * QKVD * sizeof(float));
        attention_backward(a->dqkv, a->datty, qkv, a->lse + o * NH, a->att_scratch, branch, &ad);
        rope_backward(a->dqkv, QKVD, bt->pos, a->cos_t, a->sin_t, BT, NH + KVH, hd);
        rmsnorm_forward(a->ln, NULL, res, W(m, ix, p, K_LN1, l), BT, C, c->norm_eps);
        memset(a->dln, 0, (size_t)BT * C * sizeof(float));
        matmul_nt_backward(a->dln, W(m, ix, g, K_QW, l), W(m, ix, g, K_QB, l), a->dqkv, QKVD, a->ln,
                           W(m, ix, p, K_QW, l), BT, C, QD);
        matmul_nt_backward(a->dln, W(m, ix, g, K_KW, l), W(m, ix, g, K_KB, l), a->dqkv + QD, QKVD, a->ln,
                           W(m, ix, p, K_KW, l), BT, C, KVD);
        matmul_nt_backward(a->dln, W(m, ix, g, K_VW, l), W(m, ix, g, K_VB, l), a->dqkv + QD + KVD, QKVD,
                           a->ln, W(m, ix, p, K_VW, l), BT, C, KVD);
        rmsnorm_backward(a->dresid, W(m, ix, g, K_LN1, l), a->dln, res, W(m, ix, p, K_LN1, l),
                         a->ln1_rstd + o, BT, C);
    }
    encoder_backward(g[ix[K_EMB]], NULL, a->dresid, bt->tokens, bt->pos, BT, C);
}

// ---- generation: per layer q, k, v, o, gate, up, down packed once, then the LM head.
enum { M_Q, M_K, M_V, M_O, M_GATE, M_UP, M_DOWN, MATS_PER_LAYER };
enum { BUF_X, BUF_LN, BUF_Q, BUF_K, BUF_V, BUF_ATTY, BUF_PROJ, BUF_GATE, BUF_UP, NBUF };

static void *gen_create(Model *m, PackFormat fmt) {
    const ModelConfig *c = &m->cfg;
    LlamaActs *a = acts_of(m);
    const int *ix = a->ix;
    int L = c->n_layer, C = c->n_embd, I = c->n_inner, QD = c->n_head * c->head_dim, KVD = c->n_kv_head * c->head_dim;
    size_t widths[NBUF] = {C, C, QD, KVD, KVD, QD, C, I, I};
    int max_k = C > I ? C : I;
    if (QD > max_k) max_k = QD;
    PackedSet *g = packed_set_new(fmt, L * MATS_PER_LAYER + 1, max_k, NBUF, widths, c->max_seq_len);
    if (!g) return NULL;
    // nn.Linear W[out, in]: element (k = in, j = out) of the product's matrix is W[j * in + k]
    static const int kind[MATS_PER_LAYER] = {K_QW, K_KW, K_VW, K_OW, K_GATEW, K_UPW, K_DOWNW};
    const int in[MATS_PER_LAYER] = {C, C, C, QD, C, C, I}, out[MATS_PER_LAYER] = {QD, KVD, KVD, C, I, I, C};
    for (int l = 0; l < L; l++)
        for (int k = 0; k < MATS_PER_LAYER; k++)
            if (packed_make(g->mats + l * MATS_PER_LAYER + k, fmt, W(m, ix, m->param, kind[k], l), in[k], out[k], 1,
                            (size_t)in[k])) {
                packed_set_free(g);
                return NULL;
            }
    if (packed_make(g->mats + L * MATS_PER_LAYER, fmt, m->param[m->head], C, c->vocab_size, 1, C)) {
        packed_set_free(g);
        return NULL;
    }
    return g;
}

static int gen_forward(Model *m, void *state, const GenRows *rows, const int *sample_row,
                       int nsample, float *logits) {
    PackedSet *g = state;
    const ModelConfig *c = &m->cfg;
    const int *ix = ((LlamaActs *)m->acts)->ix;
    const LlamaActs *a = m->acts;
    float *const *p = m->param;
    int C = c->n_embd, I = c->n_inner, NH = c->n_head, KVH = c->n_kv_head, hd = c->head_dim, n = rows->n;
    int QD = NH * hd, KVD = KVH * hd;
    if (packed_set_rows(g, (size_t)n)) return -1;
    float **b = g->buf;
    #define LINEAR(out, in, l, k, bias) \
        packed_matmul(out, in, &g->mats[(l) * MATS_PER_LAYER + (k)], bias, n, g->scratch)
    encoder_forward(b[BUF_X], rows->tok, rows->pos, p[ix[K_EMB]], NULL, n, C);
    for (int l = 0; l < c->n_layer; l++) {
        rmsnorm_forward(b[BUF_LN], NULL, b[BUF_X], W(m, ix, p, K_LN1, l), n, C, c->norm_eps);
        LINEAR(b[BUF_Q], b[BUF_LN], l, M_Q, W(m, ix, p, K_QB, l));
        LINEAR(b[BUF_K], b[BUF_LN], l, M_K, W(m, ix, p, K_KB, l));
        LINEAR(b[BUF_V], b[BUF_LN], l, M_V, W(m, ix, p, K_VB, l));
        rope_forward(b[BUF_Q], QD, rows->pos, a->cos_t, a->sin_t, n, NH, hd);
        rope_forward(b[BUF_K], KVD, rows->pos, a->cos_t, a->sin_t, n, KVH, hd);
        for (int r = 0; r < n; r++)
            kvcache_store(rows->cache[r], rows->cache_cap[r], l, rows->pos[r], b[BUF_K] + (size_t)r * KVD,
                          b[BUF_V] + (size_t)r * KVD, KVH, hd);
        kvcache_attend(b[BUF_ATTY], b[BUF_Q], QD, rows->cache, rows->cache_cap, rows->pos, n, l, NH, KVH, hd,
                       c->sliding_window, g->att_scratch, g->att_stride);
        LINEAR(b[BUF_PROJ], b[BUF_ATTY], l, M_O, W(m, ix, p, K_OB, l));
        residual_forward(b[BUF_X], b[BUF_X], b[BUF_PROJ], n * C);
        rmsnorm_forward(b[BUF_LN], NULL, b[BUF_X], W(m, ix, p, K_LN2, l), n, C, c->norm_eps);
        LINEAR(b[BUF_GATE], b[BUF_LN], l, M_GATE, W(m, ix, p, K_GATEB, l));
        LINEAR(b[BUF_UP], b[BUF_LN], l, M_UP, W(m, ix, p, K_UPB, l));
        swiglu_forward(b[BUF_GATE], b[BUF_GATE], b[BUF_UP], (size_t)n * I);
        LINEAR(b[BUF_PROJ], b[BUF_GATE], l, M_DOWN, W(m, ix, p, K_DOWNB, l));
        residual_forward(b[BUF_X], b[BUF_X], b[BUF_PROJ], n * C);
    }
    #undef LINEAR
    for (int i = 0; i < nsample; i++)  // the sampled rows' final states (nsample <= n)
        memcpy(b[BUF_LN] + (size_t)i * C, b[BUF_X] + (size_t)sample_row[i] * C, C * sizeof(float));
    rmsnorm_forward(b[BUF_LN], NULL, b[BUF_LN], p[ix[K_NORM]], nsample, C, c->norm_eps);
    packed_matmul(logits, b[BUF_LN], &g->mats[c->n_layer * MATS_PER_LAYER], NULL, nsample, g->scratch);
    return 0;
}

const ModelOps llama_ops = {parse_config, describe, ignored, init_random, config_json, body_forward,
                            body_backward, free_acts, gen_create, packed_set_free, gen_forward};
