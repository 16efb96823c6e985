// opsr-engine logprobs, and the per-record log-prob pass shared with training.
#include "logprobs.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "args.h"
#include "checkpoint.h"
#include "commands.h"
#include "json.h"
#include "util.h"

#define LOGPROB_BATCH 8  // sequences per forward

int logprobs_compute(Model *m, const DataFile *d, float *lp, int *nt, volatile sig_atomic_t *stop) {
    if (d->kind == DATA_PREF) {
        // Each pair's prompt computed once; the output layout is already [2i] chosen, [2i+1] rejected.
        ModelPair pairs[LOGPROB_BATCH / 2];
        for (int i0 = 0; i0 < d->count; i0 += LOGPROB_BATCH / 2) {
            if (stop && *stop) return 1;
            int n = d->count - i0 < LOGPROB_BATCH / 2 ? d->count - i0 : LOGPROB_BATCH / 2;
            for (int k = 0; k < n; k++) {
                const DataRecord *r = &d->rec[i0 + k];
                pairs[k] =
                    (ModelPair){r->prompt, r->resp[0], r->resp[1], r->prompt_len, r->resp_len[0], r->resp_len[1]};
            }
            model_forward_pairs(m, pairs, n, lp + 2 * i0, nt + 2 * i0);
        }
        return 0;
    }
    size_t cap = (size_t)LOGPROB_BATCH * (size_t)m->cfg.max_seq_len;
    int *tokens = malloc(cap * sizeof *tokens), *targets = malloc(cap * sizeof *targets);
    if (!tokens || !targets) {
        free(tokens);
        free(targets);
        return err_set(EXIT_IO, "out_of_memory", "cannot allocate a batch of %zu tokens", cap);
    }
    const DataRecord *recs[LOGPROB_BATCH];
    static const int side[LOGPROB_BATCH] = {0};
    for (int i0 = 0; i0 < d->count; i0 += LOGPROB_BATCH) {
        if (stop && *stop) { free(tokens); free(targets); return 1; }
        int B = d->count - i0 < LOGPROB_BATCH ? d->count - i0 : LOGPROB_BATCH;
        for (int b = 0; b < B; b++) recs[b] = &d->rec[i0 + b];
        float sums[LOGPROB_BATCH];
        int counts[LOGPROB_BATCH];
        model_forward(m, tokens, targets, B, data_batch(recs, side, B, tokens, targets), sums, counts);
        for (int b = 0; b < B; b++) {
            lp[2 * (i0 + b)] = sums[b];
            nt[2 * (i0 + b)] = counts[b];
        }
    }
    free(tokens);
    free(targets);
    return 0;
}

int logprobs_write(const char *path, const DataFile *d, const float *lp, const int *nt, const char *key) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    for (int i = 0; i < d->count; i++) {
        fprintf(f, "{\"index\":%d", i);
        static const char *names[2][3] = {{"logp_sum", "logp_mean", "tokens"},
                                          {"rejected_logp_sum", "rejected_logp_mean", "rejected_tokens"}};
        static const char *chosen[3] = {"chosen_logp_sum", "chosen_logp_mean", "chosen_tokens"};
        for (int s = 0; s < (d->kind == DATA_PREF ? 2 : 1); s++) {
            const char *const *n = d->kind == DATA_PREF && s == 0 ? chosen : names[s];
            fprintf(f, ",\"%s\":", n[0]);
            json_write_float(f, lp[2 * i + s]);
            fprintf(f, ",\"%s\":", n[1]);
            json_write_float(f, (double)lp[2 * i + s] / nt[2 * i + s]);
            fprintf(f, ",\"%s\":%d", n[2], nt[2 * i + s]);
        }
        if (key) fprintf(f, ",\"key\":\"%s\"", key);
        fputs("}\n", f);
    }
    fclose(f);
    int rc = 0;
    if (path) rc = write_file_atomic(path, buf, len);
    else if (fwrite(buf, 1, len, stdout) != len || fflush(stdout))
        rc = err_set(EXIT_IO, "io_error", "cannot write to stdout");
    free(buf);
    return rc;
}

