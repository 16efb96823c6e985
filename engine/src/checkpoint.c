#include "checkpoint.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "json.h"
#include "safetensors.h"
#include "util.h"

static const char *TOKENIZER_FILES[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                        "generation_config.json", "vocab.json", "merges.txt"};

static int cfg_int(const JsonValue *root, const char *path, const char *key, int required, int def, int *out) {
    const JsonValue *v = json_get(root, key);
    if (!v) {
        if (required) return err_set(EXIT_BAD_INPUT, "bad_config", "%s: field %s is missing (a positive integer is required)", path, key);
        *out = def;
        return 0;
    }
    if (!json_is_int(v, 1, 1 << 30))
        return err_set(EXIT_BAD_INPUT, "bad_config", "%s: field %s must be a positive integer, got a %s", path, key,
                       v->type == JSON_NUMBER ? "non-positive or non-integral number" : json_type_name(v->type));
    *out = (int)v->num;
    return 0;
}

// Reads and parses a JSON file; errors name the file.
static int read_json_file(const char *path, JsonValue *root) {
    char *text;
    size_t n;
    if (read_file(path, &text, &n)) return -1;
    char perr[256];
    int rc = json_parse(text, n, root, perr, sizeof perr);
    free(text);
    if (rc) return err_set(EXIT_BAD_INPUT, "bad_config", "%s: not valid JSON (%s)", path, perr);
    return 0;
}

int hf_load_config(const char *path, GPT2Config *cfg) {
    JsonValue root;
    if (read_json_file(path, &root)) return -1;
    int rc = -1;
    memset(cfg, 0, sizeof *cfg);
    if (root.type != JSON_OBJECT) { err_set(EXIT_BAD_INPUT, "bad_config", "%s: expected a JSON object, got a %s", path, json_type_name(root.type)); goto out; }
    const JsonValue *mt = json_get(&root, "model_type"), *act = json_get(&root, "activation_function"),
                    *inner = json_get(&root, "n_inner"), *eps = json_get(&root, "layer_norm_epsilon");
    if (mt && (mt->type != JSON_STRING || strcmp(mt->str, "gpt2"))) { err_set(EXIT_BAD_INPUT, "bad_config", "%s: field model_type must be \"gpt2\"", path); goto out; }
    if (cfg_int(&root, path, "vocab_size", 1, 0, &cfg->vocab_size) || cfg_int(&root, path, "n_positions", 1, 0, &cfg->max_seq_len) ||
        cfg_int(&root, path, "n_layer", 1, 0, &cfg->n_layer) || cfg_int(&root, path, "n_head", 1, 0, &cfg->n_head) ||
        cfg_int(&root, path, "n_embd", 1, 0, &cfg->n_embd))
        goto out;
    if (cfg->n_embd % cfg->n_head) { err_set(EXIT_BAD_INPUT, "bad_config", "%s: field n_embd (%d) must be divisible by n_head (%d)", path, cfg->n_embd, cfg->n_head); goto out; }
    if (!inner || inner->type == JSON_NULL) cfg->n_inner = 4 * cfg->n_embd;
    else if (cfg_int(&root, path, "n_inner", 1, 0, &cfg->n_inner)) goto out;
    cfg->ln_eps = 1e-5f;
    if (eps) {
        if (eps->type != JSON_NUMBER || !(eps->num > 0)) { err_set(EXIT_BAD_INPUT, "bad_config", "%s: field layer_norm_epsilon must be a positive number", path); goto out; }
        cfg->ln_eps = (float)eps->num;
    }
    // gelu_pytorch_tanh is the same tanh approximation as gelu_new.
    if (act && (act->type != JSON_STRING || (strcmp(act->str, "gelu_new") && strcmp(act->str, "gelu_pytorch_tanh")))) {
        err_set(EXIT_BAD_INPUT, "bad_config", "%s: field activation_function must be \"gelu_new\" (or \"gelu_pytorch_tanh\")", path);
        goto out;
    }
    static const struct { const char *key; int supported; } flags[] = {
        {"scale_attn_weights", 1}, {"scale_attn_by_inverse_layer_idx", 0}, {"add_cross_attention", 0}};
    for (size_t i = 0; i < sizeof flags / sizeof *flags; i++) {
        const JsonValue *v = json_get(&root, flags[i].key);
        if (v && v->type == JSON_BOOL && v->boolean != flags[i].supported) {
            err_set(EXIT_BAD_INPUT, "bad_config", "%s: field %s must be %s (the engine implements standard GPT-2)", path, flags[i].key,
                    flags[i].supported ? "true" : "false");
            goto out;
        }
    }
    rc = 0;
out:
    json_free(&root);
    return rc;
}

