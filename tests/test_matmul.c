/* test_matmul.c - the "matmul" Check suite: the plain twins against written-out
 * products, then the fast products against the twins and a float64 loop. */
#include "check_util.h"
#include "recfound.h"

#include <omp.h>

typedef void (*MatmulFn)(float *, const float *, const float *, int, int, int, int);

enum { NT, NN, TN };
static const char *kind_name[3] = {"nt", "nn", "tn"};
static const MatmulFn fast_fn[3] = {matmul_nt, matmul_nn, matmul_tn};
static const MatmulFn ref_fn[3] = {matmul_nt_ref, matmul_nn_ref, matmul_tn_ref};

/* The 2x3 by 3x2 example, in the layout each product reads:
 *   A = [1 2 3; 4 5 6],  B = [7 8; 9 10; 11 12],
 *   A B = [1*7+2*9+3*11  1*8+2*10+3*12; 4*7+5*9+6*11  4*8+5*10+6*12] = [58 64; 139 154]. */
static const float ex_a_rowmajor[6] = {1, 2, 3, 4, 5, 6};  /* A[M=2,K=3]   (nt, nn) */
static const float ex_a_kmajor[6] = {1, 4, 2, 5, 3, 6};    /* A^T[K=3,M=2] (tn)     */
static const float ex_b_kn[6] = {7, 8, 9, 10, 11, 12};     /* B[K=3,N=2]   (nn, tn) */
static const float ex_b_nk[6] = {7, 9, 11, 8, 10, 12};     /* B^T[N=2,K=3] (nt)     */
static const float ex_ab[4] = {58, 64, 139, 154};
/* acc = 1 onto [0.5 -1; 2 100]: [58.5 63; 141 254]. */
static const float ex_c0[4] = {0.5f, -1, 2, 100};
static const float ex_c0_plus_ab[4] = {58.5f, 63, 141, 254};

static void check_example(const MatmulFn fn[3], const char *which) {
    for (int t = 0; t < 3; t++) {
        const float *a = t == TN ? ex_a_kmajor : ex_a_rowmajor;
        const float *b = t == NT ? ex_b_nk : ex_b_kn;
        float out[4] = {-7, -7, -7, -7};
        char what[64];
        fn[t](out, a, b, 2, 3, 2, 0);
        snprintf(what, sizeof what, "%s %s example acc=0", which, kind_name[t]);
        assert_allclose(out, ex_ab, 4, 0, 0, what);
        memcpy(out, ex_c0, sizeof out);
        fn[t](out, a, b, 2, 3, 2, 1);
        snprintf(what, sizeof what, "%s %s example acc=1", which, kind_name[t]);
        assert_allclose(out, ex_c0_plus_ab, 4, 0, 0, what);
    }
}

START_TEST(test_ref_example) { check_example(ref_fn, "ref"); }
END_TEST

START_TEST(test_fast_example) { check_example(fast_fn, "fast"); }
END_TEST

/* A second written-out case for the twins: a 1x4 row times a 4x3 matrix with
 * negative and fractional entries, [1 -2 0.5 3] . [[1 0 2] [0.25 1 -1] [4 2 0] [-1 1 1]]
 *   = [1 - 0.5 + 2 - 3,  0 - 2 + 1 + 3,  2 + 2 + 0 + 3] = [-0.5, 2, 7]. */
START_TEST(test_ref_row_example) {
    const float a[4] = {1, -2, 0.5f, 3};
    const float b_kn[12] = {1, 0, 2, 0.25f, 1, -1, 4, 2, 0, -1, 1, 1};
    const float b_nk[12] = {1, 0.25f, 4, -1, 0, 1, 2, 1, 2, -1, 0, 1};
    const float want[3] = {-0.5f, 2, 7};
    float out[3];
    matmul_nt_ref(out, a, b_nk, 1, 4, 3, 0);
    assert_allclose(out, want, 3, 0, 0, "nt_ref row");
    matmul_nn_ref(out, a, b_kn, 1, 4, 3, 0);
    assert_allclose(out, want, 3, 0, 0, "nn_ref row");
    matmul_tn_ref(out, a, b_kn, 1, 4, 3, 0); /* a[K=4, M=1] is the same numbers */
    assert_allclose(out, want, 3, 0, 0, "tn_ref row");
}
END_TEST

