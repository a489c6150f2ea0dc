/*
 * io.c - everything that touches the disk: the one-line error buffer, whole
 * files and atomic writes, a small JSON reader/writer (RFC 8259), safetensors
 * files, Hugging Face config.json, and model folders laid out as Hugging Face
 * `save_pretrained` does (config.json + model.safetensors, or shards named by
 * model.safetensors.index.json).
 *
 * Every function that can fail returns -1 after rf_error() wrote one line:
 * "FILE: position: problem".  Nothing here asserts on, or crashes on, input.
 */
#include "recfound.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <dirent.h>
#include <unistd.h>

/* ------------------------------------------------------------------ errors */

static char g_error[1024];

int rf_error(const char *fmt, ...) {
    /* Format into a scratch buffer first: callers may pass rf_last_error() as
     * an argument to prefix a folder name onto an earlier message. */
    char tmp[sizeof g_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    memcpy(g_error, tmp, sizeof g_error);
    return -1;
}

const char *rf_last_error(void) { return g_error; }

void rf_clear_error(void) { g_error[0] = '\0'; }

/* ---------------------------------------------------------------- progress */

/* On a terminal the progress line rewrites itself ("\r").  Anywhere else (a log
 * file, a pipe) those rewrites would pile up into one endless line, so there each
 * update is a whole line, at most one every PROGRESS_EVERY seconds, and the
 * latest one is written when the line ends. */
#define PROGRESS_EVERY 10.0

static int g_progress_open;      /* a terminal progress line is on stderr without its newline */
static int g_progress_tty = -1;  /* whether stderr is a terminal; -1 until asked */
static char g_progress_last[512];
static int g_progress_pending;   /* not a terminal: g_progress_last is not written yet */
static double g_progress_at;     /* not a terminal: when the last update was written; 0: none yet */

void rf_progress(const char *fmt, ...) {
    char line[sizeof g_progress_last];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (g_progress_tty < 0) g_progress_tty = isatty(fileno(stderr));
    if (g_progress_tty) {
        fprintf(stderr, "\r%s", line);
        g_progress_open = 1;
        return;
    }
    size_t n = strlen(line);
    while (n > 0 && line[n - 1] == ' ') line[--n] = '\0';  /* the padding that clears a terminal line */
    memcpy(g_progress_last, line, n + 1);
    g_progress_pending = 1;
    double now = rf_now();
    if (g_progress_at == 0 || now - g_progress_at >= PROGRESS_EVERY) {
        fprintf(stderr, "%s\n", line);
        g_progress_pending = 0;
        g_progress_at = now;
    }
}

void rf_progress_end(void) {
    if (g_progress_open) fputc('\n', stderr);
    if (g_progress_pending) fprintf(stderr, "%s\n", g_progress_last);
    g_progress_open = g_progress_pending = 0;
    g_progress_at = 0;
}

double rf_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------- files */

int rf_read_file(const char *path, char **out, size_t *len) {
    *out = NULL;
    if (len) *len = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) return rf_error("%s: cannot open: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (!buf) {
        fclose(fp);
        return rf_error("%s: out of memory", path);
    }
    for (;;) {  /* read until EOF: works for pipes and /proc files too */
        if (cap - n < 2) {
            char *nb = cap > SIZE_MAX / 2 ? NULL : realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                fclose(fp);
                return rf_error("%s: out of memory after %zu bytes", path, n);
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, fp);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(fp);
    fclose(fp);
    if (bad) {
        free(buf);
        return rf_error("%s: read error after %zu bytes", path, n);
    }
    buf[n] = '\0';
    *out = buf;
    if (len) *len = n;
    return 0;
}

int rf_file_crc32(const char *path, uint32_t *crc) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return rf_error("%s: cannot open: %s", path, strerror(errno));
    unsigned char buf[1 << 16];
    uint32_t c = 0;
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, fp)) > 0) c = rf_crc32(c, buf, got);
    int bad = ferror(fp);
    fclose(fp);
    if (bad) return rf_error("%s: read error", path);
    *crc = c;
    return 0;
}

/* An atomic writer: bytes go to "<path>.tmp.<pid>" in the same folder (so the
 * final rename(2) never crosses file systems); commit = fflush + fsync + close
 * + rename; any failure removes the temporary file. */
typedef struct {
    const char *path;
    char *tmp;
    FILE *fp;
} AtomicFile;

static int atomic_open(AtomicFile *a, const char *path) {
    a->path = path;
    a->fp = NULL;
    size_t n = strlen(path) + 32;
    a->tmp = malloc(n);
    if (!a->tmp) return rf_error("%s: out of memory", path);
    snprintf(a->tmp, n, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(a->tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const char *slash = strrchr(path, '/');
    if (fd < 0 && errno == ENOENT && slash && slash != path) {  /* the folder does not exist yet: make it */
        char *dir = strndup(path, (size_t)(slash - path));
        if (dir && rf_mkdirs(dir) == 0) fd = open(a->tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        free(dir);
    }
    if (fd < 0 || !(a->fp = fdopen(fd, "wb"))) {
        int e = errno;
        if (fd >= 0) close(fd);
        unlink(a->tmp);
        rf_error("%s: cannot create temporary file %s: %s", path, a->tmp, strerror(e));
        free(a->tmp);
        a->tmp = NULL;
        return -1;
    }
    return 0;
}

static int atomic_write(AtomicFile *a, const void *data, size_t len) {
    if (len && fwrite(data, 1, len, a->fp) != len)
        return rf_error("%s: write to %s failed: %s", a->path, a->tmp, strerror(errno));
    return 0;
}

static void atomic_abort(AtomicFile *a) {
    if (a->fp) fclose(a->fp);
    if (a->tmp) unlink(a->tmp);
    free(a->tmp);
    a->fp = NULL;
    a->tmp = NULL;
}

/* fsync the folder so the rename itself survives a power cut (best effort:
 * some file systems refuse fsync on folders). */
static void fsync_parent(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir) return;
    int fd = open(dir, O_RDONLY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

static int atomic_commit(AtomicFile *a) {
    int e = 0;
    const char *what = NULL;
    if (fflush(a->fp) != 0) e = errno, what = "flush";
    else if (fsync(fileno(a->fp)) != 0) e = errno, what = "fsync";
    int rc = fclose(a->fp);
    a->fp = NULL;
    if (!what && rc != 0) e = errno, what = "close";
    if (!what && rename(a->tmp, a->path) != 0) e = errno, what = "rename";
    if (what) {
        rf_error("%s: %s of %s failed: %s", a->path, what, a->tmp, strerror(e));
        atomic_abort(a);
        return -1;
    }
    fsync_parent(a->path);
    free(a->tmp);
    a->tmp = NULL;
    return 0;
}

int rf_write_file_atomic(const char *path, const void *data, size_t len) {
    AtomicFile a;
    if (atomic_open(&a, path) != 0) return -1;
    if (atomic_write(&a, data, len) != 0) {
        atomic_abort(&a);
        return -1;
    }
    return atomic_commit(&a);
}

int rf_mkdirs(const char *path) {
    char *p = strdup(path);
    if (!p) return rf_error("%s: out of memory", path);
    /* Create each prefix ending before a '/', then the whole path. */
    for (char *s = p + 1; ; s++) {
        if (*s == '/' || *s == '\0') {
            char c = *s;
            *s = '\0';
            if (mkdir(p, 0755) != 0 && errno != EEXIST) {
                int e = errno;
                rf_error("%s: cannot create folder %s: %s", path, p, strerror(e));
                free(p);
                return -1;
            }
            *s = c;
            if (c == '\0') break;
        }
    }
    free(p);
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return rf_error("%s: exists and is not a folder", path);
    return 0;
}

int rf_can_make_folder_of(const char *path) {
    char *p = strdup(path);
    if (!p) return rf_error("%s: out of memory", path);
    int rc = 0;
    for (;;) {
        char *slash = strrchr(p, '/');
        if (!slash) strcpy(p, ".");      /* a bare file name: the working folder */
        else if (slash == p) p[1] = '\0'; /* "/name": the root */
        else *slash = '\0';
        struct stat st;
        if (stat(p, &st) == 0) {
            if (!S_ISDIR(st.st_mode)) rc = rf_error("%s: %s is not a folder", path, p);
            else if (access(p, W_OK | X_OK) != 0) rc = rf_error("%s: cannot write in %s: %s", path, p, strerror(errno));
            break;
        }
        if (errno != ENOENT) { rc = rf_error("%s: %s: %s", path, p, strerror(errno)); break; }
    }
    free(p);
    return rc;
}

static int compare_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int rf_new_output(const char *path, const char *hint) {
    struct stat st;
    if (!hint) hint = "choose another --out, or remove it first";
    if (stat(path, &st) != 0) return 0;  /* nothing there yet */
    if (!S_ISDIR(st.st_mode)) return rf_error("%s: already exists: nothing was written; %s", path, hint);
    DIR *d = opendir(path);
    if (!d) return rf_error("%s: cannot read the folder: %s", path, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *e;
    while (!rc && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (n == cap) {
            char **grown = realloc(names, (cap = cap ? 2 * cap : 16) * sizeof *names);
            if (!grown) { rc = rf_error("%s: out of memory", path); break; }
            names = grown;
        }
        if (!(names[n] = strdup(e->d_name))) rc = rf_error("%s: out of memory", path);
        else n++;
    }
    closedir(d);
    if (!rc && n > 0) {  /* the first three names in sorted order: the same message on every file system */
        qsort(names, n, sizeof *names, compare_names);
        char more[48] = "";
        if (n > 3) snprintf(more, sizeof more, " and %zu more", n - 3);
        rc = rf_error("%s: already exists and holds %s%s%s%s%s%s: nothing was written; %s", path, names[0],
                      n > 1 ? ", " : "", n > 1 ? names[1] : "", n > 2 ? ", " : "", n > 2 ? names[2] : "", more, hint);
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc;
}

/* ------------------------------------------------------- memory figures */

/* The number after `key` where a line of text starts with it ("key 123" in a
 * cgroup's memory.stat, "key:  123 kB" in /proc/meminfo), or -1 without one. */
double text_field(const char *text, const char *key) {
    size_t n = strlen(key);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, key, n) || (p[n] != ' ' && p[n] != ':' && p[n] != '\t')) continue;
        const char *q = p + n + (p[n] == ':');
        char *end;
        double v = strtod(q, &end);
        return end == q || v < 0 ? -1 : v;
    }
    return -1;
}

/* A limit in bytes, or -1 for none (cgroup v1 writes about 2^63 for none). */
static double limit_or_none(double v) { return v <= 0 || v >= 0x1p60 ? -1 : v; }

/* A cgroup limit file ("max", or bytes): bytes, or -1 for no limit. */
double cgroup_limit_value(const char *text) {
    char *end;
    double v = text ? strtod(text, &end) : 0;
    return !text || end == text ? -1 : limit_or_none(v);
}

/* The groups of a /proc/self/cgroup text ("id:controllers:path" lines): the
 * cgroup v2 path ("0::/path") into v2 and the v1 memory controller's into v1,
 * "" for one that is absent (each `cap` bytes). */
void cgroup_paths(const char *text, char *v1, char *v2, size_t cap) {
    v1[0] = v2[0] = '\0';
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        const char *c1 = strchr(p, ':'), *nl = strchr(p, '\n');
        const char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2 || (nl && c2 > nl)) continue;
        size_t len = nl ? (size_t)(nl - c2 - 1) : strlen(c2 + 1);
        char *to = NULL;
        if (c2 == c1 + 1 && c1 - p == 1 && p[0] == '0') to = v2;
        for (const char *w = c1 + 1; w < c2 && !to; w = strchr(w, ',') ? strchr(w, ',') + 1 : c2)
            if (!strncmp(w, "memory", 6) && (w + 6 == c2 || w[6] == ',')) to = v1;
        if (to && len < cap) memcpy(to, c2 + 1, len), to[len] = '\0';
    }
}

/* The number in file dir/name (or in its `key` line); -2 when the file
 * cannot be read, -1 when it holds no such number. */
static double read_number(const char *dir, const char *name, const char *key) {
    char path[2200], *text;
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path) return -2;
    if (rf_read_file(path, &text, NULL)) {
        rf_clear_error();
        return -2;
    }
    double v = key ? text_field(text, key) : cgroup_limit_value(text);
    free(text);
    return v;
}

