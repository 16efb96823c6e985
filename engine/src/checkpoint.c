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

int hf_load_config(const char *path, ModelConfig *cfg) {
    JsonValue root;
    if (read_json_file(path, &root)) return -1;
    int rc = model_parse_config(&root, path, cfg);
    json_free(&root);
    return rc;
}

// HF name of layer l's slice of tensor t.
static void tensor_name(const Model *m, int t, int l, char *out, size_t cap) {
    if (m->tensor[t].per_layer) snprintf(out, cap, m->tensor[t].name, l);
    else snprintf(out, cap, "%s", m->tensor[t].name);
}

// A checkpoint saved from the bare transformer (GPT2Model, LlamaModel) lacks the prefix.
static const char *without_prefix(const char *name) {
    static const char *prefixes[] = {"transformer.", "model."};
    for (size_t i = 0; i < sizeof prefixes / sizeof *prefixes; i++)
        if (!strncmp(name, prefixes[i], strlen(prefixes[i]))) return name + strlen(prefixes[i]);
    return NULL;
}

int hf_load_weights(const char *dir, Model *m) {
    StSet *st = st_open_dir(dir);
    if (!st) return -1;
    int rc = 0;
    for (int p = 0; p < m->ntensors && rc == 0; p++) {
        const ParamTensor *pt = &m->tensor[p];
        int layers = pt->per_layer ? m->cfg.n_layer : 1;
        size_t slice = model_slice(m, p);
        for (int l = 0; l < layers && rc == 0; l++) {
            char name[160];
            tensor_name(m, p, l, name, sizeof name);
            const char *bare = without_prefix(name);
            const char *key = st_has(st, name) || !bare || !st_has(st, bare) ? name : bare;
            rc = st_read_f32(st, key, pt->shape, pt->ndim, m->param[p] + (size_t)l * slice);
        }
    }
    for (const char *u; rc == 0 && (u = st_unused(st));)
        if (!m->ops->ignored(m, u))
            rc = err_set(EXIT_BAD_INPUT, "unknown_tensor", "%s: unknown tensor %s (not a parameter of this %s model)",
                         dir, u, m->cfg.model_type);
    st_close(st);
    return rc;
}

int hf_load_model(const char *dir, Model *m) {
    char path[4200];
    ModelConfig cfg;
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (hf_load_config(path, &cfg)) return -1;
    if (model_build(m, &cfg)) return err_set(EXIT_IO, "out_of_memory", "cannot allocate the model of %s", path);
    if (hf_load_weights(dir, m)) { model_free(m); return -1; }
    return 0;
}

int hf_save_weights(const Model *m, const char *dir, const char *dtype, size_t shard_bytes) {
    int cap = 0, n = 0;
    for (int p = 0; p < m->ntensors; p++) cap += m->tensor[p].per_layer ? m->cfg.n_layer : 1;
    StOut *tw = checked_calloc((size_t)cap, sizeof *tw, dir);
    char *names = checked_calloc((size_t)cap, 160, dir);
    if (!tw || !names) { free(tw); free(names); return -1; }
    for (int p = 0; p < m->ntensors; p++) {
        int layers = m->tensor[p].per_layer ? m->cfg.n_layer : 1;
        size_t slice = model_slice(m, p);
        for (int l = 0; l < layers; l++, n++) {
            tensor_name(m, p, l, names + (size_t)n * 160, 160);
            tw[n].name = names + (size_t)n * 160;
            tw[n].ndim = m->tensor[p].ndim;
            for (int d = 0; d < tw[n].ndim; d++) tw[n].shape[d] = m->tensor[p].shape[d];
            tw[n].data = m->param[p] + (size_t)l * slice;
        }
    }
    int rc = st_save_dir(dir, tw, n, dtype, shard_bytes);
    free(tw);
    free(names);
    return rc;
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
    const char *torch = !strcmp(st_save_dtype(dtype), "BF16")  ? "bfloat16"
                        : !strcmp(st_save_dtype(dtype), "F16") ? "float16"
                                                               : "float32";
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

int hf_save_dir(const Model *m, const char *src_dir, const char *dst, const char *dtype, size_t shard_bytes,
                int (*extra)(const char *dir, void *ctx), void *ctx, int done) {
    if (!st_save_dtype(dtype))
        return err_set(EXIT_BAD_INPUT, "usage", "cannot save %s as dtype \"%s\" (allowed: f32, bf16, f16)", dst, dtype);
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
