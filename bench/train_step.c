// Engine side of `npm run bench:train` (bench/train.ts): times one DPO training step (policy
// forward + backward on chosen and rejected, reference log-probs precomputed) through the model
// seam, and a large cblas_sgemm (the machine's BLAS rate). Prints one JSON line.
//   train_step gpt2|MODEL_DIR pairs|separate PAIRS PROMPT_LEN RESPONSE_LEN STEPS
// gpt2: a GPT-2 124M-shaped model, random weights; MODEL_DIR: an HF directory's real weights.
// pairs: model_forward_pairs (each prompt computed once); separate: 2 * PAIRS plain sequences.
// peak_rss_mb is the process's VmHWM after the steps (weights, gradients, activations).
#include "checkpoint.h"
#include "losses.h"
#include "model.h"
#include "util.h"
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double now(void) { return omp_get_wtime(); }

// Best of 3 runs of an N^3 sgemm, in GFLOP/s.
static double sgemm_gflops(int n) {
    float *a = malloc((size_t)n * n * sizeof(float)), *b = malloc((size_t)n * n * sizeof(float)),
          *c = malloc((size_t)n * n * sizeof(float));
    for (size_t i = 0; i < (size_t)n * n; i++) { a[i] = (float)(i % 7) * 0.1f; b[i] = (float)(i % 5) * 0.1f; }
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        t = now() - t;
        if (t < best) best = t;
    }
    free(a); free(b); free(c);
    return 2.0 * n * n * (double)n / best / 1e9;
}

// A field of /proc/self/status in MiB (VmHWM: peak resident set; VmRSS: current).
static double status_mb(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = -1;
    size_t n = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, field, n) && line[n] == ':') kb = atof(line + n + 1);
    if (f) fclose(f);
    return kb / 1024.0;
}

