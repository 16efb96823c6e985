#include "safetensors.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "json.h"
#include "util.h"

static int bad(const StFile *f, const char *code, const char *fmt, const char *a, const char *b) {
    char what[1024];
    snprintf(what, sizeof what, fmt, a, b);
    return err_set(EXIT_BAD_INPUT, code, "%s: %s", f->path, what);
}

static int parse_header(StFile *f, const char *hdr, size_t hlen, size_t data_size) {
    JsonValue root;
    char perr[256];
    if (json_parse(hdr, hlen, &root, perr, sizeof perr))
        return bad(f, "bad_safetensors", "header is not valid JSON (%s)%s", perr, "");
    if (root.type != JSON_OBJECT) { json_free(&root); return bad(f, "bad_safetensors", "header is a JSON %s, expected an object%s", json_type_name(root.type), ""); }
    f->t = calloc((size_t)root.n + 1, sizeof *f->t);
    int rc = 0;
    for (int i = 0; i < root.n && rc == 0; i++) {
        const char *name = root.keys[i];
        const JsonValue *e = &root.items[i];
        if (!strcmp(name, "__metadata__")) continue;
        const JsonValue *dt = json_get(e, "dtype"), *sh = json_get(e, "shape"), *off = json_get(e, "data_offsets");
        if (!dt || dt->type != JSON_STRING || !sh || sh->type != JSON_ARRAY || sh->n > 8 || !off ||
            off->type != JSON_ARRAY || off->n != 2 || !json_is_int(&off->items[0], 0, 9e15) || !json_is_int(&off->items[1], 0, 9e15)) {
            rc = bad(f, "bad_safetensors", "tensor %s: header entry needs dtype (string), shape (array of at most 8 ints) and data_offsets ([begin, end])%s", name, "");
            break;
        }
        StTensor *t = &f->t[f->n++];
        t->name = strdup(name);
        snprintf(t->dtype_name, sizeof t->dtype_name, "%s", dt->str);
        t->dtype = !strcmp(dt->str, "F32") ? ST_F32 : !strcmp(dt->str, "F16") ? ST_F16 : !strcmp(dt->str, "BF16") ? ST_BF16 : ST_OTHER;
        t->ndim = sh->n;
        uint64_t count = 1;
        for (int d = 0; d < sh->n; d++) {
            if (!json_is_int(&sh->items[d], 0, 9e15)) { rc = bad(f, "bad_safetensors", "tensor %s: shape holds a non-integer or negative dimension%s", name, ""); break; }
            t->shape[d] = (int64_t)sh->items[d].num;
            count *= (uint64_t)t->shape[d];
        }
        if (rc) break;
        uint64_t b = (uint64_t)off->items[0].num, en = (uint64_t)off->items[1].num;
        if (b > en) { rc = bad(f, "bad_safetensors", "tensor %s: data_offsets begin > end%s", name, ""); break; }
        if (en > data_size) { rc = bad(f, "truncated_safetensors", "file is truncated: tensor %s ends past the end of the data%s", name, ""); break; }
        t->data = f->map + (f->size - data_size) + b;
        t->nbytes = en - b;
        size_t esize = t->dtype == ST_F32 ? 4 : t->dtype == ST_OTHER ? 0 : 2;
        if (esize && count * esize != t->nbytes) {
            char n2[64];
            snprintf(n2, sizeof n2, "%llu bytes", (unsigned long long)(count * esize));
            rc = bad(f, "bad_safetensors", "tensor %s: data_offsets span does not match its shape and dtype (expected %s)", name, n2);
        }
    }
    json_free(&root);
    return rc;
}