/* ------------------------------------------------------------ random */

static uint64_t rng_state;
static float uniform(void) { /* [-1, 1) */
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) * (1.0 / 8388608.0)) - 1.0f;
}
/* Multiples of 1/4 in [-2, 2]: products and sums of up to 2^20 of them are
 * exact in float, so every summation order gives the same bits. */
static float quarter(void) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((int)((rng_state >> 33) % 17) - 8) * 0.25f;
}

/* Element (i, k) of A and (k, j) of B for product t, in float64. */
static double elem_a(int t, const float *a, int i, int k, int M, int K) {
    return t == TN ? a[(size_t)k * M + i] : a[(size_t)i * K + k];
}
static double elem_b(int t, const float *b, int k, int j, int K, int N) {
    return t == NT ? b[(size_t)j * K + k] : b[(size_t)k * N + j];
}

/* Runs fast and ref for one shape on (random or exact) data, acc 0 and 1, and
 * compares with a float64 loop written here. */
static void check_shape(int t, int M, int K, int N, int exact) {
    size_t na = (size_t)M * K, nb = (size_t)K * N, nc = (size_t)M * N;
    float *a = malloc((na + 1) * sizeof(float)), *b = malloc((nb + 1) * sizeof(float));
    float *c0 = malloc((nc + 1) * sizeof(float)), *fast = malloc((nc + 1) * sizeof(float));
    float *ref = malloc((nc + 1) * sizeof(float)), *want = malloc((nc + 1) * sizeof(float));
    ck_assert(a && b && c0 && fast && ref && want);
    rng_state = 1000003u * M + 1009u * K + N + 7u * t;
    for (size_t i = 0; i < na; i++) a[i] = exact ? quarter() : uniform();
    for (size_t i = 0; i < nb; i++) b[i] = exact ? quarter() : uniform();
    for (size_t i = 0; i < nc; i++) c0[i] = exact ? quarter() : 4 * uniform();
    /* Tolerance of a float32 sum of K terms of size <= 1 (typical element
     * ~ sqrt(K)/3): relative 1e-5 plus an absolute floor for cancellations. */
    double rtol = exact ? 0 : 1e-5, atol = exact ? 0 : 2e-6 * sqrt((double)K + 1);
    char what[96];
    for (int acc = 0; acc <= 1; acc++) {
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double s = acc ? c0[(size_t)i * N + j] : 0;
                for (int k = 0; k < K; k++) s += elem_a(t, a, i, k, M, K) * elem_b(t, b, k, j, K, N);
                want[(size_t)i * N + j] = (float)s;
            }
        for (size_t i = 0; i < nc; i++) fast[i] = acc ? c0[i] : NAN; /* acc=0 must overwrite */
        memcpy(ref, fast, nc * sizeof(float));
        fast_fn[t](fast, a, b, M, K, N, acc);
        ref_fn[t](ref, a, b, M, K, N, acc);
        snprintf(what, sizeof what, "ref %s M=%d K=%d N=%d acc=%d", kind_name[t], M, K, N, acc);
        assert_allclose(ref, want, nc, 0, 0, what); /* double sum, one rounding */
        snprintf(what, sizeof what, "fast %s M=%d K=%d N=%d acc=%d %s", kind_name[t], M, K, N, acc,
                 exact ? "exact" : "random");
        assert_allclose(fast, want, nc, rtol, atol, what);
        assert_allclose(fast, ref, nc, rtol, atol, what);
    }
    free(a), free(b), free(c0), free(fast), free(ref), free(want);
}

/* Tails on every side of the MR x NR tile (12 x 32, 6 x 16 or 4 x 8) and of
 * the KC = 256, MC = 8 MR and NC = 1024 blocks, and the smaller corner tiles
 * of the AVX-512 kernel.  An A of at most 256 KB per thread is read in place
 * (all but a last partial strip), a larger one packed: both with tails. */
