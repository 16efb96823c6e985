// Engine side of the parity test (test/engine/parity.test.ts): loads an HF model dir of any
// architecture with the engine's loader and dumps raw float32 results for test/parity/parity.py.
//   parity_dump MODEL_DIR PREF_DATA SFT_DATA REF_BIN OUT_DIR
// Writes logits_pref.bin [2n, T, V] (chosen rows, then rejected), logp_pref.bin [2n],
// logp_sft.bin [m], grad_<loss>.bin [num_params] per loss, and meta.json (T, losses); plus
// logp_pairs.bin [2n] (chosen, rejected interleaved) and grad_dpo_pairs.bin from the
// shared-prompt path model_forward_pairs. meta.json also lists the parameter table (the order of
// the gradient dumps).
#include "checkpoint.h"
#include "data.h"
#include "model.h"
#include "losses.h"
#include "util.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void dump(const char *dir, const char *name, const void *p, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (write_file_atomic(path, p, n)) { fprintf(stderr, "parity_dump: %s\n", err_message()); exit(1); }
}

// All records of d as one batch; pref: chosen sequences then rejected ones.
static int batch(const DataFile *d, int pref, int *tokens, int *targets) {
    int B = pref ? 2 * d->count : d->count;
    const DataRecord **recs = malloc(B * sizeof *recs);
    int *side = malloc(B * sizeof *side);
    for (int b = 0; b < B; b++) { recs[b] = &d->rec[b % d->count]; side[b] = b >= d->count; }
    int T = data_batch(recs, side, B, tokens, targets);
    free(recs); free(side);
    return T;
}

int main(int argc, char **argv) {
    if (argc != 6) { fprintf(stderr, "usage: parity_dump MODEL_DIR PREF_DATA SFT_DATA REF_BIN OUT_DIR\n"); return 2; }
    const char *out = argv[5];
    Model m;
    DataFile pd, sd;
    if (hf_load_model(argv[1], &m) || data_load(argv[2], &m.cfg, &pd) || data_load(argv[3], &m.cfg, &sd) ||
        model_alloc_grads(&m) || mkdir_p(out)) {
        fprintf(stderr, "parity_dump: %s\n", err_message());
        return 1;
    }
    int n = pd.count, V = m.cfg.vocab_size, P = m.cfg.max_seq_len;
    char *refbuf; size_t refsize;
    if (read_file(argv[4], &refbuf, &refsize) || refsize != 2 * n * sizeof(float)) {
        fprintf(stderr, "parity_dump: %s must hold %d float32 reference log-probs\n", argv[4], 2 * n);
        return 1;
    }
    const float *ref = (const float *)refbuf;
    int maxB = 2 * (n > sd.count ? n : sd.count);
    int *tokens = malloc(maxB * P * sizeof(int)), *targets = malloc(maxB * P * sizeof(int));
    float *lp = malloc(maxB * sizeof(float)), *dlogp = malloc(maxB * sizeof(float));
    int *nt = malloc(maxB * sizeof(int));

    int T = batch(&pd, 1, tokens, targets);
    float *logits = malloc((size_t)2 * n * T * V * sizeof(float));
    model_logits(&m, tokens, 2 * n, T, logits);
    dump(out, "logits_pref.bin", logits, (size_t)2 * n * T * V * sizeof(float));
    model_forward(&m, tokens, targets, 2 * n, T, lp, nt);
    dump(out, "logp_pref.bin", lp, 2 * n * sizeof(float));

    struct { const char *name; LossConfig cfg; } losses[] = {
        {"dpo", {LOSS_DPO, 0.1f, 0, 0}}, {"dpo_ls", {LOSS_DPO, 0.5f, 0, 0.2f}},
        {"simpo", {LOSS_SIMPO, 2.0f, 0.5f, 0}}, {"simpo_ls", {LOSS_SIMPO, 2.0f, 0.5f, 0.1f}},
        {"ipo", {LOSS_IPO, 0.1f, 0, 0}}, {"hinge", {LOSS_HINGE, 0.1f, 0, 0}}, {"sft", {LOSS_SFT, 0, 0, 0}}};
    int nl = sizeof losses / sizeof losses[0];
    double value[8];
    char name[64];
    for (int i = 0; i < nl; i++) {
        int pref = losses[i].cfg.kind != LOSS_SFT, B = pref ? 2 * n : sd.count;
        int Ti = batch(pref ? &pd : &sd, pref, tokens, targets);
        model_zero_grad(&m);
        model_forward(&m, tokens, targets, B, Ti, lp, nt);
        if (pref) {
            PrefMetrics pm;
            value[i] = preference_loss(&losses[i].cfg, n, lp, nt, lp + n, nt + n, ref, ref + n, n,
                                       dlogp, dlogp + n, &pm) / n;
        } else {
            double ntok = 0;
            for (int b = 0; b < B; b++) ntok += nt[b];
            value[i] = sft_loss(B, lp, ntok, dlogp) / ntok;
            dump(out, "logp_sft.bin", lp, B * sizeof(float));
        }
        model_backward(&m, dlogp);
        snprintf(name, sizeof name, "grad_%s.bin", losses[i].name);
        dump(out, name, m.grads, m.num_params * sizeof(float));
    }
    // dpo again through model_forward_pairs
    ModelPair *pairs = malloc(n * sizeof *pairs);
    for (int i = 0; i < n; i++)
        pairs[i] = (ModelPair){pd.rec[i].prompt, pd.rec[i].resp[0], pd.rec[i].resp[1], pd.rec[i].prompt_len,
                              pd.rec[i].resp_len[0], pd.rec[i].resp_len[1]};
    float *pc = malloc(n * sizeof(float)), *pr = malloc(n * sizeof(float)), *dc = malloc(n * sizeof(float)),
          *dr = malloc(n * sizeof(float));
    int *nc = malloc(n * sizeof(int)), *nr = malloc(n * sizeof(int));
    model_zero_grad(&m);
    model_forward_pairs(&m, pairs, n, lp, nt);
    dump(out, "logp_pairs.bin", lp, 2 * n * sizeof(float));
    for (int i = 0; i < n; i++) { pc[i] = lp[2 * i]; pr[i] = lp[2 * i + 1]; nc[i] = nt[2 * i]; nr[i] = nt[2 * i + 1]; }
    PrefMetrics pm;
    preference_loss(&losses[0].cfg, n, pc, nc, pr, nr, ref, ref + n, n, dc, dr, &pm);
    for (int i = 0; i < n; i++) { dlogp[2 * i] = dc[i]; dlogp[2 * i + 1] = dr[i]; }
    model_backward(&m, dlogp);
    dump(out, "grad_dpo_pairs.bin", m.grads, m.num_params * sizeof(float));

    char meta[8192];
    int len = snprintf(meta, sizeof meta, "{\"pref_T\": %d, \"loss\": {", T);
    for (int i = 0; i < nl; i++)
        len += snprintf(meta + len, sizeof meta - len, "%s\"%s\": %.9g", i ? ", " : "", losses[i].name, value[i]);
    len += snprintf(meta + len, sizeof meta - len, "}, \"tensors\": [");
    for (int t = 0; t < m.ntensors; t++)
        len += snprintf(meta + len, sizeof meta - len, "%s[\"%s\", %d]", t ? ", " : "", m.tensor[t].name, m.tensor[t].per_layer);
    len += snprintf(meta + len, sizeof meta - len, "]}\n");
    dump(out, "meta.json", meta, len);
    return 0;
}
