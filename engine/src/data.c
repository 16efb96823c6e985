#include "data.h"
#include <stdlib.h>
#include <string.h>
#include "util.h"

static uint32_t rd32(const char *p) {
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
}

#define BAD(...) do { err_set(EXIT_BAD_INPUT, "bad_data", __VA_ARGS__); data_free(d); return -1; } while (0)

int data_load(const char *path, const ModelConfig *cfg, DataFile *d) {
    memset(d, 0, sizeof *d);
    size_t size;
    if (read_file(path, &d->buf, &size)) return -1;
    d->hash = fnv1a(FNV_OFFSET, d->buf, size);
    if (size < 24 || memcmp(d->buf, "OPSRDATA", 8))
        BAD("%s: not an opsr data file (bad magic; expected the 8 bytes \"OPSRDATA\")", path);
    uint32_t version = rd32(d->buf + 8), kind = rd32(d->buf + 12), count = rd32(d->buf + 16);
    if (version != 1) BAD("%s: unsupported version %u (allowed: 1)", path, version);
    if (kind != DATA_SFT && kind != DATA_PREF) BAD("%s: unknown kind %u (allowed: 1 sft, 2 preference)", path, kind);
    if (rd32(d->buf + 20) != 0) BAD("%s: reserved header field must be 0", path);
    if (count == 0) BAD("%s: holds no records", path);
    if ((uint64_t)count > (size - 24) / 8)
        BAD("%s: record_count %u exceeds what the file's %zu bytes can hold (truncated?)", path, count, size);
    d->kind = (int)kind;
    d->count = (int)count;
    if (count > INT32_MAX) BAD("%s: record_count %u exceeds the engine's limit of %d records", path, count, INT32_MAX);
    if (!(d->rec = checked_calloc(count, sizeof *d->rec, path))) { data_free(d); return -1; }
    int nresp = kind == DATA_SFT ? 1 : 2;
    size_t off = 24;
    for (uint32_t i = 0; i < count; i++) {
        DataRecord *r = &d->rec[i];
        size_t hdr = 4 * (size_t)(1 + nresp);
        if (off + hdr > size) BAD("%s: record %u: file ends inside the record header (truncated)", path, i);
        uint64_t len[3], total = 0;
        for (int k = 0; k <= nresp; k++) { len[k] = rd32(d->buf + off + 4 * (size_t)k); total += len[k]; }
        if (off + hdr + 4 * total > size)
            BAD("%s: record %u: lengths need %llu token ids but the file ends first (truncated)", path, i,
                (unsigned long long)total);
        if (len[0] < 1)
            BAD("%s: record %u: prompt_len is 0 (at least 1 token is required to predict the first response token)",
                path, i);
        for (int k = 1; k <= nresp; k++) {
            const char *what = kind == DATA_SFT ? "response_len" : k == 1 ? "chosen_len" : "rejected_len";
            if (len[k] < 1) BAD("%s: record %u: %s is 0 (at least 1 token is required)", path, i, what);
            if (len[0] + len[k] > (uint64_t)cfg->max_seq_len)
                BAD("%s: record %u: prompt_len + %s = %llu exceeds the model's context n_positions = %d", path, i, what,
                    (unsigned long long)(len[0] + len[k]), cfg->max_seq_len);
        }
        const uint32_t *ids = (const uint32_t *)(d->buf + off + hdr);  // 4-aligned: header 24, fields 4
        for (uint64_t t = 0; t < total; t++)
            if (ids[t] >= (uint32_t)cfg->vocab_size)
                BAD("%s: record %u: token id %u at position %llu is out of range (vocab_size = %d)", path, i, ids[t],
                    (unsigned long long)t, cfg->vocab_size);
        r->prompt_len = (int)len[0];
        r->prompt = ids;
        r->resp_len[0] = (int)len[1];
        r->resp[0] = ids + len[0];
        if (nresp == 2) { r->resp_len[1] = (int)len[2]; r->resp[1] = ids + len[0] + len[1]; }
        off += hdr + 4 * total;
    }
    if (off != size)
        BAD("%s: %zu bytes of trailing data after record %u (record_count is wrong?)", path, size - off, count - 1);
    return 0;
}

void data_free(DataFile *d) {
    free(d->rec);
    free(d->buf);
    memset(d, 0, sizeof *d);
}

int data_batch(const DataRecord *const *seq_rec, const int *seq_side, int B, int *tokens, int *targets) {
    int T = 1;
    for (int b = 0; b < B; b++) {
        int n = seq_rec[b]->prompt_len + seq_rec[b]->resp_len[seq_side[b]] - 1;
        if (n > T) T = n;
    }
    for (int b = 0; b < B; b++) {
        const DataRecord *r = seq_rec[b];
        int P = r->prompt_len, R = r->resp_len[seq_side[b]];
        const uint32_t *resp = r->resp[seq_side[b]];
        for (int t = 0; t < T; t++) {
            int i = b * T + t;
            // Position t reads token t and predicts token t + 1 (scored inside the response).
            if (t < P + R - 1) {
                tokens[i] = (int)(t < P ? r->prompt[t] : resp[t - P]);
                targets[i] = t + 1 >= P ? (int)resp[t + 1 - P] : -1;
            } else {
                tokens[i] = 0;
                targets[i] = -1;
            }
        }
    }
    return T;
}
