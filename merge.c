/*
 * merge.c - Model Merge (paper §4.4): TIES-Merging (Yadav et al. 2023) of
 * adapter checkpoints, plus the mean and task-arithmetic baselines.
 *
 * Every tensor of adapter_model.safetensors (each expert's lora_A and lora_B,
 * each router's weight and bias, the task-embedding table) is merged on its
 * own, entry by entry, from the task vectors tau_k = theta_k - theta_base of
 * the K fine-tuned checkpoints against the step-0 adapters (never the product
 * B A; official-code.md §7).
 *
 * Canonical TIES (the default, --order ties), per tensor of n entries:
 *   1. trim:  keep each tau_k's floor(density * n) entries of largest |tau|
 *   2. elect: s = sign(sum_k trimmed tau_k), entry by entry
 *   3. disjoint mean over the non-zero trimmed entries whose sign is s
 *   theta = theta_base + lambda * merged
 * The authors' code (--order code) elects the sign first, on the untrimmed
 * task vectors, drops the disagreeing entries, then trims, then divides the
 * sum by the number of models that agreed BEFORE trimming (see ties_merge).
 *
 * The command reads one tensor of every checkpoint at a time and streams the
 * merged file, so memory is about 2K + 4 tensors, never K whole checkpoints.
 * Every name and shape is checked before anything is written.
 */
#include "recfound.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------ the core */

/* floor(density * n) in double, as Python's int(density * numel) does (so
 * density 0.7 of n = 10 keeps 7, which float32 arithmetic would make 6).
 * Example: n = 4, density 0.5 -> 2;  n = 6, density 0.8 -> floor(4.8) = 4. */
size_t ties_keep_count(size_t n, double density) {
    if (!(density > 0)) return 0;
    if (density >= 1) return n;
    double m = floor(density * (double)n);
    return m >= (double)n ? n : (size_t)m;
}

static float median3(float a, float b, float c) {
    if (a > b) { float t = a; a = b; b = t; }
    if (b > c) b = c;
    return a > b ? a : b;
}

/* The k-th smallest (0-based) of a[0..n), reordering a: quickselect with a
 * three-way partition, so runs of equal values (many zeros) cost one pass.
 * Example: a = [0.1, 0.5, 0.3, 0.2], k = 2 -> 0.3. */
static float select_kth(float *a, size_t n, size_t k) {
    size_t lo = 0, hi = n;
    while (hi - lo > 1) {
        float p = median3(a[lo], a[lo + (hi - lo) / 2], a[hi - 1]);
        size_t lt = lo, i = lo, gt = hi;  /* [lo,lt) < p, [lt,i) == p, [gt,hi) > p */
        while (i < gt) {
            float x = a[i];
            if (x < p) a[i++] = a[lt], a[lt++] = x;
            else if (x > p) a[i] = a[--gt], a[gt] = x;
            else i++;
        }
        if (k < lt) hi = lt;
        else if (k >= gt) lo = gt;
        else return p;
    }
    return a[lo];
}

/* Trim step (TIES step 1) on one tensor: keep exactly m = floor(density * n)
 * entries, those of largest |tau|; the threshold t is the m-th largest |tau|;
 * every |tau| > t is kept, and of the entries with |tau| == t the ones with
 * the LOWER flat index are kept until m entries are kept.
 *   tau = [0.1, -0.5, 0.3, -0.2], density 0.5: m = 2, t = 0.3 -> [0, -0.5, 0.3, 0]
 *   tau = [0.2, -0.2, 0.2, 0.1],  density 0.5: m = 2, t = 0.2, no |tau| > t,
 *         two ties allowed: indices 0 and 1 -> [0.2, -0.2, 0, 0] */
void ties_trim(float *tau, size_t n, double density, float *scratch) {
    size_t m = ties_keep_count(n, density);
    if (m >= n) return;
    if (m == 0) {
        memset(tau, 0, n * sizeof *tau);
        return;
    }
    for (size_t i = 0; i < n; i++) scratch[i] = fabsf(tau[i]);
    float t = select_kth(scratch, n, n - m);  /* m-th largest = (n-m)-th smallest */
    size_t above = 0;
    for (size_t i = 0; i < n; i++) above += fabsf(tau[i]) > t;
    size_t ties_left = m - above;
    for (size_t i = 0; i < n; i++) {
        float a = fabsf(tau[i]);
        if (a > t) continue;
        if (a == t && ties_left > 0) ties_left--;
        else tau[i] = 0;
    }
}

