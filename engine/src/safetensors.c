#include "safetensors.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>
#include "json.h"
#include "util.h"

// Header JSON above this is refused before it is parsed (the safetensors library's limit).
#define MAX_HEADER (100u << 20)
#define MAX_DIMS 8

// Every safetensors dtype with its element size; the first three are the ones the engine reads.
enum { DT_F32, DT_BF16, DT_F16, DT_READABLE };
static const struct { const char *name; int size; } DTYPES[] = {
    {"F32", 4}, {"BF16", 2}, {"F16", 2}, {"F64", 8}, {"I64", 8}, {"U64", 8}, {"I32", 4}, {"U32", 4},
    {"I16", 2}, {"U16", 2}, {"I8", 1}, {"U8", 1}, {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
#define NUM_DTYPES (int)(sizeof DTYPES / sizeof *DTYPES)

typedef struct {
    char *name;
    int dtype;   // index into DTYPES
    int ndim;
    int64_t shape[MAX_DIMS];
    uint64_t count, begin, end;  // elements; data_offsets
    const unsigned char *data;
    int shard;
    int used;
} Tensor;

typedef struct {
    char *path;
    unsigned char *map;
    size_t size;
} Shard;

struct StSet {
    char *entry;  // model.safetensors or the index: named by "tensor is missing" errors
    Shard *shards;
    int nshards;
    Tensor *t;    // sorted by name after opening
    int n, cap;
    int next_unused;
};

static int by_name(const void *a, const void *b) {
    return strcmp(((const Tensor *)a)->name, ((const Tensor *)b)->name);
}

static int by_offset(const void *a, const void *b) {
    const Tensor *x = *(const Tensor *const *)a, *y = *(const Tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static void shape_text(char *out, size_t cap, const int64_t *shape, int ndim) {
    size_t k = (size_t)snprintf(out, cap, "[");
    for (int d = 0; d < ndim && k < cap; d++)
        k += (size_t)snprintf(out + k, cap - k, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (k < cap) snprintf(out + k, cap - k, "]");
}

// One header entry into t; errors name the file and the tensor.
static int parse_entry(const char *path, const char *name, const JsonValue *e, uint64_t data_size, Tensor *t) {
#define BAD(...) return err_set(EXIT_BAD_INPUT, "bad_safetensors", __VA_ARGS__)
    if (e->type != JSON_OBJECT)
        BAD("%s: tensor %s: header entry is %s, expected an object", path, name, json_type_phrase(e));
    const JsonValue *dt = json_get(e, "dtype"), *sh = json_get(e, "shape"), *off = json_get(e, "data_offsets");
    if (!dt || dt->type != JSON_STRING)
        BAD("%s: tensor %s: dtype must be a string, got %s", path, name, json_type_phrase(dt));
    t->dtype = -1;
    for (int i = 0; i < NUM_DTYPES; i++)
        if (!strcmp(dt->str, DTYPES[i].name)) t->dtype = i;
    if (t->dtype < 0)
        BAD("%s: tensor %s: unknown dtype \"%.32s\" (safetensors dtypes: F32, BF16, F16, F64, I64, U64, I32, U32, "
            "I16, U16, I8, U8, BOOL, F8_E4M3, F8_E5M2)",
            path, name, dt->str);
    if (!sh || sh->type != JSON_ARRAY)
        BAD("%s: tensor %s: shape must be an array, got %s", path, name, json_type_phrase(sh));
    if (sh->n > MAX_DIMS) BAD("%s: tensor %s: shape has %d dimensions (at most %d)", path, name, sh->n, MAX_DIMS);
    t->ndim = sh->n;
    t->count = 1;
    for (int d = 0; d < sh->n; d++) {
        if (!json_is_int(&sh->items[d], 0, 9007199254740992.0))
            BAD("%s: tensor %s: shape[%d] must be a non-negative integer, got %s", path, name, d,
                sh->items[d].type == JSON_NUMBER ? "a negative, fractional or huge number"
                                                 : json_type_phrase(&sh->items[d]));
        t->shape[d] = (int64_t)sh->items[d].num;
        if (__builtin_mul_overflow(t->count, (uint64_t)t->shape[d], &t->count))
            BAD("%s: tensor %s: the product of its shape overflows 64 bits", path, name);
    }
    uint64_t bytes;
    if (__builtin_mul_overflow(t->count, (uint64_t)DTYPES[t->dtype].size, &bytes))
        BAD("%s: tensor %s: its size in bytes overflows 64 bits", path, name);
    if (!off || off->type != JSON_ARRAY || off->n != 2)
        BAD("%s: tensor %s: data_offsets must be an array [begin, end], got %s", path, name,
            off && off->type == JSON_ARRAY ? "an array of another length" : json_type_phrase(off));
    for (int k = 0; k < 2; k++)
        if (!json_is_int(&off->items[k], 0, 9007199254740992.0))
            BAD("%s: tensor %s: data_offsets[%d] must be a non-negative integer, got %s", path, name, k,
                off->items[k].type == JSON_NUMBER ? "a negative, fractional or huge number"
                                                  : json_type_phrase(&off->items[k]));
    t->begin = (uint64_t)off->items[0].num;
    t->end = (uint64_t)off->items[1].num;
    if (t->begin > t->end)
        BAD("%s: tensor %s: data_offsets begin %llu > end %llu", path, name, (unsigned long long)t->begin,
            (unsigned long long)t->end);
    if (t->end > data_size)
        return err_set(
            EXIT_BAD_INPUT, "truncated_safetensors",
            "%s: file is truncated: tensor %s ends past the end of the data (data_offsets end %llu > %llu data bytes)",
            path, name, (unsigned long long)t->end, (unsigned long long)data_size);
    if (t->end - t->begin != bytes) {
        char s[256];
        shape_text(s, sizeof s, t->shape, t->ndim);
        BAD("%s: tensor %s: data_offsets span %llu bytes, but shape %s of %s needs %llu", path, name,
            (unsigned long long)(t->end - t->begin), s, DTYPES[t->dtype].name, (unsigned long long)bytes);
    }
    return 0;
#undef BAD
}

// Maps one file and appends its tensors to s.
static int load_file(StSet *s, const char *path) {
    Shard *sh = checked_realloc(s->shards, (size_t)s->nshards + 1, sizeof *sh, "safetensors files");
    if (!sh) return -1;
    s->shards = sh;
    sh = &s->shards[s->nshards];
    memset(sh, 0, sizeof *sh);
    if (!(sh->path = checked_strdup(path, path))) return -1;
    s->nshards++;
    int fd = open_regular(path, &sh->size);
    if (fd < 0) return -1;
    if (sh->size < 8) {
        close(fd);
        return err_set(EXIT_BAD_INPUT, "truncated_safetensors",
                       "%s: file is truncated: %zu bytes, shorter than the 8-byte header length", path, sh->size);
    }
    sh->map = mmap(NULL, sh->size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (sh->map == MAP_FAILED) { sh->map = NULL; errno = e; return err_errno("cannot map", path); }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | sh->map[i];
    if (hlen > sh->size - 8)
        return err_set(EXIT_BAD_INPUT, "truncated_safetensors",
                       "%s: file is truncated or not safetensors: header length %llu exceeds the %zu bytes that follow",
                       path, (unsigned long long)hlen, sh->size - 8);
    if (hlen > MAX_HEADER)
        return err_set(EXIT_BAD_INPUT, "bad_safetensors", "%s: header of %llu bytes exceeds the 100 MiB limit", path,
                       (unsigned long long)hlen);
    uint64_t data_size = sh->size - 8 - hlen;
    const unsigned char *data = sh->map + 8 + hlen;
    JsonValue root;
    char perr[256];
    if (json_parse((const char *)sh->map + 8, hlen, &root, perr, sizeof perr))
        return err_set(EXIT_BAD_INPUT, "bad_safetensors", "%s: header is not valid JSON (%s)", path, perr);
    int rc = 0, first = s->n;
    if (root.type != JSON_OBJECT)
        rc = err_set(EXIT_BAD_INPUT, "bad_safetensors", "%s: header is %s, expected an object", path,
                     json_type_phrase(&root));
    for (int i = 0; i < root.n && rc == 0; i++) {
        const char *name = root.keys[i];
        if (!strcmp(name, "__metadata__")) {
            if (root.items[i].type != JSON_OBJECT)
                rc = err_set(EXIT_BAD_INPUT, "bad_safetensors", "%s: __metadata__ is %s, expected an object", path,
                             json_type_phrase(&root.items[i]));
            continue;
        }
        if (s->n == s->cap) {
            int cap = s->cap ? 2 * s->cap : 64;
            Tensor *t = checked_realloc(s->t, (size_t)cap, sizeof *t, "safetensors tensors");
            if (!t) { rc = -1; break; }
            s->t = t;
            s->cap = cap;
        }
        Tensor *t = &s->t[s->n];
        memset(t, 0, sizeof *t);
        if ((rc = parse_entry(path, name, &root.items[i], data_size, t))) break;
        if (!(t->name = checked_strdup(name, path))) { rc = -1; break; }
        t->data = data + t->begin;
        t->shard = s->nshards - 1;
        s->n++;
    }
    json_free(&root);
    if (rc) return -1;
    // No two tensors may share bytes (gaps are harmless and tolerated, as unread padding).
    int k = s->n - first;
    Tensor **order = checked_realloc(NULL, (size_t)k, sizeof *order, path);
    if (!order) return -1;
    for (int i = 0; i < k; i++) order[i] = &s->t[first + i];
    qsort(order, (size_t)k, sizeof *order, by_offset);
    const Tensor *last = NULL;  // the non-empty tensor that ends furthest
    for (int i = 0; i < k && rc == 0; i++) {
        if (order[i]->begin == order[i]->end) continue;
        if (last && order[i]->begin < last->end)
            rc = err_set(EXIT_BAD_INPUT, "bad_safetensors",
                         "%s: tensor %s: data_offsets [%llu, %llu] overlap tensor %s's [%llu, %llu]", path,
                         order[i]->name, (unsigned long long)order[i]->begin, (unsigned long long)order[i]->end,
                         last->name, (unsigned long long)last->begin, (unsigned long long)last->end);
        last = order[i];
    }
    free(order);
    return rc;
}

static Tensor *find(const StSet *s, const char *name) {
    Tensor key = {.name = (char *)name};
    return bsearch(&key, s->t, (size_t)s->n, sizeof *s->t, by_name);
}

// A shard name as transformers writes it: PREFIX-KKKKK-of-NNNNN.safetensors.
static int shard_number(const char *file, int *k, int *n) {
    const char *p = strstr(file, "-of-");
    if (!p || p - file < 6) return 0;
    char *end;
    long kk = strtol(p - 5, &end, 10), nn = strtol(p + 4, &end, 10);
    if (end != p + 9 || strcmp(end, ".safetensors") || kk < 1 || nn < kk) return 0;
    *k = (int)kk;
    *n = (int)nn;
    return 1;
}

static int open_index(StSet *s, const char *dir, const char *path) {
    char *text;
    size_t len;
    if (read_file(path, &text, &len)) return -1;
    JsonValue root;
    char perr[256];
    int rc = json_parse(text, len, &root, perr, sizeof perr);
    free(text);
    if (rc) return err_set(EXIT_BAD_INPUT, "bad_safetensors", "%s: not valid JSON (%s)", path, perr);
    const JsonValue *wm = json_get(&root, "weight_map");
    char **files = NULL;
    int nfiles = 0, of = 0, *seen = NULL;
    if (!wm || wm->type != JSON_OBJECT || wm->n == 0) {
        rc = err_set(EXIT_BAD_INPUT, "bad_safetensors",
                     "%s: weight_map must be a non-empty object of tensor name -> shard file, got %s", path,
                     wm && wm->type == JSON_OBJECT ? "an empty object" : json_type_phrase(wm));
        goto out;
    }
    files = checked_calloc((size_t)wm->n, sizeof *files, path);
    if (!files) { rc = -1; goto out; }
    for (int i = 0; i < wm->n && rc == 0; i++) {
        const JsonValue *f = &wm->items[i];
        if (f->type != JSON_STRING || !*f->str || strchr(f->str, '/') || !strcmp(f->str, "..") ||
            !strcmp(f->str, ".")) {
            rc = err_set(EXIT_BAD_INPUT, "bad_safetensors",
                         "%s: weight_map: tensor %s must map to a file name in %s, got %s%s%s", path, wm->keys[i], dir,
                         f->type == JSON_STRING ? "\"" : "", f->type == JSON_STRING ? f->str : json_type_phrase(f),
                         f->type == JSON_STRING ? "\"" : "");
            break;
        }
        int known = 0;
        for (int k = 0; k < nfiles && !known; k++) known = !strcmp(files[k], f->str);
        if (known) continue;
        files[nfiles++] = f->str;
        char shard[4200];
        snprintf(shard, sizeof shard, "%s/%s", dir, f->str);
        if (load_file(s, shard)) rc = err_context("%s: weight_map puts tensor %s in %s", path, wm->keys[i], f->str);
    }
    if (rc) goto out;
    // Shards named k-of-n must all be listed: a missing one would silently drop tensors.
    for (int i = 0; i < nfiles && rc == 0; i++) {
        int k, n;
        if (!shard_number(files[i], &k, &n)) continue;
        if (of && n != of)
            rc = err_set(EXIT_BAD_INPUT, "bad_safetensors", "%s: shard %s does not belong to a set of %d shards", path,
                         files[i], of);
        of = n;
    }
    if (rc == 0 && of && !(seen = checked_calloc((size_t)of, sizeof *seen, path))) rc = -1;
    for (int i = 0; i < nfiles && rc == 0 && of; i++) {
        int k, n;
        if (shard_number(files[i], &k, &n)) seen[k - 1] = 1;
    }
    for (int k = 0; k < of && rc == 0; k++)
        if (!seen[k])
            rc = err_set(EXIT_BAD_INPUT, "missing_shard", "%s: shard %d of %d is not listed in weight_map", path, k + 1,
                         of);
    if (rc) goto out;
    qsort(s->t, (size_t)s->n, sizeof *s->t, by_name);
    for (int i = 1; i < s->n && rc == 0; i++)
        if (!strcmp(s->t[i - 1].name, s->t[i].name))
            rc = err_set(EXIT_BAD_INPUT, "duplicate_tensor", "%s: tensor %s is in both %s and %s", path, s->t[i].name,
                         s->shards[s->t[i - 1].shard].path, s->shards[s->t[i].shard].path);
    for (int i = 0; i < wm->n && rc == 0; i++) {
        Tensor *t = find(s, wm->keys[i]);
        if (!t)
            rc =
                err_set(EXIT_BAD_INPUT, "missing_tensor", "%s: weight_map puts tensor %s in %s, which does not hold it",
                        path, wm->keys[i], wm->items[i].str);
        else if (strcmp(strrchr(s->shards[t->shard].path, '/') + 1, wm->items[i].str))
            rc = err_set(EXIT_BAD_INPUT, "bad_safetensors", "%s: weight_map puts tensor %s in %s, but it is in %s",
                         path, wm->keys[i], wm->items[i].str, s->shards[t->shard].path);
        else if (t->used)
            rc = err_set(EXIT_BAD_INPUT, "duplicate_tensor", "%s: weight_map lists tensor %s twice", path, wm->keys[i]);
        else t->used = 1;
    }
    for (int i = 0; i < s->n && rc == 0; i++) {
        if (!s->t[i].used)
            rc = err_set(EXIT_BAD_INPUT, "bad_safetensors", "%s: tensor %s is not listed in %s's weight_map",
                         s->shards[s->t[i].shard].path, s->t[i].name, path);
        s->t[i].used = 0;
    }
out:
    free(files);
    free(seen);
    json_free(&root);
    return rc;
}

// Refuses quantized checkpoints: their weights are not plain float tensors.
static int check_config(const char *dir) {
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (!file_exists(path)) return 0;
    char *text;
    size_t len;
    if (read_file(path, &text, &len)) return -1;
    JsonValue root;
    char perr[256];
    int rc = json_parse(text, len, &root, perr, sizeof perr);
    free(text);
    if (rc) return err_set(EXIT_BAD_INPUT, "bad_config", "%s: not valid JSON (%s)", path, perr);
    const JsonValue *q = json_get(&root, "quantization_config");
    if (q && q->type != JSON_NULL) {
        const JsonValue *m = json_get(q, "quant_method");
        rc = err_set(EXIT_BAD_INPUT, "unsupported_model",
                     "%s: quantization_config%s%s%s is set: quantized checkpoints are not supported "
                     "(allowed: unquantized F32, BF16 or F16 weights)",
                     path, m && m->type == JSON_STRING ? " (quant_method " : "",
                     m && m->type == JSON_STRING ? m->str : "", m && m->type == JSON_STRING ? ")" : "");
    }
    json_free(&root);
    return rc;
}

StSet *st_open_dir(const char *dir) {
    StSet *s = checked_calloc(1, sizeof *s, "a safetensors set");
    if (!s) return NULL;
    char single[4200], index[4200];
    snprintf(single, sizeof single, "%s/model.safetensors", dir);
    snprintf(index, sizeof index, "%s/model.safetensors.index.json", dir);
    int rc = 0;
    if (!dir_exists(dir)) {
        errno = access(dir, F_OK) == 0 ? ENOTDIR : ENOENT;
        rc = err_errno("cannot open model directory", dir);
    }
    if (rc == 0) rc = check_config(dir);
    if (rc == 0 && access(single, F_OK) != 0 && access(index, F_OK) != 0)
        rc = err_set(EXIT_BAD_INPUT, "missing_weights",
                     "%s: neither model.safetensors nor model.safetensors.index.json exists", dir);
    else if (rc == 0 && access(single, F_OK) == 0) {  // transformers prefers the single file too
        if (!(s->entry = checked_strdup(single, dir)) || load_file(s, single)) rc = -1;
        else qsort(s->t, (size_t)s->n, sizeof *s->t, by_name);
        for (int i = 1; i < s->n && rc == 0; i++)
            if (!strcmp(s->t[i - 1].name, s->t[i].name))
                rc = err_set(EXIT_BAD_INPUT, "duplicate_tensor", "%s: tensor %s appears twice in the header", single,
                             s->t[i].name);
    } else if (rc == 0) {
        if (!(s->entry = checked_strdup(index, dir)) || open_index(s, dir, index)) rc = -1;
    }
    if (rc) { st_close(s); return NULL; }
    return s;
}

int st_has(const StSet *s, const char *name) { return find(s, name) != NULL; }

int st_shape(const StSet *s, const char *name, int64_t shape[8]) {
    const Tensor *t = find(s, name);
    if (!t) return -1;
    memcpy(shape, t->shape, sizeof t->shape);
    return t->ndim;
}

int st_read_f32(StSet *s, const char *name, const int64_t *shape, int ndim, float *out) {
    Tensor *t = find(s, name);
    if (!t) return err_set(EXIT_BAD_INPUT, "missing_tensor", "%s: tensor %s is missing", s->entry, name);
    const char *path = s->shards[t->shard].path;
    t->used = 1;
    if (t->dtype >= DT_READABLE)
        return err_set(EXIT_BAD_INPUT, "bad_dtype", "%s: tensor %s has dtype %s; allowed: F32, F16, BF16", path, name,
                       DTYPES[t->dtype].name);
    int same = t->ndim == ndim;
    for (int d = 0; d < ndim && same; d++) same = t->shape[d] == shape[d];
    if (!same) {
        char got[256], want[256];
        shape_text(got, sizeof got, t->shape, t->ndim);
        shape_text(want, sizeof want, shape, ndim);
        return err_set(EXIT_BAD_INPUT, "bad_shape", "%s: tensor %s has shape %s; config.json requires %s", path, name,
                       got, want);
    }
    const unsigned char *p = t->data;
    for (uint64_t i = 0; i < t->count; i++) {
        uint32_t bits;
        if (t->dtype == DT_F32) memcpy(&bits, p + 4 * i, 4);  // x86-64 and the format are little-endian
        else {
            uint32_t h = (uint32_t)(p[2 * i] | p[2 * i + 1] << 8);
            if (t->dtype == DT_BF16) bits = h << 16;
            else {
                uint32_t sign = (h >> 15) << 31, exp = (h >> 10) & 31, man = h & 1023;
                if (exp == 0 && man == 0) bits = sign;
                else if (exp == 0) {  // subnormal: normalize
                    exp = 127 - 15 + 1;
                    while (!(man & 1024)) { man <<= 1; exp--; }
                    bits = sign | exp << 23 | (man & 1023) << 13;
                } else if (exp == 31) bits = sign | 0x7F800000u | man << 13;
                else bits = sign | (exp + 127 - 15) << 23 | man << 13;
            }
        }
        memcpy(&out[i], &bits, 4);
        if (!isfinite(out[i]))
            return err_set(EXIT_BAD_INPUT, "bad_weights", "%s: tensor %s holds a NaN or infinite value (element %llu)",
                           path, name, (unsigned long long)i);
    }
    return 0;
}

const char *st_unused(StSet *s) {
    while (s->next_unused < s->n) {
        Tensor *t = &s->t[s->next_unused++];
        if (!t->used) { t->used = 1; return t->name; }
    }
    return NULL;
}

const char *st_dtype(const StSet *s) {
    uint64_t elems[DT_READABLE] = {0};
    for (int i = 0; i < s->n; i++)
        if (s->t[i].dtype < DT_READABLE) elems[s->t[i].dtype] += s->t[i].count;
    int best = DT_F32;
    for (int d = 1; d < DT_READABLE; d++)
        if (elems[d] > elems[best]) best = d;
    return DTYPES[best].name;
}

uint64_t st_hash(const StSet *s, uint64_t h) {
    for (int i = 0; i < s->nshards; i++) h = fnv1a(h, s->shards[i].map, s->shards[i].size);
    return h;
}

void st_close(StSet *s) {
    if (!s) return;
    for (int i = 0; i < s->n; i++) free(s->t[i].name);
    for (int i = 0; i < s->nshards; i++) {
        if (s->shards[i].map) munmap(s->shards[i].map, s->shards[i].size);
        free(s->shards[i].path);
    }
    free(s->t);
    free(s->shards);
    free(s->entry);
    free(s);
}

// ---- writing ------------------------------------------------------------------------------

// Round-to-nearest-even like torch's c10::BFloat16 (NaN becomes the quiet NaN 0x7FC0).
static uint16_t f32_to_bf16(float x) {
    uint32_t b;
    memcpy(&b, &x, 4);
    if ((b & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0;
    return (uint16_t)((b + 0x7FFFu + ((b >> 16) & 1)) >> 16);
}

// IEEE binary16, round-to-nearest-even, overflow to infinity, subnormals kept.
static uint16_t f32_to_f16(float x) {
    uint32_t b;
    memcpy(&b, &x, 4);
    uint16_t sign = (uint16_t)((b >> 16) & 0x8000);
    uint32_t a = b & 0x7FFFFFFFu, e = a >> 23, man = a & 0x7FFFFF;
    if (a > 0x7F800000u) return sign | 0x7E00;
    if (a >= 0x477FF000u) return sign | 0x7C00;  // >= 65520 rounds past the largest half
    if (e < 102) return sign;                    // below half the smallest subnormal
    uint32_t q, rem, half;
    if (e < 113) {  // subnormal half: units of 2^-24
        uint32_t m = man | 0x800000, shift = 126 - e;
        q = m >> shift;
        rem = m & ((1u << shift) - 1);
        half = 1u << (shift - 1);
    } else {
        q = (e - 112) << 10 | man >> 13;
        rem = man & 0x1FFF;
        half = 0x1000;
    }
    if (rem > half || (rem == half && (q & 1))) q++;  // a carry into the exponent is correct
    return (uint16_t)(sign | q);
}

const char *st_save_dtype(const char *name) {
    for (int d = 0; d < DT_READABLE; d++)
        if (!strcasecmp(name, DTYPES[d].name)) return DTYPES[d].name;
    return NULL;
}

int st_parse_size(const char *text, size_t *out) {
    static const struct { const char *unit; double mult; } UNITS[] = {
        {"", 1}, {"B", 1}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
        {"KIB", 1024.0}, {"MIB", 1048576.0}, {"GIB", 1073741824.0}, {"TIB", 1099511627776.0}};
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || errno || !(v > 0) || *text == ' ') return -1;
    for (size_t i = 0; i < sizeof UNITS / sizeof *UNITS; i++) {
        if (strcasecmp(end, UNITS[i].unit)) continue;
        double bytes = floor(v * UNITS[i].mult);
        if (bytes < 1 || bytes > 9e18) return -1;
        *out = (size_t)bytes;
        return 0;
    }
    return -1;
}

static uint64_t elements(const StOut *t) {
    uint64_t c = 1;
    for (int d = 0; d < t->ndim; d++) c *= (uint64_t)t->shape[d];
    return c;
}

// Writes tensors [from, to) as one safetensors file at path (temp file, fsync, rename).
static int write_file(const char *path, const StOut *t, int from, int to, int dtype) {
    int esize = DTYPES[dtype].size, rc = 0;
    char *hdr = NULL, tmp[4200];
    size_t len = 0;
    FILE *m = open_memstream(&hdr, &len);
    if (!m) return err_set(EXIT_IO, "out_of_memory", "cannot build the header of %s", path);
    uint64_t off = 0;
    fputs("{\"__metadata__\":{\"format\":\"pt\"}", m);
    for (int i = from; i < to; i++) {
        uint64_t bytes = elements(&t[i]) * (uint64_t)esize;
        fputc(',', m);
        json_write_string(m, t[i].name);
        fprintf(m, ":{\"dtype\":\"%s\",\"shape\":[", DTYPES[dtype].name);
        for (int d = 0; d < t[i].ndim; d++) fprintf(m, "%s%lld", d ? "," : "", (long long)t[i].shape[d]);
        fprintf(m, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off, (unsigned long long)(off + bytes));
        off += bytes;
    }
    fputc('}', m);
    while (ftell(m) % 8) fputc(' ', m);  // aligns the data for readers that map it
    if (fclose(m) != 0) { free(hdr); return err_set(EXIT_IO, "out_of_memory", "cannot build the header of %s", path); }
    snprintf(tmp, sizeof tmp, "%s.tmp-%d", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) { free(hdr); return err_errno("cannot create", tmp); }
    unsigned char lenbytes[8];
    for (int i = 0; i < 8; i++) lenbytes[i] = (unsigned char)((uint64_t)len >> (8 * i));
    int ok = fwrite(lenbytes, 1, 8, f) == 8 && fwrite(hdr, 1, len, f) == len;
    free(hdr);
    enum { CHUNK = 1 << 16 };
    uint16_t *buf = dtype == DT_F32 ? NULL : checked_realloc(NULL, CHUNK, sizeof *buf, path);
    if (dtype != DT_F32 && !buf) ok = 0, rc = -1;
    for (int i = from; i < to && ok; i++) {
        uint64_t n = elements(&t[i]);
        if (dtype == DT_F32) { ok = fwrite(t[i].data, 4, n, f) == n; continue; }
        for (uint64_t s = 0; s < n && ok; s += CHUNK) {
            size_t k = n - s < CHUNK ? (size_t)(n - s) : CHUNK;
            for (size_t j = 0; j < k; j++)
                buf[j] = dtype == DT_BF16 ? f32_to_bf16(t[i].data[s + j]) : f32_to_f16(t[i].data[s + j]);
            ok = fwrite(buf, 2, k, f) == k;
        }
    }
    free(buf);
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int e = errno;
    fclose(f);
    if (!ok) { unlink(tmp); errno = e; return rc ? rc : err_errno("cannot write", tmp); }
    if (rename(tmp, path) != 0) { e = errno; unlink(tmp); errno = e; return err_errno("cannot rename into", path); }
    return 0;
}

static int remove_file(const char *path) {
    return unlink(path) == 0 || errno == ENOENT ? 0 : err_errno("cannot remove", path);
}

int st_save_dir(const char *dir, const StOut *t, int n, const char *dtype_name, size_t shard_bytes) {
    const char *canon = st_save_dtype(dtype_name);
    if (!canon)
        return err_set(EXIT_BAD_INPUT, "usage", "cannot save %s as dtype \"%s\" (allowed: F32, BF16, F16)", dir,
                       dtype_name);
    int dtype = 0;
    while (strcmp(DTYPES[dtype].name, canon)) dtype++;
    // Greedy shards in tensor order, as transformers' save_pretrained packs them.
    int *first = checked_realloc(NULL, (size_t)n + 1, sizeof *first, dir), nshards = 0;
    if (!first) return -1;
    uint64_t cur = 0, total = 0;
    for (int i = 0; i < n; i++) {
        uint64_t bytes = elements(&t[i]) * (uint64_t)DTYPES[dtype].size;
        if (i == 0 || (shard_bytes && cur > 0 && cur + bytes > shard_bytes)) { first[nshards++] = i; cur = 0; }
        cur += bytes;
        total += bytes;
    }
    first[nshards] = n;
    char single[4200], index[4200], path[4200];
    snprintf(single, sizeof single, "%s/model.safetensors", dir);
    snprintf(index, sizeof index, "%s/model.safetensors.index.json", dir);
    int rc = 0;
    if (nshards <= 1) {
        rc = remove_file(index) || write_file(single, t, 0, n, dtype);
        free(first);
        return rc ? -1 : fsync_dir(dir);
    }
    char *json = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&json, &len);
    if (!m) { free(first); return err_set(EXIT_IO, "out_of_memory", "cannot build %s", index); }
    fprintf(m, "{\n  \"metadata\": {\n    \"total_size\": %llu\n  },\n  \"weight_map\": {", (unsigned long long)total);
    rc = remove_file(single);
    for (int k = 0; k < nshards && rc == 0; k++) {
        char file[64];
        snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", k + 1, nshards);
        snprintf(path, sizeof path, "%s/%s", dir, file);
        rc = write_file(path, t, first[k], first[k + 1], dtype);
        for (int i = first[k]; i < first[k + 1]; i++) {
            fprintf(m, "%s\n    ", i ? "," : "");
            json_write_string(m, t[i].name);
            fprintf(m, ": \"%s\"", file);
        }
    }
    fputs("\n  }\n}\n", m);
    int mrc = fclose(m);
    free(first);
    if (rc == 0 && mrc != 0) rc = err_set(EXIT_IO, "out_of_memory", "cannot build %s", index);
    if (rc == 0) rc = write_file_atomic(index, json, len);
    free(json);
    return rc;
}