int main(int argc, char **argv) {
    if (argc != 7 || atoi(argv[3]) < 1 || atoi(argv[3]) > 4096 ||
        (strcmp(argv[2], "pairs") && strcmp(argv[2], "separate"))) {
        fprintf(stderr, "usage: train_step gpt2|MODEL_DIR pairs|separate PAIRS PROMPT_LEN RESPONSE_LEN STEPS\n");
        return 2;
    }
    int packed = !strcmp(argv[2], "pairs");
    int pairs = atoi(argv[3]), plen = atoi(argv[4]), rlen = atoi(argv[5]), steps = atoi(argv[6]);
    Model m;
    if (!strcmp(argv[1], "gpt2")) {
        ModelConfig cfg = {.arch = ARCH_GPT2, .model_type = "gpt2", .vocab_size = 50257, .max_seq_len = 1024,
                           .n_layer = 12, .n_head = 12, .n_kv_head = 12, .head_dim = 64, .n_embd = 768,
                           .n_inner = 3072, .norm_eps = 1e-5f, .tied_embeddings = 1, .init_std = 0.02f,
                           .pad_token_id = -1};
        if (model_build(&m, &cfg)) { fprintf(stderr, "train_step: out of memory\n"); return 1; }
        model_init_random(&m, 0);
    } else if (hf_load_model(argv[1], &m)) {
        err_exit();
    }
    if (model_alloc_grads(&m)) { fprintf(stderr, "train_step: out of memory\n"); return 1; }
    const ModelConfig *cfg = &m.cfg;
    if (plen + rlen > cfg->max_seq_len) {
        fprintf(stderr, "train_step: prompt + response exceeds the context\n");
        return 2;
    }
    double loaded_mb = status_mb("VmRSS");
    int B = 2 * pairs, T = plen + rlen;
    int *tokens = malloc((size_t)B * T * sizeof(int)), *targets = malloc((size_t)B * T * sizeof(int));
    uint64_t s = 1;
    for (int i = 0; i < B * T; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        tokens[i] = (int)((s >> 33) % cfg->vocab_size);
    }
    for (int b = 0; b < B; b++)  // chosen and rejected of a pair share the prompt
        for (int t = 0; t < plen; t++) tokens[b * T + t] = tokens[(b % pairs) * T + t];
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) targets[b * T + t] = t >= plen - 1 && t < T - 1 ? tokens[b * T + t + 1] : -1;
    // the same sequences as pairs: chosen = response of row i, rejected = response of row n + i
    uint32_t *ids = malloc((size_t)B * T * sizeof(uint32_t));
    ModelPair *pp = malloc(pairs * sizeof(ModelPair));
    for (int i = 0; i < B * T; i++) ids[i] = (uint32_t)tokens[i];
    for (int i = 0; i < pairs; i++)
        pp[i] = (ModelPair){
            ids + (size_t)i * T, ids + (size_t)i * T + plen, ids + (size_t)(pairs + i) * T + plen, plen, rlen, rlen};
    float *lp = malloc(B * sizeof(float)), *ref = malloc(B * sizeof(float)), *dlogp = malloc(B * sizeof(float));
    int *nt = malloc(B * sizeof(int));
    for (int b = 0; b < B; b++) ref[b] = -10.8f * rlen;  // precomputed reference log-probs
    LossConfig lc = {LOSS_DPO, 0.1f, 0, 0};
    double total = 0, best = 1e30, loss = 0;
    for (int it = 0; it <= steps; it++) {  // iteration 0 warms up (allocations, page faults)
        double t = now();
        model_zero_grad(&m);
        PrefMetrics pm;
        if (packed) {  // chosen/rejected interleaved: [2i], [2i + 1]
            float pc[4096], pr[4096], dc[4096], dr[4096];
            int nc[4096], nr[4096];
            model_forward_pairs(&m, pp, pairs, lp, nt);
            for (int i = 0; i < pairs; i++) {
                pc[i] = lp[2 * i];
                pr[i] = lp[2 * i + 1];
                nc[i] = nt[2 * i];
                nr[i] = nt[2 * i + 1];
            }
            loss = preference_loss(&lc, pairs, pc, nc, pr, nr, ref, ref + pairs, pairs, dc, dr, &pm) / pairs;
            for (int i = 0; i < pairs; i++) { dlogp[2 * i] = dc[i]; dlogp[2 * i + 1] = dr[i]; }
        } else {
            model_forward(&m, tokens, targets, B, T, lp, nt);
            loss = preference_loss(&lc, pairs, lp, nt, lp + pairs, nt + pairs, ref, ref + pairs, pairs,
                                   dlogp, dlogp + pairs, &pm) / pairs;
        }
        model_backward(&m, dlogp);
        t = now() - t;
        if (it > 0) { total += t; if (t < best) best = t; }
    }
    double peak_mb = status_mb("VmHWM");
    double step_s = total / steps;
    // matmul FLOPs the engine performs: the per-layer matrices (forward 2, backward 4 per weight
    // per token), attention (full T x T products per row, q and v widths), the LM head on scored
    // rows only. NT counts the step's logical tokens (2 * PAIRS * T) in both modes; `rows` what
    // was computed.
    double layer_w = 0;
    for (int t = 0; t < m.ntensors; t++)
        if (m.tensor[t].per_layer && m.tensor[t].ndim == 2) layer_w += (double)model_slice(&m, t);
    double C = cfg->n_embd, V = cfg->vocab_size, QD = (double)cfg->n_head * cfg->head_dim;
    double NT = (double)B * T, scored = (double)B * rlen;
    double rows = packed ? pairs : B, rowlen = packed ? plen + 2.0 * rlen - 2 : T;
    double body = 6.0 * rows * rowlen * cfg->n_layer * layer_w;
    double attn = 6.0 * 2.0 * rows * cfg->n_layer * rowlen * rowlen * QD;
    double head = 6.0 * scored * V * C;
    printf("{\"mode\": \"%s\", \"step_s\": %.4f, \"best_step_s\": %.4f, \"tokens_per_s\": %.2f, \"gflops\": %.2f, "
           "\"sgemm_gflops\": %.2f, \"loss\": %.9g, \"threads\": %d, \"params\": %zu, \"loaded_rss_mb\": %.1f, "
           "\"peak_rss_mb\": %.1f}\n",
           argv[2], step_s, best, NT / step_s, (body + attn + head) / step_s / 1e9, sgemm_gflops(2048), loss,
           omp_get_max_threads(), m.num_params, loaded_mb, peak_mb);
    model_free(&m);
    free(tokens); free(targets); free(ids); free(pp); free(lp); free(ref); free(dlogp); free(nt);
    return 0;
}
