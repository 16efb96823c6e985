// opsr-engine init: a randomly initialized model (any architecture of model.h) of a given shape
// as an HF directory.
#include <stdlib.h>
#include <string.h>
#include "args.h"
#include "checkpoint.h"
#include "commands.h"
#include "json.h"
#include "util.h"

// bos/eos token ids of the input config when present (tokenizer-specific), else -1.
static void token_ids(const char *path, int *bos, int *eos) {
    char *text;
    size_t n;
    JsonValue root;
    char perr[64];
    *bos = *eos = -1;
    if (read_file(path, &text, &n)) return;
    if (json_parse(text, n, &root, perr, sizeof perr) == 0) {
        const JsonValue *b = json_get(&root, "bos_token_id"), *e = json_get(&root, "eos_token_id");
        if (json_is_int(b, 0, 1 << 30)) *bos = (int)b->num;
        if (json_is_int(e, 0, 1 << 30)) *eos = (int)e->num;
        json_free(&root);
    }
    free(text);
}

int cmd_init(int argc, char **argv) {
    const char *config = NULL, *out = NULL;
    long seed = 0;
    ArgSpec specs[] = {{"config", ARG_STR, &config, 0}, {"out", ARG_STR, &out, 0}, {"seed", ARG_INT, &seed, 0}};
    if (args_parse("init", argc, argv, specs, 3)) err_exit();
    if (!config || !out) die(EXIT_BAD_INPUT, "usage", "init: --config and --out are required");
    if (seed < 0) die(EXIT_BAD_INPUT, "usage", "init: --seed must be >= 0");
    ModelConfig cfg;
    if (hf_load_config(config, &cfg)) err_exit();
    int bos, eos;
    token_ids(config, &bos, &eos);
    if (bos >= cfg.vocab_size || eos >= cfg.vocab_size)
        die(EXIT_BAD_INPUT, "bad_config", "%s: bos_token_id/eos_token_id must be < vocab_size (%d)", config,
            cfg.vocab_size);
    Model m;
    if (model_build(&m, &cfg)) die(EXIT_IO, "out_of_memory", "init: cannot allocate the model of %s", config);
    model_init_random(&m, (uint64_t)seed);
    char path[4200];
    char *json = m.ops->config_json(&cfg, bos, eos);
    if (!json) die(EXIT_IO, "out_of_memory", "init: cannot allocate config.json");
    snprintf(path, sizeof path, "%s/config.json", out);
    int rc = mkdir_p(out) || write_file_atomic(path, json, strlen(json));
    free(json);
    rc = rc || hf_save_weights(&m, out, "F32", 0);
    size_t num_params = m.num_params;
    model_free(&m);
    if (rc) err_exit();
    printf("{\"event\":\"done\",\"path\":");
    json_write_string(stdout, out);
    printf(",\"num_params\":%zu}\n", num_params);
    return 0;
}