int logprobs_read(const char *path, const DataFile *d, float *lp, int *nt, const char *key) {
    char *text;
    size_t n;
    if (read_file(path, &text, &n)) return -1;
    int sides = d->kind == DATA_PREF ? 2 : 1, line = 0, rc = 0;
    static const char *fields[2][2][2] = {
        {{"logp_sum", "tokens"}, {"", ""}},
        {{"chosen_logp_sum", "chosen_tokens"}, {"rejected_logp_sum", "rejected_tokens"}}};
    char *p = text;
    while (rc == 0 && *p) {
        char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        line++;
        JsonValue v;
        char perr[128];
        if (len == 0) { p += 1; continue; }
        if (line > d->count) {
            rc = err_set(EXIT_BAD_INPUT, "bad_ref_logps", "%s: line %d: more lines than the data's %d records", path,
                         line, d->count);
            break;
        }
        if (json_parse(p, len, &v, perr, sizeof perr)) {
            rc = err_set(EXIT_BAD_INPUT, "bad_ref_logps", "%s: line %d: %s", path, line, perr);
            break;
        }
        const JsonValue *idx = json_get(&v, "index"), *k = json_get(&v, "key");
        if (key && (!k || k->type != JSON_STRING || strcmp(k->str, key))) rc = 1;
        else if (!json_is_int(idx, line - 1, line - 1))
            rc = err_set(EXIT_BAD_INPUT, "bad_ref_logps", "%s: line %d: field index must be %d", path, line, line - 1);
        for (int s = 0; s < sides && rc == 0; s++) {
            const JsonValue *sum = json_get(&v, fields[sides - 1][s][0]), *cnt = json_get(&v, fields[sides - 1][s][1]);
            int i = line - 1;
            if (!sum || sum->type != JSON_NUMBER || !isfinite(sum->num) || sum->num > 0)
                rc = err_set(EXIT_BAD_INPUT, "bad_ref_logps",
                             "%s: line %d: field %s must be a finite log-prob sum <= 0", path, line,
                             fields[sides - 1][s][0]);
            else if (!json_is_int(cnt, d->rec[i].resp_len[s], d->rec[i].resp_len[s]))
                rc = key ? 1
                         : err_set(EXIT_BAD_INPUT, "bad_ref_logps",
                                   "%s: line %d: field %s must equal the record's response length %d "
                                   "(is this file for this data?)",
                                   path, line, fields[sides - 1][s][1], d->rec[i].resp_len[s]);
            else { lp[2 * i + s] = (float)sum->num; nt[2 * i + s] = (int)cnt->num; }
        }
        json_free(&v);
        p += nl ? len + 1 : len;
    }
    if (rc == 0 && line != d->count)
        rc = key ? 1
                 : err_set(EXIT_BAD_INPUT, "bad_ref_logps", "%s: holds %d lines, the data has %d records", path, line,
                           d->count);
    free(text);
    return rc;
}

int cmd_logprobs(int argc, char **argv) {
    const char *model = NULL, *data = NULL, *out = NULL;
    long threads = 0;
    ArgSpec specs[] = {{"model", ARG_STR, &model, 0}, {"data", ARG_STR, &data, 0}, {"out", ARG_STR, &out, 0},
                       {"threads", ARG_INT, &threads, 0}};
    if (args_parse("logprobs", argc, argv, specs, 4)) err_exit();
    if (!model || !data) die(EXIT_BAD_INPUT, "usage", "logprobs: --model and --data are required");
    set_threads(threads);
    Model m;
    DataFile d;
    if (hf_load_model(model, &m)) err_exit();
    if (data_load(data, &m.cfg, &d)) err_exit();
    float *lp = calloc(2 * (size_t)d.count, sizeof *lp);
    int *nt = calloc(2 * (size_t)d.count, sizeof *nt);
    if (!lp || !nt) die(EXIT_IO, "out_of_memory", "logprobs: cannot allocate results for %d records", d.count);
    int rc = logprobs_compute(&m, &d, lp, nt, NULL) || logprobs_write(out, &d, lp, nt, NULL);
    free(lp);
    free(nt);
    data_free(&d);
    model_free(&m);
    if (rc) err_exit();
    return 0;
}