/* Elect step (TIES step 2): the sign of the sum over checkpoints (summed in
 * double).  A sum of exactly 0 elects no sign (0), and such an entry merges
 * to 0 in both orders.
 *   tau_1 = [0.3, -0.2, 0.1], tau_2 = [-0.1, -0.4, -0.1]
 *   sums  = [0.2, -0.6, 0]   -> sign = [+1, -1, 0] */
void ties_elect(signed char *sign, const float *const *tau, int K, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double s = 0;
        for (int k = 0; k < K; k++) s += tau[k][i];
        sign[i] = (signed char)(s > 0 ? 1 : s < 0 ? -1 : 0);
    }
}

static int agrees(float x, signed char s) { return (s > 0 && x > 0) || (s < 0 && x < 0); }

/* Disjoint mean (TIES step 3): average the entries that are non-zero and of
 * the elected sign, divided by their count; no such entry -> 0.
 *   tau_1 = [0.3, -0.2, 0.5], tau_2 = [-0.1, -0.4, 0], sign = [+1, -1, +1]
 *   -> [0.3 / 1, (-0.2 - 0.4) / 2, 0.5 / 1] = [0.3, -0.3, 0.5] */
void ties_disjoint_mean(float *merged, const float *const *tau, const signed char *sign, int K, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double s = 0;
        int c = 0;
        for (int k = 0; k < K; k++)
            if (agrees(tau[k][i], sign[i])) s += tau[k][i], c++;
        merged[i] = c ? (float)(s / c) : 0.0f;
    }
}

/* out = base + lambda * merged, merged by TIES in one of two orders.
 *
 * TIES_ORDER_TIES (canonical): trim each tau_k, elect on the trimmed values,
 * disjoint mean.
 *
 * TIES_ORDER_CODE (the authors' code): elect on the UNTRIMMED tau_k; count,
 * per entry, the models whose untrimmed tau_k entry is non-zero with the
 * elected sign; zero the other entries; trim each tau_k (the zeroed entries
 * take part in the top-density ranking as zeros); merged = sum / count, where
 * the count is taken before trimming: a model whose agreeing entry was then
 * trimmed away still counts, which pulls the result toward 0.  (The authors
 * divide by count + 1e-9, below float precision for count >= 1, and use
 * lambda = 1.)  Worked example, K = 2, n = 2, density 0.5:
 *   tau_1 = [0.4, 0.1], tau_2 = [0.2, -0.3]
 *   canonical: trimmed [0.4, 0], [0, -0.3]; sign [+, -]; merged [0.4, -0.3]
 *   code: sign(untrimmed sums [0.6, -0.2]) = [+, -]; counts [2, 1];
 *         after dropping disagreeing entries [0.4, 0], [0.2, -0.3];
 *         trimmed [0.4, 0], [0, -0.3]; merged [0.4 / 2, -0.3 / 1] = [0.2, -0.3]
 */
int ties_merge(float *out, const float *base, const float *const *ckpts, int K, size_t n, double density,
               float lambda, int order) {
    if (K < 1 || n == 0) {
        if (out != base) memmove(out, base, n * sizeof *out);
        return 0;
    }
    float *tau = malloc((size_t)K * n * sizeof *tau), *merged = malloc(n * sizeof *merged);
    signed char *sign = malloc(n);
    int *count = order == TIES_ORDER_CODE ? malloc(n * sizeof *count) : NULL;
    const float **tk = malloc((size_t)K * sizeof *tk);
    if (!tau || !merged || !sign || !tk || (order == TIES_ORDER_CODE && !count)) {
        free(tau), free(merged), free(sign), free(count), free(tk);
        return rf_error("merge: out of memory for a tensor of %zu values x %d checkpoints", n, K);
    }
    for (int k = 0; k < K; k++) {
        float *t = tau + (size_t)k * n;
        for (size_t i = 0; i < n; i++) t[i] = ckpts[k][i] - base[i];
        tk[k] = t;
    }
    if (order == TIES_ORDER_CODE) {
        ties_elect(sign, tk, K, n);
        for (size_t i = 0; i < n; i++) {
            int c = 0;
            for (int k = 0; k < K; k++) {
                float *t = tau + (size_t)k * n + i;
                if (agrees(*t, sign[i])) c++;
                else *t = 0;
            }
            count[i] = c;
        }
        for (int k = 0; k < K; k++) ties_trim(tau + (size_t)k * n, n, density, merged);
        for (size_t i = 0; i < n; i++) {
            double s = 0;
            for (int k = 0; k < K; k++) s += tk[k][i];
            merged[i] = count[i] ? (float)(s / count[i]) : 0.0f;
        }
    } else {
        for (int k = 0; k < K; k++) ties_trim(tau + (size_t)k * n, n, density, merged);
        ties_elect(sign, tk, K, n);
        ties_disjoint_mean(merged, tk, sign, K, n);
    }
    for (size_t i = 0; i < n; i++) out[i] = base[i] + lambda * merged[i];
    free(tau), free(merged), free(sign), free(count), free(tk);
    return 0;
}

