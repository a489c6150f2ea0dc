/*
 * test_merge.c - the "merge" Check suite (Model Merge, paper §4.4).
 *
 * Every expected tensor is worked out by hand in the comments next to it, on
 * dyadic numbers (0.5, 0.25, ...) so that float arithmetic is exact; the
 * random trimming test compares against a sort-based reference written here.
 * The command tests write checkpoint folders (F32 via st_write, BF16 by hand)
 * into a mkdtemp folder under /tmp.
 */
#include "check_util.h"
#include "recfound.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------ trimming */

START_TEST(test_keep_count) {
    ck_assert_uint_eq(ties_keep_count(4, 0.5), 2);
    ck_assert_uint_eq(ties_keep_count(6, 0.8), 4);   /* floor(4.8) */
    ck_assert_uint_eq(ties_keep_count(10, 0.7), 7);  /* 0.7 * 10 in double is 7, not 6.99.. */
    ck_assert_uint_eq(ties_keep_count(5, 1.0), 5);
    ck_assert_uint_eq(ties_keep_count(3, 0.2), 0);   /* floor(0.6) */
    ck_assert_uint_eq(ties_keep_count(0, 0.8), 0);
}
END_TEST

START_TEST(test_trim_basic) {
    /* |tau| = [0.1, 0.5, 0.3, 0.2]; density 0.5 keeps 2: -0.5 and 0.3. */
    float tau[4] = {0.1f, -0.5f, 0.3f, -0.2f}, scratch[4];
    ties_trim(tau, 4, 0.5, scratch);
    const float want[4] = {0, -0.5f, 0.3f, 0};
    assert_allclose(tau, want, 4, 0, 0, "trim [0.1,-0.5,0.3,-0.2] d=0.5");
    /* density 0.75 keeps 3: the smallest, 0.1, goes. */
    float tau2[4] = {0.1f, -0.5f, 0.3f, -0.2f};
    ties_trim(tau2, 4, 0.75, scratch);
    const float want2[4] = {0, -0.5f, 0.3f, -0.2f};
    assert_allclose(tau2, want2, 4, 0, 0, "trim d=0.75");
    /* density 1 keeps everything; density 0.2 of 4 keeps floor(0.8) = 0. */
    float tau3[4] = {0.1f, -0.5f, 0.3f, -0.2f};
    ties_trim(tau3, 4, 1.0, scratch);
    const float want3[4] = {0.1f, -0.5f, 0.3f, -0.2f};
    assert_allclose(tau3, want3, 4, 0, 0, "trim d=1");
    ties_trim(tau3, 4, 0.2, scratch);
    const float zero[4] = {0, 0, 0, 0};
    assert_allclose(tau3, zero, 4, 0, 0, "trim d=0.2 keeps none");
}
END_TEST

START_TEST(test_trim_ties) {
    float scratch[8];
    /* m = 2, threshold 0.2, nothing above it: the two lowest indices of the
     * three 0.2s are kept (0 and 1), index 2 goes. */
    float a[4] = {0.2f, -0.2f, 0.2f, 0.1f};
    ties_trim(a, 4, 0.5, scratch);
    const float wa[4] = {0.2f, -0.2f, 0, 0};
    assert_allclose(a, wa, 4, 0, 0, "ties all at threshold");
    /* m = floor(0.6 * 5) = 3; sorted |tau| 0.5, 0.3, 0.1, 0.1, 0.1: threshold
     * 0.1, two above (0.5 at 4, 0.3 at 0), one tie left -> index 1. */
    float b[5] = {0.3f, 0.1f, -0.1f, 0.1f, 0.5f};
    ties_trim(b, 5, 0.6, scratch);
    const float wb[5] = {0.3f, 0.1f, 0, 0, 0.5f};
    assert_allclose(b, wb, 5, 0, 0, "one tie slot");
    /* zeros: m = 2 of [0, 0, 0.2, 0]: 0.2, then the threshold is 0 (a kept
     * zero changes nothing). */
    float c[4] = {0, 0, 0.2f, 0};
    ties_trim(c, 4, 0.5, scratch);
    const float wc[4] = {0, 0, 0.2f, 0};
    assert_allclose(c, wc, 4, 0, 0, "zeros");
    /* -0.0 and 0.0 have the same magnitude. */
    float d[3] = {-0.0f, 0.25f, 0.0f};
    ties_trim(d, 3, 0.67, scratch);  /* m = floor(2.01) = 2: 0.25 and index 0 */
    ck_assert_float_eq(d[1], 0.25f);
    ck_assert_float_eq(d[2], 0.0f);
}
END_TEST

/* Reference trim: sort indices by (|tau| descending, index ascending), keep
 * the first m. */