static const int shapes[][3] = {
    {1, 1, 1},     {3, 5, 7},     {2, 3, 2},     {1, 300, 1},   {17, 33, 65},  {64, 64, 64},  {100, 257, 129},
    {12, 32, 32},  {13, 31, 33},  {6, 16, 16},   {7, 1, 17},    {31, 513, 47}, {200, 70, 300}, {193, 17, 33},
    {5, 2, 4100},  {1, 64, 200},  {250, 64, 1},  {20, 40, 1100},
    /* edge corners that fit exactly (4, 8 or 12 rows by 16 columns): N = 16 as a rank-16 adapter */
    {4, 40, 16},   {8, 33, 48},   {16, 70, 16},  {28, 20, 80},  {3072, 19, 16},
    /* A of 708 KB, 352 and 356 KB per thread with two: packed, with tails of 4 rows and 6 columns */
    {604, 300, 70},
};
#define NSHAPES (int)(sizeof shapes / sizeof shapes[0])

START_TEST(test_fast_random) {
    int t = _i;
    for (int s = 0; s < NSHAPES; s++) check_shape(t, shapes[s][0], shapes[s][1], shapes[s][2], 0);
}
END_TEST

/* Exactly representable data: fast, ref and the float64 loop agree to the bit,
 * so any indexing slip in packing or tails shows up as a hard mismatch. */
START_TEST(test_fast_exact) {
    int t = _i;
    for (int s = 0; s < NSHAPES; s++) check_shape(t, shapes[s][0], shapes[s][1], shapes[s][2], 1);
}
END_TEST

/* A training-size product (several K blocks and threads) against the twin. */
START_TEST(test_fast_large) {
    int t = _i;
    check_shape(t, 130, 700, 150, 0);
}
END_TEST

/* K = 0: acc=0 writes zeros, acc=1 leaves out alone; M or N = 0 touches nothing. */
START_TEST(test_empty) {
    float out[6] = {1, 2, 3, 4, 5, 6}, zero[6] = {0}, keep[6] = {1, 2, 3, 4, 5, 6};
    const float dummy[1] = {9};
    for (int t = 0; t < 3; t++) {
        fast_fn[t](out, dummy, dummy, 2, 0, 3, 1);
        assert_allclose(out, keep, 6, 0, 0, "K=0 acc=1");
        fast_fn[t](out, dummy, dummy, 0, 4, 3, 0);
        fast_fn[t](out, dummy, dummy, 2, 4, 0, 0);
        assert_allclose(out, keep, 6, 0, 0, "M or N = 0");
        fast_fn[t](out, dummy, dummy, 2, 0, 3, 0);
        assert_allclose(out, zero, 6, 0, 0, "K=0 acc=0");
        memcpy(out, keep, sizeof out);
    }
}
END_TEST

/* The result is the same bits for 1 and 2 threads and on every repetition
 * (each element is summed by one thread in a fixed order). */
START_TEST(test_deterministic) {
    int M = 300, K = 600, N = 260;
    float *a = malloc(sizeof(float) * M * K), *b = malloc(sizeof(float) * K * N);
    float *c1 = malloc(sizeof(float) * M * N), *c2 = malloc(sizeof(float) * M * N);
    ck_assert(a && b && c1 && c2);
    rng_state = 42;
    for (int i = 0; i < M * K; i++) a[i] = uniform();
    for (int i = 0; i < K * N; i++) b[i] = uniform();
    for (int t = 0; t < 3; t++) {
        omp_set_num_threads(1);
        fast_fn[t](c1, a, b, M, K, N, 0);
        omp_set_num_threads(2);
        fast_fn[t](c2, a, b, M, K, N, 0);
        ck_assert_msg(memcmp(c1, c2, sizeof(float) * M * N) == 0, "%s: 1 and 2 threads differ", kind_name[t]);
        fast_fn[t](c1, a, b, M, K, N, 0);
        ck_assert_msg(memcmp(c1, c2, sizeof(float) * M * N) == 0, "%s: repeated run differs", kind_name[t]);
    }
    free(a), free(b), free(c1), free(c2);
}
END_TEST

