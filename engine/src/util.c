#include "util.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "json.h"

static int g_exit = EXIT_BAD_INPUT;
static char g_code[64] = "error";
static char g_msg[2048] = "";

static void verr_set(int exit_code, const char *code, const char *fmt, va_list ap) {
    vsnprintf(g_msg, sizeof g_msg, fmt, ap);
    snprintf(g_code, sizeof g_code, "%s", code);
    g_exit = exit_code;
}

int err_set(int exit_code, const char *code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    verr_set(exit_code, code, fmt, ap);
    va_end(ap);
    return -1;
}
const char *err_message(void) { return g_msg; }

int err_context(const char *fmt, ...) {
    char ctx[1024], old[sizeof g_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
    memcpy(old, g_msg, sizeof old);
    snprintf(g_msg, sizeof g_msg, "%s: %s", ctx, old);
    return -1;
}

_Noreturn void err_exit(void) {
    fflush(stdout);
    fputs("{\"error\":{\"code\":", stderr);
    json_write_string(stderr, g_code);
    fputs(",\"message\":", stderr);
    json_write_string(stderr, g_msg);
    fputs("}}\n", stderr);
    fflush(stderr);
    exit(g_exit);
}

_Noreturn void die(int exit_code, const char *code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    verr_set(exit_code, code, fmt, ap);
    va_end(ap);
    err_exit();
}

int err_errno(const char *what, const char *path) {
    int e = errno;
    int input = e == ENOENT || e == EACCES || e == ENOTDIR || e == EISDIR || e == ELOOP || e == EROFS;
    int reading = !strncmp(what, "cannot read", 11) || !strcmp(what, "cannot open") || !strcmp(what, "cannot map");
    return err_set(input ? EXIT_BAD_INPUT : EXIT_IO,
                   !input    ? "io_error"
                   : reading ? "file_not_readable"
                             : "file_not_writable",
                   "%s %s: %s", what, path, strerror(e));
}

void *checked_realloc(void *p, size_t count, size_t size, const char *what) {
    size_t bytes;
    void *q = NULL;
    if (!__builtin_mul_overflow(count, size, &bytes)) q = realloc(p, bytes ? bytes : 1);
    if (!q) err_set(EXIT_IO, "out_of_memory", "cannot allocate %zu x %zu bytes for %s", count, size, what);
    return q;
}

void *checked_calloc(size_t count, size_t size, const char *what) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) err_set(EXIT_IO, "out_of_memory", "cannot allocate %zu x %zu bytes for %s", count, size, what);
    return p;
}

char *checked_strdup(const char *s, const char *what) {
    size_t n = strlen(s) + 1;
    char *d = checked_realloc(NULL, n, 1, what);
    if (d) memcpy(d, s, n);
    return d;
}

int open_regular(const char *path, size_t *size) {
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return err_errno("cannot open", path);
    struct stat st;
    if (fstat(fd, &st) != 0) { int e = errno; close(fd); errno = e; return err_errno("cannot stat", path); }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return err_set(EXIT_BAD_INPUT, "file_not_readable", "cannot read %s: it is %s, not a regular file", path,
                       S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a FIFO" :
                       S_ISSOCK(st.st_mode) ? "a socket" : "a device");
    }
    *size = (size_t)st.st_size;
    return fd;
}

int read_file(const char *path, char **data, size_t *size) {
    size_t n;
    int fd = open_regular(path, &n);
    if (fd < 0) return -1;
    char *buf = checked_realloc(NULL, n + 1, 1, path);
    if (!buf) { close(fd); return -1; }
    size_t got = 0;
    int e = EIO;  // a file that shrank while being read
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) e = errno;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (got != n) { free(buf); errno = e; return err_errno("cannot read", path); }
    buf[n] = 0;
    *data = buf;
    *size = n;
    return 0;
}

int fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return err_errno("cannot open directory", dir);
    int rc = fsync(fd);
    close(fd);
    return rc == 0 ? 0 : err_errno("cannot fsync directory", dir);
}

static void dir_of(const char *path, char *out, size_t cap) {
    snprintf(out, cap, "%s", path);
    char *slash = strrchr(out, '/');
    if (!slash) snprintf(out, cap, ".");
    else if (slash == out) out[1] = 0;
    else *slash = 0;
}

int write_file_atomic(const char *path, const void *data, size_t size) {
    char tmp[4200], dir[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp-%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return err_errno("cannot create", tmp);
    const char *p = data;
    size_t left = size;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            int e = errno; close(fd); unlink(tmp); errno = e;
            return err_errno("cannot write", tmp);
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0) { int e = errno; close(fd); unlink(tmp); errno = e; return err_errno("cannot fsync", tmp); }
    close(fd);
    if (rename(tmp, path) != 0) { int e = errno; unlink(tmp); errno = e; return err_errno("cannot rename into", path); }
    dir_of(path, dir, sizeof dir);
    return fsync_dir(dir);
}

int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int dir_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int mkdir_p(const char *path) {
    char buf[4200];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return err_errno("cannot create directory", buf);
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return err_errno("cannot create directory", buf);
    if (!dir_exists(buf)) { errno = ENOTDIR; return err_errno("not a directory:", buf); }
    return 0;
}

int remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : err_errno("cannot stat", path);
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (!d) return err_errno("cannot open directory", path);
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char child[4200];
            snprintf(child, sizeof child, "%s/%s", path, e->d_name);
            if (remove_tree(child) != 0) { closedir(d); return -1; }
        }
        closedir(d);
        if (rmdir(path) != 0) return err_errno("cannot remove directory", path);
        return 0;
    }
    return unlink(path) == 0 ? 0 : err_errno("cannot remove", path);
}

int copy_file(const char *src, const char *dst) {
    char *data;
    size_t n;
    if (read_file(src, &data, &n) != 0) return -1;
    FILE *f = fopen(dst, "wb");
    if (!f) { free(data); return err_errno("cannot create", dst); }
    size_t w = fwrite(data, 1, n, f);
    free(data);
    int bad = w != n || fflush(f) != 0 || fsync(fileno(f)) != 0;
    fclose(f);
    return bad ? err_errno("cannot write", dst) : 0;
}

int replace_dir(const char *src, const char *dst) {
    char parent[4200];
    dir_of(dst, parent, sizeof parent);
    if (rename(src, dst) != 0) {
        if (errno != ENOTEMPTY && errno != EEXIST) return err_errno("cannot rename into", dst);
        // dst exists: swap the two trees atomically, then drop the old one (now at src).
        if (syscall(SYS_renameat2, AT_FDCWD, src, AT_FDCWD, dst, 2 /* RENAME_EXCHANGE */) != 0)
            return err_errno("cannot replace", dst);
        if (remove_tree(src) != 0) return -1;
    }
    return fsync_dir(parent);
}

uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 1099511628211ULL; }
    return h;
}