static const float *g_ref_abs;
static int cmp_ref(const void *x, const void *y) {
    size_t i = *(const size_t *)x, j = *(const size_t *)y;
    float a = g_ref_abs[i], b = g_ref_abs[j];
    if (a != b) return a > b ? -1 : 1;
    return i < j ? -1 : 1;
}

START_TEST(test_trim_random_vs_sort) {
    uint32_t x = 2024;
    enum { NMAX = 700 };
    float tau[NMAX], ref[NMAX], absv[NMAX], scratch[NMAX];
    size_t idx[NMAX];
    for (int trial = 0; trial < 300; trial++) {
        x = x * 1664525u + 1013904223u;
        size_t n = 1 + (x >> 8) % NMAX;
        x = x * 1664525u + 1013904223u;
        double density = ((x >> 8) % 101) / 100.0;
        /* few distinct values (many ties), or many (trial odd) */
        int levels = trial % 2 ? 100000 : 7;
        for (size_t i = 0; i < n; i++) {
            x = x * 1664525u + 1013904223u;
            int v = (int)((x >> 8) % (2 * levels + 1)) - levels;
            tau[i] = ref[i] = v * 0.125f;
            absv[i] = fabsf(tau[i]);
            idx[i] = i;
        }
        size_t m = (size_t)floor(density * (double)n);
        g_ref_abs = absv;
        qsort(idx, n, sizeof *idx, cmp_ref);
        for (size_t r = m; r < n; r++) ref[idx[r]] = 0;
        ties_trim(tau, n, density, scratch);
        char what[64];
        snprintf(what, sizeof what, "trial %d n=%zu density %.2f", trial, n, density);
        assert_allclose(tau, ref, n, 0, 0, what);
    }
}
END_TEST

/* ------------------------------------------------------------ election, mean */

START_TEST(test_elect) {
    /* sums: 0.3 - 0.1 = 0.2 (+); -0.2 - 0.4 = -0.6 (-); 0.1 - 0.1 = 0 (none);
     * 0 + 0 = 0 (none). */
    const float t1[4] = {0.3f, -0.2f, 0.1f, 0}, t2[4] = {-0.1f, -0.4f, -0.1f, 0};
    const float *tau[2] = {t1, t2};
    signed char s[4];
    ties_elect(s, tau, 2, 4);
    ck_assert_int_eq(s[0], 1);
    ck_assert_int_eq(s[1], -1);
    ck_assert_int_eq(s[2], 0);
    ck_assert_int_eq(s[3], 0);
    /* majority by mass, not by count: +0.1 +0.1 -0.5 -> -0.3 (-). */
    const float u1[1] = {0.1f}, u2[1] = {0.1f}, u3[1] = {-0.5f};
    const float *u[3] = {u1, u2, u3};
    ties_elect(s, u, 3, 1);
    ck_assert_int_eq(s[0], -1);
}
END_TEST

START_TEST(test_disjoint_mean) {
    /* sign [+, -, +, 0]:
     *   [0]: only 0.3 agrees -> 0.3;  [1]: (-0.2 - 0.4) / 2 = -0.3;
     *   [2]: 0.5 agrees, the 0 is not counted -> 0.5;  [3]: no sign -> 0. */
    const float t1[4] = {0.3f, -0.2f, 0.5f, 0.25f}, t2[4] = {-0.1f, -0.4f, 0, -0.25f};
    const float *tau[2] = {t1, t2};
    const signed char s[4] = {1, -1, 1, 0};
    float m[4];
    ties_disjoint_mean(m, tau, s, 2, 4);
    const float want[4] = {0.3f, -0.3f, 0.5f, 0};
    assert_allclose(m, want, 4, 1e-7, 0, "disjoint mean");
}
END_TEST

/* ------------------------------------------------------------ ties_merge */

/* The shared conflict case: K = 3, n = 4, density 0.5 (keep 2 of 4).
 *   base = [1, -1, 0.5, 2]
 *   tau1 = [ 0.5,  -0.25,  0.125, -1.0 ]  c1 = base + tau1 = [1.5, -1.25, 0.625, 1.0]
 *   tau2 = [-0.75, -0.5,   0.25,   0.25]  c2 = [0.25, -1.5, 0.75, 2.25]
 *   tau3 = [ 0.5,   0.25, -0.125, -0.5 ]  c3 = [1.5, -0.75, 0.375, 1.5]          */
static const float BASE[4] = {1.0f, -1.0f, 0.5f, 2.0f};
static const float C1[4] = {1.5f, -1.25f, 0.625f, 1.0f};
static const float C2[4] = {0.25f, -1.5f, 0.75f, 2.25f};
static const float C3[4] = {1.5f, -0.75f, 0.375f, 1.5f};