/* matmul_strided on sub-matrices of larger arrays, each operand read through
 * row-major or transposed strides, written into a block of a wider output:
 * exact data, so fast, ref and a float64 loop agree to the bit, and the
 * output's padding columns keep their values. */
START_TEST(test_strided_exact) {
    static const int sh[][3] = {{1, 1, 1}, {13, 31, 33}, {64, 32, 256}, {100, 257, 40}, {25, 7, 70}};
    for (size_t c = 0; c < sizeof sh / sizeof sh[0]; c++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int acc = 0; acc <= 1; acc++) {
                    int M = sh[c][0], K = sh[c][1], N = sh[c][2], pad = 3;
                    /* a is M x K inside rows of K + pad (or K x M inside rows of M + pad), likewise b */
                    size_t lda = (size_t)(ta ? M : K) + pad, ldb = (size_t)(tb ? K : N) + pad, ldo = (size_t)N + pad;
                    size_t a_rs = ta ? 1 : lda, a_cs = ta ? lda : 1, b_rs = tb ? 1 : ldb, b_cs = tb ? ldb : 1;
                    size_t na = (ta ? K : M) * lda, nb = (tb ? N : K) * ldb, no = (size_t)M * ldo;
                    float *a = malloc(na * sizeof(float)), *b = malloc(nb * sizeof(float));
                    float *fast = malloc(no * sizeof(float)), *ref = malloc(no * sizeof(float));
                    float *want = malloc(no * sizeof(float));
                    rng_state = 77 + c * 8 + ta * 4 + tb * 2 + acc;
                    for (size_t i = 0; i < na; i++) a[i] = quarter();
                    for (size_t i = 0; i < nb; i++) b[i] = quarter();
                    for (size_t i = 0; i < no; i++) want[i] = quarter();
                    for (int i = 0; i < M; i++)
                        for (int j = 0; j < N; j++) {
                            double sum = acc ? want[i * ldo + j] : 0;
                            for (int k = 0; k < K; k++) sum += (double)a[i * a_rs + k * a_cs] * b[k * b_rs + j * b_cs];
                            fast[i * ldo + j] = (float)sum;
                        }
                    for (size_t i = 0; i < no; i++) {
                        float w = fast[i];
                        fast[i] = ref[i] = want[i];
                        if (i % ldo < (size_t)N) want[i] = w;
                    }
                    matmul_strided(fast, ldo, a, a_rs, a_cs, b, b_rs, b_cs, M, K, N, acc);
                    matmul_strided_ref(ref, ldo, a, a_rs, a_cs, b, b_rs, b_cs, M, K, N, acc);
                    char what[96];
                    snprintf(what, sizeof what, "strided M=%d K=%d N=%d ta=%d tb=%d acc=%d", M, K, N, ta, tb, acc);
                    assert_allclose(ref, want, no, 0, 0, what);
                    assert_allclose(fast, want, no, 0, 0, what);
                    free(a), free(b), free(fast), free(ref), free(want);
                }
}
END_TEST

/* matmul_strided_tri, the causal attention's products: exact data, so each
 * element it computes equals a float64 loop to the bit.
 *   TRI_A_LOWER / TRI_A_UPPER: A holds zeros where the caller promises them
 *   (k > i + d, or k < i - d), the products are whole; skipping one term too
 *   many would show.
 *   TRI_OUT_LOWER: every wanted element (j <= i + d) is the product, every
 *   other one is either the product or its old value, and element (0, N-1),
 *   in a tile wholly above the line for every kernel's tile size, kept its
 *   old value.
 * Shapes of a training step's attention blocks (64 x 32 x 256 and its
 * transposes), edge tiles, and K over two K blocks; A row-major and
 * transposed; 1 and 2 threads (the split into rectangles keeps the line). */
