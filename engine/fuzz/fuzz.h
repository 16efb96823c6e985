// Shared by the fuzz targets: inputs that the engine reads from files are written to a private
// temp directory first (the readers take paths, as the CLI does).
#pragma once
#include <stddef.h>
#include <stdint.h>

// A per-process scratch directory under /dev/shm (or TMPDIR), created once.
const char *fuzz_dir(void);
// Writes data to fuzz_dir()/name; returns the path (static buffer per call site is the caller's).
void fuzz_write(const char *name, const uint8_t *data, size_t size, char *path, size_t cap);
// Removes every file in fuzz_dir().
void fuzz_clean(void);