START_TEST(test_ties_canonical_conflict) {
    /* trim (top 2 by |tau|):
     *   tau1 -> [0.5, 0, 0, -1.0]     (1.0 at 3, 0.5 at 0)
     *   tau2 -> [-0.75, -0.5, 0, 0]   (0.75 at 0, 0.5 at 1)
     *   tau3 -> [0.5, 0, 0, -0.5]     (0.5 at 0 and 3)
     * elect: sums [0.5 - 0.75 + 0.5, -0.5, 0, -1.5] = [0.25, -0.5, 0, -1.5] -> [+, -, 0, -]
     * disjoint mean: [ (0.5+0.5)/2, -0.5/1, 0, (-1.0-0.5)/2 ] = [0.5, -0.5, 0, -0.75]
     * out = base + merged = [1.5, -1.5, 0.5, 1.25] */
    const float *ck[3] = {C1, C2, C3};
    float out[4];
    ck_assert_int_eq(ties_merge(out, BASE, ck, 3, 4, 0.5, 1.0f, TIES_ORDER_TIES), 0);
    const float want[4] = {1.5f, -1.5f, 0.5f, 1.25f};
    assert_allclose(out, want, 4, 0, 0, "canonical TIES");
}
END_TEST

START_TEST(test_ties_lambda) {
    /* merged = [0.5, -0.5, 0, -0.75] (previous test); lambda 0.5:
     *   base + 0.5 merged = [1.25, -1.25, 0.5, 1.625]
     * lambda 2: [2, -2, 0.5, 0.5] */
    const float *ck[3] = {C1, C2, C3};
    float out[4];
    ck_assert_int_eq(ties_merge(out, BASE, ck, 3, 4, 0.5, 0.5f, TIES_ORDER_TIES), 0);
    const float w1[4] = {1.25f, -1.25f, 0.5f, 1.625f};
    assert_allclose(out, w1, 4, 0, 0, "lambda 0.5");
    ck_assert_int_eq(ties_merge(out, BASE, ck, 3, 4, 0.5, 2.0f, TIES_ORDER_TIES), 0);
    const float w2[4] = {2.0f, -2.0f, 0.5f, 0.5f};
    assert_allclose(out, w2, 4, 0, 0, "lambda 2");
}
END_TEST

START_TEST(test_ties_code_order) {
    /* the authors' order on the same case, density 0.5:
     * elect on untrimmed sums:
     *   [0.5-0.75+0.5, -0.25-0.5+0.25, 0.125+0.25-0.125, -1+0.25-0.5]
     *   = [0.25, -0.5, 0.25, -1.25] -> [+, -, +, -]
     * agreeing models (untrimmed): [0]: tau1, tau3 = 2; [1]: tau1, tau2 = 2;
     *   [2]: tau1, tau2 = 2; [3]: tau1, tau3 = 2
     * drop disagreeing: tau1 = [0.5, -0.25, 0.125, -1], tau2 = [0, -0.5, 0.25, 0],
     *   tau3 = [0.5, 0, 0, -0.5]
     * trim top 2: tau1 -> [0.5, 0, 0, -1]; tau2 -> [0, -0.5, 0.25, 0]; tau3 -> [0.5, 0, 0, -0.5]
     * sum [1, -0.5, 0.25, -1.5] / counts 2 = [0.5, -0.25, 0.125, -0.75]
     * out = [1.5, -1.25, 0.625, 1.25]  (canonical: [1.5, -1.5, 0.5, 1.25]) */
    const float *ck[3] = {C1, C2, C3};
    float out[4];
    ck_assert_int_eq(ties_merge(out, BASE, ck, 3, 4, 0.5, 1.0f, TIES_ORDER_CODE), 0);
    const float want[4] = {1.5f, -1.25f, 0.625f, 1.25f};
    assert_allclose(out, want, 4, 0, 0, "code order");
    /* The header's worked example: tau1 = [0.4, 0.1], tau2 = [0.2, -0.3], base 0:
     * canonical [0.4, -0.3]; code [0.4/2, -0.3/1] = [0.2, -0.3]. */
    const float z[2] = {0, 0}, a1[2] = {0.4f, 0.1f}, a2[2] = {0.2f, -0.3f};
    const float *ca[2] = {a1, a2};
    ck_assert_int_eq(ties_merge(out, z, ca, 2, 2, 0.5, 1.0f, TIES_ORDER_CODE), 0);
    const float wc[2] = {0.2f, -0.3f};
    assert_allclose(out, wc, 2, 1e-7, 0, "code order, 2x2");
    ck_assert_int_eq(ties_merge(out, z, ca, 2, 2, 0.5, 1.0f, TIES_ORDER_TIES), 0);
    const float wt[2] = {0.4f, -0.3f};
    assert_allclose(out, wt, 2, 1e-7, 0, "canonical, 2x2");
}
END_TEST