START_TEST(test_strided_triangle) {
    static const int sh[][3] = {{64, 32, 256}, {64, 256, 32}, {256, 64, 32}, {70, 300, 45}, {13, 31, 33}};
    static const int diags[] = {0, 64, -5, 200, 21};
    static const TriKind kinds[] = {TRI_OUT_LOWER, TRI_A_LOWER, TRI_A_UPPER};
    static const char *kind_names[] = {"out_lower", "a_lower", "a_upper"};
    for (size_t c = 0; c < sizeof sh / sizeof sh[0]; c++)
        for (size_t dk = 0; dk < sizeof diags / sizeof diags[0]; dk++)
            for (int kd = 0; kd < 3; kd++)
                for (int ta = 0; ta < 2; ta++) {
                    int M = sh[c][0], K = sh[c][1], N = sh[c][2], d = diags[dk], acc = (int)(c + dk) % 2;
                    TriKind kind = kinds[kd];
                    size_t lda = ta ? (size_t)M : (size_t)K, a_rs = ta ? 1 : lda, a_cs = ta ? lda : 1;
                    size_t na = (size_t)M * K, no = (size_t)M * N;
                    float *a = malloc(na * sizeof(float)), *b = malloc((size_t)K * N * sizeof(float));
                    float *old = malloc(no * sizeof(float)), *got = malloc(no * sizeof(float));
                    float *want = malloc(no * sizeof(float));
                    double *row = malloc((size_t)N * sizeof(double));
                    rng_state = 900 + c * 64 + dk * 16 + kd * 4 + ta * 2;
                    for (int i = 0; i < M; i++)
                        for (int k = 0; k < K; k++) {
                            int zero = (kind == TRI_A_LOWER && k > i + d) || (kind == TRI_A_UPPER && k < i - d);
                            float x = quarter();
                            a[i * a_rs + k * a_cs] = zero ? 0.0f : x;
                        }
                    for (size_t i = 0; i < (size_t)K * N; i++) b[i] = quarter();
                    for (size_t i = 0; i < no; i++) old[i] = quarter();
                    for (int i = 0; i < M; i++) {  /* exact in double, in any order */
                        for (int j = 0; j < N; j++) row[j] = acc ? old[(size_t)i * N + j] : 0;
                        for (int k = 0; k < K; k++) {
                            double x = a[i * a_rs + k * a_cs];
                            if (x != 0)
                                for (int j = 0; j < N; j++) row[j] += x * b[(size_t)k * N + j];
                        }
                        for (int j = 0; j < N; j++) want[(size_t)i * N + j] = (float)row[j];
                    }
                    for (int threads = 1; threads <= 2; threads++) {
                        Tri tri = {kind, d};
                        memcpy(got, old, no * sizeof(float));
                        omp_set_num_threads(threads);
                        matmul_strided_tri(got, (size_t)N, a, a_rs, a_cs, b, (size_t)N, 1, M, K, N, acc, tri);
                        omp_set_num_threads(2);
                        int bad = -1, wanted = 1;  /* the first wrong element (one assertion per product) */
                        for (int i = 0; i < M && bad < 0; i++)
                            for (int j = 0; j < N && bad < 0; j++) {
                                size_t at = (size_t)i * N + j;
                                wanted = kind != TRI_OUT_LOWER || j <= i + d;
                                if (!(got[at] == want[at] || (!wanted && got[at] == old[at]))) bad = (int)at;
                            }
                        float got_bad = bad < 0 ? 0 : got[bad], want_bad = bad < 0 ? 0 : want[bad];
                        ck_assert_msg(bad < 0, "tri %s M=%d K=%d N=%d d=%d ta=%d threads=%d acc=%d: (%d, %d) is %g, "
                                      "want %g%s", kind_names[kd], M, K, N, d, ta, threads, acc, bad / N, bad % N,
                                      got_bad, want_bad, wanted ? "" : " or the old value");
                        /* its tile starts at column (N-1)/32*32 or later, its rows end by 11 */
                        if (kind == TRI_OUT_LOWER && (N - 1) / 32 * 32 > 11 + d && want[N - 1] != old[N - 1])
                            ck_assert_msg(got[N - 1] == old[N - 1], "tri out_lower M=%d K=%d N=%d d=%d: (0, %d) "
                                          "above the line was computed", M, K, N, d, N - 1);
                    }
                    free(a), free(b), free(old), free(got), free(want), free(row);
                }
}
END_TEST

