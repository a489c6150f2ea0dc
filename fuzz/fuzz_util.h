/*
 * fuzz_util.h - what the fuzz targets share: one temporary folder per process
 * (in /dev/shm when it exists, so the atomic writers' fsync costs nothing),
 * writing the fuzzer's bytes to a file there, and a check of the error
 * contract (a failing reader leaves a non-empty message in rf_last_error()).
 *
 * Each target keeps its body in a static function fuzz_<name>_one(); the
 * libFuzzer entry point is compiled unless FUZZ_NO_MAIN is defined, so
 * tests/test_fuzz_regressions.c includes the same files and replays saved
 * inputs through exactly the same code.
 */
#ifndef FUZZ_UTIL_H
#define FUZZ_UTIL_H

#include "../recfound.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char fuzz_dir_buf[256];
static pid_t fuzz_dir_pid;

/* Remove a folder and everything under it (no symlinks are created here). */
static inline void fuzz_rmtree(const char *path) {
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char sub[1024];
            struct stat st;
            if (snprintf(sub, sizeof sub, "%s/%s", path, e->d_name) >= (int)sizeof sub) continue;
            if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode)) fuzz_rmtree(sub);
            else unlink(sub);
        }
        closedir(d);
    }
    rmdir(path);
}

static inline void fuzz_cleanup(void) {
    if (fuzz_dir_pid == getpid() && fuzz_dir_buf[0]) fuzz_rmtree(fuzz_dir_buf);
}

/* The folder of this process, created on first use (again after a fork). */
static inline const char *fuzz_dir(void) {
    if (fuzz_dir_pid != getpid()) {
        const char *base = getenv("TMPDIR");
        struct stat st;
        if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0) base = "/dev/shm";
        else if (!base) base = "/tmp";
        snprintf(fuzz_dir_buf, sizeof fuzz_dir_buf, "%s/recfound-fuzz.%ld", base, (long)getpid());
        if (mkdir(fuzz_dir_buf, 0700) != 0 && errno != EEXIST) {
            fprintf(stderr, "fuzz: cannot create %s: %s\n", fuzz_dir_buf, strerror(errno));
            abort();
        }
        if (!fuzz_dir_pid) atexit(fuzz_cleanup);
        fuzz_dir_pid = getpid();
    }
    return fuzz_dir_buf;
}

/* dir/rel into buf (rel may hold folders; they are created). */
static inline const char *fuzz_path(char *buf, size_t n, const char *rel) {
    if (snprintf(buf, n, "%s/%s", fuzz_dir(), rel) >= (int)n) {
        fprintf(stderr, "fuzz: path too long: %s\n", rel);
        abort();
    }
    char *slash = strrchr(buf, '/');
    if (slash && strchr(rel, '/')) {
        *slash = '\0';
        if (rf_mkdirs(buf)) {
            fprintf(stderr, "fuzz: %s\n", rf_last_error());
            abort();
        }
        *slash = '/';
    }
    return buf;
}

/* Replace the file at path with data[0..size). */
static inline void fuzz_write(const char *path, const void *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        fprintf(stderr, "fuzz: cannot write %s\n", path);
        abort();
    }
}

/* data[0..size) as a gzip member of stored blocks (RFC 1952 §2.3, RFC 1951
 * §3.2.4): the simplest valid gzip file of those bytes, so that readers of .gz
 * files can be fuzzed on their content.  Caller frees. */
static inline unsigned char *fuzz_gzip_stored(const void *data, size_t size, size_t *out_len) {
    size_t blocks = size / 65535 + 1, n = 10 + 5 * blocks + size + 8;
    unsigned char *o = malloc(n), *q = o;
    if (!o) abort();
    static const unsigned char head[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff};
    memcpy(q, head, 10), q += 10;
    const unsigned char *p = data;
    size_t left = size;
    do {
        unsigned len = left > 65535 ? 65535 : (unsigned)left;
        *q++ = left == len; /* BFINAL on the last block, BTYPE 00 */
        *q++ = (unsigned char)len, *q++ = (unsigned char)(len >> 8);
        *q++ = (unsigned char)~len, *q++ = (unsigned char)(~len >> 8);
        if (len) memcpy(q, p, len);
        q += len, p += len, left -= len;
    } while (left);
    uint32_t crc = rf_crc32(0, data, size), isize = (uint32_t)size;
    for (int i = 0; i < 4; i++) *q++ = (unsigned char)(crc >> (8 * i));
    for (int i = 0; i < 4; i++) *q++ = (unsigned char)(isize >> (8 * i));
    *out_len = (size_t)(q - o);
    return o;
}

/* A reader returns 0, or -1 with a message; anything else is a bug. */
static inline int fuzz_check_rc(int rc, const char *what) {
    if (rc == 0) return 0;
    if (rc != -1 || !rf_last_error()[0]) {
        fprintf(stderr, "fuzz: %s returned %d with error message '%s'\n", what, rc, rf_last_error());
        abort();
    }
    return -1;
}

/* Run fn with standard output sent to /dev/null (commands that print). */
static inline int fuzz_quiet(int (*fn)(int, char **), int argc, char **argv) {
    fflush(stdout);
    int saved = dup(STDOUT_FILENO), null = open("/dev/null", O_WRONLY);
    if (saved < 0 || null < 0) abort();
    dup2(null, STDOUT_FILENO);
    close(null);
    int rc = fn(argc, argv);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    return rc;
}

#endif