START_TEST(test_ties_single_checkpoint) {
    /* K = 1: the sign always agrees, the mean of one value is itself, so the
     * merge is the trimmed checkpoint.  tau = [0.5, -0.25, 0.125, -1, 0.75],
     * density 0.6 keeps 3: -1, 0.75, 0.5 -> out = base + [0.5, 0, 0, -1, 0.75]. */
    const float base[5] = {0, 1, 2, 3, 4};
    const float c[5] = {0.5f, 0.75f, 2.125f, 2.0f, 4.75f};
    const float *ck[1] = {c};
    float out[5];
    const float want[5] = {0.5f, 1.0f, 2.0f, 2.0f, 4.75f};
    ck_assert_int_eq(ties_merge(out, base, ck, 1, 5, 0.6, 1.0f, TIES_ORDER_TIES), 0);
    assert_allclose(out, want, 5, 0, 0, "single checkpoint, canonical");
    ck_assert_int_eq(ties_merge(out, base, ck, 1, 5, 0.6, 1.0f, TIES_ORDER_CODE), 0);
    assert_allclose(out, want, 5, 0, 0, "single checkpoint, code");
}
END_TEST

START_TEST(test_ties_density1_agree_is_mean) {
    /* every tau_k non-zero and of one sign per entry, density 1: TIES = mean.
     *   tau1 = [0.5, -0.25, 1], tau2 = [0.25, -0.75, 2] -> mean [0.375, -0.5, 1.5]
     *   base = [1, 1, 1] -> [1.375, 0.5, 2.5] */
    const float base[3] = {1, 1, 1}, c1[3] = {1.5f, 0.75f, 2.0f}, c2[3] = {1.25f, 0.25f, 3.0f};
    const float *ck[2] = {c1, c2};
    const float want[3] = {1.375f, 0.5f, 2.5f};
    float out[3];
    ck_assert_int_eq(ties_merge(out, base, ck, 2, 3, 1.0, 1.0f, TIES_ORDER_TIES), 0);
    assert_allclose(out, want, 3, 0, 0, "density 1, agreeing = mean");
    ck_assert_int_eq(ties_merge(out, base, ck, 2, 3, 1.0, 1.0f, TIES_ORDER_CODE), 0);
    assert_allclose(out, want, 3, 0, 0, "density 1, agreeing = mean (code)");
    mean_merge(out, base, ck, 2, 3);
    assert_allclose(out, want, 3, 0, 0, "mean_merge");
    /* all agree, K = 3: tau = [1, -2], [2, -4], [3, -6] -> [2, -4] */
    const float z[2] = {0, 0}, a[2] = {1, -2}, b[2] = {2, -4}, c[2] = {3, -6};
    const float *ck3[3] = {a, b, c};
    float o2[2];
    ck_assert_int_eq(ties_merge(o2, z, ck3, 3, 2, 1.0, 1.0f, TIES_ORDER_TIES), 0);
    const float w2[2] = {2, -4};
    assert_allclose(o2, w2, 2, 0, 0, "all agree");
}
END_TEST

START_TEST(test_ties_zeros) {
    /* [0]: tau 0.5 and 0 -> disjoint mean counts only the non-zero: 0.5 (not 0.25)
     * [1]: both 0 -> 0
     * [2]: 0.5 and -0.5: sum exactly 0 elects no sign -> 0 (both orders)
     * base = [2, 2, 2] -> [2.5, 2, 2] */
    const float base[3] = {2, 2, 2}, c1[3] = {2.5f, 2, 2.5f}, c2[3] = {2, 2, 1.5f};
    const float *ck[2] = {c1, c2};
    const float want[3] = {2.5f, 2, 2};
    float out[3];
    ck_assert_int_eq(ties_merge(out, base, ck, 2, 3, 1.0, 1.0f, TIES_ORDER_TIES), 0);
    assert_allclose(out, want, 3, 0, 0, "zeros, canonical");
    /* code order: [0] agreeing count is 1 (the 0 does not agree with +) -> 0.5 */
    ck_assert_int_eq(ties_merge(out, base, ck, 2, 3, 1.0, 1.0f, TIES_ORDER_CODE), 0);
    assert_allclose(out, want, 3, 0, 0, "zeros, code");
    /* all checkpoints equal the base: out = base */
    const float *same[2] = {base, base};
    ck_assert_int_eq(ties_merge(out, base, same, 2, 3, 0.8, 1.0f, TIES_ORDER_TIES), 0);
    assert_allclose(out, base, 3, 0, 0, "no change");
}
END_TEST