/* out = base + (1/K) sum_k (theta_k - base): the plain average of the
 * checkpoints.  Example: base 1, checkpoints 2 and 4 -> 1 + (1 + 3)/2 = 3. */
void mean_merge(float *out, const float *base, const float *const *ckpts, int K, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double s = 0;
        for (int k = 0; k < K; k++) s += ckpts[k][i] - base[i];
        out[i] = (float)(base[i] + (K > 0 ? s / K : 0));
    }
}

/* out = base + lambda * sum_k (theta_k - base) (Ilharco et al. 2023).
 * Example: base 1, checkpoints 2 and 4, lambda 0.5 -> 1 + 0.5 (1 + 3) = 3. */
void task_arithmetic_merge(float *out, const float *base, const float *const *ckpts, int K, size_t n,
                           float lambda) {
    for (size_t i = 0; i < n; i++) {
        double s = 0;
        for (int k = 0; k < K; k++) s += ckpts[k][i] - base[i];
        out[i] = (float)(base[i] + (double)lambda * s);
    }
}

/* ------------------------------------------------------------ the command */

typedef struct {
    const char *base, *out;
    char **ckpts;
    int K;
    int method, order;
    double density;
    float lambda;
    int quiet;
} MergeArgs;

static const char *const METHOD_NAMES[] = {"ties", "mean", "task-arithmetic"};
static const char *const ORDER_NAMES[] = {"ties", "code"};

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static const char *shape_text(char *buf, size_t n, const StTensor *t) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < t->ndim && k < n; d++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