// HF name, rank and per-layer flag of each parameter tensor (see gpt2.h for the layout).
static const struct { const char *name; int per_layer; } PNAMES[NUM_PARAM_TENSORS] = {
    {"wte.weight", 0}, {"wpe.weight", 0}, {"ln_1.weight", 1}, {"ln_1.bias", 1},
    {"attn.c_attn.weight", 1}, {"attn.c_attn.bias", 1}, {"attn.c_proj.weight", 1}, {"attn.c_proj.bias", 1},
    {"ln_2.weight", 1}, {"ln_2.bias", 1}, {"mlp.c_fc.weight", 1}, {"mlp.c_fc.bias", 1},
    {"mlp.c_proj.weight", 1}, {"mlp.c_proj.bias", 1}, {"ln_f.weight", 0}, {"ln_f.bias", 0}};

// Shape of one (per-layer slice of a) tensor; returns its rank.
static int tensor_shape(const GPT2Config *c, int p, int64_t shape[2]) {
    int C = c->n_embd, I = c->n_inner;
    switch (p) {
    case P_WTE: shape[0] = c->vocab_size; shape[1] = C; return 2;
    case P_WPE: shape[0] = c->max_seq_len; shape[1] = C; return 2;
    case P_QKVW: shape[0] = C; shape[1] = 3 * C; return 2;
    case P_QKVB: shape[0] = 3 * C; return 1;
    case P_ATTPROJW: shape[0] = C; shape[1] = C; return 2;
    case P_FCW: shape[0] = C; shape[1] = I; return 2;
    case P_FCB: shape[0] = I; return 1;
    case P_FCPROJW: shape[0] = I; shape[1] = C; return 2;
    default: shape[0] = C; return 1;
    }
}

static void tensor_name(char *out, size_t cap, int p, int layer) {
    if (PNAMES[p].per_layer) snprintf(out, cap, "transformer.h.%d.%s", layer, PNAMES[p].name);
    else snprintf(out, cap, "transformer.%s", PNAMES[p].name);
}

// Buffers HF keeps in GPT-2 checkpoints that are not parameters; lm_head is tied to wte.
static int ignored_name(const char *name) {
    size_t n = strlen(name);
    return !strcmp(name, "lm_head.weight") || (n > 10 && !strcmp(name + n - 10, ".attn.bias")) ||
           (n > 17 && !strcmp(name + n - 17, ".attn.masked_bias"));
}

int hf_load_weights(const char *dir, GPT2 *m) {
    StSet *st = st_open_dir(dir);
    if (!st) return -1;
    const GPT2Config *c = &m->cfg;
    int rc = 0;
    for (int p = 0; p < NUM_PARAM_TENSORS && rc == 0; p++) {
        int layers = PNAMES[p].per_layer ? c->n_layer : 1;
        size_t slice = m->param_sizes[p] / (size_t)layers;
        for (int l = 0; l < layers && rc == 0; l++) {
            char name[128];
            int64_t shape[2];
            int ndim = tensor_shape(c, p, shape);
            tensor_name(name, sizeof name, p, l);
            const char *key = st_has(st, name) || !st_has(st, name + strlen("transformer.")) ? name
                              : name + strlen("transformer.");  // saved from GPT2Model
            rc = st_read_f32(st, key, shape, ndim, m->param[p] + (size_t)l * slice);
        }
    }
    for (const char *u; rc == 0 && (u = st_unused(st));)
        if (!ignored_name(u)) rc = err_set(EXIT_BAD_INPUT, "unknown_tensor", "%s: unknown tensor %s (not a GPT-2 parameter)", dir, u);
    st_close(st);
    return rc;
}

int hf_load_model(const char *dir, GPT2 *m) {
    char path[4200];
    GPT2Config cfg;
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (hf_load_config(path, &cfg)) return -1;
    if (gpt2_build(m, &cfg)) return err_set(EXIT_IO, "out_of_memory", "cannot allocate the model of %s", path);
    if (hf_load_weights(dir, m)) { gpt2_free(m); return -1; }
    return 0;
}