#define CGROUP_ROOT "/sys/fs/cgroup"

/* The memory limit of this process's cgroup in bytes (-1: none), and in *used
 * what the group uses of it less the file cache, which the kernel drops before
 * it kills anything.  v2: the smallest memory.max of the group and the groups
 * above it; v1: memory.stat's hierarchical_memory_limit.  Inside a container
 * the group can sit at the root of the mount instead of at its path. */
static double cgroup_memory(double *used) {
    char *text, v1[2048], v2[2048], dir[2100];
    double limit = -1;
    *used = 0;
    if (rf_read_file("/proc/self/cgroup", &text, NULL)) {
        rf_clear_error();
        return -1;
    }
    cgroup_paths(text, v1, v2, sizeof v1);
    free(text);
    if (v1[0]) {
        snprintf(dir, sizeof dir, CGROUP_ROOT "/memory%s", v1);
        double l = read_number(dir, "memory.stat", "hierarchical_memory_limit");
        if (l == -2) {  /* a container's group, at the root of the mount */
            strcpy(dir, CGROUP_ROOT "/memory");
            l = read_number(dir, "memory.stat", "hierarchical_memory_limit");
        }
        limit = limit_or_none(l);
        *used = read_number(dir, "memory.usage_in_bytes", NULL) - read_number(dir, "memory.stat", "total_cache");
    } else if (v2[0]) {
        snprintf(dir, sizeof dir, CGROUP_ROOT "%s", strcmp(v2, "/") ? v2 : "");
        if (read_number(dir, "memory.current", NULL) == -2) strcpy(dir, CGROUP_ROOT);  /* the same */
        *used = read_number(dir, "memory.current", NULL) - read_number(dir, "memory.stat", "file");
        for (;;) {  /* up to the root: a parent's limit binds its children */
            double l = read_number(dir, "memory.max", NULL);
            if (l > 0 && (limit < 0 || l < limit)) limit = l;
            char *slash = strrchr(dir, '/');
            if (strlen(dir) <= strlen(CGROUP_ROOT) || !slash) break;
            *slash = '\0';
        }
    }
    if (*used < 0) *used = 0;
    return limit;
}

double mem_total(const char **where) {
    double used, phys = (double)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE), limit = cgroup_memory(&used);
    int capped = limit > 0 && limit < phys;
    if (where) *where = capped ? "this cgroup's" : "this machine's";
    return capped ? limit : phys;
}

double mem_available(void) {
    char *text;
    double avail = -1, used, limit = cgroup_memory(&used);
    if (rf_read_file("/proc/meminfo", &text, NULL)) {
        rf_clear_error();  /* not Linux: the cgroup, if any, says it all */
    } else {
        double kb = text_field(text, "MemAvailable");
        avail = kb < 0 ? -1 : kb * 1024;
        free(text);
    }
    if (limit > 0 && (avail < 0 || limit - used < avail)) avail = limit - used > 0 ? limit - used : 0;
    return avail;
}

/* -------------------------------------------------------------------- gzip */
/*
 * gzip files (RFC 1952) whose members hold DEFLATE data (RFC 1951), read so
 * that the Amazon Reviews 2018 files need nothing beyond libc.  Written from
 * the two RFCs; section numbers below are theirs.
 *
 * DEFLATE in brief (RFC 1951 §3.2): a stream of blocks, each starting with
 * BFINAL (1 bit) and BTYPE (2 bits): 00 stored (raw bytes), 01 fixed Huffman
 * codes, 10 dynamic Huffman codes (the code lengths are sent first, themselves
 * Huffman-coded), 11 an error.  A Huffman block is a sequence of literal bytes
 * and <length, distance> pairs that copy earlier output, ended by symbol 256.
 * Bits are packed from the least significant bit of each byte; Huffman codes
 * are packed starting with their most significant bit (§3.1.1).
 */

#define GZ_MAXBITS 15  /* the longest Huffman code (§3.2.7) */

/* Lengths 3..258 of symbols 257..285 and distances 1..32768 of distance
 * symbols 0..29: a base plus that many extra bits (the tables of §3.2.5). */