/* Same names, same shapes as the base, both ways; the first problem is the error. */
static int check_same_tensors(const StFile *base, const StFile *ck) {
    char s1[128], s2[128];
    for (int i = 0; i < base->n; i++) {
        const StTensor *b = &base->tensors[i], *c = st_find(ck, b->name);
        if (!c)
            return rf_error("%s: tensor '%s' is missing (the base %s has it)", ck->path, b->name, base->path);
        int same = c->ndim == b->ndim;
        for (int d = 0; same && d < b->ndim; d++) same = c->shape[d] == b->shape[d];
        if (!same)
            return rf_error("%s: tensor '%s' has shape %s, but in the base %s it has shape %s", ck->path, b->name,
                            shape_text(s1, sizeof s1, c), base->path, shape_text(s2, sizeof s2, b));
    }
    for (int i = 0; i < ck->n; i++)
        if (!st_find(base, ck->tensors[i].name))
            return rf_error("%s: tensor '%s' is not in the base %s", ck->path, ck->tensors[i].name, base->path);
    return 0;
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The folders of `dir` (itself and its parents) that do not exist yet, deepest
 * last, so that a failed merge can rmdir them again and leave no --out. */
static int missing_folders(const char *dir, char ***list, int *n) {
    *list = NULL;
    *n = 0;
    size_t len = strlen(dir);
    char **l = calloc(len + 1, sizeof *l);
    if (!l) return rf_error("%s: out of memory", dir);
    for (size_t e = 1; e <= len; e++) {
        if (e < len && dir[e] != '/') continue;
        if (dir[e - 1] == '/') continue;
        char *p = strndup(dir, e);
        struct stat st;
        if (!p) {
            for (int i = 0; i < *n; i++) free(l[i]);
            free(l);
            return rf_error("%s: out of memory", dir);
        }
        if (stat(p, &st) != 0 && errno == ENOENT) l[(*n)++] = p;
        else free(p);
    }
    *list = l;
    return 0;
}

static void remove_folders(char **list, int n) {
    for (int i = n - 1; i >= 0; i--) rmdir(list[i]);
}

static void put_f32le(unsigned char *o, float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    o[0] = (unsigned char)u, o[1] = (unsigned char)(u >> 8);
    o[2] = (unsigned char)(u >> 16), o[3] = (unsigned char)(u >> 24);
}

/* Write n floats little-endian (the safetensors byte order) on any host. */
static int write_f32(FILE *fp, const float *x, size_t n) {
    unsigned char buf[4096];
    for (size_t s = 0; s < n; s += 1024) {
        size_t k = n - s < 1024 ? n - s : 1024;
        for (size_t j = 0; j < k; j++) put_f32le(buf + 4 * j, x[s + j]);
        if (fwrite(buf, 4, k, fp) != k) return -1;
    }
    return 0;
}

/* The safetensors header of the merged file: the base's tensors, in the
 * base's order, all F32, laid out contiguously (the layout st_write uses). */
static int merged_header(RfBuf *h, const StFile *base) {
    uint64_t off = 0;
    buf_printf(h, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < base->n; i++) {
        const StTensor *t = &base->tensors[i];
        buf_append(h, ",", 1);
        json_write_string(h, t->name, strlen(t->name));
        buf_printf(h, ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) buf_printf(h, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        uint64_t bytes = 4 * (uint64_t)t->numel;
        buf_printf(h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                   (unsigned long long)(off + bytes));
        off += bytes;
    }
    buf_append(h, "}", 1);
    while (h->data && (8 + h->len) % 8) buf_append(h, " ", 1);
    return h->data ? 0 : rf_error("%s: out of memory building the merged header", base->path);
}

static int read_finite(const StFile *f, const char *name, float *dst) {
    const StTensor *t = st_find(f, name);
    if (st_read_f32(f, t, dst)) return -1;
    for (int64_t i = 0; i < t->numel; i++)
        if (!isfinite(dst[i]))
            return rf_error("%s: tensor '%s': value %g at flat index %lld is not finite", f->path, name,
                            (double)dst[i], (long long)i);
    return 0;
}

/* Merge, tensor by tensor, into a temporary file next to `path`, then fsync
 * and rename it over `path`. */
static int write_merged(const char *path, const StFile *base, const StFile *ck, const MergeArgs *a,
                        size_t maxn) {
    int K = a->K, rc = -1;
    float *buf = malloc((size_t)(K + 2) * (maxn ? maxn : 1) * sizeof *buf);
    const float **cp = malloc((size_t)K * sizeof *cp);
    size_t tl = strlen(path) + 32;
    char *tmp = malloc(tl);
    RfBuf h = {0};
    FILE *fp = NULL;
    if (!buf || !cp || !tmp) {
        rf_error("%s: out of memory for %d x %zu values", path, K + 2, maxn);
        goto done;
    }
    float *bv = buf, *out = buf + maxn;
    for (int k = 0; k < K; k++) cp[k] = buf + (size_t)(k + 2) * maxn;
    if (merged_header(&h, base)) goto done;
    snprintf(tmp, tl, "%s.tmp.%ld", path, (long)getpid());
    if (!(fp = fopen(tmp, "wb"))) {
        rf_error("%s: cannot create temporary file %s: %s", path, tmp, strerror(errno));
        goto done;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
    if (fwrite(len8, 1, 8, fp) != 8 || fwrite(h.data, 1, h.len, fp) != h.len) {
        rf_error("%s: write to %s failed: %s", path, tmp, strerror(errno));
        goto done;
    }
    for (int i = 0; i < base->n; i++) {
        const char *name = base->tensors[i].name;
        size_t n = (size_t)base->tensors[i].numel;
        if (read_finite(base, name, bv)) goto done;
        for (int k = 0; k < K; k++)
            if (read_finite(&ck[k], name, (float *)cp[k])) goto done;
        if (a->method == MERGE_TIES) {
            if (ties_merge(out, bv, cp, K, n, a->density, a->lambda, a->order)) goto done;
        } else if (a->method == MERGE_MEAN) {
            mean_merge(out, bv, cp, K, n);
        } else {
            task_arithmetic_merge(out, bv, cp, K, n, a->lambda);
        }
        if (write_f32(fp, out, n)) {
            rf_error("%s: write to %s failed: %s", path, tmp, strerror(errno));
            goto done;
        }
    }
    int e = 0;
    const char *what = NULL;
    if (fflush(fp) != 0) e = errno, what = "flush";
    else if (fsync(fileno(fp)) != 0) e = errno, what = "fsync";
    if (fclose(fp) != 0 && !what) e = errno, what = "close";
    fp = NULL;
    if (!what && rename(tmp, path) != 0) e = errno, what = "rename";
    if (what) rf_error("%s: %s of %s failed: %s", path, what, tmp, strerror(e));
    else rc = 0;
done:
    if (fp) fclose(fp);
    if (rc && tmp) unlink(tmp);
    free(tmp), free(buf), free(cp);
    buf_free(&h);
    return rc;
}

/* A checkpoint written by `recfound train` records the CRC-32 of its run's
 * step-0 adapters (trainer_state.json "step0_crc32").  When it differs from
 * the --base file's, the task vectors theta_k - theta_base would subtract
 * another run's random A matrices and routers: say so (a warning, since a
 * re-encoded copy of the right step-0, F16 say, differs too).  Checkpoints
 * without the field (from elsewhere, or older runs) are not checked. */
static void warn_foreign_base(const MergeArgs *a, const char *base_file) {
    uint32_t base_crc = 0;
    int have_base = 0;
    for (int k = 0; k < a->K; k++) {
        char *p = path_join(a->ckpts[k], "trainer_state.json"), *text = NULL;
        size_t len;
        Json st;
        if (!p || !file_exists(p)) {
            free(p);
            continue;
        }
        if (rf_read_file(p, &text, &len) || json_parse(&st, text, len, p)) {
            fprintf(stderr, "merge: warning: %s; its base is not checked\n", rf_last_error());
            rf_clear_error();
            free(text);
            free(p);
            continue;
        }
        const Json *crc = json_get(&st, "step0_crc32");
        if (crc && crc->type == JSON_STRING) {
            if (!have_base) have_base = !rf_file_crc32(base_file, &base_crc);
            uint32_t want = (uint32_t)strtoul(crc->string, NULL, 16);
            if (have_base && want != base_crc)
                fprintf(stderr, "merge: warning: %s was trained from another step-0 than the base %s (its "
                        "step0_crc32 %08x, the base's %08x): pass that run's own step-0 as --base\n",
                        a->ckpts[k], a->base, (unsigned)want, (unsigned)base_crc);
        }
        json_free(&st);
        free(text);
        free(p);
    }
}

static int merge_run(const MergeArgs *a) {
    int rc = -1, opened = 0, n_new = 0;
    char *base_file = path_join(a->base, "adapter_model.safetensors");
    char *out_file = path_join(a->out, "adapter_model.safetensors");
    char *cfg_out = path_join(a->out, "adapter_config.json");
    char *cfg_text = NULL, *cfg_from = NULL, **new_dirs = NULL;
    size_t cfg_len = 0;
    StFile base = {0};
    StFile *ck = calloc((size_t)a->K, sizeof *ck);
    int base_open = 0, model_written = 0;
    if (!base_file || !out_file || !cfg_out || !ck) {
        rf_error("merge: out of memory");
        goto done;
    }
    /* 1. Open and check everything before anything is written. */
    if (st_open(&base, base_file)) goto done;
    base_open = 1;
    for (; opened < a->K; opened++) {
        char *f = path_join(a->ckpts[opened], "adapter_model.safetensors");
        if (!f) {
            rf_error("merge: out of memory");
            goto done;
        }
        int r = st_open(&ck[opened], f);
        free(f);
        if (r) goto done;
        if (check_same_tensors(&base, &ck[opened])) {
            opened++;
            goto done;
        }
    }
    size_t maxn = 0, total = 0;
    for (int i = 0; i < base.n; i++) {
        size_t n = (size_t)base.tensors[i].numel;
        total += n;
        if (n > maxn) maxn = n;
    }
    /* adapter_config.json: from the first fine-tuned checkpoint that has one
     * (as the authors' script does), else from the base; checked to be JSON. */
    for (int k = 0; k <= a->K && !cfg_from; k++) {
        char *p = path_join(k < a->K ? a->ckpts[k] : a->base, "adapter_config.json");
        if (!p) {
            rf_error("merge: out of memory");
            goto done;
        }
        if (file_exists(p)) cfg_from = p;
        else free(p);
    }
    if (cfg_from) {
        Json j;
        if (rf_read_file(cfg_from, &cfg_text, &cfg_len) || json_parse(&j, cfg_text, cfg_len, cfg_from)) goto done;
        json_free(&j);
    }
    if (!a->quiet) warn_foreign_base(a, base_file);
    /* 2. Write: the merged tensors, then the config. */
    if (missing_folders(a->out, &new_dirs, &n_new) || rf_mkdirs(a->out)) goto done;
    if (write_merged(out_file, &base, ck, a, maxn)) goto done;
    model_written = 1;
    if (cfg_text && rf_write_file_atomic(cfg_out, cfg_text, cfg_len)) goto done;
    rc = 0;
    if (!a->quiet) {
        printf("merged %d checkpoint%s into %s: method %s", a->K, a->K == 1 ? "" : "s", out_file,
               METHOD_NAMES[a->method]);
        if (a->method == MERGE_TIES)
            printf(" (order %s, density %g, lambda %g)", ORDER_NAMES[a->order], a->density, (double)a->lambda);
        else if (a->method == MERGE_TASK_ARITHMETIC)
            printf(" (lambda %g)", (double)a->lambda);
        printf(", %d tensors, %zu parameters\n", base.n, total);
        if (cfg_from) printf("adapter_config.json copied from %s\n", cfg_from);
        else printf("no adapter_config.json in the checkpoints or the base: none written\n");
    }
done:
    if (rc) {
        if (model_written) unlink(out_file);
        if (new_dirs) remove_folders(new_dirs, n_new);
    }
    for (int i = 0; i < n_new; i++) free(new_dirs[i]);
    free(new_dirs);
    for (int k = 0; k < opened; k++) st_close(&ck[k]);
    if (base_open) st_close(&base);
    free(ck), free(base_file), free(out_file), free(cfg_out), free(cfg_text), free(cfg_from);
    return rc;
}

static const char MERGE_USAGE[] =
    "usage: recfound merge --base RUN/step-0 CKPT... --out DIR [options]\n"
    "\n"
    "Model Merge (paper §4.4): merges adapter checkpoints (folders holding\n"
    "adapter_model.safetensors, F32/F16/BF16) tensor by tensor, from the task\n"
    "vectors tau_k = theta_k - theta_base.  Writes DIR/adapter_model.safetensors\n"
    "(F32, the base's tensor order) and copies adapter_config.json from the first\n"
    "checkpoint that has one.  Names and shapes must match the base exactly.\n"
    "A checkpoint of `recfound train` records the CRC-32 of its run's step-0\n"
    "(trainer_state.json): a base other than that file is warned about.\n"
    "\n"
    "  --base DIR     the step-0 adapters (random A and routers, B = 0)\n"
    "  --out DIR      output folder, new or empty (not created when the merge fails)\n"
    "  --method M     ties (default) | mean (average of the checkpoints)\n"
    "                 | task-arithmetic (theta_base + lambda * sum_k tau_k)\n"
    "  --density D    ties: fraction of each tau_k kept per tensor, floor(D * numel)\n"
    "                 entries of largest magnitude, ties to the lower index (0.8)\n"
    "  --lambda X     ties, task-arithmetic: scale of the merged vector (1.0)\n"
    "  --order O      ties: ties = trim, elect, disjoint mean (Yadav et al., default)\n"
    "                 code = the authors' order: elect on untrimmed tau, drop\n"
    "                 disagreeing entries, trim, divide by the models that agreed\n";

static int parse_double(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno == ERANGE || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

static int name_index(const char *s, const char *const *names, int n) {
    for (int i = 0; i < n; i++)
        if (!strcmp(s, names[i])) return i;
    return -1;
}

int merge_main(int argc, char **argv) {
    MergeArgs a = {0};
    a.density = 0.8;
    a.lambda = 1.0f;
    a.method = MERGE_TIES;
    a.order = TIES_ORDER_TIES;
    int got_density = 0, got_lambda = 0, got_order = 0;
    a.ckpts = calloc((size_t)(argc > 0 ? argc : 1), sizeof *a.ckpts);
    if (!a.ckpts) return rf_error("merge: out of memory");
    int rc = -1;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            fputs(MERGE_USAGE, stdout);
            rc = 0;
            goto done;
        }
        if (strncmp(o, "--", 2) != 0) {
            a.ckpts[a.K++] = argv[i];
            continue;
        }
        static const char *const with_value[] = {"--base", "--out", "--density", "--lambda", "--method",
                                                 "--order"};
        int w = name_index(o, with_value, 6);
        if (w < 0) {
            rf_error("merge: unknown option '%s' (see recfound merge --help)", o);
            goto done;
        }
        if (i + 1 >= argc) {
            rf_error("merge: option %s needs a value", o);
            goto done;
        }
        const char *v = argv[++i];
        double x;
        switch (w) {
        case 0: a.base = v; break;
        case 1: a.out = v; break;
        case 2:
            if (parse_double(v, &x) || !(x > 0 && x <= 1)) {
                rf_error("merge: --density must be a number in (0, 1], got '%s'", v);
                goto done;
            }
            a.density = x, got_density = 1;
            break;
        case 3:
            if (parse_double(v, &x) || fabs(x) > 3.4e38) {
                rf_error("merge: --lambda must be a finite number, got '%s'", v);
                goto done;
            }
            a.lambda = (float)x, got_lambda = 1;
            break;
        case 4:
            if ((a.method = name_index(v, METHOD_NAMES, 3)) < 0) {
                rf_error("merge: --method must be ties, mean or task-arithmetic, got '%s'", v);
                goto done;
            }
            break;
        default:
            if ((a.order = name_index(v, ORDER_NAMES, 2)) < 0) {
                rf_error("merge: --order must be ties or code, got '%s'", v);
                goto done;
            }
            got_order = 1;
            break;
        }
    }
    if (!a.base) {
        rf_error("merge: missing required option --base (see recfound merge --help)");
        goto done;
    }
    if (!a.out) {
        rf_error("merge: missing required option --out (see recfound merge --help)");
        goto done;
    }
    if (a.K < 1) {
        rf_error("merge: no checkpoint folders given (see recfound merge --help)");
        goto done;
    }
    /* An option the method would ignore is more likely a mistake than a wish. */
    if (a.method != MERGE_TIES && (got_density || got_order)) {
        rf_error("merge: --%s is used only by --method ties", got_density ? "density" : "order");
        goto done;
    }
    if (a.method == MERGE_MEAN && got_lambda) {
        rf_error("merge: --lambda is not used by --method mean (use task-arithmetic)");
        goto done;
    }
    if (rf_new_output(a.out, NULL)) goto done;
    rc = merge_run(&a);
done:
    free(a.ckpts);
    return rc;
}

/* ------------------------------------------------------------ benchmark */

/* The `small` preset's TMoLE adapters: 4 layers x q,k,v,o; hidden 256; 6
 * experts of rank 16 per projection; router Linear(512 -> 6); task table. */
enum { BM_LAYERS = 4, BM_EXPERTS = 6, BM_RANK = 16, BM_TASKDIM = 512, BM_TASKS = 14, BM_K = 5 };

typedef struct {
    StOut *t;
    char (*names)[128];
    float *data;
    int n;
    size_t total;
} BenchSet;

static void bench_free(BenchSet *s) {
    free(s->t), free(s->names), free(s->data);
}

/* The tensor table (names and shapes) with one flat buffer behind it. */
static int bench_tensors(BenchSet *s) {
    static const char *proj[4] = {"q", "k", "v", "o"};
    static const int pin[4] = {256, 256, 256, 256}, pout[4] = {256, 128, 128, 256};
    int cap = BM_LAYERS * 4 * (2 * BM_EXPERTS + 2) + 1;
    memset(s, 0, sizeof *s);
    s->t = calloc((size_t)cap, sizeof *s->t);
    s->names = calloc((size_t)cap, sizeof *s->names);
    if (!s->t || !s->names) return rf_error("bench-merge: out of memory");
    for (int l = 0; l < BM_LAYERS; l++)
        for (int p = 0; p < 4; p++) {
            char pre[80];
            snprintf(pre, sizeof pre, "base_model.model.model.layers.%d.self_attn.%s_proj", l, proj[p]);
            for (int j = 0; j < BM_EXPERTS; j++) {
                StOut *a = &s->t[s->n];
                snprintf(s->names[s->n], 128, "%s.lora_A.%d.weight", pre, j);
                a->ndim = 2, a->shape[0] = BM_RANK, a->shape[1] = pin[p];
                s->n++;
                StOut *b = &s->t[s->n];
                snprintf(s->names[s->n], 128, "%s.lora_B.%d.weight", pre, j);
                b->ndim = 2, b->shape[0] = pout[p], b->shape[1] = BM_RANK;
                s->n++;
            }
            StOut *w = &s->t[s->n];
            snprintf(s->names[s->n], 128, "%s.lora_route.weight", pre);
            w->ndim = 2, w->shape[0] = BM_EXPERTS, w->shape[1] = BM_TASKDIM;
            s->n++;
            StOut *bias = &s->t[s->n];
            snprintf(s->names[s->n], 128, "%s.lora_route.bias", pre);
            bias->ndim = 1, bias->shape[0] = BM_EXPERTS;
            s->n++;
        }
    StOut *e = &s->t[s->n];
    snprintf(s->names[s->n], 128, "task_embedding.weight");
    e->ndim = 2, e->shape[0] = BM_TASKS, e->shape[1] = BM_TASKDIM;
    s->n++;
    for (int i = 0; i < s->n; i++) {
        s->t[i].name = s->names[i];
        size_t numel = 1;
        for (int d = 0; d < s->t[i].ndim; d++) numel *= (size_t)s->t[i].shape[d];
        s->total += numel;
    }
    if (!(s->data = malloc(s->total * sizeof *s->data))) return rf_error("bench-merge: out of memory");
    size_t off = 0;
    for (int i = 0; i < s->n; i++) {
        s->t[i].data = s->data + off;
        size_t numel = 1;
        for (int d = 0; d < s->t[i].ndim; d++) numel *= (size_t)s->t[i].shape[d];
        off += numel;
    }
    return 0;
}

int bench_merge_main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: recfound bench-merge\n\n"
                   "Times `recfound merge` (TIES, best of 3, reading and writing included) of a base and\n"
                   "%d random checkpoints shaped like the small preset's TMoLE adapters, in a temporary\n"
                   "folder that is removed afterwards.\n",
                   BM_K);
            return 0;
        }
        return rf_error("bench-merge: unknown argument '%s' (see recfound bench-merge --help)", argv[i]);
    }
    const char *tmpdir = getenv("TMPDIR");
    char root[4096];
    snprintf(root, sizeof root, "%s/recfound-bench-merge-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    if (!mkdtemp(root)) return rf_error("%s: cannot create a temporary folder: %s", root, strerror(errno));

    enum { NDIR = BM_K + 2 };  /* base, c1..c5, merged */
    char *dirs[NDIR] = {0}, *files[NDIR] = {0};
    int rc = 0;
    for (int d = 0; d < NDIR && !rc; d++) {
        char leaf[16];
        if (d == 0) snprintf(leaf, sizeof leaf, "base");
        else if (d <= BM_K) snprintf(leaf, sizeof leaf, "c%d", d);
        else snprintf(leaf, sizeof leaf, "merged");
        dirs[d] = path_join(root, leaf);
        files[d] = dirs[d] ? path_join(dirs[d], "adapter_model.safetensors") : NULL;
        if (!files[d]) rc = rf_error("bench-merge: out of memory");
    }
    BenchSet s;
    if (!rc) rc = bench_tensors(&s);
    else memset(&s, 0, sizeof s);
    double best = INFINITY;
    if (!rc) {
        /* Step-0 values, then each checkpoint = base + N(0, 1e-3) updates. */
        Rng r;
        rng_seed(&r, 42);
        float *base = malloc(s.total * sizeof *base);
        if (!base) rc = rf_error("bench-merge: out of memory");
        for (size_t i = 0; !rc && i < s.total; i++) base[i] = 0.05f * rng_normal(&r);
        for (int d = 0; !rc && d <= BM_K; d++) {
            for (size_t i = 0; i < s.total; i++) s.data[i] = base[i] + (d ? 1e-3f * rng_normal(&r) : 0.0f);
            rc = rf_mkdirs(dirs[d]);
            if (!rc) rc = st_write(files[d], s.t, s.n);
        }
        free(base);
    }
    if (!rc) {
        char *ck[BM_K];
        for (int k = 0; k < BM_K; k++) ck[k] = dirs[k + 1];
        MergeArgs a = {dirs[0], dirs[NDIR - 1], ck, BM_K, MERGE_TIES, TIES_ORDER_TIES, 0.8, 1.0f, 1};
        for (int rep = 0; rep < 3 && !rc; rep++) {
            double t0 = rf_now();
            rc = merge_run(&a);
            double t = rf_now() - t0;
            if (t < best) best = t;
        }
    }
    if (!rc) printf("merge ties checkpoints=%d params=%zu seconds=%.4f\n", BM_K, s.total, best);
    for (int d = 0; d < NDIR; d++) {
        if (files[d]) unlink(files[d]);
        if (dirs[d]) rmdir(dirs[d]);
        free(files[d]), free(dirs[d]);
    }
    rmdir(root);
    bench_free(&s);
    return rc;
}
