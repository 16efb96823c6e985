// libFuzzer target: the `serve` stdin protocol. Each input is a batch of request lines handed to
// serve.c's line handler (included here to reach its static functions), then generation runs
// until every accepted request finished, on a tiny random model (the context bounds each one).
#include <stdio.h>
#include "../src/serve.c"

static Generator *g_gen;
static Model g_model;

static void setup(void) {
    ModelConfig cfg = {.arch = ARCH_GPT2, .model_type = "gpt2", .vocab_size = 16, .max_seq_len = 12,
                       .n_layer = 1, .n_head = 2, .n_kv_head = 2, .head_dim = 4, .n_embd = 8,
                       .n_inner = 32, .norm_eps = 1e-5f};
    if (model_build(&g_model, &cfg)) abort();
    uint64_t x = 88172645463325252ULL;
    for (size_t i = 0; i < g_model.num_params; i++) {  // xorshift: deterministic small weights
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        g_model.params[i] = (float)((double)(x >> 11) / 9007199254740992.0 - 0.5);
    }
    if (!(g_gen = gen_create(&g_model, 4, 12, 0))) abort();
    if (!freopen("/dev/null", "w", stdout)) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_gen) setup();
    size_t start = 0;
    for (size_t i = 0; i <= size; i++) {
        if (i < size && data[i] != '\n') continue;
        if (i > start) handle_line(g_gen, (const char *)data + start, i - start);
        start = i + 1;
    }
    while (gen_pending(g_gen) > 0)
        if (gen_step(g_gen, on_token, on_done, NULL) < 0) abort();
    return 0;
}
