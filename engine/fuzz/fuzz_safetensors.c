// libFuzzer target: the safetensors directory reader. The input is one model.safetensors, or,
// split at each "\0SHARD\0" marker, a model.safetensors.index.json followed by the shard files
// model-0000k-of-0000n.safetensors. Every tensor the header declares is then read as fp32.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fuzz.h"
#include "safetensors.h"

#define MARK "\0SHARD\0"
#define MARK_LEN 7

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[512];
    fuzz_clean();
    const uint8_t *part = data, *end = data + size;
    int nparts = 0;
    for (const uint8_t *p = data; p + MARK_LEN <= end; p++) nparts += !memcmp(p, MARK, MARK_LEN);
    if (nparts == 0) fuzz_write("model.safetensors", data, size, path, sizeof path);
    else {
        for (int k = 0; k <= nparts; k++) {
            const uint8_t *next = part;
            while (next + MARK_LEN <= end && memcmp(next, MARK, MARK_LEN)) next++;
            if (next + MARK_LEN > end) next = end;
            char name[64];
            if (k == 0) snprintf(name, sizeof name, "model.safetensors.index.json");
            else snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", k, nparts);
            fuzz_write(name, part, (size_t)(next - part), path, sizeof path);
            part = next + MARK_LEN < end ? next + MARK_LEN : end;
        }
    }
    StSet *s = st_open_dir(fuzz_dir());
    if (!s) return 0;
    const char *name;
    while ((name = st_unused(s))) {
        int64_t shape[8];
        int ndim = st_shape(s, name, shape);
        size_t count = 1;
        for (int d = 0; d < ndim; d++) count *= (size_t)shape[d];
        if (count > (1u << 24)) continue;  // valid but too large to materialize here
        float *out = malloc(count ? count * sizeof *out : 1);
        st_read_f32(s, name, shape, ndim, out);
        free(out);
    }
    (void)st_dtype(s);
    st_close(s);
    return 0;
}
