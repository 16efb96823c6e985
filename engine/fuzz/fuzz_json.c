// libFuzzer target: json_parse on arbitrary bytes; what parses is written back and freed.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    JsonValue v;
    char err[256];
    if (json_parse((const char *)data, size, &v, err, sizeof err) == 0) {
        char *out = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&out, &len);
        json_write_value(f, &v, 0);
        fclose(f);
        // What the writer emits must parse again (numbers and strings round-trip).
        JsonValue again;
        if (json_parse(out, len, &again, err, sizeof err) != 0) {
            fprintf(stderr, "rewritten JSON does not parse: %s\n", err);
            abort();
        }
        json_free(&again);
        free(out);
        json_free(&v);
    }
    return 0;
}
