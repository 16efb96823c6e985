// Errors, exit codes and file helpers shared by the engine's commands.
// Library-style functions report failure by returning -1 after err_set(); commands turn the
// recorded error into the contract's stderr line and exit code with err_exit().
#pragma once
#include <stddef.h>
#include <stdint.h>

enum {
    EXIT_OK = 0,
    EXIT_BAD_INPUT = 2,   // bad input or usage: not worth retrying
    EXIT_NONFINITE = 3,   // NaN or infinite loss
    EXIT_IO = 4,          // transient or I/O failure: retryable
    EXIT_STOPPED = 143,   // SIGTERM/SIGINT after checkpointing
};

// Records an error (exit status, stable code, message); returns -1 for `return err_set(...)`.
int err_set(int exit_code, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *err_message(void);
// Prefixes the recorded message with context ("FILE: while doing X"), keeping its status and code;
// returns -1.
int err_context(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// Prints {"error":{"code","message"}} as the last stderr line and exits with the recorded status.
_Noreturn void err_exit(void);
_Noreturn void die(int exit_code, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
// I/O failures: ENOENT/EACCES/ENOTDIR/EISDIR/EROFS are the caller's input (2: file_not_readable
// or file_not_writable), anything else (ENOSPC, EIO, ...) is treated as transient (4: io_error).
int err_errno(const char *what, const char *path);

// The one checked allocator: count * size bytes (overflow-checked), reallocating p (NULL: a new
// block); NULL after err_set(EXIT_IO, "out_of_memory", ... what) on failure.
void *checked_realloc(void *p, size_t count, size_t size, const char *what);
void *checked_calloc(size_t count, size_t size, const char *what);
char *checked_strdup(const char *s, const char *what);

// Opens an existing regular file for reading without blocking (a FIFO never stalls the engine);
// a directory, FIFO, socket or device is refused naming the path. Returns the fd or -1.
int open_regular(const char *path, size_t *size);
// Reads a whole file (NUL-terminated for convenience). Returns 0 or -1 (error recorded).
int read_file(const char *path, char **data, size_t *size);
// Writes data to path atomically: temp file in the same directory, fsync, rename, fsync dir.
int write_file_atomic(const char *path, const void *data, size_t size);
int file_exists(const char *path);
int dir_exists(const char *path);
int mkdir_p(const char *path);
int remove_tree(const char *path);
int copy_file(const char *src, const char *dst);
int fsync_dir(const char *dir);
// Replaces dst by the complete directory src in one step (rename, or an atomic exchange when
// dst exists, after which the old tree is removed).
int replace_dir(const char *src, const char *dst);
// 64-bit FNV-1a over bytes, chainable through h (start with FNV_OFFSET).
#define FNV_OFFSET 1469598103934665603ULL
uint64_t fnv1a(uint64_t h, const void *data, size_t n);
