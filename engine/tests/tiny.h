// Test helper: a ModelConfig from config.json text, validated like a checkpoint's.
#pragma once
#include "model.h"
#include "util.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline ModelConfig tiny_config(const char *json) {
    JsonValue root;
    char err[128];
    ModelConfig c;
    if (json_parse(json, strlen(json), &root, err, sizeof err) || model_parse_config(&root, "test config", &c)) {
        fprintf(stderr, "bad test config: %s %s\n", err, err_message());
        exit(1);
    }
    json_free(&root);
    return c;
}
