// Command-line flags: "--name value" pairs and "--name" switches, checked against a table.
#pragma once

typedef enum { ARG_STR, ARG_INT, ARG_FLOAT, ARG_SWITCH } ArgKind;

#define ARG_MAX_LEN 4000  // longest flag value (paths get suffixes in 4200-byte buffers)

typedef struct {
    const char *name;  // without the leading "--"
    ArgKind kind;
    void *out;         // const char **, long *, double * or int * (switch: set to 1)
    int set;           // filled by args_parse: 1 when given
} ArgSpec;

// Parses argv[0..argc) (after the subcommand). Unknown, repeated or valueless flags, empty or
// over-long values and malformed numbers are usage errors (exit 2) naming the flag. Returns 0 or -1.
int args_parse(const char *cmd, int argc, char **argv, ArgSpec *specs, int n);
// The spec for a flag name (to test ->set).
const ArgSpec *args_get(const ArgSpec *specs, int n, const char *name);
// Sets the OpenMP and BLAS thread count (n <= 0 keeps the default).
void set_threads(long n);