START_TEST(test_mean_and_task_arithmetic) {
    /* base [1, -1]; c1 [2, 0] (tau [1, 1]); c2 [4, -3] (tau [3, -2])
     * mean: base + [4, -1]/2 = [3, -1.5]
     * task arithmetic lambda 1: base + [4, -1] = [5, -2]; lambda 0.5: [3, -1.5] */
    const float base[2] = {1, -1}, c1[2] = {2, 0}, c2[2] = {4, -3};
    const float *ck[2] = {c1, c2};
    float out[2];
    mean_merge(out, base, ck, 2, 2);
    const float wm[2] = {3, -1.5f};
    assert_allclose(out, wm, 2, 0, 0, "mean");
    task_arithmetic_merge(out, base, ck, 2, 2, 1.0f);
    const float wt[2] = {5, -2};
    assert_allclose(out, wt, 2, 0, 0, "task arithmetic lambda 1");
    task_arithmetic_merge(out, base, ck, 2, 2, 0.5f);
    assert_allclose(out, wm, 2, 0, 0, "task arithmetic lambda 0.5");
}
END_TEST

/* ------------------------------------------------------------ the command */

static char g_dir[64];

static void tmp_setup(void) {
    strcpy(g_dir, "/tmp/rf_merge_XXXXXX");
    if (!mkdtemp(g_dir)) ck_abort_msg("mkdtemp failed");
}

static void tmp_teardown(void) {
    if (g_dir[0]) rm_tree(g_dir);
}

static char *tpath(char *buf, const char *rel) {
    snprintf(buf, 256, "%s/%s", g_dir, rel);
    return buf;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot create %s", path);
    fputs(text, f);
    fclose(f);
}

/* A checkpoint folder with F32 tensors. */
static void write_ckpt(const char *rel, const StOut *t, int n) {
    char dir[256], file[300];
    tpath(dir, rel);
    ck_assert_int_eq(rf_mkdirs(dir), 0);
    snprintf(file, sizeof file, "%s/adapter_model.safetensors", dir);
    ck_assert_msg(st_write(file, t, n) == 0, "%s", rf_last_error());
}

/* The two tensors of the command test.  a.weight [2, 2] is the conflict case
 * above (density 0.5 -> [1.5, -1.5, 0.5, 1.25]).  b.bias [3]: base 0, keep
 * floor(1.5) = 1 per checkpoint:
 *   c1 [1, 0.5, -0.25]      -> [1, 0, 0]
 *   c2 [0.5, -0.25, -0.25]  -> [0.5, 0, 0]
 *   c3 [-0.25, 0.25, 0.125] -> tie of 0.25 at 0 and 1, lower index -> [-0.25, 0, 0]
 *   elect: 1 + 0.5 - 0.25 = 1.25 (+); mean of 1 and 0.5 = 0.75 -> [0.75, 0, 0] */
static const float B0[3] = {0, 0, 0}, B1[3] = {1, 0.5f, -0.25f}, B2[3] = {0.5f, -0.25f, -0.25f},
                   B3[3] = {-0.25f, 0.25f, 0.125f};

static void out_tensors(StOut *t, const float *a, const float *b) {
    memset(t, 0, 2 * sizeof *t);
    t[0].name = "a.weight", t[0].ndim = 2, t[0].shape[0] = 2, t[0].shape[1] = 2, t[0].data = a;
    t[1].name = "b.bias", t[1].ndim = 1, t[1].shape[0] = 3, t[1].data = b;
}

static uint16_t bf16_bits(float x) {  /* exact for these values: truncation */
    uint32_t u;
    memcpy(&u, &x, 4);
    return (uint16_t)(u >> 16);
}

/* c2 stored as BF16, written byte by byte, with b.bias first in the file. */
static void write_bf16_c2(void) {
    char dir[256], file[300];
    tpath(dir, "c2");
    ck_assert_int_eq(rf_mkdirs(dir), 0);
    snprintf(file, sizeof file, "%s/adapter_model.safetensors", dir);
    const char *hdr = "{\"b.bias\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[0,6]},"
                      "\"a.weight\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[6,14]}}";
    uint64_t hl = strlen(hdr);
    unsigned char buf[512];
    size_t k = 0;
    for (int i = 0; i < 8; i++) buf[k++] = (unsigned char)(hl >> (8 * i));
    memcpy(buf + k, hdr, hl);
    k += hl;
    for (int i = 0; i < 3; i++) {
        uint16_t h = bf16_bits(B2[i]);
        buf[k++] = (unsigned char)h, buf[k++] = (unsigned char)(h >> 8);
    }
    for (int i = 0; i < 4; i++) {
        uint16_t h = bf16_bits(C2[i]);
        buf[k++] = (unsigned char)h, buf[k++] = (unsigned char)(h >> 8);
    }
    FILE *f = fopen(file, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(buf, 1, k, f), k);
    fclose(f);
}

