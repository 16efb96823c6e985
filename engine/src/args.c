#include "args.h"
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include "util.h"

int args_parse(const char *cmd, int argc, char **argv, ArgSpec *specs, int n) {
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        ArgSpec *s = NULL;
        if (!strncmp(a, "--", 2))
            for (int k = 0; k < n && !s; k++)
                if (!strcmp(a + 2, specs[k].name)) s = &specs[k];
        if (!s)
            return err_set(EXIT_BAD_INPUT, "usage",
                           "%s: unknown argument %s (see engine/README.md for the flags of %s)", cmd, a, cmd);
        if (s->set) return err_set(EXIT_BAD_INPUT, "usage", "%s: flag --%s is given twice", cmd, s->name);
        s->set = 1;
        if (s->kind == ARG_SWITCH) { *(int *)s->out = 1; continue; }
        if (i + 1 >= argc) return err_set(EXIT_BAD_INPUT, "usage", "%s: flag --%s needs a value", cmd, s->name);
        const char *v = argv[++i];
        char *end;
        errno = 0;
        // An empty path would turn "--out ''" into "/checkpoints" (the filesystem root).
        if (!*v) return err_set(EXIT_BAD_INPUT, "usage", "%s: --%s must not be empty", cmd, s->name);
        // Paths are built in 4200-byte buffers with suffixes: longer values would be cut silently.
        if (strlen(v) > ARG_MAX_LEN)
            return err_set(EXIT_BAD_INPUT, "usage", "%s: --%s is %zu bytes long (at most %d)", cmd, s->name, strlen(v),
                           ARG_MAX_LEN);
        if (s->kind == ARG_STR) *(const char **)s->out = v;
        else if (s->kind == ARG_INT) {
            long x = strtol(v, &end, 10);
            if (!*v || *end || errno)
                return err_set(EXIT_BAD_INPUT, "usage", "%s: --%s must be an integer, got \"%s\"", cmd, s->name, v);
            *(long *)s->out = x;
        } else {
            double x = strtod(v, &end);
            if (!*v || *end || errno || !isfinite(x))
                return err_set(EXIT_BAD_INPUT, "usage", "%s: --%s must be a finite number, got \"%s\"", cmd, s->name,
                               v);
            *(double *)s->out = x;
        }
    }
    return 0;
}

const ArgSpec *args_get(const ArgSpec *specs, int n, const char *name) {
    for (int k = 0; k < n; k++)
        if (!strcmp(specs[k].name, name)) return &specs[k];
    return NULL;
}

void set_threads(long n) {
    if (n <= 0) return;
    omp_set_num_threads((int)n);
    openblas_set_num_threads((int)n);
}
