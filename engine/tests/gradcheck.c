// Finite-difference check of every loss's gradient through whole tiny models of each
// architecture: GPT-2; Llama with GQA, biases, untied head and llama3 RoPE scaling; Qwen2 (q/k/v
// biases, tied, one KV head); Mistral with a sliding window shorter than the sequences.
// For each loss and each parameter tensor: central differences on a sample of entries (always
// including the entry with the largest analytic gradient) against model_backward. Exits 1 on
// any mismatch with a summary of the failing (loss, tensor) pairs.
#include "adamw.h"
#include "tiny.h"
#include "losses.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { NPAIRS = 2, T = 12, SAMPLES = 5 };

static uint64_t rng = 42;
static uint32_t rnd(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return (uint32_t)rng; }

typedef struct {
    int tokens[2 * NPAIRS * T], targets[2 * NPAIRS * T];
    float ref[2 * NPAIRS];
} Batch;

// Sequence b: a prompt, a response (scored), then padding; chosen rows first, rejected after.
static void make_batch(Batch *bt, int V) {
    for (int b = 0; b < 2 * NPAIRS; b++) {
        int plen = 2 + b % 3, rlen = 3 + (b * 5) % 6;
        for (int t = 0; t < T; t++) {
            bt->tokens[b * T + t] = t < plen + rlen ? (int)(rnd() % V) : 0;
            bt->targets[b * T + t] = -1;
        }
        for (int t = plen - 1; t < plen + rlen - 1; t++) bt->targets[b * T + t] = bt->tokens[b * T + t + 1];
        bt->ref[b] = -20.0f + (float)(rnd() % 1000) / 100.0f;
    }
}

// Objective and (optionally) its dlogp for one loss on the batch.
static double objective(Model *m, const Batch *bt, const LossConfig *cfg, float *dlogp) {
    int B = 2 * NPAIRS;
    float lp[2 * NPAIRS], dtmp[2 * NPAIRS];
    int nt[2 * NPAIRS];
    model_forward(m, bt->tokens, bt->targets, B, T, lp, nt);
    float *d = dlogp ? dlogp : dtmp;
    if (cfg->kind == LOSS_SFT) {
        double ntot = 0;
        for (int b = 0; b < B; b++) ntot += nt[b];
        return sft_loss(B, lp, ntot, d) / ntot;
    }
    PrefMetrics pm;
    return preference_loss(cfg, NPAIRS, lp, nt, lp + NPAIRS, nt + NPAIRS, bt->ref, bt->ref + NPAIRS,
                           NPAIRS, d, d + NPAIRS, &pm) / NPAIRS;
}

// model_forward_pairs (prompt shared, rejected branch masked) against model_forward on the
// separate sequences: same log-probs and gradients. Returns the number of mismatches.
static int check_pairs(Model *m) {
    enum { N = 3, MAXL = 7 };
    int plen[N] = {3, 1, 5}, clen[N] = {4, 1, 2}, rlen[N] = {2, 5, 1};
    uint32_t pr[N][MAXL], ch[N][MAXL], rj[N][MAXL];
    ModelPair pairs[N];
    int tokens[2 * N * 2 * MAXL], targets[2 * N * 2 * MAXL], T = 1;
    for (int i = 0; i < N; i++) {
        for (int k = 0; k < MAXL; k++) {
            pr[i][k] = rnd() % m->cfg.vocab_size;
            ch[i][k] = rnd() % m->cfg.vocab_size;
            rj[i][k] = rnd() % m->cfg.vocab_size;
        }
        pairs[i] = (ModelPair){pr[i], ch[i], rj[i], plen[i], clen[i], rlen[i]};
        int lc = plen[i] + clen[i] - 1, lr = plen[i] + rlen[i] - 1;
        if (lc > T) T = lc;
        if (lr > T) T = lr;
    }
    for (int b = 0; b < 2 * N; b++) {  // separate sequences, chosen 2i and rejected 2i + 1
        int i = b / 2, R = b % 2 ? rlen[i] : clen[i];
        const uint32_t *resp = b % 2 ? rj[i] : ch[i];
        for (int t = 0; t < T; t++) {
            int in = t < plen[i] + R - 1;
            tokens[b * T + t] = !in ? 0 : t < plen[i] ? (int)pr[i][t] : (int)resp[t - plen[i]];
            targets[b * T + t] = in && t + 1 >= plen[i] ? (int)resp[t + 1 - plen[i]] : -1;
        }
    }
    float lp1[2 * N], lp2[2 * N], dlogp[2 * N];
    int n1[2 * N], n2[2 * N], bad = 0;
    for (int b = 0; b < 2 * N; b++) dlogp[b] = 0.25f * (b + 1) * (b % 2 ? -1 : 1);
    float *g1 = malloc(m->num_params * sizeof(float));
    model_zero_grad(m);
    model_forward(m, tokens, targets, 2 * N, T, lp1, n1);
    model_backward(m, dlogp);
    memcpy(g1, m->grads, m->num_params * sizeof(float));
    model_zero_grad(m);
    model_forward_pairs(m, pairs, N, lp2, n2);
    model_backward(m, dlogp);
    for (int b = 0; b < 2 * N; b++)
        if (n1[b] != n2[b] || fabsf(lp1[b] - lp2[b]) > 1e-5f * fabsf(lp1[b])) {
            printf("FAIL pairs: sequence %d log-prob %.7g (%d tokens) vs separate %.7g (%d)\n", b, lp2[b], n2[b],
                   lp1[b], n1[b]);
            bad++;
        }
    size_t off = 0;
    for (int t = 0; t < m->ntensors; t++) {
        double err = 0, mx = 0;
        for (size_t i = off; i < off + m->param_sizes[t]; i++) {
            err = fmax(err, fabs(g1[i] - m->grads[i]));
            mx = fmax(mx, fabs(g1[i]));
        }
        if (err > 1e-4 * mx || mx == 0) {
            printf("FAIL pairs: gradient of %s differs by %.3e (max %.3e)\n", m->tensor[t].name, err, mx);
            bad++;
        }
        off += m->param_sizes[t];
    }
    free(g1);
    printf("pairs: packed forward/backward %s separate sequences\n", bad ? "DIFFERS from" : "matches");
    return bad;
}

