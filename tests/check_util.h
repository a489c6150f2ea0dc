/*
 * check_util.h - helpers shared by the Check suites.
 *
 * allclose() compares two float arrays the numpy way (|a-b| <= atol + rtol|b|)
 * and, on failure, names the worst index, both values and the relative error.
 * nerr() is ggml's normalised error ||a-b||^2 / ||b||^2.
 */
#ifndef CHECK_UTIL_H
#define CHECK_UTIL_H
#include <check.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "recfound.h"

static inline double nerr(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return den > 0 ? num / den : num;
}

/* ck_assert that a ~= b elementwise; `what` names the tensor in the message. */
#define assert_allclose(a, b, n, rtol, atol, what) \
    allclose_check((a), (b), (n), (rtol), (atol), (what), __FILE__, __LINE__)

static inline void allclose_check(const float *a, const float *b, size_t n, double rtol, double atol,
                                  const char *what, const char *file, int line) {
    size_t worst = 0;
    double worst_excess = -1;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]), lim = atol + rtol * fabs((double)b[i]);
        if (!(d <= lim)) bad++;
        double excess = isnan(d) ? INFINITY : d - lim;
        if (excess > worst_excess) { worst_excess = excess; worst = i; }
    }
    if (bad) {
        double rel = fabs((double)a[worst] - b[worst]) / fmax(fabs((double)b[worst]), 1e-30);
        ck_abort_msg("%s:%d: %s: %d of %zu values differ; worst at [%zu]: got %.9g, want %.9g "
                     "(rel err %.3g, rtol %.1g, atol %.1g)",
                     file, line, what, bad, n, worst, a[worst], b[worst], rel, rtol, atol);
    }
}

/* rm -r of a test's own temporary folder. */
static inline void rm_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[4096];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if ((size_t)snprintf(p, sizeof p, "%s/%s", dir, e->d_name) >= sizeof p) continue;
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) rm_tree(p);
        else unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

/* Run a shell command line, capturing stdout and stderr into malloc'd
 * strings; returns its exit status (-1 when it did not exit normally). */