int hf_save_weights(const GPT2 *m, const char *dir, const char *dtype, size_t shard_bytes) {
    const GPT2Config *c = &m->cfg;
    int cap = NUM_PARAM_TENSORS * c->n_layer, n = 0;
    StOut *tw = checked_calloc((size_t)cap, sizeof *tw, dir);
    char *names = checked_calloc((size_t)cap, 64, dir);
    if (!tw || !names) { free(tw); free(names); return -1; }
    for (int p = 0; p < NUM_PARAM_TENSORS; p++) {
        int layers = PNAMES[p].per_layer ? c->n_layer : 1;
        size_t slice = m->param_sizes[p] / (size_t)layers;
        for (int l = 0; l < layers; l++, n++) {
            tensor_name(names + (size_t)n * 64, 64, p, l);
            tw[n].name = names + (size_t)n * 64;
            tw[n].ndim = tensor_shape(c, p, tw[n].shape);
            tw[n].data = m->param[p] + (size_t)l * slice;
        }
    }
    int rc = st_save_dir(dir, tw, n, dtype, shard_bytes);
    free(tw);
    free(names);
    return rc;
}

char *hf_config_json(const GPT2Config *c, int bos, int eos) {
    if (bos < 0) bos = c->vocab_size - 1;
    if (eos < 0) eos = c->vocab_size - 1;
    char *s = malloc(2048);
    char inner[32], eps[32];
    for (int prec = 6; prec <= 9; prec++) {  // shortest text that reads back as the same float
        snprintf(eps, sizeof eps, "%.*g", prec, (double)c->ln_eps);
        if ((float)strtod(eps, NULL) == c->ln_eps) break;
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

int hf_copy_tokenizer_files(const char *src_dir, const char *dst_dir) {
    for (size_t i = 0; i < sizeof TOKENIZER_FILES / sizeof *TOKENIZER_FILES; i++) {
        char src[4200], dst[4200];
        snprintf(src, sizeof src, "%s/%s", src_dir, TOKENIZER_FILES[i]);
        snprintf(dst, sizeof dst, "%s/%s", dst_dir, TOKENIZER_FILES[i]);
        if (file_exists(src) && copy_file(src, dst)) return -1;
    }
    return 0;
}

// The source config.json with its dtype fields set to the saved weights' dtype (transformers
// and vLLM pick their load dtype from the config).
static int write_config(const char *src, const char *dir, const char *dtype) {
    const char *torch = !strcmp(st_save_dtype(dtype), "BF16") ? "bfloat16" : !strcmp(st_save_dtype(dtype), "F16") ? "float16" : "float32";
    char *out = NULL, dst[4200];
    size_t len = 0;
    JsonValue root;
    if (read_json_file(src, &root)) return -1;
    for (int i = 0; root.type == JSON_OBJECT && i < root.n; i++) {
        JsonValue *v = &root.items[i];
        if ((!strcmp(root.keys[i], "torch_dtype") || !strcmp(root.keys[i], "dtype")) && v->type == JSON_STRING) {
            free(v->str);
            v->str = strdup(torch);
        }
    }
    FILE *f = open_memstream(&out, &len);
    json_write_value(f, &root, 0);
    fputc('\n', f);
    fclose(f);
    json_free(&root);
    snprintf(dst, sizeof dst, "%s/config.json", dir);
    int rc = write_file_atomic(dst, out, len);
    free(out);
    return rc;
}

int hf_save_dir(const GPT2 *m, const char *src_dir, const char *dst, const char *dtype, size_t shard_bytes,
                int (*extra)(const char *dir, void *ctx), void *ctx, int done) {
    if (!st_save_dtype(dtype)) return err_set(EXIT_BAD_INPUT, "usage", "cannot save %s as dtype \"%s\" (allowed: f32, bf16, f16)", dst, dtype);
    char tmp[4200], path[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp-%d", dst, (int)getpid());
    if (remove_tree(tmp) || mkdir_p(tmp)) return -1;
    snprintf(path, sizeof path, "%s/config.json", src_dir);
    if (write_config(path, tmp, dtype) || hf_copy_tokenizer_files(src_dir, tmp)) return -1;
    if (hf_save_weights(m, tmp, dtype, shard_bytes)) return -1;
    if (extra && extra(tmp, ctx)) return -1;
    if (done) {
        snprintf(path, sizeof path, "%s/DONE", tmp);
        if (write_file_atomic(path, "", 0)) return -1;
    }
    if (fsync_dir(tmp)) return -1;
    return replace_dir(tmp, dst);
}