static void write_good_set(void) {
    StOut t[2];
    out_tensors(t, BASE, B0);
    write_ckpt("base", t, 2);
    out_tensors(t, C1, B1);
    write_ckpt("c1", t, 2);
    write_bf16_c2();
    out_tensors(t, C3, B3);
    write_ckpt("c3", t, 2);
    char p[256];
    write_text(tpath(p, "base/adapter_config.json"), "{\"from\": \"base\"}");
    write_text(tpath(p, "c2/adapter_config.json"), "{\"from\": \"c2\", \"r\": 16}\n");
    write_text(tpath(p, "c3/adapter_config.json"), "{\"from\": \"c3\"}");
}

static int run_merge(const char *out_rel, const char *extra1, const char *extra2, const char *extra3,
                     const char *extra4) {
    char base[256], c1[256], c2[256], c3[256], out[256];
    char *argv[16] = {"merge", "--base", tpath(base, "base"), tpath(c1, "c1"), tpath(c2, "c2"),
                      tpath(c3, "c3"), "--out", tpath(out, out_rel)};
    int argc = 8;
    const char *extra[4] = {extra1, extra2, extra3, extra4};
    for (int i = 0; i < 4; i++)
        if (extra[i]) argv[argc++] = (char *)extra[i];
    rf_clear_error();
    return merge_main(argc, argv);
}

static void read_out(const char *rel, float *a, float *b) {
    char p[256];
    StFile f;
    ck_assert_msg(st_open(&f, tpath(p, rel)) == 0, "%s", rf_last_error());
    ck_assert_int_eq(f.n, 2);
    /* the base's order, F32 */
    ck_assert_str_eq(f.tensors[0].name, "a.weight");
    ck_assert_str_eq(f.tensors[1].name, "b.bias");
    ck_assert_int_eq(f.tensors[0].dtype, ST_F32);
    ck_assert_int_eq(f.tensors[0].ndim, 2);
    ck_assert_int_eq(f.tensors[0].shape[0], 2);
    ck_assert_int_eq(f.tensors[0].shape[1], 2);
    ck_assert_int_eq(f.tensors[1].ndim, 1);
    ck_assert_int_eq(f.tensors[1].shape[0], 3);
    ck_assert_int_eq(st_read_f32(&f, &f.tensors[0], a), 0);
    ck_assert_int_eq(st_read_f32(&f, &f.tensors[1], b), 0);
    st_close(&f);
}

START_TEST(test_cmd_ties) {
    write_good_set();
    ck_assert_msg(run_merge("out/merged", "--density", "0.5", NULL, NULL) == 0, "%s", rf_last_error());
    float a[4], b[3];
    read_out("out/merged/adapter_model.safetensors", a, b);
    const float wa[4] = {1.5f, -1.5f, 0.5f, 1.25f}, wb[3] = {0.75f, 0, 0};
    assert_allclose(a, wa, 4, 0, 0, "a.weight");
    assert_allclose(b, wb, 3, 0, 0, "b.bias");
    /* adapter_config.json: c1 has none, so c2's, byte for byte */
    char p[256], *text;
    size_t len;
    ck_assert_int_eq(rf_read_file(tpath(p, "out/merged/adapter_config.json"), &text, &len), 0);
    ck_assert_str_eq(text, "{\"from\": \"c2\", \"r\": 16}\n");
    free(text);
    /* no temporary file left behind */
    DIR *d = opendir(tpath(p, "out/merged"));
    struct dirent *e;
    int files = 0;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') files++;
    closedir(d);
    ck_assert_int_eq(files, 2);
}
END_TEST

/* Without --density: the default 0.8 (the authors' top 80%).
 * a.weight keeps floor(3.2) = 3 of each tau (test_ties_canonical_conflict's):
 *   tau1 -> [0.5, -0.25, 0, -1];  tau2 -> [-0.75, -0.5, 0.25, 0] (0.25 twice:
 *   the lower index stays);  tau3 -> [0.5, 0.25, 0, -0.5]
 *   signs of the sums [0.25, -0.5, 0.25, -1.5]: +, -, +, -
 *   means [1/2, -0.75/2, 0.25, -1.5/2] -> out [1.5, -1.375, 0.75, 1.25]
 * b.bias keeps floor(2.4) = 2: [1, 0.5, 0], [0.5, -0.25, 0], [-0.25, 0.25, 0];
 *   sums [1.25, 0.5, 0] -> means [0.75, 0.375, 0] */
START_TEST(test_cmd_default_density) {
    write_good_set();
    ck_assert_msg(run_merge("dflt", NULL, NULL, NULL, NULL) == 0, "%s", rf_last_error());
    float a[4], b[3];
    read_out("dflt/adapter_model.safetensors", a, b);
    const float wa[4] = {1.5f, -1.375f, 0.75f, 1.25f}, wb[3] = {0.75f, 0.375f, 0};
    assert_allclose(a, wa, 4, 0, 0, "a.weight, default density");
    assert_allclose(b, wb, 3, 0, 0, "b.bias, default density");
}
END_TEST

