// opsr-engine: the native trainer and sampler. Subcommands are dispatched from here; each
// prints its errors as one JSON line on stderr (see util.h for exit codes).
#include <stdio.h>
#include <string.h>
#include "commands.h"
#include "util.h"

static const struct { const char *name; int (*run)(int, char **); const char *help; } COMMANDS[] = {
    {"init", cmd_init, "init --config CONFIG.json --out DIR --seed N"},
    {"train", cmd_train, "train --model DIR --data FILE --out DIR --loss sft|dpo|simpo|ipo|hinge [options]"},
    {"logprobs", cmd_logprobs, "logprobs --model DIR --data FILE [--threads N] [--out FILE]"},
    {"serve", cmd_serve, "serve --model DIR [--threads N] [--max-batch N] [--prefill-tokens N] [--dtype fp32|bf16]"},
};
#define NCOMMANDS (int)(sizeof COMMANDS / sizeof *COMMANDS)

int main(int argc, char **argv) {
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: opsr-engine COMMAND [flags]  (see engine/README.md)\n");
        for (int i = 0; i < NCOMMANDS; i++) printf("  %s\n", COMMANDS[i].help);
        return 0;
    }
    for (int i = 0; argc >= 2 && i < NCOMMANDS; i++)
        if (!strcmp(argv[1], COMMANDS[i].name)) return COMMANDS[i].run(argc - 2, argv + 2);
    char names[256] = "";
    for (int i = 0; i < NCOMMANDS; i++)
        snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "", COMMANDS[i].name);
    die(EXIT_BAD_INPUT, "usage", "%s%s; commands: %s", argc < 2 ? "missing command" : "unknown command ",
        argc < 2 ? "" : argv[1], names);
}