int st_open(const char *path, StFile *f) {
    memset(f, 0, sizeof *f);
    f->path = path;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return err_errno("cannot open", path);
    struct stat st;
    if (fstat(fd, &st) != 0) { close(fd); return err_errno("cannot stat", path); }
    f->size = (size_t)st.st_size;
    if (f->size < 8) {
        close(fd);
        return err_set(EXIT_BAD_INPUT, "truncated_safetensors", "%s: file is truncated: %zu bytes, shorter than the 8-byte header length", path, f->size);
    }
    f->map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (f->map == MAP_FAILED) { f->map = NULL; return err_errno("cannot map", path); }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | f->map[i];
    if (hlen > f->size - 8) {
        int rc = err_set(EXIT_BAD_INPUT, "truncated_safetensors", "%s: file is truncated or not safetensors: header length %llu exceeds the %zu bytes that follow",
                         path, (unsigned long long)hlen, f->size - 8);
        st_close(f);
        return rc;
    }
    if (parse_header(f, (const char *)f->map + 8, hlen, f->size - 8 - hlen)) { st_close(f); return -1; }
    return 0;
}

void st_close(StFile *f) {
    for (int i = 0; i < f->n; i++) free(f->t[i].name);
    free(f->t);
    if (f->map) munmap(f->map, f->size);
    memset(f, 0, sizeof *f);
}

const StTensor *st_find(const StFile *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->t[i].name, name)) return &f->t[i];
    return NULL;
}

static float half_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 31, man = h & 1023, bits;
    if (exp == 0) {
        if (man == 0) bits = sign;
        else {  // subnormal: normalize
            exp = 127 - 15 + 1;
            while (!(man & 1024)) { man <<= 1; exp--; }
            bits = sign | exp << 23 | (man & 1023) << 13;
        }
    } else if (exp == 31) bits = sign | 0x7F800000u | man << 13;
    else bits = sign | (exp + 127 - 15) << 23 | man << 13;
    float x;
    memcpy(&x, &bits, 4);
    return x;
}

void st_to_f32(const StTensor *t, float *out, size_t n) {
    const unsigned char *p = t->data;
    for (size_t i = 0; i < n; i++) {
        if (t->dtype == ST_F32) memcpy(&out[i], p + 4 * i, 4);
        else {
            uint16_t h = (uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
            if (t->dtype == ST_F16) out[i] = half_to_f32(h);
            else { uint32_t bits = (uint32_t)h << 16; memcpy(&out[i], &bits, 4); }
        }
    }
}

int st_save(const char *path, const StWrite *tensors, int n) {
    // Header JSON, padded with spaces to a multiple of 8 bytes so the data is aligned.
    size_t cap = 256 + (size_t)n * 256, len = 0;
    char *hdr = malloc(cap);
    uint64_t off = 0;
    len += (size_t)snprintf(hdr + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < n; i++) {
        uint64_t count = 1;
        len += (size_t)snprintf(hdr + len, cap - len, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[", tensors[i].name);
        for (int d = 0; d < tensors[i].ndim; d++) {
            count *= (uint64_t)tensors[i].shape[d];
            len += (size_t)snprintf(hdr + len, cap - len, "%s%lld", d ? "," : "", (long long)tensors[i].shape[d]);
        }
        len += (size_t)snprintf(hdr + len, cap - len, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                                (unsigned long long)(off + 4 * count));
        off += 4 * count;
    }
    len += (size_t)snprintf(hdr + len, cap - len, "}");
    while (len % 8) hdr[len++] = ' ';

    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp-%d", path, (int)getpid());
    FILE *out = fopen(tmp, "wb");
    if (!out) { free(hdr); return err_errno("cannot create", tmp); }
    unsigned char lenbytes[8];
    for (int i = 0; i < 8; i++) lenbytes[i] = (unsigned char)((uint64_t)len >> (8 * i));
    int ok = fwrite(lenbytes, 1, 8, out) == 8 && fwrite(hdr, 1, len, out) == len;
    free(hdr);
    for (int i = 0; i < n && ok; i++) {
        size_t count = 1;
        for (int d = 0; d < tensors[i].ndim; d++) count *= (size_t)tensors[i].shape[d];
        ok = fwrite(tensors[i].data, 4, count, out) == count;  // x86-64: floats are little-endian
    }
    ok = ok && fflush(out) == 0 && fsync(fileno(out)) == 0;
    int e = errno;
    fclose(out);
    if (!ok) { unlink(tmp); errno = e; return err_errno("cannot write", tmp); }
    if (rename(tmp, path) != 0) { e = errno; unlink(tmp); errno = e; return err_errno("cannot rename into", path); }
    return 0;
}