static inline int run_capture(const char *cmd, char **out, char **err) {
    char dir[] = "/tmp/rfrunXXXXXX", line[8192], po[64], pe[64];
    ck_assert(mkdtemp(dir) != NULL);
    snprintf(po, sizeof po, "%s/out", dir);
    snprintf(pe, sizeof pe, "%s/err", dir);
    ck_assert((size_t)snprintf(line, sizeof line, "( %s\n) >%s 2>%s", cmd, po, pe) < sizeof line);
    int status = system(line);
    size_t n;
    if (rf_read_file(po, out, &n)) *out = strdup("");
    if (rf_read_file(pe, err, &n)) *err = strdup("");
    unlink(po);
    unlink(pe);
    rmdir(dir);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The recfound binary under test: $RECFOUND_BIN (make check sets it) or ./recfound. */
static inline const char *recfound_bin(void) {
    const char *b = getenv("RECFOUND_BIN");
    return b ? b : "./recfound";
}

/* A tiny world, tokenizer and random tiny backbone in d/w, d/tok.json, d/base
 * (the cli and mpi suites train on them). */
static inline void tiny_world(const char *d) {
    const char *b = recfound_bin();
    char cmd[2048], *out, *err;
    ck_assert((size_t)snprintf(cmd, sizeof cmd,
                               "OMP_NUM_THREADS=2 %s synth --out %s/w --scale 0.003 --seed 5 && "
                               "OMP_NUM_THREADS=2 %s tokenizer train --data %s/w --vocab 400 --out %s/tok.json && "
                               "%s init --preset tiny --vocab 400 --out %s/base",
                               b, d, b, d, d, b, d) < sizeof cmd);
    int rc = run_capture(cmd, &out, &err);
    ck_assert_msg(rc == 0, "%s\nexit %d\n%s", cmd, rc, err);
    free(out);
    free(err);
}

/* Path of a shared/ file, or NULL when ../shared is absent (tests then skip). */
static inline const char *shared_path(const char *rel, char *buf, size_t n) {
    const char *root = getenv("RECFOUND_SHARED");
    snprintf(buf, n, "%s/%s", root ? root : "../shared", rel);
    FILE *f = fopen(buf, "rb");
    if (!f) return NULL;
    fclose(f);
    return buf;
}

/* ------------------------------------------------------------------------
 * Finite-difference checks of backward passes (as kann does): draw a random
 * direction d and compare the analytic <grad, d> with the central difference
 * (f(x + eps d) - f(x - eps d)) / (2 eps), where f is a scalar such as <out, R>
 * with a fixed random R.  The differences
 * at eps and eps/2 are combined by Richardson extrapolation, which removes the
 * eps^2 error term, so eps can stay large enough (1e-2) for float32 rounding
 * not to matter.  Errors are relative to max(|<grad,d>|, ||grad||), the scale of
 * a directional derivative, after forgiving the rounding floor of a float32
 * forward (see fd_rel_err).  A correct backward then agrees to ~1e-4; a wrong
 * one is off by O(1), and the bound FD_TOL = 2e-3 separates the two.
 */
#include "recfound.h"

#define FD_TOL 2e-3
#ifndef FD_EPS
#define FD_EPS 1e-2f
#endif

/* A bf16-weight copy of m (Model): each matrix rounded down to bf16 (its top
 * 16 bits) in dst, and m's own matrices set to the widened values, so the two
 * models hold exactly the same weights in their two representations. */
static inline void bf16_twin(Model *dst, Model *m) {
    ck_assert_int_eq(model_alloc_bf16(dst, &m->cfg), 0);
    for (int i = 0; i < m->n_params; i++) {
        float *src = m->params + m->spec[i].offset;
        if (m->spec[i].ndim == 1) {
            memcpy(model_float_view(dst, i), src, m->spec[i].numel * sizeof(float));
            continue;
        }
        for (size_t j = 0; j < m->spec[i].numel; j++) {
            uint32_t u;
            memcpy(&u, &src[j], sizeof u);
            dst->params16[m->spec[i].offset + j] = (uint16_t)(u >> 16);
            src[j] = bf16_to_float((uint16_t)(u >> 16));
        }
    }
}

static inline void fill_normal(float *x, size_t n, float scale, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = scale * rng_normal(&r);
}

static inline double dotd(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* f(x) is evaluated by fn(ctx); grad is d f / d x.  Returns the relative error
 * between the analytic and the numerical directional derivative. */
typedef double (*ScalarFn)(void *ctx);

static inline double fd_rel_err(ScalarFn fn, void *ctx, float *x, size_t n, const float *grad, uint64_t seed) {
    float *d = malloc(n * sizeof(float)), *x0 = malloc(n * sizeof(float));
    fill_normal(d, n, 1.0f, seed);
    memcpy(x0, x, n * sizeof(float));
    double D[2], f0;
    for (int k = 0; k < 2; k++) {
        float e = k ? FD_EPS / 2 : FD_EPS;
        for (size_t i = 0; i < n; i++) x[i] = x0[i] + e * d[i];
        double fp = fn(ctx);
        for (size_t i = 0; i < n; i++) x[i] = x0[i] - e * d[i];
        double fm = fn(ctx);
        D[k] = (fp - fm) / (2.0 * e);
    }
    memcpy(x, x0, n * sizeof(float));
    f0 = fn(ctx); /* also leaves the outputs of the unperturbed input behind */
    /* Richardson extrapolation cancels the eps^2 term of the central difference */
    double num = (4.0 * D[1] - D[0]) / 3.0, ana = dotd(grad, d, n);
    free(d);
    free(x0);
    /* <grad, d> for d ~ N(0, I) has the scale ||grad||: measuring against it keeps a
     * direction that happens to be nearly orthogonal to grad from reading as noise.
     * A float32 forward knows f only to ~FLT_EPSILON |f|, so no central difference
     * resolves a derivative below ~FLT_EPSILON |f| / eps: that much (times 4) of
     * the difference is forgiven as rounding. */
    double gnorm = sqrt(dotd(grad, grad, n));
    double floor_abs = 4.0 * FLT_EPSILON * fabs(f0) / (FD_EPS / 2);
    double excess = fabs(num - ana) - floor_abs;
    double err = (excess > 0 ? excess : 0) / fmax(fmax(fmax(fabs(num), fabs(ana)), gnorm), 1e-12);
    if (err > 0.5 * FD_TOL)
        fprintf(stderr, "finite difference: numerical %.8g, analytic %.8g (rounding floor %.2g)\n", num, ana, floor_abs);
    return err;
}

#define assert_fd(fn, ctx, x, n, grad, what) assert_fd_tol(fn, ctx, x, n, grad, what, FD_TOL)
#define assert_fd_tol(fn, ctx, x, n, grad, what, tol)                                         \
    do {                                                                                      \
        for (uint64_t seed_ = 1; seed_ <= 3; seed_++) {                                       \
            double e_ = fd_rel_err((fn), (ctx), (x), (n), (grad), seed_);                    \
            ck_assert_msg(e_ < (tol), "%s: finite-difference relative error %.3g (direction %d)", \
                          (what), e_, (int)seed_);                                            \
        }                                                                                     \
    } while (0)

#endif