/* A weight kept in bf16 (matmul_nt_bf16 / matmul_nn_bf16): bit for bit the
 * fast float product on the widened matrix, on 1 and 2 threads, over edge
 * tiles and several K blocks; and close to the float64 twin. */
START_TEST(test_bf16_weights) {
    static const int sh[][3] = {{1, 5, 3}, {13, 31, 33}, {37, 70, 53}, {20, 40, 1100}, {130, 700, 150}};
    for (size_t c = 0; c < sizeof sh / sizeof sh[0]; c++)
        for (int nn = 0; nn < 2; nn++)
            for (int threads = 1; threads <= 2; threads++) {
                int M = sh[c][0], K = sh[c][1], N = sh[c][2];
                size_t nb = (size_t)K * N, no = (size_t)M * N;
                float *a = malloc((size_t)M * K * sizeof(float)), *wide = malloc(nb * sizeof(float));
                uint16_t *b16 = malloc(nb * sizeof(uint16_t));
                float *got = malloc(no * sizeof(float)), *want = malloc(no * sizeof(float));
                float *ref = malloc(no * sizeof(float));
                rng_state = 500 + c * 4 + nn * 2 + threads;
                for (int i = 0; i < M * K; i++) a[i] = uniform();
                for (size_t i = 0; i < nb; i++) { /* b's bits: the top half of a random float */
                    float f = uniform();
                    uint32_t u;
                    memcpy(&u, &f, sizeof u);
                    b16[i] = (uint16_t)(u >> 16);
                    u &= 0xFFFF0000u;
                    memcpy(&wide[i], &u, sizeof u);
                }
                for (size_t i = 0; i < no; i++) got[i] = want[i] = ref[i] = uniform();
                omp_set_num_threads(threads);
                int acc = (int)(c % 2);
                if (nn) {
                    matmul_nn_bf16(got, a, b16, M, K, N, acc);
                    matmul_nn(want, a, wide, M, K, N, acc);
                    matmul_nn_ref(ref, a, wide, M, K, N, acc);
                } else {
                    matmul_nt_bf16(got, a, b16, M, K, N, acc);
                    matmul_nt(want, a, wide, M, K, N, acc);
                    matmul_nt_ref(ref, a, wide, M, K, N, acc);
                }
                ck_assert_msg(memcmp(got, want, no * sizeof(float)) == 0, "%s_bf16 %dx%dx%d on %d threads: not the "
                              "float product of the widened matrix", nn ? "nn" : "nt", M, K, N, threads);
                assert_allclose(got, ref, no, 1e-5, 1e-5, nn ? "matmul_nn_bf16 vs twin" : "matmul_nt_bf16 vs twin");
                free(a), free(wide), free(b16), free(got), free(want), free(ref);
            }
    omp_set_num_threads(2);
}
END_TEST

Suite *matmul_suite(void) {
    Suite *s = suite_create("matmul");
    TCase *tc = tcase_create("examples");
    tcase_add_test(tc, test_ref_example);
    tcase_add_test(tc, test_ref_row_example);
    tcase_add_test(tc, test_fast_example);
    tcase_add_test(tc, test_empty);
    suite_add_tcase(s, tc);
    tc = tcase_create("fast_vs_ref");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_fast_random, 0, 3);
    tcase_add_loop_test(tc, test_fast_exact, 0, 3);
    tcase_add_loop_test(tc, test_fast_large, 0, 3);
    tcase_add_test(tc, test_deterministic);
    tcase_add_test(tc, test_strided_exact);
    tcase_add_test(tc, test_strided_triangle);
    tcase_add_test(tc, test_bf16_weights);
    suite_add_tcase(s, tc);
    return s;
}