static int run(const char *label, const char *json) {
    ModelConfig c = tiny_config(json);
    Model m;
    if (model_build(&m, &c) || model_alloc_grads(&m)) { fprintf(stderr, "gradcheck: out of memory\n"); return 1; }
    model_init_random(&m, 7);
    // non-trivial LayerNorm affine and biases so their gradients are exercised
    for (int t = 0; t < m.ntensors; t++)
        if (!m.tensor[t].decay)
            for (size_t i = 0; i < m.param_sizes[t]; i++) m.param[t][i] += ((int)(rnd() % 200) - 100) * 1e-3f;
    // larger weights than the 0.02 init so that the log-probs depend visibly on every tensor
    for (int t = 0; t < m.ntensors; t++)
        if (m.tensor[t].decay)
            for (size_t i = 0; i < m.param_sizes[t]; i++) m.param[t][i] *= 10.0f;
    Batch bt;
    make_batch(&bt, c.vocab_size);

    struct { const char *name; LossConfig cfg; } losses[] = {
        {"sft", {LOSS_SFT, 0, 0, 0}},
        {"dpo", {LOSS_DPO, 0.1f, 0, 0}},
        {"dpo+ls", {LOSS_DPO, 0.5f, 0, 0.2f}},
        {"simpo", {LOSS_SIMPO, 2.0f, 0.5f, 0}},
        {"simpo+ls", {LOSS_SIMPO, 2.0f, 0.5f, 0.1f}},
        {"ipo", {LOSS_IPO, 0.1f, 0, 0}},
        {"hinge", {LOSS_HINGE, 0.1f, 0, 0}},
    };
    int failures = 0, checks = 0;
    double worst = 0;
    const float h = 3e-3f;  // balances truncation error against fp32 rounding
    for (size_t li = 0; li < sizeof(losses) / sizeof(losses[0]); li++) {
        const LossConfig *cfg = &losses[li].cfg;
        float dlogp[2 * NPAIRS];
        model_zero_grad(&m);
        objective(&m, &bt, cfg, dlogp);
        model_backward(&m, dlogp);
        for (int t = 0; t < m.ntensors; t++) {
            size_t n = m.param_sizes[t], idx[SAMPLES + 1];
            float gmax = 0;
            idx[0] = 0;
            for (size_t i = 0; i < n; i++)
                if (fabsf(m.grad[t][i]) > gmax) { gmax = fabsf(m.grad[t][i]); idx[0] = i; }
            for (int s = 1; s <= SAMPLES; s++) idx[s] = rnd() % n;
            double err = 0;
            for (int s = 0; s <= SAMPLES; s++) {
                float *p = &m.param[t][idx[s]], keep = *p;
                *p = keep + h; double up = objective(&m, &bt, cfg, NULL);
                *p = keep - h; double dn = objective(&m, &bt, cfg, NULL);
                *p = keep;
                double fd = (up - dn) / (2.0 * h), an = m.grad[t][idx[s]];
                if (fabs(fd - an) > err) err = fabs(fd - an);
                checks++;
            }
            // relative to the tensor's largest gradient: correct code stays under 1e-3; a
            // wrong GELU cubic coefficient (a subtle bug) gives 1.6e-2
            double rel = err / fmax(gmax, 1e-6);
            if (rel > worst) worst = rel;
            if (rel > 5e-3 || gmax == 0.0f) {
                printf("FAIL %s %-8s %-9s max|fd-an| = %.3e, max|grad| = %.3e, rel = %.3e\n",
                       label, losses[li].name, m.tensor[t].name, err, gmax, rel);
                failures++;
            }
        }
    }
    failures += check_pairs(&m);
    // bit-reproducible: the same step twice gives identical gradients (resume relies on it)
    {
        float dlogp[2 * NPAIRS];
        float *g1 = malloc(m.num_params * sizeof(float));
        for (int rep = 0; rep < 2; rep++) {
            model_zero_grad(&m);
            objective(&m, &bt, &losses[1].cfg, dlogp);
            model_backward(&m, dlogp);
            if (rep == 0) memcpy(g1, m.grads, m.num_params * sizeof(float));
        }
        if (memcmp(g1, m.grads, m.num_params * sizeof(float))) {
            printf("FAIL determinism: two identical steps gave different gradients\n");
            failures++;
        }
        free(g1);
    }
    // clip_grad_norm: norm and scaling against a direct computation
    double ss = 0;
    for (size_t i = 0; i < m.num_params; i++) ss += (double)m.grads[i] * m.grads[i];
    float g0 = m.grads[3], norm = clip_grad_norm(m.grads, m.num_params, (float)sqrt(ss) / 4);
    if (fabs(norm - sqrt(ss)) > 1e-5 * sqrt(ss) || fabsf(m.grads[3] - g0 / 4) > 1e-5f * fabsf(g0) + 1e-12f) {
        printf("FAIL clip_grad_norm: norm %.7g vs %.7g\n", norm, sqrt(ss));
        failures++;
    }
    // extreme logits: log-probs far below float exp's range stay finite (taken from the logit)
    {
        float lp[2 * NPAIRS];
        int nt[2 * NPAIRS];
        for (size_t j = 0; j < m.param_sizes[m.head]; j++) m.param[m.head][j] *= 1e4f;
        model_forward(&m, bt.tokens, bt.targets, 2 * NPAIRS, T, lp, nt);
        double lowest = 0;
        int finite = 1;
        for (int b = 0; b < 2 * NPAIRS; b++) { finite &= isfinite(lp[b]) != 0; lowest = fmin(lowest, lp[b]); }
        if (!finite || lowest > -1000) {
            printf("FAIL extreme logits: log-probs %s, lowest %.4g (want finite and < -1000)\n",
                   finite ? "finite" : "NOT finite", lowest);
            failures++;
        }
    }
    printf("gradcheck %s: %d checks over %zu losses x %d tensors, worst relative error %.2e: %s\n",
           label, checks, sizeof(losses) / sizeof(losses[0]), m.ntensors, worst, failures ? "FAILED" : "ok");
    model_free(&m);
    return failures;
}

