// model_init_random: Hugging Face initialization statistics (GPT-2 and Llama family) and
// determinism by seed.
#include "gpt2.h"
#include "tiny.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

static int failures;

static void expect_std(const Model *m, int t, const char *name, double want) {
    double s = 0, ss = 0;
    size_t n = m->param_sizes[t];
    for (size_t i = 0; i < n; i++) { s += m->param[t][i]; ss += (double)m->param[t][i] * m->param[t][i]; }
    double mean = s / n, std = sqrt(ss / n - mean * mean);
    int bad = fabs(std - want) > 0.03 * want || fabs(mean) > 5 * want / sqrt((double)n);
    printf("%-9s mean %+.2e std %.5f (want 0, %.5f): %s\n", name, mean, std, want, bad ? "FAILED" : "ok");
    failures += bad;
}

static void expect_const(const Model *m, int t, const char *name, float want) {
    for (size_t i = 0; i < m->param_sizes[t]; i++)
        if (m->param[t][i] != want) {
            printf("%-9s [%zu] = %g, want %g: FAILED\n", name, i, m->param[t][i], want);
            failures++;
            return;
        }
    printf("%-9s all %g: ok\n", name, want);
}

int main(void) {
    ModelConfig c = tiny_config("{\"vocab_size\": 500, \"n_positions\": 64, \"n_layer\": 4, \"n_head\": 4, "
                                   "\"n_embd\": 64, \"n_inner\": 256}");
    Model a, b;
    if (model_build(&a, &c) || model_build(&b, &c)) { printf("init: out of memory\n"); return 1; }
    model_init_random(&a, 3);
    double proj = 0.02 / sqrt(2.0 * c.n_layer);
    expect_std(&a, P_WTE, "wte", 0.02);
    expect_std(&a, P_WPE, "wpe", 0.02);
    expect_std(&a, P_QKVW, "qkvw", 0.02);
    expect_std(&a, P_FCW, "fcw", 0.02);
    expect_std(&a, P_ATTPROJW, "attprojw", proj);
    expect_std(&a, P_FCPROJW, "fcprojw", proj);
    int ones[] = {P_LN1W, P_LN2W, P_LNFW}, zeros[] = {P_LN1B, P_LN2B, P_LNFB, P_QKVB, P_ATTPROJB, P_FCB, P_FCPROJB};
    const char *on[] = {"ln1w", "ln2w", "lnfw"}, *zn[] = {"ln1b", "ln2b", "lnfb", "qkvb", "attprojb", "fcb", "fcprojb"};
    for (int i = 0; i < 3; i++) expect_const(&a, ones[i], on[i], 1.0f);
    for (int i = 0; i < 7; i++) expect_const(&a, zeros[i], zn[i], 0.0f);
    model_init_random(&b, 3);
    int same = !memcmp(a.params, b.params, a.num_params * sizeof(float));
    model_init_random(&b, 4);
    int differ = memcmp(a.params, b.params, a.num_params * sizeof(float)) != 0;
    printf("same seed identical: %s; other seed differs: %s\n", same ? "ok" : "FAILED", differ ? "ok" : "FAILED");
    failures += !same + !differ;
    model_free(&a);
    model_free(&b);
    // Llama family: N(0, initializer_range) for every matrix and embedding, zero biases, unit
    // norms, the padding token's embedding zero
    ModelConfig lc =
        tiny_config("{\"model_type\": \"llama\", \"vocab_size\": 500, \"hidden_size\": 64, "
                    "\"intermediate_size\": 96, \"num_hidden_layers\": 3, \"num_attention_heads\": 4, "
                    "\"num_key_value_heads\": 2, \"max_position_embeddings\": 32, \"attention_bias\": true, "
                    "\"initializer_range\": 0.05, \"pad_token_id\": 7}");
    if (model_build(&a, &lc)) { printf("init: out of memory\n"); return 1; }
    model_init_random(&a, 5);
    for (int t = 0; t < a.ntensors; t++) {
        const char *name = a.tensor[t].name;
        if (strstr(name, "norm.weight") || strstr(name, "layernorm.weight")) expect_const(&a, t, name, 1.0f);
        else if (a.tensor[t].ndim == 1) expect_const(&a, t, name, 0.0f);
        else expect_std(&a, t, name, 0.05);
    }
    int pad_zero = 1;
    for (int j = 0; j < lc.n_embd; j++) pad_zero &= a.param[0][7 * lc.n_embd + j] == 0.0f;
    printf("pad_token_id row zero: %s\n", pad_zero ? "ok" : "FAILED");
    failures += !pad_zero;
    model_free(&a);
    printf("init: %s\n", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
