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

int hf_load_weights(const char *path, Model *m) {
    StFile f;
    if (st_open(path, &f)) return -1;
    char *used = calloc((size_t)f.n, 1);
    int rc = used ? 0 : err_set(EXIT_IO, "out_of_memory", "%s: cannot allocate the tensor table", path);
    for (int p = 0; p < m->ntensors && rc == 0; p++) {
        const ParamTensor *pt = &m->tensor[p];
        int layers = pt->per_layer ? m->cfg.n_layer : 1;
        size_t slice = model_slice(m, p);
        for (int l = 0; l < layers && rc == 0; l++) {
            char name[160];
            tensor_name(m, p, l, name, sizeof name);
            const StTensor *t = st_find(&f, name);
            const char *bare = without_prefix(name);
            if (!t && bare) t = st_find(&f, bare);
            if (!t) { rc = err_set(EXIT_BAD_INPUT, "missing_tensor", "%s: tensor %s is missing", path, name); break; }
            used[t - f.t] = 1;
            if (t->dtype == ST_OTHER) { rc = err_set(EXIT_BAD_INPUT, "bad_dtype", "%s: tensor %s has dtype %s; allowed: F32, F16, BF16", path, name, t->dtype_name); break; }
            int shape_ok = t->ndim == pt->ndim;
            for (int d = 0; d < pt->ndim && shape_ok; d++) shape_ok = t->shape[d] == pt->shape[d];
            if (!shape_ok) {
                char got[128] = "", want[128];
                for (int d = 0, k = 0; d < t->ndim; d++) k += snprintf(got + k, sizeof got - (size_t)k, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
                if (pt->ndim == 2) snprintf(want, sizeof want, "%lld, %lld", (long long)pt->shape[0], (long long)pt->shape[1]);
                else snprintf(want, sizeof want, "%lld", (long long)pt->shape[0]);
                rc = err_set(EXIT_BAD_INPUT, "bad_shape", "%s: tensor %s has shape [%s]; config.json requires [%s]", path, name, got, want);
                break;
            }
            st_to_f32(t, m->param[p] + (size_t)l * slice, slice);
        }
    }
    for (int i = 0; i < f.n && rc == 0; i++)
        if (!used[i] && !m->ops->ignored(m, f.t[i].name))
            rc = err_set(EXIT_BAD_INPUT, "unknown_tensor", "%s: unknown tensor %s (not a parameter of this %s model)", path, f.t[i].name,
                         m->cfg.model_type);
    for (size_t i = 0; i < m->num_params && rc == 0; i++)
        if (!isfinite(m->params[i])) rc = err_set(EXIT_BAD_INPUT, "bad_weights", "%s: weights hold a NaN or infinite value", path);
    free(used);
    st_close(&f);
    return rc;
}

int hf_load_model(const char *dir, Model *m) {
    char path[4200];
    ModelConfig cfg;
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (hf_load_config(path, &cfg)) return -1;
    if (model_build(m, &cfg)) return err_set(EXIT_IO, "out_of_memory", "cannot allocate the model of %s", path);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (hf_load_weights(path, m)) { model_free(m); return -1; }
    return 0;
}

int hf_save_weights(const Model *m, const char *path) {
    int cap = 0, n = 0;
    for (int p = 0; p < m->ntensors; p++) cap += m->tensor[p].per_layer ? m->cfg.n_layer : 1;
    StWrite *tw = malloc(sizeof *tw * (size_t)cap);
    char *names = malloc((size_t)cap * 160);
    if (!tw || !names) { free(tw); free(names); return err_set(EXIT_IO, "out_of_memory", "cannot allocate tensor names for %s", path); }
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
    int rc = st_save(path, tw, n);
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

// The source config.json with its dtype fields set to float32 (the engine saves F32 weights,
// and transformers and vLLM pick their load dtype from the config).
static int write_f32_config(const char *src, const char *dir) {
    char *out = NULL, dst[4200];
    size_t len = 0;
    JsonValue root;
    if (read_json_file(src, &root)) return -1;
    for (int i = 0; root.type == JSON_OBJECT && i < root.n; i++) {
        JsonValue *v = &root.items[i];
        if ((!strcmp(root.keys[i], "torch_dtype") || !strcmp(root.keys[i], "dtype")) && v->type == JSON_STRING) {
            free(v->str);
            v->str = strdup("float32");
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

int hf_save_dir(const Model *m, const char *src_dir, const char *dst,
                int (*extra)(const char *dir, void *ctx), void *ctx, int done) {
    char tmp[4200], path[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp-%d", dst, (int)getpid());
    if (remove_tree(tmp) || mkdir_p(tmp)) return -1;
    snprintf(path, sizeof path, "%s/config.json", src_dir);
    if (write_f32_config(path, tmp) || hf_copy_tokenizer_files(src_dir, tmp)) return -1;
    snprintf(path, sizeof path, "%s/model.safetensors", tmp);
    if (hf_save_weights(m, path)) return -1;
    if (extra && extra(tmp, ctx)) return -1;
    if (done) {
        snprintf(path, sizeof path, "%s/DONE", tmp);
        if (write_file_atomic(path, "", 0)) return -1;
    }
    if (fsync_dir(tmp)) return -1;
    return replace_dir(tmp, dst);
}