START_TEST(test_cmd_other_methods) {
    write_good_set();
    float a[4], b[3];
    /* code order: a.weight [1.5, -1.25, 0.625, 1.25] (worked above).  b.bias:
     * untrimmed sums [1.25, 0.5, -0.375] -> [+, +, -]; agreeing counts
     * [c1,c2 = 2; c1,c3 = 2; c1,c2 = 2]; after dropping: c1 [1, 0.5, -0.25],
     * c2 [0.5, 0, -0.25], c3 [0, 0.25, 0]; top 1: [1,0,0], [0.5,0,0], [0,0.25,0]
     * -> [1.5/2, 0.25/2, 0] = [0.75, 0.125, 0] */
    ck_assert_msg(run_merge("code", "--density", "0.5", "--order", "code") == 0, "%s", rf_last_error());
    read_out("code/adapter_model.safetensors", a, b);
    const float ca[4] = {1.5f, -1.25f, 0.625f, 1.25f}, cb[3] = {0.75f, 0.125f, 0};
    assert_allclose(a, ca, 4, 0, 0, "code a.weight");
    assert_allclose(b, cb, 3, 0, 0, "code b.bias");
    /* mean: a = base + (tau1 + tau2 + tau3)/3 = base + [0.25, -0.5, 0.25, -1.25]/3
     *        = [1.0833333, -1.1666667, 0.5833333, 1.5833333]
     *      b = [1.25, 0.5, -0.375]/3 = [0.4166667, 0.1666667, -0.125] */
    ck_assert_msg(run_merge("mean", "--method", "mean", NULL, NULL) == 0, "%s", rf_last_error());
    read_out("mean/adapter_model.safetensors", a, b);
    const float ma[4] = {1.0833333f, -1.1666667f, 0.5833333f, 1.5833333f};
    const float mb[3] = {0.4166667f, 0.1666667f, -0.125f};
    assert_allclose(a, ma, 4, 1e-6, 1e-7, "mean a.weight");
    assert_allclose(b, mb, 3, 1e-6, 1e-7, "mean b.bias");
    /* task arithmetic, lambda 2: a = base + 2 [0.25, -0.5, 0.25, -1.25] = [1.5, -2, 1, -0.5];
     * b = 2 [1.25, 0.5, -0.375] = [2.5, 1, -0.75] */
    ck_assert_msg(run_merge("ta", "--method", "task-arithmetic", "--lambda", "2") == 0, "%s", rf_last_error());
    read_out("ta/adapter_model.safetensors", a, b);
    const float ta[4] = {1.5f, -2, 1, -0.5f}, tb[3] = {2.5f, 1, -0.75f};
    assert_allclose(a, ta, 4, 0, 0, "task-arithmetic a.weight");
    assert_allclose(b, tb, 3, 0, 0, "task-arithmetic b.bias");
}
END_TEST

/* The last error must name both the file and the tensor, and nothing of
 * --out may exist. */
static void expect_failure(const char *file_rel, const char *tensor, const char *what) {
    char p[256], q[256];
    int rc = run_merge("new/out", NULL, NULL, NULL, NULL);
    ck_assert_msg(rc != 0, "%s: merge succeeded", what);
    const char *err = rf_last_error();
    ck_assert_msg(strstr(err, tpath(p, file_rel)) != NULL, "%s: error does not name %s: %s", what, p, err);
    ck_assert_msg(strstr(err, tensor) != NULL, "%s: error does not name '%s': %s", what, tensor, err);
    ck_assert_msg(strchr(err, '\n') == NULL, "%s: error is not one line", what);
    struct stat st;
    ck_assert_msg(stat(tpath(q, "new"), &st) != 0 && errno == ENOENT, "%s: --out's folder was created", what);
}

START_TEST(test_cmd_shape_mismatch) {
    write_good_set();
    /* c3's a.weight as [4] instead of [2, 2] */
    StOut t[2];
    out_tensors(t, C3, B3);
    t[0].ndim = 1, t[0].shape[0] = 4;
    write_ckpt("c3", t, 2);
    expect_failure("c3/adapter_model.safetensors", "a.weight", "shape [4] vs [2, 2]");
    ck_assert_ptr_nonnull(strstr(rf_last_error(), "[4]"));
    ck_assert_ptr_nonnull(strstr(rf_last_error(), "[2, 2]"));
}
END_TEST

