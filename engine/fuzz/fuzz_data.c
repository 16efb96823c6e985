// libFuzzer target: the training data file reader (data.h) against a small model config, then a
// micro-batch of every record pair, as train builds them.
#include <stdlib.h>
#include "data.h"
#include "model.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[512];
    fuzz_write("data.bin", data, size, path, sizeof path);
    ModelConfig cfg = {.arch = ARCH_GPT2, .model_type = "gpt2", .vocab_size = 50, .max_seq_len = 32,
                       .n_layer = 1, .n_head = 1, .n_kv_head = 1, .head_dim = 8, .n_embd = 8,
                       .n_inner = 32};
    DataFile d;
    if (data_load(path, &cfg, &d)) return 0;
    int tokens[2 * 32], targets[2 * 32];
    for (int i = 0; i < d.count; i++) {
        const DataRecord *recs[2] = {&d.rec[i], &d.rec[i]};
        int side[2] = {0, d.kind == DATA_PREF};
        data_batch(recs, side, 2, tokens, targets);
    }
    data_free(&d);
    return 0;
}