int main(void) {
    int failures = run("gpt2", "{\"model_type\": \"gpt2\", \"vocab_size\": 29, \"n_positions\": 16, \"n_layer\": 2, "
                       "\"n_head\": 2, \"n_embd\": 16, \"n_inner\": 24}");
    failures +=
        run("llama",
            "{\"model_type\": \"llama\", \"vocab_size\": 29, \"max_position_embeddings\": 16, "
            "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"hidden_size\": 16, "
            "\"head_dim\": 6, \"intermediate_size\": 24, \"rms_norm_eps\": 1e-5, \"attention_bias\": true, "
            "\"mlp_bias\": true, \"tie_word_embeddings\": false, \"rope_parameters\": {\"rope_type\": \"llama3\", "
            "\"rope_theta\": 100.0, \"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
            "\"original_max_position_embeddings\": 8}}");
    failures += run(
        "qwen2",
        "{\"model_type\": \"qwen2\", \"vocab_size\": 29, \"max_position_embeddings\": 16, "
        "\"num_hidden_layers\": 2, \"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"hidden_size\": 16, "
        "\"intermediate_size\": 24, \"rms_norm_eps\": 1e-6, \"tie_word_embeddings\": true, \"rope_theta\": 1000.0}");
    failures +=
        run("mistral",
            "{\"model_type\": \"mistral\", \"vocab_size\": 29, \"max_position_embeddings\": 16, "
            "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 1, \"hidden_size\": 16, "
            "\"intermediate_size\": 24, \"rms_norm_eps\": 1e-5, \"sliding_window\": 4, \"rope_theta\": 1000.0}");
    return failures ? 1 : 0;
}