START_TEST(test_cmd_missing_and_extra) {
    write_good_set();
    StOut t[3];
    out_tensors(t, C1, B1);
    write_ckpt("c1", t, 1);  /* c1 without b.bias */
    expect_failure("c1/adapter_model.safetensors", "b.bias", "missing tensor");
    out_tensors(t, C1, B1);
    write_ckpt("c1", t, 2);  /* repaired; c3 gets an extra tensor */
    out_tensors(t, C3, B3);
    t[2] = t[1];
    t[2].name = "extra.weight";
    write_ckpt("c3", t, 3);
    expect_failure("c3/adapter_model.safetensors", "extra.weight", "extra tensor");
}
END_TEST

START_TEST(test_cmd_not_finite) {
    write_good_set();
    float bad[3] = {1, NAN, 0};
    StOut t[2];
    out_tensors(t, C1, bad);
    write_ckpt("c1", t, 2);
    expect_failure("c1/adapter_model.safetensors", "b.bias", "NaN");
}
END_TEST

START_TEST(test_cmd_arguments) {
    write_good_set();
    char p[256];
    struct stat st;
    ck_assert_int_ne(run_merge("x", "--density", "0", NULL, NULL), 0);
    ck_assert_ptr_nonnull(strstr(rf_last_error(), "--density"));
    ck_assert_int_ne(run_merge("x", "--density", "1.5", NULL, NULL), 0);
    ck_assert_int_ne(run_merge("x", "--method", "slerp", NULL, NULL), 0);
    ck_assert_int_ne(run_merge("x", "--order", "random", NULL, NULL), 0);
    ck_assert_int_ne(run_merge("x", "--method", "mean", "--lambda", "2"), 0);
    ck_assert_int_ne(run_merge("x", "--method", "mean", "--density", "0.5"), 0);
    ck_assert_int_ne(run_merge("x", "--bogus", NULL, NULL, NULL), 0);
    ck_assert_ptr_nonnull(strstr(rf_last_error(), "--bogus"));
    ck_assert_int_ne(run_merge("x", "--lambda", NULL, NULL, NULL), 0);
    ck_assert_msg(stat(tpath(p, "x"), &st) != 0, "--out created after an argument error");
    char *noargs[] = {"merge", "--base", tpath(p, "base"), "--out", "/tmp/never"};
    ck_assert_int_ne(merge_main(5, noargs), 0);
    char *nobase[] = {"merge", tpath(p, "c1"), "--out", "/tmp/never"};
    ck_assert_int_ne(merge_main(4, nobase), 0);
    ck_assert_ptr_nonnull(strstr(rf_last_error(), "--base"));
    char *help[] = {"merge", "--help"};
    ck_assert_int_eq(merge_main(2, help), 0);
    /* a missing checkpoint folder names its file */
    char *gone[] = {"merge", "--base", tpath(p, "base"), "/tmp/rf_merge_no_such_dir", "--out", "/tmp/never"};
    ck_assert_int_ne(merge_main(6, gone), 0);
    ck_assert_ptr_nonnull(strstr(rf_last_error(), "/tmp/rf_merge_no_such_dir/adapter_model.safetensors"));
}
END_TEST

START_TEST(test_bench_runs) {
    char *argv[] = {"bench-merge"};
    ck_assert_msg(bench_merge_main(1, argv) == 0, "%s", rf_last_error());
}
END_TEST

Suite *merge_suite(void) {
    Suite *s = suite_create("merge");
    TCase *core = tcase_create("core");
    tcase_add_test(core, test_keep_count);
    tcase_add_test(core, test_trim_basic);
    tcase_add_test(core, test_trim_ties);
    tcase_add_test(core, test_trim_random_vs_sort);
    tcase_add_test(core, test_elect);
    tcase_add_test(core, test_disjoint_mean);
    tcase_add_test(core, test_ties_canonical_conflict);
    tcase_add_test(core, test_ties_lambda);
    tcase_add_test(core, test_ties_code_order);
    tcase_add_test(core, test_ties_single_checkpoint);
    tcase_add_test(core, test_ties_density1_agree_is_mean);
    tcase_add_test(core, test_ties_zeros);
    tcase_add_test(core, test_mean_and_task_arithmetic);
    suite_add_tcase(s, core);
    TCase *cmd = tcase_create("command");
    tcase_add_checked_fixture(cmd, tmp_setup, tmp_teardown);
    tcase_set_timeout(cmd, 30);
    tcase_add_test(cmd, test_cmd_ties);
    tcase_add_test(cmd, test_cmd_default_density);
    tcase_add_test(cmd, test_cmd_other_methods);
    tcase_add_test(cmd, test_cmd_shape_mismatch);
    tcase_add_test(cmd, test_cmd_missing_and_extra);
    tcase_add_test(cmd, test_cmd_not_finite);
    tcase_add_test(cmd, test_cmd_arguments);
    tcase_add_test(cmd, test_bench_runs);
    suite_add_tcase(s, cmd);
    return s;
}