static const unsigned short GZ_LEN_BASE[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                               31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const unsigned char GZ_LEN_EXTRA[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                               2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const unsigned short GZ_DIST_BASE[30] = {1,    2,    3,    4,    5,    7,     9,     13,    17,  25,
                                                33,   49,   65,   97,   129,  193,   257,   385,   513, 769,
                                                1025, 1537, 2049, 3073, 4097, 6145,  8193,  12289, 16385, 24577};
static const unsigned char GZ_DIST_EXTRA[30] = {0, 0, 0, 0, 1, 1, 2, 2,  3,  3,  4,  4,  5,  5,  6,
                                                6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

/* A canonical Huffman code (§3.2.2) kept as what defines it: how many codes
 * have each length, and the symbols sorted by (code length, symbol value).
 * Codes of one length are consecutive integers, and the first code of length
 * L+1 is (first of L + count of L) * 2; gz_decode walks the lengths with that. */
typedef struct {
    unsigned short count[GZ_MAXBITS + 1]; /* count[0] unused */
    unsigned short symbol[288];
} GzHuffman;

typedef struct {
    const unsigned char *in;  /* the whole file */
    size_t n, pos;            /* its size; the next unread byte */
    uint32_t bitbuf;          /* bits read from in[] but not used yet, next bit lowest */
    int bitcnt;               /* how many (0..7 between calls) */
    unsigned char *out;       /* the decompressed bytes of every member so far */
    size_t len, cap, max;     /* used, allocated, the limit */
    size_t member_start;      /* where this member's output starts: no distance reaches before it */
    int members;              /* members read whole */
    const char *name;         /* for error lines */
    GzHuffman fixed_lit, fixed_dist;
} Gunzip;

/* One error line: "NAME: byte OFFSET: problem", OFFSET in the compressed file. */
static int gz_err(const Gunzip *z, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static int gz_err(const Gunzip *z, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return rf_error("%s: byte %zu: %s", z->name, z->pos, msg);
}

/* The next `need` (0..16) bits as an integer, the first bit read lowest. */
static int gz_bits(Gunzip *z, int need, unsigned *value) {
    *value = 0;
    while (z->bitcnt < need) {
        if (z->pos >= z->n) return gz_err(z, "truncated: the compressed data ends inside a block");
        z->bitbuf |= (uint32_t)z->in[z->pos++] << z->bitcnt;
        z->bitcnt += 8;
    }
    *value = z->bitbuf & ((1u << need) - 1);
    z->bitbuf >>= need;
    z->bitcnt -= need;
    return 0;
}

/* Build a code from the code length of each symbol (0 = unused).  Returns 0
 * when the lengths fill the code space exactly, and otherwise -1 with *why
 * set, except that an incomplete code of a single length-1 code (one symbol
 * used) or of no code at all is allowed when `allow_single` is set: RFC 1951
 * §3.2.7 permits one distance code, and encoders do the same for literals. */
static int gz_build(GzHuffman *h, const unsigned char *lengths, int n, int allow_single, const char **why) {
    memset(h->count, 0, sizeof h->count);
    for (int s = 0; s < n; s++) h->count[lengths[s]]++;
    int used = n - h->count[0];
    /* Kraft's inequality, one length at a time: `left` codes of this length are still free */
    long left = 1;
    for (int L = 1; L <= GZ_MAXBITS; L++) {
        left = 2 * left - h->count[L];
        if (left < 0) {
            *why = "over-subscribed (more codes than bit patterns)";
            return -1;
        }
    }
    if (left > 0 && !(allow_single && (used == 0 || (used == 1 && h->count[1] == 1)))) {
        *why = "incomplete (bit patterns left without a code)";
        return -1;
    }
    /* symbols sorted by length, then value: offs[L] = where length L starts */
    unsigned short offs[GZ_MAXBITS + 2];
    offs[1] = 0;
    for (int L = 1; L <= GZ_MAXBITS; L++) offs[L + 1] = (unsigned short)(offs[L] + h->count[L]);
    for (int s = 0; s < n; s++)
        if (lengths[s]) h->symbol[offs[lengths[s]]++] = (unsigned short)s;
    h->count[0] = 0;
    return 0;
}

/* Read one Huffman-coded symbol: add bits one at a time (most significant
 * first) until the code read so far is one of the codes of its length. */
static int gz_decode(Gunzip *z, const GzHuffman *h, int *sym) {
    int code = 0, first = 0, index = 0;  /* code read; first code of this length; symbols of shorter codes */
    *sym = 0;
    for (int L = 1; L <= GZ_MAXBITS; L++) {
        unsigned bit;
        if (gz_bits(z, 1, &bit)) return -1;
        code |= (int)bit;
        int count = h->count[L];
        if (code - first < count) {
            *sym = h->symbol[index + code - first];
            return 0;
        }
        index += count;
        first = (first + count) << 1;
        code <<= 1;
    }
    return gz_err(z, "invalid Huffman code (no symbol has it)");
}

/* Room for `extra` more output bytes, within the limit. */
static int gz_room(Gunzip *z, size_t extra) {
    if (extra > z->max - z->len)
        return gz_err(z, "decompressed size exceeds the limit of %zu bytes (refused: a decompression bomb?)", z->max);
    if (z->len + extra + 1 > z->cap) {  /* + 1: the final NUL */
        size_t cap = z->cap;
        while (cap < z->len + extra + 1) cap = cap > z->max / 2 ? z->max + 1 : 2 * cap;
        unsigned char *p = realloc(z->out, cap);
        if (!p) return gz_err(z, "out of memory for %zu decompressed bytes", cap);
        z->out = p, z->cap = cap;
    }
    return 0;
}

/* BTYPE 00 (§3.2.4): skip to a byte boundary, LEN and its one's complement
 * NLEN (16 bits each, little-endian), then LEN bytes copied as they are. */
static int gz_stored(Gunzip *z) {
    z->bitbuf = 0, z->bitcnt = 0;  /* the rest of the current byte is padding */
    if (z->n - z->pos < 4) return gz_err(z, "truncated: stored block header");
    unsigned len = z->in[z->pos] | (unsigned)z->in[z->pos + 1] << 8;
    unsigned nlen = z->in[z->pos + 2] | (unsigned)z->in[z->pos + 3] << 8;
    if (len != (~nlen & 0xFFFFu)) return gz_err(z, "stored block length %u does not match its complement %u", len, nlen);
    z->pos += 4;
    if (z->n - z->pos < len) return gz_err(z, "truncated: stored block of %u bytes has only %zu", len, z->n - z->pos);
    if (gz_room(z, len)) return -1;
    memcpy(z->out + z->len, z->in + z->pos, len);
    z->len += len, z->pos += len;
    return 0;
}

/* The body of a Huffman block (§3.2.5): literals, <length, distance> copies,
 * then the end-of-block symbol 256. */
static int gz_codes(Gunzip *z, const GzHuffman *lit, const GzHuffman *dist) {
    for (;;) {
        int sym;
        if (gz_decode(z, lit, &sym)) return -1;
        if (sym < 256) {
            if (gz_room(z, 1)) return -1;
            z->out[z->len++] = (unsigned char)sym;
            continue;
        }
        if (sym == 256) return 0;
        sym -= 257;
        if (sym >= 29) return gz_err(z, "invalid length symbol %d", sym + 257);
        unsigned extra, dsym_extra;
        if (gz_bits(z, GZ_LEN_EXTRA[sym], &extra)) return -1;
        size_t len = GZ_LEN_BASE[sym] + extra;
        int dsym;
        if (gz_decode(z, dist, &dsym)) return -1;
        if (dsym >= 30) return gz_err(z, "invalid distance symbol %d", dsym);
        if (gz_bits(z, GZ_DIST_EXTRA[dsym], &dsym_extra)) return -1;
        size_t d = GZ_DIST_BASE[dsym] + dsym_extra;
        if (d > z->len - z->member_start)
            return gz_err(z, "distance %zu too far back (only %zu bytes written)", d, z->len - z->member_start);
        if (gz_room(z, len)) return -1;
        /* byte by byte: the copy may overlap what it writes (distance < length repeats a pattern) */
        for (size_t i = 0; i < len; i++, z->len++) z->out[z->len] = z->out[z->len - d];
    }
}

/* BTYPE 10 (§3.2.7): HLIT, HDIST, HCLEN; the lengths of the code-length code
 * in a fixed order; then the literal/length and distance code lengths, run-
 * length coded with symbols 16 (repeat the previous 3-6 times), 17 (3-10
 * zeros) and 18 (11-138 zeros). */
static int gz_dynamic(Gunzip *z) {
    static const unsigned char ORDER[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
    unsigned hlit, hdist, hclen;
    if (gz_bits(z, 5, &hlit) || gz_bits(z, 5, &hdist) || gz_bits(z, 4, &hclen)) return -1;
    hlit += 257, hdist += 1, hclen += 4;
    if (hlit > 286 || hdist > 30) return gz_err(z, "bad dynamic block: %u length and %u distance codes (at most 286 and 30)", hlit, hdist);
    unsigned char lengths[286 + 30] = {0};
    for (unsigned i = 0; i < hclen; i++) {
        unsigned v;
        if (gz_bits(z, 3, &v)) return -1;
        lengths[ORDER[i]] = (unsigned char)v;
    }
    GzHuffman cl, lit, dist;
    const char *why;
    if (gz_build(&cl, lengths, 19, 0, &why)) return gz_err(z, "bad Huffman code lengths: the code-length code is %s", why);
    unsigned n = 0, total = hlit + hdist;
    while (n < total) {
        int sym;
        unsigned rep, value = 0, extra;
        if (gz_decode(z, &cl, &sym)) return -1;
        if (sym < 16) {
            lengths[n++] = (unsigned char)sym;
            continue;
        }
        if (sym == 16) {
            if (n == 0) return gz_err(z, "bad Huffman code lengths: repeat (16) with no previous length");
            value = lengths[n - 1];
            if (gz_bits(z, 2, &extra)) return -1;
            rep = 3 + extra;
        } else if (sym == 17) {
            if (gz_bits(z, 3, &extra)) return -1;
            rep = 3 + extra;
        } else {
            if (gz_bits(z, 7, &extra)) return -1;
            rep = 11 + extra;
        }
        if (rep > total - n) return gz_err(z, "bad Huffman code lengths: a run of %u goes past the %u lengths", rep, total);
        while (rep--) lengths[n++] = (unsigned char)value;
    }
    if (!lengths[256]) return gz_err(z, "bad Huffman code lengths: no end-of-block code");
    if (gz_build(&lit, lengths, (int)hlit, 1, &why))
        return gz_err(z, "bad Huffman code lengths: the literal/length code is %s", why);
    if (gz_build(&dist, lengths + hlit, (int)hdist, 1, &why))
        return gz_err(z, "bad Huffman code lengths: the distance code is %s", why);
    return gz_codes(z, &lit, &dist);
}

/* The fixed codes of BTYPE 01 (§3.2.6): literal/length symbols 0-143 have 8
 * bits, 144-255 9, 256-279 7, 280-287 8 (286 and 287 never occur); the 32
 * distance symbols 5 bits each (30 and 31 never occur). */
static void gz_fixed_codes(Gunzip *z) {
    unsigned char l[288];
    const char *why;
    for (int s = 0; s < 288; s++) l[s] = s < 144 ? 8 : s < 256 ? 9 : s < 280 ? 7 : 8;
    (void)gz_build(&z->fixed_lit, l, 288, 0, &why);  /* complete by construction */
    for (int s = 0; s < 32; s++) l[s] = 5;
    (void)gz_build(&z->fixed_dist, l, 32, 0, &why);
}

/* Little-endian integers of the gzip header and trailer. */
static uint32_t gz_le(const unsigned char *p, int n) {
    uint32_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* One member (RFC 1952 §2.3): the header, the DEFLATE blocks, CRC32 and ISIZE. */
static int gz_member(Gunzip *z) {
    enum { FTEXT = 1, FHCRC = 2, FEXTRA = 4, FNAME = 8, FCOMMENT = 16 };
    const size_t start = z->pos;
    const unsigned char *h = z->in + start;
    if (z->n - start >= 2 && (h[0] != 0x1F || h[1] != 0x8B)) {
        if (z->members) return gz_err(z, "bytes after gzip member %d are not another member (bad magic %02x %02x)", z->members, h[0], h[1]);
        return gz_err(z, "not a gzip file (bad magic bytes %02x %02x, want 1f 8b)", h[0], h[1]);
    }
    if (z->n - start < 10) return gz_err(z, "truncated gzip header (%zu of at least 10 bytes)", z->n - start);
    if (h[2] != 8) return gz_err(z, "compression method %d is not deflate (8)", h[2]);
    int flg = h[3];
    if (flg & 0xE0) return gz_err(z, "reserved gzip header flags are set (FLG 0x%02x)", flg);
    z->pos += 10;  /* ID1 ID2 CM FLG, MTIME (4), XFL, OS */
    if (flg & FEXTRA) {
        if (z->n - z->pos < 2) return gz_err(z, "truncated gzip header: FEXTRA length");
        size_t xlen = gz_le(z->in + z->pos, 2);
        z->pos += 2;
        if (z->n - z->pos < xlen) return gz_err(z, "truncated gzip header: FEXTRA field of %zu bytes", xlen);
        z->pos += xlen;
    }
    for (int f = FNAME; f <= FCOMMENT; f <<= 1) {  /* zero-terminated file name, then comment */
        if (!(flg & f)) continue;
        const unsigned char *nul = memchr(z->in + z->pos, 0, z->n - z->pos);
        if (!nul) return gz_err(z, "truncated gzip header: unterminated %s", f == FNAME ? "FNAME" : "FCOMMENT");
        z->pos = (size_t)(nul - z->in) + 1;
    }
    if (flg & FHCRC) {  /* the two low bytes of the CRC-32 of the header so far */
        if (z->n - z->pos < 2) return gz_err(z, "truncated gzip header: FHCRC");
        uint32_t want = gz_le(z->in + z->pos, 2), got = rf_crc32(0, z->in + start, z->pos - start) & 0xFFFFu;
        if (want != got) return gz_err(z, "gzip header CRC mismatch (stored %04x, computed %04x)", (unsigned)want, (unsigned)got);
        z->pos += 2;
    }
    z->member_start = z->len;
    z->bitbuf = 0, z->bitcnt = 0;
    unsigned final = 0;
    while (!final) {  /* every block consumes at least 3 bits, so this ends */
        unsigned type;
        if (gz_bits(z, 1, &final) || gz_bits(z, 2, &type)) return -1;
        int rc = type == 0   ? gz_stored(z)
                 : type == 1 ? gz_codes(z, &z->fixed_lit, &z->fixed_dist)
                 : type == 2 ? gz_dynamic(z)
                             : gz_err(z, "bad block type 3 (reserved)");
        if (rc) return -1;
    }
    z->bitbuf = 0, z->bitcnt = 0;  /* the trailer starts at the next byte boundary */
    if (z->n - z->pos < 8) return gz_err(z, "truncated gzip trailer (%zu of 8 bytes)", z->n - z->pos);
    uint32_t crc = gz_le(z->in + z->pos, 4), isize = gz_le(z->in + z->pos + 4, 4);
    size_t got_len = z->len - z->member_start;
    uint32_t got_crc = rf_crc32(0, z->out + z->member_start, got_len);
    if (crc != got_crc) return gz_err(z, "CRC-32 mismatch (stored %08x, computed %08x)", (unsigned)crc, (unsigned)got_crc);
    if (isize != (uint32_t)got_len)
        return gz_err(z, "length mismatch (ISIZE says %u bytes, the data gave %zu)", (unsigned)isize, got_len);
    z->pos += 8;
    z->members++;
    return 0;
}

/* CRC-32 of RFC 1952 §8: polynomial 0xEDB88320 (bits reflected), register
 * and result inverted; crc = 0 starts, the previous result continues. */
uint32_t rf_crc32(uint32_t crc, const void *data, size_t n) {
    uint32_t table[256];  /* the remainder of each byte value; cheap to rebuild */
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t c = b;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        table[b] = c;
    }
    const unsigned char *p = data;
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

int rf_gunzip(char **out, size_t *out_len, const unsigned char *in, size_t n, size_t max_out, const char *name) {
    *out = NULL;
    if (out_len) *out_len = 0;
    if (max_out > SIZE_MAX / 4) max_out = SIZE_MAX / 4;  /* keeps max_out + 1 and the doubling in range */
    Gunzip z;
    memset(&z, 0, sizeof z);
    z.in = in, z.n = n, z.max = max_out, z.name = name;
    z.cap = n < 4096 ? 4096 : n > max_out / 4 ? max_out + 1 : 4 * n;
    if (z.cap > max_out + 1) z.cap = max_out + 1;
    if (!(z.out = malloc(z.cap))) return rf_error("%s: out of memory", name);
    gz_fixed_codes(&z);
    int rc = 0;
    do {  /* members follow each other (§2.2); zero bytes after the last are padding, as gzip(1) allows */
        rc = gz_member(&z);
        size_t k = z.pos;
        while (k < n && in[k] == 0) k++;
        if (k == n) break;
    } while (!rc);
    if (rc) {
        free(z.out);
        return -1;
    }
    z.out[z.len] = '\0';
    *out = (char *)z.out;
    if (out_len) *out_len = z.len;
    return 0;
}

int rf_read_file_gz(const char *path, char **out, size_t *len) {
    char *raw;
    size_t n;
    if (rf_read_file(path, &raw, &n)) return -1;
    size_t plen = strlen(path);
    int gz = (plen >= 3 && !strcmp(path + plen - 3, ".gz")) ||
             (n >= 2 && (unsigned char)raw[0] == 0x1F && (unsigned char)raw[1] == 0x8B);
    if (!gz) {
        *out = raw;
        if (len) *len = n;
        return 0;
    }
    int rc = rf_gunzip(out, len, (const unsigned char *)raw, n, RF_GUNZIP_MAX, path);
    free(raw);
    return rc;
}

/* -------------------------------------------------------------------- JSON */

/* A recursive-descent parser.  Depth is bounded so that hostile input such as
 * 100000 '[' cannot overflow the C stack. */
enum { JSON_MAX_DEPTH = 512 };

typedef struct {
    const unsigned char *s;
    size_t n, pos;
    const char *name;
} JsonParser;

/* Report at byte offset `at`: line and column are 1-based; the column counts
 * characters (UTF-8 continuation bytes do not start a new column). */
static int jerr(const JsonParser *p, size_t at, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static int jerr(const JsonParser *p, size_t at, const char *fmt, ...) {
    size_t line = 1, col = 1;
    if (at > p->n) at = p->n;
    for (size_t i = 0; i < at; i++) {
        if (p->s[i] == '\n') line++, col = 1;
        else if ((p->s[i] & 0xC0) != 0x80) col++;
    }
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return rf_error("%s: line %zu, column %zu: %s", p->name, line, col, msg);
}

static void skip_ws(JsonParser *p) {
    while (p->pos < p->n) {
        unsigned char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

/* Describe the byte at pos for an error message. */
static const char *describe(const JsonParser *p, char *buf, size_t n) {
    if (p->pos >= p->n) return "end of input";
    unsigned char c = p->s[p->pos];
    if (c >= 0x20 && c < 0x7F) snprintf(buf, n, "'%c'", c);
    else snprintf(buf, n, "byte 0x%02X", c);
    return buf;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when invalid (overlong
 * forms, surrogates U+D800..DFFF and values above U+10FFFF are invalid). */
static size_t utf8_valid(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;  /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;        /* no overlong */
        if (c == 0xED) hi = 0x9F;        /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;        /* no overlong */
        if (c == 0xF4) hi = 0x8F;        /* <= U+10FFFF */
    } else return 0;
    if (n < len) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return len;
}

static size_t utf8_encode(unsigned char *o, uint32_t cp) {
    if (cp < 0x80) { o[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

static int hex4(const JsonParser *p, size_t at, uint32_t *out) {
    if (at + 4 > p->n) return jerr(p, at, "truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p->s[at + i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return jerr(p, at + i, "\\u escape needs 4 hex digits");
    }
    *out = v;
    return 0;
}

/* Parse a string starting at the opening quote; the result is NUL-terminated
 * and may contain \0 bytes (from \u0000), hence the explicit length.  The
 * decoded text is never longer than the quoted source. */
static int parse_string(JsonParser *p, char **out, size_t *out_len) {
    size_t start = p->pos++;
    size_t end = p->pos;  /* find the closing quote to size the buffer */
    while (end < p->n && p->s[end] != '"') end += p->s[end] == '\\' ? 2 : 1;
    if (end >= p->n) return jerr(p, start, "unterminated string");
    unsigned char *o = malloc(end - p->pos + 1);
    if (!o) return jerr(p, start, "out of memory");
    size_t k = 0;
    for (;;) {
        unsigned char c = p->s[p->pos];
        if (c == '"') { p->pos++; break; }
        if (c < 0x20) {
            free(o);
            return jerr(p, p->pos, "control character 0x%02X in string (must be escaped)", c);
        }
        if (c == '\\') {
            size_t at = p->pos;
            unsigned char e = p->s[p->pos + 1];
            p->pos += 2;
            switch (e) {
            case '"': o[k++] = '"'; break;
            case '\\': o[k++] = '\\'; break;
            case '/': o[k++] = '/'; break;
            case 'b': o[k++] = '\b'; break;
            case 'f': o[k++] = '\f'; break;
            case 'n': o[k++] = '\n'; break;
            case 'r': o[k++] = '\r'; break;
            case 't': o[k++] = '\t'; break;
            case 'u': {
                uint32_t cp, lo;
                if (hex4(p, p->pos, &cp)) { free(o); return -1; }
                p->pos += 4;
                if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    free(o);
                    return jerr(p, at, "unpaired low surrogate \\u%04X", (unsigned)cp);
                }
                if (cp >= 0xD800 && cp <= 0xDBFF) {  /* UTF-16 pair -> one code point */
                    if (p->pos + 2 > p->n || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u') {
                        free(o);
                        return jerr(p, at, "high surrogate \\u%04X not followed by a \\u low surrogate",
                                    (unsigned)cp);
                    }
                    if (hex4(p, p->pos + 2, &lo)) { free(o); return -1; }
                    if (lo < 0xDC00 || lo > 0xDFFF) {
                        free(o);
                        return jerr(p, at, "high surrogate \\u%04X followed by \\u%04X, not a low surrogate",
                                    (unsigned)cp, (unsigned)lo);
                    }
                    p->pos += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                k += utf8_encode(o + k, cp);  /* <= 6 source bytes give <= 4 */
                break;
            }
            default:
                free(o);
                return jerr(p, at, "invalid escape '\\%c'", e >= 0x20 && e < 0x7F ? e : '?');
            }
            continue;
        }
        size_t len = utf8_valid(p->s + p->pos, end - p->pos);
        if (!len) {
            free(o);
            return jerr(p, p->pos, "invalid UTF-8 byte 0x%02X in string", c);
        }
        memcpy(o + k, p->s + p->pos, len);
        k += len;
        p->pos += len;
    }
    o[k] = '\0';
    *out = (char *)o;
    *out_len = k;
    return 0;
}

/* number = [ '-' ] int [ frac ] [ exp ]; validated by the grammar, then strtod.
 * *integer: no frac and no exp. */
static int parse_number(JsonParser *p, double *out, int *integer) {
    size_t start = p->pos, i = p->pos;
    const unsigned char *s = p->s;
    if (i < p->n && s[i] == '-') i++;
    if (i >= p->n || s[i] < '0' || s[i] > '9') return jerr(p, i, "invalid number: expected a digit");
    if (s[i] == '0') {
        i++;
        if (i < p->n && s[i] >= '0' && s[i] <= '9') return jerr(p, i, "invalid number: leading zero");
    } else {
        while (i < p->n && s[i] >= '0' && s[i] <= '9') i++;
    }
    *integer = 1;
    if (i < p->n && s[i] == '.') {
        *integer = 0;
        i++;
        if (i >= p->n || s[i] < '0' || s[i] > '9') return jerr(p, i, "invalid number: expected a digit after '.'");
        while (i < p->n && s[i] >= '0' && s[i] <= '9') i++;
    }
    if (i < p->n && (s[i] == 'e' || s[i] == 'E')) {
        *integer = 0;
        i++;
        if (i < p->n && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= p->n || s[i] < '0' || s[i] > '9')
            return jerr(p, i, "invalid number: expected a digit in the exponent");
        while (i < p->n && s[i] >= '0' && s[i] <= '9') i++;
    }
    size_t len = i - start;
    char small[64], *tok = len < sizeof small ? small : malloc(len + 1);
    if (!tok) return jerr(p, start, "out of memory");
    memcpy(tok, s + start, len);
    tok[len] = '\0';
    *out = strtod(tok, NULL);  /* overflow gives +-HUGE_VAL, as Python's json does */
    if (tok != small) free(tok);
    p->pos = i;
    return 0;
}

static int parse_value(JsonParser *p, Json *v, int depth);

/* Append a zeroed slot to an array/object; returns it or NULL (out of memory). */
static Json *push_item(Json *v, size_t *cap) {
    if (v->count == *cap) {
        size_t nc = *cap ? *cap * 2 : 4;
        Json *ni = realloc(v->items, nc * sizeof *ni);
        if (!ni) return NULL;
        v->items = ni;
        if (v->type == JSON_OBJECT) {
            char **nk = realloc(v->keys, nc * sizeof *nk);
            if (!nk) return NULL;
            v->keys = nk;
        }
        *cap = nc;
    }
    Json *it = &v->items[v->count];
    memset(it, 0, sizeof *it);
    if (v->type == JSON_OBJECT) v->keys[v->count] = NULL;
    v->count++;  /* counted at once, so json_free can clean a half-parsed item */
    return it;
}

static int parse_container(JsonParser *p, Json *v, int depth) {
    int obj = p->s[p->pos] == '{';
    char close = obj ? '}' : ']', buf[16];
    if (depth >= JSON_MAX_DEPTH) return jerr(p, p->pos, "nesting deeper than %d levels", JSON_MAX_DEPTH);
    v->type = obj ? JSON_OBJECT : JSON_ARRAY;
    size_t cap = 0;
    p->pos++;
    skip_ws(p);
    if (p->pos < p->n && p->s[p->pos] == (unsigned char)close) {
        p->pos++;
        return 0;
    }
    for (;;) {
        skip_ws(p);
        char *key = NULL;
        size_t klen;
        if (obj) {
            if (p->pos >= p->n || p->s[p->pos] != '"') {
                if (p->pos < p->n && p->s[p->pos] == '}' && v->count)
                    return jerr(p, p->pos, "trailing comma before '}'");
                return jerr(p, p->pos, "expected a string key, found %s", describe(p, buf, sizeof buf));
            }
            if (parse_string(p, &key, &klen)) return -1;
            skip_ws(p);
            if (p->pos >= p->n || p->s[p->pos] != ':') {
                free(key);
                return jerr(p, p->pos, "expected ':' after key, found %s", describe(p, buf, sizeof buf));
            }
            p->pos++;
            skip_ws(p);
        } else if (p->pos < p->n && p->s[p->pos] == ']' && v->count) {
            return jerr(p, p->pos, "trailing comma before ']'");
        }
        Json *it = push_item(v, &cap);
        if (!it) {
            free(key);
            return jerr(p, p->pos, "out of memory");
        }
        if (obj) v->keys[v->count - 1] = key;
        if (parse_value(p, it, depth + 1)) return -1;
        skip_ws(p);
        if (p->pos < p->n && p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->pos < p->n && p->s[p->pos] == (unsigned char)close) {
            p->pos++;
            return 0;
        }
        return jerr(p, p->pos, "expected ',' or '%c', found %s", close, describe(p, buf, sizeof buf));
    }
}

static int parse_value(JsonParser *p, Json *v, int depth) {
    char buf[16];
    skip_ws(p);
    if (p->pos >= p->n) return jerr(p, p->pos, "unexpected end of input, expected a value");
    unsigned char c = p->s[p->pos];
    if (c == '{' || c == '[') return parse_container(p, v, depth);
    if (c == '"') {
        v->type = JSON_STRING;
        return parse_string(p, &v->string, &v->len);
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        v->type = JSON_NUMBER;
        return parse_number(p, &v->number, &v->integer);
    }
    static const char *lit[3] = {"true", "false", "null"};
    for (int i = 0; i < 3; i++) {
        size_t L = strlen(lit[i]);
        if (p->n - p->pos >= L && !memcmp(p->s + p->pos, lit[i], L)) {
            v->type = i == 2 ? JSON_NULL : JSON_BOOL;
            v->boolean = i == 0;
            p->pos += L;
            return 0;
        }
    }
    return jerr(p, p->pos, "expected a value, found %s", describe(p, buf, sizeof buf));
}

int json_parse(Json *out, const char *text, size_t len, const char *name) {
    JsonParser p = {(const unsigned char *)text, len, 0, name};
    memset(out, 0, sizeof *out);
    if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) p.pos = 3;  /* tolerate a UTF-8 BOM */
    if (parse_value(&p, out, 0) == 0) {
        skip_ws(&p);
        if (p.pos == p.n) return 0;
        jerr(&p, p.pos, "unexpected text after the JSON value");
    }
    json_free(out);
    return -1;
}

void json_free(Json *v) {
    if (!v) return;
    if (v->type == JSON_STRING) free(v->string);
    if (v->type == JSON_ARRAY || v->type == JSON_OBJECT) {
        for (size_t i = 0; i < v->count; i++) {
            json_free(&v->items[i]);
            if (v->type == JSON_OBJECT) free(v->keys[i]);
        }
        free(v->items);
        free(v->keys);
    }
    memset(v, 0, sizeof *v);
}

/* With duplicate keys the last one wins, as in Python's json module.  Keys
 * are compared as C strings, so a key holding \u0000 matches up to it. */
const Json *json_get(const Json *obj, const char *key) {
    if (!obj || obj->type != JSON_OBJECT) return NULL;
    for (size_t i = obj->count; i-- > 0;)
        if (!strcmp(obj->keys[i], key)) return &obj->items[i];
    return NULL;
}

/* ------------------------------------------------------- growing buffers */

/* Out of memory poisons the buffer: data becomes NULL, cap SIZE_MAX, and later
 * appends are ignored, so a caller checks b->data once at the end. */
static int buf_reserve(RfBuf *b, size_t extra) {
    if (b->cap == SIZE_MAX) return -1;
    if (b->len + extra + 1 <= b->cap) return 0;
    size_t nc = b->cap ? b->cap : 256;
    while (nc < b->len + extra + 1) nc *= 2;
    char *nd = realloc(b->data, nc);
    if (!nd) {
        free(b->data);
        b->data = NULL;
        b->len = 0;
        b->cap = SIZE_MAX;
        rf_error("out of memory growing a %zu-byte buffer", b->len);
        return -1;
    }
    b->data = nd;
    b->cap = nc;
    return 0;
}

void buf_append(RfBuf *b, const char *s, size_t n) {
    if (buf_reserve(b, n)) return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void buf_printf(RfBuf *b, const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n >= 0 && buf_reserve(b, (size_t)n) == 0) {
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
        b->len += (size_t)n;
    }
    va_end(ap2);
}

void buf_free(RfBuf *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

/* Quotes, backslash and control characters are escaped; valid UTF-8 passes
 * through unchanged; an invalid byte becomes \ufffd (the replacement
 * character), so the output is always valid JSON. */
void json_write_string(RfBuf *b, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    buf_append(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned char c = u[i];
        if (c == '"') buf_append(b, "\\\"", 2);
        else if (c == '\\') buf_append(b, "\\\\", 2);
        else if (c == '\n') buf_append(b, "\\n", 2);
        else if (c == '\r') buf_append(b, "\\r", 2);
        else if (c == '\t') buf_append(b, "\\t", 2);
        else if (c == '\b') buf_append(b, "\\b", 2);
        else if (c == '\f') buf_append(b, "\\f", 2);
        else if (c < 0x20) buf_printf(b, "\\u%04x", c);
        else if (c < 0x80) buf_append(b, (const char *)u + i, 1);
        else {
            size_t len = utf8_valid(u + i, n - i);
            if (len) {
                buf_append(b, (const char *)u + i, len);
                i += len;
                continue;
            }
            buf_append(b, "\\ufffd", 6);
        }
        i++;
    }
    buf_append(b, "\"", 1);
}

/* ------------------------------------------------------------- safetensors */

/* Layout: u64 little-endian N | N bytes of JSON header | data section.  The
 * header maps each tensor name to {"dtype", "shape", "data_offsets": [b, e]}
 * with offsets relative to the data section; "__metadata__" maps str -> str. */

/* The format's own limit on the header (safetensors rejects larger ones). */
#define ST_MAX_HEADER ((uint64_t)100 << 20)

static int host_is_little_endian(void) {
    const uint16_t one = 1;
    return *(const unsigned char *)&one == 1;
}

static const char *dtype_name(StDtype d) { return d == ST_F32 ? "F32" : d == ST_F16 ? "F16" : "BF16"; }
static int dtype_size(StDtype d) { return d == ST_F32 ? 4 : 2; }

/* "[2, 3]" into buf, for messages. */
static const char *shape_str(char *buf, size_t n, const int64_t *shape, int ndim) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

/* A JSON number that is an integer in [0, 2^53] (exact in a double). */
static int json_uint(const Json *v, uint64_t *out) {
    if (!v || v->type != JSON_NUMBER || !(v->number >= 0) || v->number > 9007199254740992.0 ||
        v->number != floor(v->number))
        return -1;
    *out = (uint64_t)v->number;
    return 0;
}

static const char *json_type_name(const Json *v) {
    static const char *names[] = {"null", "a boolean", "a number", "a string", "an array", "an object"};
    return v ? names[v->type] : "absent";
}

/* Validate one header entry into t. */
static int st_entry(StTensor *t, const char *path, const char *name, const Json *e, uint64_t data_len) {
    char sb[160];
    if (e->type != JSON_OBJECT)
        return rf_error("%s: tensor '%s': entry is %s, not an object", path, name, json_type_name(e));
    const Json *dt = json_get(e, "dtype"), *sh = json_get(e, "shape"), *off = json_get(e, "data_offsets");
    if (!dt) return rf_error("%s: tensor '%s': missing \"dtype\"", path, name);
    if (!sh) return rf_error("%s: tensor '%s': missing \"shape\"", path, name);
    if (!off) return rf_error("%s: tensor '%s': missing \"data_offsets\"", path, name);
    if (dt->type != JSON_STRING)
        return rf_error("%s: tensor '%s': \"dtype\" is %s, not a string", path, name, json_type_name(dt));
    if (!strcmp(dt->string, "F32")) t->dtype = ST_F32;
    else if (!strcmp(dt->string, "F16")) t->dtype = ST_F16;
    else if (!strcmp(dt->string, "BF16")) t->dtype = ST_BF16;
    else
        return rf_error("%s: tensor '%s': dtype %s is not supported (F32, F16, BF16 are)", path, name,
                        dt->string);
    if (sh->type != JSON_ARRAY)
        return rf_error("%s: tensor '%s': \"shape\" is %s, not an array", path, name, json_type_name(sh));
    if (sh->count > 8)
        return rf_error("%s: tensor '%s': %zu dimensions (at most 8 supported)", path, name, sh->count);
    t->ndim = (int)sh->count;
    uint64_t numel = 1, d;
    for (int i = 0; i < t->ndim; i++) {
        if (json_uint(&sh->items[i], &d)) {
            const Json *x = &sh->items[i];
            if (x->type == JSON_NUMBER)
                return rf_error("%s: tensor '%s': shape[%d] is %g, not a non-negative integer", path, name, i,
                                x->number);
            return rf_error("%s: tensor '%s': shape[%d] is %s, not a non-negative integer", path, name, i,
                            json_type_name(x));
        }
        t->shape[i] = (int64_t)d;
        if (d && numel > (UINT64_MAX >> 4) / d)
            return rf_error("%s: tensor '%s': shape %s is too large", path, name,
                            shape_str(sb, sizeof sb, t->shape, i + 1));
        numel *= d;
    }
    t->numel = (int64_t)numel;
    if (off->type != JSON_ARRAY || off->count != 2 || json_uint(&off->items[0], &t->begin) ||
        json_uint(&off->items[1], &t->end))
        return rf_error("%s: tensor '%s': \"data_offsets\" must be [begin, end] with integers >= 0", path, name);
    if (t->end < t->begin)
        return rf_error("%s: tensor '%s': data_offsets [%llu, %llu] end before they begin", path, name,
                        (unsigned long long)t->begin, (unsigned long long)t->end);
    uint64_t want = numel * (uint64_t)dtype_size(t->dtype);
    if (t->end - t->begin != want)
        return rf_error(
            "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes, but shape %s of %s needs %llu", path,
            name, (unsigned long long)t->begin, (unsigned long long)t->end,
            (unsigned long long)(t->end - t->begin), shape_str(sb, sizeof sb, t->shape, t->ndim),
            dtype_name(t->dtype), (unsigned long long)want);
    if (t->end > data_len)
        return rf_error("%s: tensor '%s': data_offsets [%llu, %llu] reach beyond the data section (%llu bytes)",
                        path, name, (unsigned long long)t->begin, (unsigned long long)t->end,
                        (unsigned long long)data_len);
    return 0;
}

static int cmp_by_begin(const void *a, const void *b) {
    const StTensor *x = *(const StTensor *const *)a, *y = *(const StTensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : 0;
}

static int st_validate_header(StFile *f, const Json *h) {
    const char *path = f->path;
    if (h->type != JSON_OBJECT) return rf_error("%s: header is %s, not a JSON object", path, json_type_name(h));
    f->tensors = calloc(h->count ? h->count : 1, sizeof *f->tensors);
    if (!f->tensors) return rf_error("%s: out of memory", path);
    uint64_t data_len = f->file_size - f->data_start;
    for (size_t i = 0; i < h->count; i++) {
        const char *key = h->keys[i];
        if (!strcmp(key, "__metadata__")) {
            const Json *m = &h->items[i];
            if (m->type != JSON_OBJECT)
                return rf_error("%s: \"__metadata__\" is %s, not an object", path, json_type_name(m));
            for (size_t k = 0; k < m->count; k++)
                if (m->items[k].type != JSON_STRING)
                    return rf_error("%s: \"__metadata__\" value of '%s' is %s, not a string", path, m->keys[k],
                                    json_type_name(&m->items[k]));
            continue;
        }
        for (int k = 0; k < f->n; k++)
            if (!strcmp(f->tensors[k].name, key))
                return rf_error("%s: tensor '%s' appears twice in the header", path, key);
        StTensor *t = &f->tensors[f->n];
        if (!(t->name = strdup(key))) return rf_error("%s: out of memory", path);
        f->n++;
        if (st_entry(t, path, key, &h->items[i], data_len)) return -1;
    }
    /* Overlaps: sort by start; each non-empty range must begin at or after the
     * end of the previous non-empty one. */
    StTensor **order = malloc((f->n ? f->n : 1) * sizeof *order);
    if (!order) return rf_error("%s: out of memory", path);
    for (int i = 0; i < f->n; i++) order[i] = &f->tensors[i];
    qsort(order, (size_t)f->n, sizeof *order, cmp_by_begin);
    const StTensor *prev = NULL;
    int rc = 0;
    for (int i = 0; i < f->n && !rc; i++) {
        const StTensor *t = order[i];
        if (t->begin == t->end) continue;
        if (prev && t->begin < prev->end)
            rc = rf_error("%s: tensors '%s' [%llu, %llu) and '%s' [%llu, %llu) overlap", path, prev->name,
                          (unsigned long long)prev->begin, (unsigned long long)prev->end, t->name,
                          (unsigned long long)t->begin, (unsigned long long)t->end);
        prev = t;
    }
    free(order);
    return rc;
}

int st_open(StFile *f, const char *path) {
    memset(f, 0, sizeof *f);
    if (!(f->path = strdup(path))) return rf_error("%s: out of memory", path);
    f->fp = fopen(path, "rb");
    if (!f->fp) {
        rf_error("%s: cannot open: %s", path, strerror(errno));
        st_close(f);
        return -1;
    }
    unsigned char len8[8];
    off_t size;
    if (fseeko(f->fp, 0, SEEK_END) != 0 || (size = ftello(f->fp)) < 0 || fseeko(f->fp, 0, SEEK_SET) != 0) {
        rf_error("%s: cannot seek: %s", path, strerror(errno));
        st_close(f);
        return -1;
    }
    f->file_size = (uint64_t)size;
    if (f->file_size < 8 || fread(len8, 1, 8, f->fp) != 8) {
        rf_error("%s: file is %llu bytes, too short for the 8-byte header length of a safetensors file", path,
                 (unsigned long long)f->file_size);
        st_close(f);
        return -1;
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | len8[i];
    f->header_len = n;
    if (n > f->file_size - 8) {
        rf_error("%s: header length %llu goes beyond the end of the file (%llu bytes)", path,
                 (unsigned long long)n, (unsigned long long)f->file_size);
        st_close(f);
        return -1;
    }
    if (n > ST_MAX_HEADER) {
        rf_error("%s: header length %llu exceeds the format's limit of %llu bytes", path, (unsigned long long)n,
                 (unsigned long long)ST_MAX_HEADER);
        st_close(f);
        return -1;
    }
    f->data_start = 8 + n;
    char *text = malloc(n ? n : 1);
    if (!text || fread(text, 1, n, f->fp) != n) {
        free(text);
        rf_error("%s: cannot read the %llu-byte header", path, (unsigned long long)n);
        st_close(f);
        return -1;
    }
    size_t nl = strlen(path) + 16;
    char *name = malloc(nl);
    Json h;
    int rc = -1;
    if (name) {
        snprintf(name, nl, "%s: header", path);
        rc = json_parse(&h, text, n, name);
    } else {
        rf_error("%s: out of memory", path);
    }
    free(name);
    free(text);
    if (rc == 0) {
        rc = st_validate_header(f, &h);
        json_free(&h);
    }
    if (rc) st_close(f);
    return rc;
}

const StTensor *st_find(const StFile *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

/* IEEE 754 binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits.
 * Subnormals are m * 2^-24; exponent 31 is inf (m = 0) or NaN. */
static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 0x1F, m = h & 0x3FF, bits;
    if (e == 0) {
        float v = ldexpf((float)m, -24);
        return sign ? -v : v;
    }
    if (e == 31) bits = sign | 0x7F800000u | (m << 13);
    else bits = sign | ((e - 15 + 127) << 23) | (m << 13);
    float v;
    memcpy(&v, &bits, 4);
    return v;
}

int st_read_f32(const StFile *f, const StTensor *t, float *dst) {
    size_t numel = (size_t)t->numel, isz = (size_t)dtype_size(t->dtype);
    if (numel == 0) return 0;
    if (fseeko(f->fp, (off_t)(f->data_start + t->begin), SEEK_SET) != 0)
        return rf_error("%s: tensor '%s': cannot seek: %s", f->path, t->name, strerror(errno));
    if (t->dtype == ST_F32) {
        if (fread(dst, 4, numel, f->fp) != numel)
            return rf_error("%s: tensor '%s': short read (file truncated?)", f->path, t->name);
        if (!host_is_little_endian())
            for (size_t i = 0; i < numel; i++) {
                unsigned char *b = (unsigned char *)&dst[i], x;
                x = b[0], b[0] = b[3], b[3] = x;
                x = b[1], b[1] = b[2], b[2] = x;
            }
        return 0;
    }
    /* Half types: convert through a bounded scratch buffer. */
    enum { CHUNK = 1 << 16 };
    unsigned char *buf = malloc(CHUNK * isz);
    if (!buf) return rf_error("%s: tensor '%s': out of memory", f->path, t->name);
    for (size_t done = 0; done < numel;) {
        size_t k = numel - done < CHUNK ? numel - done : CHUNK;
        if (fread(buf, isz, k, f->fp) != k) {
            free(buf);
            return rf_error("%s: tensor '%s': short read (file truncated?)", f->path, t->name);
        }
        for (size_t i = 0; i < k; i++) {
            uint16_t h = (uint16_t)(buf[2 * i] | buf[2 * i + 1] << 8);
            dst[done + i] = t->dtype == ST_F16 ? f16_to_f32(h) : bf16_to_float(h);
        }
        done += k;
    }
    free(buf);
    return 0;
}

/* A BF16 tensor as it is stored (bf16 weights, see Model). */
int st_read_bf16(const StFile *f, const StTensor *t, uint16_t *dst) {
    size_t numel = (size_t)t->numel;
    if (t->dtype != ST_BF16)
        return rf_error("%s: tensor '%s' is %s, but bf16 weights need every matrix stored as BF16", f->path,
                        t->name, dtype_name(t->dtype));
    if (numel == 0) return 0;
    if (fseeko(f->fp, (off_t)(f->data_start + t->begin), SEEK_SET) != 0)
        return rf_error("%s: tensor '%s': cannot seek: %s", f->path, t->name, strerror(errno));
    if (fread(dst, 2, numel, f->fp) != numel)
        return rf_error("%s: tensor '%s': short read (file truncated?)", f->path, t->name);
    if (!host_is_little_endian())
        for (size_t i = 0; i < numel; i++) dst[i] = (uint16_t)(dst[i] >> 8 | dst[i] << 8);
    return 0;
}

void st_close(StFile *f) {
    if (f->fp) fclose(f->fp);
    for (int i = 0; i < f->n; i++) free(f->tensors[i].name);
    free(f->tensors);
    free(f->path);
    memset(f, 0, sizeof *f);
}

static void put_u64le(unsigned char *o, uint64_t v) {
    for (int i = 0; i < 8; i++) o[i] = (unsigned char)(v >> (8 * i));
}

/* Tensors are laid out in the given order, contiguously; the header is padded
 * with spaces so the data section starts at a multiple of 8 bytes.  The file
 * is streamed to a temporary name, so a model is never held twice. */
int st_write(const char *path, const StOut *tensors, int n) {
    RfBuf h = {0};
    uint64_t off = 0;
    buf_printf(&h, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < n; i++) {
        const StOut *t = &tensors[i];
        if (!t->name || t->ndim < 0 || t->ndim > 4) {
            buf_free(&h);
            return rf_error("%s: tensor %d: no name or ndim %d outside 0..4", path, i, t->ndim);
        }
        if (!strcmp(t->name, "__metadata__")) {
            buf_free(&h);
            return rf_error("%s: tensor %d: '__metadata__' is reserved by the format", path, i);
        }
        for (int k = 0; k < i; k++)
            if (!strcmp(tensors[k].name, t->name)) {
                buf_free(&h);
                return rf_error("%s: tensor '%s' given twice", path, t->name);
            }
        uint64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0) {
                buf_free(&h);
                return rf_error("%s: tensor '%s': negative shape[%d] = %lld", path, t->name, d,
                                (long long)t->shape[d]);
            }
            numel *= (uint64_t)t->shape[d];
        }
        if (numel && !t->data) {
            buf_free(&h);
            return rf_error("%s: tensor '%s': no data", path, t->name);
        }
        buf_append(&h, ",", 1);
        json_write_string(&h, t->name, strlen(t->name));
        buf_printf(&h, ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) buf_printf(&h, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        buf_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                   (unsigned long long)(off + 4 * numel));
        off += 4 * numel;
    }
    buf_append(&h, "}", 1);
    while (h.data && (8 + h.len) % 8) buf_append(&h, " ", 1);
    if (!h.data) return rf_error("%s: out of memory building the header", path);

    AtomicFile a;
    unsigned char len8[8];
    put_u64le(len8, h.len);
    if (atomic_open(&a, path)) {
        buf_free(&h);
        return -1;
    }
    int rc = atomic_write(&a, len8, 8);
    if (!rc) rc = atomic_write(&a, h.data, h.len);
    buf_free(&h);
    float tmp[1024];
    for (int i = 0; i < n && !rc; i++) {
        const StOut *t = &tensors[i];
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++) numel *= (size_t)t->shape[d];
        if (host_is_little_endian()) {
            rc = atomic_write(&a, t->data, numel * 4);
        } else {  /* the format is little-endian */
            for (size_t s = 0; s < numel && !rc; s += 1024) {
                size_t k = numel - s < 1024 ? numel - s : 1024;
                for (size_t j = 0; j < k; j++) {
                    uint32_t u;
                    memcpy(&u, &t->data[s + j], 4);
                    unsigned char *o = (unsigned char *)&tmp[j];
                    o[0] = (unsigned char)u, o[1] = (unsigned char)(u >> 8);
                    o[2] = (unsigned char)(u >> 16), o[3] = (unsigned char)(u >> 24);
                }
                rc = atomic_write(&a, tmp, k * 4);
            }
        }
    }
    if (rc) {
        atomic_abort(&a);
        return -1;
    }
    return atomic_commit(&a);
}

/* ------------------------------------------------------------- config.json */

/* An integer-valued JSON number that fits an int. */
static int cfg_int_value(const Json *v, const char *path, const char *key, int *out) {
    if (v->type != JSON_NUMBER || v->number != floor(v->number) || fabs(v->number) > 2147483647.0)
        return v->type == JSON_NUMBER
                   ? rf_error("%s: key \"%s\" is %g, not an integer", path, key, v->number)
                   : rf_error("%s: key \"%s\" is %s, not an integer", path, key, json_type_name(v));
    *out = (int)v->number;
    return 0;
}

/* Integer key: absent or null gives `def` unless required. */
static int cfg_int(const Json *o, const char *path, const char *key, int required, int def, int *out) {
    const Json *v = json_get(o, key);
    if (!v || v->type == JSON_NULL) {
        if (required) return rf_error("%s: key \"%s\" is %s, but required", path, key, v ? "null" : "missing");
        *out = def;
        return 0;
    }
    return cfg_int_value(v, path, key, out);
}

static int cfg_float(const Json *o, const char *path, const char *key, float def, float *out) {
    const Json *v = json_get(o, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (v->type != JSON_NUMBER)
        return rf_error("%s: key \"%s\" is %s, not a number", path, key, json_type_name(v));
    *out = (float)v->number;
    return 0;
}

/* bos/eos ids: an integer, null (-1: none) or a list whose first entry counts. */
static int cfg_token(const Json *o, const char *path, const char *key, int def, int *out) {
    const Json *v = json_get(o, key);
    if (v && v->type == JSON_ARRAY) {
        if (!v->count) return rf_error("%s: key \"%s\" is an empty list", path, key);
        return cfg_int_value(&v->items[0], path, key, out);
    }
    if (v && v->type == JSON_NULL) {
        *out = -1;
        return 0;
    }
    return cfg_int(o, path, key, 0, def, out);
}

static int config_from_json(Config *c, const Json *o, const char *path) {
    if (o->type != JSON_OBJECT) return rf_error("%s: top level is %s, not an object", path, json_type_name(o));
    const Json *mt = json_get(o, "model_type");
    if (!mt) return rf_error("%s: key \"model_type\" is missing, but required", path);
    if (mt->type != JSON_STRING)
        return rf_error("%s: key \"model_type\" is %s, not a string", path, json_type_name(mt));
    if (strcmp(mt->string, "mistral") && strcmp(mt->string, "llama"))
        return rf_error("%s: key \"model_type\" is '%s'; only 'mistral' and 'llama' are supported", path,
                        mt->string);
    snprintf(c->model_type, sizeof c->model_type, "%s", mt->string);
    int mistral = !strcmp(c->model_type, "mistral");

    /* Features of the Hugging Face classes this decoder does not implement. */
    const Json *v = json_get(o, "hidden_act");
    if (v && (v->type != JSON_STRING || strcmp(v->string, "silu")))
        return rf_error("%s: key \"hidden_act\": only \"silu\" is supported", path);
    v = json_get(o, "rope_scaling");
    if (v && v->type != JSON_NULL)
        return rf_error("%s: key \"rope_scaling\": RoPE scaling is not supported (must be null)", path);
    static const char *biases[] = {"attention_bias", "mlp_bias"};
    for (int i = 0; i < 2; i++) {
        v = json_get(o, biases[i]);
        if (v && !(v->type == JSON_BOOL && !v->boolean) && v->type != JSON_NULL)
            return rf_error("%s: key \"%s\": linear biases are not supported (must be false)", path, biases[i]);
    }

    if (cfg_int(o, path, "hidden_size", 1, 0, &c->hidden_size) ||
        cfg_int(o, path, "intermediate_size", 1, 0, &c->intermediate_size) ||
        cfg_int(o, path, "num_hidden_layers", 1, 0, &c->n_layers) ||
        cfg_int(o, path, "num_attention_heads", 1, 0, &c->n_heads) ||
        cfg_int(o, path, "vocab_size", 1, 0, &c->vocab_size) ||
        /* absent: MistralConfig's 8, LlamaConfig's None; None: as many as the attention heads */
        cfg_int(o, path, "num_key_value_heads", 0, mistral && !json_get(o, "num_key_value_heads") ? 8 : c->n_heads,
                &c->n_kv_heads))
        return -1;
    if (c->n_heads <= 0)
        return rf_error("%s: key \"num_attention_heads\" is %d, must be positive", path, c->n_heads);
    if (cfg_int(o, path, "head_dim", 0, c->hidden_size / c->n_heads, &c->head_dim)) return -1;
    /* Defaults of transformers' LlamaConfig / MistralConfig. */
    if (cfg_int(o, path, "max_position_embeddings", 0, mistral ? 4096 * 32 : 2048, &c->max_position_embeddings) ||
        cfg_float(o, path, "rms_norm_eps", 1e-6f, &c->rms_norm_eps) ||
        cfg_float(o, path, "rope_theta", 10000.0f, &c->rope_theta) ||
        cfg_token(o, path, "bos_token_id", 1, &c->bos_token_id) ||
        cfg_token(o, path, "eos_token_id", 2, &c->eos_token_id))
        return -1;
    v = json_get(o, "tie_word_embeddings");
    if (v && v->type != JSON_BOOL)
        return rf_error("%s: key \"tie_word_embeddings\" is %s, not true/false", path, json_type_name(v));
    c->tie_word_embeddings = v ? v->boolean : 0;
    /* LlamaModel has no sliding window, whatever the file says. */
    c->sliding_window = 0;
    /* MistralConfig: an absent sliding_window is its default 4096; null is none */
    if (mistral && cfg_int(o, path, "sliding_window", 0, json_get(o, "sliding_window") ? 0 : 4096, &c->sliding_window))
        return -1;
    return 0;
}

int config_load(Config *c, const char *path) {
    memset(c, 0, sizeof *c);
    char *text;
    size_t len;
    if (rf_read_file(path, &text, &len)) return -1;
    Json o;
    int rc = json_parse(&o, text, len, path);
    free(text);
    if (rc) return -1;
    rc = config_from_json(c, &o, path);
    json_free(&o);
    if (rc) memset(c, 0, sizeof *c);
    return rc;
}

int config_validate(const Config *c, const char *path) {
    static const struct { const char *key; size_t off; int max; } pos[] = {
        {"vocab_size", offsetof(Config, vocab_size), 1 << 24},
        {"hidden_size", offsetof(Config, hidden_size), 1 << 20},
        {"intermediate_size", offsetof(Config, intermediate_size), 1 << 22},
        {"num_hidden_layers", offsetof(Config, n_layers), 1 << 12},
        {"num_attention_heads", offsetof(Config, n_heads), 1 << 12},
        {"num_key_value_heads", offsetof(Config, n_kv_heads), 1 << 12},
        {"head_dim", offsetof(Config, head_dim), 1 << 14},
        {"max_position_embeddings", offsetof(Config, max_position_embeddings), 1 << 30},
    };
    for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++) {
        int v = *(const int *)((const char *)c + pos[i].off);
        if (v <= 0 || v > pos[i].max)
            return rf_error("%s: \"%s\" is %d, must be in 1..%d", path, pos[i].key, v, pos[i].max);
    }
    if (c->n_heads % c->n_kv_heads)
        return rf_error("%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", path,
                        c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2)
        return rf_error("%s: head_dim %d is odd; RoPE rotates pairs of features", path, c->head_dim);
    if (!(c->rms_norm_eps > 0) || !isfinite(c->rms_norm_eps))
        return rf_error("%s: rms_norm_eps %g must be positive", path, c->rms_norm_eps);
    if (!(c->rope_theta > 0) || !isfinite(c->rope_theta))
        return rf_error("%s: rope_theta %g must be positive", path, c->rope_theta);
    if (c->sliding_window < 0) return rf_error("%s: sliding_window %d is negative", path, c->sliding_window);
    if (strcmp(c->model_type, "mistral") && strcmp(c->model_type, "llama"))
        return rf_error("%s: model_type '%s' is not 'mistral' or 'llama'", path, c->model_type);
    if (!strcmp(c->model_type, "llama") && c->sliding_window)
        return rf_error("%s: sliding_window %d set on a llama model (Hugging Face's Llama has none)", path,
                        c->sliding_window);
    if (c->bos_token_id < -1 || c->bos_token_id >= c->vocab_size || c->eos_token_id < -1 ||
        c->eos_token_id >= c->vocab_size)
        return rf_error("%s: bos_token_id %d / eos_token_id %d outside the vocabulary of %d", path,
                        c->bos_token_id, c->eos_token_id, c->vocab_size);
    return 0;
}

/* The shortest decimal that reads back as the same float, laid out as
 * Python's repr does: "1e-05", "0.02", "10000.0" (fixed notation for decimal
 * exponents -4..15, always with a '.' or an exponent so it reads as a float). */
static void fmt_float(char *buf, size_t n, float x) {
    int prec = 1;
    for (; prec < 9; prec++) {
        snprintf(buf, n, "%.*e", prec - 1, (double)x);
        if (strtof(buf, NULL) == x) break;
    }
    snprintf(buf, n, "%.*e", prec - 1, (double)x);
    if (!isfinite(x)) return;
    int e10 = atoi(strchr(buf, 'e') + 1);
    if (e10 >= -4 && e10 < 16) {
        snprintf(buf, n, "%.*f", prec - 1 - e10 > 0 ? prec - 1 - e10 : 0, (double)x);
        if (!strchr(buf, '.')) strncat(buf, ".0", n - strlen(buf) - 1);
    }
}

static void json_token_id(RfBuf *b, int id) {
    if (id < 0) buf_printf(b, "null");
    else buf_printf(b, "%d", id);
}

int config_save(const Config *c, const char *path) {
    int llama = !strcmp(c->model_type, "llama");
    char eps[32], theta[32];
    fmt_float(eps, sizeof eps, c->rms_norm_eps);
    fmt_float(theta, sizeof theta, c->rope_theta);
    RfBuf b = {0};
    buf_printf(&b, "{\n  \"architectures\": [\"%s\"],\n", llama ? "LlamaForCausalLM" : "MistralForCausalLM");
    if (llama) buf_printf(&b, "  \"attention_bias\": false,\n");
    buf_printf(&b, "  \"attention_dropout\": 0.0,\n  \"bos_token_id\": ");
    json_token_id(&b, c->bos_token_id);
    buf_printf(&b, ",\n  \"eos_token_id\": ");
    json_token_id(&b, c->eos_token_id);
    buf_printf(&b, ",\n  \"head_dim\": %d,\n  \"hidden_act\": \"silu\",\n  \"hidden_size\": %d,\n"
                   "  \"initializer_range\": 0.02,\n  \"intermediate_size\": %d,\n"
                   "  \"max_position_embeddings\": %d,\n",
               c->head_dim, c->hidden_size, c->intermediate_size, c->max_position_embeddings);
    if (llama) buf_printf(&b, "  \"mlp_bias\": false,\n");
    buf_printf(&b, "  \"model_type\": ");
    json_write_string(&b, c->model_type, strlen(c->model_type));
    buf_printf(&b, ",\n  \"num_attention_heads\": %d,\n  \"num_hidden_layers\": %d,\n"
                   "  \"num_key_value_heads\": %d,\n",
               c->n_heads, c->n_layers, c->n_kv_heads);
    if (llama) buf_printf(&b, "  \"pretraining_tp\": 1,\n");
    buf_printf(&b, "  \"rms_norm_eps\": %s,\n", eps);
    if (llama) buf_printf(&b, "  \"rope_scaling\": null,\n");
    buf_printf(&b, "  \"rope_theta\": %s,\n", theta);
    if (!llama) {
        if (c->sliding_window) buf_printf(&b, "  \"sliding_window\": %d,\n", c->sliding_window);
        else buf_printf(&b, "  \"sliding_window\": null,\n");
    }
    buf_printf(&b, "  \"tie_word_embeddings\": %s,\n  \"torch_dtype\": \"float32\",\n"
                   "  \"use_cache\": true,\n  \"vocab_size\": %d\n}\n",
               c->tie_word_embeddings ? "true" : "false", c->vocab_size);
    if (!b.data) return rf_error("%s: out of memory", path);
    int rc = rf_write_file_atomic(path, b.data, b.len);
    buf_free(&b);
    return rc;
}

/* ----------------------------------------------------------- model folders */

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* The shards of a model folder: either model.safetensors alone, or the files
 * named by the "weight_map" of model.safetensors.index.json, each opened once. */
typedef struct {
    StFile *files;
    int n;
    char *index_path;     /* NULL when not sharded */
    Json index;
    const Json *weight_map;
} Shards;

static void shards_close(Shards *s) {
    for (int i = 0; i < s->n; i++) st_close(&s->files[i]);
    free(s->files);
    free(s->index_path);
    json_free(&s->index);
    memset(s, 0, sizeof *s);
}

static int shards_open(Shards *s, const char *dir) {
    memset(s, 0, sizeof *s);
    char *single = join(dir, "model.safetensors"), *index = join(dir, "model.safetensors.index.json");
    if (!single || !index) {
        free(single);
        free(index);
        return rf_error("%s: out of memory", dir);
    }
    int rc = 0;
    if (!file_exists(index)) {
        free(index);
        if (!file_exists(single)) {
            free(single);
            return rf_error("%s: no model.safetensors or model.safetensors.index.json in the folder", dir);
        }
        s->files = calloc(1, sizeof *s->files);
        if (!s->files) rc = rf_error("%s: out of memory", dir);
        else if (!(rc = st_open(&s->files[0], single))) s->n = 1;
        free(single);
        if (rc) shards_close(s);
        return rc;
    }
    free(single);
    s->index_path = index;
    char *text;
    size_t len;
    if (rf_read_file(index, &text, &len)) {
        shards_close(s);
        return -1;
    }
    rc = json_parse(&s->index, text, len, index);
    free(text);
    if (rc) {
        shards_close(s);
        return -1;
    }
    const Json *wm = json_get(&s->index, "weight_map");
    if (!wm || wm->type != JSON_OBJECT) {
        rc = rf_error("%s: \"weight_map\" is %s, not an object", index, json_type_name(wm));
        shards_close(s);
        return rc;
    }
    s->weight_map = wm;
    s->files = calloc(wm->count ? wm->count : 1, sizeof *s->files);
    if (!s->files) rc = rf_error("%s: out of memory", index);
    for (size_t i = 0; i < wm->count && !rc; i++) {
        const Json *f = &wm->items[i];
        if (f->type != JSON_STRING || !f->len || strchr(f->string, '/') || f->string[0] == '.') {
            rc = rf_error("%s: weight_map entry '%s' must name a file inside the folder", index, wm->keys[i]);
            break;
        }
        int seen = 0;
        for (int k = 0; k < s->n && !seen; k++) {
            const char *slash = strrchr(s->files[k].path, '/');
            seen = !strcmp(slash ? slash + 1 : s->files[k].path, f->string);
        }
        if (seen) continue;
        char *p = join(dir, f->string);
        if (!p) rc = rf_error("%s: out of memory", index);
        else if (!(rc = st_open(&s->files[s->n], p))) s->n++;
        free(p);
    }
    if (rc) shards_close(s);
    return rc;
}

/* The shard holding `name`, or NULL (error set) when it is absent. */
static const StFile *shards_find(const Shards *s, const char *dir, const char *name, const StTensor **t) {
    if (!s->index_path) {
        if ((*t = st_find(&s->files[0], name))) return &s->files[0];
        rf_error("%s: tensor '%s' is missing from model.safetensors", dir, name);
        return NULL;
    }
    const Json *f = json_get(s->weight_map, name);
    if (!f) {
        rf_error("%s: tensor '%s' is missing from the weight_map of model.safetensors.index.json", dir, name);
        return NULL;
    }
    for (int k = 0; k < s->n; k++) {
        const char *slash = strrchr(s->files[k].path, '/');
        if (strcmp(slash ? slash + 1 : s->files[k].path, f->string)) continue;
        if ((*t = st_find(&s->files[k], name))) return &s->files[k];
        rf_error("%s: tensor '%s' is listed in the index but missing from the shard", s->files[k].path, name);
        return NULL;
    }
    rf_error("%s: shard '%s' of tensor '%s' was not opened", dir, f->string, name);
    return NULL;
}

/* Whether every matrix of m's parameter table is stored as BF16 in the open
 * shards (0 also when one is missing: the read that follows says so). */
static int all_matrices_bf16(const Shards *s, const char *dir, const Model *m) {
    int all = 1;
    for (int i = 0; i < m->n_params && all; i++) {
        const StTensor *t;
        if (m->spec[i].ndim == 2) all = shards_find(s, dir, m->spec[i].name, &t) && t->dtype == ST_BF16;
    }
    rf_clear_error();
    return all;
}

enum { LOAD_F32, LOAD_BF16, LOAD_AUTO };

/* LOAD_AUTO: bf16 weights when every matrix is BF16 and their float32 copy
 * would take more than half of the memory (mem_total: the machine's, or the
 * cgroup's limit when lower; one line on stderr, prefixed by `who`, says so). */
static int load_model(Model *m, const char *dir, int mode, const char *who) {
    memset(m, 0, sizeof *m);
    char *cfg_path = join(dir, "config.json");
    if (!cfg_path) return rf_error("%s: out of memory", dir);
    Config c;
    int rc = config_load(&c, cfg_path);
    if (!rc) rc = config_validate(&c, cfg_path);
    free(cfg_path);
    if (rc) return -1;
    Shards s;
    if (model_alloc_table(m, &c) || shards_open(&s, dir)) {
        model_free(m);
        return -1;
    }
    int bf16 = mode == LOAD_BF16;
    if (mode == LOAD_AUTO && all_matrices_bf16(&s, dir, m)) {
        const char *where;
        double gib = 1.0 / (1 << 30), f32 = (double)m->total * 4 * gib, mem = mem_total(&where) * gib;
        if ((bf16 = f32 > 0.5 * mem))
            fprintf(stderr, "%s: keeping the BF16 weights of %s in bf16 (%.1f GiB): in float32 they would take %.1f "
                    "of %s %.1f GiB\n", who, dir, f32 / 2, f32, where, mem);
    }
    if (model_alloc_weights(m, bf16)) {
        shards_close(&s);
        model_free(m);
        return -1;
    }
    /* Every tensor of the parameter table must be present with its shape;
     * extra tensors (a tied lm_head, rotary inv_freq buffers) are ignored. */
    for (int i = 0; i < m->n_params && !rc; i++) {
        const ParamSpec *p = &m->spec[i];
        const StTensor *t;
        const StFile *f = shards_find(&s, dir, p->name, &t);
        if (!f) {
            rc = -1;
            break;
        }
        int64_t want[2] = {p->shape[0], p->shape[1]};
        int same = t->ndim == p->ndim;
        for (int d = 0; d < p->ndim && same; d++) same = t->shape[d] == want[d];
        if (!same) {
            char a[160], b[160];
            rc = rf_error("%s: tensor '%s' has shape %s, but config.json implies %s", f->path, p->name,
                          shape_str(a, sizeof a, t->shape, t->ndim), shape_str(b, sizeof b, want, p->ndim));
            break;
        }
        float *view = model_float_view(m, i);
        rc = view ? st_read_f32(f, t, view) : st_read_bf16(f, t, m->params16 + p->offset);
    }
    shards_close(&s);
    if (rc) model_free(m);
    return rc;
}

int model_load(Model *m, const char *dir) { return load_model(m, dir, LOAD_F32, NULL); }
int model_load_bf16(Model *m, const char *dir) { return load_model(m, dir, LOAD_BF16, NULL); }

int model_load_frozen(Model *m, const char *dir, const char *who) {
    const char *want = getenv("RECFOUND_WEIGHTS");
    if (!want || !strcmp(want, "auto")) return load_model(m, dir, LOAD_AUTO, who);
    if (!strcmp(want, "f32")) return model_load(m, dir);
    if (!strcmp(want, "bf16")) return model_load_bf16(m, dir);
    return rf_error("RECFOUND_WEIGHTS=%s: expected auto, f32 or bf16", want);
}

/* Weights first, then config.json: each file is replaced atomically, and a
 * stale shard index (which model_load would prefer) is removed in between. */
int model_save(const Model *m, const char *dir) {
    if (m->params16) return rf_error("%s: a model with bf16 weights is never written (it cannot train)", dir);
    if (rf_mkdirs(dir)) return -1;
    char *st = join(dir, "model.safetensors"), *cfg = join(dir, "config.json"),
         *index = join(dir, "model.safetensors.index.json");
    StOut *out = calloc(m->n_params ? (size_t)m->n_params : 1, sizeof *out);
    int rc = 0;
    if (!st || !cfg || !index || !out) rc = rf_error("%s: out of memory", dir);
    for (int i = 0; i < m->n_params && !rc; i++) {
        const ParamSpec *p = &m->spec[i];
        out[i].name = p->name;
        out[i].ndim = p->ndim;
        out[i].shape[0] = p->shape[0];
        out[i].shape[1] = p->shape[1];
        out[i].data = m->params + p->offset;
    }
    if (!rc) rc = st_write(st, out, m->n_params);
    if (!rc && unlink(index) != 0 && errno != ENOENT)
        rc = rf_error("%s: cannot remove the stale shard index: %s", index, strerror(errno));
    if (!rc) rc = config_save(&m->cfg, cfg);
    free(out);
    free(st);
    free(cfg);
    free(index);
    return rc;
}

/* ------------------------------------------------------- argument parsing */

int need_flag(const char *cmd, const char *name, const char *value) {
    if (value) return 0;
    return rf_error("%s: missing required option %s (see recfound %s --help)", cmd, name, cmd);
}

int check_range(const char *name, double v, double lo, int lo_open, double hi) {
    if ((lo_open ? v > lo : v >= lo) && v <= hi) return 0;  /* NaN fails both */
    if (isinf(hi)) return rf_error("%s must be %s %.10g, got %.10g", name, lo_open ? ">" : ">=", lo, v);
    return rf_error("%s must be in %s%.10g, %.10g], got %.10g", name, lo_open ? "(" : "[", lo, hi, v);
}

int parse_flags(int argc, char **argv, const Flag *f, int n, const char *usage) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: recfound %s %s\n\n", argv[0], usage);
            for (int k = 0; k < n; k++) printf("  %-24s %s\n", f[k].name, f[k].help);
            return 1;
        }
        int k = 0;
        while (k < n && strcmp(argv[i], f[k].name)) k++;
        if (k == n) return rf_error("%s: unknown option '%s' (see recfound %s --help)", argv[0], argv[i], argv[0]);
        if (f[k].type == 'b') {
            *(int *)f[k].target = 1;
            continue;
        }
        if (i + 1 >= argc) return rf_error("%s: option %s needs a value", argv[0], argv[i]);
        const char *v = argv[++i];
        char *end;
        if (f[k].type == 's') {
            *(const char **)f[k].target = v;
        } else if (f[k].type == 'i') {
            errno = 0;
            long x = strtol(v, &end, 10);
            if (!*v || *end || errno) return rf_error("%s: %s must be a whole number, got '%s'", argv[0], f[k].name, v);
            /* every count, size and seed fits an int, which the code may narrow it to */
            if (x > INT_MAX || x < -INT_MAX)
                return rf_error("%s: %s must be a whole number from -%d to %d, got '%s'", argv[0], f[k].name, INT_MAX,
                                INT_MAX, v);
            *(long *)f[k].target = x;
        } else {
            double x = strtod(v, &end);
            if (!*v || *end || !isfinite(x)) return rf_error("%s: %s must be a number, got '%s'", argv[0], f[k].name, v);
            *(double *)f[k].target = x;
        }
    }
    return 0;
}
